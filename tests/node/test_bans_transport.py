"""A ban reaches the transport: the host's ZAP refuses the key, the refused node is told it is
banned (at once, not after a timeout), and an unban lets the same key back in."""

from __future__ import annotations

import time

import pytest

from meshchat import JoinRefused, MemberRemoved, Node, Timings
from meshchat.discovery.memory import MemoryDiscovery
from meshchat.transport.memory import MemoryTransport

from .conftest import Mesh, until


async def test_a_banned_key_restarted_under_another_name_is_refused_then_let_back_in(
        mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    carol = await mesh.add("carol")
    bob = await mesh.add("bob")
    room = await alice.host("lobby")
    await carol.join("lobby")
    await bob.join("lobby")
    await until(lambda: len(room.members) == 3, what="all joined")
    await room.ban("bob", "spam")
    await mesh.recorders["bob"].wait(lambda e: isinstance(e, MemberRemoved) and e.banned)
    data_dir = bob.data_dir
    await bob.close()

    # The same machine (same key, same data dir) comes back as "robert".
    robert = Node("robert", data_dir=data_dir, timings=Timings.fast(), loopback_only=True,
                  transport=MemoryTransport(mesh.network), discovery=MemoryDiscovery(mesh.hub))
    await robert.start()
    try:
        started = time.monotonic()
        with pytest.raises(JoinRefused) as refused:
            await robert.join("lobby")
        assert refused.value.reason == "banned"
        assert time.monotonic() - started < Timings.fast().join_timeout_s
        assert robert.stats["refused_by_peer"] >= 1
        assert robert.peer_id not in {m.peer_id for m in room.members}

        await room.unban("bob")
        back = await robert.join("lobby")
        await until(lambda: robert.peer_id in {m.peer_id for m in room.members},
                    what="robert back in the room")
        assert back.host.peer_id == alice.peer_id
    finally:
        await robert.close()
