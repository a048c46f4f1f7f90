"""Transfers in SQLite (``transfers.sqlite`` in the data dir): every incoming and outgoing
transfer, and for incoming ones the digest of each chunk written, so both sides resume after a
restart. WAL with ``synchronous=NORMAL``: a commit survives a crash of the process; chunk rows
are committed in small batches, so a ``kill -9`` loses at most a batch (fetched again).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TransferRecord", "TransferStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    tid BLOB PRIMARY KEY,
    direction TEXT NOT NULL,
    peer BLOB NOT NULL,
    peer_name TEXT NOT NULL,
    name TEXT NOT NULL,
    files TEXT NOT NULL,
    chunk_bytes INTEGER NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    created REAL NOT NULL,
    sha256 TEXT NOT NULL,
    number INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    tid BLOB NOT NULL,
    idx INTEGER NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (tid, idx)
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class TransferRecord:
    """One transfer as stored. ``files``: (relative path, size) each; ``path``: the
    destination on the receiver; ``source``/``mtime_ns``: the sender's file and its mtime."""

    tid: bytes
    direction: str
    peer: bytes
    peer_name: str
    name: str
    files: list[tuple[str, int]]
    chunk_bytes: int
    state: str
    error: str = ""
    path: str = ""
    source: str = ""
    mtime_ns: int = 0
    created: float = 0.0
    sha256: str = ""
    number: int = 0


class TransferStore:
    """``deferred``: the first open (schema, WAL setup: it syncs to disk) waits for ``open``,
    which ``Node.start`` calls in a thread once the node has announced itself; a use before
    that opens the store there and then. Either way it is opened once, under a lock, and what
    opening raised is raised to whoever opens it."""

    def __init__(self, path: Path, deferred: bool = False) -> None:
        self.path = path
        self._pending: list[tuple[bytes, int, bytes]] = []
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        if not deferred:
            self._db = _connect(path)

    def open(self) -> None:
        """Open the store if it is not open yet (from any thread)."""
        with self._lock:
            if self._db is None:
                self._db = _connect(self.path)

    @property
    def _conn(self) -> sqlite3.Connection:
        db = self._db
        if db is None:
            self.open()
            db = self._db
        assert db is not None
        return db

    def save(self, r: TransferRecord) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO transfers VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (r.tid, r.direction, r.peer, r.peer_name, r.name, json.dumps(r.files),
             r.chunk_bytes, r.state, r.error, r.path, r.source, r.mtime_ns, r.created,
             r.sha256, r.number))

    def load(self) -> list[TransferRecord]:
        rows = self._conn.execute("SELECT * FROM transfers ORDER BY number").fetchall()
        out = []
        for row in rows:
            files = [(str(p), int(s)) for p, s in json.loads(row[5])]
            out.append(TransferRecord(row[0], row[1], row[2], row[3], row[4], files, row[6],
                                      row[7], row[8], row[9], row[10], row[11], row[12],
                                      row[13], row[14]))
        return out

    def add_chunk(self, tid: bytes, index: int, digest: bytes) -> None:
        """Recorded at the next ``flush`` (the data is written before that)."""
        self._pending.append((tid, index, digest))

    def flush(self) -> None:
        if self._pending:
            rows, self._pending = self._pending, []
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?,?,?)", rows)
            self._conn.execute("COMMIT")

    def chunks(self, tid: bytes) -> dict[int, bytes]:
        return {int(i): bytes(d) for i, d in self._conn.execute(
            "SELECT idx, digest FROM chunks WHERE tid = ?", (tid,))}

    def drop_chunks(self, tid: bytes, indices: list[int] | None = None) -> None:
        self.flush()
        if indices is None:
            self._conn.execute("DELETE FROM chunks WHERE tid = ?", (tid,))
        else:
            self._conn.execute("BEGIN")
            self._conn.executemany("DELETE FROM chunks WHERE tid = ? AND idx = ?",
                                   [(tid, i) for i in indices])
            self._conn.execute("COMMIT")

    def delete(self, tid: bytes) -> None:
        self.drop_chunks(tid)
        self._conn.execute("DELETE FROM transfers WHERE tid = ?", (tid,))

    def close(self) -> None:
        self.flush()
        self._conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(_SCHEMA)
    return conn
