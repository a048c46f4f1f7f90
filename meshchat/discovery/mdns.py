"""Discovery over mDNS/DNS-SD (python-zeroconf, ``AsyncZeroconf`` on the node's loop).

Services (TXT values are UTF-8 text; ids are lowercase hex)::

    node  "<name> [<fingerprint>]._meshchat._tcp.local."      SRV port: router port
          v protocol version   id peer id   n name   p pub port   c card port   s sequence
    room  "<room name> [<tag>]._meshchat-room._tcp.local."    SRV port: host's router port
          v  r room id   n room name   h host peer id   hn host name   m members
          l locked (0/1)   pw has password (0/1)   t term   p host pub port
          c host card port   s sequence

Addresses travel as A records of the host name ``mc-<fingerprint>.local.``.

Speed: an instance name holds the announcer's fingerprint (a room's tag hashes room id and
host id), so two announcers never claim one name. Registration therefore skips the conflict
probe (``cooperating_responders=True``, about 1.2 s saved) and the first announcement goes out
at once; ``start`` also sends one QU query for both types instead of waiting for the
browser's randomised first query (20-120 ms), so the nodes already on the network answer
right away. Browser events are resolved from the cache, which the announcement has just
filled. The ``s`` sequence makes every TXT update a new record, so each one fires an update.

Bad records from the network are dropped and counted in ``dropped``; nothing here raises
into the node, and nothing the node's handlers raise reaches zeroconf. Anyone on the LAN can
announce any number of names: the names tracked (``Limits.max_mdns_names`` of each type) and
the lookups in flight (``max_mdns_resolving``) are bounded, the rest dropped and counted.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import itertools
import logging
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Generic, TypeVar

# DNSOutgoing and DNSQuestion are not in zeroconf's __all__ but stay importable from the top
# level "for backwards compat"; they build the one query ``start`` sends itself.
from zeroconf import (  # type: ignore[attr-defined]
    DNSOutgoing,
    DNSQuestion,
    InterfaceChoice,
    IPVersion,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ..config import NODE_SERVICE_TYPE, PROTOCOL_VERSION, ROOM_SERVICE_TYPE, Limits
from ..identity import fingerprint_of, is_valid_peer_id
from ..protocol.messages import PeerCard
from .base import DiscoveryHandlers, RoomAnnouncement
from .interfaces import resolve_interfaces

log = logging.getLogger(__name__)

# RFC 1035 values, for the one query ``start`` sends itself.
_DNS_FLAGS_QUERY = 0x0000
_DNS_TYPE_PTR = 12
_DNS_CLASS_IN = 1

_MAX_LABEL_BYTES = 63
_MAX_ROOM_ID_BYTES = 64
_MAX_COUNT = 1_000_000
_MAX_TERM = 2**63 - 1

_K = TypeVar("_K")
_V = TypeVar("_V")


class IncompatibleVersion(ValueError):
    """A record from a peer that speaks another protocol version."""


# ---------------------------------------------------------------- records (pure)


def _label(text: str, suffix: str) -> str:
    """``text`` made safe for an instance label and cut so that text + suffix fit 63 bytes."""
    cleaned = "".join(
        "-" if ch in ".\\" or unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text
    ).strip() or "meshchat"
    budget = _MAX_LABEL_BYTES - len(suffix.encode())
    cut = cleaned.encode()[:budget].decode(errors="ignore").rstrip()
    return f"{cut}{suffix}"


def host_name(peer_id: bytes) -> str:
    """The mDNS host name (SRV target, A records) of a peer."""
    return f"mc-{fingerprint_of(peer_id)}.local."


def node_instance_name(card: PeerCard) -> str:
    return f"{_label(card.name, f' [{fingerprint_of(card.peer_id)}]')}.{NODE_SERVICE_TYPE}"


def room_tag(room_id: bytes, host_id: bytes) -> str:
    digest = hashlib.blake2b(host_id + room_id, digest_size=10, person=b"meshchat-room").digest()
    return base64.b32encode(digest).decode("ascii").lower()


def room_instance_name(room: RoomAnnouncement) -> str:
    tag = room_tag(room.room_id, room.host.peer_id)
    return f"{_label(room.name, f' [{tag}]')}.{ROOM_SERVICE_TYPE}"


def node_txt(card: PeerCard, seq: int) -> dict[str, str]:
    return {
        "v": str(PROTOCOL_VERSION),
        "id": card.peer_id.hex(),
        "n": card.name,
        "p": str(card.pub_port),
        "c": str(card.card_port),
        "s": str(seq),
    }


def room_txt(room: RoomAnnouncement, seq: int) -> dict[str, str]:
    return {
        "v": str(PROTOCOL_VERSION),
        "r": room.room_id.hex(),
        "n": room.name,
        "h": room.host.peer_id.hex(),
        "hn": room.host.name,
        "m": str(room.members),
        "l": "1" if room.locked else "0",
        "pw": "1" if room.has_password else "0",
        "t": str(room.term),
        "p": str(room.host.pub_port),
        "c": str(room.host.card_port),
        "s": str(seq),
    }


TxtProperties = Mapping[bytes, bytes | None]


def parse_node(
    props: TxtProperties, port: int | None, addresses: list[str], limits: Limits
) -> PeerCard:
    """The card a node service announces; ``ValueError`` if the record is malformed."""
    _check_version(props)
    peer_id = _peer_id(props, b"id")
    return PeerCard(
        peer_id=peer_id,
        name=_name(props, b"n", limits.max_name_chars),
        addresses=_addresses(addresses),
        router_port=_port(port),
        pub_port=_port(_int(props, b"p", 65535)),
        card_port=_int(props, b"c", 65535),
    )


def parse_room(
    props: TxtProperties, port: int | None, addresses: list[str], limits: Limits
) -> RoomAnnouncement:
    """The room a room service announces; ``ValueError`` if the record is malformed."""
    _check_version(props)
    room_id = bytes.fromhex(_text(props, b"r", 2 * _MAX_ROOM_ID_BYTES))
    if not room_id:
        raise ValueError("empty room id")
    host = PeerCard(
        peer_id=_peer_id(props, b"h"),
        name=_name(props, b"hn", limits.max_name_chars),
        addresses=_addresses(addresses),
        router_port=_port(port),
        pub_port=_port(_int(props, b"p", 65535)),
        card_port=_int(props, b"c", 65535),
    )
    return RoomAnnouncement(
        room_id=room_id,
        name=_name(props, b"n", limits.max_room_name_chars),
        host=host,
        members=_int(props, b"m", _MAX_COUNT),
        locked=_flag(props, b"l"),
        has_password=_flag(props, b"pw"),
        term=_int(props, b"t", _MAX_TERM),
    )


def _check_version(props: TxtProperties) -> None:
    version = _text(props, b"v", 10)
    if version != str(PROTOCOL_VERSION):
        raise IncompatibleVersion(f"protocol version {version!r}")


def _text(props: TxtProperties, key: bytes, max_chars: int) -> str:
    raw = props.get(key)
    if raw is None:
        raise ValueError(f"no {key.decode()}")
    text = raw.decode("utf-8")
    if len(text) > max_chars:
        raise ValueError(f"{key.decode()} too long")
    return text


def _name(props: TxtProperties, key: bytes, max_chars: int) -> str:
    name = _text(props, key, max_chars)
    if not name.strip():
        raise ValueError(f"empty {key.decode()}")
    return name


def _int(props: TxtProperties, key: bytes, maximum: int) -> int:
    text = _text(props, key, 20)
    if not (text.isascii() and text.isdigit()) or int(text) > maximum:
        raise ValueError(f"bad {key.decode()}")
    return int(text)


def _flag(props: TxtProperties, key: bytes) -> bool:
    text = _text(props, key, 1)
    if text not in ("0", "1"):
        raise ValueError(f"bad {key.decode()}")
    return text == "1"


def _peer_id(props: TxtProperties, key: bytes) -> bytes:
    peer_id = bytes.fromhex(_text(props, key, 64))
    if not is_valid_peer_id(peer_id):
        raise ValueError(f"bad {key.decode()}")
    return peer_id


def _port(port: int | None) -> int:
    if port is None or not 0 < port <= 65535:
        raise ValueError(f"bad port {port}")
    return port


def _addresses(addresses: list[str]) -> tuple[str, ...]:
    if not addresses:
        raise ValueError("no address")
    return tuple(addresses)


# ---------------------------------------------------------------- what we have reported


class _Seen(Generic[_K, _V]):
    """What was reported to the node, by instance name, and the names each key is known by.

    A key (a peer, a room of a host) is gone only when its last name is: a rename registers
    the new name before the old one says goodbye.
    """

    def __init__(self, max_names: int) -> None:
        self.max_names = max_names
        self._key_of: dict[str, _K] = {}
        self._last: dict[str, _V] = {}
        self._names: dict[_K, set[str]] = {}

    def full(self, name: str) -> bool:
        """Whether ``name`` is new and no more names fit."""
        return name not in self._key_of and len(self._key_of) >= self.max_names

    def see(self, name: str, key: _K, value: _V) -> tuple[bool, _K | None]:
        """Record ``value`` under ``name``: (is it news?, a key left without any name)."""
        orphan = None
        old_key = self._key_of.get(name)
        if old_key is not None and old_key != key:
            orphan = self.forget(name)
        self._key_of[name] = key
        self._names.setdefault(key, set()).add(name)
        news = self._last.get(name) != value
        self._last[name] = value
        return news, orphan

    def forget(self, name: str) -> _K | None:
        """Forget ``name``; its key if that was the key's last name."""
        key = self._key_of.pop(name, None)
        if key is None:
            return None
        self._last.pop(name, None)
        names = self._names[key]
        names.discard(name)
        if names:
            return None
        del self._names[key]
        return key


# ---------------------------------------------------------------- the discovery


class MdnsDiscovery:
    """A ``Discovery`` over mDNS, bound to ``addresses`` (IPv4; default: every interface)."""

    def __init__(
        self,
        addresses: list[str] | None = None,
        *,
        limits: Limits | None = None,
        resolve_timeout_s: float = 3.0,
        close_timeout_s: float = 2.0,
        announce: bool = True,
    ) -> None:
        self._announce = announce  # False: browse only (``meshchat rooms``)
        self._addresses = list(addresses or [])
        self._limits = limits or Limits()
        self._resolve_timeout_s = resolve_timeout_s
        self._close_timeout_s = close_timeout_s
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._handlers: DiscoveryHandlers | None = None
        self._me: PeerCard | None = None
        self._node: AsyncServiceInfo | None = None
        self._rooms: dict[bytes, tuple[RoomAnnouncement, AsyncServiceInfo]] = {}
        self._seq = itertools.count()
        self._lock = asyncio.Lock()
        self._sending: dict[str, asyncio.Future[Any]] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}
        names = self._limits.max_mdns_names
        self._peers: _Seen[bytes, PeerCard] = _Seen(names)
        self._seen_rooms: _Seen[tuple[bytes, bytes], RoomAnnouncement] = _Seen(names)
        self._closed = False
        self.dropped: collections.Counter[str] = collections.Counter()

    # -- the Discovery protocol

    async def start(self, me: PeerCard, handlers: DiscoveryHandlers) -> None:
        if self._aiozc is not None or self._closed:
            raise RuntimeError("a discovery is started once")
        self._me, self._handlers = me, handlers
        self._aiozc = AsyncZeroconf(
            interfaces=list(self._addresses) if self._addresses else InterfaceChoice.All,
            ip_version=IPVersion.V4Only,
        )
        try:
            self._browser = AsyncServiceBrowser(
                self._aiozc.zeroconf,
                [NODE_SERVICE_TYPE, ROOM_SERVICE_TYPE],
                handlers=[self._on_service_state_change],
            )
            if self._announce:
                async with self._lock:
                    self._node = self._node_info(me)
                    await self._register(self._node)
            self._ask_now()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._resolving.values():
            task.cancel()
        for future in self._sending.values():
            future.cancel()
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        try:
            async with asyncio.timeout(self._close_timeout_s):
                if self._browser is not None:
                    await self._browser.async_cancel()
                # Goodbye packets (TTL 0) for the node and every room, then the sockets.
                await aiozc.async_unregister_all_services()
                await aiozc.async_close()
        except Exception as exc:  # shutting down: report, never hang or raise
            log.warning("mDNS discovery did not close cleanly: %s", exc)
        self._resolving.clear()
        self._sending.clear()

    async def announce_room(self, room: RoomAnnouncement) -> None:
        async with self._lock:
            if not self._running():
                return
            current = self._rooms.get(room.room_id)
            if current is not None and current[0] == room:
                return
            info = self._room_info(room)
            self._rooms[room.room_id] = (room, info)
            await self._replace(current[1] if current else None, info)

    async def withdraw_room(self, room_id: bytes) -> None:
        async with self._lock:
            current = self._rooms.pop(room_id, None)
            if current is not None and self._running():
                await self._unregister(current[1])

    async def update_node(self, me: PeerCard) -> None:
        async with self._lock:
            if not self._running() or me == self._me:
                return
            self._me = me
            old, self._node = self._node, self._node_info(me)
            await self._replace(old, self._node)
            for room_id, (room, info) in list(self._rooms.items()):
                moved = replace(room, host=me)
                self._rooms[room_id] = (moved, self._room_info(moved))
                await self._replace(info, self._rooms[room_id][1])

    # -- our own services

    def _running(self) -> bool:
        return self._aiozc is not None and not self._closed

    def _announced_addresses(self, card: PeerCard) -> list[str]:
        addresses = [a for a in card.addresses if _is_ipv4(a)]
        return addresses or self._addresses or resolve_interfaces(None)

    def _node_info(self, me: PeerCard) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            NODE_SERVICE_TYPE,
            node_instance_name(me),
            port=me.router_port,
            properties=node_txt(me, next(self._seq)),
            server=host_name(me.peer_id),
            parsed_addresses=self._announced_addresses(me),
        )

    def _room_info(self, room: RoomAnnouncement) -> AsyncServiceInfo:
        assert self._me is not None
        return AsyncServiceInfo(
            ROOM_SERVICE_TYPE,
            room_instance_name(room),
            port=room.host.router_port,
            properties=room_txt(room, next(self._seq)),
            server=host_name(self._me.peer_id),
            parsed_addresses=self._announced_addresses(self._me),
        )

    async def _replace(self, old: AsyncServiceInfo | None, new: AsyncServiceInfo) -> None:
        """Announce ``new`` in place of ``old``: an update, or a new name before a goodbye."""
        if old is not None and old.key == new.key:
            assert self._aiozc is not None
            self._cancel_sending(new.key)
            self._sending[new.key] = asyncio.ensure_future(
                await self._aiozc.async_update_service(new)
            )
            return
        await self._register(new)
        if old is not None:
            await self._unregister(old)

    async def _register(self, info: AsyncServiceInfo) -> None:
        assert self._aiozc is not None
        # The name holds a fingerprint, so it cannot clash: skip the ~1.2 s probe.
        announcing = await self._aiozc.async_register_service(info, cooperating_responders=True)
        self._sending[info.key] = asyncio.ensure_future(announcing)

    async def _unregister(self, info: AsyncServiceInfo) -> None:
        assert self._aiozc is not None
        # A pending re-announcement would resurrect the service after its goodbye.
        self._cancel_sending(info.key)
        self._sending[info.key] = asyncio.ensure_future(
            await self._aiozc.async_unregister_service(info)
        )

    def _cancel_sending(self, key: str) -> None:
        future = self._sending.pop(key, None)
        if future is not None:
            future.cancel()

    def _ask_now(self) -> None:
        """One QU query for both types now, so running nodes answer without delay."""
        assert self._aiozc is not None
        out = DNSOutgoing(_DNS_FLAGS_QUERY, True)
        for service_type in (NODE_SERVICE_TYPE, ROOM_SERVICE_TYPE):
            question = DNSQuestion(service_type, _DNS_TYPE_PTR, _DNS_CLASS_IN)
            question.unicast = True
            out.add_question(question)
        self._aiozc.zeroconf.async_send(out)

    # -- what others announce

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if not self._running():
            return
        try:
            if state_change is ServiceStateChange.Removed:
                self._service_removed(service_type, name)
            else:
                self._service_seen(zeroconf, service_type, name)
        except Exception:
            log.exception("mDNS: cannot handle %s of %s", state_change, name)

    def _service_seen(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if info.load_from_cache(zeroconf):
            self._service_resolved(service_type, name, info)
        elif name not in self._resolving:
            if len(self._resolving) >= self._limits.max_mdns_resolving:
                self.dropped["resolving_busy"] += 1  # it is asked for again when announced
                return
            task = asyncio.create_task(self._resolve(zeroconf, service_type, name, info))
            self._resolving[name] = task

    async def _resolve(
        self, zeroconf: Zeroconf, service_type: str, name: str, info: AsyncServiceInfo
    ) -> None:
        """Ask for the records the announcement lacked (rare: they usually come with it)."""
        try:
            resolved = await info.async_request(zeroconf, self._resolve_timeout_s * 1000)
        except Exception as exc:  # zeroconf closing under us, say
            resolved = False
            log.debug("mDNS: resolving %s failed: %s", name, exc)
        finally:
            if self._resolving.get(name) is asyncio.current_task():
                del self._resolving[name]
        if not resolved:
            self.dropped["unresolved"] += 1
            log.debug("mDNS: %s did not resolve", name)
        elif self._running():
            self._service_resolved(service_type, name, info)

    def _service_resolved(self, service_type: str, name: str, info: AsyncServiceInfo) -> None:
        assert self._me is not None and self._handlers is not None
        addresses = info.parsed_addresses(IPVersion.V4Only)
        try:
            if service_type == NODE_SERVICE_TYPE:
                card = parse_node(info.properties, info.port, addresses, self._limits)
                if card.peer_id != self._me.peer_id:
                    self._peer_seen(name, card)
            elif service_type == ROOM_SERVICE_TYPE:
                room = parse_room(info.properties, info.port, addresses, self._limits)
                if room.host.peer_id != self._me.peer_id:
                    self._room_seen(name, room)
        except IncompatibleVersion as exc:
            self.dropped["version"] += 1
            log.debug("mDNS: ignoring %s: %s", name, exc)
        except ValueError as exc:
            self.dropped["malformed"] += 1
            log.debug("mDNS: malformed record %s: %s", name, exc)

    def _peer_seen(self, name: str, card: PeerCard) -> None:
        assert self._handlers is not None
        if self._peers.full(name):
            self.dropped["too_many_names"] += 1
            return
        news, gone = self._peers.see(name, card.peer_id, card)
        if gone is not None:
            _call(self._handlers.on_peer_removed, gone)
        if news:
            _call(self._handlers.on_peer, card)

    def _room_seen(self, name: str, room: RoomAnnouncement) -> None:
        assert self._handlers is not None
        if self._seen_rooms.full(name):
            self.dropped["too_many_names"] += 1
            return
        news, gone = self._seen_rooms.see(name, (room.room_id, room.host.peer_id), room)
        if gone is not None:
            _call(self._handlers.on_room_removed, *gone)
        if news:
            _call(self._handlers.on_room, room)

    def _service_removed(self, service_type: str, name: str) -> None:
        assert self._handlers is not None
        task = self._resolving.pop(name, None)
        if task is not None:
            task.cancel()
        if service_type == NODE_SERVICE_TYPE:
            peer_id = self._peers.forget(name)
            if peer_id is not None:
                _call(self._handlers.on_peer_removed, peer_id)
        elif service_type == ROOM_SERVICE_TYPE:
            room_key = self._seen_rooms.forget(name)
            if room_key is not None:
                _call(self._handlers.on_room_removed, *room_key)


def _call(handler: Callable[..., None], *args: Any) -> None:
    try:
        handler(*args)
    except Exception:
        log.exception("discovery handler %s failed", getattr(handler, "__name__", handler))


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isascii() and p.isdigit() and int(p) < 256 for p in parts)
