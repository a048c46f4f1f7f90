"""A room session's pure parts: what a change of room state means, and the chat outbox.

``state_change`` turns (old state, new state, who I am) into the events a user sees and the
one thing the node must do about it (nothing, leave the room, rejoin it, take up or put down
hosting). ``Outbox`` gathers the lines said in one turn of the event loop into one batch.
No I/O: the node runs what these return.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass, field
from enum import Enum

from . import room as rules
from .events import (
    Event,
    HostChanged,
    MemberRemoved,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    RoomClosed,
    RoomRenamed,
)
from .protocol.messages import ChatLine, RoomState

__all__ = ["Outbox", "StateAction", "StateOutcome", "state_change"]

PeerInfoOf = Callable[[bytes, str], PeerInfo]


class StateAction(Enum):
    STAY = "stay"  # nothing to do but show the events
    DROP = "drop"  # the room is closed to us: closed, kicked or banned
    REJOIN = "rejoin"  # the host lost us for a while: come back and fill the gap


@dataclass(frozen=True, slots=True)
class StateOutcome:
    events: tuple[Event, ...]
    action: StateAction
    host_changed: bool = False
    became_host: bool = False  # by a handoff: rekey and announce (a claimer did so already)
    stopped_hosting: bool = False  # withdraw the room announcement


_LEFT_REASONS = {rules.LEFT: "left", rules.HANDOFF: "left"}


def state_change(old: RoomState, new: RoomState, me: bytes, info: PeerInfoOf,
                 following: Set[bytes] = frozenset()) -> StateOutcome:
    """The meaning of ``old`` → ``new`` for the member ``me``. ``info(peer, name)`` names a
    peer for an event. ``following``: members of our side of a healed partition, on their
    way into the room we merged into. Their absence from ``new`` is no leave, nor their
    arrival later a join: the merge notice said it for all of them."""
    name = new.name
    if new.closed and not old.closed:
        return StateOutcome((RoomClosed(name),), StateAction.DROP)
    if not rules.is_member(new, me):
        removed = new.change in (rules.KICKED, rules.BANNED) and new.change_peer == me
        banned = rules.is_banned(new, me)
        if removed or banned:
            event = MemberRemoved(name, info(me, ""), info(new.host, _name_in(new, new.host)),
                                  new.change_reason if removed else "", banned)
            return StateOutcome((event,), StateAction.DROP)
        if old.host == me:
            if new.change == rules.HANDOFF and new.change_peer == me:
                return StateOutcome((), StateAction.STAY)  # we handed off while leaving: done
            # We hosted, and the room went on without us (we were frozen or cut off past the
            # host timeout and a member took over): say so, and come back as a member.
            changed = HostChanged(name, info(me, _name_in(old, me)),
                                  info(new.host, _name_in(new, new.host)), new.term)
            return StateOutcome((changed,), StateAction.REJOIN, host_changed=True,
                                stopped_hosting=True)
        return StateOutcome((), StateAction.REJOIN)
    events: list[Event] = []
    if old.name != new.name:
        events.append(RoomRenamed(name, old.name, new.name))
    old_ids = set(rules.member_ids(old))
    new_ids = set(rules.member_ids(new))
    for m in new.members:
        if m.peer_id not in old_ids and m.peer_id != me and m.peer_id not in following:
            events.append(PeerJoined(name, info(m.peer_id, m.name)))
    for m in old.members:
        if m.peer_id in new_ids or m.peer_id == me or m.peer_id in following:
            continue
        peer = info(m.peer_id, m.name)
        if new.change in (rules.KICKED, rules.BANNED) and new.change_peer == m.peer_id:
            events.append(MemberRemoved(name, peer, info(new.host, _name_in(new, new.host)),
                                        new.change_reason,
                                        new.change == rules.BANNED))
        else:
            reason = _LEFT_REASONS.get(new.change, "vanished")
            if new.change_reason == "quit" and reason == "left":
                reason = "quit"
            events.append(PeerLeft(name, peer, reason))
    if old.host == new.host:
        return StateOutcome(tuple(events), StateAction.STAY)
    events.append(HostChanged(name, info(old.host, _name_in(old, old.host)),
                              info(new.host, _name_in(new, new.host)), new.term))
    return StateOutcome(
        tuple(events), StateAction.STAY, host_changed=True,
        became_host=new.host == me and new.change != rules.FAILOVER,
        stopped_hosting=old.host == me,
    )


def _name_in(state: RoomState, peer: bytes) -> str:
    """The name ``state`` lists for ``peer``: a host that left is still named by the state it
    left, even once the network has forgotten it."""
    member = rules.find_member(state, peer)
    return member.name if member is not None else "?"


@dataclass(slots=True)
class Outbox:
    """Lines said in one turn of the loop, numbered from ``first``: one signed batch."""

    first: int
    lines: list[ChatLine] = field(default_factory=list)
    chars: int = 0

    def follows(self, seq: int) -> bool:
        return self.first + len(self.lines) == seq

    def add(self, line: ChatLine) -> None:
        self.lines.append(line)
        self.chars += len(line.text)

    def full(self, max_lines: int, max_chars: int) -> bool:
        return len(self.lines) >= max_lines or self.chars >= max_chars
