"""What a node publishes when it has nothing to say: the idle schedule. Pure.

Idle traffic must not grow with the LAN (issue 9). So each beat (``heartbeat_interval_s``):

- **presence** (the heartbeat on the presence topic, to every node) goes out only when what it
  says changed (name, colour, the rooms we host and their metadata) or when the slow refresh
  is due (``presence_refresh_s``). A new peer, or a connection that came back, asks a node
  that hosts rooms for one early (``nudge``), and once more ``NUDGE_AGAIN_S`` later, since
  the peer's subscription to us may come up a moment after it: that is how a newcomer and a
  healed partition learn our rooms. The cards of the peers we know ride along only when
  that set changed (``introductions``).
- **a room's host** publishes the room beat (``Heads`` on the room's topic: its heads and the
  state's term and version) every beat. That is the only frequent frame, it reaches only the
  room's members, and it is what failover needs: members time the host out on it.
- **a member** publishes its heads when they changed (at most every ``gap_fill_interval_s``)
  or when the slow refresh is due (``heads_refresh_s``).
- **a subscriber back**: when a member's subscription to us comes up again (``heads_soon``),
  what we published while it was down never reached it, and PUB/SUB does not say so. Our
  heads go out in full ``SETTLE_S`` later (the subscription follows the handshake) and once
  more ``NUDGE_AGAIN_S`` after that: with them it asks for what it missed at once, instead
  of at our next slow refresh.

The refreshes stretch with the crowd, as RTCP's reports do: a node refreshes its presence no
more often than every ``peers / refresh_budget_per_s`` seconds, and its heads in a room no
more often than every ``members / refresh_budget_per_s``, so what refreshes cost each
receiver stays under ``refresh_budget_per_s`` frames a second however large the LAN grows.
Silence-based liveness stretches by the same amount (``quiet_s``).

Peers that stay silent between refreshes are not gone: a peer's liveness comes from the
connections (ZMTP heartbeats in libzmq's I/O thread; a dropped connection is a hint that
is answered with a ping, ``meshchat.liveness``) and from the slow refresh as the last word.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from .config import Timings

__all__ = ["NUDGE_AGAIN_S", "SETTLE_S", "Beat", "BeatPlan", "refresh_interval"]

NUDGE_AGAIN_S = 1.0
SETTLE_S = 0.1  # from a subscriber's admission to its subscription being in place


def refresh_interval(base_s: float, senders: int, budget_per_s: float) -> float:
    """How often each of ``senders`` may refresh so that a receiver of all of them gets at
    most ``budget_per_s`` refreshes a second, and never more often than ``base_s``."""
    return max(base_s, senders / budget_per_s) if budget_per_s > 0 else base_s


@dataclass(frozen=True, slots=True)
class Beat:
    """What to publish this beat: presence (with the known cards or not), and the rooms whose
    heads go out (``heads``, with ``full`` the rooms whose heads list is sent in full; the
    others send only the term and version: a host's room beat with nothing new)."""

    presence: bool = False
    introductions: bool = False
    heads: tuple[bytes, ...] = ()
    full: frozenset[bytes] = frozenset()


@dataclass(slots=True)
class _Room:
    heads: Hashable = None
    sent_at: float = float("-inf")  # when its heads list last went out in full
    soon: list[float] = field(default_factory=list)  # full heads wanted at these times


@dataclass(slots=True)
class BeatPlan:
    """Decides, beat by beat, what is worth sending. The node tells it what it would say
    (``step``'s arguments); it answers with a ``Beat``."""

    timings: Timings
    _presence: Hashable = None
    _presence_at: float = float("-inf")
    _known: frozenset[bytes] | None = None
    _nudged: bool = False
    _again_at: float | None = None
    _rooms: dict[bytes, _Room] = field(default_factory=dict)

    def nudge(self, now: float) -> None:
        """Send presence at the next beat and once more ``NUDGE_AGAIN_S`` later (a new peer,
        a connection back): many nudges in a row still cost two frames."""
        self._nudged = True
        self._again_at = now + NUDGE_AGAIN_S

    def heads_soon(self, room_id: bytes, now: float) -> None:
        """A member's subscription to us came up (again): our heads in ``room_id`` in full,
        ``SETTLE_S`` from now and ``NUDGE_AGAIN_S`` after that. Many in a row (a whole room
        back after a heal, or a peer that redials on purpose) still cost two frames."""
        entry = self._rooms.setdefault(room_id, _Room())
        entry.soon = [now + SETTLE_S, now + SETTLE_S + NUDGE_AGAIN_S]

    def sent(self, now: float, presence: Hashable) -> None:
        """Presence went out outside the schedule (``Ticker.publish_heartbeat``)."""
        self._presence, self._presence_at = presence, now

    def presence_interval(self, peers: int) -> float:
        t = self.timings
        return refresh_interval(t.presence_refresh_s, peers, t.refresh_budget_per_s)

    def quiet_s(self, peers: int) -> float:
        """How much longer than ``presence_refresh_s`` a peer may now be silent between
        refreshes (0 on a LAN of ``refresh_budget_per_s * presence_refresh_s`` or fewer)."""
        return self.presence_interval(peers) - self.timings.presence_refresh_s

    def step(self, now: float, presence: Hashable, known: frozenset[bytes],
             rooms: dict[bytes, tuple[bool, Hashable, int]]) -> Beat:
        """``presence``: what our heartbeat would say (without the known cards); ``known``:
        the live peers whose cards we would share; ``rooms``: room id -> (we host it, our
        heads there, its member count)."""
        t = self.timings
        presence_every = self.presence_interval(len(known))
        again = self._again_at is not None and now >= self._again_at
        if again:
            self._again_at = None
        send_presence = (self._nudged or again or presence != self._presence
                         or now - self._presence_at >= presence_every)
        introductions = send_presence and known != self._known
        if send_presence:
            self._presence, self._presence_at, self._nudged = presence, now, False
            if introductions:
                self._known = known
        heads: list[bytes] = []
        full: set[bytes] = set()
        for room_id, (hosting, mine, members) in rooms.items():
            entry = self._rooms.setdefault(room_id, _Room())
            since = now - entry.sent_at
            changed = mine != entry.heads and since >= t.gap_fill_interval_s
            soon = bool(entry.soon) and now >= entry.soon[0]
            if soon:
                entry.soon = [at for at in entry.soon if at > now]
            due = changed or soon or since >= refresh_interval(
                t.heads_refresh_s, members, t.refresh_budget_per_s)
            if due:
                entry.heads, entry.sent_at = mine, now
                full.add(room_id)
            if due or hosting:
                heads.append(room_id)
        for gone in [r for r in self._rooms if r not in rooms]:
            del self._rooms[gone]
        return Beat(send_presence, introductions, tuple(heads), frozenset(full))
