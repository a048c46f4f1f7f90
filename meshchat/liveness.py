"""Peer liveness in steps, as in ZRE: alive → evasive (pinged) → gone. Pure.

A peer is evasive after ``peer_evasive_s`` of silence, or at once when its connection
dropped (``suspect``: the transport saw the TCP connection close, or libzmq's ZMTP
heartbeat timed out); a suspect that is not heard within ``peer_suspect_s`` is gone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from .config import Timings


class Liveness(Enum):
    ALIVE = "alive"
    EVASIVE = "evasive"
    GONE = "gone"


@dataclass(slots=True)
class _Entry:
    last_heard: float
    state: Liveness = Liveness.ALIVE
    deadline: float | None = None  # suspect: gone unless heard by then


class LivenessTable:
    """Tracks when each peer was last heard; ``tick`` reports state changes."""

    def __init__(self, timings: Timings) -> None:
        self._timings = timings
        self._peers: dict[bytes, _Entry] = {}
        self._graced_at = -math.inf  # our own last stall

    def heard(self, peer: bytes, now: float) -> bool:
        """Anything from ``peer`` counts; True if it was unknown or gone before."""
        entry = self._peers.get(peer)
        if entry is None:
            self._peers[peer] = _Entry(now)
            return True
        revived = entry.state is Liveness.GONE
        entry.last_heard = max(entry.last_heard, now)
        entry.state = Liveness.ALIVE
        entry.deadline = None
        return revived

    def suspect(self, peer: bytes, now: float) -> bool:
        """Its connection dropped: evasive now, gone unless heard within ``peer_suspect_s``.
        True if it was alive (ping it); a peer we do not track is left alone."""
        entry = self._peers.get(peer)
        if entry is None:
            return False
        deadline = now + self._timings.peer_suspect_s
        # A drop soon after our own stall is most likely the peer giving *us* up meanwhile:
        # its answer may wait on a redial as well, so it gets twice as long from the stall.
        deadline = max(deadline, self._graced_at + 2 * self._timings.peer_suspect_s)
        if entry.deadline is None or deadline < entry.deadline:
            entry.deadline = deadline
        was_alive = entry.state is Liveness.ALIVE
        entry.state = Liveness.EVASIVE
        return was_alive

    def grace(self, now: float) -> None:
        """This node itself was stalled (suspended, swapping, SIGSTOP): what it did not hear
        meanwhile says nothing about the peers, so every peer counts as just heard."""
        self._graced_at = now
        for entry in self._peers.values():
            entry.last_heard = max(entry.last_heard, now)
            if entry.deadline is not None:
                entry.deadline = max(entry.deadline, now + self._timings.peer_suspect_s)

    def forget(self, peer: bytes) -> None:
        self._peers.pop(peer, None)

    def last_heard(self, peer: bytes) -> float | None:
        entry = self._peers.get(peer)
        return entry.last_heard if entry else None

    def state(self, peer: bytes) -> Liveness:
        entry = self._peers.get(peer)
        return entry.state if entry else Liveness.GONE

    def is_alive(self, peer: bytes) -> bool:
        return self.state(peer) is Liveness.ALIVE

    def tick(self, now: float, quiet_s: float = 0.0) -> list[tuple[bytes, Liveness]]:
        """Advance every peer; returns (peer, new state) for each change. Gone peers are
        forgotten after being reported. ``quiet_s`` stretches both silences (peers refresh
        less often on a large LAN)."""
        changes: list[tuple[bytes, Liveness]] = []
        evasive_s = self._timings.peer_evasive_s + quiet_s
        expired_s = self._timings.peer_expired_s + quiet_s
        for peer, entry in list(self._peers.items()):
            silent = now - entry.last_heard
            if silent >= expired_s or (entry.deadline is not None and now >= entry.deadline):
                changes.append((peer, Liveness.GONE))
                del self._peers[peer]
            elif silent >= evasive_s and entry.state is Liveness.ALIVE:
                entry.state = Liveness.EVASIVE
                changes.append((peer, Liveness.EVASIVE))
        return changes
