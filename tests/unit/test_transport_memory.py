"""MemoryTransport: the in-process fake behaves like the ZeroMQ transport the node relies on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest

from meshchat.config import Limits
from meshchat.identity import Identity
from meshchat.transport.base import Incoming, LocalPorts
from meshchat.transport.memory import MemoryNetwork, MemoryTransport

from ..twins import twin_identity, twin_of

DEADLINE_S = 2.0


class Peer:
    """A started transport and what it received."""

    def __init__(self, network: MemoryNetwork, limits: Limits | None = None) -> None:
        self.identity = Identity.generate()
        self.failures: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport = MemoryTransport(
            network, limits or Limits(), on_handshake_failure=self.failures.put_nowait
        )
        self.inbox: asyncio.Queue[Incoming] = asyncio.Queue()
        self.ports = LocalPorts(0, 0)

    async def start(self) -> Peer:
        self.ports = await self.transport.start(self.identity, ["*"], self.inbox.put_nowait)
        return self

    @property
    def id(self) -> bytes:
        return self.identity.peer_id

    def connect(self, other: Peer) -> None:
        self.transport.connect_peer(other.id, "mem", other.ports.router_port, other.ports.pub_port)

    async def next(self) -> Incoming:
        return await asyncio.wait_for(self.inbox.get(), DEADLINE_S)

    async def nothing_pending(self) -> None:
        """Let every delivery already scheduled run, then check none came."""
        for _ in range(5):
            await asyncio.sleep(0)
        assert self.inbox.empty(), self.inbox.get_nowait()


@pytest.fixture
async def network() -> AsyncIterator[MemoryNetwork]:
    yield MemoryNetwork()


@pytest.fixture
async def peers(network: MemoryNetwork) -> AsyncIterator[list[Peer]]:
    made = [await Peer(network).start() for _ in range(3)]
    yield made
    for peer in made:
        await peer.transport.close()


async def test_ports_are_unique(peers: list[Peer]) -> None:
    ports = [p for peer in peers for p in (peer.ports.router_port, peer.ports.pub_port)]
    assert len(set(ports)) == len(ports)


async def test_publish_reaches_subscribers_of_a_topic_prefix(peers: list[Peer]) -> None:
    a, b, c = peers
    for x, y in ((b, a), (a, b), (c, a), (a, c)):
        x.connect(y)
    b.transport.subscribe(b"room/1")
    c.transport.subscribe(b"room/")
    a.transport.publish(b"room/1/chat", b"one")
    a.transport.publish(b"room/2/chat", b"two")

    got = await b.next()
    assert (got.kind, got.peer_id, got.topic, got.payload) == ("pub", a.id, b"room/1/chat", b"one")
    assert [(await c.next()).payload for _ in range(2)] == [b"one", b"two"]
    await b.nothing_pending()


async def test_publish_needs_a_connection_and_unsubscribe_stops_it(peers: list[Peer]) -> None:
    a, b, c = peers
    b.connect(a)
    a.connect(b)
    a.connect(c)  # a's PUB dials c, but c takes publications only from its own peers
    b.transport.subscribe(b"t")
    c.transport.subscribe(b"t")  # subscribed but never connected to a
    a.transport.publish(b"t", b"1")
    assert (await b.next()).payload == b"1"
    b.transport.unsubscribe(b"t")
    a.transport.publish(b"t", b"2")
    await b.nothing_pending()
    await c.nothing_pending()


async def test_delivery_is_asynchronous_and_in_order(peers: list[Peer]) -> None:
    a, b, _ = peers
    b.connect(a)
    a.connect(b)
    b.transport.subscribe(b"")
    for i in range(100):
        a.transport.publish(b"t", str(i).encode())
    assert b.inbox.empty()  # nothing is delivered inside publish()
    assert [int((await b.next()).payload) for _ in range(100)] == list(range(100))


async def test_receiver_is_never_reentered(network: MemoryNetwork) -> None:
    a = await Peer(network).start()
    inside = 0
    order: list[bytes] = []
    all_three = asyncio.Event()
    b_identity = Identity.generate()
    b = MemoryTransport(network)

    async def slow_receiver(incoming: Incoming) -> None:
        nonlocal inside
        inside += 1
        assert inside == 1
        await asyncio.sleep(0)
        order.append(incoming.payload)
        inside -= 1
        if len(order) == 3:
            all_three.set()

    def receiver(incoming: Incoming) -> Awaitable[None]:
        return slow_receiver(incoming)

    ports = await b.start(b_identity, ["*"], receiver)
    a.transport.connect_peer(b_identity.peer_id, "mem", ports.router_port, ports.pub_port)
    for i in range(3):
        assert a.transport.send(b_identity.peer_id, bytes([i]))
    await asyncio.wait_for(all_three.wait(), DEADLINE_S)
    assert order == [b"\x00", b"\x01", b"\x02"]
    await b.close()
    await a.transport.close()


async def test_direct_both_ways_including_the_reply_path(peers: list[Peer]) -> None:
    a, b, c = peers
    a.connect(b)  # only a has a link; b answers over the way a came in
    assert not b.transport.send(a.id, b"not yet")  # a has not spoken to b: no route back
    assert a.transport.send(b.id, b"ping")
    got = await b.next()
    assert (got.kind, got.peer_id, got.payload) == ("direct", a.id, b"ping")
    assert b.transport.send(a.id, b"pong")
    got = await a.next()
    assert (got.kind, got.peer_id, got.payload) == ("direct", b.id, b"pong")
    assert not b.transport.send(c.id, b"no channel")


async def test_a_link_pins_the_peer_key(peers: list[Peer]) -> None:
    a, b, c = peers
    # c's ports, but b's id: the peer there does not hold b's key.
    a.transport.connect_peer(b.id, "mem", c.ports.router_port, c.ports.pub_port)
    assert not a.transport.is_connected(b.id)
    assert a.transport.stats.handshake_failures == 1
    assert await asyncio.wait_for(a.failures.get(), DEADLINE_S) == b.id


async def test_partition_loses_frames_then_heals(peers: list[Peer]) -> None:
    a, b, c = peers
    for x, y in ((b, a), (a, b), (c, a), (a, c)):
        x.connect(y)
    b.transport.subscribe(b"t")
    c.transport.subscribe(b"t")
    network = a.transport.network
    network.set_link(a.id, b.id, False)
    a.transport.publish(b"t", b"during")
    assert b.transport.send(a.id, b"lost")  # queued as far as the sender knows
    assert (await c.next()).payload == b"during"
    await b.nothing_pending()
    await a.nothing_pending()

    network.set_link(a.id, b.id, True)
    a.transport.publish(b"t", b"after")
    assert (await b.next()).payload == b"after"
    assert b.transport.is_connected(a.id)


async def test_killed_peer_vanishes(peers: list[Peer]) -> None:
    a, b, _ = peers
    b.connect(a)
    a.connect(b)
    b.transport.subscribe(b"t")
    a.transport.network.kill(a.id)
    a.transport.publish(b"t", b"ghost")
    assert not a.transport.send(b.id, b"ghost")
    assert b.transport.send(a.id, b"into the void")  # b cannot tell yet
    await b.nothing_pending()
    assert b.transport.is_connected(a.id)


async def test_deny(peers: list[Peer]) -> None:
    a, b, _ = peers
    a.connect(b)
    b.connect(a)
    a.transport.subscribe(b"t")
    b.transport.deny(a.id)
    assert not b.transport.is_connected(a.id)

    assert a.transport.send(b.id, b"refused")
    await b.nothing_pending()
    assert b.transport.stats.extra["dropped_denied"] == 1
    assert not b.transport.send(a.id, b"no way back")
    b.transport.connect_peer(a.id, "mem", a.ports.router_port, a.ports.pub_port)
    assert not b.transport.is_connected(a.id)  # connect to a denied peer is ignored

    # Our PUB's connection to it goes with the deny; its next handshake is refused.
    b.transport.publish(b"t", b"not after the deny")
    await a.nothing_pending()
    network = a.transport.network
    network.set_link(a.id, b.id, False)
    network.set_link(a.id, b.id, True)
    assert not a.transport.is_connected(b.id)
    assert a.transport.stats.handshake_failures == 1

    b.transport.allow(a.id)
    a.connect(b)
    b.connect(a)
    assert a.transport.send(b.id, b"welcome back")
    assert (await b.next()).payload == b"welcome back"


async def test_oversize_frames_are_refused_and_dropped(network: MemoryNetwork) -> None:
    small = await Peer(network, Limits(max_frame_bytes=100)).start()
    big = await Peer(network, Limits(max_frame_bytes=1000)).start()
    big.connect(small)
    small.connect(big)
    assert not small.transport.send(big.id, bytes(101))
    assert small.transport.stats.send_failures == 1
    assert big.transport.send(small.id, bytes(500))
    assert big.transport.send(small.id, b"fits")
    assert (await small.next()).payload == b"fits"
    assert small.transport.stats.dropped_oversize == 1
    for peer in (small, big):
        await peer.transport.close()


async def test_close_is_idempotent_and_stops_everything(peers: list[Peer]) -> None:
    a, b, _ = peers
    b.connect(a)
    b.transport.subscribe(b"t")
    await a.transport.close()
    await a.transport.close()
    a.transport.publish(b"t", b"after close")
    assert not a.transport.send(b.id, b"after close")
    await b.nothing_pending()


async def test_a_failing_receiver_does_not_stop_delivery(network: MemoryNetwork) -> None:
    a = await Peer(network).start()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    def receiver(incoming: Incoming) -> None:
        if incoming.payload == b"boom":
            raise RuntimeError("boom")
        got.put_nowait(incoming.payload)

    b = MemoryTransport(network)
    identity = Identity.generate()
    ports = await b.start(identity, ["*"], receiver)
    a.transport.connect_peer(identity.peer_id, "mem", ports.router_port, ports.pub_port)
    a.transport.send(identity.peer_id, b"boom")
    a.transport.send(identity.peer_id, b"fine")
    assert await asyncio.wait_for(got.get(), DEADLINE_S) == b"fine"
    assert b.stats.extra["receiver_errors"] == 1
    await b.close()
    await a.transport.close()


async def test_a_dealer_only_link_gets_direct_frames_but_no_publications(
        peers: list[Peer]) -> None:
    a, b, _ = peers
    a.transport.subscribe(b"")
    b.connect(a)  # b's PUB dials a; a takes nothing from a peer it only probes
    a.transport.connect_peer(b.id, "mem", b.ports.router_port, b.ports.pub_port,
                             subscribe=False)
    assert a.transport.is_connected(b.id) and a.transport.open_links == 1
    b.transport.publish(b"t", b"not for a")
    assert a.transport.send(b.id, b"hello")
    assert (await b.next()).payload == b"hello"
    assert b.transport.send(a.id, b"back")
    assert (await a.next()).payload == b"back"
    await a.nothing_pending()

    a.connect(b)  # the same place, now with the SUB
    assert a.transport.open_links == 2 and a.transport.peak_links == 2
    b.transport.publish(b"t", b"for a")
    assert (await a.next()).payload == b"for a"
    a.transport.disconnect_peer(b.id)
    assert a.transport.open_links == 0 and a.transport.peak_links == 2


async def test_a_twin_of_a_connected_peer_is_refused(network: MemoryNetwork,
                                                    peers: list[Peer]) -> None:
    a, b, _ = peers
    a.connect(b)
    twin = twin_of(b.id)
    a.transport.connect_peer(twin, "mem", b.ports.router_port, b.ports.pub_port)
    assert not a.transport.is_connected(twin)
    assert a.transport.stats.extra["dropped_twin"] == 1
    assert not a.transport.send(twin, b"for the twin")  # no link, no route for it
    assert a.transport.send(b.id, b"for b")
    assert (await b.next()).payload == b"for b"

    # Once the original is gone, the key may be bound to the other id (one at a time).
    a.transport.disconnect_peer(b.id)
    a.transport.connect_peer(twin, "mem", b.ports.router_port, b.ports.pub_port)
    assert a.transport.is_connected(twin)
    a.transport.connect_peer(b.id, "mem", b.ports.router_port, b.ports.pub_port)
    assert not a.transport.is_connected(b.id)
    assert a.transport.stats.extra["dropped_twin"] == 2


async def test_a_twin_sender_is_named_by_the_id_its_key_is_bound_to(
        network: MemoryNetwork, peers: list[Peer]) -> None:
    a, b, _ = peers
    a.connect(b)
    evil = Peer(network)
    evil.identity = twin_identity(b.identity)
    await evil.start()
    try:
        evil.connect(a)
        assert evil.transport.send(a.id, b"as the twin")
        incoming = await a.next()
        assert incoming.peer_id == b.id  # the envelope's sender must then be b, or it is spoofed
        # Frames for b never go to a transport that only claims b's twin id.
        assert a.transport.send(b.id, b"for b")
        assert (await b.next()).payload == b"for b"
        await evil.nothing_pending()
        # A denied key covers both ids.
        a.transport.deny(twin_of(b.id))
        assert not a.transport.is_connected(b.id)
        assert evil.transport.send(a.id, b"denied")
        await a.nothing_pending()
        assert a.transport.stats.extra["dropped_denied"] == 1
    finally:
        await evil.transport.close()
