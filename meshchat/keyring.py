"""A room's keys by epoch, and the sealed frames waiting for a key. Pure.

Keys live in a ring of ``Limits.max_room_keys`` (the oldest epoch goes first). A sealed frame
whose epoch we do not hold yet (its KeyUpdate is still on the way) waits here until the key
arrives — bounded by count (``max_pending_sealed``) and bytes (``max_pending_sealed_bytes``)
across all epochs, oldest dropped first, and each entry expires after ``pending_sealed_s``.
So 10,000 frames under random epochs cost at most those bounds, never more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .config import Limits
from .protocol.messages import Sealed

__all__ = ["Keyring", "Parked"]


@dataclass(frozen=True, slots=True)
class Parked:
    """A sealed frame from ``sender`` that arrived before its key."""

    sender: bytes
    sealed: Sealed
    at: float  # monotonic time it arrived


class Keyring(Mapping[int, bytes]):
    """Room keys by epoch (a ``Mapping``), plus the frames waiting for one."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._keys: OrderedDict[int, bytes] = OrderedDict()
        self._pending: OrderedDict[int, Parked] = OrderedDict()  # arrival order
        self._pending_bytes = 0
        self._serial = 0

    @classmethod
    def with_key(cls, limits: Limits, epoch: int, key: bytes) -> Keyring:
        ring = cls(limits)
        ring.install(epoch, key)
        return ring

    # ------------------------------------------------------------ keys

    def __getitem__(self, epoch: int) -> bytes:
        return self._keys[epoch]

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def install(self, epoch: int, key: bytes) -> list[Parked]:
        """Keep ``key`` for ``epoch``; the frames that waited for it, in arrival order."""
        self._keys[epoch] = key
        self._keys.move_to_end(epoch)
        while len(self._keys) > self._limits.max_room_keys:
            self._keys.popitem(last=False)
        serials = [s for s, p in self._pending.items() if p.sealed.epoch == epoch]
        return [self._forget(s) for s in serials]

    def send_epoch(self, current: int) -> int:
        """The epoch to seal with: the state's own if we hold its key, else the newest."""
        if current in self._keys:
            return current
        return next(reversed(self._keys))

    # ------------------------------------------------------------ frames waiting for a key

    def park(self, sender: bytes, sealed: Sealed, now: float) -> int:
        """Keep a frame until its key arrives. Older frames make room for it (expired ones
        first); how many were dropped — 1 for this one alone if it can never fit."""
        dropped = self.expire(now)
        size = len(sealed.box)
        if size > self._limits.max_pending_sealed_bytes or self._limits.max_pending_sealed < 1:
            return dropped + 1
        while self._pending and (
                len(self._pending) >= self._limits.max_pending_sealed
                or self._pending_bytes + size > self._limits.max_pending_sealed_bytes):
            self._forget(next(iter(self._pending)))
            dropped += 1
        self._serial += 1
        self._pending[self._serial] = Parked(sender, sealed, now)
        self._pending_bytes += size
        return dropped

    def expire(self, now: float) -> int:
        """Drop frames that waited longer than ``pending_sealed_s``; how many."""
        ttl = self._limits.pending_sealed_s
        dropped = 0
        while self._pending:
            serial, oldest = next(iter(self._pending.items()))
            if now - oldest.at <= ttl:
                break
            self._forget(serial)
            dropped += 1
        return dropped

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def _forget(self, serial: int) -> Parked:
        parked = self._pending.pop(serial)
        self._pending_bytes -= len(parked.sealed.box)
        return parked
