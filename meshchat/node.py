"""The running node: one asyncio loop that drives transport, discovery, storage and the pure
room rules, and the public API that the CLI, the TUI and bots use.

Everything the network sends passes ``_on_incoming``: decoded strictly, checked against the
peer the transport authenticated, dispatched by type; anything bad is dropped and counted in
``Node.stats`` and never raises out of the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from . import room as rules
from .authority import Gate, Role
from .clock import Clock, as_clock
from .commands import validate_name
from .config import Limits, Timings
from .discovery.base import Discovery, DiscoveryHandlers, RoomAnnouncement
from .errors import (
    AmbiguousName,
    JoinRefused,
    MeshchatError,
    NotHost,
    NotInRoom,
    PeerNotFound,
    ProtocolError,
    RenameTooSoon,
    RoomNotFound,
    Timeout,
)
from .events import (
    BroadcastReceived,
    Event,
    HostChanged,
    MemberRemoved,
    Message,
    Notice,
    PeerDiscovered,
    PeerGone,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    Renamed,
    RoomClosed,
    RoomInfo,
    RoomRenamed,
)
from .history import SeqTracker
from .identity import Identity, curve_public_of, fingerprint_of, is_valid_peer_id, same_key
from .liveness import Liveness, LivenessTable
from .peertable import DISCOVERY, PeerEffect, PeerTable, Probe, Unprobe
from .protocol.codec import Codec, Envelope, UnknownType
from .protocol.messages import (
    BROADCAST_TYPES,
    DIRECT_TYPES,
    PRESENCE_TYPES,
    ROOM_INNER_TYPES,
    ROOM_OUTER_TYPES,
    Broadcast,
    Bye,
    Chat,
    ChatBatch,
    ChatLine,
    CommandResult,
    Heads,
    Heartbeat,
    Hello,
    HistoryReply,
    HistoryRequest,
    HostCommand,
    HostedRoom,
    JoinAccept,
    JoinChallenge,
    JoinRefusal,
    JoinRequest,
    KeyUpdate,
    Leave,
    PeerCard,
    Peers,
    Ping,
    Pong,
    Private,
    RoomState,
    Sealed,
    SeqRange,
    StateAnnounce,
    StatePush,
    StateRequest,
    WireMessage,
)
from .storage.log import LogRow
from .transport.base import Incoming, Transport

__all__ = ["BanInfo", "Node", "PeerDetails", "Room", "RoomDetails"]

log = logging.getLogger("meshchat.node")

TOPIC_PRESENCE = b"P"
TOPIC_BROADCAST = b"B"
TOPIC_ROOM = b"R"
EVENT_QUEUE_SIZE = 262144  # per events() stream; beyond it events are dropped and counted
SEQ_BLOCK = 1024
BATCH_LINES = 256  # at most this many lines said in one loop turn share a frame
BATCH_TEXT_CHARS = 48 * 1024
BATCH_REF = b"@"  # log rows after a batch's first hold "@" + first seq instead of the blob
HISTORY_REPLY_BYTES = 128 * 1024


def room_topic(room_id: bytes) -> bytes:
    return TOPIC_ROOM + room_id


@dataclass(frozen=True, slots=True)
class BanInfo:
    name: str
    fingerprint: str
    reason: str
    peer_id: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class RoomDetails:
    name: str
    host: PeerInfo
    term: int
    version: int
    created_at: float
    members: tuple[PeerInfo, ...]
    joined_at: tuple[float, ...]
    locked: bool
    has_password: bool
    room_id: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class PeerDetails:
    peer: PeerInfo
    addresses: tuple[str, ...]
    router_port: int
    pub_port: int
    card_port: int
    former_names: tuple[str, ...]
    first_seen: float | None
    started_at: float | None
    liveness: str


@dataclass(slots=True)
class _Peer:
    card: PeerCard
    color: str = ""
    started_at: float | None = None
    connected_to: tuple[str, int, int] | None = None
    hosted: tuple[HostedRoom, ...] = ()
    info: PeerInfo | None = None


@dataclass(slots=True)
class _Listing:
    room_id: bytes
    name: str
    host: PeerCard
    members: int
    locked: bool
    has_password: bool
    term: int
    source: str  # 'mdns' or 'heartbeat' or 'local'


@dataclass(slots=True)
class _Outbox:
    first: int
    lines: list[ChatLine]
    chars: int = 0


@dataclass(slots=True)
class _JoinedRoom:
    core: rules.RoomCore
    keys: dict[int, bytes]
    tracker: SeqTracker
    announce: bool = True
    handle: Room | None = None
    ever_members: set[bytes] = field(default_factory=set)
    merge_allow: set[bytes] = field(default_factory=set)
    pending_sealed: dict[int, list[tuple[bytes, Envelope]]] = field(default_factory=dict)
    host_ping_nonce: int | None = None
    host_ping_at: float = 0.0
    host_suspect: bool = False
    history_asked: dict[tuple[bytes, int], float] = field(default_factory=dict)
    history_from: dict[bytes, float] = field(default_factory=dict)  # peer -> when we asked
    state_asked_at: float = 0.0
    state_from: dict[bytes, float] = field(default_factory=dict)  # peer -> when we asked
    removed: set[bytes] = field(default_factory=set)  # kicked or banned: never FORMER
    challenges: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)
    attempts: dict[bytes, deque[float]] = field(default_factory=dict)
    merging: bool = False
    dropped_silent: set[bytes] = field(default_factory=set)  # removed as vanished: may rejoin
    told_to_rejoin: dict[bytes, float] = field(default_factory=dict)
    outbox: _Outbox | None = None
    own_seq: int = 0  # the last number this node gave one of its messages here
    reserved_seq: int = 0  # numbers up to this are reserved in the log (crash safety)

    @property
    def state(self) -> RoomState:
        return self.core.state

    @property
    def room_id(self) -> bytes:
        return self.core.state.room_id


class Room:
    """A room this node is a member of. Operations act on the room's current host."""

    def __init__(self, node: Node, room_id: bytes) -> None:
        self._node = node
        self.room_id = room_id

    def _joined(self) -> _JoinedRoom:
        jr = self._node._rooms.get(self.room_id)
        if jr is None:
            raise NotInRoom("you are not in this room any more")
        return jr

    @property
    def active(self) -> bool:
        return self.room_id in self._node._rooms

    @property
    def _state(self) -> RoomState:
        jr = self._node._rooms.get(self.room_id)
        if jr is not None:
            return jr.state
        last = self._node._last_states.get(self.room_id)
        if last is None:
            raise NotInRoom("you are not in this room any more")
        return last

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def host(self) -> PeerInfo:
        return self._node._peer_info(self._state.host)

    @property
    def is_host(self) -> bool:
        return self._state.host == self._node.peer_id

    @property
    def members(self) -> list[PeerInfo]:
        return [self._node._peer_info(m.peer_id, m.name) for m in self._state.members]

    @property
    def locked(self) -> bool:
        return self._state.locked

    @property
    def has_password(self) -> bool:
        return self._state.password is not None

    @property
    def term(self) -> int:
        return self._state.term

    @property
    def bans(self) -> list[BanInfo]:
        return [BanInfo(b.name, fingerprint_of(b.peer_id), b.reason, b.peer_id)
                for b in self._state.bans]

    def info(self) -> RoomDetails:
        s = self._state
        return RoomDetails(
            name=s.name, host=self.host, term=s.term, version=s.version,
            created_at=s.created_at, members=tuple(self.members),
            joined_at=tuple(m.joined_at for m in s.members), locked=s.locked,
            has_password=s.password is not None, room_id=s.room_id,
        )

    def history(self) -> list[Message]:
        """Every message this node holds for the room, in the canonical order."""
        return self._node._room_history(self.room_id, self._state.name)

    async def say(self, text: str) -> None:
        await self._node._say(self._joined(), text)

    async def leave(self) -> None:
        await self._node._leave(self.room_id, "left")

    async def handoff(self, name: str) -> None:
        await self._node._host_op(self._joined(), "handoff", name)

    async def kick(self, name: str, reason: str | None = None) -> None:
        await self._node._host_op(self._joined(), "kick", name, reason or "")

    async def ban(self, name: str, reason: str | None = None) -> None:
        await self._node._host_op(self._joined(), "ban", name, reason or "")

    async def unban(self, name_or_fp: str) -> None:
        await self._node._host_op(self._joined(), "unban", name_or_fp)

    async def lock(self) -> None:
        await self._node._host_op(self._joined(), "lock")

    async def unlock(self) -> None:
        await self._node._host_op(self._joined(), "unlock")

    async def close(self) -> None:
        await self._node._host_op(self._joined(), "close")

    async def rename(self, new_room_name: str) -> None:
        await self._node._host_op(self._joined(), "rename", new_room_name)

    async def set_password(self, password: str | None) -> None:
        await self._node._host_op(self._joined(), "password", password or "")

    def __repr__(self) -> str:
        return f"Room({self.name!r}, host={self.host.name!r})"


class Node:
    """A meshchat node. Use as ``async with Node(name="alice") as node: ...``."""

    def __init__(
        self,
        name: str | None = None,
        *,
        interfaces: Sequence[str] | None = None,
        data_dir: str | Path | None = None,
        timings: Timings | None = None,
        limits: Limits | None = None,
        peers: Sequence[str] | None = None,
        color: str | None = None,
        port: int = 0,
        loopback_only: bool = False,
        mdns: bool = True,
        listen_only: bool = False,
        transport: Transport | None = None,
        discovery: Discovery | None = None,
        clock: Clock | Callable[[], float] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._requested_name = name
        self._interfaces = list(interfaces) if interfaces else None
        self._data_dir_arg = Path(data_dir) if data_dir is not None else None
        self.timings = timings or Timings()
        self.limits = limits or Limits()
        self._static_peers = list(peers or [])
        self._requested_color = color
        self._card_port_wanted = port
        self._loopback_only = loopback_only
        self._use_mdns = mdns
        self._listen_only = listen_only
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._transport_arg = transport
        self._discovery_arg = discovery
        self._clock = as_clock(clock)
        self._random_bytes = random_bytes
        self.stats: Counter[str] = Counter()
        self._started = False
        self._closed = False
        self._rooms: dict[bytes, _JoinedRoom] = {}
        self._last_states: dict[bytes, RoomState] = {}
        self._peers: dict[bytes, _Peer] = {}
        self._directory: dict[tuple[bytes, bytes], _Listing] = {}
        self._futures: dict[int, asyncio.Future[WireMessage]] = {}
        self._future_peers: dict[int, bytes] = {}  # request id -> the peer it went to
        self._ping_peers: OrderedDict[int, bytes] = OrderedDict()  # nonce -> pinged peer
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._queues: list[asyncio.Queue[Event]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._seq: Counter[bytes] = Counter()
        self._request_ids = 0
        self._directory_changed = asyncio.Event()
        self._me: PeerInfo | None = None
        self._dropped: dict[bytes, float] = {}  # peer -> when its TCP connection closed
        self._peer_changed = asyncio.Event()

    # ================================================================ lifecycle

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Load the identity, bind sockets, announce this node and start its timers."""
        if self._started:
            return
        from .discovery.interfaces import resolve_interfaces
        from .storage.keystore import default_data_dir, load_or_create_identity
        from .storage.log import MessageLog
        from .storage.peers import KnownPeers
        from .storage.settings import SettingsStore

        if self._listen_only:
            # Only looking (``meshchat rooms``): a throwaway identity and data dir, nothing
            # announced, nothing written where the user's own node keeps its name and keys.
            self._scratch = tempfile.TemporaryDirectory(prefix="meshchat-listen-")
            self.data_dir = Path(self._scratch.name)
            self._requested_name = self._requested_name or "listener"
        else:
            self.data_dir = self._data_dir_arg or default_data_dir()
        self.identity: Identity = load_or_create_identity(self.data_dir)
        self.peer_id = self.identity.peer_id
        self.fingerprint = self.identity.fingerprint
        self._settings_store = SettingsStore(self.data_dir)
        self._settings = self._settings_store.load()
        name = self._requested_name or self._settings.name
        if not name:
            raise MeshchatError("no name: pass name=... (the CLI asks for one on first start)")
        name = name.strip()
        problem = validate_name(name)
        if problem is not None:
            raise MeshchatError(f"bad name {name!r}: {problem}")
        if name != self._settings.name:
            self._settings.name = name
            self._settings_store.save(self._settings)
        self.name = name
        if self._requested_color:
            self._settings.color = self._requested_color
            self._settings_store.save(self._settings)
        self.color = self._settings.color or ""
        self._known = KnownPeers(self.data_dir, max_peers=self.limits.max_known_peers,
                                 max_pinned=self.limits.max_pinned_peers)
        self._peertable = PeerTable(self.limits, self.peer_id, self.stats)
        self._peers_write: asyncio.Future[bool] | None = None
        self._peers_written_at = self._clock.monotonic()
        self._log = MessageLog(self.data_dir / "messages.sqlite")
        self._codec = Codec(self.limits)
        self._gate = Gate(self.limits)
        self._liveness = LivenessTable(self.timings)
        self.started_at = self._clock.time()
        self._started_mono = self._clock.monotonic()

        addresses = (["127.0.0.1"] if self._loopback_only
                     else resolve_interfaces(self._interfaces))
        self._addresses = tuple(addresses)
        bind = addresses if (self._interfaces or self._loopback_only) else ["*"]

        if self._transport_arg is None:
            from .transport.zmq import ZmqTransport

            self._transport: Transport = ZmqTransport(
                self.limits, on_handshake_failure=self._on_handshake_failure,
                on_disconnect=self._on_peer_disconnected,
            )
        else:
            self._transport = self._transport_arg
        ports = await self._transport.start(self.identity, bind, self._on_incoming)
        self._router_port = ports.router_port
        self._pub_port = ports.pub_port
        for topic in (TOPIC_PRESENCE, TOPIC_BROADCAST):
            self._transport.subscribe(topic)

        self._card_server = None
        card_port = 0
        if self._discovery_arg is None:
            from .discovery.static import CardServer

            self._card_server = CardServer(self.identity, self._card)
            card_port = await self._card_server.start(list(bind), self._card_port_wanted)
        self._card_port = card_port
        self._discovery = self._discovery_arg or self._make_discovery()
        await self._discovery.start(self._card(), DiscoveryHandlers(
            on_peer=self._on_discovered_peer,
            on_peer_removed=self._on_discovery_peer_removed,
            on_room=self._on_discovered_room,
            on_room_removed=self._on_discovered_room_removed,
        ))
        self._started = True
        if not self._listen_only:
            self._publish(TOPIC_PRESENCE, self._heartbeat())
        self._tasks.append(asyncio.create_task(self._ticker(), name="meshchat-ticker"))

    def _make_discovery(self) -> Discovery:
        from .discovery.static import CombinedDiscovery, StaticDiscovery

        parts: list[Discovery] = []
        if self._use_mdns and not self._loopback_only:
            from .discovery.mdns import MdnsDiscovery

            parts.append(MdnsDiscovery(list(self._addresses), announce=not self._listen_only))
        if self._static_peers:
            parts.append(StaticDiscovery(self._static_peers, self.identity))
        return CombinedDiscovery(*parts)

    async def close(self, reason: str = "quit") -> None:
        """Leave every room (a host hands off first), say goodbye, and release everything."""
        if not self._started or self._closed:
            return
        self._closed = True
        for room_id in list(self._rooms):
            with contextlib.suppress(MeshchatError):
                await self._leave(room_id, "quit")
        with contextlib.suppress(Exception):
            self._publish(TOPIC_PRESENCE, Bye(reason))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        pending: list[asyncio.Future[WireMessage] | asyncio.Future[float]] = [
            *self._futures.values(), *self._pings.values()]
        for fut in pending:
            if not fut.done():
                fut.set_exception(NotInRoom("the node is closing"))
        with contextlib.suppress(Exception):
            await self._discovery.close()
        if self._card_server is not None:
            with contextlib.suppress(Exception):
                await self._card_server.close()
        await self._transport.close(self.timings.linger_s)
        self._log.close()
        self._known.flush()
        if self._scratch is not None:
            self._scratch.cleanup()

    # ================================================================ public API

    @property
    def me(self) -> PeerInfo:
        info = self._me
        if info is None or info.name != self.name or info.color != self.color:
            info = self._me = PeerInfo(self.name, self.fingerprint, self._addresses,
                                       self.peer_id, self.color)
        return info

    @property
    def address(self) -> str:
        """'IP:PORT' that others can pass to ``--peer``."""
        return f"{self._addresses[0] if self._addresses else '127.0.0.1'}:{self._card_port}"

    def uptime(self) -> float:
        return self._clock.monotonic() - self._started_mono

    def peers(self) -> list[PeerInfo]:
        """The peers currently alive on the network, not counting this node."""
        return [self._peer_info(pid) for pid in self._peers
                if self._liveness.state(pid) is not Liveness.GONE]

    def joined_rooms(self) -> list[Room]:
        return [self._room_handle(jr) for jr in self._rooms.values()]

    def resolve(self, who: str) -> PeerInfo:
        """A peer by name (case-insensitive) or fingerprint prefix; this node included."""
        return self._peer_info(self._resolve_id(who))

    def events(self) -> AsyncIterator[Event]:
        """A stream of every event from now on (each call gets its own)."""
        queue: asyncio.Queue[Event] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._queues.append(queue)
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
        try:
            while True:
                yield await queue.get()
        finally:
            with contextlib.suppress(ValueError):
                self._queues.remove(queue)

    async def rooms(self, timeout: float = 2.0) -> list[RoomInfo]:
        """Rooms on the network, waiting until ``timeout`` after start for discovery."""
        remaining = timeout - self.uptime()
        if remaining > 0:
            await self._clock.sleep(remaining)
        return self._room_infos()

    async def host(self, name: str, password: str | None = None, *, announce: bool = True
                   ) -> Room:
        """Create a room hosted by this node."""
        name = name.strip()
        if not name or len(name) > self.limits.max_room_name_chars:
            raise MeshchatError(f"a room name is 1 to {self.limits.max_room_name_chars} characters")
        verifier = None
        if password:
            verifier = await asyncio.to_thread(rules.make_verifier, password, self._random_bytes)
        core, epoch, key = rules.RoomCore.create(
            self.identity, self._codec, name, self.name, self._clock.time(), self._random_bytes,
            verifier,
        )
        jr = _JoinedRoom(core, {epoch: key}, SeqTracker(), announce=announce)
        self._enter_room(jr)
        await self._announce_room(jr)
        return self._room_handle(jr)

    async def join(self, name: str, password: str | None = None) -> Room:
        """Join the room called ``name`` on the network."""
        return await self._join_following(await self._find_room(name), password)

    async def _join_following(self, listing: _Listing, password: str | None,
                              merge_token: bytes = b"", rejoin: bool = False) -> Room:
        """Join, following the room to its current host if it moved meanwhile."""
        for _ in range(4):
            try:
                return await self._join_listing(listing, password, merge_token, rejoin)
            except _Moved as moved:
                listing = moved.listing
        raise JoinRefused("moved", "the room's host kept changing")

    async def msg(self, to: str | Sequence[str], text: str) -> None:
        """A private message to one peer or several (names or fingerprint prefixes)."""
        text = self._check_text(text)
        targets = [to] if isinstance(to, str) else list(to)
        ids: list[bytes] = []
        for who in targets:
            for part in who.split(","):
                if part.strip():
                    pid = self._resolve_id(part.strip())
                    if pid not in ids:
                        ids.append(pid)
        if not ids:
            raise PeerNotFound("no recipient")
        message = Private(text, tuple(ids))
        for pid in ids:
            if pid == self.peer_id:
                continue
            if not self._send(pid, message):
                raise PeerNotFound(f"{self._peer_info(pid).label} cannot be reached")
            self._known.pin(pid)
        self._emit(Message(None, self.me, text, True, self._clock.time(), 0,
                           tuple(self._peer_info(p) for p in ids)))

    async def ping(self, who: str) -> float:
        """Round-trip time to a peer in seconds."""
        pid = self._resolve_id(who)
        if pid == self.peer_id:
            return 0.0
        nonce = self._next_request_id()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        self._pings[nonce] = fut
        started = self._clock.monotonic()
        try:
            if not self._send_ping(pid, nonce):
                raise PeerNotFound(f"{self._peer_info(pid).label} cannot be reached")
            try:
                async with asyncio.timeout(self.timings.request_timeout_s):
                    answered = await fut
            except TimeoutError as exc:
                raise Timeout(f"no answer from {self._peer_info(pid).label}") from exc
            return answered - started
        finally:
            self._pings.pop(nonce, None)

    async def broadcast(self, text: str) -> None:
        """A line to every node on the network."""
        text = self._check_text(text)
        self._publish(TOPIC_BROADCAST, Broadcast(text))
        self._emit(BroadcastReceived(self.me, text, self._clock.time()))

    async def rename(self, new_name: str) -> None:
        """Change this node's name; allowed once per ``Timings.rename_interval_s``."""
        new_name = new_name.strip()
        problem = validate_name(new_name)
        if problem is not None:
            raise MeshchatError(f"bad name {new_name!r}: {problem}")
        if new_name == self.name:
            return
        now = self._clock.time()
        last = self._settings.renamed_at
        if last is not None and now < last + self.timings.rename_interval_s:
            raise RenameTooSoon(last + self.timings.rename_interval_s)
        old = self.name
        self._settings.former_names.append((old, now))
        self._settings.name = new_name
        self._settings.renamed_at = now
        self._settings_store.save(self._settings)
        self.name = new_name
        self._publish(TOPIC_PRESENCE, self._heartbeat())
        with contextlib.suppress(Exception):
            await self._discovery.update_node(self._card())
        for jr in self._rooms.values():
            if jr.core.is_host:
                signed = jr.core.member_renamed(self.peer_id, new_name)
                if signed is not None:
                    self._host_publish(jr, jr.state)
        self._emit(Renamed(self.me, old, new_name))

    def set_color(self, color: str) -> None:
        self.color = color
        self._settings.color = color
        self._settings_store.save(self._settings)
        self._publish(TOPIC_PRESENCE, self._heartbeat())

    @property
    def former_names(self) -> list[str]:
        return [n for n, _ in self._settings.former_names]

    def peer_details(self, who: str) -> PeerDetails:
        pid = self._resolve_id(who)
        info = self._peer_info(pid)
        if pid == self.peer_id:
            return PeerDetails(info, self._addresses, self._router_port, self._pub_port,
                               self._card_port, tuple(self.former_names), None,
                               self.started_at, "self")
        peer = self._peers.get(pid)
        card = peer.card if peer else None
        former = tuple(n for n in self._known.former_names(pid) if n != info.name)
        known = self._known.get(pid)
        first_seen = getattr(known, "first_seen", None) if known is not None else None
        return PeerDetails(
            info, card.addresses if card else (), card.router_port if card else 0,
            card.pub_port if card else 0, card.card_port if card else 0, former,
            first_seen, peer.started_at if peer else None, self._liveness.state(pid).value,
        )

    # ================================================================ identity helpers

    def _card(self) -> PeerCard:
        return PeerCard(self.peer_id, self.name, self._addresses, self._router_port,
                        self._pub_port, self._card_port)

    def _peer_info(self, pid: bytes, fallback_name: str = "?") -> PeerInfo:
        if pid == self.peer_id:
            return self.me
        peer = self._peers.get(pid)
        if peer is not None:
            info = peer.info
            if info is None or info.name != peer.card.name or info.color != peer.color or \
                    info.addresses != peer.card.addresses:
                info = peer.info = PeerInfo(peer.card.name, fingerprint_of(pid),
                                            peer.card.addresses, pid, peer.color)
            return info
        for jr in self._rooms.values():
            m = rules.find_member(jr.state, pid)
            if m is not None:
                return PeerInfo(m.name, fingerprint_of(pid), (), pid)
        return PeerInfo(fallback_name, fingerprint_of(pid), (), pid)

    def _resolve_id(self, who: str) -> bytes:
        query = who.strip().lstrip("@")
        if not query:
            raise PeerNotFound("no name given")
        candidates: dict[bytes, str] = {self.peer_id: self.name}
        for pid, peer in self._peers.items():
            if self._liveness.state(pid) is not Liveness.GONE:
                candidates[pid] = peer.card.name
        for jr in self._rooms.values():
            for m in jr.state.members:
                candidates.setdefault(m.peer_id, m.name)
        by_name = [pid for pid, n in candidates.items() if n.casefold() == query.casefold()]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise AmbiguousName(query, [self._peer_info(p).label for p in by_name])
        q = query.casefold().lstrip("#")
        if len(q) >= 4:
            by_fp = [pid for pid in candidates if fingerprint_of(pid).startswith(q)]
            if len(by_fp) == 1:
                return by_fp[0]
            if len(by_fp) > 1:
                raise AmbiguousName(query, [self._peer_info(p).label for p in by_fp])
        raise PeerNotFound(f"no peer called {query!r} (see /list or /users)")

    def _check_text(self, text: str) -> str:
        if not text:
            raise MeshchatError("empty message")
        if len(text) > self.limits.max_text_chars:
            raise MeshchatError(f"a message is at most {self.limits.max_text_chars} characters")
        return text

    def _next_request_id(self) -> int:
        self._request_ids += 1
        return self._request_ids

    # ================================================================ events

    def _emit(self, event: Event) -> None:
        for queue in self._queues:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.stats["events_dropped"] += 1

    # ================================================================ sending

    def _envelope(self, stream: bytes, message: WireMessage, seq: int | None = None) -> bytes:
        if seq is None:
            self._seq[stream] += 1
            seq = self._seq[stream]
        return self._codec.encode(Envelope(self.peer_id, seq, self._clock.time(), message))

    def _publish(self, topic: bytes, message: WireMessage) -> None:
        self._transport.publish(topic, self._envelope(topic, message))

    def _send(self, pid: bytes, message: WireMessage) -> bool:
        ok = self._transport.send(pid, self._envelope(b"D", message))
        if not ok:
            self.stats["send_failed"] += 1
        return ok

    def _send_ping(self, pid: bytes, nonce: int | None = None) -> bool:
        """A Ping whose Pong only ``pid`` may answer (the authority table's "asked")."""
        if nonce is None:
            nonce = self._next_request_id()
        self._ping_peers[nonce] = pid
        while len(self._ping_peers) > self.limits.max_rate_entries:
            self._ping_peers.popitem(last=False)
        return self._send(pid, Ping(nonce))

    def _roles(self, peer: bytes, m: WireMessage, jr: _JoinedRoom | None = None) -> Role:
        """What ``peer`` is to us for message ``m``: the facts the authority table asks."""
        roles = Role.ANYONE
        if peer in self._peers or self._peertable.is_candidate(peer):
            roles |= Role.KNOWN
        if jr is None:
            room_id = getattr(m, "room_id", None)
            jr = self._rooms.get(room_id) if isinstance(room_id, bytes) else None
        now = self._clock.monotonic()
        window = self.timings.request_timeout_s
        if jr is not None:
            state = jr.state
            if rules.is_member(state, peer):
                roles |= Role.MEMBER
            if state.host == peer:
                roles |= Role.HOST
            if (peer in jr.ever_members and peer not in jr.removed
                    and not rules.is_banned(state, peer)):
                roles |= Role.FORMER
            if peer in jr.merge_allow:
                roles |= Role.MERGING
            if isinstance(m, HistoryReply) and now - jr.history_from.get(peer, -1e9) < window:
                roles |= Role.ASKED
            if isinstance(m, StatePush) and now - jr.state_from.get(peer, -1e9) < window:
                roles |= Role.ASKED
        match m:
            case Pong(nonce=nonce) if self._ping_peers.get(nonce) == peer:
                roles |= Role.ASKED
            case JoinChallenge() | JoinAccept() | JoinRefusal() | CommandResult() if (
                    self._future_peers.get(m.request_id) == peer):
                roles |= Role.ASKED
        return roles

    def _authorized(self, peer: bytes, m: WireMessage, socket: str,
                    jr: _JoinedRoom | None = None) -> bool:
        """The one gate: the authority table and the per-peer rate limits."""
        refusal = self._gate.admit(peer, m, socket, self._roles(peer, m, jr),
                                   self._clock.monotonic())
        if refusal is None:
            return True
        self.stats["dropped_" + refusal.reason] += 1
        return False

    def _publish_room(self, jr: _JoinedRoom, message: WireMessage, seq: int | None = None,
                      epoch: int | None = None) -> None:
        epoch = epoch if epoch is not None else self._send_epoch(jr)
        inner = self._envelope(room_topic(jr.room_id), message, seq)
        box = SecretBox(jr.keys[epoch]).encrypt(inner)
        outer = Sealed(jr.room_id, epoch, bytes(box))
        self._transport.publish(room_topic(jr.room_id), self._envelope(b"S", outer))

    def _send_epoch(self, jr: _JoinedRoom) -> int:
        epoch = jr.state.key_epoch
        if epoch in jr.keys:
            return epoch
        return next(reversed(jr.keys))

    # ================================================================ incoming

    def _on_incoming(self, inc: Incoming) -> None:
        if self._closed:
            return
        try:
            self._dispatch(inc)
        except (ProtocolError, KeyError, ValueError, TypeError, CryptoError) as exc:
            self.stats["dropped_" + type(exc).__name__] += 1
            log.debug("dropped a frame from %s: %s", fingerprint_of(inc.peer_id), exc)
        except MeshchatError as exc:
            self.stats["dropped_error"] += 1
            log.debug("frame from %s refused: %s", fingerprint_of(inc.peer_id), exc)

    def _decode(self, payload: bytes, allowed: tuple[type[WireMessage], ...],
                peer: bytes | None) -> Envelope | None:
        try:
            env = self._codec.decode(payload, allowed)
        except UnknownType:
            self.stats["dropped_unknown_type"] += 1
            return None
        except ProtocolError:
            self.stats["dropped_malformed"] += 1
            return None
        if peer is not None and env.sender != peer:
            self.stats["dropped_spoofed"] += 1
            return None
        return env

    def _dispatch(self, inc: Incoming) -> None:
        now = self._clock.time()
        peer = inc.peer_id
        if inc.kind == "direct":
            if not peer:
                # A key the transport cannot name yet (a first Hello): the envelope names the
                # sender, who must own the CURVE key that authenticated the connection.
                env = self._decode(inc.payload, DIRECT_TYPES, None)
                if env is None:
                    return
                if not is_valid_peer_id(env.sender) or \
                        curve_public_of(env.sender) != inc.curve_key:
                    self.stats["dropped_spoofed"] += 1
                    return
                peer = env.sender
            else:
                env = self._decode(inc.payload, DIRECT_TYPES, peer)
            if env is None:
                return
            self._heard(peer)
            if self._authorized(peer, env.message, "direct"):
                self._on_direct(peer, env, inc.peer_address, now)
            return
        topic = inc.topic
        if topic == TOPIC_PRESENCE:
            env = self._decode(inc.payload, PRESENCE_TYPES, peer)
            if env is None or not self._authorized(peer, env.message, "presence"):
                return
            match env.message:
                case Heartbeat() as hb:
                    self._on_heartbeat(peer, hb)
                case Bye(reason=reason):
                    self._on_peer_gone(peer, "quit" if reason in ("quit", "") else reason)
        elif topic == TOPIC_BROADCAST:
            env = self._decode(inc.payload, BROADCAST_TYPES, peer)
            if env is None or not self._authorized(peer, env.message, "broadcast"):
                return
            self._heard(peer)
            if isinstance(env.message, Broadcast):
                self._emit(BroadcastReceived(self._peer_info(peer), env.message.text,
                                             env.sent_at))
        elif topic.startswith(TOPIC_ROOM):
            env = self._decode(inc.payload, ROOM_OUTER_TYPES, peer)
            if env is None:
                return
            self._heard(peer)
            sealed = env.message
            if not isinstance(sealed, Sealed) or room_topic(sealed.room_id) != topic:
                self.stats["dropped_topic"] += 1
                return
            jr = self._rooms.get(sealed.room_id)
            if jr is None:
                return
            if not self._authorized(peer, sealed, "room", jr):
                # Someone removed from the room, speaking with a key from before: not a
                # member's voice any more. If we host and only lost it for a while, tell it
                # so it rejoins.
                if jr.core.is_host and peer in jr.dropped_silent:
                    self._ask_to_rejoin(jr, peer)
                return
            self._open_sealed(jr, peer, sealed, now)
        else:
            self.stats["dropped_topic"] += 1

    def _heard(self, peer: bytes) -> None:
        self._liveness.heard(peer, self._clock.monotonic())

    # ---------------------------------------------------------------- presence

    def _on_heartbeat(self, peer: bytes, hb: Heartbeat) -> None:
        if hb.card.peer_id != peer:
            self.stats["dropped_spoofed"] += 1
            return
        self._learn_peer(hb.card, source="heartbeat", color=hb.color, started_at=hb.started_at)
        self._heard(peer)
        known = self._peers.get(peer)
        if known is not None:
            known.hosted = hb.hosted
        hosted_ids = {room.room_id for room in hb.hosted}
        for jr in self._rooms.values():
            if jr.state.host == peer and jr.room_id not in hosted_ids:
                # Our host does not host the room any more (it merged into another side, or
                # handed off and we missed it): its answer points us at the current host.
                self._ask_state(jr, peer)
        self._offer_cards(hb.known, peer)
        self._update_listings_from(peer, hb.hosted)

    def _update_listings_from(self, peer: bytes, hosted: Iterable[HostedRoom]) -> None:
        card = self._peers[peer].card if peer in self._peers else None
        seen: set[bytes] = set()
        changed = False
        for room in hosted:
            seen.add(room.room_id)
            if card is None:
                continue
            key = (room.room_id, peer)
            listing = _Listing(room.room_id, room.name, card, room.members, room.locked,
                               room.has_password, room.term, "heartbeat")
            if self._directory.get(key) != listing:
                self._directory[key] = listing
                changed = True
            self._check_partition(room, peer)
        for key in [k for k, v in self._directory.items()
                    if k[1] == peer and k[0] not in seen and v.source == "heartbeat"]:
            del self._directory[key]
            changed = True
        if changed:
            self._directory_changed.set()

    def _learn_peer(self, card: PeerCard, source: str, color: str | None = None,
                    started_at: float | None = None, address_hint: str = "") -> None:
        """A card from the peer itself (``source`` 'hello' or 'heartbeat', on a channel pinned
        to its key): it becomes or stays a peer. Cards others vouch for are candidates first
        (``_offer_cards``, meshchat.peertable)."""
        pid = card.peer_id
        if pid == self.peer_id:
            return
        if not card.addresses and address_hint:
            card = PeerCard(pid, card.name, (address_hint,), card.router_port, card.pub_port,
                            card.card_port)
        peer = self._peers.get(pid)
        is_new = peer is None or self._liveness.state(pid) is Liveness.GONE
        probed = False
        if peer is None:
            admission = self._peertable.admit(pid, self._clock.monotonic())
            if admission.refusal is not None:
                self.stats["dropped_" + admission.refusal] += 1
                return
            self._run_peer_effects(admission.effects)
            probed = admission.probed
            peer = _Peer(card)
            self._peers[pid] = peer
            for warning in self._known.observe(pid, card.name, list(card.addresses)):
                self._emit(Notice(warning, "warning"))
        elif peer.card.name != card.name:
            old = peer.card.name
            peer.card = card
            self._known.observe(pid, card.name, list(card.addresses))
            self._emit(Renamed(self._peer_info(pid), old, card.name))
            for jr in self._rooms.values():
                if (jr.core.is_host and rules.is_member(jr.state, pid)
                        and jr.core.member_renamed(pid, card.name) is not None):
                    self._host_publish(jr, jr.state)
        peer.card = card
        if color is not None:
            peer.color = color
        if started_at is not None:
            peer.started_at = started_at
        self._connect(pid)
        if is_new:
            self._liveness.heard(pid, self._clock.monotonic())
            if not self._listen_only and not probed:
                self._send(pid, Hello(self._card(), self.started_at, self.color))
            self._emit(PeerDiscovered(self._peer_info(pid)))
            self._peer_changed.set()

    def _offer_cards(self, cards: Sequence[PeerCard], introducer: bytes) -> None:
        """Cards that ``introducer`` vouches for: candidates, probed within bounds."""
        self._run_peer_effects(self._peertable.offer(cards, introducer,
                                                     self._clock.monotonic()))

    def _run_peer_effects(self, effects: Iterable[PeerEffect]) -> None:
        for effect in effects:
            match effect:
                case Probe(card=card):
                    # One DEALER and a Hello; a listening-only node says nothing, so it opens
                    # the SUB too and takes the peer's heartbeat as its answer.
                    self._transport.connect_peer(
                        card.peer_id, self._pick_address(card.addresses), card.router_port,
                        card.pub_port, subscribe=self._listen_only)
                    if not self._listen_only:
                        self._send(card.peer_id, Hello(self._card(), self.started_at,
                                                       self.color))
                case Unprobe(peer_id=pid):
                    if pid not in self._peers:
                        self._transport.disconnect_peer(pid)

    def _tick_peers(self, now: float) -> None:
        """Each beat: expire unanswered probes, and write the known-peers file (batched, in a
        thread) when it changed."""
        self._run_peer_effects(self._peertable.tick(now))
        if (self._peers_write is None and self._known.dirty
                and now - self._peers_written_at >= self.limits.peers_file_write_interval_s):
            snapshot = self._known.snapshot()
            if snapshot is not None:
                self._peers_written_at = now
                write = self._peers_write = asyncio.ensure_future(
                    asyncio.to_thread(self._known.write, snapshot))
                write.add_done_callback(self._peers_file_written)

    def _peers_file_written(self, write: asyncio.Future[bool]) -> None:
        self._peers_write = None
        if not write.cancelled() and write.exception() is not None:
            self.stats["peers_file_errors"] += 1
            log.warning("cannot write the known-peers file: %s", write.exception())

    def _sync_room_peers(self) -> None:
        """The transport denies exactly the keys that a room we hold bans (an unbanned peer is
        allowed again and, if still a peer, reconnected); the names of the members of our
        rooms are pinned. Call whenever the rooms we hold or their states change."""
        banned = (ban.peer_id for jr in self._rooms.values() for ban in jr.state.bans)
        deny, allow = self._peertable.sync_bans(banned)
        bans = self._peertable.bans
        for pid in deny:
            self._transport.deny(pid)
            for other, peer in self._peers.items():
                if same_key(other, pid):
                    peer.connected_to = None  # the transport closed its links
                    bans.park(peer.card)
        for pid in allow:
            self._transport.allow(pid)
            card = bans.unpark(pid)
            back = [other for other in self._peers if same_key(other, pid)]
            for other in back:
                self._peers[other].connected_to = None
                self._connect(other)
            if card is not None and not back:  # it went silent meanwhile: probe it again
                self._offer_cards((card,), DISCOVERY)
        for jr in self._rooms.values():
            for member in jr.state.members:
                if member.peer_id != self.peer_id:
                    self._known.pin(member.peer_id)

    def _connect(self, pid: bytes) -> None:
        peer = self._peers[pid]
        card = peer.card
        if not card.addresses:
            return
        target = (self._pick_address(card.addresses), card.router_port, card.pub_port)
        if peer.connected_to != target:
            self._transport.connect_peer(pid, target[0], target[1], target[2])
            peer.connected_to = target

    def _pick_address(self, addresses: Sequence[str]) -> str:
        mine = [a.rsplit(".", 1)[0] for a in self._addresses]
        for a in addresses:
            if a.rsplit(".", 1)[0] in mine:
                return a
        return addresses[0]

    def _on_peer_gone(self, peer: bytes, reason: str) -> None:
        if peer not in self._peers:
            return
        info = self._peer_info(peer)
        self._liveness.forget(peer)
        del self._peers[peer]
        self._run_peer_effects(self._peertable.remove(peer, self._clock.monotonic()))
        if reason != "vanished":
            self._transport.disconnect_peer(peer)
        # A vanished peer keeps its connections: ZeroMQ reconnects by itself when a cable is
        # plugged back in or a partition heals, and its next heartbeat brings it back.
        for key in [k for k in self._directory if k[1] == peer]:
            del self._directory[key]
        self._emit(PeerGone(info, reason))
        for jr in list(self._rooms.values()):
            self._member_gone(jr, peer, reason)

    def _member_gone(self, jr: _JoinedRoom, peer: bytes, reason: str) -> None:
        if not rules.is_member(jr.state, peer):
            return
        if jr.core.is_host:
            change = rules.LEFT if reason == "quit" else rules.VANISHED
            self._host_remove(jr, peer, change, "")
        elif peer == jr.state.host:
            jr.host_suspect = True
            self._maybe_claim(jr)

    # ---------------------------------------------------------------- direct

    def _on_direct(self, peer: bytes, env: Envelope, address: str, now: float) -> None:
        m = env.message
        match m:
            case Hello():
                if m.card.peer_id != peer:
                    self.stats["dropped_spoofed"] += 1
                    return
                self._learn_peer(m.card, "hello", m.color, m.started_at, address)
                if peer in self._peers:  # a refused one (a twin, one too many) learns nothing
                    cards = [p.card for pid, p in self._peers.items()
                             if pid != peer and p.card.addresses]
                    self._send(peer, Peers(tuple(cards[: self.limits.max_collection_items])))
            case Peers():
                probed = self._peertable.candidate_card(peer)
                if probed is not None:  # a candidate answered our Hello: that proves it
                    self._learn_peer(probed, "hello", address_hint=address)
                self._offer_cards(m.peers, peer)
            case Ping():
                self._send(peer, Pong(m.nonce))
            case Pong():
                self._ping_peers.pop(m.nonce, None)
                ping = self._pings.get(m.nonce)
                if ping is not None and not ping.done():
                    ping.set_result(self._clock.monotonic())
                for jr in self._rooms.values():
                    if jr.host_ping_nonce == m.nonce:
                        jr.host_ping_nonce = None
                        jr.host_suspect = False
            case Private():
                if self.peer_id not in m.to:
                    self.stats["dropped_misdirected"] += 1
                    return
                self._known.pin(peer)
                self._emit(Message(None, self._peer_info(peer), m.text, True, env.sent_at, 0,
                                   tuple(self._peer_info(p) for p in m.to)))
            case JoinRequest():
                self._on_join_request(peer, m, now)
            case JoinChallenge() | JoinAccept() | JoinRefusal() | CommandResult():
                fut = self._futures.get(m.request_id)
                if fut is not None and not fut.done():
                    fut.set_result(m)
            case Leave():
                left = self._rooms.get(m.room_id)
                if left is not None and left.core.is_host and rules.is_member(left.state, peer):
                    self._host_remove(left, peer, rules.LEFT,
                                      "quit" if m.reason == "quit" else "")
            case HostCommand():
                self._on_host_command(peer, m)
            case KeyUpdate():
                self._on_key_update(peer, m)
            case HistoryRequest():
                self._on_history_request(peer, m)
            case HistoryReply():
                target = self._rooms.get(m.room_id)
                if target is not None:
                    for blob in m.records[: self.limits.history_batch]:
                        self._take_batch(target, blob, verify=True, live=False)
                    for r in m.void:
                        # Only an author can say it never used some of its own numbers.
                        if r.sender == peer and 0 < r.first <= r.last <= r.first + SEQ_BLOCK:
                            for seq in range(r.first, r.last + 1):
                                target.tracker.add(peer, seq)
            case StateRequest():
                asked = self._rooms.get(m.room_id)
                # A member or a former member in good standing may ask (the state holds no
                # key): after a merge, our former members follow our answer to the room's
                # current host. The key goes to current members only.
                if asked is not None:
                    self._send(peer, StatePush(asked.room_id, asked.core.blob))
                    epoch = asked.state.key_epoch
                    if (asked.core.is_host and epoch in asked.keys
                            and rules.is_member(asked.state, peer)):
                        self._distribute_key(asked, epoch, to=[peer])
            case StatePush():
                self._on_state_blob(m.room_id, m.state, peer, direct=True)
            case _:
                self.stats["dropped_unexpected"] += 1

    # ---------------------------------------------------------------- rooms: sealed payloads

    def _open_sealed(self, jr: _JoinedRoom, peer: bytes, sealed: Sealed, now: float) -> None:
        key = jr.keys.get(sealed.epoch)
        if key is None:
            pending = jr.pending_sealed.setdefault(sealed.epoch, [])
            if len(jr.pending_sealed) > 8 or len(pending) > 1000:
                self.stats["dropped_no_key"] += 1
                return
            pending.append((peer, Envelope(peer, 0, now, sealed)))
            self._ask_state(jr, jr.state.host)  # a key we missed: the host sends it again
            return
        try:
            inner_bytes = SecretBox(key).decrypt(sealed.box)
        except CryptoError:
            self.stats["dropped_undecryptable"] += 1
            return
        env = self._decode(inner_bytes, ROOM_INNER_TYPES, peer)
        if env is None or not self._authorized(peer, env.message, "inner", jr):
            return
        match env.message:
            case Chat(batch=blob):
                self._take_batch(jr, blob, verify=False, live=True, author=peer)
            case StateAnnounce(state=blob):
                self._on_state_blob(jr.room_id, blob, peer, direct=False)
            case Heads() as heads:
                self._on_heads(jr, peer, heads)

    def _take_batch(self, jr: _JoinedRoom, blob: bytes, verify: bool, live: bool,
                    author: bytes | None = None, emit: bool = True) -> None:
        if verify:
            batch = self._codec.open_signed(blob, ChatBatch, lambda b: b.sender)
        else:
            batch = self._codec.peek_signed(blob, ChatBatch)
            if batch.sender != author:
                self.stats["dropped_spoofed"] += 1
                return
        if batch.room_id != jr.room_id or batch.first < 1 or not batch.lines:
            self.stats["dropped_misdirected"] += 1
            return
        sender = batch.sender
        head_before = jr.tracker.head(sender)
        fresh = [i for i in range(len(batch.lines)) if jr.tracker.add(sender, batch.first + i)]
        if len(fresh) < len(batch.lines):
            self.stats["duplicates"] += len(batch.lines) - len(fresh)
        if not fresh:
            return
        new = {batch.first + i for i in fresh}
        self._store_batch(batch, blob, new.__contains__)
        if emit:
            room = jr.state.name
            info = self._peer_info(sender)
            for i in fresh:
                line = batch.lines[i]
                self._emit(Message(room, info, line.text, False, line.sent_at, batch.first + i))
        if live and batch.first > head_before + 1:
            self._ask_history(jr, sender, sender, batch.first - 1)

    def _ask_history(self, jr: _JoinedRoom, source: bytes, author: bytes, upto: int) -> None:
        now = self._clock.monotonic()
        ranges = [r for r in jr.tracker.missing(author, upto)
                  if now - jr.history_asked.get((author, r.first), -1e9)
                  > self.timings.gap_fill_interval_s * 2]
        if not ranges:
            return
        for r in ranges:
            jr.history_asked[(author, r.first)] = now
        jr.history_from[source] = now
        if len(jr.history_from) > self.limits.max_peers:
            jr.history_from.pop(next(iter(jr.history_from)))
        if len(jr.history_asked) > 4096:
            jr.history_asked.clear()
        self._send(source, HistoryRequest(jr.room_id, tuple(ranges)))
        self.stats["history_requests"] += 1

    def _on_history_request(self, peer: bytes, m: HistoryRequest) -> None:
        jr = self._rooms.get(m.room_id)
        if jr is None or not (rules.is_member(jr.state, peer) or peer in jr.merge_allow):
            self.stats["dropped_not_member"] += 1
            return
        batch: list[bytes] = []
        void: list[SeqRange] = []
        size = 0
        budget = self.limits.history_batch * 4
        for r in m.ranges[:64]:
            if r.last < r.first:
                continue
            last = min(r.last, r.first + self.limits.history_batch)
            rows = self._log.range(jr.room_id, r.sender, r.first, last)
            held = [row.seq for row in rows]
            for blob in self._batch_blobs(jr.room_id, rows):
                if size + len(blob) > HISTORY_REPLY_BYTES and batch:
                    self._send(peer, HistoryReply(jr.room_id, tuple(batch), ()))
                    batch, size = [], 0
                batch.append(blob)
                size += len(blob)
                budget -= 1
                if budget <= 0:
                    break
            if r.sender == self.peer_id:
                void.extend(_unused_ranges(r.sender, r.first, min(last, jr.own_seq), held))
        if batch or void:
            self._send(peer, HistoryReply(jr.room_id, tuple(batch), tuple(void[:64])))

    def _on_heads(self, jr: _JoinedRoom, peer: bytes, heads: Heads) -> None:
        for r in heads.heads[: self.limits.max_collection_items]:
            if r.last > jr.tracker.head(r.sender):
                self._ask_history(jr, peer, r.sender, r.last)
        if (heads.term, heads.version) > (jr.state.term, jr.state.version):
            self._ask_state(jr, peer)

    def _ask_state(self, jr: _JoinedRoom, peer: bytes) -> None:
        now = self._clock.monotonic()
        if now - jr.state_asked_at > self.timings.gap_fill_interval_s and peer != self.peer_id:
            jr.state_asked_at = now
            jr.state_from[peer] = now
            if len(jr.state_from) > self.limits.max_peers:
                jr.state_from.pop(next(iter(jr.state_from)))
            self._send(peer, StateRequest(jr.room_id))

    # ---------------------------------------------------------------- rooms: state

    def _on_state_blob(self, room_id: bytes, blob: bytes, peer: bytes, direct: bool) -> None:
        jr = self._rooms.get(room_id)
        if jr is None:
            return
        new = jr.core.open_state(blob)
        if new.room_id != room_id:
            self.stats["dropped_misdirected"] += 1
            return
        old = jr.state
        host_silent = self._silent(old.host, self.timings.host_timeout_s / 2)
        if (direct and peer == old.host and new.host != old.host
                and not rules.accepts(old, new, host_silent)):
            # Our host stepped down after a partition and points us at the room's other host.
            if rules.host_priority(new) > rules.host_priority(old):
                self._start_rejoin(jr, new, merge=True)
            return
        previous = jr.core.offer(blob, host_silent)
        if previous is None:
            if new.change == rules.FAILOVER and not host_silent:
                self.stats["rejected_claims"] += 1
            return
        self._after_state_change(jr, previous, new)

    def _after_state_change(self, jr: _JoinedRoom, old: RoomState, new: RoomState) -> None:
        """Emit events for a state change and act on it (host side and member side alike)."""
        name = new.name
        me = self.peer_id
        jr.ever_members.update(rules.member_ids(new))
        if new.change in (rules.KICKED, rules.BANNED):
            jr.removed.add(new.change_peer)
        elif new.change == rules.JOINED:
            jr.removed.discard(new.change_peer)
        self._log.save_room(new.room_id, new.name, jr.core.blob)
        if new.closed and not old.closed:
            self._emit(RoomClosed(name))
            self._drop_room(jr)
            return
        if not rules.is_member(new, me):
            removed = new.change in (rules.KICKED, rules.BANNED) and new.change_peer == me
            if removed or rules.is_banned(new, me):
                self._emit(MemberRemoved(name, self.me, self._peer_info(new.host),
                                         new.change_reason if removed else "",
                                         rules.is_banned(new, me)))
                self._drop_room(jr)
            elif old.host == me:
                pass  # we handed off while leaving
            elif not self._closed:
                # The host lost us for a while (a stall, a flaky link): come back and fetch
                # what we missed, rather than drop out of the room.
                self._emit(Notice(f"the host of {name} lost contact with you: rejoining"))
                self._start_rejoin(jr, new)
            return
        if old.name != new.name:
            self._emit(RoomRenamed(name, old.name, new.name))
        old_ids = rules.member_ids(old)
        new_ids = rules.member_ids(new)
        for m in new.members:
            if m.peer_id not in old_ids and m.peer_id != me:
                self._emit(PeerJoined(name, self._peer_info(m.peer_id, m.name)))
        for m in old.members:
            if m.peer_id in new_ids or m.peer_id == me:
                continue
            info = self._peer_info(m.peer_id, m.name)
            if new.change in (rules.KICKED, rules.BANNED) and new.change_peer == m.peer_id:
                self._emit(MemberRemoved(name, info, self._peer_info(new.host),
                                         new.change_reason, new.change == rules.BANNED))
            else:
                reason = {rules.LEFT: "left", rules.HANDOFF: "left"}.get(new.change, "vanished")
                if new.change_reason == "quit" and reason == "left":
                    reason = "quit"
                self._emit(PeerLeft(name, info, reason))
        if old.host != new.host:
            jr.host_suspect = False
            jr.host_ping_nonce = None
            self._emit(HostChanged(name, self._peer_info(old.host), self._peer_info(new.host),
                                   new.term))
            if new.host == me and new.change != rules.FAILOVER:
                self._became_host(jr, old)
            elif old.host == me:
                self._spawn(self._withdraw_room(jr))
        if jr.core.is_host:
            self._spawn(self._announce_room(jr))

    def _became_host(self, jr: _JoinedRoom, old: RoomState) -> None:
        """A handoff made us host: a fresh key shuts out whoever left with the old host."""
        epoch = self._new_key(jr)
        jr.core.rekey(epoch)
        self._distribute_key(jr, epoch)
        self._host_publish(jr, old, announce_only=True)

    def _enter_room(self, jr: _JoinedRoom) -> None:
        used = self._log.next_seq(jr.room_id, self.peer_id) - 1
        jr.own_seq = jr.reserved_seq = max(used, self._log.reserved_seq(jr.room_id,
                                                                        self.peer_id))
        # Numbers skipped after a crash are ours and settled: nothing there to fetch.
        jr.tracker.set_base(self.peer_id, jr.own_seq)
        self._rooms[jr.room_id] = jr
        self._sync_room_peers()
        jr.ever_members.update(rules.member_ids(jr.state))
        self._transport.subscribe(room_topic(jr.room_id))
        self._log.save_room(jr.room_id, jr.state.name, jr.core.blob)

    def _drop_room(self, jr: _JoinedRoom) -> None:
        self._flush_outbox(jr)
        if self._rooms.pop(jr.room_id, None) is None:
            return
        self._sync_room_peers()
        self._last_states[jr.room_id] = jr.state
        if jr.own_seq:
            # A clean exit gives back the unused numbers, so a restart resumes without a gap.
            self._log.reserve_seq(jr.room_id, self.peer_id, jr.own_seq)
        self._transport.unsubscribe(room_topic(jr.room_id))
        if jr.core.is_host:
            self._spawn(self._withdraw_room(jr))

    def _room_handle(self, jr: _JoinedRoom) -> Room:
        if jr.handle is None:
            jr.handle = Room(self, jr.room_id)
        return jr.handle

    def _room_history(self, room_id: bytes, name: str) -> list[Message]:
        jr = self._rooms.get(room_id)
        if jr is not None:
            self._flush_outbox(jr)
        return [Message(name, self._peer_info(row.sender), row.text, False, row.sent_at, row.seq)
                for row in self._log.all(room_id)]

    # ---------------------------------------------------------------- rooms: host side

    def _host_publish(self, jr: _JoinedRoom, old: RoomState, announce_only: bool = False
                      ) -> None:
        """Publish our new signed state; emit events for the change unless already done."""
        self._push_state(jr)
        if announce_only:
            jr.ever_members.update(rules.member_ids(jr.state))
            self._log.save_room(jr.room_id, jr.state.name, jr.core.blob)
            self._spawn(self._announce_room(jr))
            return
        self._after_state_change(jr, old, jr.state)

    def _push_state(self, jr: _JoinedRoom, seal_epoch: int | None = None) -> None:
        """Our signed state to the room (sealed with ``seal_epoch``, default the current
        key) and, since a PUB frame can be lost, straight to every member too."""
        self._publish_room(jr, StateAnnounce(jr.core.blob), epoch=seal_epoch)
        for m in jr.state.members:
            if m.peer_id != self.peer_id:
                self._send(m.peer_id, StatePush(jr.room_id, jr.core.blob))

    def _new_key(self, jr: _JoinedRoom) -> int:
        """A fresh room key, kept in the (bounded) key ring; its epoch."""
        epoch, key = rules.new_room_key(self._random_bytes)
        self._install_key(jr, epoch, key)
        return epoch

    def _distribute_key(self, jr: _JoinedRoom, epoch: int,
                        to: Iterable[bytes] | None = None) -> None:
        """The key of ``epoch``, sealed to each member of the current state (or to ``to``)."""
        key = jr.keys[epoch]
        targets = to if to is not None else rules.member_ids(jr.state)
        for pid in targets:
            if pid != self.peer_id:
                self._send(pid, KeyUpdate(jr.room_id, epoch, rules.seal_key(self.identity, pid,
                                                                            key)))

    def _host_remove(self, jr: _JoinedRoom, peer: bytes, change: str, reason: str) -> None:
        old = jr.state
        if change == rules.VANISHED:
            jr.dropped_silent.add(peer)
            if len(jr.dropped_silent) > self.limits.max_peers:
                jr.dropped_silent.pop()
        else:
            jr.dropped_silent.discard(peer)
        epoch = self._new_key(jr)
        jr.core.remove_member(peer, change, reason, new_epoch=epoch)
        self._distribute_key(jr, epoch)
        if change in (rules.KICKED, rules.BANNED):
            self._send(peer, StatePush(jr.room_id, jr.core.blob))
        self._host_publish(jr, old)

    def _on_join_request(self, peer: bytes, req: JoinRequest, now: float) -> None:
        jr = self._rooms.get(req.room_id)

        def refuse(reason: str, detail: str = "") -> None:
            self._send(peer, JoinRefusal(req.room_id, req.request_id, reason, detail))

        if jr is None:
            refuse("not_found", "no such room here")
            return
        state = jr.state
        if not jr.core.is_host:
            refuse("moved", state.host.hex())
            return
        if req.merge_token:
            self._on_merge_join(jr, peer, req)
            return
        if rules.is_banned(state, peer):
            refuse("banned", "you are banned from this room")
            return
        if state.closed:
            refuse("closed", "the room is closed")
            return
        already = rules.is_member(state, peer) or peer in jr.dropped_silent
        if state.locked and not already:
            refuse("locked", "the room is locked")
            return
        if state.password is not None and not already:
            if not self._rate_ok(jr, peer, now):
                refuse("rate", "too many attempts; wait a minute")
                return
            pending = jr.challenges.get(peer)
            if not req.proof or pending is None or pending[0] != req.challenge:
                nonce = self._random_bytes(24)
                jr.challenges[peer] = (nonce, now)
                pw = state.password
                self._send(peer, JoinChallenge(req.room_id, req.request_id, pw.salt, nonce,
                                               pw.opslimit, pw.memlimit))
                return
            del jr.challenges[peer]
            if not rules.check_proof(state.password, state.room_id, peer, pending[0], req.proof):
                refuse("password", "wrong password")
                return
        name = req.name.strip()[: self.limits.max_name_chars] or "?"
        rejoining = peer in jr.dropped_silent
        jr.dropped_silent.discard(peer)
        jr.told_to_rejoin.pop(peer, None)
        self._admit(jr, peer, name, req.request_id, now, full_history=rejoining)

    def _admit(self, jr: _JoinedRoom, peer: bytes, name: str, request_id: int, now: float,
               full_history: bool = False) -> None:
        old = jr.state
        jr.core.add_member(peer, name, now)
        epoch = self._send_epoch(jr)
        self._flush_outbox(jr)
        rows = self._log.last(jr.room_id, self.limits.history_on_join)
        history = tuple(self._batch_blobs(jr.room_id, rows))
        size = sum(len(b) for b in history)
        while size > self.limits.max_frame_bytes // 2 and history:
            size -= len(history[0])
            history = history[1:]
        heads = () if full_history else jr.tracker.heads()
        self._send(peer, JoinAccept(jr.room_id, request_id, jr.core.blob,
                                    rules.seal_key(self.identity, peer, jr.keys[epoch]), epoch,
                                    history, heads))
        self._host_publish(jr, old)

    def _rate_ok(self, jr: _JoinedRoom, peer: bytes, now: float) -> bool:
        attempts = jr.attempts.setdefault(peer, deque())
        while attempts and now - attempts[0] > 60.0:
            attempts.popleft()
        if len(attempts) >= self.limits.join_attempts_per_minute:
            return False
        attempts.append(now)
        return True

    def _on_host_command(self, peer: bytes, cmd: HostCommand) -> None:
        jr = self._rooms.get(cmd.room_id)

        def answer(ok: bool, error: str = "", detail: str = "") -> None:
            self._send(peer, CommandResult(cmd.room_id, cmd.request_id, ok, error, detail))

        if jr is None:
            answer(False, "not_found", "no such room here")
            return
        if not jr.core.is_host:
            answer(False, "moved", jr.state.host.hex())
            return
        # Host-only operations are only ever done by the host for the host; a request from
        # anyone else is refused here, whatever its client allowed.
        answer(False, "not_host", f"only the host can {_OP_VERBS.get(cmd.op, cmd.op)}")

    def _ask_to_rejoin(self, jr: _JoinedRoom, peer: bytes) -> None:
        now = self._clock.monotonic()
        if now - jr.told_to_rejoin.get(peer, -1e9) > self.timings.gap_fill_interval_s:
            jr.told_to_rejoin[peer] = now
            self._send(peer, StatePush(jr.room_id, jr.core.blob))

    def _on_key_update(self, peer: bytes, m: KeyUpdate) -> None:
        jr = self._rooms.get(m.room_id)
        if jr is None:
            return
        self._install_key(jr, m.epoch, rules.unseal_key(self.identity, peer, m.sealed_key))

    def _install_key(self, jr: _JoinedRoom, epoch: int, key: bytes) -> None:
        """Keep a room key and open what arrived sealed with it before it did."""
        jr.keys[epoch] = key
        if len(jr.keys) > 64:
            del jr.keys[next(iter(jr.keys))]
        for sender, env in jr.pending_sealed.pop(epoch, []):
            if isinstance(env.message, Sealed):
                self._open_sealed(jr, sender, env.message, env.sent_at)

    # ---------------------------------------------------------------- host operations

    async def _host_op(self, jr: _JoinedRoom, op: str, *args: str) -> None:
        if not jr.core.is_host:
            await self._remote_host_op(jr, op, args)
            return
        old = jr.state
        core = jr.core
        if op == "handoff":
            target = self._member_id(jr, args[0])
            if target == self.peer_id:
                raise MeshchatError("you are already the host")
            core.handoff(target)
            self._host_publish(jr, old)
        elif op in ("kick", "ban"):
            target = self._resolve_id(args[0])
            if target == self.peer_id:
                raise MeshchatError(f"you cannot {op} yourself")
            change = rules.KICKED if op == "kick" else rules.BANNED
            if rules.is_member(jr.state, target):
                self._host_remove(jr, target, change, args[1] if len(args) > 1 else "")
                if op == "ban":
                    jr.challenges.pop(target, None)
            elif op == "ban":
                core.ban_absent(target, self._peer_info(target).name,
                                args[1] if len(args) > 1 else "")
                self._host_publish(jr, old)
            else:
                raise PeerNotFound(f"{args[0]} is not in this room")
        elif op == "unban":
            target = self._ban_id(jr, args[0])
            core.unban(target)
            self._host_publish(jr, old)
        elif op in ("lock", "unlock"):
            core.set_locked(op == "lock")
            self._host_publish(jr, old)
        elif op == "close":
            core.close()
            self._host_publish(jr, old)
        elif op == "rename":
            new = args[0].strip()
            if not new or len(new) > self.limits.max_room_name_chars:
                raise MeshchatError("a room name is 1 to "
                                    f"{self.limits.max_room_name_chars} characters")
            core.rename(new)
            self._host_publish(jr, old)
        elif op == "password":
            verifier = None
            if args[0]:
                verifier = await asyncio.to_thread(rules.make_verifier, args[0],
                                                   self._random_bytes)
            epoch = self._new_key(jr)
            core.set_password(verifier, epoch)
            self._distribute_key(jr, epoch)
            self._host_publish(jr, old)
        else:
            raise MeshchatError(f"unknown room operation {op}")

    async def _remote_host_op(self, jr: _JoinedRoom, op: str, args: Sequence[str]) -> None:
        """Ask the host: it refuses anything host-only from a non-host, and says so."""
        rid = self._next_request_id()
        fut: asyncio.Future[WireMessage] = asyncio.get_running_loop().create_future()
        self._futures[rid] = fut
        self._future_peers[rid] = jr.state.host
        try:
            self._send(jr.state.host, HostCommand(jr.room_id, rid, op, tuple(a for a in args
                                                                                 if a)))
            try:
                reply = await asyncio.wait_for(fut, self.timings.request_timeout_s)
            except TimeoutError as exc:
                raise NotHost(f"only the host can {_OP_VERBS.get(op, op)}") from exc
        finally:
            self._futures.pop(rid, None)
            self._future_peers.pop(rid, None)
        if isinstance(reply, CommandResult) and not reply.ok:
            raise NotHost(reply.detail or f"only the host can {_OP_VERBS.get(op, op)}")

    def _member_id(self, jr: _JoinedRoom, who: str) -> bytes:
        pid = self._resolve_id(who)
        if not rules.is_member(jr.state, pid):
            raise PeerNotFound(f"{who} is not in this room")
        return pid

    def _ban_id(self, jr: _JoinedRoom, who: str) -> bytes:
        q = who.strip().casefold().lstrip("#")
        hits = [b.peer_id for b in jr.state.bans
                if b.name.casefold() == q or (len(q) >= 4 and fingerprint_of(b.peer_id)
                                              .startswith(q))]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise AmbiguousName(who, [f"{self._peer_info(p).name} ({fingerprint_of(p)[:8]})"
                                      for p in hits])
        raise PeerNotFound(f"{who} is not banned here (see /banned)")

    # ---------------------------------------------------------------- chat

    async def _say(self, jr: _JoinedRoom, text: str) -> None:
        text = self._check_text(text)
        seq = max(jr.own_seq, jr.tracker.head(self.peer_id)) + 1
        jr.own_seq = seq
        if seq > jr.reserved_seq:
            # Numbers are reserved a block at a time, so the hot path never commits and a
            # crash never hands out a number that peers may already hold.
            jr.reserved_seq = seq + SEQ_BLOCK - 1
            self._log.reserve_seq(jr.room_id, self.peer_id, jr.reserved_seq)
        now = self._clock.time()
        box = jr.outbox
        if box is None or box.first + len(box.lines) != seq:
            self._flush_outbox(jr)
            box = jr.outbox = _Outbox(seq, [])
            asyncio.get_running_loop().call_soon(self._flush_outbox, jr)
        box.lines.append(ChatLine(now, text))
        box.chars += len(text)
        jr.tracker.add(self.peer_id, seq)
        self._emit(Message(jr.state.name, self.me, text, False, now, seq))
        if len(box.lines) >= BATCH_LINES or box.chars >= BATCH_TEXT_CHARS:
            self._flush_outbox(jr)

    def _flush_outbox(self, jr: _JoinedRoom) -> None:
        """Sign the lines said since the last turn of the loop once, log and publish them."""
        box, jr.outbox = jr.outbox, None
        if box is None or not box.lines:
            return
        batch = ChatBatch(jr.room_id, self.peer_id, box.first, tuple(box.lines))
        blob = self._codec.sign_record(self.identity, batch)
        self._store_batch(batch, blob)
        if jr.room_id in self._rooms and not self._closed:
            self._publish_room(jr, Chat(blob), seq=box.first)

    def _store_batch(self, batch: ChatBatch, blob: bytes,
                     only: Callable[[int], bool] | None = None) -> None:
        ref = BATCH_REF + batch.first.to_bytes(8, "big")
        room_id, sender, first = batch.room_id, batch.sender, batch.first
        self._log.add_many(
            (room_id, sender, first + i, line.sent_at, line.text, blob if i == 0 else ref)
            for i, line in enumerate(batch.lines) if only is None or only(first + i)
        )

    def _batch_blobs(self, room_id: bytes, rows: Iterable[LogRow]) -> list[bytes]:
        """The signed batches that hold these log rows, each once, in order."""
        out: list[bytes] = []
        seen: set[tuple[bytes, int]] = set()
        for row in rows:
            if row.blob.startswith(BATCH_REF):
                first = int.from_bytes(row.blob[1:], "big")
            else:
                first = row.seq
            key = (row.sender, first)
            if key in seen:
                continue
            seen.add(key)
            if first == row.seq:
                out.append(row.blob)
            else:
                head = self._log.range(room_id, row.sender, first, first)
                if head and not head[0].blob.startswith(BATCH_REF):
                    out.append(head[0].blob)
        return out

    # ---------------------------------------------------------------- joining

    async def _find_room(self, name: str) -> _Listing:
        deadline = self._clock.monotonic() + max(self.timings.discovery_wait_s,
                                          2.0 - self.uptime())
        while True:
            hits = [lst for lst in self._directory.values()
                    if lst.name.casefold() == name.strip().casefold()]
            if hits:
                return max(hits, key=lambda lst: (lst.term, lst.members))
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                raise RoomNotFound(f"no room called {name!r} on the network (see /rooms)")
            self._directory_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._directory_changed.wait(), remaining)

    async def _request(self, pid: bytes, message: WireMessage, rid: int, timeout: float
                       ) -> WireMessage:
        fut: asyncio.Future[WireMessage] = asyncio.get_running_loop().create_future()
        self._futures[rid] = fut
        self._future_peers[rid] = pid
        try:
            deadline = self._clock.monotonic() + timeout
            sent = self._send(pid, message)
            while not sent and self._clock.monotonic() < deadline:
                await self._clock.sleep(0.05)
                sent = self._send(pid, message)
            if not sent:
                raise Timeout("the host cannot be reached")
            try:
                async with asyncio.timeout(max(0.0, deadline - self._clock.monotonic())):
                    return await fut
            except TimeoutError as exc:
                raise Timeout("the host did not answer") from exc
        finally:
            self._futures.pop(rid, None)
            self._future_peers.pop(rid, None)

    async def _join_listing(self, listing: _Listing, password: str | None,
                            merge_token: bytes = b"", rejoin: bool = False) -> Room:
        host_id = listing.host.peer_id
        if host_id == self.peer_id:
            jr = self._rooms.get(listing.room_id)
            if jr is not None:
                return self._room_handle(jr)
            raise RoomNotFound("that room is hosted here but no longer exists")
        if listing.room_id in self._rooms and not (merge_token or rejoin):
            return self._room_handle(self._rooms[listing.room_id])
        self._learn_peer(listing.host, "introduction")
        rid = self._next_request_id()
        request = JoinRequest(listing.room_id, self.name, rid, b"", b"", merge_token)
        reply = await self._request(host_id, request, rid, self.timings.join_timeout_s)
        if isinstance(reply, JoinChallenge):
            if not password:
                raise JoinRefused("password", "this room needs a password")
            proof = await asyncio.to_thread(
                rules.password_proof, password, reply.salt, reply.opslimit, reply.memlimit,
                listing.room_id, self.peer_id, reply.nonce,
            )
            rid = self._next_request_id()
            request = JoinRequest(listing.room_id, self.name, rid, reply.nonce, proof, b"")
            reply = await self._request(host_id, request, rid, self.timings.join_timeout_s)
        if isinstance(reply, JoinRefusal):
            if reply.reason == "moved":
                new_host = self._peers.get(bytes.fromhex(reply.detail)) if _is_hex(
                    reply.detail) else None
                if new_host is not None:
                    raise _Moved(_Listing(listing.room_id, listing.name, new_host.card,
                                          listing.members, listing.locked,
                                          listing.has_password, listing.term, "moved"))
            raise JoinRefused(reply.reason, reply.detail)
        if not isinstance(reply, JoinAccept):
            raise JoinRefused("protocol", "unexpected answer from the host")
        return self._accept_join(listing.room_id, host_id, reply,
                                 merge=bool(merge_token) or rejoin)

    def _accept_join(self, room_id: bytes, host_id: bytes, reply: JoinAccept, merge: bool
                     ) -> Room:
        state = self._codec.open_signed(reply.state, RoomState, rules.signer_of)
        if state.room_id != room_id or state.host != host_id:
            raise JoinRefused("protocol", "the host sent a state that is not its own")
        key = rules.unseal_key(self.identity, host_id, reply.sealed_key)
        old = self._rooms.get(room_id)
        previous: RoomState | None = None
        if old is not None:
            previous = old.state
            old.core.current = rules.SignedState(state, reply.state)
            self._install_key(old, reply.key_epoch, key)
            jr = old
        else:
            core = rules.RoomCore(self.identity, self._codec, rules.SignedState(state,
                                                                                reply.state))
            jr = _JoinedRoom(core, {reply.key_epoch: key}, SeqTracker())
            for sender, seq in self._log.heads(room_id).items():
                jr.tracker.set_base(sender, seq)
            if not merge:
                for r in reply.heads:
                    jr.tracker.set_base(r.sender, r.last)
            self._enter_room(jr)
        for blob in reply.history:
            with contextlib.suppress(ProtocolError):
                self._take_batch(jr, blob, verify=True, live=False, emit=False)
        if previous is not None:
            self._after_state_change(jr, previous, state)
        self._publish_heads(jr)
        return self._room_handle(jr)

    async def _leave(self, room_id: bytes, reason: str) -> None:
        jr = self._rooms.get(room_id)
        if jr is None:
            raise NotInRoom("you are not in this room")
        if jr.core.is_host:
            others = [m.peer_id for m in jr.state.members if m.peer_id != self.peer_id]
            succ = rules.successor(jr.state, lambda p: self._liveness.is_alive(p)) or (
                others[0] if others else None)
            if succ is not None:
                old = jr.state
                jr.core.handoff(succ, leaving=True, quitting=reason == "quit")
                self._host_publish(jr, old, announce_only=True)
                self._drop_room(jr)
                await self._withdraw_room(jr)
                return
            self._drop_room(jr)
            await self._withdraw_room(jr)
        else:
            self._send(jr.state.host, Leave(room_id, "quit" if reason == "quit" else "left"))
            self._drop_room(jr)

    # ---------------------------------------------------------------- partitions

    def _check_partition(self, hosted: HostedRoom, other_host: bytes) -> None:
        """Another node hosts a room we host too: the lower (term, rank) steps down."""
        jr = self._rooms.get(hosted.room_id)
        if jr is None or not jr.core.is_host or jr.merging:
            return
        theirs = (hosted.term, bytes(255 - b for b in other_host))
        if theirs <= rules.host_priority(jr.state):
            return
        jr.merging = True
        self._spawn(self._merge_into(jr, other_host))

    async def _merge_into(self, jr: _JoinedRoom, other_host: bytes) -> None:
        """Step down: join the winning host's room, then send our members there."""
        peer = self._peers.get(other_host)
        try:
            if peer is None:
                return
            listing = _Listing(jr.room_id, jr.state.name, peer.card, 0, False, False, 0,
                               "merge")
            members = [m.peer_id for m in jr.state.members if m.peer_id != self.peer_id]
            token = jr.core.blob
            old_state = jr.state
            await self._join_following(listing, None, merge_token=token)
            winner = self._rooms.get(jr.room_id)
            if winner is None:
                return
            for pid in members:
                self._send(pid, Peers((peer.card,)))
                self._send(pid, StatePush(jr.room_id, winner.core.blob))
            self._emit(Notice(f"the network healed: {old_state.name} merged into the room "
                              f"hosted by {self._peer_info(other_host).name}"))
        except MeshchatError as exc:
            log.info("merge into %s failed: %s", fingerprint_of(other_host), exc)
        finally:
            cur = self._rooms.get(jr.room_id)
            if cur is not None:
                cur.merging = False

    def _start_rejoin(self, jr: _JoinedRoom, state: RoomState, merge: bool = False) -> None:
        """Join the room again at ``state``'s host: after the host lost contact with us, or
        (``merge``) after a partition healed and our host stepped down in its favour."""
        if jr.merging:
            return
        jr.merging = True
        self._spawn(self._rejoin(jr, state, merge))

    async def _rejoin(self, jr: _JoinedRoom, state: RoomState, merge: bool) -> None:
        try:
            peer = await self._await_peer(state.host, self.timings.join_timeout_s)
            if peer is None:
                raise RoomNotFound("the host is gone")
            listing = _Listing(jr.room_id, state.name, peer.card, 0, False, False, state.term,
                               "merge" if merge else "rejoin")
            if merge:
                # Our old host's signed state vouches that we were members on its side.
                await self._join_following(listing, None, merge_token=jr.core.blob)
            else:
                await self._join_following(listing, None, rejoin=True)
        except MeshchatError as exc:
            log.info("rejoin of %s failed: %s", state.name, exc)
            # A failed merge keeps the old room: the next state our host sends retries it.
            if not merge:
                self._emit(Notice(f"could not rejoin {state.name}: {exc}", "warning"))
                cur = self._rooms.get(jr.room_id)
                if cur is not None:
                    self._emit(PeerLeft(state.name, self.me, "vanished"))
                    self._drop_room(cur)
        finally:
            cur = self._rooms.get(jr.room_id)
            if cur is not None:
                cur.merging = False

    async def _await_peer(self, pid: bytes, timeout: float) -> _Peer | None:
        deadline = self._clock.monotonic() + timeout
        while (peer := self._peers.get(pid)) is None:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return None
            self._peer_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._peer_changed.wait(), remaining)
        return peer

    def _on_merge_join(self, jr: _JoinedRoom, peer: bytes, req: JoinRequest) -> None:
        """A member (or the host) of the other side of a healed partition joins us."""
        try:
            other = self._codec.open_signed(req.merge_token, RoomState, rules.signer_of)
        except ProtocolError:
            self._send(peer, JoinRefusal(req.room_id, req.request_id, "merge", "bad token"))
            return
        ok = (other.room_id == jr.room_id and rules.is_member(other, peer)
              and (other.host in jr.ever_members or other.host in jr.merge_allow)
              and not rules.is_banned(jr.state, peer))
        if not ok:
            self._send(peer, JoinRefusal(req.room_id, req.request_id, "merge",
                                         "not a member of this room"))
            return
        if other.host == peer:
            jr.merge_allow.update(rules.member_ids(other))
            old = jr.state
            if jr.core.merge_bans(other.bans) is not None:
                self._host_publish(jr, old)
        name = req.name.strip()[: self.limits.max_name_chars] or "?"
        self._admit(jr, peer, name, req.request_id, self._clock.time(), full_history=True)

    # ---------------------------------------------------------------- elections

    def _maybe_claim(self, jr: _JoinedRoom) -> None:
        """The host is gone or silent and unanswering: the first live member claims."""
        if jr.core.is_host or not jr.host_suspect:
            return
        host = jr.state.host
        succ = rules.successor(jr.state, lambda p: p == self.peer_id or (
            self._liveness.is_alive(p) and p != host))
        if succ != self.peer_id:
            return
        old = jr.state
        epoch = self._new_key(jr)
        jr.core.claim(host, epoch)
        jr.host_suspect = False
        # The claim is sealed with the old key, which every member still holds. The new key
        # follows it on the same channels: members take a key only from the host, so the
        # state that makes us host must arrive first.
        self._push_state(jr, old.key_epoch if old.key_epoch in jr.keys else None)
        self._distribute_key(jr, epoch)
        self._after_state_change(jr, old, jr.state)

    # ================================================================ timers

    async def _ticker(self) -> None:
        interval = self.timings.heartbeat_interval_s
        last_flush = last_tick = self._clock.monotonic()
        beat = 0
        while True:
            await self._clock.sleep(interval)
            beat += 1
            now = self._clock.monotonic()
            if now - last_tick > max(4 * interval, self.timings.host_timeout_s):
                # We were stalled ourselves: silence meanwhile is ours, not the peers'.
                self._liveness.grace(now)
                self.stats["stalls"] += 1
            last_tick = now
            try:
                self._tick(beat)
            except Exception:  # a bug must not stop the heartbeat
                log.exception("tick failed")
                self.stats["tick_errors"] += 1
            now = self._clock.monotonic()
            if now - last_flush > 0.2:
                self._log.flush()
                last_flush = now

    def _tick(self, beat: int) -> None:
        now = self._clock.monotonic()
        self._tick_peers(now)
        if not self._listen_only:
            self._publish(TOPIC_PRESENCE, self._heartbeat(include_known=beat % 20 == 0))
        for peer, state in self._liveness.tick(now):
            if state is Liveness.EVASIVE:
                self._send_ping(peer)
            elif state is Liveness.GONE:
                self._on_peer_gone(peer, "vanished")
        gap_every = max(1, round(self.timings.gap_fill_interval_s / self.timings.
                                 heartbeat_interval_s))
        for jr in list(self._rooms.values()):
            if beat % gap_every == 0:
                self._publish_heads(jr)
            self._watch_host(jr, now)

    def _publish_heads(self, jr: _JoinedRoom) -> None:
        heads = jr.tracker.heads()[: self.limits.max_collection_items]
        self._publish_room(jr, Heads(heads, jr.state.term, jr.state.version))

    def _silent(self, peer: bytes, for_s: float) -> bool:
        """Not heard for ``for_s``, or not heard since its TCP connection closed."""
        last = self._liveness.last_heard(peer)
        if last is None:
            return True
        dropped = self._dropped.get(peer)
        if dropped is not None:
            if last < dropped:
                return True
            del self._dropped[peer]
        return self._clock.monotonic() - last >= for_s

    def _on_peer_disconnected(self, peer: bytes) -> None:
        """A peer's connection closed: if it hosts one of our rooms, ask it at once."""
        if self._closed:
            return
        self._dropped[peer] = self._clock.monotonic()
        for jr in self._rooms.values():
            if jr.state.host == peer and not jr.core.is_host:
                self._watch_host(jr, self._clock.monotonic())

    def _watch_host(self, jr: _JoinedRoom, now: float) -> None:
        if jr.core.is_host:
            return
        host = jr.state.host
        if not self._silent(host, self.timings.host_timeout_s):
            jr.host_ping_nonce = None
            jr.host_suspect = False
            return
        if jr.host_suspect:
            self._maybe_claim(jr)
            return
        if jr.host_ping_nonce is None:
            jr.host_ping_nonce = self._next_request_id()
            jr.host_ping_at = now
            self._send_ping(host, jr.host_ping_nonce)
        elif now - jr.host_ping_at >= self.timings.host_ping_timeout_s:
            jr.host_suspect = True
            self._maybe_claim(jr)

    def _heartbeat(self, include_known: bool = False) -> Heartbeat:
        hosted = tuple(
            HostedRoom(jr.room_id, jr.state.name, len(jr.state.members), jr.state.locked,
                       jr.state.password is not None, jr.state.term)
            for jr in self._rooms.values() if jr.core.is_host and jr.announce
        )
        known: tuple[PeerCard, ...] = ()
        if include_known:
            known = tuple(p.card for pid, p in self._peers.items()
                          if p.card.addresses and self._liveness.is_alive(pid))[:64]
        return Heartbeat(self._card(), self.started_at, self.color, hosted, known)

    # ================================================================ discovery

    def _on_discovered_peer(self, card: PeerCard) -> None:
        if self._closed:
            return
        try:
            self._offer_cards((card,), DISCOVERY)
        except (ValueError, ProtocolError) as exc:
            self.stats["dropped_discovery"] += 1
            log.debug("bad discovery record: %s", exc)

    def _on_discovery_peer_removed(self, pid: bytes) -> None:
        # mDNS goodbyes are a hint; the heartbeat decides (a Bye comes over the mesh too).
        if self._peertable.is_candidate(pid):
            self._run_peer_effects(self._peertable.remove(pid, self._clock.monotonic()))
        elif pid in self._peers and self._liveness.state(pid) is not Liveness.ALIVE:
            self._on_peer_gone(pid, "quit")

    def _on_discovered_room(self, room: RoomAnnouncement) -> None:
        if room.host.peer_id == self.peer_id:
            return
        self._directory[(room.room_id, room.host.peer_id)] = _Listing(
            room.room_id, room.name, room.host, room.members, room.locked, room.has_password,
            room.term, "mdns",
        )
        self._on_discovered_peer(room.host)
        self._directory_changed.set()

    def _on_discovered_room_removed(self, room_id: bytes, host: bytes) -> None:
        listing = self._directory.get((room_id, host))
        if listing is not None and listing.source == "mdns":
            del self._directory[(room_id, host)]

    async def _announce_room(self, jr: _JoinedRoom) -> None:
        if not jr.announce or not jr.core.is_host or self._closed:
            return
        s = jr.state
        with contextlib.suppress(Exception):
            await self._discovery.announce_room(RoomAnnouncement(
                s.room_id, s.name, self._card(), len(s.members), s.locked,
                s.password is not None, s.term,
            ))

    async def _withdraw_room(self, jr: _JoinedRoom) -> None:
        with contextlib.suppress(Exception):
            await self._discovery.withdraw_room(jr.room_id)

    def _room_infos(self) -> list[RoomInfo]:
        best: dict[bytes, RoomInfo] = {}
        for jr in self._rooms.values():
            if jr.core.is_host and jr.announce:
                s = jr.state
                best[s.room_id] = RoomInfo(s.name, self.name, len(s.members), s.locked,
                                           s.password is not None, s.room_id, self.fingerprint)
        for lst in sorted(self._directory.values(), key=lambda item: item.term):
            if lst.room_id in best and lst.room_id in self._rooms:
                continue
            best[lst.room_id] = RoomInfo(lst.name, lst.host.name, lst.members, lst.locked,
                                         lst.has_password, lst.room_id,
                                         fingerprint_of(lst.host.peer_id))
        return sorted(best.values(), key=lambda r: r.name.casefold())

    def _on_handshake_failure(self, pid: bytes) -> None:
        self.stats["handshake_failures"] += 1
        probe = self._peertable.failed(pid, self._clock.monotonic())
        if probe is not None:  # an introduced card that was wrong: no warning worth giving
            self._run_peer_effects(probe)
            return
        self._emit(Notice(f"the peer at {self._peer_info(pid).label}'s address does not hold "
                          "its key: refused (an impostor, or a reinstalled machine)", "warning"))

    # ================================================================ misc

    def _spawn(self, coro: object) -> None:
        import inspect

        if not inspect.iscoroutine(coro):
            return
        if self._closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)


class _Moved(Exception):
    def __init__(self, listing: _Listing) -> None:
        self.listing = listing


_OP_VERBS = {
    "handoff": "hand the room over", "kick": "kick", "ban": "ban", "unban": "unban",
    "lock": "lock the room", "unlock": "unlock the room", "close": "close the room",
    "rename": "rename the room", "password": "set the password",
}


def _unused_ranges(sender: bytes, first: int, last: int, held: Sequence[int]
                   ) -> list[SeqRange]:
    """The runs in first..last that are not in ``held`` (sorted)."""
    out: list[SeqRange] = []
    start = first
    for seq in (*held, last + 1):
        if seq > start:
            out.append(SeqRange(sender, start, min(seq - 1, last)))
        start = max(start, seq + 1)
        if start > last:
            break
    return [r for r in out if r.first <= r.last]


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return len(text) == 64


