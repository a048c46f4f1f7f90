"""Our SUB to each peer and our connection to its ROUTER (on the one dialer): opened, followed
through their monitors, reopened, closed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from .base import FloodGuard, Receiver, TransportStats
from .dialer import HANDSHAKE_FAILED as _HANDSHAKE_FAILED
from .dialer import MONITORED_EVENTS as _MONITORED_EVENTS
from .dialer import Dialer, DirectLink, endpoint_key
from .pump import Pump, count, sub_reader
from .sockets import Sockets, ZmqTuning, endpoint

__all__ = ["HandshakeFailureHandler", "Link", "Links", "Peer"]

log = logging.getLogger("meshchat.transport.zmq")

HandshakeFailureHandler = Callable[[bytes], None]

WAITERS_PER_ADDRESS = 4
"""Peers waiting for an address another peer's direct link holds (the oldest claim drops)."""

_Claim = tuple[bytes, bytes, str, int, int, bool]  # connect's arguments

_monitor_ids = itertools.count()


class Link:
    """Our SUB to a peer, with its pump and monitor."""

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
    links: dict[int, Link]  # by socket type: zmq.SUB
    direct: DirectLink | None = None  # our connection to its ROUTER, on the dialer
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
        self._reopening: set[asyncio.Task[None]] = set()
        self._closing = False
        # Address -> the peers that claimed it while another's direct link held it:
        self.waiting: dict[tuple[str, str], deque[_Claim]] = {}
        self.dialer = Dialer(stats, tuning)
        self.dialer.on_event = self._direct_event
        self.dialer.on_abandoned = self._direct_abandoned

    def start(self, sockets: Sockets, loop: asyncio.AbstractEventLoop, receiver: Receiver) -> None:
        self._sockets = sockets
        self._loop = loop
        self._receiver = receiver
        self.dialer.start(sockets, loop, receiver, self.guard)

    def close(self, linger_ms: int) -> list[asyncio.Task[None]]:
        """Drop every peer and close the dialer; returns the tasks that were cancelled."""
        tasks: list[asyncio.Task[None]] = []
        self._closing = True
        self.waiting.clear()
        for peer in list(self.peers.values()):
            tasks += self.drop(peer, linger_ms)
        for task in self._reopening:
            task.cancel()
            tasks.append(task)
        self._reopening.clear()
        if self._sockets is not None:
            tasks += self.dialer.close(linger_ms, self._sockets)
        return tasks

    @property
    def open_count(self) -> int:
        """Links open now: SUB sockets and connections on the dialer."""
        return sum(len(peer.links) + (peer.direct is not None) for peer in self.peers.values())

    def connect(self, peer_id: bytes, curve_key: bytes, address: str, router_port: int,
                pub_port: int, subscribe: bool) -> None:
        """Open (or re-point) a peer's links; the twin of a connected peer is ignored."""
        bound = self.peer_of_curve.get(curve_key.hex())
        if bound is not None and bound != peer_id:
            count(self.stats, "dropped_twin")
            return
        where = (address, router_port, pub_port)
        old = self.peers.get(peer_id)
        if old is not None and old.where == where:
            if subscribe and zmq.SUB not in old.links:
                self.open(old, zmq.SUB, endpoint(address, pub_port))
            return
        direct_at = endpoint(address, router_port)
        holder = self.dialer.holder.get(endpoint_key(direct_at))
        if holder is not None and holder.peer_id != peer_id:
            # Another peer's connection is there (our card of one of them is stale, or one
            # claims the other's address): its handshakes decide. It is given up if the key
            # there is not its own, and the next claim in line gets the address.
            self._wait(holder.key, (peer_id, curve_key, address, router_port, pub_port,
                                    subscribe))
            return
        if old is not None:
            self.drop(old, self._tuning.disconnect_linger_ms)
        peer = self.peers[peer_id] = Peer(peer_id, curve_key, where, {})
        self.peer_of_curve[curve_key.hex()] = peer_id
        if subscribe:
            self.open(peer, zmq.SUB, endpoint(address, pub_port))
        self.open_direct(peer, direct_at)

    def open_direct(self, peer: Peer, endpoint: str, failures: int = 0) -> None:
        link = peer.direct = self.dialer.open(peer.peer_id, peer.curve_key, peer.address,
                                              endpoint)
        link.failures = failures
        self.peak = max(self.peak, self.open_count)

    def redial(self, peer: Peer, failures: int = 0) -> None:
        """A new dialled connection to the peer in place of the one it has."""
        old = peer.direct
        if old is None:
            return
        self.dialer.close_link(old, 0)
        self.open_direct(peer, old.endpoint, failures)

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
        """Create, start and connect the SUB of a peer."""
        sockets, loop, receiver = self._sockets, self._loop, self._receiver
        assert sockets is not None and loop is not None and receiver is not None
        sock = sockets.client(kind, peer.curve_key, ":" in peer.address,
                              self._tuning.sub_heartbeats)
        for topic in self.topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        read = sub_reader(sock, peer.peer_id, peer.address, self.stats)
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
        name = f"sub-{peer.peer_id[:4].hex()}"
        pump.start(loop)
        link.monitor_task = loop.create_task(
            self._watch(peer, link), name=f"meshchat-monitor-{name}"
        )
        sock.connect(endpoint)

    def drop(self, peer: Peer, linger_ms: int) -> list[asyncio.Task[None]]:
        """Close a peer's sockets now; returns the tasks that were cancelled. The first peer
        waiting for its address is connected there."""
        if self.peers.get(peer.peer_id) is peer:
            del self.peers[peer.peer_id]
            if self.peer_of_curve.get(peer.curve_key.hex()) == peer.peer_id:
                del self.peer_of_curve[peer.curve_key.hex()]
        cancelled: list[asyncio.Task[None]] = []
        for link in peer.links.values():
            cancelled += self._close_link(link, 0)
        direct = peer.direct
        if direct is not None:
            self.dialer.close_link(direct, linger_ms)
            line = self.waiting.pop(direct.key, None)
            if line and not self._closing:
                claim = line.popleft()
                if line:
                    self.waiting[direct.key] = line
                self.connect(*claim)
        return cancelled

    def _wait(self, key: tuple[str, str], claim: _Claim) -> None:
        count(self.stats, "endpoint_waiting")
        line = self.waiting.setdefault(key, deque(maxlen=WAITERS_PER_ADDRESS))
        for queued in [c for c in line if c[0] == claim[0]]:
            line.remove(queued)
        line.append(claim)

    def forget(self, peer_id: bytes = b"", curve_key: bytes = b"") -> None:
        """Take a peer (by id, or every id of a CURVE key) out of every line it waits in."""
        for key, line in list(self.waiting.items()):
            for queued in [c for c in line if c[0] == peer_id or c[1] == curve_key]:
                line.remove(queued)
            if not line:
                del self.waiting[key]

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
        only trace is a DISCONNECTED that no CONNECT_RETRIED follows. A CONNECTED that no word
        of the handshake follows within ``handshake_watchdog_ms`` is a lost link too."""
        monitor = link.monitor
        grace_s = self._tuning.dead_link_grace_ms / 1000
        watchdog_s = self._tuning.handshake_watchdog_ms / 1000
        waits: dict[int, float] = {int(zmq.EVENT_DISCONNECTED): grace_s,
                                   int(zmq.EVENT_CONNECTED): watchdog_s}
        last = 0  # the last event, if libzmq owes us another one soon (see ``waits``)
        while True:
            try:
                if last in waits:
                    message = await asyncio.wait_for(monitor.recv_multipart(), waits[last])
                else:
                    message = await monitor.recv_multipart()
            except TimeoutError:
                if int(monitor.get(zmq.EVENTS)) & zmq.POLLIN:
                    continue  # the loop was slow, not libzmq
                if last == zmq.EVENT_CONNECTED:
                    count(self.stats, "handshakes_lost")
                await self._reopen_later(peer, link)
                return
            if len(message) != 2 or len(message[0]) != 6:
                continue
            event, _value = struct.unpack("=HI", message[0])
            last = event
            # Given up, or closed by what the event set off (a refusal reported to the node,
            # which disconnects the peer): this task is the one that closed it, so nobody
            # cancelled it, and its monitor is gone.
            if self._link_event(peer, link, event) or link.pump.stopped:
                return

    def _direct_event(self, link: DirectLink, event: int) -> None:
        peer = self.peers.get(link.peer_id)
        if peer is not None and peer.direct is link:
            self._link_event(peer, link, event, direct=True)

    def _link_event(self, peer: Peer, link: Link | DirectLink, event: int,
                    direct: bool = False) -> bool:
        """One monitor event of a link; True if the peer was given up. The direct link's
        closes and returns are reported (``on_disconnect``, ``on_reconnect``)."""
        if event == zmq.EVENT_DISCONNECTED:
            if direct and self.on_disconnect is not None:
                # The peer's TCP connection closed (it quit or was killed) or its ZMTP
                # heartbeat timed out (unplugged, frozen): a hint worth a ping, not a verdict.
                try:
                    self.on_disconnect(peer.peer_id)
                except Exception:
                    log.exception("on_disconnect raised")
            link.dropped = link.dropped or link.up
            link.up = False
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            link.up = True
            link.failures = 0
            peer.reported = False
            if link.dropped and direct and self.on_reconnect is not None:
                link.dropped = False
                try:
                    self.on_reconnect(peer.peer_id)
                except Exception:
                    log.exception("on_reconnect raised")
        elif event & _HANDSHAKE_FAILED:
            return self._handshake_failed(
                peer, link, refused=event == zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        return False

    def _handshake_failed(self, peer: Peer, link: Link | DirectLink,
                          refused: bool = False) -> bool:
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
        """Replace a SUB libzmq gave up on, after a backoff that grows with failed handshakes."""
        await asyncio.sleep(self._backoff_s(old.failures))
        if self.peers.get(peer.peer_id) is not peer or peer.links.get(old.kind) is not old:
            return
        log.info("reopening the SUB to %s", peer.peer_id.hex())
        count(self.stats, "links_reopened")
        self._close_link(old, 0)
        self.open(peer, old.kind, old.endpoint, old.failures)

    def _direct_abandoned(self, link: DirectLink) -> None:
        peer = self.peers.get(link.peer_id)
        if peer is None or peer.direct is not link or self._loop is None:
            return
        task = self._loop.create_task(self._reopen_direct_later(peer, link),
                                      name=f"meshchat-redial-{peer.peer_id[:4].hex()}")
        self._reopening.add(task)
        task.add_done_callback(self._reopening.discard)

    async def _reopen_direct_later(self, peer: Peer, old: DirectLink) -> None:
        """Redial a peer's ROUTER that libzmq gave up on, after the same backoff."""
        await asyncio.sleep(self._backoff_s(old.failures))
        if self.peers.get(peer.peer_id) is not peer or peer.direct is not old:
            return
        log.info("redialling %s", peer.peer_id.hex())
        count(self.stats, "links_reopened")
        self.redial(peer, old.failures)

    def _backoff_s(self, failures: int) -> float:
        tuning = self._tuning
        return min(tuning.reconnect_ivl_ms << min(failures, 16), tuning.reconnect_ivl_max_ms) / 1000
