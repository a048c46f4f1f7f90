"""The ZeroMQ transport: CURVE on every socket, our own ZAP handler, all on one asyncio loop.

Sockets of one node — the same seven however many peers there are (a peer costs one TCP
connection on each of SUB and PUB, one on the ROUTER or the dialer, and no socket, mailbox or
monitor)::

    ZAP     ROUTER  inproc://zeromq.zap.01   bound before anything else; admits every CURVE
                                             key not denied, User-Id = hex of that key
    SUB     CURVE server, bound              every peer's PUB connects in; [topic, payload],
                                             attributed by User-Id; Incoming 'pub'
    PUB     CURVE client, one                a connection to every peer's SUB (the card's
                                             ``pub_port``), each pinned to that peer's key;
                                             one monitor (``LinkEvents.on_subscriber``)
    ROUTER  CURVE server, bound              [routing id, payload] in; replies by routing id
    dialer  ROUTER, CURVE client, one        a connection to the ROUTER of every peer with a
                                             higher id than ours (and of every probe), each
                                             pinned to that peer's key, under a routing id of
                                             ours made for it; Incoming 'direct' (``dialer``)

One direct connection per pair of peers: the lower id dials (``links``), and says who it is on
each new connection with an empty frame; the higher id answers over its ROUTER by that
connection's routing id. What the higher sends before that connection has spoken, or after it
broke, is held (``_Held``, at most ``HELD_FRAMES``) for ``tuning.route_wait_ms``, then sent
over a connection it dials after all; that one is retired once the lower's speaks again.

(The PUB dials and the SUB binds, the way round from the usual: a SUB that dials needs a socket
per peer to know whom a frame is from, a bound SUB knows it from the key ZAP authenticated.)

Who a frame is from: a connection of the dialer only completes a handshake with the server key
it pinned (``curve_public_of(peer_id)``), so everything it receives is that peer's. A ROUTER or
SUB frame is attributed by the CURVE key our ZAP handler authenticated for its connection
(``User-Id``), never by its routing id (libzmq made that up). The SUB takes publications only
from the keys of peers connected with ``subscribe`` (the others are dropped and counted,
``dropped_not_subscribed``): a probe, or a stranger, cannot speak in our rooms' topics.

Each CURVE key is bound to one peer id at a time (the one ``connect_peer`` was given), because a
peer id and its twin share a key (``identity.canonical_id``): ``connect_peer`` for a twin of a
connected peer is refused and counted (``dropped_twin``), and ``send`` to a twin goes nowhere.
``connect_peer(..., subscribe=False)`` opens only the dialer's connection, whatever the ids: a
peer that has not proven itself yet costs one connection and is not heard on our SUB; a later
``connect_peer`` with ``subscribe=True`` adds the PUB's connection and hears it.

What libzmq does not let us do, and what covers it:

- ``deny`` closes our PUB's and our dialer's connections to the peer at once, so nothing we
  send reaches it again. It cannot cut the denied peer's live connections *into* our SUB and
  ROUTER (libzmq has no per-pipe disconnect for a bound socket, and removing a key from ZAP
  does not drop a live connection); every frame on them is dropped at the edge
  (``dropped_denied``) and no reply goes back, and its next handshake is refused.
- ROUTER routing ids are not identities: our dialer presents none, so libzmq gives every connection
  a fresh one, and nobody can claim (or steal, with ROUTER_HANDOVER) another peer's. A ROUTER
  frame is attributed only by the CURVE key ZAP authenticated (``User-Id``): to the peer id we
  know for that key, or — for a key we do not know yet — ``Incoming.peer_id`` is empty and
  ``Incoming.curve_key`` set, and the node checks that the envelope's sender owns that key.
  Replies by the ROUTER fallback go to the routing id whose latest frame carried that key.
- A peer id and its sign-flipped twin share one CURVE key (Ed25519 → X25519 is two-to-one), and
  whoever holds one holds both; deny and the User-Id check work on the CURVE key, so they cover
  both ids.
- A frame over ``ZMQ_MAXMSGSIZE`` makes libzmq drop the whole connection, so it cannot be
  counted per frame. A peer connected in to us simply reconnects. Our own PUB or dialled
  connection is abandoned by libzmq after a protocol error (and after a ZAP refusal): no more
  reconnects. The monitor spots that and reopens the link. We never send oversize frames.
- A dialled connection can stay CONNECTED with no word of its handshake, for good: seen on
  the dialer when two peers refused our key at the same moment (their ZAP never heard of
  that connection, and libzmq's HANDSHAKE_IVL never fired). A watchdog gives such a link up
  after ``ZmqTuning.handshake_watchdog_ms`` and dials again (``handshakes_lost``); a join
  redials its host at once (``redial``).

``stats.extra`` counts: ``dropped_malformed`` (wrong number of parts), ``dropped_denied``,
``dropped_not_subscribed``,
``dropped_twin``, ``receiver_errors``, ``links_reopened``, ``links_redialled`` (``redial``),
``handshakes_lost``, ``peers_given_up``, ``subscribers_admitted``, ``endpoint_waiting`` (a
peer claimed the address of a connected one: it waits until that one is dropped),
``dropped_closed_link``, ``routes_announced`` (empty frames: a dialler saying who it is),
``links_dialled_to_send`` (the higher id of a pair dialled: the lower's connection did not
speak in time), ``links_retired`` (and closed it again), ``links_refreshed`` (``refresh``:
a peer heard again after a silence got fresh connections). ``open_links`` is the number of
connections we dialled (PUB and dialer) open now, ``peak_links`` the most there ever were.

This module holds the SUB and ROUTER, attributes their frames and sends; beside it are the
ZAP handler and its deny list (``zap``), socket settings and creation (``sockets``), each
peer's two dialled connections (``links``), the two dialling sockets with their monitors
(``dialer``) and receiving (``pump``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import zmq
import zmq.asyncio

from ..config import Limits
from ..identity import Identity, curve_public_of, is_valid_peer_id
from .base import (
    FloodGuard,
    Incoming,
    LinkEvents,
    LocalPorts,
    Receiver,
    TransportStats,
)
from .links import HandshakeFailureHandler, Links
from .pump import Pump, count, pub_reader, router_reader
from .pump import Reader as Reader  # importable from here, as before the split
from .sockets import Sockets, ZmqTuning, bind_all
from .zap import ZAP_ENDPOINT, Zap

__all__ = ["ZAP_ENDPOINT", "ZmqTransport", "ZmqTuning"]

log = logging.getLogger(__name__)

HELD_FRAMES = 64
"""Frames held for one peer while its connection to us is awaited; one more, and we dial it."""


class _Held:
    """Frames for a peer that dials us, sent before its connection has carried a frame: they
    go out over it as soon as one does, or over a connection of ours at the deadline."""

    __slots__ = ("frames", "timer")

    def __init__(self, timer: asyncio.TimerHandle) -> None:
        self.frames: deque[bytes] = deque()
        self.timer = timer


class ZmqTransport:
    """The real transport (see the module docstring); implements ``base.Transport``.

    ``on_disconnect(peer_id)`` is called when our dialled TCP connection to a peer's ROUTER
    closes, or its ZMTP heartbeat times out (libzmq reconnects by itself) — for a peer that
    dials us, our PUB's connection to its SUB; ``on_reconnect(peer_id)`` when its handshake
    succeeds again afterwards.

    ``on_handshake_failure(peer_id)`` is called when a handshake of our PUB or dialer to that
    peer fails (the key at that address is not the peer's — an impostor, a reused port — or
    the peer refused us): once per streak of failures, not on every retry. Every failure is
    counted in ``stats.handshake_failures``; after ``tuning.max_handshake_failures`` in a row
    on one socket the peer is disconnected (``is_connected`` turns False).
    """

    def __init__(
        self,
        limits: Limits = Limits(),  # noqa: B008 - frozen, so one shared default is safe
        *,
        on_handshake_failure: HandshakeFailureHandler | None = None,
        on_disconnect: HandshakeFailureHandler | None = None,
        on_refused: HandshakeFailureHandler | None = None,
        tuning: ZmqTuning = ZmqTuning(),  # noqa: B008 - frozen, like limits
    ) -> None:
        self.stats = TransportStats()
        self._limits = limits
        self._tuning = tuning
        self._ctx: zmq.asyncio.Context | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._identity: Identity | None = None
        self._sockets: Sockets | None = None
        self._zap = Zap(self.stats)
        self._guard = FloodGuard(limits.peer_frames_per_s, limits.peer_frames_burst,
                                 limits.max_peers * 4, time.monotonic)
        self._links = Links(self.stats, tuning, on_handshake_failure=on_handshake_failure,
                            on_disconnect=on_disconnect, on_refused=on_refused,
                            guard=self._guard)
        self._sub: zmq.Socket[Any] | None = None
        self._sub_pump: Pump | None = None
        self._topics: set[bytes] = set()
        self._router: zmq.Socket[Any] | None = None
        self._router_pump: Pump | None = None
        # The same tables as the parts own them, looked up on every frame:
        self._peers = self._links.peers
        self._peer_of_curve = self._links.peer_of_curve  # CURVE key (hex) -> connected peer id
        self._publishers = self._links.publishers  # CURVE key (hex) -> (peer id, address)
        self._denied_hex = self._zap.denied_hex
        self._routes: dict[str, bytes] = {}  # CURVE key (hex) -> routing id of its latest frame
        self._links.has_route = self._routes.__contains__
        self._held: dict[bytes, _Held] = {}  # peer id -> frames awaiting its connection
        self._curve_hex_cache: dict[bytes, str | None] = {}
        self._running = False
        self._closed = False

    @property
    def peak_links(self) -> int:
        """The most links (SUBs and dialled connections) ever open at once."""
        return self._links.peak

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(
        self, identity: Identity, bind_addresses: list[str], receiver: Receiver
    ) -> LocalPorts:
        if self._ctx is not None or self._closed:
            raise RuntimeError("a ZmqTransport starts once")
        if not bind_addresses:
            raise ValueError("no address to bind")
        loop = self._loop = asyncio.get_running_loop()
        self._identity = identity
        self._links.me = identity.peer_id
        ctx = self._ctx = zmq.asyncio.Context()
        ctx.set(zmq.MAX_SOCKETS, 64)  # a fixed set: no socket is made per peer
        sockets = self._sockets = Sockets(ctx, identity, self._limits, self._tuning)
        self._links.start(sockets, loop, receiver)
        try:
            # ZAP first: without a handler bound, libzmq admits every CURVE client.
            self._zap.start(ctx, loop)

            ipv6 = any(":" in address for address in bind_addresses)
            sub = self._sub = sockets.server(zmq.SUB, ipv6)
            router = self._router = sockets.server(zmq.ROUTER, ipv6)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            ports = LocalPorts(
                router_port=bind_all(router, bind_addresses),
                pub_port=bind_all(sub, bind_addresses),
            )
            tuning = self._tuning
            read = router_reader(router, self.stats, self._check_router_frame)
            pump = self._router_pump = Pump(
                router, read, receiver, self.stats, tuning.recv_batch, self._guard,
                tuning.recv_budget_s)
            pump.start(loop)
            read = pub_reader(sub, self.stats, self._check_pub_frame)
            pump = self._sub_pump = Pump(sub, read, receiver, self.stats, tuning.recv_batch,
                                         self._guard, tuning.recv_budget_s)
            pump.start(loop)
        except BaseException:
            await self.close(0)
            raise
        self._running = True
        return ports

    async def close(self, linger_s: float = 0.3) -> None:
        if self._closed:
            return
        self._closed = True
        self._running = False
        if self._ctx is None:
            return
        loop = self._loop
        assert loop is not None
        linger_ms = max(0, round(linger_s * 1000))
        for pid in list(self._held):
            self._dial_for(pid)  # what was held leaves with the linger, like everything else
        tasks = self._links.close(linger_ms)
        for pump in (self._router_pump, self._sub_pump):
            if pump is not None:
                pump.stop(loop)
        for sock in (self._sub, self._router):
            if sock is not None:
                sock.close(linger=linger_ms)
        # The ZAP handler goes last: with it gone a closing server would admit anyone.
        tasks += self._zap.stop()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._zap.close()
        if self._sockets is not None:
            self._sockets.close_all()
        # Blocks only while lingering sockets flush, i.e. at most linger_s.
        self._ctx.term()

    # -- peers ------------------------------------------------------------------------------

    def connect_peer(self, peer_id: bytes, address: str, router_port: int, pub_port: int,
                     *, subscribe: bool = True) -> None:
        """Open (or re-point) our PUB's and our dialer's connections to a peer (only the latter
        if not ``subscribe``); a denied peer, or the twin of a connected one, is ignored."""
        if self._closed:
            return
        if not self._running:
            raise RuntimeError("connect_peer before start")
        if not is_valid_peer_id(peer_id):
            raise ValueError("not a peer id")
        assert self._identity is not None
        if peer_id == self._identity.peer_id:
            raise ValueError("a transport does not connect to itself")
        curve_key = curve_public_of(peer_id)
        if curve_key in self._zap.denied_keys:
            return
        self._links.connect(peer_id, curve_key, address, router_port, pub_port, subscribe)

    def disconnect_peer(self, peer_id: bytes) -> None:
        self._drop_held(peer_id)
        self._links.forget(peer_id)
        peer = self._peers.get(peer_id)
        if peer is not None:
            self._links.drop(peer, self._tuning.disconnect_linger_ms)

    def is_connected(self, peer_id: bytes) -> bool:
        """True while we hold links to the peer (they reconnect by themselves)."""
        return peer_id in self._peers

    def redial(self, peer_id: bytes) -> bool:
        """Replace our dialled connection to the peer with a new one if its handshake is not
        done and it is in trouble: it failed, or dropped, or has waited past
        ``tuning.redial_after_ms``. libzmq retries a refused or broken connection only after a
        backoff, and a handshake whose answer never comes holds the link until
        ``handshake_ivl_ms``: a join to a host that has just unbanned us must not wait for
        either. A link dialled a moment ago is left to finish its own handshake (replacing it
        would drop what is queued on it)."""
        peer = self._peers.get(peer_id)
        if peer is None or self._closed:
            return False
        if peer.direct is None:
            # The peer dials us. If its connection has not carried a frame (or broke), dial
            # it ourselves now, and what is held for it leaves on ours.
            if self._curve_hex(peer_id) in self._routes and peer_id not in self._held:
                return False
            count(self.stats, "links_redialled")
            self._dial_for(peer_id)
            return True
        if peer.direct.up:
            return False
        link = peer.direct
        fresh = self._links.dialer.age_s(link) * 1000 < self._tuning.redial_after_ms
        if fresh and not (link.failures or link.dropped):
            return False
        count(self.stats, "links_redialled")
        self._links.redial(peer)
        return True

    def refresh(self, peer_id: bytes) -> bool:
        """Fresh connections in place of those to the peer that are up (``Links.refresh``):
        it is heard again after a silence long enough to give it up (a cut that healed), and
        a TCP connection that carried frames through the cut resends them only when its
        retransmission timer, doubled at each try meanwhile, next runs out — seconds after
        the heal, for a cut of seconds. A peer that dials us replaces its own connection to
        us as it hears us again, and says who it is on the new one: our route follows."""
        peer = self._peers.get(peer_id)
        if peer is None or self._closed:
            return False
        return self._links.refresh(peer)

    @property
    def open_links(self) -> int:
        return self._links.open_count

    def deny(self, peer_id: bytes) -> None:
        """Refuse the peer's CURVE key at ZAP from now on, close our links to it and drop
        its ROUTER frames. Its live connection to our PUB stays until it breaks (libzmq cannot
        cut one pipe); room-key rotation keeps room traffic from it."""
        curve_key = curve_public_of(peer_id)
        self._zap.deny(curve_key)
        self._links.forget(curve_key=curve_key)
        for peer in [p for p in self._peers.values() if p.curve_key == curve_key]:
            self._drop_held(peer.peer_id)
            # A short linger: the last word queued for it (the state that removes it, say)
            # still leaves; nothing can be queued after this.
            self._links.drop(peer, self._tuning.disconnect_linger_ms)
        self._routes.pop(curve_key.hex(), None)

    def set_link_events(self, events: LinkEvents) -> None:
        links = self._links
        links.on_handshake_failure = links.on_handshake_failure or events.on_handshake_failure
        links.on_refused = links.on_refused or events.on_refused
        links.on_disconnect = links.on_disconnect or events.on_disconnect
        links.on_reconnect = links.on_reconnect or events.on_reconnect
        links.on_subscriber = links.on_subscriber or events.on_subscriber

    def allow(self, peer_id: bytes) -> None:
        """Undo ``deny``; connections are not reopened here (call ``connect_peer``)."""
        self._zap.allow(curve_public_of(peer_id))

    # -- topics and sending -----------------------------------------------------------------

    def subscribe(self, topic: bytes) -> None:
        self._set_topic(topic, zmq.SUBSCRIBE)

    def unsubscribe(self, topic: bytes) -> None:
        self._set_topic(topic, zmq.UNSUBSCRIBE)

    def _set_topic(self, topic: bytes, option: int) -> None:
        """Our one SUB tells every connected PUB, and each that connects later."""
        sub, pump = self._sub, self._sub_pump
        if (topic in self._topics) == (option == zmq.SUBSCRIBE) or sub is None or sub.closed:
            return
        if option == zmq.SUBSCRIBE:
            self._topics.add(topic)
        else:
            self._topics.discard(topic)
        sub.setsockopt(option, topic)
        if pump is not None:
            pump.kick()

    def publish(self, topic: bytes, payload: bytes) -> None:
        pub = self._links.fanout.sock
        if not self._running or pub is None:
            return
        if len(payload) > self._limits.max_frame_bytes:
            self.stats.send_failures += 1
            return
        try:
            pub.send(topic, zmq.NOBLOCK | zmq.SNDMORE)
            pub.send(payload, zmq.NOBLOCK)
        except zmq.Again:  # PUB drops at the high-water mark instead; kept for safety
            self.stats.send_failures += 1
            return
        self.stats.sent += 1

    def send(self, peer_id: bytes, payload: bytes) -> bool:
        """Over our dialled connection to the peer if its handshake is done; else back over our
        ROUTER if the peer connected in to us (and its latest frame there was authentic) — an
        answer to a peer whose card is stale must not queue for an old address —; else queued
        on the dialled connection until it connects. A peer that dials us (``Links.dials``)
        and whose connection has not carried a frame yet (or has broken): held until it does,
        for at most ``tuning.route_wait_ms``, then sent over a connection we dial after all.
        False if there is no way at all."""
        if not self._running:
            return False
        if len(payload) > self._limits.max_frame_bytes:
            self.stats.send_failures += 1
            return False
        peer = self._peers.get(peer_id)
        link = peer.direct if peer is not None else None
        if link is not None:
            if not link.up and self._send_back(peer_id, payload):
                return True
            if not self._links.dialer.send(link, payload):
                return False
            self.stats.sent += 1
            return True
        if peer_id not in self._held and self._send_back(peer_id, payload):
            return True
        if peer is None:
            return False
        return self._hold(peer_id, payload)

    def _hold(self, peer_id: bytes, payload: bytes) -> bool:
        held = self._held.get(peer_id)
        if held is None:
            assert self._loop is not None
            timer = self._loop.call_later(self._tuning.route_wait_ms / 1000, self._dial_for,
                                          peer_id)
            held = self._held[peer_id] = _Held(timer)
        held.frames.append(payload)
        if len(held.frames) >= HELD_FRAMES:  # too much to wait with: dial it now
            self._dial_for(peer_id)
        return True

    def _drop_held(self, peer_id: bytes) -> list[bytes]:
        held = self._held.pop(peer_id, None)
        if held is None:
            return []
        held.timer.cancel()
        return list(held.frames)

    def _dial_for(self, peer_id: bytes) -> None:
        """The peer's connection did not come in time (or someone waits, ``redial``): dial it,
        and send what is held over ours."""
        frames = self._drop_held(peer_id)
        peer = self._peers.get(peer_id)
        link = self._links.dial_now(peer) if peer is not None else None
        for payload in frames:
            if link is not None and self._links.dialer.send(link, payload):
                self.stats.sent += 1

    def _route_seen(self, peer_id: bytes) -> None:
        """A connection from the peer to our ROUTER carried a frame (its first, or a new one's):
        what is held for it leaves over it, and our own dialled one can be retired."""
        for payload in self._drop_held(peer_id):
            self.send(peer_id, payload)
        peer = self._peers.get(peer_id)
        if peer is not None and not self._closed:
            self._links.retire(peer)

    def _send_back(self, peer_id: bytes, payload: bytes) -> bool:
        router, pump = self._router, self._router_pump
        curve_hex = self._curve_hex(peer_id)
        if curve_hex is None or self._peer_of_curve.get(curve_hex, peer_id) != peer_id:
            return False  # not a peer id, or the twin of a connected peer
        routing_id = self._routes.get(curve_hex)
        if routing_id is None or router is None or pump is None:
            return False
        try:
            router.send(routing_id, zmq.NOBLOCK | zmq.SNDMORE)
            router.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.stats.send_failures += 1
            return False
        except zmq.ZMQError as error:
            if error.errno == zmq.EHOSTUNREACH:  # its connection is gone: wait for the next
                if self._routes.get(curve_hex) == routing_id:
                    del self._routes[curve_hex]
            else:
                log.warning("ROUTER send failed: %s", error)
                self.stats.send_failures += 1
            return False
        finally:
            pump.kick()
        self.stats.sent += 1
        return True

    # -- receiving --------------------------------------------------------------------------

    def _check_pub_frame(self, topic: zmq.Frame, payload: zmq.Frame) -> Incoming | None:
        """Attribute a publication by the CURVE key that authenticated the connection it came
        on: only a peer connected with ``subscribe`` (a ``publishers`` key) is heard."""
        user_id = _user_id(payload)
        who = self._publishers.get(user_id)
        if who is None:
            if len(user_id) != 64:
                self.stats.dropped_unauthenticated += 1
            elif user_id in self._denied_hex:
                count(self.stats, "dropped_denied")
            else:
                count(self.stats, "dropped_not_subscribed")
            return None
        return Incoming("pub", who[0], payload.bytes, topic.bytes, who[1])

    def _check_router_frame(self, routing_id: bytes, frame: zmq.Frame) -> Incoming | None:
        """Attribute a frame by the CURVE key that authenticated its connection, never by the
        routing id (which libzmq made up)."""
        user_id = _user_id(frame)
        if len(user_id) != 64:
            self.stats.dropped_unauthenticated += 1
            return None
        if user_id in self._denied_hex:
            count(self.stats, "dropped_denied")
            return None
        routes = self._routes
        peer_id = self._peer_of_curve.get(user_id, b"")
        if routes.get(user_id) != routing_id:
            if user_id not in routes and len(routes) >= 2 * self._limits.max_peers:
                del routes[next(iter(routes))]
            routes[user_id] = routing_id
            if peer_id and self._loop is not None:
                self._loop.call_soon(self._route_seen, peer_id)
        if not frame.bytes:  # a dialler's first word on a new connection (``Links``)
            count(self.stats, "routes_announced")
            return None
        try:
            address = str(frame.get("Peer-Address"))
        except zmq.ZMQError:
            address = ""
        return Incoming("direct", peer_id, frame.bytes, b"", address,
                        b"" if peer_id else bytes.fromhex(user_id))

    def _curve_hex(self, peer_id: bytes) -> str | None:
        """Hex of the CURVE key a peer id owns; None if it is not a peer id. Cached."""
        cache = self._curve_hex_cache
        try:
            return cache[peer_id]
        except KeyError:
            pass
        value = curve_public_of(peer_id).hex() if is_valid_peer_id(peer_id) else None
        if len(cache) >= 4 * self._limits.max_peers:
            cache.clear()
        cache[peer_id] = value
        return value


def _user_id(frame: zmq.Frame) -> str:
    """The CURVE key (hex) our ZAP handler authenticated for the frame's connection; empty if
    there is none (libzmq sets it on frames of a CURVE server's connections only)."""
    try:
        return str(frame.get("User-Id"))
    except zmq.ZMQError:
        return ""
