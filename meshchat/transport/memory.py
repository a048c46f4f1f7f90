"""An in-process transport for fast node-level tests: the ZeroMQ transport's behaviour, no sockets.

``MemoryNetwork`` is the hub; each ``MemoryTransport`` started on it gets fake unique ports.
What it keeps from ``ZmqTransport``:

- ``connect_peer`` pins the peer id: if the transport at those ports has another key, or
  refuses ours, the "handshake" fails (counted, ``on_handshake_failure`` called soon after,
  peer not connected). Addresses are ignored; only the ports say where a peer is.
  ``subscribe=False`` makes only the direct link (no publications either way).
- a CURVE key is bound to one peer id at a time: ``connect_peer`` for the twin of a connected
  peer is refused (``dropped_twin``); a direct frame is attributed to the id its sender's key
  is bound to here, else to the sender's own id; ``send`` to a twin goes nowhere.
- a publish reaches every peer that we connected to with ``subscribe`` (our PUB dials its
  SUB), that connected to us with ``subscribe`` (it takes publications only from its own
  peers) and subscribed a prefix of the topic; ``deny`` cuts our side at once, and the next
  "handshake" (after ``set_link(..., True)``) is refused.
- ``send`` goes over our link to the peer, else back to a peer that connected to us and whose
  latest direct frame to us we accepted; else False. Direct frames from a denied peer are
  dropped and counted.
- ``open_links`` counts our connections now (direct, and the PUB's), ``peak_links`` the most
  ever; ``on_subscriber`` is told when our PUB's connection to a peer (re)connects.
- delivery is asynchronous, through one queue per receiver drained by one task: FIFO per
  peer, never re-entrant into the sender.

Test controls: ``set_link(a, b, up)`` partitions two peers (frames between them are lost, links
stay, as TCP connections would) and ``kill(peer_id)`` makes a transport vanish without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Limits
from ..identity import Identity, canonical_id, is_valid_peer_id
from .base import FloodGuard, Incoming, LinkEvents, LocalPorts, Receiver, TransportStats

__all__ = ["MemoryNetwork", "MemoryTransport"]

log = logging.getLogger(__name__)


class MemoryNetwork:
    """The hub that MemoryTransports on one simulated LAN share."""

    address = "mem"

    def __init__(self, first_port: int = 20000) -> None:
        self._ports = itertools.count(first_port)
        self._by_port: dict[int, MemoryTransport] = {}
        self._down: set[frozenset[bytes]] = set()
        self._subs_down: set[tuple[bytes, bytes]] = set()  # (subscriber, publisher)

    def set_link(self, peer_a: bytes, peer_b: bytes, up: bool) -> None:
        """Cut (``up=False``) or restore the link between two peers, both directions.

        Restoring makes both sides "handshake" again, so a deny issued meanwhile bites."""
        pair = frozenset((peer_a, peer_b))
        if up:
            if pair in self._down:
                self._down.discard(pair)
                for mine, other in ((peer_a, peer_b), (peer_b, peer_a)):
                    for transport in self._alive(mine):
                        transport._rehandshake(other)
        else:
            self._down.add(pair)

    def set_subscription(self, subscriber: bytes, publisher: bytes, up: bool) -> None:
        """Cut or restore only ``publisher``'s PUB connection to ``subscriber``'s SUB, while
        the direct links stay up: each side of a real link redials on its own clock, so after
        a heal one peer's subscription may come back a second after everything else.
        Restoring it is reported to the publisher (``LinkEvents.on_subscriber``)."""
        pair = (subscriber, publisher)
        if up:
            if pair in self._subs_down:
                self._subs_down.discard(pair)
                for transport in self._alive(publisher):
                    link = transport._links.get(subscriber)
                    if link is not None and link.ok and link.sub:
                        transport._subscriber_up(subscriber)
        else:
            self._subs_down.add(pair)

    def is_subscribed(self, subscriber: bytes, publisher: bytes) -> bool:
        return (self.is_linked(subscriber, publisher)
                and (subscriber, publisher) not in self._subs_down)

    def kill(self, peer_id: bytes) -> None:
        """The peer's transport vanishes without a goodbye; frames to it are lost."""
        for transport in self._alive(peer_id):
            transport._vanish()

    def is_linked(self, peer_a: bytes, peer_b: bytes) -> bool:
        return frozenset((peer_a, peer_b)) not in self._down

    def _register(self, transport: MemoryTransport) -> LocalPorts:
        ports = LocalPorts(router_port=next(self._ports), pub_port=next(self._ports))
        self._by_port[ports.router_port] = transport
        self._by_port[ports.pub_port] = transport
        return ports

    def _at(self, port: int) -> MemoryTransport | None:
        transport = self._by_port.get(port)
        return transport if transport is not None and transport._alive_ else None

    def _alive(self, peer_id: bytes) -> list[MemoryTransport]:
        return [t for t in self._transports() if t.peer_id == peer_id]

    def _holding(self, curve_key: bytes) -> list[MemoryTransport]:
        return [t for t in self._transports()
                if t._identity is not None and t._identity.curve_public == curve_key]

    def _transports(self) -> list[MemoryTransport]:
        return [t for t in dict.fromkeys(self._by_port.values()) if t._alive_]


@dataclass(slots=True, eq=False)
class _Link:
    """Our SUB + DEALER to a peer: where it points and whether the handshake passed."""

    peer_id: bytes
    address: str
    router_port: int
    pub_port: int
    target: MemoryTransport | None = None
    ok: bool = False
    sub: bool = True


class MemoryTransport:
    """A ``base.Transport`` on a ``MemoryNetwork``."""

    def __init__(
        self,
        network: MemoryNetwork,
        limits: Limits = Limits(),  # noqa: B008 - frozen, so one shared default is safe
        *,
        on_handshake_failure: Callable[[bytes], None] | None = None,
        on_refused: Callable[[bytes], None] | None = None,
    ) -> None:
        self.stats = TransportStats()
        self.network = network
        self._limits = limits
        self._guard = FloodGuard(limits.peer_frames_per_s, limits.peer_frames_burst,
                                 limits.max_peers * 4, time.monotonic)
        self._on_handshake_failure = on_handshake_failure
        self._on_refused = on_refused
        self._on_subscriber: Callable[[bytes], None] | None = None
        self._identity: Identity | None = None
        self._receiver: Receiver | None = None
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[bytes, _Link] = {}
        self._topics: set[bytes] = set()
        self._denied: set[bytes] = set()  # CURVE keys, as ZAP sees them
        self._routes: set[bytes] = set()  # CURVE keys whose direct frames we accepted
        self._bound: dict[bytes, bytes] = {}  # CURVE key -> the peer id of our link to it
        self.peak_links = 0
        self._alive_ = False
        self._busy = False  # the receiver is running: stopping must not cancel its work
        self._closed = False

    @property
    def peer_id(self) -> bytes:
        return self._identity.peer_id if self._identity is not None else b""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(
        self, identity: Identity, bind_addresses: list[str], receiver: Receiver
    ) -> LocalPorts:
        if self._identity is not None or self._closed:
            raise RuntimeError("a MemoryTransport starts once")
        self._identity = identity
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()
        self._alive_ = True
        self._task = self._loop.create_task(self._deliver(), name="meshchat-memory-transport")
        return self.network._register(self)

    async def close(self, linger_s: float = 0.3) -> None:
        if self._closed:
            return
        self._closed = True
        task = self._task
        self._vanish()
        if task is not None and task.cancelling():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _vanish(self) -> None:
        self._alive_ = False
        self._links.clear()
        self._bound.clear()
        self._routes.clear()
        task = self._task
        if task is not None and not self._busy and task is not asyncio.current_task():
            task.cancel()
        while not self._queue.empty():
            self._queue.get_nowait()

    # -- peers ------------------------------------------------------------------------------

    def connect_peer(self, peer_id: bytes, address: str, router_port: int, pub_port: int,
                     *, subscribe: bool = True) -> None:
        if not self._alive_:
            return
        if not is_valid_peer_id(peer_id):
            raise ValueError("not a peer id")
        if peer_id == self.peer_id:
            raise ValueError("a transport does not connect to itself")
        key = canonical_id(peer_id)
        if key in self._denied:
            return
        if self._bound.get(key, peer_id) != peer_id:
            self._count("dropped_twin")
            return
        old = self._links.get(peer_id)
        if old is not None and (old.address, old.router_port, old.pub_port) == (
            address,
            router_port,
            pub_port,
        ):
            if subscribe and not old.sub:
                old.sub = True
                self.peak_links = max(self.peak_links, self.open_links)
                if old.ok and old.target is not None:
                    self._subscriber_up(peer_id)
            return
        link = _Link(peer_id, address, router_port, pub_port, sub=subscribe)
        self._links[peer_id] = link
        self._bound[key] = peer_id
        self.peak_links = max(self.peak_links, self.open_links)
        self._handshake(link)

    def disconnect_peer(self, peer_id: bytes) -> None:
        if self._links.pop(peer_id, None) is not None:
            self._unbind(peer_id)

    def is_connected(self, peer_id: bytes) -> bool:
        return peer_id in self._links

    def redial(self, peer_id: bytes) -> bool:
        return False  # a memory link is up from the start: nothing to dial again

    def refresh(self, peer_id: bytes) -> bool:
        return False  # a memory link never stalls

    @property
    def open_links(self) -> int:
        return sum(1 + link.sub for link in self._links.values())

    def _unbind(self, peer_id: bytes) -> None:
        key = canonical_id(peer_id)
        if self._bound.get(key) == peer_id:
            del self._bound[key]

    def deny(self, peer_id: bytes) -> None:
        key = canonical_id(peer_id)
        self._denied.add(key)
        for other in [p for p in self._links if canonical_id(p) == key]:
            del self._links[other]
        self._bound.pop(key, None)
        self._routes.discard(key)

    def set_link_events(self, events: LinkEvents) -> None:
        self._on_handshake_failure = self._on_handshake_failure or events.on_handshake_failure
        self._on_refused = self._on_refused or events.on_refused
        self._on_subscriber = self._on_subscriber or events.on_subscriber

    def _subscriber_up(self, subscriber: bytes) -> None:
        """Our PUB's connection to ``subscriber``'s SUB is (back) up: reported soon after, as
        the PUB's monitor reports its handshake."""
        if self._loop is None or self._on_subscriber is None or subscriber not in self._links:
            return
        self._count("subscribers_admitted")
        self._loop.call_soon(self._report_subscriber, subscriber)

    def _report_subscriber(self, subscriber: bytes) -> None:
        if self._on_subscriber is not None and self._alive_:
            try:
                self._on_subscriber(subscriber)
            except Exception:
                log.exception("on_subscriber raised")

    def allow(self, peer_id: bytes) -> None:
        self._denied.discard(canonical_id(peer_id))

    def _handshake(self, link: _Link) -> None:
        target = self.network._at(link.router_port)
        if target is None or self.network._at(link.pub_port) is not target:
            link.target, link.ok = None, False  # nobody there (yet): frames are lost
            return
        assert self._identity is not None
        refused = self._identity.curve_public in target._denied
        if (
            target._identity is None
            or target._identity.curve_public != canonical_id(link.peer_id)
            or refused
        ):
            if self._links.get(link.peer_id) is link:
                del self._links[link.peer_id]
                self._unbind(link.peer_id)
            self.stats.handshake_failures += 1
            self._count("peers_given_up")
            if self._loop is not None:
                self._loop.call_soon(self._report_failure, link.peer_id, refused)
            return
        link.target, link.ok = target, True
        if link.sub:
            self._subscriber_up(link.peer_id)

    def _rehandshake(self, peer_id: bytes) -> None:
        link = self._links.get(peer_id)
        if link is not None:
            self._handshake(link)

    def _report_failure(self, peer_id: bytes, refused: bool = False) -> None:
        report = self._on_refused if refused and self._on_refused else self._on_handshake_failure
        if report is None:
            return
        try:
            report(peer_id)
        except Exception:
            log.exception("on_handshake_failure raised")

    # -- topics and sending -----------------------------------------------------------------

    def subscribe(self, topic: bytes) -> None:
        self._topics.add(topic)

    def unsubscribe(self, topic: bytes) -> None:
        self._topics.discard(topic)

    def publish(self, topic: bytes, payload: bytes) -> None:
        if not self._alive_:
            return
        if len(payload) > self._limits.max_frame_bytes:
            self.stats.send_failures += 1
            return
        self.stats.sent += 1
        me = self.peer_id
        for other in self.network._transports():
            link = other._links.get(me)  # it takes our publications
            mine = self._links.get(other.peer_id)  # our PUB dials it
            if (
                link is not None
                and link.ok
                and link.sub
                and link.target is self
                and mine is not None
                and mine.ok
                and mine.sub
                and mine.target is other
                and self.network.is_subscribed(other.peer_id, me)
                and any(topic.startswith(t) for t in other._topics)
            ):
                other._arrive(Incoming("pub", me, payload, topic, link.address))

    def send(self, peer_id: bytes, payload: bytes) -> bool:
        if not self._alive_:
            return False
        if len(payload) > self._limits.max_frame_bytes:
            self.stats.send_failures += 1
            return False
        me = self.peer_id
        link = self._links.get(peer_id)
        if link is not None and not link.ok and self._send_back(peer_id, payload):
            return True  # as ZmqTransport: a link not (yet) up yields to the peer's own route
        if link is not None:
            self.stats.sent += 1
            target = link.target
            if link.ok and target is not None and self.network.is_linked(me, peer_id):
                target._arrive_direct(self, payload)
            return True
        return self._send_back(peer_id, payload)

    def _send_back(self, peer_id: bytes, payload: bytes) -> bool:
        me = self.peer_id
        if not is_valid_peer_id(peer_id):
            return False
        key = canonical_id(peer_id)
        if key not in self._routes or self._bound.get(key, peer_id) != peer_id:
            return False
        for other in self.network._holding(key):
            back = other._links.get(me)
            if back is not None and back.ok and back.target is self:
                self.stats.sent += 1
                if self.network.is_linked(me, other.peer_id):
                    other._arrive(Incoming("direct", me, payload, b"", back.address))
                return True
        return False

    # -- receiving --------------------------------------------------------------------------

    def _arrive_direct(self, sender: MemoryTransport, payload: bytes) -> None:
        """A frame on our "ROUTER" from a sender's link to us."""
        assert sender._identity is not None
        key = sender._identity.curve_public
        if key in self._denied:
            self._count("dropped_denied")
            return
        self._routes.add(key)
        # As ZmqTransport names a ROUTER frame by the peer its authenticated key is bound to.
        name = self._bound.get(key, sender.peer_id)
        self._arrive(Incoming("direct", name, payload, b"", self.network.address))

    def _arrive(self, incoming: Incoming) -> None:
        if not self._alive_:
            return
        if len(incoming.payload) > self._limits.max_frame_bytes:
            self.stats.dropped_oversize += 1
            return
        if not self._guard.admit(incoming.peer_id):
            self._count("dropped_flood")
            return
        self._queue.put_nowait(incoming)

    async def _deliver(self) -> None:
        receiver = self._receiver
        assert receiver is not None
        while True:
            incoming = await self._queue.get()
            if not self._alive_:
                return
            self.stats.received += 1
            self._busy = True
            try:
                result = receiver(incoming)
                if result is not None:
                    await result
            except Exception:
                self._count("receiver_errors")
                log.exception("receiver failed on a frame from %s", incoming.peer_id.hex())
            finally:
                self._busy = False
            if not self._alive_:
                return

    def _count(self, name: str) -> None:
        extra = self.stats.extra
        extra[name] = extra.get(name, 0) + 1
