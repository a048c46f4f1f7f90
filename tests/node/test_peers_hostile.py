"""Issue 6, cases 6 and 7 and the transport half of 3, at node level (in-memory transport).

A hostile peer floods introductions, introduces twin ids, speaks under a twin id; a banned key
is denied at the transport. Each attack is dropped and counted, changes nothing else, and the
node still answers a ping promptly.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

from meshchat import Node, PeerDiscovered, Timings
from meshchat.config import Limits
from meshchat.discovery.memory import MemoryDiscovery, MemoryDiscoveryHub
from meshchat.discovery.static import CombinedDiscovery
from meshchat.identity import Identity
from meshchat.protocol.messages import Hello, PeerCard, Peers, Ping, Pong, Private
from meshchat.transport.memory import MemoryTransport

from ..hostile import HostilePeer
from ..twins import twin_identity, twin_of
from .conftest import Mesh, until

LIMITS = Limits()


async def ping_ms(evil: HostilePeer, node: Node, nonce: int) -> float:
    start = time.perf_counter()
    evil.send(node.peer_id, Ping(nonce))
    await evil.wait_for(Pong, lambda m: m.nonce == nonce, timeout=1.0)
    return (time.perf_counter() - start) * 1000


async def hostile(mesh: Mesh, node: Node, identity: Identity | None = None) -> HostilePeer:
    evil = HostilePeer(MemoryTransport(mesh.network), identity)
    await evil.start()
    evil.introduce(node)
    await until(lambda: evil.peer_id in node._peers, what="the hostile peer admitted")
    return evil


def fake_cards(n: int, evil: HostilePeer) -> tuple[PeerCard, ...]:
    """Fresh ids; some point nowhere, some at the hostile peer's own ports (a wrong key)."""
    cards = []
    for i in range(n):
        pid = Identity.generate().peer_id if i % 2 else os.urandom(32)
        ports = (evil.router_port, evil.pub_port) if i % 3 == 0 else (40000 + i, 50000 + i)
        cards.append(PeerCard(pid, f"fake{i}", ("mem",), *ports, 0))
    return tuple(cards)


async def test_a_flood_of_fake_cards_costs_bounded_links_and_no_disk(mesh: Mesh) -> None:
    gc.collect()  # the garbage earlier tests left is theirs: no collection pause counted here
    alice = await mesh.add("alice")
    transport = mesh.transports["alice"]
    evil = await hostile(mesh, alice)
    discovered = len([e for e in mesh.recorders["alice"].events
                      if isinstance(e, PeerDiscovered)])
    writes_before = alice._peers.known.writes
    bound = 2 * len(alice._peers) + LIMITS.max_probes  # peers' SUB+DEALER, one per probe
    worst_ms = 0.0
    for round_ in range(10):
        evil.send(alice.peer_id, Peers(fake_cards(1000, evil)))
        worst_ms = max(worst_ms, await ping_ms(evil, alice, 1000 + round_))
        assert transport.open_links <= bound
    evil.send(alice.peer_id, Hello(evil.card(), time.time(), ""))  # and again, to be sure
    await until(lambda: alice.stats["candidates_expired"] + alice.stats["candidates_failed"]
                >= LIMITS.max_probes_per_introducer, timeout=LIMITS.probe_timeout_s + 2,
                what="a round of probes ended")

    assert transport.peak_links <= bound
    assert alice.stats["dropped_introduction_rate"] >= 9000
    # Nothing else changed (the hostile peer sends no heartbeats: it may have gone by now).
    assert set(alice._peers) <= {evil.peer_id}
    assert len([e for e in mesh.recorders["alice"].events
                if isinstance(e, PeerDiscovered)]) == discovered
    assert len(alice._peers.known) == 1 and alice._peers.known.writes - writes_before <= 3
    assert worst_ms < 100, worst_ms
    assert await ping_ms(evil, alice, 1) < 100


async def test_an_honest_introduced_peer_joins_the_mesh_within_a_second(tmp_path: Path,
                                                                        mesh: Mesh) -> None:
    """bob and carol each know only alice; alice introduces them to each other."""
    left, right = MemoryDiscoveryHub(), MemoryDiscoveryHub()

    async def add(name: str, discovery: object) -> Node:
        node = Node(name, data_dir=tmp_path / name, timings=Timings.fast(),
                    loopback_only=True, transport=MemoryTransport(mesh.network),
                    discovery=discovery)  # type: ignore[arg-type]
        await node.start()
        mesh.nodes.append(node)
        return node

    alice = await add("alice", CombinedDiscovery(MemoryDiscovery(left), MemoryDiscovery(right)))
    bob = await add("bob", MemoryDiscovery(left))
    start = time.monotonic()
    carol = await add("carol", MemoryDiscovery(right))
    await until(lambda: {p.name for p in bob.peers()} == {"alice", "carol"}
                and {p.name for p in carol.peers()} == {"alice", "bob"}, timeout=3.0,
                what="bob and carol introduced")
    assert time.monotonic() - start < 1.0
    assert {p.name for p in alice.peers()} == {"bob", "carol"}
    await bob.msg("carol", "hi")
    await until(lambda: carol._peers.known.is_pinned(bob.peer_id), what="carol pins bob")


async def test_a_twin_card_cannot_replace_a_known_peer(mesh: Mesh) -> None:
    alice, bob = await mesh.add("alice"), await mesh.add("bob")
    await until(lambda: bob.peer_id in alice._peers, what="alice knows bob")
    evil = await hostile(mesh, alice)
    twin = twin_of(bob.peer_id)
    evil.send(alice.peer_id, Peers((PeerCard(twin, "bob", ("mem",), evil.router_port,
                                             evil.pub_port, 0),)))
    await until(lambda: alice.stats["dropped_twin"] >= 1, what="the twin card dropped")
    assert twin not in alice._peers and not alice._peers.table.is_candidate(twin)
    assert sorted(p.name for p in alice.peers()) == ["bob", "mallory"]
    await alice.msg("bob", "for bob only")
    assert await ping_ms(evil, alice, 7) < 100


async def test_a_twin_id_of_a_known_peer_cannot_speak_as_a_new_peer(mesh: Mesh) -> None:
    """The holder of bob's key, under bob's twin id: its frames are named bob's and dropped
    as spoofed, and frames for bob never go to it."""
    alice, bob = await mesh.add("alice"), await mesh.add("bob")
    await until(lambda: bob.peer_id in alice._peers, what="alice knows bob")
    bob_identity = Identity(bob.identity.seed)
    twin = HostilePeer(MemoryTransport(mesh.network), twin_identity(bob_identity), name="bob")
    await twin.start()
    try:
        twin.introduce(alice)
        twin.send(alice.peer_id, Private("i am bob too", (alice.peer_id,)))
        await until(lambda: alice.stats["dropped_spoofed"] >= 2, what="twin frames dropped")
        assert twin.peer_id not in alice._peers
        await alice.msg("bob", "for bob")
        assert not twin.messages(Private)
        twin.send(alice.peer_id, Ping(5))
        assert not twin.messages(Pong)
    finally:
        await twin.close()


async def test_a_banned_key_is_denied_at_the_transport_twin_and_all(mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    evil = await hostile(mesh, alice)
    room = await alice.host("lobby")
    await room.ban("mallory", "spam")  # known, not a member: banned by key
    alice._peers.sync_rooms()  # a state change calls this once merged
    # A node that enters a room whose state bans a key denies it from then on.
    carol = await mesh.add("carol")
    evil.introduce(carol)
    await until(lambda: evil.peer_id in carol._peers, what="carol knows mallory")
    room_c = await carol.join("lobby")
    assert [b.name for b in room_c.bans] == ["mallory"]

    for node, nonce in ((alice, 11), (carol, 12)):
        denied = node._transport.stats.extra.get("dropped_denied", 0)
        evil.send(node.peer_id, Ping(nonce))
        await until(lambda n=node, d=denied: n._transport.stats.extra.get("dropped_denied", 0)
                    > d, what="a denied frame")
        assert not node._transport.is_connected(evil.peer_id)
    assert not evil.messages(Pong)

    # Its twin id is the same key: refused too, at the edge.
    twin = HostilePeer(MemoryTransport(mesh.network), twin_identity(evil.identity))
    await twin.start()
    try:
        twin.introduce(alice)  # the "handshake" is refused: the key is denied
        assert not twin.transport.is_connected(alice.peer_id)
        assert twin.transport.stats.handshake_failures == 1
        assert not twin.send(alice.peer_id, Ping(13))
        assert twin.peer_id not in alice._peers and not twin.messages(Pong)
    finally:
        await twin.close()
    assert [m.name for m in room.members] == ["alice", "carol"]
    assert carol._peers.known.is_pinned(alice.peer_id)  # we share a room

    # Unban: allowed again, and reachable again.
    await room.unban("mallory")
    alice._peers.sync_rooms()
    evil.send(alice.peer_id, Ping(14))
    await evil.wait_for(Pong, lambda m: m.nonce == 14)


async def test_a_peer_listing_hundreds_of_rooms_is_capped_and_honest_rooms_still_list(
        mesh: Mesh) -> None:
    from meshchat.protocol.messages import Heartbeat, HostedRoom

    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    await bob.host("lobby")
    evil = await hostile(mesh, alice)
    fake = tuple(HostedRoom(os.urandom(16), f"room{i}", 1, False, False, 1) for i in range(500))
    for _ in range(3):
        evil.publish(b"P", Heartbeat(evil.card(), time.time(), "", fake, ()))
    await until(lambda: alice.stats["dropped_listings_per_peer"] > 0,
                what="listings over the per-peer cap dropped and counted")
    listings = alice._directory.listings
    assert sum(1 for key in listings if key[1] == evil.peer_id) <= LIMITS.max_rooms_per_peer
    assert len(listings) <= LIMITS.max_listings
    names = {info.name for info in await alice.rooms(timeout=0.5)}
    assert "lobby" in names  # the honest host's room is still listed
    room = await alice.join("lobby")
    assert room.host.name == "bob"
