"""The hostile helper itself: it reaches a node and reads its answers."""

from __future__ import annotations

from meshchat.protocol.messages import Ping, Pong
from meshchat.transport.memory import MemoryTransport

from ..hostile import HostilePeer
from .conftest import Mesh


async def test_hostile_peer_pings_a_node(mesh: Mesh) -> None:
    node = await mesh.add("alice")
    evil = HostilePeer(MemoryTransport(mesh.network))
    await evil.start()
    try:
        evil.introduce(node)
        evil.send(node.peer_id, Ping(77))
        pong = await evil.wait_for(Pong, lambda m: m.nonce == 77)
        assert pong.nonce == 77
    finally:
        await evil.close()
