"""Discovery without multicast: ``--peer HOST:PORT`` and the card server that answers it.

Every node runs a ``CardServer`` on its card port. A client that connects receives one
self-signed card frame and the server closes the connection; the frame's format and its
strict decoder are pure and live in ``meshchat.protocol.card``. One known peer is enough: the
node learns the rest of the mesh from the peers that peer introduces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..errors import PeerNotFound, ProtocolError, Timeout
from ..identity import Identity
from ..protocol.card import (
    CARD_SIGNATURE_CONTEXT,
    LENGTH_BYTES,
    MAX_CARD_BYTES,
    body_length,
    decode_card,
    encode_card,
)
from ..protocol.messages import PeerCard
from .base import Discovery, DiscoveryHandlers, RoomAnnouncement

__all__ = [
    "CARD_SIGNATURE_CONTEXT",
    "MAX_CARD_BYTES",
    "CardServer",
    "CombinedDiscovery",
    "StaticDiscovery",
    "decode_card",
    "encode_card",
    "fetch_card",
    "fetch_card_from",
    "parse_peer_address",
]

log = logging.getLogger(__name__)

_WILDCARDS = frozenset({"*", "", "0.0.0.0"})


# ---------------------------------------------------------------- client


async def fetch_card(
    host: str, port: int, timeout_s: float = 2.0, *, max_bytes: int = MAX_CARD_BYTES
) -> PeerCard:
    """The self-signed card served at ``host:port``.

    Raises ``PeerNotFound`` when nothing usable answers there and ``Timeout`` when the card
    does not arrive within ``timeout_s``.
    """
    card, _ = await fetch_card_from(host, port, timeout_s, max_bytes=max_bytes)
    return card


async def fetch_card_from(
    host: str, port: int, timeout_s: float = 2.0, *, max_bytes: int = MAX_CARD_BYTES
) -> tuple[PeerCard, str]:
    """Like ``fetch_card``, plus the IP address the card actually came from."""
    where = f"{host}:{port}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                length = body_length(await reader.readexactly(LENGTH_BYTES), max_bytes)
            except ProtocolError as exc:
                raise PeerNotFound(f"{where} is not a meshchat card server: {exc}") from None
            body = await reader.readexactly(length)
            peer = writer.get_extra_info("peername")
    except TimeoutError:
        raise Timeout(f"no card from {where} within {timeout_s:g} s") from None
    except asyncio.IncompleteReadError:
        raise PeerNotFound(f"{where} closed the connection before sending a card") from None
    except OSError as exc:
        raise PeerNotFound(f"cannot reach {where}: {exc.strerror or exc}") from None
    finally:
        if writer is not None:
            writer.transport.abort()
    try:
        card = decode_card(body)
    except ProtocolError as exc:
        raise PeerNotFound(f"{where} sent an invalid card: {exc}") from None
    reached = peer[0] if isinstance(peer, tuple) and peer else host
    return card, str(reached)


# ---------------------------------------------------------------- server


class CardServer:
    """Serves this node's signed card to whoever connects (see the module docstring)."""

    def __init__(
        self,
        identity: Identity,
        card_provider: Callable[[], PeerCard],
        *,
        max_connections: int = 64,
        send_timeout_s: float = 2.0,
    ) -> None:
        self._identity = identity
        self._card_provider = card_provider
        self._max_connections = max_connections
        self._send_timeout_s = send_timeout_s
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._cached: tuple[PeerCard, bytes] | None = None
        self.port = 0
        self.served = 0
        self.refused = 0

    async def start(self, host_addresses: Sequence[str], port: int = 0) -> int:
        """Listen on each address (``"*"`` for all) on one port; the port (chosen if 0)."""
        if self._servers:
            raise RuntimeError("the card server is already started")
        hosts = list(dict.fromkeys(host_addresses)) or ["*"]
        if any(host in _WILDCARDS for host in hosts):
            hosts = ["0.0.0.0"]
        try:
            for host in hosts:
                server = await asyncio.start_server(self._serve, host, port)
                self._servers.append(server)
                port = server.sockets[0].getsockname()[1]
        except BaseException:
            await self.close()
            raise
        self.port = port
        return port

    async def close(self) -> None:
        """Stop listening and drop connections still being served. Idempotent."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    def _frame(self) -> bytes:
        card = self._card_provider()
        if self._cached is None or self._cached[0] != card:
            self._cached = (card, encode_card(self._identity, card))
        return self._cached[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The client never needs to speak: whatever it sends is left unread, and every
        # connection is closed within send_timeout_s, so a flood costs at most
        # max_connections sockets for that long.
        if len(self._writers) >= self._max_connections:
            self.refused += 1
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            async with asyncio.timeout(self._send_timeout_s):
                writer.write(self._frame())
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            self.served += 1
        except (OSError, TimeoutError):
            pass
        except Exception:
            log.exception("card server: cannot serve the card")
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


# ---------------------------------------------------------------- static discovery


def parse_peer_address(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[V6]:PORT``) as (host, port); ``ValueError`` with a clear message."""
    text = spec.strip()
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"--peer wants HOST:PORT, got {spec!r}")
    port = int(port_text)
    if not 0 < port <= 65535:
        raise ValueError(f"--peer {spec!r}: port must be 1-65535")
    return host, port


class StaticDiscovery:
    """Fetches the card of each ``HOST:PORT`` peer and reports it; retries until closed.

    A peer that cannot be reached is retried with exponential backoff; one that answered is
    fetched again every ``refresh_s`` so a restart on new ports is noticed. Rooms are not
    announced here: peers list the rooms they host in their heartbeats.
    """

    def __init__(
        self,
        peers: Sequence[str],
        identity: Identity,
        *,
        timeout_s: float = 2.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        refresh_s: float = 30.0,
    ) -> None:
        self._targets = list(dict.fromkeys(parse_peer_address(spec) for spec in peers))
        self._identity = identity
        self._timeout_s = timeout_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._refresh_s = refresh_s
        self._handlers: DiscoveryHandlers | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.failures = 0

    async def start(self, me: PeerCard, handlers: DiscoveryHandlers) -> None:
        if self._handlers is not None or self._closed:
            raise RuntimeError("a discovery is started once")
        self._handlers = handlers
        self._tasks = [
            asyncio.create_task(self._follow(host, port), name=f"meshchat-peer-{host}:{port}")
            for host, port in self._targets
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def announce_room(self, room: RoomAnnouncement) -> None:
        return None

    async def withdraw_room(self, room_id: bytes) -> None:
        return None

    async def update_node(self, me: PeerCard) -> None:
        return None

    async def _follow(self, host: str, port: int) -> None:
        delay = self._retry_initial_s
        warned = False
        while not self._closed:
            try:
                card, reached = await fetch_card_from(host, port, self._timeout_s)
            except (PeerNotFound, Timeout) as exc:
                self.failures += 1
                level = logging.DEBUG if warned else logging.WARNING
                log.log(level, "static peer: %s; retrying in %.1f s", exc, delay)
                warned = True
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._retry_max_s)
                continue
            if card.peer_id == self._identity.peer_id:
                log.info("static peer %s:%d is this node; not following it", host, port)
                return
            delay, warned = self._retry_initial_s, False
            card = replace(card, addresses=_reached_first(reached, card.addresses))
            # Reported on every fetch, not only when it changed: the node takes a card as a
            # candidate it may drop (no answer in time), and a peer it knows ignores it.
            if self._handlers is not None:
                try:
                    self._handlers.on_peer(card)
                except Exception:
                    log.exception("discovery handler failed")
            await asyncio.sleep(self._refresh_s)


def _reached_first(reached: str, addresses: tuple[str, ...]) -> tuple[str, ...]:
    """The address we reached the peer at is known to work: put it first."""
    return (reached, *(a for a in addresses if a != reached))


# ---------------------------------------------------------------- several at once


class CombinedDiscovery:
    """Fans every call out to several discoveries (mDNS and static peers, say)."""

    def __init__(self, *parts: Discovery) -> None:
        self._parts = parts
        self._started: list[Discovery] = []

    async def start(self, me: PeerCard, handlers: DiscoveryHandlers) -> None:
        """Start every part; fails only if every part fails (the others keep working)."""
        results = await asyncio.gather(
            *(part.start(me, handlers) for part in self._parts), return_exceptions=True
        )
        errors: list[BaseException] = []
        for part, result in zip(self._parts, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(result)
                log.warning("discovery %s did not start: %s", type(part).__name__, result)
            else:
                self._started.append(part)
        if errors and not self._started:
            raise errors[0]

    async def close(self) -> None:
        started, self._started = self._started, []
        await self._each(started, lambda part: part.close())

    async def announce_room(self, room: RoomAnnouncement) -> None:
        await self._each(self._started, lambda part: part.announce_room(room))

    async def withdraw_room(self, room_id: bytes) -> None:
        await self._each(self._started, lambda part: part.withdraw_room(room_id))

    async def update_node(self, me: PeerCard) -> None:
        await self._each(self._started, lambda part: part.update_node(me))

    @staticmethod
    async def _each(
        parts: Sequence[Discovery], call: Callable[[Discovery], Any]
    ) -> None:
        results = await asyncio.gather(*(call(part) for part in parts), return_exceptions=True)
        for part, result in zip(parts, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("discovery %s failed: %s", type(part).__name__, result)
