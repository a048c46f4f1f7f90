"""Hypothesis drives a hostile *member*'s frames: any type, any field values, on any socket.

A room of two honest nodes (alice hosts, bob) and mallory, who joined honestly and holds the
room key. Mallory then sends what Hypothesis picks: direct frames to the host, sealed room
frames, presence and broadcast frames, with fields drawn from the schema and leaning on real
ids and edge values. After every frame the host still answers bob's ping within 100 ms; at
the end alice and bob still agree on the room and on its history, and mallory never became
host.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshchat.protocol import messages as m
from meshchat.transport.memory import MemoryTransport

from ..hostile import HostilePeer
from ..strategies import of
from .conftest import Mesh, until

# A stall is what this guards against (a frame that walks a huge range: seconds to hours),
# not speed (bench/ measures /ping under a flood): generous, so a loaded machine passes.
PING_BUDGET_S = 1.0


def frames(pools: dict[str, list[Any]]) -> st.SearchStrategy[tuple[str, m.WireMessage]]:
    direct = st.sampled_from(m.DIRECT_TYPES).flatmap(lambda c: of(c, pools))
    inner = st.sampled_from(m.ROOM_INNER_TYPES).flatmap(lambda c: of(c, pools))
    presence = st.sampled_from(m.PRESENCE_TYPES + m.BROADCAST_TYPES).flatmap(
        lambda c: of(c, pools))
    return (st.tuples(st.just("direct"), direct) | st.tuples(st.just("inner"), inner)
            | st.tuples(st.just("presence"), presence))


async def _scenario(tmp: Path, script: st.DataObject) -> None:
    mesh = Mesh(tmp)
    evil: HostilePeer | None = None
    try:
        alice = await mesh.add("alice")
        bob = await mesh.add("bob")
        room = await alice.host("lobby")
        bob_room = await bob.join("lobby")
        evil = HostilePeer(MemoryTransport(mesh.network))
        await evil.start()
        evil.introduce(alice)
        key, epoch = await evil.join_room(alice, room.room_id)
        await until(lambda: len(bob_room.members) == 3, what="mallory in the room")
        await room.say("before")
        ids = [alice.peer_id, bob.peer_id, evil.peer_id]
        pools: dict[str, list[Any]] = {
            "room_id": [room.room_id], "sender": ids, "peer_id": ids, "host": ids, "to": ids,
            "epoch": [epoch], "request_id": [1, 2, 3, 4242],
        }
        for socket, message in script.draw(st.lists(frames(pools), min_size=1, max_size=12)):
            if socket == "direct":
                evil.send(alice.peer_id, message)
            elif socket == "inner":
                evil.publish_sealed(room.room_id, epoch, key, message)
            else:
                evil.publish(b"B" if isinstance(message, m.Broadcast) else b"P", message)
            started = time.monotonic()
            await bob.ping("alice")
            assert time.monotonic() - started < PING_BUDGET_S, f"slow after {message!r}"
        assert room.is_host and room.host.peer_id == alice.peer_id
        await bob_room.say("after")
        await until(lambda: [(x.sender.peer_id, x.seq) for x in room.history()
                             if x.sender.peer_id != evil.peer_id]
                    == [(x.sender.peer_id, x.seq) for x in bob_room.history()
                        if x.sender.peer_id != evil.peer_id]
                    and any(x.text == "after" for x in room.history()),
                    what="alice and bob agree on the history")
        await until(lambda: (bob_room.term, bob_room.host.peer_id) ==
                    (room.term, alice.peer_id), what="bob and alice agree on the host")
    finally:
        if evil is not None:
            await evil.close()
        await mesh.close()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(script=st.data())
def test_a_hostile_member_cannot_stall_or_split_the_room(tmp_path_factory: Any,
                                                          script: st.DataObject) -> None:
    asyncio.run(_scenario(tmp_path_factory.mktemp("fuzz"), script))
