"""Pure session parts: what a state change means to one member, moderation ops, the outbox."""

from __future__ import annotations

import os

import pytest

from meshchat import moderation as mod
from meshchat.errors import NotHost
from meshchat.events import (
    HostChanged,
    MemberRemoved,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    RoomClosed,
    RoomRenamed,
)
from meshchat.identity import Identity
from meshchat.protocol.codec import Codec
from meshchat.protocol.messages import ChatLine
from meshchat.room import RoomCore, is_banned, is_member
from meshchat.session import Outbox, StateAction, state_change

CODEC = Codec()


def info(peer: bytes, name: str) -> PeerInfo:
    return PeerInfo(name or "me", peer.hex()[:16], (), peer)


def _room(host: Identity, *members: Identity) -> RoomCore:
    core, _, _ = RoomCore.create(host, CODEC, "lobby", "host", 1.0, os.urandom)
    for i, m in enumerate(members):
        core.add_member(m.peer_id, f"m{i}", 2.0 + i)
    return core


def test_join_and_leave_become_events_for_others_not_for_me() -> None:
    a, b, c = (Identity.generate() for _ in range(3))
    core = _room(a, b)
    old = core.state
    core.add_member(c.peer_id, "carol", 5.0)
    out = state_change(old, core.state, b.peer_id, info)
    assert out.action is StateAction.STAY
    assert [type(e) for e in out.events] == [PeerJoined]
    assert state_change(old, core.state, c.peer_id, info).events == ()
    old = core.state
    core.remove_member(c.peer_id, "left")
    (left,) = state_change(old, core.state, b.peer_id, info).events
    assert isinstance(left, PeerLeft) and left.reason == "left"


def test_members_following_a_merge_neither_leave_nor_join() -> None:
    """We merged into another room; our side's members are on their way: their absence
    from the winner's state and their arrival later are no events. Others' still are."""
    a, b, c, d = (Identity.generate() for _ in range(4))
    core = _room(a, b, c)
    old = core.state
    core.remove_member(b.peer_id, "vanished")
    core.remove_member(c.peer_id, "vanished")
    core.add_member(d.peer_id, "dave", 6.0)
    following = frozenset({b.peer_id})
    out = state_change(old, core.state, a.peer_id, info, following)
    assert [(type(e), e.peer.peer_id) for e in out.events] == [
        (PeerJoined, d.peer_id), (PeerLeft, c.peer_id)]
    old = core.state
    core.add_member(b.peer_id, "bob", 7.0)
    assert state_change(old, core.state, a.peer_id, info, following).events == ()
    assert [type(e) for e in state_change(old, core.state, a.peer_id, info).events] == [
        PeerJoined]


def test_kick_of_me_drops_the_room_and_says_by_whom() -> None:
    a, b = Identity.generate(), Identity.generate()
    core = _room(a, b)
    old = core.state
    mod.apply(core, mod.KickPeer(b.peer_id, "spam"), new_epoch=7)
    out = state_change(old, core.state, b.peer_id, info)
    assert out.action is StateAction.DROP
    (event,) = out.events
    assert isinstance(event, MemberRemoved) and event.reason == "spam" and not event.banned
    assert event.by.peer_id == a.peer_id
    assert core.state.key_epoch == 7


def test_a_member_the_host_lost_rejoins() -> None:
    a, b = Identity.generate(), Identity.generate()
    core = _room(a, b)
    old = core.state
    core.remove_member(b.peer_id, "vanished")
    assert state_change(old, core.state, b.peer_id, info).action is StateAction.REJOIN


def test_close_rename_and_handoff() -> None:
    a, b = Identity.generate(), Identity.generate()
    core = _room(a, b)
    old = core.state
    mod.apply(core, mod.RenameRoom("hall"))
    (renamed,) = state_change(old, core.state, b.peer_id, info).events
    assert isinstance(renamed, RoomRenamed) and (renamed.old, renamed.new) == ("lobby", "hall")
    old = core.state
    mod.apply(core, mod.Handoff(b.peer_id))
    out = state_change(old, core.state, b.peer_id, info)
    assert out.host_changed and out.became_host and not out.stopped_hosting
    assert isinstance(out.events[-1], HostChanged)
    assert state_change(old, core.state, a.peer_id, info).stopped_hosting
    new_host = RoomCore(b, CODEC, core.current)
    old = new_host.state
    mod.apply(new_host, mod.CloseRoom())
    out = state_change(old, new_host.state, a.peer_id, info)
    assert out.action is StateAction.DROP and out.events == (RoomClosed("hall"),)


def test_ban_of_an_absent_peer_and_unban() -> None:
    a, x = Identity.generate(), Identity.generate()
    core = _room(a)
    assert not mod.removes_member(mod.BanPeer(x.peer_id, "x"), core.state)
    mod.apply(core, mod.BanPeer(x.peer_id, "x", "troll"))
    assert is_banned(core.state, x.peer_id) and not is_member(core.state, x.peer_id)
    mod.apply(core, mod.UnbanPeer(x.peer_id))
    assert not is_banned(core.state, x.peer_id)


def test_only_the_host_applies_ops_and_a_password_change_needs_a_key() -> None:
    a, b = Identity.generate(), Identity.generate()
    core = _room(a, b)
    member = RoomCore(b, CODEC, core.current)
    with pytest.raises(NotHost):
        mod.apply(member, mod.LockRoom())
    with pytest.raises(ValueError):
        mod.apply(core, mod.SetPassword(None))
    assert mod.verb("kick") == "kick" and mod.verb("\x1b[2J") == "do that"


def test_outbox_batches_consecutive_numbers() -> None:
    box = Outbox(5)
    assert box.follows(5) and not box.follows(6)
    box.add(ChatLine(1.0, "hi"))
    assert box.follows(6)
    assert not box.full(2, 100)
    box.add(ChatLine(1.0, "there"))
    assert box.full(2, 100) and box.chars == 7


def test_a_host_that_left_is_named_by_the_state_it_left() -> None:
    a, b = Identity.generate(), Identity.generate()
    core = _room(a, b)
    old = core.state
    core.handoff(b.peer_id, leaving=True, quitting=True)
    out = state_change(old, core.state, b.peer_id, lambda peer, name: info(peer, name or "?"))
    changed = out.events[-1]
    assert isinstance(changed, HostChanged) and changed.old is not None
    assert changed.old.name == "host" and changed.new.name == "m0"


def test_a_host_the_room_went_on_without_is_told_and_rejoins() -> None:
    """Issue 10: a host frozen past the timeout wakes to a state where a member took over and
    it is gone. It is not silently left as a ghost: HostChanged, and a rejoin."""
    a, b, c = (Identity.generate() for _ in range(3))
    core = _room(a, b, c)
    old = core.state
    bob = RoomCore(b, CODEC, core.current)
    bob.claim(a.peer_id, new_epoch=2)
    out = state_change(old, bob.state, a.peer_id, info)
    assert out.action is StateAction.REJOIN
    assert out.stopped_hosting and out.host_changed
    (changed,) = out.events
    assert isinstance(changed, HostChanged)
    assert changed.old is not None and changed.old.peer_id == a.peer_id
    assert changed.new.peer_id == b.peer_id


def test_a_host_that_handed_off_while_leaving_stays_out_quietly() -> None:
    a, b = Identity.generate(), Identity.generate()
    core = _room(a, b)
    old = core.state
    core.handoff(b.peer_id, leaving=True)
    out = state_change(old, core.state, a.peer_id, info)
    assert out.action is StateAction.STAY
    assert out.events == ()
