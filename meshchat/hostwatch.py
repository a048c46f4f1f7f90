"""The host watch: one room's election, as an explicit state machine. Pure (sans-I/O).

Every member watches its room's host. The node feeds the watch what happened (``Input``:
a timer tick, a pong, the host's connection closing, the host gone, our own stall, an accepted
state) with ``now``, and runs what comes back (``Effect``: send a ping with this nonce, claim
the room). The watch never touches a socket, a clock or asyncio.

=========  ===============================================  =========  =====================
state      input                                            next       effect
=========  ===============================================  =========  =====================
any        ``StateChanged`` naming another host             FOLLOWING  —
any        ``StateChanged`` naming us                       HOSTING    —
any        ``Stalled``: our own loop stood still            FOLLOWING  — (silence was ours)
any        ``ConnectionDropped`` within a timeout of that   (same)     — (the drop was ours)
HOSTING    anything else                                    HOSTING    —
any        ``HostGone``: a goodbye, or liveness expired     SUSPECT    ``Claim`` if first
PINGING,   ``PongFrom`` the host, with our nonce            FOLLOWING  —
SUSPECT
any        ``PongFrom`` anyone else, or another nonce       (same)     —
FOLLOWING  ``ConnectionDropped``                            PINGING    ``SendPing``
any        ``Tick``, the host heard within the timeout      FOLLOWING  —
FOLLOWING  ``Tick``, host silent for ``host_timeout_s``     PINGING    ``SendPing``
PINGING    ``Tick``, no pong for ``host_ping_timeout_s``    SUSPECT    ``Claim`` if first
SUSPECT    ``Tick``                                         SUSPECT    ``Claim`` if first
=========  ===============================================  =========  =====================

"First" is the first member in join order that this member hears (``room.successor``): only
that member claims, so a laptop that stalls for a second is pinged, answers, and stays host.

The watch also judges every state a peer offers the room (``judge``): the room rules of
``room.accepts`` with this member's view of the host's silence, and the partition rules. A host
steps down, and a member follows its host to another one, only for a state whose host (and
signer) is in the room's *lineage* as this member saw it — a member of its state, a former
host, or a member the room lost contact with (removed as vanished, or left behind when it
merged into another side) — never kicked or banned, with a strictly higher (term, rank) and a
bounded term step. A member follows only a step-down its host signed
(``room.follows_step_down``: room, term, new host), never a state that merely claims to win.
A stranger's claim changes nothing.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum

from . import room as rules
from .config import Limits, Timings
from .identity import PeerId
from .protocol.messages import RoomState, StepDown

__all__ = [
    "Claim",
    "ConnectionDropped",
    "Effect",
    "HostGone",
    "HostWatch",
    "Input",
    "Judgement",
    "PongFrom",
    "SendPing",
    "Stalled",
    "StateChanged",
    "Tick",
    "Verdict",
    "Watch",
]

Alive = Callable[[PeerId], bool]


class Watch(Enum):
    """Where this member stands towards its room's host."""

    HOSTING = "hosting"  # we host the room: nothing to watch
    FOLLOWING = "following"  # the host was heard within host_timeout_s
    PINGING = "pinging"  # the host went silent: a ping with a nonce is out
    SUSPECT = "suspect"  # the ping went unanswered, or the host is gone


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Tick:
    """The node's timer. ``heard_at``: when anything from the host last arrived (None if
    never); ``alive``: which peers this member hears (for who is first in line)."""

    now: float
    state: RoomState
    heard_at: float | None
    alive: Alive


@dataclass(frozen=True, slots=True)
class PongFrom:
    now: float
    peer: PeerId
    nonce: int


@dataclass(frozen=True, slots=True)
class ConnectionDropped:
    """The transport saw the host's connection close: ask at once, don't wait for silence."""

    now: float


@dataclass(frozen=True, slots=True)
class HostGone:
    """The host said goodbye, or the liveness table gave it up."""

    now: float
    state: RoomState
    alive: Alive


@dataclass(frozen=True, slots=True)
class Stalled:
    """This node itself stood still (suspended, swapping, SIGSTOP): the silence was ours."""

    now: float


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The room took a new state (``old`` → ``new``)."""

    now: float
    old: RoomState
    new: RoomState


Input = Tick | PongFrom | ConnectionDropped | HostGone | Stalled | StateChanged


# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class SendPing:
    peer: PeerId
    nonce: int


@dataclass(frozen=True, slots=True)
class Claim:
    """Claim the room: this member is first in line and ``vanished`` does not answer."""

    vanished: PeerId


Effect = SendPing | Claim


# ---------------------------------------------------------------- judging offered states


class Verdict(Enum):
    TAKE = "take"  # the room rules accept it: it is the room's state now
    FOLLOW = "follow"  # our host stepped down for a host of our lineage: rejoin there
    STEP_DOWN = "step_down"  # we host, and a host of our lineage outranks us: merge into it
    ASK = "ask"  # a hint worth checking: ask that peer for its signed state
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str = ""  # for REFUSE: counted by the node ("" = not worth counting: a replay)


_TAKE = Judgement(Verdict.TAKE)
_STALE = Judgement(Verdict.REFUSE)


class _Bounded:
    """An insertion-ordered set of at most ``size`` peers; the oldest entry goes first."""

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._items: OrderedDict[PeerId, None] = OrderedDict()

    def add(self, peer: PeerId) -> None:
        self._items[peer] = None
        self._items.move_to_end(peer)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def discard(self, peer: PeerId) -> None:
        self._items.pop(peer, None)

    def __contains__(self, peer: object) -> bool:
        return peer in self._items

    def __len__(self) -> int:
        return len(self._items)


class HostWatch:
    """One room's host watch, as this member (``me``) sees it."""

    def __init__(self, me: PeerId, state: RoomState, now: float, timings: Timings,
                 limits: Limits, nonces: Callable[[], int]) -> None:
        self.me = me
        self.timings = timings
        self.limits = limits
        self._nonces = nonces
        self.host = state.host
        self.watch = Watch.HOSTING if state.host == me else Watch.FOLLOWING
        self.host_since = now  # when ``host`` became the host, as we saw it
        self.grace_at = -math.inf  # our last stall: silence before it says nothing
        self.dropped_at: float | None = None  # the host's connection closed (not heard since)
        self.ping_nonce: int | None = None
        self.ping_at = 0.0
        self.former_hosts = _Bounded(limits.max_former_hosts)
        self.lost = _Bounded(limits.max_former_hosts)  # members removed as vanished
        self._record(state)

    # ------------------------------------------------------------ the machine

    def handle(self, event: Input) -> list[Effect]:
        """Take one input; the effects the node must run, in order."""
        match self.watch, event:
            case _, StateChanged(now=now, old=old, new=new):
                if (old.term, old.host) != (new.term, new.host):
                    # A merge, a follow, a claim: whom our side held and the new state lacks
                    # is lost contact, not gone on purpose (that is a version step whose
                    # change says so). They stay of our lineage: when the side we merged
                    # into merges on into theirs, we follow.
                    kept = set(rules.member_ids(new))
                    for peer in rules.member_ids(old):
                        if peer not in kept and peer != self.me:
                            self.lost.add(peer)
                self._record(old)
                self._record(new)
                if new.host != self.host:
                    self._rebase(new.host, now)
                return []
            case _, Stalled(now=now):
                self.grace_at = now
                self.dropped_at = None
                if self.watch is not Watch.HOSTING:
                    self._to(Watch.FOLLOWING)
                return []
            case _, Tick(now=now, state=state) if state.host != self.host:
                self._rebase(state.host, now)  # a state the node set without telling us
                return []
            case Watch.HOSTING, _:
                return []
            case _, HostGone(state=state, alive=alive):
                self.watch = Watch.SUSPECT
                return self._claim_if_first(state, alive)
            case Watch.PINGING | Watch.SUSPECT, PongFrom(peer=peer, nonce=nonce) if (
                    peer == self.host and nonce == self.ping_nonce):
                self._to(Watch.FOLLOWING)
                return []
            case _, PongFrom():
                return []  # someone else's pong, or not our ping: it proves nothing
            case _, ConnectionDropped(now=now) if now - self.grace_at < \
                    self.timings.host_timeout_s:
                # Within a timeout of our own stall: the host gave *us* up meanwhile (its
                # ZMTP heartbeat timed out on our frozen side), and the close reaches us
                # after we woke. It says nothing of the host; its silence from the stall
                # on does.
                return []
            case Watch.FOLLOWING, ConnectionDropped(now=now):
                self.dropped_at = now
                return [self._ping(now)]
            case _, ConnectionDropped(now=now):
                self.dropped_at = now
                return []
            case _, Tick(now=now, heard_at=heard_at) if not self._silent(
                    now, heard_at, self.timings.host_timeout_s):
                if self.dropped_at is not None and heard_at is not None \
                        and heard_at >= self.dropped_at:
                    self.dropped_at = None  # heard again since: the connection is back
                if self.watch is not Watch.FOLLOWING:
                    self._to(Watch.FOLLOWING)
                return []
            case Watch.FOLLOWING, Tick(now=now):
                return [self._ping(now)]
            case Watch.PINGING, Tick(now=now, state=state, alive=alive) if (
                    now - self.ping_at >= self.timings.host_ping_timeout_s):
                self.watch = Watch.SUSPECT
                return self._claim_if_first(state, alive)
            case Watch.SUSPECT, Tick(state=state, alive=alive):
                return self._claim_if_first(state, alive)
        return []

    def _to(self, watch: Watch) -> None:
        self.watch = watch
        if watch in (Watch.FOLLOWING, Watch.HOSTING):
            self.ping_nonce = None

    def _rebase(self, host: PeerId, now: float) -> None:
        """A new host: it gets a full timeout to be heard, and our old suspicions go."""
        self.host = host
        self.host_since = now
        self.dropped_at = None
        self._to(Watch.HOSTING if host == self.me else Watch.FOLLOWING)

    def _ping(self, now: float) -> SendPing:
        self.watch = Watch.PINGING
        self.ping_nonce = self._nonces()
        self.ping_at = now
        return SendPing(self.host, self.ping_nonce)

    def _claim_if_first(self, state: RoomState, alive: Alive) -> list[Effect]:
        host = state.host
        first = rules.successor(state, lambda p: p == self.me or (p != host and alive(p)))
        if first != self.me:
            return []
        return [Claim(host)]

    def _silent(self, now: float, heard_at: float | None, for_s: float) -> bool:
        if self.dropped_at is not None and (heard_at is None or heard_at < self.dropped_at):
            return True
        last = max(-math.inf if heard_at is None else heard_at, self.grace_at,
                   self.host_since)
        return now - last >= for_s

    # ------------------------------------------------------------ queries

    def host_silent(self, now: float, heard_at: float | None) -> bool:
        """Whether this member has stopped hearing its host: the condition for taking an
        election claim (half the timeout, so members that see the host go do agree). The
        host itself never is: it hears itself."""
        if self.watch is Watch.HOSTING:
            return False
        return self._silent(now, heard_at, self.timings.host_timeout_s / 2)

    def contest_open(self, now: float) -> bool:
        """The current host took the room so recently that an honest rival claim of the same
        term may still be on its way (``Timings.claim_contest_s``)."""
        return now - self.host_since < self.timings.claim_contest_s

    def may_host(self, peer: PeerId, state: RoomState, removed: Collection[PeerId]) -> bool:
        """In this room's lineage: a member of our state, a former host or a member the room
        lost contact with; never one kicked or banned."""
        if peer in removed or rules.is_banned(state, peer):
            return False
        return rules.is_member(state, peer) or peer in self.former_hosts or peer in self.lost

    def _record(self, state: RoomState) -> None:
        self.former_hosts.add(state.host)
        if state.change in (rules.VANISHED, rules.FAILOVER):
            self.lost.add(state.change_peer)
        elif state.change in (rules.LEFT, rules.KICKED, rules.BANNED):
            self.lost.discard(state.change_peer)

    # ------------------------------------------------------------ judging offered states

    def judge(self, ours: RoomState, new: RoomState, peer: PeerId, direct: bool, now: float,
              heard_at: float | None, removed: Collection[PeerId],
              step_down: StepDown | None = None) -> Judgement:
        """What to do with ``new`` (signature already checked against ``signer_of(new)``),
        offered by ``peer`` (``direct``: in a StatePush rather than sealed to the room), with
        the ``StepDown`` that came along (its signature checked against its ``old_host``)."""
        if new.room_id != ours.room_id:
            return Judgement(Verdict.REFUSE, "misdirected")
        steps = dict(max_term_step=self.limits.max_term_step,
                     max_version_step=self.limits.max_version_step)
        if ours.host == self.me:
            if new.host == self.me:
                return _STALE  # our own state coming back
            if rules.accepts(ours, new, False, contest_open=self.contest_open(now), **steps):
                return _TAKE  # an earlier member's claim of the same term, just in time
            if not direct:
                return Judgement(Verdict.REFUSE, "rejected_claims")
            # A direct answer to our own StateRequest: a rival host after a partition.
            return self._rival(ours, new, removed, Verdict.STEP_DOWN)
        silent = self.host_silent(now, heard_at)
        if rules.accepts(ours, new, silent, contest_open=self.contest_open(now), **steps):
            return _TAKE
        if direct and new.host != ours.host:
            if rules.follows_step_down(ours, new, step_down):
                # Our host stepped down (a merge after a partition, a handoff we missed) and
                # signed the room over to this state's host: follow it there.
                return self._rival(ours, new, removed, Verdict.FOLLOW)
            if peer == ours.host:
                # Our own host points elsewhere without signing over: not followed.
                return Judgement(Verdict.REFUSE, "step_down_unsigned")
        if new.host != ours.host:
            return Judgement(Verdict.REFUSE, "rejected_claims")
        return _STALE

    def _rival(self, ours: RoomState, new: RoomState, removed: Collection[PeerId],
               verdict: Verdict) -> Judgement:
        if not (self.may_host(new.host, ours, removed)
                and self.may_host(rules.signer_of(new), ours, removed)):
            return Judgement(Verdict.REFUSE, "not_lineage")
        if rules.host_priority(new) <= rules.host_priority(ours):
            return Judgement(Verdict.REFUSE, "outranked")
        if not rules.outranks(new, ours, self.limits.max_term_step):
            return Judgement(Verdict.REFUSE, "term_step")
        return Judgement(verdict)

    def judge_hint(self, ours: RoomState, host: PeerId, term: int,
                   removed: Collection[PeerId]) -> Judgement:
        """A heartbeat says ``host`` hosts our room at ``term``: only a hint. ``ASK`` that
        peer for its signed state if it is of our lineage and would outrank us."""
        if host == self.me or (term, rules.rank(host)) <= rules.host_priority(ours):
            return _STALE  # we outrank it: it is the one to step down
        if not self.may_host(host, ours, removed):
            return Judgement(Verdict.REFUSE, "not_lineage")
        if term - ours.term > self.limits.max_term_step:
            return Judgement(Verdict.REFUSE, "term_step")
        return Judgement(Verdict.ASK)
