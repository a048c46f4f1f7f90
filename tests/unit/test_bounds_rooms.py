"""Issue 6: what a room's host or a listing peer can make a node remember stays bounded.

``JoinedRoom.ever_members`` (who may ask for the room state as a former member) is capped by
``Limits.max_ever_members``, the longest-gone forgotten first; the current members always stay.
"""

from __future__ import annotations

import os

from meshchat.config import Limits, Timings
from meshchat.historysync import HistorySync
from meshchat.identity import Identity
from meshchat.keyring import Keyring
from meshchat.protocol.codec import Codec
from meshchat.room import VANISHED, RoomCore, member_ids
from meshchat.runtime.rooms import JoinedRoom

CODEC = Codec()


def test_a_host_churning_members_cannot_grow_ever_members_past_the_cap() -> None:
    host = Identity.generate()
    core, epoch, key = RoomCore.create(host, CODEC, "lobby", "host", 1.0, os.urandom)
    limits = Limits()
    jr = JoinedRoom(core, Keyring.with_key(limits, epoch, key), HistorySync(limits, Timings()))
    cap = 50
    first = Identity.generate().peer_id
    core.add_member(first, "first", 2.0)
    jr.note_state(core.state, cap)
    steady = Identity.generate().peer_id
    core.add_member(steady, "steady", 2.5)
    jr.note_state(core.state, cap)
    core.remove_member(first, VANISHED)  # first leaves early: the longest gone
    jr.note_state(core.state, cap)
    for i in range(400):  # 400 fake members come and go, one state each
        fake = os.urandom(32)
        core.add_member(fake, f"f{i}", 3.0 + i)
        jr.note_state(core.state, cap)
        core.remove_member(fake, VANISHED)
        jr.note_state(core.state, cap)
        assert len(jr.ever_members) <= cap
    # the current members (host and steady) are still remembered; the long-gone first is not
    for peer in member_ids(core.state):
        assert peer in jr.ever_members
    assert first not in jr.ever_members


def test_remember_members_keeps_the_current_members_most_recent() -> None:
    host = Identity.generate()
    core, epoch, key = RoomCore.create(host, CODEC, "lobby", "host", 1.0, os.urandom)
    limits = Limits()
    jr = JoinedRoom(core, Keyring.with_key(limits, epoch, key), HistorySync(limits, Timings()))
    jr.ever_members.update((os.urandom(32), None) for _ in range(10))
    jr.remember_members(3)
    assert host.peer_id in jr.ever_members
    assert len(jr.ever_members) == 3
