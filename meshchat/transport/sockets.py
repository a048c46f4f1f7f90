"""The libzmq sockets of the ZeroMQ transport: their settings (``ZmqTuning``), made and tracked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from ..config import Limits
from ..identity import Identity
from .zap import ZAP_DOMAIN

__all__ = ["Sockets", "ZmqTuning", "bind_all", "endpoint", "set_heartbeats"]


@dataclass(frozen=True, slots=True)
class ZmqTuning:
    """libzmq socket settings; the defaults suit a LAN."""

    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 1000
    connect_timeout_ms: int = 2000
    handshake_ivl_ms: int = 5000
    # ZMTP heartbeats (libzmq's I/O thread, no Python work): a connection that carries
    # nothing for heartbeat_timeout_ms is dropped and redialled, which the dialer's monitor
    # reports as a hint that the peer may be gone (``Timings.peer_suspect_s``). TTL: the peer
    # drops its side of the connection too when we fall silent that long.
    # A PING every 6 s, answered within 2 s: a dead connection is noticed within 8 s. Every
    # 2 s (timeout 3 s) cost a 64-node room a third of a core in libzmq alone, for news only
    # a member's leaving needs; the host's loss is seen by the room beat (0.9 s), not here.
    # TTL: past one interval, so the next PING always comes in time.
    heartbeat_ivl_ms: int = 6000
    heartbeat_timeout_ms: int = 2000
    heartbeat_ttl_ms: int = 8000
    # Our PUB's connections (to each peer's SUB) go without where we dial the same peer's
    # ROUTER, which watches it already (their PINGs were half of libzmq's idle work: a 64-node
    # room, 36% of a core, all nodes); to a peer that dials us, the PUB's connection pings.
    sub_heartbeats: bool = False
    tcp_keepalive_idle_s: int = 10
    tcp_keepalive_intvl_s: int = 3
    tcp_keepalive_cnt: int = 3
    disconnect_linger_ms: int = 100
    dead_link_grace_ms: int = 500  # DISCONNECTED with no retry within this: libzmq gave up
    # CONNECTED and then no word of the handshake for this long: libzmq lost it, so the link
    # is given up and redialled. Seen when two peers refused our key at the same moment: one
    # connection of the dialer never failed, never timed out (handshake_ivl_ms did nothing)
    # and carried nothing, for as long as we watched. Past handshake_ivl_ms, so it never cuts
    # a slow handshake (a peer's loop stalled on its ZAP answer) that libzmq would have let be.
    handshake_watchdog_ms: int = 6000
    # ``redial`` replaces a link that has not failed only once it is this old: a handshake on
    # a LAN takes milliseconds, and a link dialled a moment ago (the host a join has just
    # learned) is still making its own, with our Hello queued on it.
    redial_after_ms: int = 1000
    # A frame for a peer that dials us, before its connection has carried one (or after it
    # broke), waits this long for it; then we dial the peer ourselves (``Links.dials``).
    route_wait_ms: int = 250
    recv_batch: int = 256
    # One drain of one socket stops after this much work and lets the loop run the others:
    # a peer whose frames are each costly (chat batches of 256 lines) cannot hold a ping up
    # behind a whole batch of them.
    recv_budget_s: float = 0.004
    max_handshake_failures: int = 5


def endpoint(host: str, port: int | str) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def set_heartbeats(sock: zmq.Socket[Any], tuning: ZmqTuning, on: bool) -> None:
    """ZMTP heartbeats for the connections ``sock`` makes from now on (libzmq copies a
    socket's options into each connection as it is made): ``tuning``'s, or none."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, tuning.heartbeat_ivl_ms if on else 0)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, tuning.heartbeat_timeout_ms if on else 0)
    sock.setsockopt(zmq.HEARTBEAT_TTL, tuning.heartbeat_ttl_ms if on else 0)


class Sockets:
    """Makes every CURVE socket of one transport with the same settings, and keeps track of
    them so that closing the transport closes all of them."""

    def __init__(
        self, ctx: zmq.asyncio.Context, identity: Identity, limits: Limits, tuning: ZmqTuning
    ) -> None:
        self.ctx = ctx
        self._identity = identity
        self._limits = limits
        self._tuning = tuning
        self._open: set[zmq.Socket[Any]] = set()

    def make(self, kind: int) -> zmq.Socket[Any]:
        """A socket with our CURVE keys, frame limit, high-water marks and keepalive."""
        sock: zmq.Socket[Any] = zmq.Socket(self.ctx, kind)
        self._open.add(sock)
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
        ):
            sock.setsockopt(option, value)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self._identity.curve_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self._identity.curve_secret)
        return sock

    def server(self, kind: int, ipv6: bool, domain: bytes = ZAP_DOMAIN) -> zmq.Socket[Any]:
        """A CURVE server socket that our ZAP handler must admit every client of (in
        ``domain``: the PUB has its own, so its admissions can be told apart)."""
        sock = self.make(kind)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.ZAP_DOMAIN, domain)
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler => refuse, never admit
        if ipv6:
            sock.setsockopt(zmq.IPV6, 1)
        return sock

    def client(self, kind: int, server_key: bytes | None, ipv6: bool,
               heartbeats: bool = True) -> zmq.Socket[Any]:
        """A CURVE client socket pinned to ``server_key`` (None: the caller sets one before
        each connect), reconnecting as ``ZmqTuning`` says."""
        sock = self.make(kind)
        tuning = self._tuning
        # The server key must be set before connect: it applies only to later connects.
        if server_key is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        sock.setsockopt(zmq.RECONNECT_IVL, tuning.reconnect_ivl_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, tuning.reconnect_ivl_max_ms)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, tuning.connect_timeout_ms)
        # Only the dialling side pings: its TTL tells our peer's PUB or ROUTER to drop the
        # connection when we fall silent, so one PING per interval watches each connection.
        if heartbeats:
            set_heartbeats(sock, tuning, True)
        if ipv6:
            sock.setsockopt(zmq.IPV6, 1)
        return sock

    def closed(self, sock: zmq.Socket[Any]) -> None:
        """``sock`` was closed by its owner."""
        self._open.discard(sock)

    def close_all(self) -> None:
        for sock in self._open:
            if not sock.closed:
                sock.close(linger=0)
        self._open.clear()


def bind_all(sock: zmq.Socket[Any], addresses: list[str]) -> int:
    """Bind every address; the first picks a free port, the others reuse its number."""
    port = 0
    for address in addresses:
        sock.bind(endpoint(address, port or "*"))
        if not port:
            last = sock.get_string(zmq.LAST_ENDPOINT)
            port = int(last.rsplit(":", 1)[1])
    return port
