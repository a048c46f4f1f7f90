"""A join whose request or answer is lost on the way still goes through, at once.

A connection that dies just as a partition heals takes along what was written into it. The
joiner sends its request again under the same id (``Timings.request_resend_s``), and the host
repeats the answer it gave that id (``ReplyCache``) rather than deciding a second time.
"""

from __future__ import annotations

from meshchat import PeerJoined
from meshchat.protocol.messages import JoinAccept, JoinRequest
from meshchat.runtime.wire import ReplyCache

from .conftest import Mesh, lose_first


async def test_a_lost_join_request_is_sent_again(mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    await alice.host("lobby")
    lost = lose_first(bob, JoinRequest)
    room = await bob.join("lobby")  # the join timeout is 3 s; the resend goes after 0.4 s
    assert lost and [m.name for m in room.members] == ["alice", "bob"]
    assert bob.stats["request_resent"] >= 1


async def test_a_lost_answer_is_given_again_not_decided_again(mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    lobby = await alice.host("lobby")
    version = alice._rooms[lobby.room_id].state.version
    lost = lose_first(alice, JoinAccept)
    room = await bob.join("lobby")
    await mesh.recorders["alice"].wait(lambda e: isinstance(e, PeerJoined))
    assert lost and alice.stats["join_repeated"] >= 1
    state = alice._rooms[lobby.room_id].state
    assert [m.name for m in state.members] == ["alice", "bob"]
    assert state.version == version + 1, "the repeat admitted bob a second time"
    assert [m.name for m in room.members] == ["alice", "bob"]


def test_the_reply_cache_is_bounded_and_forgets() -> None:
    cache = ReplyCache(max_peers=2, keep_s=5.0)
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    reply = JoinRequest(b"r" * 16, "x", 7, b"", b"", b"")
    cache.put(a, 7, reply, now=0.0)
    assert cache.get(a, 7, now=1.0) is reply
    assert cache.get(a, 8, now=1.0) is None  # another request of the same peer
    assert cache.get(b, 7, now=1.0) is None  # the same id from another peer
    assert cache.get(a, 7, now=5.5) is None  # too old: a new decision
    cache.put(a, 9, reply, now=6.0)  # one entry per peer: the latest request
    assert cache.get(a, 7, now=6.0) is None and cache.get(a, 9, now=6.0) is reply
    cache.put(b, 1, reply, now=6.0)
    cache.put(c, 1, reply, now=6.0)
    assert len(cache) == 2 and cache.get(a, 9, now=6.0) is None  # the oldest peer goes
