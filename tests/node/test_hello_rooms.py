"""A peer that meets a host learns its rooms from the host's Hello, at once.

On a large LAN a host's presence refresh stretches (``meshchat.beats``: tens of seconds at 64
peers), and the two nudged presences after a newcomer appears can go out before the
newcomer's subscription is up. The room must not stay invisible until the next refresh (the
64-node bench saw a joiner get ``RoomNotFound`` for minutes): the Hello each side sends the
other when they meet lists the rooms its sender hosts, as its presence does.
"""

from __future__ import annotations

import dataclasses

from meshchat import Timings
from meshchat.discovery.base import RoomAnnouncement
from meshchat.protocol.messages import Heartbeat

from .conftest import Mesh, until

# Presence as seldom as on a crowded LAN; liveness as patient (no other traffic keeps us).
SLOW_PRESENCE = dataclasses.replace(Timings.fast(), presence_refresh_s=60.0,
                                    peer_evasive_s=120.0, peer_expired_s=180.0)


async def test_a_late_peer_finds_a_room_from_the_hosts_hello(mesh: Mesh) -> None:
    alice = await mesh.add("alice", timings=SLOW_PRESENCE)

    async def no_record(room: RoomAnnouncement) -> None:  # the room's mDNS record got lost
        return None

    alice._discovery.announce_room = no_record  # type: ignore[method-assign]
    alice._ticker.nudge = lambda: None  # type: ignore[method-assign]  # the nudges went early
    await alice.host("lobby")

    def presence_lists_the_room() -> bool:
        sent = alice._ticker.plan._presence
        return isinstance(sent, Heartbeat) and len(sent.hosted) == 1

    await until(presence_lists_the_room, what="alice's presence went out, listing lobby")
    bob = await mesh.add("bob", timings=SLOW_PRESENCE)
    room = await bob.join("lobby")  # within bob's discovery wait: the Hello said it
    assert [m.name for m in room.members] == ["alice", "bob"]
    infos = await bob.rooms(timeout=0.5)
    assert [(i.name, i.host) for i in infos] == [("lobby", "alice")]
