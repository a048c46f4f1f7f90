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
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nacl.exceptions import CryptoError

from . import admission
from . import hostwatch as hw
from . import moderation as mod
from . import room as rules
from .admission import Admission, Admit, Challenge, Lineage, Refuse
from .authority import Gate
from .clock import Clock, as_clock
from .config import Limits, Timings
from .discovery.base import Discovery, DiscoveryHandlers
from .errors import (
    AmbiguousName,
    JoinRefused,
    MeshchatError,
    NotHost,
    NotInRoom,
    PeerNotFound,
    ProtocolError,
    RoomNotFound,
    Timeout,
)
from .events import (
    BroadcastReceived,
    Event,
    Message,
    Notice,
    PeerInfo,
    PeerLeft,
    Renamed,
    RoomInfo,
)
from .historysync import HistorySync, Source, newest_that_fit
from .identity import Identity, fingerprint_of
from .keyring import Keyring
from .liveness import LivenessTable
from .peertable import PeerTable
from .protocol.codec import Codec, Envelope
from .protocol.messages import (
    Broadcast,
    Bye,
    Chat,
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
    Peers,
    Ping,
    Pong,
    Private,
    RoomState,
    Sealed,
    StateAnnounce,
    StatePush,
    StateRequest,
    WireMessage,
)
from .runtime.chat import RoomChat, check_text
from .runtime.directory import Directory, Listing
from .runtime.emitter import Emitter
from .runtime.local import LocalPeer
from .runtime.peers import PeerBook
from .runtime.rooms import JoinedRoom, Rooms
from .runtime.tasks import Tasks
from .runtime.wire import TOPIC_BROADCAST, TOPIC_PRESENCE, Gatekeeper, Wire, room_topic
from .session import StateAction, state_change
from .transport.base import Incoming, LinkEvents, Transport

__all__ = ["BanInfo", "Node", "PeerDetails", "Room", "RoomDetails"]

log = logging.getLogger("meshchat.node")


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


class Room:
    """A room this node is a member of. Operations act on the room's current host."""

    def __init__(self, node: Node, room_id: bytes) -> None:
        self._node = node
        self.room_id = room_id

    def _joined(self) -> JoinedRoom:
        jr = self._node._rooms.get(self.room_id)
        if jr is None:
            raise NotInRoom("you are not in this room any more")
        return jr

    @property
    def active(self) -> bool:
        return self.room_id in self._node._rooms

    @property
    def _state(self) -> RoomState:
        state = self._node._rooms.state_of(self.room_id)
        if state is None:
            raise NotInRoom("you are not in this room any more")
        return state

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def host(self) -> PeerInfo:
        return self._node._peers.info(self._state.host)

    @property
    def is_host(self) -> bool:
        return self._state.host == self._node.peer_id

    @property
    def members(self) -> list[PeerInfo]:
        return [self._node._peers.info(m.peer_id, m.name) for m in self._state.members]

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
        return self._node._chat.history(self.room_id, self._state.name)

    async def say(self, text: str) -> None:
        await self._node._chat.say(self._joined(), text)

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
        self._rooms = Rooms()
        self._events = Emitter(self.stats)
        self._emit = self._events.emit
        self._tasks = Tasks()

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
        self._me = me = LocalPeer.load(self.identity, SettingsStore(self.data_dir),
                                       self._requested_name, self._requested_color)
        known = KnownPeers(self.data_dir, max_peers=self.limits.max_known_peers,
                           max_pinned=self.limits.max_pinned_peers)
        self._log = MessageLog(self.data_dir / "messages.sqlite")
        self._codec = Codec(self.limits)
        self._admission = Admission(self.limits, self._codec, self.peer_id, self._random_bytes)
        me.started_at = self._clock.time()
        self._started_mono = self._clock.monotonic()

        addresses = (["127.0.0.1"] if self._loopback_only
                     else resolve_interfaces(self._interfaces))
        me.addresses = tuple(addresses)
        bind = addresses if (self._interfaces or self._loopback_only) else ["*"]

        if self._transport_arg is None:
            from .transport.zmq import ZmqTransport

            self._transport: Transport = ZmqTransport(self.limits)
        else:
            self._transport = self._transport_arg
        self._wire = Wire(self.peer_id, self._codec, self._transport, self._clock, self.limits,
                          self.stats)
        self._peers = PeerBook(
            me, self._wire, self._transport, known,
            PeerTable(self.limits, self.peer_id, self.stats), LivenessTable(self.timings),
            self._emit, self._tasks, self._clock, self.limits, self.stats,
            listen_only=self._listen_only,
            room_states=self._rooms.states,
            on_gone=self._peer_gone, on_renamed=self._peer_renamed)
        self._gate = Gatekeeper(Gate(self.limits), self._wire, self._peers.is_known,
                                self._rooms.get, self._clock, self.timings, self.stats)
        self._chat = RoomChat(me, self._rooms, self._wire, self._codec, self._log,
                              self._peers.info, self._emit, self._tasks, self._clock,
                              self.limits, self.timings, self.stats)
        self._transport.set_link_events(LinkEvents(
            on_handshake_failure=self._peers.handshake_failed, on_refused=self._peers.refused,
            on_disconnect=self._on_peer_disconnected))
        ports = await self._transport.start(self.identity, bind, self._on_incoming)
        me.router_port = ports.router_port
        me.pub_port = ports.pub_port
        for topic in (TOPIC_PRESENCE, TOPIC_BROADCAST):
            self._transport.subscribe(topic)

        self._card_server = None
        card_port = 0
        if self._discovery_arg is None:
            from .discovery.static import CardServer

            self._card_server = CardServer(self.identity, me.card)
            card_port = await self._card_server.start(list(bind), self._card_port_wanted)
        me.card_port = card_port
        self._discovery = self._discovery_arg or self._make_discovery()
        self._directory = Directory(me, self._discovery, self._clock, self.timings,
                                    on_host_card=self._peers.discovered,
                                    on_rival=self._check_partition)
        await self._discovery.start(me.card(), DiscoveryHandlers(
            on_peer=self._peers.discovered,
            on_peer_removed=self._peers.discovery_removed,
            on_room=self._directory.discovered_room,
            on_room_removed=self._directory.discovered_room_removed,
        ))
        self._started = True
        if not self._listen_only:
            self._wire.publish(TOPIC_PRESENCE, self._heartbeat())
        self._tasks.spawn(self._ticker(), name="meshchat-ticker")

    def _make_discovery(self) -> Discovery:
        from .discovery.static import CombinedDiscovery, StaticDiscovery

        parts: list[Discovery] = []
        if self._use_mdns and not self._loopback_only:
            from .discovery.mdns import MdnsDiscovery

            parts.append(MdnsDiscovery(list(self._me.addresses),
                                       announce=not self._listen_only))
        if self._static_peers:
            parts.append(StaticDiscovery(self._static_peers, self.identity))
        return CombinedDiscovery(*parts)

    async def close(self, reason: str = "quit") -> None:
        """Leave every room (a host hands off first), say goodbye, and release everything."""
        if not self._started or self._tasks.closed:
            return
        self._tasks.closed = True
        for room_id in list(self._rooms):
            with contextlib.suppress(MeshchatError):
                await self._leave(room_id, "quit")
        with contextlib.suppress(Exception):
            self._wire.publish(TOPIC_PRESENCE, Bye(reason))
        await self._tasks.stop()
        self._wire.close()
        with contextlib.suppress(Exception):
            await self._discovery.close()
        if self._card_server is not None:
            with contextlib.suppress(Exception):
                await self._card_server.close()
        await self._transport.close(self.timings.linger_s)
        self._log.close()
        self._peers.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    # ================================================================ public API

    @property
    def me(self) -> PeerInfo:
        return self._me.info

    @property
    def name(self) -> str:
        return self._me.name

    @property
    def color(self) -> str:
        return self._me.color

    @property
    def started_at(self) -> float:
        return self._me.started_at

    @property
    def address(self) -> str:
        """'IP:PORT' that others can pass to ``--peer``."""
        me = self._me
        return f"{me.addresses[0] if me.addresses else '127.0.0.1'}:{me.card_port}"

    def uptime(self) -> float:
        return self._clock.monotonic() - self._started_mono

    def peers(self) -> list[PeerInfo]:
        """The peers currently alive on the network, not counting this node."""
        return self._peers.alive()

    def joined_rooms(self) -> list[Room]:
        return [self._room_handle(jr) for jr in self._rooms.values()]

    def resolve(self, who: str) -> PeerInfo:
        """A peer by name (case-insensitive) or fingerprint prefix; this node included."""
        return self._peers.info(self._peers.resolve(who))

    def events(self) -> AsyncIterator[Event]:
        """A stream of every event from now on (each call gets its own)."""
        return self._events.events()

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
        jr = JoinedRoom(core, Keyring.with_key(self.limits, epoch, key),
                         HistorySync(self.limits, self.timings), announce=announce)
        self._enter_room(jr)
        await self._announce_room(jr)
        return self._room_handle(jr)

    async def join(self, name: str, password: str | None = None) -> Room:
        """Join the room called ``name`` on the network."""
        wait_s = max(self.timings.discovery_wait_s, 2.0 - self.uptime())
        return await self._join_following(await self._directory.find(name, wait_s), password)

    async def _join_following(self, listing: Listing, password: str | None,
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
        text = check_text(text, self.limits)
        targets = [to] if isinstance(to, str) else list(to)
        ids: list[bytes] = []
        for who in targets:
            for part in who.split(","):
                if part.strip():
                    pid = self._peers.resolve(part.strip())
                    if pid not in ids:
                        ids.append(pid)
        if not ids:
            raise PeerNotFound("no recipient")
        message = Private(text, tuple(ids))
        for pid in ids:
            if pid == self.peer_id:
                continue
            if not self._wire.send(pid, message):
                raise PeerNotFound(f"{self._peers.info(pid).label} cannot be reached")
            self._peers.pin(pid)
        self._emit(Message(None, self.me, text, True, self._clock.time(), 0,
                           tuple(self._peers.info(p) for p in ids)))

    async def ping(self, who: str) -> float:
        """Round-trip time to a peer in seconds."""
        pid = self._peers.resolve(who)
        if pid == self.peer_id:
            return 0.0
        return await self._wire.ping(pid, self._peers.info(pid).label,
                                     self.timings.request_timeout_s)

    async def broadcast(self, text: str) -> None:
        """A line to every node on the network."""
        text = check_text(text, self.limits)
        self._wire.publish(TOPIC_BROADCAST, Broadcast(text))
        self._emit(BroadcastReceived(self.me, text, self._clock.time()))

    async def rename(self, new_name: str) -> None:
        """Change this node's name; allowed once per ``Timings.rename_interval_s``."""
        old = self._me.rename(new_name, self._clock.time(), self.timings.rename_interval_s)
        if old is None:
            return
        self._wire.publish(TOPIC_PRESENCE, self._heartbeat())
        with contextlib.suppress(Exception):
            await self._discovery.update_node(self._me.card())
        for jr in self._rooms.values():
            if jr.core.is_host:
                signed = jr.core.member_renamed(self.peer_id, new_name)
                if signed is not None:
                    self._host_publish(jr, jr.state)
        self._emit(Renamed(self.me, old, new_name))

    def set_color(self, color: str) -> None:
        self._me.set_color(color)
        self._wire.publish(TOPIC_PRESENCE, self._heartbeat())

    @property
    def former_names(self) -> list[str]:
        return self._me.former_names

    def peer_details(self, who: str) -> PeerDetails:
        pid = self._peers.resolve(who)
        info = self._peers.info(pid)
        if pid == self.peer_id:
            me = self._me
            return PeerDetails(info, me.addresses, me.router_port, me.pub_port, me.card_port,
                               tuple(self.former_names), None, me.started_at, "self")
        peer = self._peers.get(pid)
        card = peer.card if peer else None
        former = tuple(n for n in self._peers.known.former_names(pid) if n != info.name)
        known = self._peers.known.get(pid)
        first_seen = getattr(known, "first_seen", None) if known is not None else None
        return PeerDetails(
            info, card.addresses if card else (), card.router_port if card else 0,
            card.pub_port if card else 0, card.card_port if card else 0, former,
            first_seen, peer.started_at if peer else None, self._peers.state(pid).value,
        )

    # ================================================================ identity helpers

    def _authorized(self, peer: bytes, m: WireMessage, socket: str,
                    jr: JoinedRoom | None = None) -> bool:
        """The one gate: the authority table and the per-peer rate limits."""
        return self._gate.admit(peer, m, socket, jr)

    def _publish_room(self, jr: JoinedRoom, message: WireMessage, seq: int | None = None,
                      epoch: int | None = None) -> None:
        self._wire.publish_sealed(jr.room_id, *jr.seal_key(epoch), message, seq)

    # ================================================================ incoming

    def _on_incoming(self, inc: Incoming) -> None:
        if self._tasks.closed:
            return
        try:
            self._dispatch(inc)
        except (ProtocolError, KeyError, ValueError, TypeError, CryptoError) as exc:
            self.stats["dropped_" + type(exc).__name__] += 1
            log.debug("dropped a frame from %s: %s", fingerprint_of(inc.peer_id), exc)
        except MeshchatError as exc:
            self.stats["dropped_error"] += 1
            log.debug("frame from %s refused: %s", fingerprint_of(inc.peer_id), exc)

    def _dispatch(self, inc: Incoming) -> None:
        now = self._clock.time()
        frame = self._wire.open(inc)
        if frame is None:
            return
        peer, env = frame.peer, frame.env
        if frame.socket == "direct":
            self._peers.heard(peer)
            if self._authorized(peer, env.message, "direct"):
                self._on_direct(peer, env, frame.address, now)
        elif frame.socket == "presence":
            if not self._authorized(peer, env.message, "presence"):
                return
            match env.message:
                case Heartbeat() as hb:
                    self._on_heartbeat(peer, hb)
                case Bye(reason=reason):
                    self._peers.gone(peer, "quit" if reason in ("quit", "") else reason)
        elif frame.socket == "broadcast":
            if not self._authorized(peer, env.message, "broadcast"):
                return
            self._peers.heard(peer)
            if isinstance(env.message, Broadcast):
                self._emit(BroadcastReceived(self._peers.info(peer), env.message.text,
                                             env.sent_at))
        else:
            self._peers.heard(peer)
            sealed = env.message
            if not isinstance(sealed, Sealed) or room_topic(sealed.room_id) != frame.topic:
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

    # ---------------------------------------------------------------- presence

    def _on_heartbeat(self, peer: bytes, hb: Heartbeat) -> None:
        if hb.card.peer_id != peer:
            self.stats["dropped_spoofed"] += 1
            return
        self._peers.learn(hb.card, source="heartbeat", color=hb.color, started_at=hb.started_at)
        self._peers.heard(peer)
        hosted_ids = {room.room_id for room in hb.hosted}
        for jr in self._rooms.values():
            if jr.state.host == peer and jr.room_id not in hosted_ids:
                # Our host does not host the room any more (it merged into another side, or
                # handed off and we missed it): its answer points us at the current host.
                self._ask_state(jr, peer)
        self._peers.offer(hb.known, peer)
        known = self._peers.get(peer)
        self._directory.from_heartbeat(peer, known.card if known is not None else None,
                                       hb.hosted)

    def _peer_gone(self, peer: bytes, reason: str) -> None:
        self._directory.forget_host(peer)
        for jr in list(self._rooms.values()):
            self._member_gone(jr, peer, reason)

    def _peer_renamed(self, pid: bytes, name: str) -> None:
        for jr in self._rooms.values():
            if (jr.core.is_host and rules.is_member(jr.state, pid)
                    and jr.core.member_renamed(pid, name) is not None):
                self._host_publish(jr, jr.state)

    def _member_gone(self, jr: JoinedRoom, peer: bytes, reason: str) -> None:
        if not rules.is_member(jr.state, peer):
            return
        if jr.core.is_host:
            change = rules.LEFT if reason == "quit" else rules.VANISHED
            self._host_remove(jr, peer, change, "")
        elif peer == jr.state.host:
            self._run_watch(jr, hw.HostGone(self._clock.monotonic(), jr.state,
                                            self._peers.is_alive))

    # ---------------------------------------------------------------- direct

    def _on_direct(self, peer: bytes, env: Envelope, address: str, now: float) -> None:
        m = env.message
        match m:
            case Hello():
                self._peers.on_hello(peer, m, address)
            case Peers():
                self._peers.on_peers(peer, m, address)
            case Ping():
                self._wire.send(peer, Pong(m.nonce))
            case Pong():
                self._wire.take_pong(m)
                pong = hw.PongFrom(self._clock.monotonic(), peer, m.nonce)
                for jr in list(self._rooms.values()):
                    if jr.watch is not None:
                        self._run_watch(jr, pong)
            case Private():
                if self.peer_id not in m.to:
                    self.stats["dropped_misdirected"] += 1
                    return
                self._peers.pin(peer)
                self._emit(Message(None, self._peers.info(peer), m.text, True, env.sent_at, 0,
                                   tuple(self._peers.info(p) for p in m.to)))
            case JoinRequest():
                self._on_join_request(peer, m, now, address)
            case JoinChallenge() | JoinAccept() | JoinRefusal() | CommandResult():
                self._wire.take_reply(m)
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
                self._chat.on_history_request(peer, m)
            case HistoryReply():
                self._chat.on_history_reply(peer, m)
            case StateRequest():
                asked = self._rooms.get(m.room_id)
                # A member or a former member in good standing may ask (the state holds no
                # key): after a merge, our former members follow our answer to the room's
                # current host. The key goes to current members only.
                if asked is not None:
                    self._wire.send(peer, StatePush(asked.room_id, asked.core.blob))
                    epoch = asked.state.key_epoch
                    if (asked.core.is_host and epoch in asked.keys
                            and rules.is_member(asked.state, peer)):
                        self._distribute_key(asked, epoch, to=[peer])
            case StatePush():
                self._on_state_blob(m.room_id, m.state, peer, direct=True)
            case _:
                self.stats["dropped_unexpected"] += 1

    # ---------------------------------------------------------------- rooms: sealed payloads

    def _open_sealed(self, jr: JoinedRoom, peer: bytes, sealed: Sealed, now: float) -> None:
        key = jr.keys.get(sealed.epoch)
        if key is None:
            # Its KeyUpdate may still be on the way: wait for it, bounded (keyring.Keyring).
            self.stats["dropped_no_key"] += jr.keys.park(peer, sealed, self._clock.monotonic())
            self._ask_state(jr, jr.state.host)  # a key we missed: the host sends it again
            return
        env = self._wire.unseal(peer, sealed, key)
        if env is None or not self._authorized(peer, env.message, "inner", jr):
            return
        match env.message:
            case Chat(batch=blob):
                self._chat.take_batch(jr, blob, verify=False, live=True, author=peer)
            case StateAnnounce(state=blob):
                self._on_state_blob(jr.room_id, blob, peer, direct=False)
            case Heads() as heads:
                self._chat.on_heads(jr, peer, heads)
                if (heads.term, heads.version) > (jr.state.term, jr.state.version):
                    self._ask_state(jr, peer)

    def _ask_state(self, jr: JoinedRoom, peer: bytes) -> None:
        if peer != self.peer_id and jr.state_ask_due(peer, self._clock.monotonic(),
                                                     self.timings.gap_fill_interval_s,
                                                     self.limits.max_peers):
            self._wire.send(peer, StateRequest(jr.room_id))

    # ---------------------------------------------------------------- rooms: state

    def _on_state_blob(self, room_id: bytes, blob: bytes, peer: bytes, direct: bool) -> None:
        jr = self._rooms.get(room_id)
        if jr is None:
            return
        new = jr.core.open_state(blob)
        old = jr.state
        judgement = self._watch(jr).judge(
            old, new, peer, direct, self._clock.monotonic(),
            self._peers.last_heard(old.host), jr.removed)
        match judgement.verdict:
            case hw.Verdict.TAKE:
                self._after_state_change(jr, jr.core.adopt(rules.SignedState(new, blob)), new)
            case hw.Verdict.FOLLOW:
                self._start_rejoin(jr, new, merge=True)
            case hw.Verdict.STEP_DOWN:
                if not jr.merging:
                    jr.merging = True
                    self._tasks.spawn(self._merge_into(jr, new.host))
            case hw.Verdict.REFUSE if judgement.reason == "rejected_claims":
                self.stats["rejected_claims"] += 1
            case hw.Verdict.REFUSE if judgement.reason:
                self.stats["dropped_" + judgement.reason] += 1

    def _after_state_change(self, jr: JoinedRoom, old: RoomState, new: RoomState) -> None:
        """Emit events for a state change and act on it (host side and member side alike)."""
        self._watch(jr).handle(hw.StateChanged(self._clock.monotonic(), old, new))
        jr.note_state(new)
        self._log.save_room(new.room_id, new.name, jr.core.blob)
        if new.bans != old.bans or new.members != old.members:
            self._peers.sync_rooms()
        outcome = state_change(old, new, self.peer_id, self._peers.info)
        for event in outcome.events:
            self._emit(event)
        if outcome.action is StateAction.DROP:
            self._drop_room(jr)
            return
        if outcome.action is StateAction.REJOIN:
            if not self._tasks.closed:
                # The host lost us for a while (a stall, a flaky link): come back and fetch
                # what we missed, rather than drop out of the room.
                self._emit(Notice(f"the host of {new.name} lost contact with you: rejoining"))
                self._start_rejoin(jr, new)
            return
        if outcome.host_changed:
            if outcome.became_host:
                self._became_host(jr, old)
            elif outcome.stopped_hosting:
                self._tasks.spawn(self._withdraw_room(jr))
        if jr.core.is_host:
            self._tasks.spawn(self._announce_room(jr))

    def _became_host(self, jr: JoinedRoom, old: RoomState) -> None:
        """A handoff made us host: a fresh key shuts out whoever left with the old host."""
        epoch = self._new_key(jr)
        jr.core.rekey(epoch)
        self._distribute_key(jr, epoch)
        self._host_publish(jr, old, announce_only=True)

    def _enter_room(self, jr: JoinedRoom) -> None:
        used = self._log.next_seq(jr.room_id, self.peer_id) - 1
        jr.own_seq = jr.reserved_seq = max(used, self._log.reserved_seq(jr.room_id,
                                                                        self.peer_id))
        # Numbers skipped after a crash are ours and settled: nothing there to fetch.
        jr.tracker.set_base(self.peer_id, jr.own_seq)
        self._rooms.add(jr)
        self._peers.sync_rooms()
        jr.ever_members.update(rules.member_ids(jr.state))
        self._transport.subscribe(room_topic(jr.room_id))
        self._log.save_room(jr.room_id, jr.state.name, jr.core.blob)

    def _drop_room(self, jr: JoinedRoom) -> None:
        self._chat.flush(jr)
        if not self._rooms.remove(jr):
            return
        self._peers.sync_rooms()
        if jr.own_seq:
            # A clean exit gives back the unused numbers, so a restart resumes without a gap.
            self._log.reserve_seq(jr.room_id, self.peer_id, jr.own_seq)
        self._transport.unsubscribe(room_topic(jr.room_id))
        if jr.core.is_host:
            self._tasks.spawn(self._withdraw_room(jr))

    def _room_handle(self, jr: JoinedRoom) -> Room:
        if jr.handle is None:
            jr.handle = Room(self, jr.room_id)
        return jr.handle

    # ---------------------------------------------------------------- rooms: host side

    def _host_publish(self, jr: JoinedRoom, old: RoomState, announce_only: bool = False
                      ) -> None:
        """Publish our new signed state; emit events for the change unless already done."""
        self._push_state(jr)
        if announce_only:
            jr.ever_members.update(rules.member_ids(jr.state))
            self._log.save_room(jr.room_id, jr.state.name, jr.core.blob)
            self._tasks.spawn(self._announce_room(jr))
            return
        self._after_state_change(jr, old, jr.state)

    def _push_state(self, jr: JoinedRoom, seal_epoch: int | None = None) -> None:
        """Our signed state to the room (sealed with ``seal_epoch``, default the current
        key) and, since a PUB frame can be lost, straight to every member too."""
        self._publish_room(jr, StateAnnounce(jr.core.blob), epoch=seal_epoch)
        for m in jr.state.members:
            if m.peer_id != self.peer_id:
                self._wire.send(m.peer_id, StatePush(jr.room_id, jr.core.blob))

    def _new_key(self, jr: JoinedRoom) -> int:
        """A fresh room key, kept in the (bounded) key ring; its epoch."""
        epoch, key = rules.new_room_key(self._random_bytes)
        self._install_key(jr, epoch, key)
        return epoch

    def _distribute_key(self, jr: JoinedRoom, epoch: int,
                        to: Iterable[bytes] | None = None) -> None:
        """The key of ``epoch``, sealed to each member of the current state (or to ``to``)."""
        key = jr.keys[epoch]
        targets = to if to is not None else rules.member_ids(jr.state)
        for pid in targets:
            if pid != self.peer_id:
                self._wire.send(pid, KeyUpdate(jr.room_id, epoch, rules.seal_key(self.identity, pid,
                                                                            key)))

    def _host_remove(self, jr: JoinedRoom, peer: bytes, change: str, reason: str) -> None:
        old = jr.state
        jr.note_removal(peer, change, self.limits.max_peers)
        epoch = self._new_key(jr)
        jr.core.remove_member(peer, change, reason, new_epoch=epoch)
        self._distribute_key(jr, epoch)
        if change in (rules.KICKED, rules.BANNED):
            self._wire.send(peer, StatePush(jr.room_id, jr.core.blob))
        self._host_publish(jr, old)

    def _on_join_request(self, peer: bytes, req: JoinRequest, now: float, address: str = ""
                         ) -> None:
        """Run the admission core's decision (meshchat/admission.py) on a join request."""
        jr = self._rooms.get(req.room_id)
        lineage = None if jr is None else Lineage(jr.ever_members, jr.removed, jr.dropped_silent)
        decision = self._admission.decide(None if jr is None else jr.core.current, lineage, req,
                                          peer, address, self._clock.monotonic())
        if decision.token_refused:
            self.stats["dropped_merge_" + decision.token_refused] += 1
        match decision:
            case Refuse(reason=reason, detail=detail):
                self.stats["dropped_join_" + reason] += 1
                self._wire.send(peer, JoinRefusal(req.room_id, req.request_id, reason, detail))
            case Challenge():
                self._wire.send(peer, JoinChallenge(req.room_id, req.request_id, decision.salt,
                                               decision.nonce, decision.opslimit,
                                               decision.memlimit))
            case Admit() if jr is not None:
                if decision.merged_from is not None:
                    self._on_merge_join(jr, decision.merged_from)
                jr.dropped_silent.discard(peer)
                jr.told_to_rejoin.pop(peer, None)
                self._admit(jr, peer, decision.name, req.request_id, now,
                            full_history=decision.full_history)

    def _admit(self, jr: JoinedRoom, peer: bytes, name: str, request_id: int, now: float,
               full_history: bool = False) -> None:
        old = jr.state
        jr.core.add_member(peer, name, now)
        epoch, key = jr.seal_key()
        self._chat.flush(jr)
        rows = self._log.last(jr.room_id, self.limits.history_on_join)
        blobs = self._chat.batch_blobs(jr.room_id, rows)
        # The newest that fit in half a frame; the joiner fetches the rest of the backlog
        # windows (heads: where each author's backlog starts) before its join returns.
        history = tuple(blobs[newest_that_fit([len(b) for b in blobs],
                                              self.limits.max_frame_bytes // 2):])
        heads = () if full_history else jr.sync.join_heads((row.sender, row.seq)
                                                           for row in rows)
        self._wire.send(peer, JoinAccept(jr.room_id, request_id, jr.core.blob,
                                    rules.seal_key(self.identity, peer, key), epoch,
                                    history, heads))
        self._host_publish(jr, old)

    def _on_host_command(self, peer: bytes, cmd: HostCommand) -> None:
        jr = self._rooms.get(cmd.room_id)

        def answer(ok: bool, error: str = "", detail: str = "") -> None:
            self._wire.send(peer, CommandResult(cmd.room_id, cmd.request_id, ok, error, detail))

        if jr is None:
            answer(False, "not_found", "no such room here")
            return
        if not jr.core.is_host:
            answer(False, "moved", jr.state.host.hex())
            return
        # Host-only operations are only ever done by the host for the host; a request from
        # anyone else is refused here, whatever its client allowed.
        answer(False, "not_host", f"only the host can {mod.verb(cmd.op)}")

    def _ask_to_rejoin(self, jr: JoinedRoom, peer: bytes) -> None:
        if jr.rejoin_ask_due(peer, self._clock.monotonic(), self.timings.gap_fill_interval_s):
            self._wire.send(peer, StatePush(jr.room_id, jr.core.blob))

    def _on_key_update(self, peer: bytes, m: KeyUpdate) -> None:
        jr = self._rooms.get(m.room_id)
        if jr is None:
            return
        self._install_key(jr, m.epoch, rules.unseal_key(self.identity, peer, m.sealed_key))

    def _install_key(self, jr: JoinedRoom, epoch: int, key: bytes) -> None:
        """Keep a room key and open what arrived sealed with it before it did."""
        for parked in jr.keys.install(epoch, key):
            self._open_sealed(jr, parked.sender, parked.sealed, self._clock.time())

    # ---------------------------------------------------------------- host operations

    async def _host_op(self, jr: JoinedRoom, request: str, *args: str) -> None:
        """A host-only operation the user asked for: done here if we host, else asked of
        the host (which refuses it)."""
        if not jr.core.is_host:
            await self._remote_host_op(jr, request, args)
            return
        op = await self._moderation_op(jr, request, args)
        old = jr.state
        if mod.removes_member(op, old):
            assert isinstance(op, mod.KickPeer | mod.BanPeer)
            self._host_remove(jr, op.target, rules.KICKED if isinstance(op, mod.KickPeer)
                              else rules.BANNED, op.reason)
            return
        epoch = self._new_key(jr) if isinstance(op, mod.SetPassword) else None
        mod.apply(jr.core, op, epoch)
        if epoch is not None:
            self._distribute_key(jr, epoch)
        self._host_publish(jr, old)

    async def _moderation_op(self, jr: JoinedRoom, request: str, args: Sequence[str]
                             ) -> mod.ModerationOp:
        """The user's request with names resolved; raises a clear error if it cannot be."""
        reason = args[1] if len(args) > 1 else ""
        match request:
            case "handoff":
                target = self._member_id(jr, args[0])
                if target == self.peer_id:
                    raise MeshchatError("you are already the host")
                return mod.Handoff(target)
            case "kick" | "ban":
                target = self._peers.resolve(args[0])
                if target == self.peer_id:
                    raise MeshchatError(f"you cannot {request} yourself")
                if request == "kick":
                    if not rules.is_member(jr.state, target):
                        raise PeerNotFound(f"{args[0]} is not in this room")
                    return mod.KickPeer(target, reason)
                return mod.BanPeer(target, self._peers.info(target).name, reason)
            case "unban":
                return mod.UnbanPeer(self._ban_id(jr, args[0]))
            case "lock":
                return mod.LockRoom()
            case "unlock":
                return mod.UnlockRoom()
            case "close":
                return mod.CloseRoom()
            case "rename":
                new = args[0].strip()
                if not new or len(new) > self.limits.max_room_name_chars:
                    raise MeshchatError("a room name is 1 to "
                                        f"{self.limits.max_room_name_chars} characters")
                return mod.RenameRoom(new)
            case "password":
                verifier = None
                if args[0]:
                    verifier = await asyncio.to_thread(rules.make_verifier, args[0],
                                                       self._random_bytes)
                return mod.SetPassword(verifier)
        raise MeshchatError(f"unknown room operation {request}")

    async def _remote_host_op(self, jr: JoinedRoom, op: str, args: Sequence[str]) -> None:
        """Ask the host: it refuses anything host-only from a non-host, and says so."""
        rid = self._wire.next_request_id()
        command = HostCommand(jr.room_id, rid, op, tuple(a for a in args if a))
        try:
            reply = await self._wire.request_once(jr.state.host, command, rid,
                                                  self.timings.request_timeout_s)
        except TimeoutError as exc:
            raise NotHost(f"only the host can {mod.verb(op)}") from exc
        if isinstance(reply, CommandResult) and not reply.ok:
            raise NotHost(reply.detail or f"only the host can {mod.verb(op)}")

    def _member_id(self, jr: JoinedRoom, who: str) -> bytes:
        pid = self._peers.resolve(who)
        if not rules.is_member(jr.state, pid):
            raise PeerNotFound(f"{who} is not in this room")
        return pid

    def _ban_id(self, jr: JoinedRoom, who: str) -> bytes:
        q = who.strip().casefold().lstrip("#")
        hits = [b.peer_id for b in jr.state.bans
                if b.name.casefold() == q or (len(q) >= 4 and fingerprint_of(b.peer_id)
                                              .startswith(q))]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise AmbiguousName(who, [f"{self._peers.info(p).name} ({fingerprint_of(p)[:8]})"
                                      for p in hits])
        raise PeerNotFound(f"{who} is not banned here (see /banned)")

    # ---------------------------------------------------------------- joining

    async def _join_listing(self, listing: Listing, password: str | None,
                            merge_token: bytes = b"", rejoin: bool = False) -> Room:
        host_id = listing.host.peer_id
        if host_id == self.peer_id:
            jr = self._rooms.get(listing.room_id)
            if jr is not None:
                return self._room_handle(jr)
            raise RoomNotFound("that room is hosted here but no longer exists")
        if listing.room_id in self._rooms and not (merge_token or rejoin):
            return self._room_handle(self._rooms[listing.room_id])
        self._peers.learn(listing.host, "introduction")
        rid = self._wire.next_request_id()
        request = JoinRequest(listing.room_id, self.name, rid, b"", b"", merge_token)
        try:
            reply = await self._wire.request(host_id, request, rid, self.timings.join_timeout_s)
        except Timeout:
            # A host that banned us refuses our key at the transport, so it cannot say so;
            # the last state we saw of the room can.
            last = self._rooms.last_state(listing.room_id)
            if last is not None and rules.is_banned(last, self.peer_id):
                raise JoinRefused("banned", "you are banned from this room") from None
            raise
        if isinstance(reply, JoinChallenge):
            if not password:
                raise JoinRefused("password", "this room needs a password")
            # The host picks the Argon2id cost; an unbounded one would take our memory in a
            # thread nobody can cancel. Refuse before any hashing starts.
            too_costly = admission.challenge_refusal(reply, self.limits)
            if too_costly is not None:
                self.stats["dropped_join_cost"] += 1
                raise JoinRefused(too_costly.reason, too_costly.detail)
            proof = await asyncio.to_thread(
                rules.password_proof, password, reply.salt, reply.opslimit, reply.memlimit,
                listing.room_id, self.peer_id, reply.nonce,
            )
            rid = self._wire.next_request_id()
            request = JoinRequest(listing.room_id, self.name, rid, reply.nonce, proof, b"")
            reply = await self._wire.request(host_id, request, rid, self.timings.join_timeout_s)
        if isinstance(reply, JoinRefusal):
            if reply.reason == "moved":
                held = self._rooms.get(listing.room_id)
                target = admission.moved_target(
                    reply.detail, listing.room_id, host_id,
                    held.state if held is not None else self._rooms.last_state(listing.room_id),
                    self._codec)
                if target is None:
                    self.stats["dropped_moved_unsigned"] += 1
                    raise JoinRefused("moved", "the room moved to a host no signed state names")
                new_host = await self._peers.wait_for(target, self.timings.discovery_wait_s)
                if new_host is None:
                    raise JoinRefused("moved", "the room's new host is not reachable yet")
                raise _Moved(Listing(listing.room_id, listing.name, new_host.card,
                                      listing.members, listing.locked, listing.has_password,
                                      listing.term, "moved"))
            raise JoinRefused(reply.reason, reply.detail)
        if not isinstance(reply, JoinAccept):
            raise JoinRefused("protocol", "unexpected answer from the host")
        room = self._accept_join(listing.room_id, host_id, reply,
                                 merge=bool(merge_token) or rejoin)
        await self._chat.fetch_backlog(listing.room_id, host_id)
        return room

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
            jr = JoinedRoom(core, Keyring.with_key(self.limits, reply.key_epoch, key),
                             HistorySync(self.limits, self.timings))
            for sender, seq in self._log.heads(room_id).items():
                jr.tracker.set_base(sender, seq)
            self._enter_room(jr)
            if not merge:
                # What is older than the backlog is settled; the backlog itself is not, so
                # it is taken (and what did not fit is fetched), not seen as duplicates.
                jr.backlog = jr.sync.begin_join(reply.heads)
        for blob in reply.history:
            with contextlib.suppress(ProtocolError):
                self._chat.take_batch(jr, blob, verify=True, live=False, emit=False,
                                 source=Source.JOIN)
        if old is None and not merge:
            jr.sync.settle_join(reply.heads)
        if previous is not None:
            self._after_state_change(jr, previous, state)
        self._chat.publish_heads(jr)
        return self._room_handle(jr)

    async def _leave(self, room_id: bytes, reason: str) -> None:
        jr = self._rooms.get(room_id)
        if jr is None:
            raise NotInRoom("you are not in this room")
        if jr.core.is_host:
            others = [m.peer_id for m in jr.state.members if m.peer_id != self.peer_id]
            succ = rules.successor(jr.state, lambda p: self._peers.is_alive(p)) or (
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
            self._wire.send(jr.state.host, Leave(room_id, "quit" if reason == "quit" else "left"))
            self._drop_room(jr)

    # ---------------------------------------------------------------- partitions

    def _check_partition(self, hosted: HostedRoom, other_host: bytes) -> None:
        """Another node says it hosts a room we host. Only a hint: if that peer is of our
        room's lineage and would outrank us, ask it for its signed state; the answer decides
        (``HostWatch.judge``). A stranger's listing changes nothing."""
        jr = self._rooms.get(hosted.room_id)
        if jr is None or not jr.core.is_host or jr.merging:
            return
        hint = self._watch(jr).judge_hint(jr.state, other_host, hosted.term, jr.removed)
        if hint.verdict is hw.Verdict.ASK:
            self._ask_state(jr, other_host)
        elif hint.reason:
            self.stats["dropped_" + hint.reason] += 1

    async def _merge_into(self, jr: JoinedRoom, other_host: bytes) -> None:
        """Step down (a state of a host of our lineage outranks ours): join the winning
        host's room, then send our members there."""
        peer = self._peers.get(other_host)
        try:
            if peer is None:
                return
            listing = Listing(jr.room_id, jr.state.name, peer.card, 0, False, False, 0,
                               "merge")
            members = [m.peer_id for m in jr.state.members if m.peer_id != self.peer_id]
            token = jr.core.blob
            old_state = jr.state
            await self._join_following(listing, None, merge_token=token)
            winner = self._rooms.get(jr.room_id)
            if winner is None or winner.state.host != other_host:
                return
            for pid in members:
                self._wire.send(pid, Peers((peer.card,)))
                self._wire.send(pid, StatePush(jr.room_id, winner.core.blob))
            self._emit(Notice(f"the network healed: {old_state.name} merged into the room "
                              f"hosted by {self._peers.info(other_host).name}"))
        except MeshchatError as exc:
            log.info("merge into %s failed: %s", fingerprint_of(other_host), exc)
        finally:
            cur = self._rooms.get(jr.room_id)
            if cur is not None:
                cur.merging = False

    def _start_rejoin(self, jr: JoinedRoom, state: RoomState, merge: bool = False) -> None:
        """Join the room again at ``state``'s host: after the host lost contact with us, or
        (``merge``) after a partition healed and our host stepped down in its favour."""
        if jr.merging:
            return
        jr.merging = True
        self._tasks.spawn(self._rejoin(jr, state, merge))

    async def _rejoin(self, jr: JoinedRoom, state: RoomState, merge: bool) -> None:
        try:
            peer = await self._peers.wait_for(state.host, self.timings.join_timeout_s)
            if peer is None:
                raise RoomNotFound("the host is gone")
            listing = Listing(jr.room_id, state.name, peer.card, 0, False, False, state.term,
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

    def _on_merge_join(self, jr: JoinedRoom, other: RoomState) -> None:
        """The other side's host of a healed partition merges in (its token was taken):
        vouch for its members and union its bans."""
        jr.merge_allow.update(rules.member_ids(other))
        old = jr.state
        if jr.core.merge_bans(other.bans) is not None:
            self._host_publish(jr, old)

    # ---------------------------------------------------------------- elections

    def _maybe_claim(self, jr: JoinedRoom, vanished: bytes) -> None:
        """Run the watch's ``Claim``: take over the room of a host that does not answer."""
        if jr.core.is_host or jr.state.host != vanished:
            return
        old = jr.state
        epoch = self._new_key(jr)
        jr.core.claim(vanished, epoch)
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
                self._peers.grace(now)
                self.stats["stalls"] += 1
                for jr in list(self._rooms.values()):
                    self._run_watch(jr, hw.Stalled(now))
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
        self._peers.tick(now)
        if not self._listen_only:
            self._wire.publish(TOPIC_PRESENCE, self._heartbeat(include_known=beat % 20 == 0))
        self._peers.tick_liveness(now)
        gap_every = max(1, round(self.timings.gap_fill_interval_s / self.timings.
                                 heartbeat_interval_s))
        for jr in list(self._rooms.values()):
            if beat % gap_every == 0:
                self._chat.publish_heads(jr)
            self._watch_host(jr, now)

    def _watch(self, jr: JoinedRoom) -> hw.HostWatch:
        if jr.watch is None:
            jr.watch = hw.HostWatch(self.peer_id, jr.state, self._clock.monotonic(),
                                    self.timings, self.limits, self._wire.next_request_id)
        return jr.watch

    def _run_watch(self, jr: JoinedRoom, event: hw.Input) -> None:
        """Feed the room's host watch one input and run its effects."""
        for effect in self._watch(jr).handle(event):
            match effect:
                case hw.SendPing(peer=peer, nonce=nonce):
                    self._wire.send_ping(peer, nonce)
                case hw.Claim(vanished=vanished):
                    self._maybe_claim(jr, vanished)

    def _on_peer_disconnected(self, peer: bytes) -> None:
        """A peer's connection closed: if it hosts one of our rooms, ask it at once."""
        if self._tasks.closed:
            return
        now = self._clock.monotonic()
        for jr in list(self._rooms.values()):
            if jr.state.host == peer and not jr.core.is_host:
                self._run_watch(jr, hw.ConnectionDropped(now))

    def _watch_host(self, jr: JoinedRoom, now: float) -> None:
        self._run_watch(jr, hw.Tick(now, jr.state, self._peers.last_heard(jr.state.host),
                                    self._peers.is_alive))

    def _heartbeat(self, include_known: bool = False) -> Heartbeat:
        hosted = tuple(jr.hosted() for jr in self._rooms.announced())
        return self._peers.heartbeat(hosted, include_known)

    # ================================================================ discovery

    async def _announce_room(self, jr: JoinedRoom) -> None:
        if not jr.announce or not jr.core.is_host or self._tasks.closed:
            return
        await self._directory.announce(jr.state)

    async def _withdraw_room(self, jr: JoinedRoom) -> None:
        await self._directory.withdraw(jr.room_id)

    def _room_infos(self) -> list[RoomInfo]:
        hosted = [jr.state for jr in self._rooms.announced()]
        return self._directory.infos(hosted, self._rooms)

class _Moved(Exception):
    def __init__(self, listing: Listing) -> None:
        self.listing = listing


