"""The ZeroMQ transport: CURVE on every socket, our own ZAP handler, all on one asyncio loop.

Sockets of one node::

    ZAP     ROUTER  inproc://zeromq.zap.01   bound before anything else; admits every CURVE
                                             key not denied, User-Id = hex of that key
    PUB     CURVE server, bound              [topic, payload] to every peer's SUB
    ROUTER  CURVE server, bound              [routing id, payload] in; replies by routing id
    SUB     CURVE client, one per peer       pinned to the peer's key; frames are Incoming 'pub'
    DEALER  CURVE client, one per peer       pinned; no routing id of ours; Incoming 'direct'

Who a frame is from: a SUB or DEALER only completes a handshake with the server key it pinned
(``curve_public_of(peer_id)``), so everything it receives is that peer's. A ROUTER frame is
attributed by the CURVE key our ZAP handler authenticated for its connection (``User-Id``),
never by its routing id (libzmq made that up).

Each CURVE key is bound to one peer id at a time (the one ``connect_peer`` was given), because a
peer id and its twin share a key (``identity.canonical_id``): ``connect_peer`` for a twin of a
connected peer is refused and counted (``dropped_twin``), and ``send`` to a twin goes nowhere.
``connect_peer(..., subscribe=False)`` opens only the DEALER: a peer that has not proven itself
yet costs one socket, not two; a later ``connect_peer`` with ``subscribe=True`` adds the SUB.

What libzmq does not let us do, and what covers it:

- ``deny`` cannot cut a denied peer's live connection *to our PUB* (libzmq has no per-pipe
  disconnect, and removing a key from ZAP does not drop a live connection); it only refuses
  the next handshake. What the PUB carries to it is presence (public anyway) and room traffic
  sealed with room keys, which the host rotates on a ban and never sends it again. Its live
  connection to our ROUTER stays open too, but every frame on it is dropped at the edge
  (``dropped_denied``) and no reply goes back; our SUB/DEALER to it are closed at once.
- ROUTER routing ids are not identities: our DEALERs set none, so libzmq gives every connection
  a fresh one, and nobody can claim (or steal, with ROUTER_HANDOVER) another peer's. A ROUTER
  frame is attributed only by the CURVE key ZAP authenticated (``User-Id``): to the peer id we
  know for that key, or — for a key we do not know yet — ``Incoming.peer_id`` is empty and
  ``Incoming.curve_key`` set, and the node checks that the envelope's sender owns that key.
  Replies by the ROUTER fallback go to the routing id whose latest frame carried that key.
- A peer id and its sign-flipped twin share one CURVE key (Ed25519 → X25519 is two-to-one), and
  whoever holds one holds both; deny and the User-Id check work on the CURVE key, so they cover
  both ids.
- A frame over ``ZMQ_MAXMSGSIZE`` makes libzmq drop the whole connection, so it cannot be
  counted per frame. A peer connected in to us simply reconnects. Our own SUB/DEALER is
  abandoned by libzmq after such a protocol error (and after a ZAP refusal): no more
  reconnects. The monitor spots that and reopens the link. We never send oversize frames.

``stats.extra`` counts: ``dropped_malformed`` (wrong number of parts), ``dropped_denied``,
``dropped_twin``, ``receiver_errors``, ``links_reopened``, ``peers_given_up``. ``open_links`` is
the number of SUB and DEALER sockets open now, ``peak_links`` the most there ever were.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from ..config import Limits
from ..identity import Identity, curve_public_of, is_valid_peer_id
from .base import Incoming, LinkEvents, LocalPorts, Receiver, TransportStats

__all__ = ["ZAP_ENDPOINT", "ZmqTransport", "ZmqTuning"]

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_ZAP_DOMAIN = b"meshchat"
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_MONITORED_EVENTS = (
    _HANDSHAKE_FAILED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_DELAYED
)
_LINK_NAMES: dict[int, str] = {zmq.SUB: "sub", zmq.DEALER: "dealer"}
_monitor_ids = itertools.count()

HandshakeFailureHandler = Callable[[bytes], None]
Reader = Callable[[], Incoming | None]


@dataclass(frozen=True, slots=True)
class ZmqTuning:
    """libzmq socket settings; the defaults suit a LAN."""

    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 1000
    connect_timeout_ms: int = 2000
    handshake_ivl_ms: int = 5000
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 5000
    tcp_keepalive_idle_s: int = 10
    tcp_keepalive_intvl_s: int = 3
    tcp_keepalive_cnt: int = 3
    disconnect_linger_ms: int = 100
    dead_link_grace_ms: int = 500  # DISCONNECTED with no retry within this: libzmq gave up
    recv_batch: int = 256
    max_handshake_failures: int = 5
    sockets_per_peer: int = 6  # SUB, DEALER, 2 monitor PAIRs and libzmq's 2 monitor ends


def _endpoint(host: str, port: int | str) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


class _Pump:
    """Drives one receiving socket from the event loop, without a task of its own.

    libzmq's ZMQ_FD is edge-triggered: it signals once when the socket's state changes, and any
    call that processes the socket's commands (a receive, a send, reading ZMQ_EVENTS) may
    consume that signal. So the FD stays registered with the loop for the socket's whole life;
    its callback drains the socket until EAGAIN, right there in the callback (no task to wake:
    one loop turn less per frame, which is most of a round trip's cost). A full batch, or a
    send on the same socket, schedules one more drain with ``call_soon`` instead of trusting
    the FD. ``busy`` guards against re-entry from the receiver (which may send or stop).
    """

    __slots__ = ("busy", "drain", "fd", "loop", "pending", "scheduled", "sock", "stopped")

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self.sock = sock
        self.fd = int(sock.get(zmq.FD))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.drain: Callable[[], None] | None = None
        self.pending: asyncio.Future[Any] | None = None  # an async receiver still running
        self.busy = False
        self.scheduled = False
        self.stopped = False

    def start(self, loop: asyncio.AbstractEventLoop, drain: Callable[[], None]) -> None:
        self.loop = loop
        self.drain = drain
        loop.add_reader(self.fd, self.fire)
        self.schedule()  # frames may have arrived before the FD was registered

    def fire(self) -> None:
        if not (self.stopped or self.busy or self.pending is not None) and self.drain:
            self.drain()

    def schedule(self) -> None:
        if not self.scheduled and not self.stopped and self.loop is not None:
            self.scheduled = True
            self.loop.call_soon(self._scheduled)

    def _scheduled(self) -> None:
        self.scheduled = False
        self.fire()

    def kick(self) -> None:
        """After a send on this socket: the send may have eaten the FD's signal."""
        if not self.stopped and int(self.sock.get(zmq.EVENTS)) & zmq.POLLIN:
            self.schedule()

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop before the socket closes: afterwards the pump never touches it again."""
        if self.stopped:
            return
        self.stopped = True
        if self.loop is not None:
            loop.remove_reader(self.fd)
        # A receiver still running is left to finish: it may be the one that stops us.


class _Link:
    """One outgoing socket to a peer (its SUB or its DEALER) with its pump and monitor."""

    __slots__ = ("endpoint", "failures", "kind", "monitor", "monitor_task", "pump", "sock", "up")

    def __init__(
        self, kind: int, endpoint: str, sock: zmq.Socket[Any], monitor: zmq.asyncio.Socket
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.sock = sock
        self.pump = _Pump(sock)
        self.monitor = monitor
        self.monitor_task: asyncio.Task[None] | None = None
        self.failures = 0  # failed handshakes in a row, carried over when the link is reopened
        self.up = False  # a handshake succeeded and the connection has not closed since


@dataclass(slots=True, eq=False)
class _Peer:
    peer_id: bytes
    curve_key: bytes
    where: tuple[str, int, int]
    links: dict[int, _Link]  # by socket type: zmq.SUB, zmq.DEALER
    reported: bool = False  # on_handshake_failure called for the current failure streak

    @property
    def address(self) -> str:
        return self.where[0]


class ZmqTransport:
    """The real transport (see the module docstring); implements ``base.Transport``.

    ``on_disconnect(peer_id)`` is called when the TCP connection of our DEALER to a peer
    closes (libzmq reconnects by itself).

    ``on_handshake_failure(peer_id)`` is called when a handshake of our SUB or DEALER to that
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
        tuning: ZmqTuning = ZmqTuning(),
    ) -> None:
        self.stats = TransportStats()
        self._on_disconnect = on_disconnect
        self._limits = limits
        self._tuning = tuning
        self._on_handshake_failure = on_handshake_failure
        self._on_refused = on_refused
        self._ctx: zmq.asyncio.Context | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._identity: Identity | None = None
        self._receiver: Receiver | None = None
        self._zap: zmq.asyncio.Socket | None = None
        self._zap_task: asyncio.Task[None] | None = None
        self._pub: zmq.Socket[Any] | None = None
        self._router: zmq.Socket[Any] | None = None
        self._router_pump: _Pump | None = None
        self._sockets: set[zmq.Socket[Any]] = set()
        self._peers: dict[bytes, _Peer] = {}
        self._topics: set[bytes] = set()
        self._denied_keys: set[bytes] = set()
        self._denied_hex: set[str] = set()
        self._routes: dict[str, bytes] = {}  # CURVE key (hex) -> routing id of its latest frame
        self._peer_of_curve: dict[str, bytes] = {}  # CURVE key (hex) -> the connected peer id
        self.peak_links = 0
        self._curve_hex_cache: dict[bytes, str | None] = {}
        self._running = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(
        self, identity: Identity, bind_addresses: list[str], receiver: Receiver
    ) -> LocalPorts:
        if self._ctx is not None or self._closed:
            raise RuntimeError("a ZmqTransport starts once")
        if not bind_addresses:
            raise ValueError("no address to bind")
        self._loop = asyncio.get_running_loop()
        self._identity = identity
        self._receiver = receiver
        ctx = self._ctx = zmq.asyncio.Context()
        ctx.set(zmq.MAX_SOCKETS, 16 + self._limits.max_peers * self._tuning.sockets_per_peer)
        try:
            # ZAP first: without a handler bound, libzmq admits every CURVE client.
            zap = self._zap = ctx.socket(zmq.ROUTER)
            zap.setsockopt(zmq.LINGER, 0)
            zap.bind(ZAP_ENDPOINT)
            self._zap_task = self._loop.create_task(self._serve_zap(zap), name="meshchat-zap")

            ipv6 = any(":" in address for address in bind_addresses)
            pub = self._pub = self._server_socket(zmq.PUB, ipv6)
            router = self._router = self._server_socket(zmq.ROUTER, ipv6)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            ports = LocalPorts(
                router_port=self._bind_all(router, bind_addresses),
                pub_port=self._bind_all(pub, bind_addresses),
            )
            pump = self._router_pump = _Pump(router)
            reader = self._router_reader(router)
            pump.start(self._loop, lambda: self._drain(pump, reader))
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
        tasks: list[asyncio.Task[None]] = []
        for peer in list(self._peers.values()):
            tasks += self._drop_peer(peer, linger_ms)
        if self._router_pump is not None:
            self._router_pump.stop(loop)
        for sock in (self._pub, self._router):
            if sock is not None:
                sock.close(linger=linger_ms)
        # The ZAP handler goes last: with it gone a closing server would admit anyone.
        if self._zap_task is not None:
            self._zap_task.cancel()
            tasks += self._cancelled(self._zap_task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._zap is not None:
            self._zap.close(linger=0)
        for sock in self._sockets:
            if not sock.closed:
                sock.close(linger=0)
        self._sockets.clear()
        # Blocks only while lingering sockets flush, i.e. at most linger_s.
        self._ctx.term()

    # -- peers ------------------------------------------------------------------------------

    def connect_peer(self, peer_id: bytes, address: str, router_port: int, pub_port: int,
                     *, subscribe: bool = True) -> None:
        """Open (or re-point) the SUB and DEALER to a peer (only the DEALER if not
        ``subscribe``); a denied peer, or the twin of a connected one, is ignored."""
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
        if curve_key in self._denied_keys:
            return
        bound = self._peer_of_curve.get(curve_key.hex())
        if bound is not None and bound != peer_id:
            self._count("dropped_twin")
            return
        where = (address, router_port, pub_port)
        old = self._peers.get(peer_id)
        if old is not None:
            if old.where == where:
                if subscribe and zmq.SUB not in old.links:
                    self._open_link(old, zmq.SUB, _endpoint(address, pub_port))
                return
            self._drop_peer(old, self._tuning.disconnect_linger_ms)
        peer = self._peers[peer_id] = _Peer(peer_id, curve_key, where, {})
        self._peer_of_curve[curve_key.hex()] = peer_id
        if subscribe:
            self._open_link(peer, zmq.SUB, _endpoint(address, pub_port))
        self._open_link(peer, zmq.DEALER, _endpoint(address, router_port))

    def disconnect_peer(self, peer_id: bytes) -> None:
        peer = self._peers.get(peer_id)
        if peer is not None:
            self._drop_peer(peer, self._tuning.disconnect_linger_ms)

    def is_connected(self, peer_id: bytes) -> bool:
        """True while we hold a DEALER (and SUB) to the peer (they reconnect by themselves)."""
        return peer_id in self._peers

    @property
    def open_links(self) -> int:
        return sum(len(peer.links) for peer in self._peers.values())

    def deny(self, peer_id: bytes) -> None:
        """Refuse the peer's CURVE key at ZAP from now on, close our SUB/DEALER to it and drop
        its ROUTER frames. Its live connection to our PUB stays until it breaks (libzmq cannot
        cut one pipe); room-key rotation keeps room traffic from it."""
        curve_key = curve_public_of(peer_id)
        self._denied_keys.add(curve_key)
        self._denied_hex.add(curve_key.hex())
        for peer in [p for p in self._peers.values() if p.curve_key == curve_key]:
            # A short linger: the last word queued for it (the state that removes it, say)
            # still leaves; nothing can be queued after this.
            self._drop_peer(peer, self._tuning.disconnect_linger_ms)
        self._routes.pop(curve_key.hex(), None)

    def set_link_events(self, events: LinkEvents) -> None:
        self._on_handshake_failure = self._on_handshake_failure or events.on_handshake_failure
        self._on_refused = self._on_refused or events.on_refused
        self._on_disconnect = self._on_disconnect or events.on_disconnect

    def allow(self, peer_id: bytes) -> None:
        """Undo ``deny``; connections are not reopened here (call ``connect_peer``)."""
        curve_key = curve_public_of(peer_id)
        self._denied_keys.discard(curve_key)
        self._denied_hex.discard(curve_key.hex())

    # -- topics and sending -----------------------------------------------------------------

    def subscribe(self, topic: bytes) -> None:
        if topic in self._topics:
            return
        self._topics.add(topic)
        for peer in self._peers.values():
            link = peer.links.get(zmq.SUB)
            if link is not None:
                link.sock.setsockopt(zmq.SUBSCRIBE, topic)
                link.pump.kick()

    def unsubscribe(self, topic: bytes) -> None:
        if topic not in self._topics:
            return
        self._topics.discard(topic)
        for peer in self._peers.values():
            link = peer.links.get(zmq.SUB)
            if link is not None:
                link.sock.setsockopt(zmq.UNSUBSCRIBE, topic)
                link.pump.kick()

    def publish(self, topic: bytes, payload: bytes) -> None:
        pub = self._pub
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
        """Over our DEALER to the peer if its handshake is done; else back over our ROUTER if
        the peer connected in to us (and its latest frame there was authentic) — an answer to
        a peer whose card is stale must not queue on a DEALER to an old address —; else
        queued on the DEALER until it connects. False if there is no way at all."""
        if not self._running:
            return False
        if len(payload) > self._limits.max_frame_bytes:
            self.stats.send_failures += 1
            return False
        peer = self._peers.get(peer_id)
        if peer is not None:
            link = peer.links[zmq.DEALER]
            if not link.up and self._send_back(peer_id, payload):
                return True
            try:
                link.sock.send(payload, zmq.NOBLOCK)
            except zmq.Again:
                self.stats.send_failures += 1
                return False
            finally:
                link.pump.kick()
            self.stats.sent += 1
            return True
        return self._send_back(peer_id, payload)

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
            if error.errno != zmq.EHOSTUNREACH:  # EHOSTUNREACH: it is not connected (now)
                log.warning("ROUTER send failed: %s", error)
                self.stats.send_failures += 1
            return False
        finally:
            pump.kick()
        self.stats.sent += 1
        return True

    # -- receiving --------------------------------------------------------------------------

    def _drain(self, pump: _Pump, read: Reader) -> None:
        """Receive until EAGAIN, at most a batch per call, handing each frame up in order.

        A receiver that returns an awaitable is awaited before the next frame is read."""
        if pump.busy or pump.stopped or pump.pending is not None:
            return
        receiver = self._receiver
        assert receiver is not None
        stats = self.stats
        pump.busy = True
        try:
            for _ in range(self._tuning.recv_batch):
                try:
                    incoming = read()
                except zmq.Again:
                    return  # drained: libzmq signals the FD again on the next frame
                if incoming is None:
                    continue
                stats.received += 1
                try:
                    result = receiver(incoming)
                    if result is not None:
                        pending = pump.pending = asyncio.ensure_future(result)
                        pending.add_done_callback(lambda done: self._resume(pump, done))
                        return
                except Exception:
                    self._count("receiver_errors")
                    log.exception("receiver failed on a frame from %s", incoming.peer_id.hex())
                if pump.stopped:
                    return
            pump.schedule()  # a full batch: let the rest of the loop run, then go on
        finally:
            pump.busy = False

    def _resume(self, pump: _Pump, done: asyncio.Future[Any]) -> None:
        pump.pending = None
        if not done.cancelled() and done.exception() is not None:
            self._count("receiver_errors")
            log.error("receiver failed", exc_info=done.exception())
        pump.schedule()

    # Readers take one message off a socket (zmq.Again if there is none) and return what to
    # hand up, or None to drop it. Frames with copy=False and .more cost about half of
    # recv_multipart, which converts RCVMORE to an enum twice per message.

    def _malformed(self, recv: Callable[..., Any], last: zmq.Frame) -> None:
        while last.more:
            last = recv(zmq.NOBLOCK, copy=False)
        self._count("dropped_malformed")

    def _sub_reader(self, sock: zmq.Socket[Any], peer_id: bytes, address: str) -> Reader:
        recv = sock.recv

        def read() -> Incoming | None:
            topic: zmq.Frame = recv(zmq.NOBLOCK, copy=False)
            if not topic.more:
                self._count("dropped_malformed")
                return None
            payload: zmq.Frame = recv(zmq.NOBLOCK, copy=False)
            if payload.more:
                self._malformed(recv, payload)
                return None
            return Incoming("pub", peer_id, payload.bytes, topic.bytes, address)

        return read

    def _dealer_reader(self, sock: zmq.Socket[Any], peer_id: bytes, address: str) -> Reader:
        recv = sock.recv

        def read() -> Incoming | None:
            payload: zmq.Frame = recv(zmq.NOBLOCK, copy=False)
            if payload.more:
                self._malformed(recv, payload)
                return None
            return Incoming("direct", peer_id, payload.bytes, b"", address)

        return read

    def _router_reader(self, sock: zmq.Socket[Any]) -> Reader:
        recv = sock.recv

        def read() -> Incoming | None:
            head: zmq.Frame = recv(zmq.NOBLOCK, copy=False)
            if not head.more:  # libzmq always prefixes the routing id; be safe anyway
                self._count("dropped_malformed")
                return None
            frame: zmq.Frame = recv(zmq.NOBLOCK, copy=False)
            if frame.more:
                self._malformed(recv, frame)
                return None
            return self._check_router_frame(head.bytes, frame)

        return read

    def _check_router_frame(self, routing_id: bytes, frame: zmq.Frame) -> Incoming | None:
        """Attribute a frame by the CURVE key that authenticated its connection, never by the
        routing id (which libzmq made up)."""
        try:
            user_id = str(frame.get("User-Id"))
        except zmq.ZMQError:
            user_id = ""
        if len(user_id) != 64:
            self.stats.dropped_unauthenticated += 1
            return None
        if user_id in self._denied_hex:
            self._count("dropped_denied")
            return None
        routes = self._routes
        if routes.get(user_id) != routing_id:
            if user_id not in routes and len(routes) >= 2 * self._limits.max_peers:
                del routes[next(iter(routes))]
            routes[user_id] = routing_id
        try:
            address = str(frame.get("Peer-Address"))
        except zmq.ZMQError:
            address = ""
        peer_id = self._peer_of_curve.get(user_id, b"")
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

    # -- ZAP and monitors -------------------------------------------------------------------

    async def _serve_zap(self, zap: zmq.asyncio.Socket) -> None:
        while True:
            request = await zap.recv_multipart()
            reply = self._answer_zap(request)
            if reply is not None:
                await zap.send_multipart(reply)

    def _answer_zap(self, request: list[bytes]) -> list[bytes] | None:
        """RFC 27: [envelope.., b'', version, request id, domain, address, identity, mechanism,
        credentials..] -> [envelope.., b'', version, request id, status, text, user id, meta]."""
        try:
            split = request.index(b"")
        except ValueError:
            return None
        envelope, body = request[: split + 1], request[split + 1 :]
        if len(body) < 6:
            return None
        version, request_id, _domain, _address, _identity, mechanism, *credentials = body

        def answer(status: bytes, text: bytes, user_id: bytes = b"") -> list[bytes]:
            return [*envelope, b"1.0", request_id, status, text, user_id, b""]

        if version != b"1.0":
            return answer(b"400", b"unsupported ZAP version")
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self.stats.zap_denied += 1
            return answer(b"400", b"CURVE only")
        client_key = credentials[0]
        if client_key in self._denied_keys:
            self.stats.zap_denied += 1
            return answer(b"400", b"denied")
        return answer(b"200", b"OK", client_key.hex().encode("ascii"))

    async def _watch(self, peer: _Peer, link: _Link) -> None:
        """Follow one link's monitor: count handshake failures, give the peer up after too many
        in a row, and reopen a link that libzmq abandoned.

        libzmq stops reconnecting a connecting socket for good after a protocol error (a frame
        over ZMQ_MAXMSGSIZE, bytes that fail CURVE) or when the server refused us at ZAP; the
        only trace is a DISCONNECTED that no CONNECT_RETRIED follows."""
        monitor = link.monitor
        grace_s = self._tuning.dead_link_grace_ms / 1000
        disconnected = False
        while True:
            try:
                if disconnected:
                    message = await asyncio.wait_for(monitor.recv_multipart(), grace_s)
                else:
                    message = await monitor.recv_multipart()
            except TimeoutError:
                if int(monitor.get(zmq.EVENTS)) & zmq.POLLIN:
                    continue  # the loop was slow, not libzmq
                await self._reopen_later(peer, link)
                return
            if len(message) != 2 or len(message[0]) != 6:
                continue
            event, _value = struct.unpack("=HI", message[0])
            disconnected = event == zmq.EVENT_DISCONNECTED
            if disconnected and link.kind == zmq.DEALER and self._on_disconnect is not None:
                # The peer's TCP connection closed (it quit or was killed; a stalled or
                # unplugged peer keeps it): a hint worth a ping, not a verdict.
                try:
                    self._on_disconnect(peer.peer_id)
                except Exception:
                    log.exception("on_disconnect raised")
            if disconnected:
                link.up = False
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                link.up = True
                link.failures = 0
                peer.reported = False
            elif event & _HANDSHAKE_FAILED and self._handshake_failed(
                    peer, link, refused=event == zmq.EVENT_HANDSHAKE_FAILED_AUTH):
                return

    def _handshake_failed(self, peer: _Peer, link: _Link, refused: bool = False) -> bool:
        """Count a failure; True if the peer was given up. ``refused``: the peer's ZAP turned
        our key down (it holds its key; it denies ours), reported to ``on_refused``."""
        link.failures += 1
        self.stats.handshake_failures += 1
        give_up = link.failures >= self._tuning.max_handshake_failures
        if give_up:
            log.warning(
                "giving up on peer %s after %d failed handshakes", peer.peer_id.hex(), link.failures
            )
            self._count("peers_given_up")
            if self._peers.get(peer.peer_id) is peer:
                self._drop_peer(peer, 0)
        report = self._on_refused if refused and self._on_refused else self._on_handshake_failure
        if not peer.reported and report is not None:
            peer.reported = True
            try:
                report(peer.peer_id)
            except Exception:
                log.exception("handshake failure handler raised")
        return give_up

    async def _reopen_later(self, peer: _Peer, old: _Link) -> None:
        """Replace a link libzmq gave up on, after a backoff that grows with failed handshakes."""
        tuning = self._tuning
        delay_ms = min(
            tuning.reconnect_ivl_ms << min(old.failures, 16), tuning.reconnect_ivl_max_ms
        )
        await asyncio.sleep(delay_ms / 1000)
        if self._peers.get(peer.peer_id) is not peer or peer.links.get(old.kind) is not old:
            return
        log.info("reopening the %s to %s", _LINK_NAMES[old.kind], peer.peer_id.hex())
        self._count("links_reopened")
        self._close_link(old, 0)
        self._open_link(peer, old.kind, old.endpoint, old.failures)

    # -- sockets ----------------------------------------------------------------------------

    def _socket(self, kind: int) -> zmq.Socket[Any]:
        assert self._ctx is not None and self._identity is not None
        sock: zmq.Socket[Any] = zmq.Socket(self._ctx, kind)
        self._sockets.add(sock)
        tuning = self._tuning
        for option, value in (
            (zmq.LINGER, 0),
            (zmq.MAXMSGSIZE, self._limits.max_frame_bytes),
            (zmq.SNDHWM, self._limits.pub_hwm),
            (zmq.RCVHWM, self._limits.pub_hwm),
            (zmq.TCP_KEEPALIVE, 1),
            (zmq.TCP_KEEPALIVE_IDLE, tuning.tcp_keepalive_idle_s),
            (zmq.TCP_KEEPALIVE_INTVL, tuning.tcp_keepalive_intvl_s),
            (zmq.TCP_KEEPALIVE_CNT, tuning.tcp_keepalive_cnt),
            (zmq.HANDSHAKE_IVL, tuning.handshake_ivl_ms),
            (zmq.HEARTBEAT_IVL, tuning.heartbeat_ivl_ms),
            (zmq.HEARTBEAT_TIMEOUT, tuning.heartbeat_timeout_ms),
        ):
            sock.setsockopt(option, value)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self._identity.curve_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self._identity.curve_secret)
        return sock

    def _server_socket(self, kind: int, ipv6: bool) -> zmq.Socket[Any]:
        sock = self._socket(kind)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAIN)
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler => refuse, never admit
        if ipv6:
            sock.setsockopt(zmq.IPV6, 1)
        return sock

    def _open_link(self, peer: _Peer, kind: int, endpoint: str, failures: int = 0) -> None:
        """Create, start and connect the SUB or DEALER of a peer."""
        assert self._ctx is not None and self._identity is not None and self._loop is not None
        sock = self._socket(kind)
        tuning = self._tuning
        # The server key must be set before connect: it applies only to later connects.
        sock.setsockopt(zmq.CURVE_SERVERKEY, peer.curve_key)
        sock.setsockopt(zmq.RECONNECT_IVL, tuning.reconnect_ivl_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, tuning.reconnect_ivl_max_ms)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, tuning.connect_timeout_ms)
        if ":" in peer.address:
            sock.setsockopt(zmq.IPV6, 1)
        if kind == zmq.SUB:
            for topic in self._topics:
                sock.setsockopt(zmq.SUBSCRIBE, topic)
            read = self._sub_reader(sock, peer.peer_id, peer.address)
        else:
            read = self._dealer_reader(sock, peer.peer_id, peer.address)
        monitor_address = f"inproc://meshchat-monitor-{id(self):x}-{next(_monitor_ids)}"
        sock.monitor(monitor_address, _MONITORED_EVENTS)
        monitor = self._ctx.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(monitor_address)
        link = peer.links[kind] = _Link(kind, endpoint, sock, monitor)
        link.failures = failures
        self.peak_links = max(self.peak_links, self.open_links)
        name = f"{_LINK_NAMES[kind]}-{peer.peer_id[:4].hex()}"
        pump = link.pump
        pump.start(self._loop, lambda: self._drain(pump, read))
        link.monitor_task = self._loop.create_task(
            self._watch(peer, link), name=f"meshchat-monitor-{name}"
        )
        sock.connect(endpoint)

    def _bind_all(self, sock: zmq.Socket[Any], addresses: list[str]) -> int:
        """Bind every address; the first picks a free port, the others reuse its number."""
        port = 0
        for address in addresses:
            sock.bind(_endpoint(address, port or "*"))
            if not port:
                endpoint = sock.get_string(zmq.LAST_ENDPOINT)
                port = int(endpoint.rsplit(":", 1)[1])
        return port

    def _drop_peer(self, peer: _Peer, linger_ms: int) -> list[asyncio.Task[None]]:
        """Close a peer's sockets now; returns the tasks that were cancelled."""
        if self._peers.get(peer.peer_id) is peer:
            del self._peers[peer.peer_id]
            if self._peer_of_curve.get(peer.curve_key.hex()) == peer.peer_id:
                del self._peer_of_curve[peer.curve_key.hex()]
        cancelled: list[asyncio.Task[None]] = []
        for kind, link in peer.links.items():
            cancelled += self._close_link(link, linger_ms if kind == zmq.DEALER else 0)
        return cancelled

    def _close_link(self, link: _Link, linger_ms: int) -> list[asyncio.Task[None]]:
        loop = self._loop
        assert loop is not None
        link.pump.stop(loop)
        cancelled: list[asyncio.Task[None]] = []
        monitor_task = link.monitor_task
        if monitor_task is not None and monitor_task is not asyncio.current_task():
            monitor_task.cancel()
            cancelled.append(monitor_task)
        with contextlib.suppress(zmq.ZMQError):
            link.sock.disable_monitor()
        link.monitor.close(linger=0)
        link.sock.close(linger=linger_ms)
        self._sockets.discard(link.sock)
        return cancelled

    @staticmethod
    def _cancelled(task: asyncio.Task[None] | None) -> list[asyncio.Task[None]]:
        """The task if it was cancelled (awaitable by close), else nothing."""
        if task is None or task is asyncio.current_task() or not task.cancelling():
            return []
        return [task]

    def _count(self, name: str) -> None:
        extra = self.stats.extra
        extra[name] = extra.get(name, 0) + 1
