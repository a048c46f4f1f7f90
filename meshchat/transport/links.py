"""Our SUB and DEALER to each peer: opened, followed through their monitors, reopened, closed."""

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

from .base import FloodGuard, Receiver, TransportStats
from .pump import Pump, count, dealer_reader, sub_reader
from .sockets import Sockets, ZmqTuning, endpoint

__all__ = ["HandshakeFailureHandler", "Link", "Links", "Peer"]

log = logging.getLogger("meshchat.transport.zmq")

HandshakeFailureHandler = Callable[[bytes], None]

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


class Link:
    """One outgoing socket to a peer (its SUB or its DEALER) with its pump and monitor."""

    __slots__ = ("dropped", "endpoint", "failures", "kind", "monitor", "monitor_task", "pump",
                 "sock", "up")

    def __init__(
        self, kind: int, endpoint: str, sock: zmq.Socket[Any], monitor: zmq.asyncio.Socket,
        pump: Pump,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.sock = sock
        self.pump = pump
        self.monitor = monitor
        self.monitor_task: asyncio.Task[None] | None = None
        self.failures = 0  # failed handshakes in a row, carried over when the link is reopened
        self.up = False  # a handshake succeeded and the connection has not closed since
        self.dropped = False  # it was up once and then closed: the next handshake is a return


@dataclass(slots=True, eq=False)
class Peer:
    peer_id: bytes
    curve_key: bytes
    where: tuple[str, int, int]
    links: dict[int, Link]  # by socket type: zmq.SUB, zmq.DEALER
    reported: bool = False  # on_handshake_failure called for the current failure streak

    @property
    def address(self) -> str:
        return self.where[0]


class Links:
    """The peers we hold links to, by peer id and by CURVE key, and the topics our SUBs take.

    Each CURVE key is bound to one peer id at a time (``peer_of_curve``). A link's monitor
    counts failed handshakes (once per streak to ``on_handshake_failure``, or ``on_refused``
    when the peer's ZAP turned our key down), gives the peer up after
    ``tuning.max_handshake_failures`` in a row, and reopens a link that libzmq abandoned.
    """

    def __init__(
        self,
        stats: TransportStats,
        tuning: ZmqTuning,
        *,
        on_handshake_failure: HandshakeFailureHandler | None,
        on_disconnect: HandshakeFailureHandler | None,
        on_refused: HandshakeFailureHandler | None,
        guard: FloodGuard | None = None,
    ) -> None:
        self.stats = stats
        self.guard = guard
        self.on_handshake_failure = on_handshake_failure
        self.on_disconnect = on_disconnect
        self.on_reconnect: HandshakeFailureHandler | None = None
        self.on_refused = on_refused
        self.peers: dict[bytes, Peer] = {}
        self.peer_of_curve: dict[str, bytes] = {}  # CURVE key (hex) -> the connected peer id
        self.topics: set[bytes] = set()
        self.peak = 0
        self._tuning = tuning
        self._sockets: Sockets | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._receiver: Receiver | None = None

    def start(self, sockets: Sockets, loop: asyncio.AbstractEventLoop, receiver: Receiver) -> None:
        self._sockets = sockets
        self._loop = loop
        self._receiver = receiver

    @property
    def open_count(self) -> int:
        """SUB and DEALER sockets open now."""
        return sum(len(peer.links) for peer in self.peers.values())

    def connect(self, peer_id: bytes, curve_key: bytes, address: str, router_port: int,
                pub_port: int, subscribe: bool) -> None:
        """Open (or re-point) a peer's links; the twin of a connected peer is ignored."""
        bound = self.peer_of_curve.get(curve_key.hex())
        if bound is not None and bound != peer_id:
            count(self.stats, "dropped_twin")
            return
        where = (address, router_port, pub_port)
        old = self.peers.get(peer_id)
        if old is not None:
            if old.where == where:
                if subscribe and zmq.SUB not in old.links:
                    self.open(old, zmq.SUB, endpoint(address, pub_port))
                return
            self.drop(old, self._tuning.disconnect_linger_ms)
        peer = self.peers[peer_id] = Peer(peer_id, curve_key, where, {})
        self.peer_of_curve[curve_key.hex()] = peer_id
        if subscribe:
            self.open(peer, zmq.SUB, endpoint(address, pub_port))
        self.open(peer, zmq.DEALER, endpoint(address, router_port))

    def subscribe(self, topic: bytes) -> None:
        if topic in self.topics:
            return
        self.topics.add(topic)
        for peer in self.peers.values():
            link = peer.links.get(zmq.SUB)
            if link is not None:
                link.sock.setsockopt(zmq.SUBSCRIBE, topic)
                link.pump.kick()

    def unsubscribe(self, topic: bytes) -> None:
        if topic not in self.topics:
            return
        self.topics.discard(topic)
        for peer in self.peers.values():
            link = peer.links.get(zmq.SUB)
            if link is not None:
                link.sock.setsockopt(zmq.UNSUBSCRIBE, topic)
                link.pump.kick()

    def open(self, peer: Peer, kind: int, endpoint: str, failures: int = 0) -> None:
        """Create, start and connect the SUB or DEALER of a peer."""
        sockets, loop, receiver = self._sockets, self._loop, self._receiver
        assert sockets is not None and loop is not None and receiver is not None
        sock = sockets.client(kind, peer.curve_key, ":" in peer.address)
        if kind == zmq.SUB:
            for topic in self.topics:
                sock.setsockopt(zmq.SUBSCRIBE, topic)
            read = sub_reader(sock, peer.peer_id, peer.address, self.stats)
        else:
            read = dealer_reader(sock, peer.peer_id, peer.address, self.stats)
        monitor_address = f"inproc://meshchat-monitor-{id(self):x}-{next(_monitor_ids)}"
        sock.monitor(monitor_address, _MONITORED_EVENTS)
        monitor = sockets.ctx.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(monitor_address)
        pump = Pump(sock, read, receiver, self.stats, self._tuning.recv_batch, self.guard,
                    self._tuning.recv_budget_s)
        link = peer.links[kind] = Link(kind, endpoint, sock, monitor, pump)
        link.failures = failures
        self.peak = max(self.peak, self.open_count)
        name = f"{_LINK_NAMES[kind]}-{peer.peer_id[:4].hex()}"
        pump.start(loop)
        link.monitor_task = loop.create_task(
            self._watch(peer, link), name=f"meshchat-monitor-{name}"
        )
        sock.connect(endpoint)

    def drop(self, peer: Peer, linger_ms: int) -> list[asyncio.Task[None]]:
        """Close a peer's sockets now; returns the tasks that were cancelled."""
        if self.peers.get(peer.peer_id) is peer:
            del self.peers[peer.peer_id]
            if self.peer_of_curve.get(peer.curve_key.hex()) == peer.peer_id:
                del self.peer_of_curve[peer.curve_key.hex()]
        cancelled: list[asyncio.Task[None]] = []
        for kind, link in peer.links.items():
            cancelled += self._close_link(link, linger_ms if kind == zmq.DEALER else 0)
        return cancelled

    def _close_link(self, link: Link, linger_ms: int) -> list[asyncio.Task[None]]:
        loop, sockets = self._loop, self._sockets
        assert loop is not None and sockets is not None
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
        sockets.closed(link.sock)
        return cancelled

    async def _watch(self, peer: Peer, link: Link) -> None:
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
            if disconnected and link.kind == zmq.DEALER and self.on_disconnect is not None:
                # The peer's TCP connection closed (it quit or was killed) or its ZMTP
                # heartbeat timed out (unplugged, frozen): a hint worth a ping, not a verdict.
                try:
                    self.on_disconnect(peer.peer_id)
                except Exception:
                    log.exception("on_disconnect raised")
            if disconnected:
                link.dropped = link.dropped or link.up
                link.up = False
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                link.up = True
                link.failures = 0
                peer.reported = False
                if link.dropped and link.kind == zmq.DEALER and self.on_reconnect is not None:
                    link.dropped = False
                    try:
                        self.on_reconnect(peer.peer_id)
                    except Exception:
                        log.exception("on_reconnect raised")
            elif event & _HANDSHAKE_FAILED and self._handshake_failed(
                    peer, link, refused=event == zmq.EVENT_HANDSHAKE_FAILED_AUTH):
                return

    def _handshake_failed(self, peer: Peer, link: Link, refused: bool = False) -> bool:
        """Count a failure; True if the peer was given up. ``refused``: the peer's ZAP turned
        our key down (it holds its key; it denies ours), reported to ``on_refused``."""
        link.failures += 1
        self.stats.handshake_failures += 1
        give_up = link.failures >= self._tuning.max_handshake_failures
        if give_up:
            log.warning(
                "giving up on peer %s after %d failed handshakes", peer.peer_id.hex(), link.failures
            )
            count(self.stats, "peers_given_up")
            if self.peers.get(peer.peer_id) is peer:
                self.drop(peer, 0)
        report = self.on_refused if refused and self.on_refused else self.on_handshake_failure
        if not peer.reported and report is not None:
            peer.reported = True
            try:
                report(peer.peer_id)
            except Exception:
                log.exception("handshake failure handler raised")
        return give_up

    async def _reopen_later(self, peer: Peer, old: Link) -> None:
        """Replace a link libzmq gave up on, after a backoff that grows with failed handshakes."""
        tuning = self._tuning
        delay_ms = min(
            tuning.reconnect_ivl_ms << min(old.failures, 16), tuning.reconnect_ivl_max_ms
        )
        await asyncio.sleep(delay_ms / 1000)
        if self.peers.get(peer.peer_id) is not peer or peer.links.get(old.kind) is not old:
            return
        log.info("reopening the %s to %s", _LINK_NAMES[old.kind], peer.peer_id.hex())
        count(self.stats, "links_reopened")
        self._close_link(old, 0)
        self.open(peer, old.kind, old.endpoint, old.failures)
