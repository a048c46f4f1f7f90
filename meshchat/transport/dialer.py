"""Our dialling sockets, one of each kind for all peers, each watched by one monitor: the
ROUTER that connects out to every peer's ROUTER (direct frames), and the PUB that connects out
to every peer's SUB (room traffic and presence). No socket per peer: a peer costs one TCP
connection on each, and nothing else (no mailbox, no monitor of its own).

Each connection is pinned to its peer's CURVE key (``CURVE_SERVERKEY`` is copied into each
connect as it is made). On the ROUTER it gets a routing id of ours (``CONNECT_ROUTING_ID``),
fresh for every connect: a frame that arrives with that routing id is from that peer, and only
from it; a routing id is never reused, so a connection still lingering after a disconnect
never collides with its successor (libzmq asserts on a duplicate).

The monitor names the endpoint of every event; each endpoint is held by one peer at a time
(``Dialer.holder``), so an event is that peer's. Events are read in a callback on the
monitor's FD, and once more, to the end, before each connect: what an earlier connection to
the same endpoint reported (a refusal while it was banned, say) is never charged to the new
one, however late the loop got round to reading it. A second peer at a held endpoint is refused by
``Links.connect`` (a stale card, or someone claiming another's address): once the holder's
handshakes fail there (it moved) it is given up, and the endpoint is free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import struct
from collections.abc import Callable
from typing import Any

import zmq

from .base import FloodGuard, Incoming, Receiver, TransportStats
from .pump import Pump, Reader, count, router_reader
from .sockets import Sockets, ZmqTuning, set_heartbeats

__all__ = ["MONITORED_EVENTS", "Dialer", "DirectLink", "endpoint_key"]

log = logging.getLogger("meshchat.transport.zmq")

HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
MONITORED_EVENTS = (
    HANDSHAKE_FAILED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_DELAYED
)
_monitor_ids = itertools.count()


def endpoint_key(endpoint: str) -> tuple[str, str]:
    """``tcp://host:port`` as libzmq may spell it back in a monitor event: the IP in its
    compressed form, without brackets or zone."""
    address = endpoint.removeprefix("tcp://")
    host, _, port = address.rpartition(":")
    host = host.strip("[]").split("%", 1)[0]
    with contextlib.suppress(ValueError):
        host = ipaddress.ip_address(host).compressed
    return host, port


class DirectLink:
    """Our connection to one peer's ROUTER (or, on the PUB, to its SUB)."""

    __slots__ = ("address", "dropped", "endpoint", "events", "failures", "key", "opened_at",
                 "peer_id", "routing_id", "timer", "up")

    def __init__(self, peer_id: bytes, address: str, endpoint: str, routing_id: bytes,
                 opened_at: float = 0.0) -> None:
        self.peer_id = peer_id
        self.opened_at = opened_at  # the loop's clock when it was dialled
        self.address = address
        self.endpoint = endpoint
        self.key = endpoint_key(endpoint)
        self.routing_id = routing_id
        self.failures = 0  # failed handshakes in a row, carried over when it is reopened
        self.up = False  # a handshake succeeded and the connection has not closed since
        self.dropped = False  # it was up once and then closed: the next handshake is a return
        self.timer: asyncio.TimerHandle | None = None  # disconnected, no retry seen yet; or
        # connected, no handshake heard yet
        self.events = 0  # monitor events read for it


EventHandler = Callable[[DirectLink, int], None]


class Dialer:
    """A dialling socket (``kind``: the ROUTER, with its pump; or the PUB, which receives
    nothing) and its monitor; ``on_event(link, event)`` gets each
    monitor event of a link that is open, ``on_abandoned(link)`` a link libzmq gave up on (a
    DISCONNECTED that no retry followed within ``tuning.dead_link_grace_ms``: after a protocol
    error or a ZAP refusal libzmq never reconnects), or lost (CONNECTED, and no word of its
    handshake within ``tuning.handshake_watchdog_ms``)."""

    def __init__(self, stats: TransportStats, tuning: ZmqTuning, kind: int = zmq.ROUTER) -> None:
        self.stats = stats
        self.tuning = tuning
        self.kind = kind
        self.on_event: EventHandler | None = None
        self.on_abandoned: Callable[[DirectLink], None] | None = None
        self.by_routing_id: dict[bytes, DirectLink] = {}
        self.holder: dict[tuple[str, str], DirectLink] = {}  # endpoint -> the link there
        self._ids = itertools.count(1)
        self._sock: zmq.Socket[Any] | None = None
        self._monitor: zmq.Socket[Any] | None = None
        self._monitor_fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pump: Pump | None = None

    def start(self, sockets: Sockets, loop: asyncio.AbstractEventLoop, receiver: Receiver,
              guard: FloodGuard | None) -> None:
        self._loop = loop
        if self.kind == zmq.ROUTER:
            sock = self._sock = sockets.client(zmq.ROUTER, None, True)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        else:
            # No ZMTP heartbeats: the ROUTER's connection to the same peer watches it already,
            # and their PINGs would double libzmq's idle work.
            sock = self._sock = sockets.client(self.kind, None, True,
                                               heartbeats=self.tuning.sub_heartbeats)
        address = f"inproc://meshchat-dialer-{id(self):x}-{next(_monitor_ids)}"
        sock.monitor(address, MONITORED_EVENTS)
        monitor: zmq.Socket[Any] = zmq.Socket(sockets.ctx, zmq.PAIR)
        self._monitor = monitor
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(address)
        if self.kind == zmq.ROUTER:
            pump = self.pump = Pump(sock, self._reader(sock), receiver, self.stats,
                                    self.tuning.recv_batch, guard, self.tuning.recv_budget_s)
            pump.start(loop)
        # Edge-triggered, as every ZMQ_FD: each wake-up reads to EAGAIN (``_read_events``).
        self._monitor_fd = int(monitor.get(zmq.FD))
        loop.add_reader(self._monitor_fd, self._read_events)
        loop.call_soon(self._read_events)

    def close(self, linger_ms: int, sockets: Sockets) -> list[asyncio.Task[None]]:
        """Close the socket and its monitor; returns the tasks cancelled (none now)."""
        for link in list(self.by_routing_id.values()):
            self._forget(link)
        tasks: list[asyncio.Task[None]] = []
        if self.pump is not None and self._loop is not None:
            self.pump.stop(self._loop)
        if self._monitor_fd >= 0 and self._loop is not None:
            self._loop.remove_reader(self._monitor_fd)
            self._monitor_fd = -1
        sock, monitor = self._sock, self._monitor
        if sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            sock.close(linger=linger_ms)
            sockets.closed(sock)
        if monitor is not None:
            monitor.close(linger=0)
        return tasks

    # -- links ------------------------------------------------------------------------------

    @property
    def sock(self) -> zmq.Socket[Any] | None:
        """The socket, once started (the transport publishes on the PUB's)."""
        return self._sock

    def open(self, peer_id: bytes, curve_key: bytes, address: str, endpoint: str,
             heartbeats: bool | None = None) -> DirectLink:
        """Connect to a peer's ROUTER (or SUB), pinned to its key; frames may be sent at once
        (they wait in the connection's queue until its handshake is done). ``heartbeats``:
        this connection pings (True) or not (False), whatever the socket's default; libzmq
        copies a socket's options into each connection as it is made."""
        sock = self._sock
        assert sock is not None
        if heartbeats is not None:
            set_heartbeats(sock, self.tuning, heartbeats)
        self._read_events()  # the last word of earlier connections goes to them, or nobody
        routing_id = b"\x01" + next(self._ids).to_bytes(8, "big")  # never 0-led: libzmq's own
        link = DirectLink(peer_id, address, endpoint, routing_id,
                          self._loop.time() if self._loop is not None else 0.0)
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve_key)
        if self.kind == zmq.ROUTER:
            sock.setsockopt(zmq.CONNECT_ROUTING_ID, routing_id)
        sock.connect(endpoint)
        self.by_routing_id[routing_id] = link
        self.holder[link.key] = link
        return link

    def close_link(self, link: DirectLink, linger_ms: int) -> None:
        """Disconnect; what is queued for the peer still leaves for ``linger_ms``."""
        if self.by_routing_id.get(link.routing_id) is not link:
            return
        self._forget(link)
        sock = self._sock
        if sock is None or sock.closed:
            return
        sock.setsockopt(zmq.LINGER, linger_ms)
        with contextlib.suppress(zmq.ZMQError):  # ENOENT: libzmq already dropped it
            sock.disconnect(link.endpoint)

    def age_s(self, link: DirectLink) -> float:
        """How long ago the link was dialled."""
        return self._loop.time() - link.opened_at if self._loop is not None else 0.0

    def _forget(self, link: DirectLink) -> None:
        self.by_routing_id.pop(link.routing_id, None)
        if self.holder.get(link.key) is link:
            del self.holder[link.key]
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None

    def send(self, link: DirectLink, payload: bytes) -> bool:
        sock, pump = self._sock, self.pump
        if sock is None or pump is None:
            return False
        try:
            sock.send(link.routing_id, zmq.NOBLOCK | zmq.SNDMORE)
            sock.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.stats.send_failures += 1
            return False
        except zmq.ZMQError as error:  # EHOSTUNREACH: libzmq dropped the connection
            log.debug("direct send to %s failed: %s", link.peer_id.hex(), error)
            self.stats.send_failures += 1
            return False
        finally:
            pump.kick()
        return True

    # -- receiving and watching -------------------------------------------------------------

    def _reader(self, sock: zmq.Socket[Any]) -> Reader:
        """[routing id, payload]: Incoming 'direct' from the peer that routing id was made for."""
        links, stats = self.by_routing_id, self.stats

        def attribute(routing_id: bytes, frame: zmq.Frame) -> Incoming | None:
            link = links.get(routing_id)
            if link is None:  # a link we closed, its last frames still queued
                count(stats, "dropped_closed_link")
                return None
            return Incoming("direct", link.peer_id, frame.bytes, b"", link.address)

        return router_reader(sock, stats, attribute)

    def _read_events(self) -> None:
        """Hand every monitor event queued now to its link (the endpoint's holder)."""
        monitor = self._monitor
        if monitor is None or monitor.closed:
            return
        while True:
            try:
                message = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:  # closed under us
                return
            if len(message) != 2 or len(message[0]) != 6:
                continue
            event, _value = struct.unpack("=HI", message[0])
            link = self.holder.get(endpoint_key(message[1].decode("utf-8", "replace")))
            if link is None:
                continue
            link.events += 1
            if link.timer is not None:
                link.timer.cancel()
                link.timer = None
            if event == zmq.EVENT_DISCONNECTED and self._loop is not None:
                link.timer = self._loop.call_later(
                    self.tuning.dead_link_grace_ms / 1000, self._grace_over, link)
            elif event == zmq.EVENT_CONNECTED and self._loop is not None:
                link.timer = self._loop.call_later(
                    self.tuning.handshake_watchdog_ms / 1000, self._handshake_lost, link)
            handler = self.on_event
            if handler is not None:
                try:
                    handler(link, event)
                except Exception:
                    log.exception("dialer event handler raised")

    def _handshake_lost(self, link: DirectLink) -> None:
        """Connected, and then not a word of the handshake: libzmq will not retry this one."""
        self._grace_over(link, lost=True)

    def _grace_over(self, link: DirectLink, lost: bool = False) -> None:
        """No retry after a DISCONNECTED (or, ``lost``, no handshake after a CONNECTED)."""
        link.timer = None
        seen = link.events
        self._read_events()  # the loop was slow, not libzmq: a retry may be waiting there
        if link.events != seen:
            return
        if self.by_routing_id.get(link.routing_id) is link and self.on_abandoned is not None:
            if lost:
                count(self.stats, "handshakes_lost")
                log.info("no handshake on the connection to %s: redialling", link.peer_id.hex())
            self.on_abandoned(link)
