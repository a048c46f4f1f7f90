"""Peers this node has met: trust on first use for names, and where to find them again.

Kept in ``data_dir/peers.json``. The first key seen with a name is remembered; a different key
arriving with a name we already tie to another key yields a warning for the user (names are
labels, keys are identity).

Entries of peers we have talked to (a private message either way, a room shared) are
*pinned* (``pin``): they are never evicted, so their names stay tied to their keys however many
strangers pass by. At most ``max_pinned`` are pinned; beyond that a new pin is refused and the
old ones stay. Other entries are bounded by ``max_peers``, the least recently seen going first.

Nothing here writes on its own: changes mark the table dirty, and the node batches them —
``snapshot()`` on the event loop (cheap: a JSON dump) and ``write(snapshot)`` in a thread (the
fsync), at most every ``Limits.peers_file_write_interval_s``. ``flush()`` does both at once
(on close, and in tests). Writes are serialised and a snapshot older than the last one
written is skipped, so the file never goes back in time.

Names compare case-insensitively (``casefold``), so "Alice" and "alice" are one name here.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshchat.config import Limits
from meshchat.identity import PEER_ID_BYTES, fingerprint_of
from meshchat.protocol.messages import PeerCard
from meshchat.storage.keystore import (
    ensure_private_dir,
    move_aside,
    tighten_mode,
    write_private_file,
)

log = logging.getLogger(__name__)

PEERS_FILE = "peers.json"
FILE_VERSION = 1
MAX_NAMES_PER_PEER = 16
MAX_ADDRESSES_PER_PEER = 16
MAX_STORED_CHARS = 256


@dataclass(frozen=True, slots=True)
class SeenName:
    name: str
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class KnownPeer:
    """A snapshot of what we know about one peer. ``names`` is oldest first."""

    peer_id: bytes
    name: str
    first_seen: float
    last_seen: float
    names: tuple[SeenName, ...]
    addresses: tuple[str, ...]
    router_port: int | None
    pub_port: int | None
    card_port: int | None
    pinned: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.peer_id)


@dataclass(slots=True)
class _Entry:
    name: str
    first_seen: float
    last_seen: float
    names: dict[str, SeenName]  # by name as seen, insertion = first-seen order
    addresses: tuple[str, ...] = ()
    router_port: int | None = None
    pub_port: int | None = None
    card_port: int | None = None
    pinned: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The file's bytes at one moment; ``generation`` orders snapshots."""

    generation: int
    data: bytes


class KnownPeers:
    """Every peer met so far: pinned ones kept, the others bounded (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        max_peers: int = Limits().max_known_peers,
        max_pinned: int = Limits().max_pinned_peers,
    ) -> None:
        self.path = data_dir / PEERS_FILE
        self.max_peers = max_peers
        self.max_pinned = max_pinned
        self.warnings: list[str] = []
        self.writes = 0
        self._peers: dict[bytes, _Entry] | None = None
        self._by_name: dict[str, set[bytes]] = {}
        self._pinned = 0
        self._dirty = False
        self._generation = 0
        self._written_generation = 0
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------ queries

    def get(self, peer_id: bytes) -> KnownPeer | None:
        entry = self._loaded().get(peer_id)
        return None if entry is None else _snapshot(peer_id, entry)

    def all(self) -> list[KnownPeer]:
        """Every known peer, most recently seen first."""
        peers = [_snapshot(pid, e) for pid, e in self._loaded().items()]
        peers.sort(key=lambda p: p.last_seen, reverse=True)
        return peers

    def former_names(self, peer_id: bytes) -> list[str]:
        """Names this peer used before its current one, least recently seen first."""
        entry = self._loaded().get(peer_id)
        if entry is None:
            return []
        former = [s for s in entry.names.values() if s.name != entry.name]
        former.sort(key=lambda s: s.last_seen)
        return [s.name for s in former]

    def named(self, name: str) -> list[bytes]:
        """The peer ids ever seen with ``name`` (case-insensitive)."""
        self._loaded()
        return sorted(self._by_name.get(_name_key(name), ()))

    def __len__(self) -> int:
        return len(self._loaded())

    @property
    def dirty(self) -> bool:
        return self._dirty

    # ------------------------------------------------------------ updates

    def observe(
        self,
        peer_id: bytes,
        name: str,
        addresses: Sequence[str] = (),
        *,
        router_port: int | None = None,
        pub_port: int | None = None,
        card_port: int | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Record that ``peer_id`` was seen as ``name``; return warnings for the user.

        Empty ``addresses`` and ``None`` ports keep what was known before.
        """
        if not isinstance(peer_id, bytes) or len(peer_id) != PEER_ID_BYTES:
            raise ValueError("a peer id is 32 bytes")
        now = time.time() if now is None else now
        name = name[:MAX_STORED_CHARS]
        peers = self._loaded()
        warnings: list[str] = []

        key = _name_key(name)
        holders = self._by_name.get(key, set())
        if holders and peer_id not in holders:
            was = ", ".join(sorted(fingerprint_of(h) for h in holders))
            message = (
                f"name {name!r} now has a different key (fingerprint {fingerprint_of(peer_id)}), "
                f"was {was}"
            )
            log.warning(message)
            warnings.append(message)

        entry = peers.get(peer_id)
        if entry is None:
            self._make_room()
            entry = _Entry(name=name, first_seen=now, last_seen=now, names={})
            peers[peer_id] = entry
        seen = entry.names.get(name)
        if seen is None:
            entry.names[name] = SeenName(name, now, now)
            self._trim_names(peer_id, entry, keep=name)
        else:
            entry.names[name] = SeenName(name, seen.first_seen, max(seen.last_seen, now))
        self._by_name.setdefault(key, set()).add(peer_id)

        entry.name = name
        entry.last_seen = max(entry.last_seen, now)
        if addresses:
            entry.addresses = tuple(a[:MAX_STORED_CHARS] for a in addresses)[
                :MAX_ADDRESSES_PER_PEER
            ]
        entry.router_port = entry.router_port if router_port is None else router_port
        entry.pub_port = entry.pub_port if pub_port is None else pub_port
        entry.card_port = entry.card_port if card_port is None else card_port
        self._dirty = True
        return warnings

    def pin(self, peer_id: bytes) -> bool:
        """Never evict this peer (we talked to it); False if unknown or too many are pinned."""
        entry = self._loaded().get(peer_id)
        if entry is None:
            return False
        if entry.pinned:
            return True
        if self._pinned >= self.max_pinned:
            log.info("not pinning %s: %d peers are pinned already", fingerprint_of(peer_id),
                     self._pinned)
            return False
        entry.pinned = True
        self._pinned += 1
        self._dirty = True
        return True

    def is_pinned(self, peer_id: bytes) -> bool:
        entry = self._loaded().get(peer_id)
        return entry is not None and entry.pinned

    def observe_card(self, card: PeerCard, *, now: float | None = None) -> list[str]:
        """``observe`` with everything a ``PeerCard`` tells."""
        return self.observe(
            card.peer_id,
            card.name,
            card.addresses,
            router_port=card.router_port,
            pub_port=card.pub_port,
            card_port=card.card_port,
            now=now,
        )

    # ------------------------------------------------------------ persistence

    def load(self) -> list[str]:
        """Read the file (once; later calls do nothing) and return warnings about it.

        Every other method loads on first use, so calling this is only needed to get the
        warnings early. A damaged file is kept as ``peers.json.corrupt-<time>``.
        """
        if self._peers is not None:
            return []
        self._peers = {}
        before = len(self.warnings)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._warn(f"cannot read {self.path} ({exc}); starting with no known peers")
            return self.warnings[before:]
        try:
            tighten_mode(self.path, self.warnings)
        except OSError as exc:
            self._warn(f"cannot restrict permissions of {self.path}: {exc}")
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("peers"), list):
                raise ValueError("no peer list")
        except (UnicodeDecodeError, ValueError) as exc:
            self._keep_corrupt(f"is damaged ({exc}); starting with no known peers")
            return self.warnings[before:]
        bad = 0
        for item in data["peers"]:
            parsed = _entry_from_json(item)
            if parsed is None:
                bad += 1
                continue
            peer_id, entry = parsed
            if entry.pinned:
                if self._pinned >= self.max_pinned:
                    entry.pinned = False
                else:
                    self._pinned += 1
            self._peers[peer_id] = entry
            for seen in entry.names:
                self._by_name.setdefault(_name_key(seen), set()).add(peer_id)
        if bad:
            self._keep_corrupt(f"had {bad} unreadable peer entries; they were dropped")
            self._dirty = True
        self._make_room(extra=0)
        return self.warnings[before:]

    def snapshot(self) -> Snapshot | None:
        """The file's next contents if anything changed since the last snapshot, else None.
        Call on the thread that changes the table; pass the result to ``write``."""
        if not self._dirty or self._peers is None:
            return None
        data = {
            "version": FILE_VERSION,
            "peers": [_entry_to_json(pid, e) for pid, e in self._peers.items()],
        }
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        self._dirty = False
        self._generation += 1
        return Snapshot(self._generation, text.encode("utf-8"))

    def write(self, snapshot: Snapshot) -> bool:
        """Write a snapshot (blocking: fsync; safe from any thread). A snapshot older than one
        already written is skipped; False then."""
        with self._write_lock:
            if snapshot.generation <= self._written_generation:
                return False
            ensure_private_dir(self.path.parent)
            write_private_file(self.path, snapshot.data)
            self._written_generation = snapshot.generation
            self.writes += 1
            return True

    def flush(self) -> None:
        """Write the file now if anything changed since the last snapshot."""
        snapshot = self.snapshot()
        if snapshot is not None:
            self.write(snapshot)

    # ------------------------------------------------------------ internals

    def _loaded(self) -> dict[bytes, _Entry]:
        if self._peers is None:
            self.load()
        assert self._peers is not None
        return self._peers

    def _make_room(self, extra: int = 1) -> None:
        """Drop the least recently seen peers that are not pinned until ``extra`` more fit."""
        peers = self._loaded()
        excess = len(peers) - self._pinned + extra - self.max_peers
        if excess <= 0:
            return
        evictable = sorted((e.last_seen, pid) for pid, e in peers.items() if not e.pinned)
        for _, oldest in evictable[:excess]:
            self._forget_names(oldest, peers.pop(oldest).names)
        self._dirty = True

    def _trim_names(self, peer_id: bytes, entry: _Entry, keep: str) -> None:
        while len(entry.names) > MAX_NAMES_PER_PEER:
            stale = min(
                (s for s in entry.names.values() if s.name != keep), key=lambda s: s.last_seen
            )
            del entry.names[stale.name]
            self._forget_names(peer_id, [stale.name])

    def _forget_names(self, peer_id: bytes, names: Iterable[str]) -> None:
        for name in names:
            key = _name_key(name)
            holders = self._by_name.get(key)
            if holders is None:
                continue
            entry = self._peers.get(peer_id) if self._peers is not None else None
            if entry is not None and any(_name_key(n) == key for n in entry.names):
                continue  # the peer still holds the name in another spelling
            holders.discard(peer_id)
            if not holders:
                del self._by_name[key]

    def _keep_corrupt(self, problem: str) -> None:
        try:
            backup = move_aside(self.path)
        except OSError as exc:
            self._warn(f"{self.path} {problem}; could not move it aside ({exc})")
            return
        self._warn(f"{self.path} {problem}; the old file is kept as {backup.name}")

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)


def _name_key(name: str) -> str:
    return name.strip().casefold()


def _snapshot(peer_id: bytes, entry: _Entry) -> KnownPeer:
    return KnownPeer(
        peer_id=peer_id,
        name=entry.name,
        first_seen=entry.first_seen,
        last_seen=entry.last_seen,
        names=tuple(entry.names.values()),
        addresses=entry.addresses,
        router_port=entry.router_port,
        pub_port=entry.pub_port,
        card_port=entry.card_port,
        pinned=entry.pinned,
    )


def _entry_to_json(peer_id: bytes, entry: _Entry) -> dict[str, Any]:
    return {
        "id": peer_id.hex(),
        "name": entry.name,
        "first_seen": entry.first_seen,
        "last_seen": entry.last_seen,
        "names": [[s.name, s.first_seen, s.last_seen] for s in entry.names.values()],
        "addresses": list(entry.addresses),
        "router_port": entry.router_port,
        "pub_port": entry.pub_port,
        "card_port": entry.card_port,
        "pinned": entry.pinned,
    }


def _entry_from_json(item: object) -> tuple[bytes, _Entry] | None:
    """One peer from the file, or None if any part of it does not check out."""
    if not isinstance(item, dict):
        return None
    try:
        peer_id = bytes.fromhex(item["id"])
    except (KeyError, TypeError, ValueError):
        return None
    name = item.get("name")
    first, last = _as_time(item.get("first_seen")), _as_time(item.get("last_seen"))
    names, addresses = item.get("names"), item.get("addresses", [])
    if (
        len(peer_id) != PEER_ID_BYTES
        or not isinstance(name, str)
        or first is None
        or last is None
        or not isinstance(names, list)
        or not isinstance(addresses, list)
        or not all(isinstance(a, str) for a in addresses)
    ):
        return None
    seen: dict[str, SeenName] = {}
    for n in names:
        if not (
            isinstance(n, list)
            and len(n) == 3
            and isinstance(n[0], str)
            and _as_time(n[1]) is not None
            and _as_time(n[2]) is not None
        ):
            return None
        seen[n[0]] = SeenName(n[0], float(n[1]), float(n[2]))
    if name not in seen:
        return None
    ports: list[int | None] = []
    for port_key in ("router_port", "pub_port", "card_port"):
        port = item.get(port_key)
        if port is not None and not (
            isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
        ):
            return None
        ports.append(port)
    pinned = item.get("pinned", False)
    if not isinstance(pinned, bool):
        return None
    entry = _Entry(
        name=name,
        first_seen=first,
        last_seen=last,
        names=dict(list(seen.items())[-MAX_NAMES_PER_PEER:]),
        addresses=tuple(addresses[:MAX_ADDRESSES_PER_PEER]),
        router_port=ports[0],
        pub_port=ports[1],
        card_port=ports[2],
        pinned=pinned,
    )
    if name not in entry.names:
        entry.names[name] = seen[name]
    return peer_id, entry


def _as_time(value: object) -> float | None:
    """``value`` as a Unix time, or None if it is not a finite non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)
