"""Asking for a room's state is rate-limited per peer, not per room.

After a heal a member may need the state of two hosts in the same tenth of a second: one
rival's hints (its heads, its announced state) must not use up the turn of the request to
the other. The same holds against a hostile member: heads claiming a higher version, sent
as fast as it likes, must not keep us from asking the host for a key we missed.
"""

from __future__ import annotations

import os

from meshchat.authority import Role
from meshchat.config import Limits, Timings
from meshchat.historysync import HistorySync
from meshchat.identity import Identity
from meshchat.keyring import Keyring
from meshchat.protocol.codec import Codec
from meshchat.protocol.messages import StatePush
from meshchat.room import RoomCore
from meshchat.runtime.rooms import JoinedRoom

CODEC = Codec()
INTERVAL = 0.1


def _room() -> tuple[JoinedRoom, Limits]:
    host = Identity.generate()
    core, epoch, key = RoomCore.create(host, CODEC, "lobby", "host", 1.0, os.urandom)
    limits = Limits()
    return JoinedRoom(core, Keyring.with_key(limits, epoch, key),
                      HistorySync(limits, Timings())), limits


def test_a_request_to_one_peer_does_not_hold_back_one_to_another() -> None:
    jr, limits = _room()
    alice, carol = os.urandom(32), os.urandom(32)
    assert jr.state_ask_due(alice, 10.0, INTERVAL, limits.max_peers)
    assert jr.state_ask_due(carol, 10.037, INTERVAL, limits.max_peers)  # was refused before
    assert not jr.state_ask_due(alice, 10.05, INTERVAL, limits.max_peers)  # too soon for alice
    assert not jr.state_ask_due(carol, 10.1, INTERVAL, limits.max_peers)
    assert jr.state_ask_due(alice, 10.101, INTERVAL, limits.max_peers)
    assert jr.state_ask_due(carol, 10.2, INTERVAL, limits.max_peers)


def test_a_flood_of_hints_from_one_member_leaves_the_host_its_turn() -> None:
    jr, limits = _room()
    host, flooder = jr.state.host, os.urandom(32)
    asked_flooder = 0
    now = 50.0
    for _ in range(1000):  # a hint every millisecond for a second
        now += 0.001
        asked_flooder += jr.state_ask_due(flooder, now, INTERVAL, limits.max_peers)
    assert asked_flooder <= 1 / INTERVAL  # one request per interval, however fast it hints
    assert jr.state_ask_due(host, now, INTERVAL, limits.max_peers)


def test_the_answer_of_each_asked_peer_counts_as_asked_for() -> None:
    jr, limits = _room()
    alice, carol, stranger = os.urandom(32), os.urandom(32), os.urandom(32)
    assert jr.state_ask_due(alice, 10.0, INTERVAL, limits.max_peers)
    assert jr.state_ask_due(carol, 10.01, INTERVAL, limits.max_peers)
    push = StatePush(jr.room_id, jr.core.blob)
    window = 2.0
    for peer in (alice, carol):
        assert Role.ASKED in jr.roles(peer, push, 10.5, window)
    assert Role.ASKED not in jr.roles(stranger, push, 10.5, window)
    assert Role.ASKED not in jr.roles(alice, push, 12.5, window)  # asked too long ago


def test_the_table_of_requests_stays_within_max_peers_newest_kept() -> None:
    jr, _ = _room()
    cap = 16
    peers = [os.urandom(32) for _ in range(3 * cap)]
    now = 10.0
    for peer in peers:
        now += 0.001
        assert jr.state_ask_due(peer, now, INTERVAL, cap)
        assert len(jr.state_from) <= cap
    assert list(jr.state_from) == peers[-cap:]
    # asking an old peer again moves it to the newest end, so it is not the next forgotten
    now += 1.0
    assert jr.state_ask_due(peers[-cap], now, INTERVAL, cap)
    assert next(reversed(jr.state_from)) == peers[-cap]
