"""Our connections to each peer — to its SUB on our PUB, and to its ROUTER on the dialer if we
are the one of the pair that dials — opened, followed through the two dialling sockets'
monitors, reopened, closed.

One direct connection per pair: of two peers, the lower id dials the other's ROUTER, and the
higher answers over its own ROUTER, by the routing id of the lower's connection. So a pair of
peers holds three TCP connections in all: two PUB to SUB, one dialler to ROUTER. A probe (a
peer not proven yet, ``subscribe=False``) is always dialled; once the peer is proven and its
own connection reaches us, the higher side retires the probe's (``retire``). The higher
side's PUB connection then carries the ZMTP heartbeats and the link events (disconnect,
reconnect) that the dialled connection carries on the lower side."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from .base import FloodGuard, Receiver, TransportStats
from .dialer import HANDSHAKE_FAILED as _HANDSHAKE_FAILED
from .dialer import Dialer, DirectLink, endpoint_key
from .pump import count
from .sockets import Sockets, ZmqTuning, endpoint

__all__ = ["HandshakeFailureHandler", "Links", "Peer"]

log = logging.getLogger("meshchat.transport.zmq")

HandshakeFailureHandler = Callable[[bytes], None]

WAITERS_PER_ADDRESS = 4
"""Peers waiting for an address another peer's direct link holds (the oldest claim drops)."""

_Claim = tuple[bytes, bytes, str, int, int, bool]  # connect's arguments


@dataclass(slots=True, eq=False)
class Peer:
    peer_id: bytes
    curve_key: bytes
    where: tuple[str, int, int]
    direct: DirectLink | None = None  # our connection to its ROUTER, on the dialer
    # Our PUB's connection to its SUB; a peer connected with ``subscribe`` has one, and only
    # its publications (on our SUB, by CURVE key) are taken:
    fanout: DirectLink | None = None
    reported: bool = False  # on_handshake_failure called for the current failure streak
    # The watched link (the direct one, or the PUB's when there is none) closed: the next
    # handshake of a watched link is a return (``on_reconnect``), whichever link it is — a
    # link the higher id dialled meanwhile (to send) comes up in place of the PUB's.
    dropped: bool = False

    @property
    def address(self) -> str:
        return self.where[0]


class Links:
    """The peers we hold links to, by peer id and by CURVE key.

    Each CURVE key is bound to one peer id at a time (``peer_of_curve``); ``publishers`` are
    the keys whose publications we take (peers connected with ``subscribe``), with the peer id
    and address to name them by. Each link's events come from its dialling socket's monitor:
    failed handshakes are counted (once per streak to ``on_handshake_failure``, or
    ``on_refused`` when the peer's ZAP turned our key down), the peer is given up after
    ``tuning.max_handshake_failures`` in a row, and a link that libzmq abandoned is reopened.
    ``on_subscriber(peer_id)``: our PUB's connection to the peer's SUB is (back) up.
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
        self.on_subscriber: HandshakeFailureHandler | None = None
        self.me = b""  # our own peer id, set when the transport starts
        # Whether a peer's own connection to our ROUTER has carried a frame (its CURVE key,
        # hex): ours to it can then be retired.
        self.has_route: Callable[[str], bool] = lambda key: False
        self.peers: dict[bytes, Peer] = {}
        self.peer_of_curve: dict[str, bytes] = {}  # CURVE key (hex) -> the connected peer id
        self.publishers: dict[str, tuple[bytes, str]] = {}  # CURVE key (hex) -> (id, address)
        self.peak = 0
        self._tuning = tuning
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: Sockets | None = None
        self._reopening: set[asyncio.Task[None]] = set()
        self._closing = False
        # Address -> the peers that claimed it while another's direct link held it:
        self.waiting: dict[tuple[str, str], deque[_Claim]] = {}
        self.dialer = Dialer(stats, tuning)
        self.fanout = Dialer(stats, tuning, zmq.PUB)
        for dialer in (self.dialer, self.fanout):
            dialer.on_event = self._event
            dialer.on_abandoned = self._abandoned

    def start(self, sockets: Sockets, loop: asyncio.AbstractEventLoop, receiver: Receiver) -> None:
        self._sockets = sockets
        self._loop = loop
        self.dialer.start(sockets, loop, receiver, self.guard)
        self.fanout.start(sockets, loop, receiver, None)

    def close(self, linger_ms: int) -> list[asyncio.Task[None]]:
        """Drop every peer and close both dialling sockets; returns the tasks cancelled."""
        tasks: list[asyncio.Task[None]] = []
        self._closing = True
        self.waiting.clear()
        for peer in list(self.peers.values()):
            self.drop(peer, linger_ms)
        for task in self._reopening:
            task.cancel()
            tasks.append(task)
        self._reopening.clear()
        if self._sockets is not None:
            tasks += self.dialer.close(linger_ms, self._sockets)
            tasks += self.fanout.close(linger_ms, self._sockets)
        return tasks

    def dials(self, peer_id: bytes) -> bool:
        """Of a pair of peers, the lower id dials the other's ROUTER."""
        return self.me < peer_id

    @property
    def open_count(self) -> int:
        """Links open now: connections on the dialer and on the PUB."""
        return sum((peer.direct is not None) + (peer.fanout is not None)
                   for peer in self.peers.values())

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
            if subscribe and old.fanout is None:
                self.open_fanout(old, endpoint(address, pub_port))
                self.retire(old)
            return
        direct_at = endpoint(address, router_port)
        dial = not subscribe or self.dials(peer_id)
        wanted = [(self.dialer, direct_at)] if dial else []
        if subscribe:
            wanted.append((self.fanout, endpoint(address, pub_port)))
        for dialer, at in wanted:
            holder = dialer.holder.get(endpoint_key(at))
            if holder is not None and holder.peer_id != peer_id:
                # Another peer's connection is there (our card of one of them is stale, or
                # one claims the other's address): its handshakes decide. It is given up if
                # the key there is not its own, and the next claim in line gets the address.
                self._wait(holder.key, (peer_id, curve_key, address, router_port, pub_port,
                                        subscribe))
                return
        if old is not None:
            self.drop(old, self._tuning.disconnect_linger_ms)
        peer = self.peers[peer_id] = Peer(peer_id, curve_key, where)
        self.peer_of_curve[curve_key.hex()] = peer_id
        if subscribe:
            self.open_fanout(peer, endpoint(address, pub_port))
        if dial:
            self.open_direct(peer, direct_at)

    def dial_now(self, peer: Peer) -> DirectLink | None:
        """Dial a peer's ROUTER although it is the one of the pair that dials: something is
        to be sent and its connection to us is not there (yet). None if another peer's link
        holds that address."""
        if peer.direct is not None:
            return peer.direct
        at = endpoint(peer.address, peer.where[1])
        holder = self.dialer.holder.get(endpoint_key(at))
        if holder is not None and holder.peer_id != peer.peer_id:
            return None
        count(self.stats, "links_dialled_to_send")
        self.open_direct(peer, at)
        return peer.direct

    def retire(self, peer: Peer) -> None:
        """Close our dialled connection to a peer that dials us (the higher id of the pair):
        one direct connection per pair. Only once the peer is proven (we subscribed to it),
        its own connection to us has carried a frame, and ours is up (so what was queued on it
        has left: the linger covers the last of it)."""
        link = peer.direct
        if (link is None or not link.up or peer.fanout is None or self.dials(peer.peer_id)
                or not self.has_route(peer.curve_key.hex())):
            return
        count(self.stats, "links_retired")
        peer.direct = None
        for claim in self._release(self.dialer, link, self._tuning.disconnect_linger_ms):
            self.connect(*claim)

    def open_direct(self, peer: Peer, endpoint: str, failures: int = 0) -> None:
        link = peer.direct = self.dialer.open(peer.peer_id, peer.curve_key, peer.address,
                                              endpoint)
        link.failures = failures
        self.peak = max(self.peak, self.open_count)

    def open_fanout(self, peer: Peer, endpoint: str, failures: int = 0) -> None:
        """Our PUB connects to the peer's SUB, and its publications on our SUB are taken."""
        link = peer.fanout = self.fanout.open(peer.peer_id, peer.curve_key, peer.address,
                                              endpoint, not self.dials(peer.peer_id))
        link.failures = failures
        self.publishers[peer.curve_key.hex()] = (peer.peer_id, peer.address)
        self.peak = max(self.peak, self.open_count)

    def redial(self, peer: Peer, failures: int = 0) -> None:
        """A new dialled connection to the peer in place of the one it has."""
        old = peer.direct
        if old is None:
            return
        self.dialer.close_link(old, 0)
        self.open_direct(peer, old.endpoint, failures)

    def refresh(self, peer: Peer) -> bool:
        """Replace the peer's connections that are up (our dialled one, our PUB's) with fresh
        ones: after a long silence an old one may sit in TCP's retransmission backoff, and
        send nothing for seconds after the path is back. True if any was replaced."""
        replaced = False
        linger_ms = self._tuning.disconnect_linger_ms
        link = peer.direct
        if link is not None and link.up:
            self.dialer.close_link(link, linger_ms)
            self.open_direct(peer, link.endpoint)
            replaced = True
        link = peer.fanout
        if link is not None and link.up:
            self.fanout.close_link(link, linger_ms)
            self.open_fanout(peer, link.endpoint)
            replaced = True
        if replaced:
            count(self.stats, "links_refreshed")
        return replaced

    def drop(self, peer: Peer, linger_ms: int) -> None:
        """Close a peer's connections now. The first peer waiting for its address is
        connected there."""
        if self.peers.get(peer.peer_id) is peer:
            del self.peers[peer.peer_id]
            key = peer.curve_key.hex()
            if self.peer_of_curve.get(key) == peer.peer_id:
                del self.peer_of_curve[key]
            if self.publishers.get(key, (b"",))[0] == peer.peer_id:
                del self.publishers[key]
        claims: list[_Claim] = []
        for dialer, link in ((self.fanout, peer.fanout), (self.dialer, peer.direct)):
            if link is not None:
                claims += self._release(dialer, link, linger_ms)
        for claim in claims:
            self.connect(*claim)

    def _release(self, dialer: Dialer, link: DirectLink, linger_ms: int) -> list[_Claim]:
        """Close a link; the first claim waiting for its address, to connect now."""
        dialer.close_link(link, linger_ms)
        line = self.waiting.pop(link.key, None)
        if not line or self._closing:
            return []
        claim = line.popleft()
        if line:
            self.waiting[link.key] = line
        return [claim]

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

    def _event(self, link: DirectLink, event: int) -> None:
        peer = self.peers.get(link.peer_id)
        if peer is not None and link in (peer.direct, peer.fanout):
            self._link_event(peer, link, event, direct=link is peer.direct)

    def _link_event(self, peer: Peer, link: DirectLink, event: int, direct: bool) -> bool:
        """One monitor event of a link; True if the peer was given up. The closes and returns
        of the direct link are reported (``on_disconnect``, ``on_reconnect``) — of the PUB's
        when we hold no direct link (the peer dials us) — and each handshake of the PUB's
        (``on_subscriber``)."""
        watch = direct or peer.direct is None
        if event == zmq.EVENT_DISCONNECTED:
            if watch and link.up:
                peer.dropped = True
            if watch:
                # The peer's TCP connection closed (it quit or was killed) or its ZMTP
                # heartbeat timed out (unplugged, frozen): a hint worth a ping, not a verdict.
                self._report(self.on_disconnect, peer.peer_id)
            link.dropped = link.dropped or link.up
            link.up = False
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            link.up = True
            link.failures = 0
            peer.reported = False
            if not direct:
                count(self.stats, "subscribers_admitted")
                self._report(self.on_subscriber, peer.peer_id)
            link.dropped = False
            if watch and peer.dropped:
                peer.dropped = False
                self._report(self.on_reconnect, peer.peer_id)
            if direct and self.dials(peer.peer_id):
                # Who we are, on the new connection: the peer answers over it from now on
                # (an empty frame; it carries nothing up). Its own link to us can go.
                self.dialer.send(link, b"")
            elif direct:
                self.retire(peer)
        elif event & _HANDSHAKE_FAILED:
            return self._handshake_failed(
                peer, link, refused=event == zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        return False

    @staticmethod
    def _report(handler: HandshakeFailureHandler | None, peer_id: bytes) -> None:
        if handler is not None:
            try:
                handler(peer_id)
            except Exception:
                log.exception("link event handler raised")

    def _handshake_failed(self, peer: Peer, link: DirectLink, refused: bool = False) -> bool:
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
            self._report(report, peer.peer_id)
        return give_up

    def _abandoned(self, link: DirectLink) -> None:
        peer = self.peers.get(link.peer_id)
        if peer is None or link not in (peer.direct, peer.fanout) or self._loop is None:
            return
        task = self._loop.create_task(self._reopen_later(peer, link),
                                      name=f"meshchat-redial-{peer.peer_id[:4].hex()}")
        self._reopening.add(task)
        task.add_done_callback(self._reopening.discard)

    async def _reopen_later(self, peer: Peer, old: DirectLink) -> None:
        """Dial again a connection libzmq gave up on, after a backoff that grows with failed
        handshakes."""
        await asyncio.sleep(self._backoff_s(old.failures))
        if self.peers.get(peer.peer_id) is not peer or old not in (peer.direct, peer.fanout):
            return
        log.info("redialling %s", peer.peer_id.hex())
        count(self.stats, "links_reopened")
        if old is peer.direct:
            self.redial(peer, old.failures)
        else:
            self.fanout.close_link(old, 0)
            self.open_fanout(peer, old.endpoint, old.failures)

    def _backoff_s(self, failures: int) -> float:
        tuning = self._tuning
        return min(tuning.reconnect_ivl_ms << min(failures, 16), tuning.reconnect_ivl_max_ms) / 1000
