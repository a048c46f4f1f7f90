"""The message log: every chat record of every room, room states, private messages (SQLite).

Writes are cheap on purpose: they join one open transaction that ``flush()`` commits (the node
calls it on a short timer and after logging one of its own messages, ``close()`` calls it).
Until then the rows are visible to this ``MessageLog`` (same connection) but not durable. The
database runs in WAL mode with ``synchronous=NORMAL``: a commit survives a crash of the
process; a power cut may lose the last few commits, never corrupt the file.

Per room and sender the log keeps the highest and the highest contiguous ``seq`` in memory
(loaded on first use of a room), so ``heads``/``max_seq``/``next_seq``/``count`` cost no query.

Canonical history order is ``(sent_at, sender, seq)``: every field comes from the signed
record, so every member holding the same records lists them the same way.

A ``MessageLog`` belongs to one thread (the node's event loop).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from meshchat.errors import MeshchatError
from meshchat.identity import short_fingerprint
from meshchat.storage.keystore import PRIVATE_FILE_MODE, ensure_private_dir, tighten_mode

SCHEMA_VERSION = 1
MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat (
    room_id BLOB NOT NULL,
    sender  BLOB NOT NULL,
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    sent_at REAL NOT NULL,
    text    TEXT NOT NULL,
    blob    BLOB NOT NULL,
    PRIMARY KEY (room_id, sender, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chat_in_order ON chat (room_id, sent_at, sender, seq);
CREATE TABLE IF NOT EXISTS rooms (
    room_id    BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    state      BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS private (
    id        INTEGER PRIMARY KEY,
    peer      BLOB NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    sent_at   REAL NOT NULL,
    text      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS private_by_peer ON private (peer, sent_at, id);
CREATE TABLE IF NOT EXISTS seq_reservations (
    room_id  BLOB NOT NULL,
    sender   BLOB NOT NULL,
    reserved INTEGER NOT NULL,
    PRIMARY KEY (room_id, sender)
) WITHOUT ROWID;
"""

_ROW_COLUMNS = "room_id, sender, seq, sent_at, text, blob"
# Rows per INSERT statement in ``add_many``: 128 × 6 parameters stays under 999, the
# SQLITE_MAX_VARIABLE_NUMBER of SQLite builds before 3.32.
_CHUNK_ROWS = 128
_CANONICAL = "sent_at, sender, seq"
_CANONICAL_DESC = "sent_at DESC, sender DESC, seq DESC"


class LogRow(NamedTuple):
    """One chat record as stored; ``blob`` is the signed record, relayed as history."""

    room_id: bytes
    sender: bytes
    seq: int
    sent_at: float
    text: str
    blob: bytes


class RoomRecord(NamedTuple):
    """The last room state this node saw for a room (no key material)."""

    room_id: bytes
    name: str
    state: bytes
    updated_at: float


class PrivateRow(NamedTuple):
    peer: bytes
    direction: Literal["in", "out"]
    sent_at: float
    text: str


@dataclass(slots=True)
class _RoomIndex:
    count: int = 0
    maxes: dict[bytes, int] = field(default_factory=dict)
    heads: dict[bytes, int] = field(default_factory=dict)


def default_line(row: LogRow) -> str:
    """``2025-01-31 14:02:07 ab12cd34: text`` in local time; later lines of a text indented."""
    when = _dt.datetime.fromtimestamp(row.sent_at).strftime("%Y-%m-%d %H:%M:%S")
    text = row.text.replace("\n", "\n    ")
    return f"{when} {short_fingerprint(row.sender)}: {text}"



def _check_row(seq: int, sent_at: float) -> None:
    """``seq`` starts at 1 and ``sent_at`` is finite: the caller validates network input, so a
    bad value here is a bug."""
    if seq < 1 or not math.isfinite(sent_at):
        raise ValueError(f"bad chat record: seq={seq!r} sent_at={sent_at!r}")

class MessageLog:
    """The SQLite log at ``path`` (``":memory:"`` for a log that lives only as long as this)."""

    _conn: sqlite3.Connection

    def __init__(self, path: Path | str, *, deferred: bool = False) -> None:
        """Open the log at ``path`` now or, ``deferred``, on ``open()`` (``Node.start`` calls
        it in a thread once the node has announced itself: the first open syncs to disk) or
        on first use, whichever comes first: once, under a lock, from any thread, and what
        opening raised is raised to whoever opens it. Nothing ever reads or writes a log that
        is not open."""
        self.path = path
        self._rooms: dict[bytes, _RoomIndex] = {}
        self._closed = False
        self._open_lock = threading.Lock()
        if not deferred:
            self._conn = _connect(path)

    def open(self) -> None:
        """Open a ``deferred`` log if it is not open yet; raise what opening raised. Does
        nothing on a log that is open already."""
        with self._open_lock:
            if "_conn" in self.__dict__:
                return
            if self._closed:
                raise MeshchatError(f"message log {self.path} is closed")
            self._conn = _connect(self.path, check_same_thread=False)

    if not TYPE_CHECKING:  # (hidden from mypy, which would take every attribute for Any)

        def __getattr__(self, name: str) -> Any:
            if name == "_conn":  # a deferred log used before open(): open it now
                self.open()
                return self._conn
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------ lifecycle

    def flush(self) -> None:
        """Commit every write made since the last flush."""
        if self._conn.in_transaction:
            self._conn.commit()

    def close(self) -> None:
        """Flush and close; later calls do nothing."""
        if self._closed:
            return
        with self._open_lock:  # an open in another thread finishes first
            self._closed = True
        if "_conn" not in self.__dict__:  # a deferred log never opened: nothing to close
            return
        try:
            self.flush()
        finally:
            self._conn.close()

    def __enter__(self) -> MessageLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ chat records

    def add(
        self, room_id: bytes, sender: bytes, seq: int, sent_at: float, text: str, blob: bytes
    ) -> bool:
        """Store one record; False if ``(room_id, sender, seq)`` is already there.

        ``seq`` starts at 1 and ``sent_at`` must be finite: the caller validates network input
        before it gets here, so a bad value is a bug and raises ``ValueError``.
        """
        _check_row(seq, sent_at)
        index = self._index(room_id)  # loaded before the insert, so the row counts once
        self._begin()
        cursor = self._conn.execute(
            f"INSERT OR IGNORE INTO chat ({_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (room_id, sender, seq, sent_at, text, blob),
        )
        if cursor.rowcount != 1:
            return False
        self._note_added(index, room_id, sender, seq)
        return True

    def add_many(self, rows: Iterable[LogRow | tuple[bytes, bytes, int, float, str, bytes]]) -> int:
        """Store many records (e.g. a chat batch); the number that were new.

        The rows go in as multi-row INSERTs of up to ``_CHUNK_ROWS`` rows (one statement per
        power-of-two piece, so a handful of prepared statements serve every batch size):
        about a third cheaper per row than ``executemany``, which steps one statement per row.
        """
        batch: list[tuple[bytes, bytes, int, float, str, bytes]] = [
            (r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows
        ]
        for _, _, seq, sent_at, _, _ in batch:
            _check_row(seq, sent_at)
        if not batch:
            return 0
        # Indexes are loaded before the insert, as in ``add``: loaded after, they would
        # already hold the new rows and count them twice.
        indexes = {room_id: self._index(room_id) for room_id in {row[0] for row in batch}}
        self._begin()
        before = self._conn.total_changes
        execute = self._conn.execute
        start, total = 0, len(batch)
        while start < total:
            size = min(_CHUNK_ROWS, 1 << ((total - start).bit_length() - 1))
            execute(_insert_rows(size),
                    [value for row in batch[start:start + size] for value in row])
            start += size
        added = self._conn.total_changes - before
        if added != len(batch):
            # Some were already held: rebuild the affected indexes from the table (rare).
            for room_id in indexes:
                self._rooms.pop(room_id, None)
            return added
        if len(indexes) == 1 and self._note_run(next(iter(indexes.values())), batch):
            return added
        for room_id, sender, seq, _, _, _ in batch:
            self._note_added(indexes[room_id], room_id, sender, seq)
        return added

    @staticmethod
    def _note_run(index: _RoomIndex, batch: list[tuple[bytes, bytes, int, float, str, bytes]]
                  ) -> bool:
        """The common batch in one step: one sender, seqs in a row right after its head with
        nothing held above. What ``_note_added`` row by row would do; False if not that case."""
        sender, first = batch[0][1], batch[0][2]
        last = first + len(batch) - 1
        if first != index.heads.get(sender, 0) + 1 or first <= index.maxes.get(sender, 0):
            return False
        for offset, row in enumerate(batch):
            if row[1] != sender or row[2] != first + offset:
                return False
        index.count += len(batch)
        index.maxes[sender] = last
        index.heads[sender] = last
        return True

    def _note_added(self, index: _RoomIndex, room_id: bytes, sender: bytes, seq: int) -> None:
        """Keep the in-memory index current after a new row."""
        index.count += 1
        highest = index.maxes.get(sender, 0)
        head = index.heads.get(sender, 0)
        if seq > highest:
            index.maxes[sender] = seq
        if seq == head + 1:
            # In order (nothing above it yet) is the common case and costs no query.
            index.heads[sender] = seq if seq > highest else self._run_end(room_id, sender, seq)
        else:
            index.heads.setdefault(sender, head)

    def heads(self, room_id: bytes) -> dict[bytes, int]:
        """Per sender, the highest seq such that 1..seq are all held (0 if seq 1 is missing)."""
        return dict(self._index(room_id).heads)

    def max_seq(self, room_id: bytes) -> dict[bytes, int]:
        """Per sender, the highest seq held."""
        return dict(self._index(room_id).maxes)

    def next_seq(self, room_id: bytes, sender: bytes) -> int:
        """The seq for ``sender``'s next record in the room: one above the highest held.

        Survives a restart only if the previous record was flushed — flush after logging an
        own message, or a crash could hand out a seq that peers already hold.
        """
        return self._index(room_id).maxes.get(sender, 0) + 1

    def reserved_seq(self, room_id: bytes, sender: bytes) -> int:
        """The highest seq reserved for ``sender`` in the room (0 if none): a restarted
        author starts above it, so a crash never reuses a number peers may already hold."""
        row = self._conn.execute(
            "SELECT reserved FROM seq_reservations WHERE room_id = ? AND sender = ?",
            (room_id, sender),
        ).fetchone()
        return int(row[0]) if row else 0

    def reserve_seq(self, room_id: bytes, sender: bytes, upto: int) -> None:
        """Reserve seqs up to ``upto`` and commit at once (a block at a time, off the hot path)."""
        self._begin()
        self._conn.execute(
            "INSERT INTO seq_reservations (room_id, sender, reserved) VALUES (?, ?, ?) "
            "ON CONFLICT (room_id, sender) DO UPDATE SET reserved = excluded.reserved",
            (room_id, sender, upto),
        )
        self.flush()

    def missing(
        self, room_id: bytes, sender: bytes, upto: int, limit: int | None = None
    ) -> list[tuple[int, int]]:
        """Ranges ``(first, last)`` (inclusive) of the seqs in ``1..upto`` not held.

        At most ``limit`` ranges, lowest first.
        """
        head = self._index(room_id).heads.get(sender, 0)
        if upto <= head:
            return []
        gaps: list[tuple[int, int]] = []
        expected = head + 1
        rows = self._conn.execute(
            "SELECT seq FROM chat WHERE room_id = ? AND sender = ? AND seq > ? AND seq <= ?"
            " ORDER BY seq",
            (room_id, sender, head, upto),
        )
        for (seq,) in rows:
            if seq > expected:
                gaps.append((expected, seq - 1))
                if limit is not None and len(gaps) >= limit:
                    return gaps
            expected = seq + 1
        if expected <= upto:
            gaps.append((expected, upto))
        return gaps

    def range(
        self, room_id: bytes, sender: bytes, first: int, last: int, limit: int | None = None
    ) -> list[LogRow]:
        """``sender``'s records ``first..last`` (inclusive) that are held, by seq."""
        cursor = self._conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM chat WHERE room_id = ? AND sender = ?"
            " AND seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
            (room_id, sender, first, last, -1 if limit is None else limit),
        )
        return [LogRow._make(r) for r in cursor]

    def last(self, room_id: bytes, n: int) -> list[LogRow]:
        """The last ``n`` records of the room, oldest first, in canonical order."""
        cursor = self._conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM (SELECT {_ROW_COLUMNS} FROM chat WHERE room_id = ?"
            f" ORDER BY {_CANONICAL_DESC} LIMIT ?) ORDER BY {_CANONICAL}",
            (room_id, max(n, 0)),
        )
        return [LogRow._make(r) for r in cursor]

    def all(self, room_id: bytes) -> list[LogRow]:
        """Every record of the room in canonical order."""
        return list(self.iter_all(room_id))

    def iter_all(self, room_id: bytes) -> Iterator[LogRow]:
        """``all`` without holding the whole room in memory."""
        cursor = self._conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM chat WHERE room_id = ? ORDER BY {_CANONICAL}", (room_id,)
        )
        for r in cursor:
            yield LogRow._make(r)

    def count(self, room_id: bytes) -> int:
        return self._index(room_id).count

    def export_text(
        self, room_id: bytes, path: Path | str, fmt: Callable[[LogRow], str] = default_line
    ) -> int:
        """Write the room's history to ``path``, one ``fmt(row)`` per line; the line count.

        ``fmt`` is where the caller puts names (the log holds only peer ids). The file is
        written beside ``path`` first and renamed, so a failed export leaves no half file.
        """
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        written = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                for row in self.iter_all(room_id):
                    f.write(fmt(row) + "\n")
                    written += 1
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return written

    # ------------------------------------------------------------ rooms

    def save_room(
        self, room_id: bytes, name: str, state_blob: bytes, now: float | None = None
    ) -> None:
        """Remember the room's latest signed state (durable at the next ``flush``)."""
        self._begin()
        self._conn.execute(
            "INSERT INTO rooms (room_id, name, state, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (room_id) DO UPDATE SET name = excluded.name,"
            " state = excluded.state, updated_at = excluded.updated_at",
            (room_id, name, state_blob, time.time() if now is None else now),
        )

    def load_room(self, room_id: bytes) -> RoomRecord | None:
        row = self._conn.execute(
            "SELECT room_id, name, state, updated_at FROM rooms WHERE room_id = ?", (room_id,)
        ).fetchone()
        return None if row is None else RoomRecord._make(row)

    def rooms(self) -> list[RoomRecord]:
        """Every saved room, most recently updated first."""
        cursor = self._conn.execute(
            "SELECT room_id, name, state, updated_at FROM rooms ORDER BY updated_at DESC"
        )
        return [RoomRecord._make(r) for r in cursor]

    # ------------------------------------------------------------ private messages

    def add_private(
        self, peer: bytes, direction: Literal["in", "out"], sent_at: float, text: str
    ) -> None:
        """Log a private message from (``"in"``) or to (``"out"``) ``peer``."""
        if direction not in ("in", "out") or not math.isfinite(sent_at):
            raise ValueError(f"bad private message: direction={direction!r} sent_at={sent_at!r}")
        self._begin()
        self._conn.execute(
            "INSERT INTO private (peer, direction, sent_at, text) VALUES (?, ?, ?, ?)",
            (peer, direction, sent_at, text),
        )

    def privates(self, peer: bytes, n: int) -> list[PrivateRow]:
        """The last ``n`` private messages with ``peer``, oldest first."""
        cursor = self._conn.execute(
            "SELECT peer, direction, sent_at, text FROM (SELECT * FROM private WHERE peer = ?"
            " ORDER BY sent_at DESC, id DESC LIMIT ?) ORDER BY sent_at, id",
            (peer, max(n, 0)),
        )
        return [PrivateRow._make(r) for r in cursor]

    # ------------------------------------------------------------ internals

    def _begin(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN")

    def _index(self, room_id: bytes) -> _RoomIndex:
        index = self._rooms.get(room_id)
        if index is None:
            index = self._load_index(room_id)
            self._rooms[room_id] = index
        return index

    def _load_index(self, room_id: bytes) -> _RoomIndex:
        index = _RoomIndex()
        cursor = self._conn.execute(
            "SELECT sender, COUNT(*), MIN(seq), MAX(seq) FROM chat WHERE room_id = ?"
            " GROUP BY sender",
            (room_id,),
        )
        for sender, count, lowest, highest in cursor.fetchall():
            index.count += count
            index.maxes[sender] = highest
            if lowest != 1:
                index.heads[sender] = 0
            elif count == highest:
                index.heads[sender] = highest
            else:
                index.heads[sender] = self._run_end(room_id, sender, 1)
        return index

    def _run_end(self, room_id: bytes, sender: bytes, start: int) -> int:
        """The last seq of the unbroken run that begins at ``start`` (which is held)."""
        row = self._conn.execute(
            "SELECT c.seq FROM chat AS c WHERE c.room_id = ? AND c.sender = ? AND c.seq >= ?"
            " AND NOT EXISTS (SELECT 1 FROM chat AS d WHERE d.room_id = c.room_id"
            " AND d.sender = c.sender AND d.seq = c.seq + 1) ORDER BY c.seq LIMIT 1",
            (room_id, sender, start),
        ).fetchone()
        assert row is not None, "a held seq always ends some run"
        end: int = row[0]
        return end


@functools.cache
def _insert_rows(count: int) -> str:
    """``INSERT OR IGNORE`` of ``count`` chat rows in one statement (a power of two)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * count)
    return f"INSERT OR IGNORE INTO chat ({_ROW_COLUMNS}) VALUES {values}"


def _connect(path: Path | str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed, mode 0600) and prepare the database at ``path``. A log opened
    in a thread is used on another (``check_same_thread=False``), never on two at once."""
    in_memory = str(path) == MEMORY
    if not in_memory:
        file = Path(path)
        ensure_private_dir(file.parent)
        try:
            os.close(os.open(file, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
            tighten_mode(file)
        except OSError as exc:
            raise MeshchatError(f"cannot open message log {file}: {exc}") from exc
    try:
        conn = sqlite3.connect(str(path), isolation_level=None,
                               check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise MeshchatError(f"cannot open message log {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise MeshchatError(
                f"message log {path} was written by a newer meshchat (schema {version})"
            )
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise MeshchatError(f"message log {path} is not a usable database: {exc}") from exc
    except MeshchatError:
        conn.close()
        raise
    return conn
