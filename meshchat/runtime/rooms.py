"""The rooms this node is in: one ``JoinedRoom`` each, holding its pure cores and what the node
remembers about it, and ``Rooms``, the registry that also keeps the last state of each room
it left (a ``Room`` handle still answers from it).

A ``JoinedRoom`` answers, without I/O, the questions the runtime asks about its room: what a
peer is to it (the authority table's roles), whether a state request or a "rejoin" is due,
and what it remembers when its state changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, ValuesView
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import hostwatch as hw
from .. import room as rules
from ..authority import Role
from ..causal import CausalOrder
from ..events import Message
from ..history import SeqTracker
from ..historysync import HistorySync
from ..keyring import Keyring
from ..protocol.messages import (
    HistoryReply,
    HostedRoom,
    RoomState,
    SeqRange,
    StatePush,
    WireMessage,
)
from ..session import Outbox

if TYPE_CHECKING:
    from ..handles import Room

__all__ = ["JoinedRoom", "Rooms"]

_NEVER = -1e9


@dataclass(slots=True)
class JoinedRoom:
    core: rules.RoomCore
    keys: Keyring  # room keys by epoch, and sealed frames waiting for theirs
    sync: HistorySync  # what we hold of the room's history, and what we asked whom
    announce: bool = True
    handle: Room | None = None
    # Peer -> None in the order last seen as members (oldest first): ``remember`` bounds it.
    ever_members: dict[bytes, None] = field(default_factory=dict)
    merge_allow: set[bytes] = field(default_factory=set)
    watch: hw.HostWatch | None = None  # the election, made on first use (``Sessions.watch``)
    backlog: tuple[SeqRange, ...] = ()  # a join's backlog windows, until fetched
    history_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    history_progress: bool = False  # the last history reply brought something new
    state_from: dict[bytes, float] = field(default_factory=dict)  # peer -> when we asked
    removed: set[bytes] = field(default_factory=set)  # kicked or banned: never FORMER
    merging: bool = False
    # Members of our side of a healed partition, on their way into the room we merged into
    # (``session.state_change``), until ``following_until`` (monotonic).
    following: frozenset[bytes] = frozenset()
    following_until: float = 0.0
    # Our signed ``StepDown``, once we gave this room's hosting up and stayed (a merge, a
    # handoff): it goes with every state we push, so our former members follow. It names
    # the host and term in ``step_down_to``; ``hosted_last`` is the last state we hosted, so
    # it can be signed again for whoever hosts the room now (``Sessions.state_push``).
    stepped_down: bytes = b""
    step_down_to: tuple[bytes, int] | None = None
    hosted_last: RoomState | None = None
    dropped_silent: set[bytes] = field(default_factory=set)  # removed as vanished: may rejoin
    told_to_rejoin: dict[bytes, float] = field(default_factory=dict)
    outbox: Outbox | None = None
    pace_timer: asyncio.TimerHandle | None = None  # the outbox goes out when the pace lets it
    own_seq: int = 0  # the last number this node gave one of its messages here
    boxes_warm_at: tuple[int, int] | None = None  # (term, version) whose members' boxes we made
    # Causal order on screen (meshchat.causal): batches waiting for the lines they follow
    # (made on first use), and per author the highest number shown here since our last batch
    # (what our next batch says it follows; at most Limits.max_causal_deps authors).
    order: CausalOrder[tuple[bytes, list[Message]]] | None = None
    # Lines were kept back while the state's key was missing (``RoomChat._send``): once it
    # is here, our heads go out so members fetch them.
    unsent_for_key: bool = False
    key_missing_since: float | None = None  # monotonic: when we saw the state's key missing
    shown_since_said: dict[bytes, int] = field(default_factory=dict)
    reserved_seq: int = 0  # numbers up to this are reserved in the log (crash safety)

    @property
    def state(self) -> RoomState:
        return self.core.state

    @property
    def tracker(self) -> SeqTracker:
        return self.sync.tracker

    @property
    def history_from(self) -> Mapping[bytes, float]:
        """Peer -> when we last asked it for history (its replies are solicited)."""
        return self.sync.asked_from

    @property
    def room_id(self) -> bytes:
        return self.core.state.room_id

    def roles(self, peer: bytes, m: WireMessage, now: float, window_s: float) -> Role:
        """What ``peer`` is to this room for message ``m`` (``window_s``: how long an answer
        to our request counts as asked for)."""
        roles = Role.NONE
        state = self.state
        if rules.is_member(state, peer):
            roles |= Role.MEMBER
        if state.host == peer:
            roles |= Role.HOST
        if (peer in self.ever_members and peer not in self.removed
                and not rules.is_banned(state, peer)):
            roles |= Role.FORMER
        if peer in self.merge_allow:
            roles |= Role.MERGING
        if isinstance(m, HistoryReply) and now - self.history_from.get(peer, _NEVER) < window_s:
            roles |= Role.ASKED
        if isinstance(m, StatePush) and now - self.state_from.get(peer, _NEVER) < window_s:
            roles |= Role.ASKED
        return roles

    def knows_author(self, author: bytes) -> bool:
        """A member, a former member, or someone whose lines the room already holds."""
        return (author in self.ever_members or rules.is_member(self.state, author)
                or self.tracker.knows(author))

    def seal_key(self, epoch: int | None = None) -> tuple[int, bytes]:
        """The epoch and key to seal with: ``epoch``'s, or the one to send with now."""
        if epoch is None:
            epoch = self.keys.send_epoch(self.state.key_epoch)
        return epoch, self.keys[epoch]

    def heads_key(self) -> tuple[object, ...]:
        """What our heads say here: when it changes, they are worth publishing."""
        s = self.state
        return (s.term, s.version, self.tracker.heads())

    def hosted(self) -> HostedRoom:
        s = self.state
        return HostedRoom(s.room_id, s.name, len(s.members), s.locked, s.password is not None,
                          s.term)

    def remember_members(self, cap: int) -> None:
        """Note the current members as ever members; past ``cap``, the longest-gone go."""
        self.note_state(self.state, cap)

    def note_state(self, new: RoomState, cap: int) -> None:
        """Remember who was ever a member, and who was removed for good."""
        ever = self.ever_members
        for peer in rules.member_ids(new):
            ever.pop(peer, None)
            ever[peer] = None
        while len(ever) > cap:
            del ever[next(iter(ever))]
        if new.change in (rules.KICKED, rules.BANNED):
            self.removed.add(new.change_peer)
        elif new.change == rules.JOINED:
            self.removed.discard(new.change_peer)

    def note_removal(self, peer: bytes, change: str, max_peers: int) -> None:
        """A member the host removes: one that vanished may come back without a password."""
        if change == rules.VANISHED:
            self.dropped_silent.add(peer)
            if len(self.dropped_silent) > max_peers:
                self.dropped_silent.pop()
        else:
            self.dropped_silent.discard(peer)

    def state_ask_due(self, peer: bytes, now: float, interval_s: float, max_peers: int
                      ) -> bool:
        """Whether to ask ``peer`` for the room state now (at most once per ``interval_s``
        for each peer); if so, its answer counts as asked for.

        The limit is per peer, not per room: after a heal, hints from one rival host (its
        heads, a state announced) must not use up the turn of the request to another, or the
        answer we needed to merge comes an interval late. Each request goes to the peer whose
        frame hinted it, the room's host or a host a signed state names, so the requests
        out stay at most one per interval for each of at most ``max_peers`` peers."""
        if now - self.state_from.get(peer, _NEVER) <= interval_s:
            return False
        self.state_from.pop(peer, None)  # to the end: the oldest request is forgotten first
        self.state_from[peer] = now
        if len(self.state_from) > max_peers:
            self.state_from.pop(next(iter(self.state_from)))
        return True

    def rejoin_ask_due(self, peer: bytes, now: float, interval_s: float) -> bool:
        """Whether to tell ``peer``, which we dropped as vanished, to rejoin (rate-limited)."""
        if now - self.told_to_rejoin.get(peer, _NEVER) <= interval_s:
            return False
        self.told_to_rejoin[peer] = now
        return True


class Rooms:
    """The joined rooms by id, and the last state of every room this node left."""

    def __init__(self) -> None:
        self._joined: dict[bytes, JoinedRoom] = {}
        self._last: dict[bytes, RoomState] = {}

    def __getitem__(self, room_id: bytes) -> JoinedRoom:
        return self._joined[room_id]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._joined)

    def __len__(self) -> int:
        return len(self._joined)

    def __contains__(self, room_id: object) -> bool:
        return room_id in self._joined

    def get(self, room_id: bytes) -> JoinedRoom | None:
        return self._joined.get(room_id)

    def values(self) -> ValuesView[JoinedRoom]:
        return self._joined.values()

    def add(self, jr: JoinedRoom) -> None:
        self._joined[jr.room_id] = jr

    def remove(self, jr: JoinedRoom) -> bool:
        """Leave ``jr``'s room (its state is kept as the last one); False if not in it."""
        if self._joined.pop(jr.room_id, None) is None:
            return False
        self._last[jr.room_id] = jr.state
        return True

    def last_state(self, room_id: bytes) -> RoomState | None:
        return self._last.get(room_id)

    def state_of(self, room_id: bytes) -> RoomState | None:
        """The room's current state if we are in it, else the last one we saw."""
        jr = self._joined.get(room_id)
        return jr.state if jr is not None else self._last.get(room_id)

    def states(self) -> list[RoomState]:
        return [jr.state for jr in self._joined.values()]

    def announced(self) -> list[JoinedRoom]:
        """The rooms we host and announce."""
        return [jr for jr in self._joined.values() if jr.core.is_host and jr.announce]

    def hosted_listing(self) -> tuple[HostedRoom, ...]:
        """The rooms we host and announce, as our presence and our Hello list them."""
        return tuple(jr.hosted() for jr in self.announced())
