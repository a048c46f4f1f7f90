"""ZmqTransport on real sockets (127.0.0.1 inside the test's own network namespace).

Every wait has a deadline. Where a PUB/SUB connection is still being set up (the slow-joiner
effect), the sender repeats until the first frame arrives instead of sleeping first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import zmq
import zmq.asyncio
from zmq.utils import z85

from meshchat.config import Limits
from meshchat.identity import Identity
from meshchat.transport.base import Incoming, LinkEvents, LocalPorts
from meshchat.transport.zmq import HELD_FRAMES, ZmqTransport, ZmqTuning

from ..twins import twin_identity, twin_of

HOST = "127.0.0.1"
DEADLINE_S = 5.0
RETRY_S = 0.05
FAST = ZmqTuning(reconnect_ivl_ms=50, reconnect_ivl_max_ms=200, max_handshake_failures=3,
                 redial_after_ms=200)


class Peer:
    """One started transport, its inbox, and the handshake failures it reported."""

    def __init__(self, identity: Identity | None = None, limits: Limits | None = None) -> None:
        self.identity = identity or Identity.generate()
        self.failures: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport = ZmqTransport(
            limits or Limits(), on_handshake_failure=self.failures.put_nowait, tuning=FAST
        )
        self.inbox: asyncio.Queue[Incoming] = asyncio.Queue()
        self.ports = LocalPorts(0, 0)

    @property
    def id(self) -> bytes:
        return self.identity.peer_id

    def connect(self, other: Peer, as_id: bytes | None = None) -> None:
        self.transport.connect_peer(
            as_id or other.id, HOST, other.ports.router_port, other.ports.pub_port
        )

    async def expect(
        self, predicate: Callable[[Incoming], bool], retry: Callable[[], object] | None = None
    ) -> Incoming:
        """The first frame that matches (others are dropped); ``retry`` is called until then."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            if retry is not None:
                retry()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("expected frame did not arrive")
            try:
                incoming = await asyncio.wait_for(
                    self.inbox.get(), min(remaining, RETRY_S if retry else remaining)
                )
            except TimeoutError:
                continue
            if predicate(incoming):
                return incoming


Factory = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    made: list[Peer] = []

    async def factory(identity: Identity | None = None, limits: Limits | None = None) -> Peer:
        peer = Peer(identity, limits)
        peer.ports = await peer.transport.start(peer.identity, [HOST], peer.inbox.put_nowait)
        made.append(peer)
        return peer

    yield factory
    for peer in made:
        await peer.transport.close(0)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def pair(make: Factory) -> tuple[Peer, Peer]:
    """Two peers, the lower id first: of a pair, only it dials the other's ROUTER."""
    a, b = await make(), await make()
    return (a, b) if a.id < b.id else (b, a)


async def talking_pair(make: Factory, high_events: LinkEvents | None = None
                       ) -> tuple[Peer, Peer]:
    """``pair``, connected both ways, each having heard the other once over the direct
    connection (the lower's dialled one, the higher's answer by routing id); the higher's
    ``high_events`` are set before anything connects."""
    low, high = await pair(make)
    if high_events is not None:
        high.transport.set_link_events(high_events)
    for x, y in ((low, high), (high, low)):
        x.connect(y)
    await high.expect(payload_is(b"up"), lambda: low.transport.send(high.id, b"up"))
    await low.expect(payload_is(b"up too"), lambda: high.transport.send(low.id, b"up too"))
    return low, high


def payload_is(payload: bytes) -> Callable[[Incoming], bool]:
    return lambda incoming: incoming.payload == payload


async def test_pub_sub_filters_topics_across_three_peers(make: Factory) -> None:
    a, b, c = await make(), await make(), await make()
    # A publication goes from a PUB to the SUBs it dials, and is taken from the peers their
    # SUB's owner connected to: a, b and c each pair up with a (b and c not with each other).
    for x, y in ((b, a), (a, b), (c, a), (a, c)):
        x.connect(y)
    b.transport.subscribe(b"room/")
    b.transport.unsubscribe(b"room/")  # back out: nothing left
    b.transport.subscribe(b"room/1")
    c.transport.subscribe(b"room/")
    a.transport.subscribe(b"room/")

    got = await b.expect(payload_is(b"hi b"), lambda: a.transport.publish(b"room/1/x", b"hi b"))
    assert (got.kind, got.peer_id, got.topic, got.peer_address) == ("pub", a.id, b"room/1/x", HOST)
    await c.expect(payload_is(b"hi c"), lambda: a.transport.publish(b"room/2", b"hi c"))
    await a.expect(payload_is(b"from c"), lambda: c.transport.publish(b"room/9", b"from c"))

    # Frames from one PUB arrive in order, so once "end" is in, "other room" would be too.
    _drain(b.inbox)
    a.transport.publish(b"room/2", b"other room")
    a.transport.publish(b"room/1", b"end")
    got = await b.expect(lambda incoming: True)
    assert got.payload == b"end"

    b.transport.unsubscribe(b"room/1")
    a.transport.publish(b"room/1", b"unsubscribed")
    await c.expect(payload_is(b"end"))
    await c.expect(payload_is(b"unsubscribed"))
    assert all(i.payload != b"unsubscribed" for i in _drain(b.inbox))


def _drain(queue: asyncio.Queue[Incoming]) -> list[Incoming]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_direct_both_ways_in_order(make: Factory) -> None:
    a, b = await make(), await make()
    a.connect(b)
    b.connect(a)
    for i in range(200):
        assert a.transport.send(b.id, b"a%d" % i)
        assert b.transport.send(a.id, b"b%d" % i)
    for i in range(200):
        got = await b.expect(lambda incoming: True)
        assert (got.kind, got.peer_id, got.payload, got.peer_address) == (
            "direct",
            a.id,
            b"a%d" % i,
            HOST,
        )
        got = await a.expect(lambda incoming: True)
        assert (got.peer_id, got.payload) == (b.id, b"b%d" % i)


async def test_reply_goes_back_over_the_router(make: Factory) -> None:
    a, b, stranger = await make(), await make(), await make()
    a.connect(b)  # b has no direct link to a
    assert not b.transport.send(a.id, b"nobody asked")
    assert a.transport.send(b.id, b"request")
    await b.expect(payload_is(b"request"))
    assert b.transport.send(a.id, b"reply")
    got = await a.expect(payload_is(b"reply"))
    assert (got.kind, got.peer_id) == ("direct", b.id)
    assert not b.transport.send(stranger.id, b"no channel")


async def test_awaitable_receiver_is_awaited_in_order(make: Factory) -> None:
    a = await make()
    seen: list[bytes] = []
    done = asyncio.Event()

    async def handle(incoming: Incoming) -> None:
        await asyncio.sleep(0)
        seen.append(incoming.payload)
        if len(seen) == 50:
            done.set()

    b = ZmqTransport(tuning=FAST)
    b_id = Identity.generate()
    ports = await b.start(b_id, [HOST], handle)
    try:
        a.transport.connect_peer(b_id.peer_id, HOST, ports.router_port, ports.pub_port)
        for i in range(50):
            a.transport.send(b_id.peer_id, bytes([i]))
        await asyncio.wait_for(done.wait(), DEADLINE_S)
        assert seen == [bytes([i]) for i in range(50)]
    finally:
        await b.close(0)


async def test_a_peer_id_with_a_leading_zero_byte_works(make: Factory) -> None:
    while (identity := Identity.generate()).peer_id[0] != 0:
        pass
    a, b = await make(identity), await make()
    a.connect(b)
    b.connect(a)
    assert a.transport.send(b.id, b"zero")
    got = await b.expect(payload_is(b"zero"))
    assert got.peer_id == a.id


async def test_impostor_claiming_a_peer_id_is_never_taken_for_it(make: Factory) -> None:
    a, b = await make(), await make()
    b.connect(a)  # b knows a: frames authenticated by a's key are a's
    forged = Identity.generate()
    forged.peer_id = a.id  # its CURVE keys stay its own
    impostor = await make(forged)
    impostor.connect(b)

    assert impostor.transport.send(b.id, b"forged")
    got = await b.expect(payload_is(b"forged"))
    # Attributed by the key that authenticated, never by a claim: not a's frame.
    assert got.peer_id == b"" and got.curve_key == forged.curve_public != a.identity.curve_public
    await impostor.transport.close(0)

    # The real owner of the id is heard (and answered) as itself.
    a.connect(b)
    got = await b.expect(lambda i: i.payload == b"real", lambda: a.transport.send(b.id, b"real"))
    assert (got.peer_id, got.payload) == (a.id, b"real")
    assert b.transport.send(a.id, b"to a")
    await a.expect(payload_is(b"to a"))
    assert impostor.inbox.empty()


async def test_reply_route_follows_the_authenticated_key(make: Factory) -> None:
    a, b = await make(), await make()
    a.connect(b)  # only a knows b: b can answer a only over its ROUTER
    assert not b.transport.send(a.id, b"too early")  # no frame from a's key yet
    got = await b.expect(payload_is(b"hello"), lambda: a.transport.send(b.id, b"hello"))
    assert got.peer_id == b"" and got.curve_key == a.identity.curve_public
    assert b.transport.send(a.id, b"answer")
    await a.expect(payload_is(b"answer"))


async def test_a_client_pinned_to_the_wrong_key_is_counted_and_given_up(make: Factory) -> None:
    b, c, watcher = await make(), await make(), await make()
    spy = await make()
    spy.transport.subscribe(b"")
    spy.connect(b, as_id=c.id)  # b's address, but c's key pinned: the handshake cannot pass
    watcher.transport.subscribe(b"")
    watcher.connect(b)
    b.connect(watcher)

    assert await asyncio.wait_for(spy.failures.get(), DEADLINE_S) == c.id
    await watcher.expect(payload_is(b"secret"), lambda: b.transport.publish(b"t", b"secret"))
    await until(lambda: not spy.transport.is_connected(c.id), "the spy to give up")
    assert spy.transport.stats.handshake_failures >= FAST.max_handshake_failures
    assert spy.transport.stats.extra["peers_given_up"] == 1
    assert spy.failures.empty()  # reported once per streak, not per retry
    assert all(i.payload != b"secret" for i in _drain(spy.inbox))


async def test_plain_and_unkeyed_zmq_clients_get_nothing(make: Factory) -> None:
    b, watcher = await make(), await make()
    watcher.transport.subscribe(b"")
    watcher.connect(b)
    b.connect(watcher)
    b.transport.subscribe(b"")
    ctx = zmq.asyncio.Context()
    try:
        plain = ctx.socket(zmq.PUB)  # NULL mechanism against b's SUB, a CURVE server
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(f"tcp://{HOST}:{b.ports.pub_port}")
        stranger = ctx.socket(zmq.PUB)  # valid CURVE, a key b never connected to
        stranger.setsockopt(zmq.LINGER, 0)
        stranger.curve_publickey, stranger.curve_secretkey = zmq.curve_keypair()
        stranger.curve_serverkey = b.identity.curve_public
        stranger.connect(f"tcp://{HOST}:{b.ports.pub_port}")
        unkeyed = ctx.socket(zmq.DEALER)  # valid CURVE with a key nobody knows
        public, secret = zmq.curve_keypair()
        unkeyed.setsockopt(zmq.LINGER, 0)
        unkeyed.curve_publickey, unkeyed.curve_secretkey = public, secret
        unkeyed.curve_serverkey = b.identity.curve_public
        unkeyed.connect(f"tcp://{HOST}:{b.ports.router_port}")
        await unkeyed.send(b"who am I")
        # The transport cannot name the key: it hands the frame up with the key, and the node
        # then requires the envelope's sender to own it (tests/node, tests/net/test_garbage).
        got = await b.expect(payload_is(b"who am I"))
        assert got.peer_id == b"" and got.curve_key == z85.decode(public)
        await watcher.expect(payload_is(b"secret"), lambda: b.transport.publish(b"t", b"secret"))

        # Publications into b's SUB: the plain one never gets through the handshake, the
        # stranger's arrive and are dropped, since b takes publications only from its peers.
        def publish_both() -> None:
            plain.send_multipart([b"P", b"plain"])
            stranger.send_multipart([b"P", b"from a stranger"])

        await until(lambda: (publish_both(), b.transport.stats.extra.get(
            "dropped_not_subscribed", 0) >= 1)[1], "the stranger's publication dropped")
        await b.expect(payload_is(b"watcher"),
                       lambda: watcher.transport.publish(b"P", b"watcher"))
        assert all(i.payload not in (b"plain", b"from a stranger") for i in _drain(b.inbox))
        plain.close()
        stranger.close()
        unkeyed.close()
    finally:
        ctx.term()


async def test_oversize_frames_are_dropped_and_the_node_keeps_serving(make: Factory) -> None:
    small = await make(limits=Limits(max_frame_bytes=64 * 1024))
    big = await make(limits=Limits(max_frame_bytes=1024 * 1024))
    other = await make()
    for x, y in ((big, small), (small, big), (other, small), (small, other)):
        x.connect(y)
    small.transport.subscribe(b"t")

    assert not small.transport.send(big.id, bytes(65 * 1024))  # we never send oversize
    assert small.transport.stats.send_failures == 1
    assert big.transport.send(small.id, b"before")
    await small.expect(payload_is(b"before"))
    await small.expect(
        payload_is(b"pub before"), lambda: big.transport.publish(b"t", b"pub before")
    )

    assert big.transport.send(small.id, bytes(100 * 1024))
    big.transport.publish(b"t", bytes(100 * 1024))

    def again() -> None:
        big.transport.send(small.id, b"after")
        big.transport.publish(b"t", b"after")

    got = await small.expect(payload_is(b"after"), again)
    assert got.peer_id == big.id
    assert all(len(i.payload) < 64 * 1024 for i in _drain(small.inbox))
    # small's SUB dropped the connection from big's PUB; big dials it again by itself.
    await small.expect(payload_is(b"pub after"), lambda: big.transport.publish(b"t", b"pub after"))
    await until(lambda: big.transport.stats.extra["subscribers_admitted"] >= 2,
                "big's PUB shaking hands again")
    assert small.transport.is_connected(big.id)
    assert other.transport.send(small.id, b"still serving")
    await small.expect(payload_is(b"still serving"))


async def test_garbage_on_the_tcp_ports_breaks_nothing(make: Factory) -> None:
    a, b = await make(), await make()
    idle = []
    for port in (b.ports.router_port, b.ports.pub_port):
        for junk in (
            os.urandom(64 * 1024),
            b"\xff" + bytes(8) + b"\x7f\x03\x00CURVE" + bytes(15) + os.urandom(4096),
            b"\xff" + bytes(8) + b"\x7f\x03\x00NULL" + bytes(16) + os.urandom(300),
        ):
            _, writer = await asyncio.open_connection(HOST, port)
            writer.write(junk)
            await writer.drain()
            writer.close()
        idle.append(await asyncio.open_connection(HOST, port))  # connects and says nothing

    a.connect(b)
    b.connect(a)
    a.transport.subscribe(b"")
    assert a.transport.send(b.id, b"still fine")
    await b.expect(payload_is(b"still fine"))
    await a.expect(payload_is(b"pub ok"), lambda: b.transport.publish(b"t", b"pub ok"))
    late = await make()
    late.connect(b)
    assert late.transport.send(b.id, b"late")
    await b.expect(payload_is(b"late"))
    for _, writer in idle:
        writer.close()


async def test_deny_refuses_the_peer_and_allow_lets_it_back(make: Factory) -> None:
    a, b = await pair(make)  # a dials b's ROUTER: a live connection into b when b denies it
    a.connect(b)
    b.connect(a)
    a.transport.subscribe(b"")
    assert a.transport.send(b.id, b"hello")
    await b.expect(payload_is(b"hello"))

    b.transport.deny(a.id)
    assert not b.transport.is_connected(a.id)
    assert not b.transport.send(a.id, b"no")  # no direct link, and the ROUTER route is dropped
    assert a.transport.send(b.id, b"dropped")
    await until(lambda: b.transport.stats.extra.get("dropped_denied", 0) >= 1, "a denied frame")

    # A new connection from a is refused at the handshake by ZAP.
    a.transport.disconnect_peer(b.id)
    a.connect(b)
    await asyncio.wait_for(a.failures.get(), DEADLINE_S)
    await until(lambda: a.transport.stats.handshake_failures >= 2, "SUB and direct link refused")
    assert b.transport.stats.zap_denied >= 2
    assert all(i.payload != b"dropped" for i in _drain(b.inbox))

    # libzmq never retries a connection that ZAP refused; the transport reopens it (a few
    # times, with backoff), so allowing the peer in time lets it back without a reconnect.
    b.transport.allow(a.id)
    await b.expect(payload_is(b"back"), lambda: a.transport.send(b.id, b"back"))
    assert a.transport.stats.extra["links_reopened"] >= 1
    assert a.transport.is_connected(b.id)


async def test_close_is_quick_and_idempotent_with_peers_gone(make: Factory) -> None:
    a = await make()
    gone = [await make() for _ in range(3)]
    for peer in gone:
        a.connect(peer)
        peer.connect(a)
        await peer.transport.close(0)
    for peer in gone:
        for _ in range(100):
            a.transport.send(peer.id, bytes(1000))  # queued for peers that are not there
        a.transport.publish(b"t", b"x")
    started = time.monotonic()
    await a.transport.close(0.2)
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    await a.transport.close(0.2)
    assert time.monotonic() - started < 0.05
    assert not a.transport.send(gone[0].id, b"after close")
    a.transport.publish(b"t", b"after close")
    await ZmqTransport().close()  # never started


async def test_close_from_inside_the_receiver(make: Factory) -> None:
    a = await make()
    closed = asyncio.Event()
    b = ZmqTransport(tuning=FAST)

    async def handle(incoming: Incoming) -> None:
        await b.close(0)
        closed.set()

    b_id = Identity.generate()
    ports = await b.start(b_id, [HOST], handle)
    a.transport.connect_peer(b_id.peer_id, HOST, ports.router_port, ports.pub_port)
    a.transport.send(b_id.peer_id, b"bye")
    await asyncio.wait_for(closed.wait(), DEADLINE_S)


async def test_a_dealer_only_link_costs_one_socket_and_gets_no_publications(
        make: Factory) -> None:
    a, b = await pair(make)  # a, the lower id, keeps its direct link (``Links.dials``)
    a.transport.subscribe(b"")
    b.connect(a)  # b's PUB dials a's SUB, but a takes nothing from a peer it only probes
    a.transport.connect_peer(b.id, HOST, b.ports.router_port, b.ports.pub_port,
                             subscribe=False)
    assert a.transport.is_connected(b.id) and a.transport.open_links == 1
    await b.expect(payload_is(b"probe"), lambda: a.transport.send(b.id, b"probe"))
    assert b.transport.send(a.id, b"answer")  # back over b's ROUTER to a's dialer
    got = await a.expect(payload_is(b"answer"))
    assert got.peer_id == b.id
    await until(lambda: (b.transport.publish(b"x", b"not for a"), a.transport.stats.extra.get(
        "dropped_not_subscribed", 0) >= 1)[1], "b's publication dropped")

    a.connect(b)  # the same place with subscribe: the PUB's link is added, the direct kept
    assert a.transport.open_links == 2
    await a.expect(payload_is(b"for a"), lambda: b.transport.publish(b"x", b"for a"))
    assert all(i.payload != b"not for a" for i in _drain(a.inbox))
    a.transport.disconnect_peer(b.id)
    assert a.transport.open_links == 0 and a.transport.peak_links == 2


async def test_a_twin_id_cannot_take_over_a_connected_peer(make: Factory) -> None:
    a, b = await pair(make)  # a is the lower id: it dials b's ROUTER (``Links.dials``)
    a.connect(b)
    twin = twin_of(b.id)
    a.transport.connect_peer(twin, HOST, b.ports.router_port, b.ports.pub_port)
    assert not a.transport.is_connected(twin)
    assert a.transport.stats.extra["dropped_twin"] == 1

    # The key holder speaking under the twin id, from another socket: its frames on a's
    # ROUTER are named by the id a bound that key to, so the twin id never gets a route.
    impostor = await make(twin_identity(b.identity))
    impostor.connect(a)
    got = await a.expect(payload_is(b"as twin"), lambda: impostor.transport.send(a.id, b"as twin"))
    assert got.peer_id == b.id
    assert not a.transport.send(twin, b"for the twin")
    # Until a's own direct link to b has shaken hands, a answers b's key over the ROUTER, where
    # the key holder's latest frame came from (the impostor's socket: it holds b's key, so
    # that is no leak). Once it is up, frames for b go to b alone.
    await until(lambda: _direct_up(a, b.id), "a's direct link to b shaking hands")
    _drain(impostor.inbox)
    await b.expect(payload_is(b"for b"), lambda: a.transport.send(b.id, b"for b"))
    assert all(i.payload != b"for b" for i in _drain(impostor.inbox))


def _pub_up(peer: Peer, other_id: bytes) -> bool:
    link = peer.transport._peers.get(other_id)
    return link is not None and link.fanout is not None and link.fanout.up


def _direct_up(peer: Peer, other_id: bytes) -> bool:
    link = peer.transport._peers.get(other_id)
    return link is not None and link.direct is not None and link.direct.up


async def test_deny_by_a_twin_id_refuses_the_key(make: Factory) -> None:
    b, a = await pair(make)  # b dials a's ROUTER: a live connection into a when a denies b
    w = await make()
    for x, y in ((a, b), (b, a), (a, w), (w, a)):
        x.connect(y)
    for x in (a, b, w):
        x.transport.subscribe(b"")
    await a.expect(payload_is(b"b's"), lambda: b.transport.publish(b"P", b"b's"))
    await b.expect(payload_is(b"public"), lambda: a.transport.publish(b"P", b"public"))
    await a.expect(payload_is(b"hi"), lambda: b.transport.send(a.id, b"hi"))
    a.transport.deny(twin_of(b.id))
    assert not a.transport.is_connected(b.id)
    assert b.transport.send(a.id, b"dropped")
    b.transport.publish(b"P", b"dropped too")  # on b's live connection to a's SUB
    await until(lambda: a.transport.stats.extra.get("dropped_denied", 0) >= 2,
                "dropped frames")
    assert not a.transport.send(b.id, b"no route back")
    # Our PUB's connection to b is cut at once: what a publishes from now on never reaches b.
    a.transport.publish(b"P", b"after the deny")
    await w.expect(payload_is(b"after the deny"))
    await w.expect(payload_is(b"sentinel"), lambda: a.transport.publish(b"P", b"sentinel"))
    assert all(i.payload not in (b"after the deny", b"sentinel") for i in _drain(b.inbox))
    # A new connection from the key, under either id, is refused by ZAP.
    b.transport.disconnect_peer(a.id)
    b.connect(a)
    await until(lambda: a.transport.stats.zap_denied >= 2, "ZAP refusing PUB and direct link")
    assert all(i.payload not in (b"dropped", b"dropped too") for i in _drain(a.inbox))


async def test_a_subscriber_admitted_to_our_pub_is_reported_by_peer_id(make: Factory) -> None:
    """Each handshake of our PUB's connection to a peer's SUB is reported; the direct links'
    are not, and nor is a stranger's connection to our SUB or ROUTER."""
    a, b, stranger = await make(), await make(), await make()
    admitted: list[bytes] = []
    a.transport.set_link_events(LinkEvents(on_subscriber=admitted.append))
    a.connect(b)  # a's PUB dials b's SUB: reported once it shakes hands
    b.connect(a)
    await until(lambda: admitted == [b.id], "b's subscription reported")
    # The direct links passed handshakes too: not subscriptions.
    await b.expect(payload_is(b"reply"), lambda: (
        b.transport.send(a.id, b"ask"), a.transport.send(b.id, b"reply")))
    stranger.connect(a)
    await a.expect(lambda i: i.payload == b"from stranger",
                   lambda: stranger.transport.send(a.id, b"from stranger"))
    assert admitted == [b.id]
    assert a.transport.stats.extra["subscribers_admitted"] == 1


async def test_one_dialer_reaches_many_peers_and_names_each_reply(make: Factory) -> None:
    """Direct links share one dialling socket: each connection carries its own routing id, so
    every reply is named by the peer it came from, and a direct link costs no socket."""
    a = await make()
    others = [await make() for _ in range(3)]
    sockets = a.transport._sockets
    assert sockets is not None
    before = len(sockets._open)
    for other in others:
        a.transport.connect_peer(other.id, HOST, other.ports.router_port, other.ports.pub_port,
                                 subscribe=False)
    assert len(sockets._open) == before and a.transport.open_links == 3
    for i, other in enumerate(others):
        assert a.transport.send(other.id, b"ask %d" % i)
    for i, other in enumerate(others):
        got = await other.expect(payload_is(b"ask %d" % i))
        assert got.curve_key == a.identity.curve_public
        assert other.transport.send(a.id, b"reply %d" % i)  # back over its ROUTER
    replies = {}
    for _ in others:
        got = await a.expect(lambda i: i.payload.startswith(b"reply "))
        replies[got.payload] = got.peer_id
    assert replies == {b"reply %d" % i: other.id for i, other in enumerate(others)}
    for other in others:
        await until(lambda o=other: _direct_up(a, o.id), "every direct link up")
    # Over the dialer itself once it is up (not the ROUTER fallback): still named right.
    b = others[1]
    b.connect(a)
    assert b.transport.send(a.id, b"from b")
    got = await a.expect(payload_is(b"from b"))
    assert got.peer_id == b.id
    a.transport.disconnect_peer(others[0].id)
    assert not a.transport.is_connected(others[0].id)
    await others[2].expect(payload_is(b"still"), lambda: a.transport.send(others[2].id, b"still"))


async def test_a_second_peer_at_a_held_address_waits_until_the_holder_is_given_up(
        make: Factory) -> None:
    """One peer per address on the dialer: a card naming a connected peer's address for
    another id waits (counted); once the holder's handshakes fail there and it is given up,
    the first in line is connected there, by itself."""
    b, c, d = await make(), await make(), await make()
    spy = await make()
    spy.connect(b, as_id=c.id)  # b's address, c's key pinned: every handshake fails
    spy.connect(b, as_id=d.id)  # another false claim, then the true one, then d withdrawn
    spy.connect(b)
    spy.transport.disconnect_peer(d.id)
    assert not spy.transport.is_connected(b.id) and not spy.transport.is_connected(d.id)
    assert spy.transport.stats.extra["endpoint_waiting"] == 2
    await until(lambda: not spy.transport.is_connected(c.id), "the wrong pin given up")
    assert spy.transport.is_connected(b.id)
    await b.expect(payload_is(b"now"), lambda: spy.transport.send(b.id, b"now"))
    assert not spy.transport.is_connected(d.id)


async def test_an_impostor_claiming_a_connected_peers_address_changes_nothing(
        make: Factory) -> None:
    b, c = await make(), await make()
    a = await make()
    a.connect(b)
    await until(lambda: _pub_up(a, b.id), "a's PUB's link to b up")
    a.connect(b, as_id=c.id)  # c's id at b's address: it waits, b keeps its link
    assert not a.transport.is_connected(c.id)
    await b.expect(payload_is(b"still b"), lambda: a.transport.send(b.id, b"still b"))
    a.transport.disconnect_peer(b.id)  # b is gone: c's claim is tried, and fails
    await until(lambda: not a.transport.is_connected(c.id), "the false claim given up")
    assert a.transport.stats.extra["peers_given_up"] == 1


async def test_what_an_earlier_connection_reported_is_not_charged_to_the_next(
        make: Factory) -> None:
    """A connection to b's address pinned to the wrong key fails its handshakes while the loop
    is busy (the failures wait, unread, in the monitor); it is dropped and b is dialled at
    the same address: those old failures are not b's, so b is neither reported nor given up."""
    b, c = await make(), await make()
    a = await make()
    a.connect(b, as_id=c.id)
    time.sleep(0.4)  # noqa: ASYNC251 - the fault: a busy loop while libzmq reports failures
    a.transport.disconnect_peer(c.id)
    a.connect(b)
    await b.expect(payload_is(b"to b"), lambda: a.transport.send(b.id, b"to b"))
    await until(lambda: _direct_up(a, b.id), "a's direct link to b up")
    assert a.transport.is_connected(b.id)
    reported = _drain_queue(a.failures)
    assert b.id not in reported, reported
    assert "peers_given_up" not in a.transport.stats.extra


def _drain_queue(queue: asyncio.Queue[bytes]) -> list[bytes]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def test_redial_replaces_a_hung_handshake_and_leaves_an_up_link_alone(
        make: Factory) -> None:
    """A listener that accepts and never answers holds our handshake until HANDSHAKE_IVL;
    ``redial`` (a join waiting on that peer) closes that connection and dials a new one —
    once it is past ``redial_after_ms``: a link dialled a moment ago is left to finish."""
    a, b = await make(), await make()
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(reader)

    server = await asyncio.start_server(silent, HOST, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        mute = Identity.generate()
        a.transport.connect_peer(mute.peer_id, HOST, port, port, subscribe=False)
        first = await asyncio.wait_for(accepted.get(), DEADLINE_S)
        assert not a.transport.redial(mute.peer_id)  # fresh: its handshake may be under way
        await until(lambda: a.transport.redial(mute.peer_id), "redial of the hung link")
        second = await asyncio.wait_for(accepted.get(), DEADLINE_S)
        await asyncio.wait_for(first.read(), DEADLINE_S)  # the hung connection was closed
        assert first.at_eof()
        assert second is not first
        assert a.transport.stats.extra["links_redialled"] == 1
        assert a.transport.is_connected(mute.peer_id)

        a.connect(b)
        await b.expect(payload_is(b"up"), lambda: a.transport.send(b.id, b"up"))
        assert not a.transport.redial(b.id)  # its handshake is done: nothing to replace
        assert not a.transport.redial(Identity.generate().peer_id)  # nobody we know
        assert a.transport.stats.extra["links_redialled"] == 1
    finally:
        server.close()


@pytest.mark.parametrize("subscribe", [False, True])
async def test_a_connection_whose_handshake_is_never_answered_is_redialled(
        subscribe: bool) -> None:
    """libzmq once left a dialled connection CONNECTED with no word of its handshake, ever
    (HANDSHAKE_IVL did not fire): the watchdog gives such a link up and dials again. Here
    libzmq's own limit is off and the listener never speaks, so only the watchdog can act."""
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(reader)

    server = await asyncio.start_server(silent, HOST, 0)
    tuning = ZmqTuning(reconnect_ivl_ms=50, reconnect_ivl_max_ms=200, handshake_ivl_ms=0,
                       handshake_watchdog_ms=300, max_handshake_failures=100)
    transport = ZmqTransport(Limits(), tuning=tuning)
    try:
        await transport.start(Identity.generate(), [HOST], lambda incoming: None)
        port = server.sockets[0].getsockname()[1]
        mute = Identity.generate().peer_id
        if subscribe:  # the direct link goes nowhere; the PUB meets the silent listener
            transport.connect_peer(mute, HOST, 1, port, subscribe=True)
        else:
            transport.connect_peer(mute, HOST, port, 1, subscribe=False)
        first = await asyncio.wait_for(accepted.get(), DEADLINE_S)
        second = await asyncio.wait_for(accepted.get(), DEADLINE_S)
        assert second is not first
        await asyncio.wait_for(first.read(), DEADLINE_S)  # the lost one was closed
        assert transport.stats.extra["handshakes_lost"] >= 1
        assert transport.is_connected(mute)
    finally:
        await transport.close(0)
        server.close()


async def test_a_refusal_handler_that_disconnects_the_peer_breaks_no_monitor(
        make: Factory, caplog: pytest.LogCaptureFixture) -> None:
    """The node answers a refusal by disconnecting the peer, from inside the PUB monitor's
    callback: the link goes, the monitor reads on, and later links of the PUB still work."""
    a, b, c = await make(), await make(), await make()
    b.transport.deny(a.id)
    refused: list[bytes] = []

    def on_refused(pid: bytes) -> None:
        refused.append(pid)
        a.transport.disconnect_peer(pid)

    a.transport.set_link_events(LinkEvents(on_refused=on_refused))
    a.transport.connect_peer(b.id, HOST, 1, b.ports.pub_port)  # only the PUB can meet b
    await until(lambda: refused == [b.id], "the refusal")
    assert not a.transport.is_connected(b.id)
    a.connect(c)
    c.connect(a)
    c.transport.subscribe(b"")
    await c.expect(payload_is(b"still"), lambda: a.transport.publish(b"P", b"still"))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _links(peer: Peer, other: Peer) -> tuple[bool, bool]:
    """(a dialled direct link to ``other``, a PUB connection to it) that ``peer`` holds."""
    held = peer.transport._peers[other.id]
    return held.direct is not None, held.fanout is not None


async def test_a_pair_of_peers_holds_one_direct_connection(make: Factory) -> None:
    """Of two peers, the lower id dials the other's ROUTER; the higher answers by routing id
    over its own ROUTER. Three connections per pair: two PUB to SUB, one direct."""
    low, high = await pair(make)
    for x, y in ((low, high), (high, low)):
        x.connect(y)
    assert _links(low, high) == (True, True)
    assert _links(high, low) == (False, True)
    await high.expect(payload_is(b"ask"), lambda: low.transport.send(high.id, b"ask"))
    got = await low.expect(payload_is(b"answer"), lambda: high.transport.send(low.id, b"answer"))
    assert got.peer_id == high.id
    assert low.transport.open_links == 2 and high.transport.open_links == 1
    assert "links_dialled_to_send" not in high.transport.stats.extra


async def test_the_higher_id_holds_what_it_sends_until_the_lower_ones_connection_speaks(
        make: Factory) -> None:
    """The higher id speaks first: its frames wait for the lower's connection to carry a frame
    and then go over it, in order; none of them is lost and nothing extra is dialled."""
    low, high = await pair(make)
    high.connect(low)
    for i in range(3):
        assert high.transport.send(low.id, b"early %d" % i)
    low.connect(high)
    assert low.transport.send(high.id, b"hello")
    for i in range(3):
        got = await low.expect(lambda incoming: True)
        assert got.payload == b"early %d" % i
    assert "links_dialled_to_send" not in high.transport.stats.extra
    assert _links(high, low) == (False, True)


async def test_the_higher_id_dials_after_all_when_the_lower_never_speaks(
        make: Factory) -> None:
    """The lower id never dials (it does not know the higher, say): the held frames leave
    over a connection the higher dials at ``route_wait_ms``. Once the lower's own connection
    carries a frame, the higher's is retired again."""
    low, high = await pair(make)
    high.connect(low)
    assert high.transport.send(low.id, b"anyone there?")
    got = await low.expect(payload_is(b"anyone there?"))
    assert got.peer_id == b""  # low does not know high: named by key only
    assert high.transport.stats.extra["links_dialled_to_send"] == 1
    assert _links(high, low) == (True, True)
    low.connect(high)
    await high.expect(payload_is(b"here"), lambda: low.transport.send(high.id, b"here"))
    await until(lambda: not _links(high, low)[0], "the higher's own link retired")
    assert high.transport.stats.extra["links_retired"] == 1
    await low.expect(payload_is(b"still there"),
                     lambda: high.transport.send(low.id, b"still there"))
    assert high.transport.stats.extra["links_dialled_to_send"] == 1


async def test_the_higher_id_hears_of_the_lower_ones_going_on_its_pub_connection(
        make: Factory) -> None:
    """The higher id dials no direct link to the lower: its PUB's connection reports the
    lower's connection closing (and ZMTP-heartbeats it), as the dialled link does."""
    dropped: list[bytes] = []
    low, _high = await talking_pair(make, LinkEvents(on_disconnect=dropped.append))
    await low.transport.close(0)
    await until(lambda: dropped == [low.id], "the lower id's connection closing reported")


async def test_a_probe_dials_whatever_the_ids_and_is_retired_once_the_peer_is_proven(
        make: Factory) -> None:
    """``subscribe=False`` (a peer not proven yet) is always dialled; proven later, and heard
    from over its own connection, the higher id's probe link is closed."""
    low, high = await pair(make)
    high.transport.connect_peer(low.id, HOST, low.ports.router_port, low.ports.pub_port,
                                subscribe=False)
    await low.expect(payload_is(b"probe"), lambda: high.transport.send(low.id, b"probe"))
    assert _links(high, low) == (True, False)
    low.connect(high)
    await high.expect(payload_is(b"hello"), lambda: low.transport.send(high.id, b"hello"))
    high.connect(low)  # proven: the PUB's connection too
    await until(lambda: not _links(high, low)[0], "the probe link retired")
    await low.expect(payload_is(b"over low's"), lambda: high.transport.send(low.id, b"over low's"))


async def test_refresh_replaces_the_links_that_are_up_and_the_route_follows(
        make: Factory) -> None:
    """``refresh`` (the node heard a vanished peer again): each connection to it that is up
    is replaced by a fresh one — the lower id's dialled link (whose first word moves the
    higher's route to it) and either side's PUB connection — and frames flow over them."""
    admitted: list[bytes] = []
    low, high = await talking_pair(make, LinkEvents(on_subscriber=admitted.append))
    await until(lambda: high.transport._peers[low.id].fanout.up, "high's PUB link up")
    old_direct = low.transport._peers[high.id].direct
    old_route = high.transport._routes[high.transport._curve_hex(low.id)]
    old_fanout = high.transport._peers[low.id].fanout
    assert low.transport.refresh(high.id)
    assert high.transport.refresh(low.id)
    new_direct = low.transport._peers[high.id].direct
    assert new_direct is not None and new_direct is not old_direct
    assert high.transport._peers[low.id].fanout is not old_fanout
    await until(lambda: high.transport._routes[high.transport._curve_hex(low.id)] != old_route,
                "the higher's route moved to the lower's fresh connection")
    await low.expect(payload_is(b"over the new one"),
                     lambda: high.transport.send(low.id, b"over the new one"))
    await until(lambda: len(admitted) == 2, "high's fresh PUB connection admitted")
    low.transport.subscribe(b"T")
    await low.expect(lambda inc: inc.kind == "pub" and inc.payload == b"news",
                     lambda: high.transport.publish(b"T", b"news"))
    assert low.transport.stats.extra["links_refreshed"] == 1
    assert high.transport.stats.extra["links_refreshed"] == 1
    assert "links_dialled_to_send" not in high.transport.stats.extra
    assert not high.transport.refresh(b"\x01" * 32)  # not a peer of ours: nothing to do


async def test_what_the_higher_id_holds_for_the_lower_is_bounded_and_leaves_in_order(
        make: Factory) -> None:
    """The lower id's connection never comes (it does not know us): the higher holds at most
    ``HELD_FRAMES``, then dials at once, and every frame reaches the lower in the order sent."""
    low, high = await pair(make)
    high.connect(low)
    sent = [f"frame {i}".encode() for i in range(3 * HELD_FRAMES)]
    for payload in sent:
        assert high.transport.send(low.id, payload)
        held = high.transport._held.get(low.id)
        assert held is None or len(held.frames) < HELD_FRAMES
    assert high.transport.stats.extra["links_dialled_to_send"] == 1  # at the bound, not later
    got = [(await low.expect(lambda i: i.payload.startswith(b"frame "))).payload for _ in sent]
    assert got == sent


async def test_empty_frames_from_a_stranger_are_counted_and_carry_nothing(
        make: Factory) -> None:
    """An empty frame is a dialler saying who it is on a new connection: from a key nobody
    knows it is counted and dropped, sets nothing in motion, and reaches no one."""
    b = await make()
    ctx = zmq.asyncio.Context()
    try:
        stranger = ctx.socket(zmq.DEALER)
        stranger.setsockopt(zmq.LINGER, 0)
        stranger.curve_publickey, stranger.curve_secretkey = zmq.curve_keypair()
        stranger.curve_serverkey = b.identity.curve_public
        stranger.connect(f"tcp://{HOST}:{b.ports.router_port}")
        for _ in range(200):
            await stranger.send(b"")
        await stranger.send(b"marker")
        await b.expect(payload_is(b"marker"))
        assert b.transport.stats.extra["routes_announced"] == 200
        assert not [i for i in _drain(b.inbox) if not i.payload]
        assert not b.transport._held and "links_retired" not in b.transport.stats.extra
        stranger.close()
    finally:
        ctx.term()
