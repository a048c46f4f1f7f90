"""The running node: the public API that the CLI, the TUI and bots use.

``Node`` is a facade: ``start`` builds the parts of ``meshchat.runtime`` (its docstring has
the map), each given only the collaborators it uses, and the public methods delegate to them.
Anything bad a peer sends is dropped and counted in ``Node.stats`` (one ``Counter`` shared by
every part) and never raises out of the node. ``Room``, a handle on one joined room, and the
details the node gives are in ``meshchat.handles``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from .admission import Admission
from .authority import Gate
from .clock import Clock, as_clock
from .commands import clean_away
from .config import Limits, Timings
from .discovery.base import Discovery, DiscoveryHandlers
from .discovery.interfaces import resolve_interfaces
from .discovery.static import CardServer
from .errors import MeshchatError, PeerNotFound
from .events import (
    AwayChanged,
    BroadcastReceived,
    Event,
    Message,
    PeerInfo,
    Renamed,
    RoomInfo,
    Transfer,
)
from .fdlimit import raise_fd_limit
from .handles import BanInfo, PeerDetails, Room, RoomDetails
from .identity import Identity
from .liveness import LivenessTable
from .peertable import PeerTable
from .protocol.codec import Codec
from .protocol.messages import Broadcast, Bye, Private
from .runtime.away import AwayResponder
from .runtime.chat import RoomChat, check_text
from .runtime.directory import Directory, make_discovery
from .runtime.emitter import Emitter
from .runtime.files import Files
from .runtime.hostops import HostOps
from .runtime.inbound import Inbound
from .runtime.joining import Joining
from .runtime.local import LocalPeer
from .runtime.peers import PeerBook
from .runtime.rooms import JoinedRoom, Rooms
from .runtime.session import Sessions
from .runtime.tasks import Tasks
from .runtime.ticker import Ticker
from .runtime.wire import TOPIC_BROADCAST, TOPIC_PRESENCE, Gatekeeper, Wire
from .storage.keystore import default_data_dir
from .storage.log import MessageLog
from .storage.peers import KnownPeers
from .storage.transfers import TransferStore
from .transport.base import LinkEvents, Transport
from .transport.zmq import ZmqTransport

__all__ = ["BanInfo", "Node", "PeerDetails", "Room", "RoomDetails"]


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
        raise_fd_limit(self.limits.max_peers)
        if self._listen_only:
            # Only looking (``meshchat rooms``): a throwaway identity and data dir, nothing
            # announced, nothing written where the user's own node keeps its name and keys.
            self._scratch = tempfile.TemporaryDirectory(prefix="meshchat-listen-")
            self.data_dir = Path(self._scratch.name)
            self._requested_name = self._requested_name or "listener"
        else:
            self.data_dir = self._data_dir_arg or default_data_dir()
        # The stores are opened and the settings saved in one thread once the node has bound
        # and announced itself (``_open_stores``); a store used before that waits for its
        # opening (MessageLog, TransferStore).
        self._me = me = LocalPeer.load(self.data_dir, self._requested_name,
                                       self._requested_color, defer_save=True)
        self.identity: Identity = me.identity
        self.peer_id, self.fingerprint = me.peer_id, me.fingerprint
        self._log = MessageLog(self.data_dir / "messages.sqlite", deferred=True)
        try:
            await self._bind_and_announce(me)
            opening = asyncio.ensure_future(asyncio.to_thread(self._open_stores, me))
            self._started = True
            if not self._listen_only:
                self._ticker.publish_heartbeat()
            self._tasks.spawn(self._ticker.run(), name="meshchat-ticker")
            if not self._listen_only:
                self._tasks.spawn(self._files.run(), name="meshchat-files")
            await opening  # the loop answers peers meanwhile
            self._files.load()
        except BaseException:
            if self._started:
                await self.close("quit")
            else:
                self._log.close()
            raise

    def _open_stores(self, me: LocalPeer) -> None:
        """In a thread: open the message log and the transfer store, save the settings, one
        after the other. Each syncs to disk; on two cores, three threads started with the
        node slowed its announcement and its first Hello (discovery p50 18.9 ms), one
        thread started after the announcement leaves them be (14-15 ms)."""
        self._log.open()
        self._transfer_store.open()
        me.save_settings()

    async def _bind_and_announce(self, me: LocalPeer) -> None:
        me.started_at = self._clock.time()
        self._started_mono = self._clock.monotonic()
        addresses = (["127.0.0.1"] if self._loopback_only
                     else resolve_interfaces(self._interfaces))
        me.addresses = tuple(addresses)
        bind = addresses if (self._interfaces or self._loopback_only) else ["*"]
        if self._transport_arg is None:
            self._transport: Transport = ZmqTransport(self.limits)
        else:
            self._transport = self._transport_arg
        self._discovery = self._discovery_arg or make_discovery(
            me.addresses, self.identity, self._static_peers,
            mdns=self._use_mdns and not self._loopback_only, listen_only=self._listen_only)
        # The transfer store's first open syncs to disk: in a thread, so a slow disk never
        # stalls the loop and the node announces itself meanwhile (the message log does the
        # same); start() waits for it at the end.
        self._transfer_store = TransferStore(self.data_dir / "transfers.sqlite",
                                             deferred=True)
        self._build(me)
        self._transport.set_link_events(LinkEvents(
            on_handshake_failure=self._peers.handshake_failed, on_refused=self._peers.refused,
            on_disconnect=self._connection_dropped, on_reconnect=self._peers.reconnected,
            on_subscriber=self._ticker.subscriber_back))
        ports = await self._transport.start(self.identity, bind, self._inbound.on_incoming)
        me.router_port, me.pub_port = ports.router_port, ports.pub_port
        for topic in (TOPIC_PRESENCE, TOPIC_BROADCAST):
            self._transport.subscribe(topic)
        self._card_server = None
        if self._discovery_arg is None:
            self._card_server = CardServer(self.identity, me.card)
            me.card_port = await self._card_server.start(list(bind), self._card_port_wanted)
        await self._discovery.start(me.card(), DiscoveryHandlers(
            on_peer=self._peers.discovered,
            on_peer_removed=self._peers.discovery_removed,
            on_room=self._directory.discovered_room,
            on_room_removed=self._directory.discovered_room_removed,
        ))

    def _build(self, me: LocalPeer) -> None:
        """The runtime's parts, each given what it uses. Upward notices are callbacks; those
        to parts built later look them up when called."""
        limits, timings, clock, stats = self.limits, self.timings, self._clock, self.stats
        emit, tasks, rooms, log = self._events.emit, self._tasks, self._rooms, self._log
        codec = Codec(limits)
        known = KnownPeers(self.data_dir, max_peers=limits.max_known_peers,
                           max_pinned=limits.max_pinned_peers)
        admission = Admission(limits, codec, self.peer_id, self._random_bytes)
        self._wire = wire = Wire(self.peer_id, codec, self._transport, clock, limits, stats,
                                 first_request_id=int.from_bytes(self._random_bytes(4)))
        self._peers = peers = PeerBook(
            me, wire, self._transport, known, PeerTable(limits, self.peer_id, stats),
            LivenessTable(timings), emit, tasks, clock, limits, stats,
            listen_only=self._listen_only, room_states=rooms.states,
            on_gone=self._peer_gone,
            on_renamed=lambda pid, name: self._sessions.member_renamed(pid, name),
            refused_kept_s=timings.refused_peer_kept_s,
            on_new=lambda: self._ticker.nudge(),
            hosted=rooms.hosted_listing)
        gate = Gatekeeper(Gate(limits), wire, peers.is_known, rooms.get, clock, timings, stats)
        self._chat = chat = RoomChat(me, rooms, wire, codec, log, peers.info, emit, tasks,
                                     clock, limits, timings, stats)
        self._directory = directory = Directory(
            me, self._discovery, clock, timings, on_host_card=peers.discovered,
            on_rival=lambda room, host: self._sessions.check_partition(room, host),
            limits=limits, stats=stats)
        self._sessions = sessions = Sessions(
            me, rooms, wire, gate, chat, peers, directory, admission, log, self._transport,
            emit, tasks, clock, limits, timings, stats, self._random_bytes,
            rejoin=lambda jr, state, merge: self._joining.start_rejoin(jr, state, merge),
            step_down=lambda jr, host: self._joining.start_merge(jr, host))
        self._joining = Joining(me, rooms, sessions, chat, peers, wire, codec, log, emit,
                                tasks, clock, limits, timings, stats, self._random_bytes)
        self._hostops = HostOps(self.peer_id, sessions, wire, peers, limits, timings,
                                self._random_bytes)
        self._files = Files(self.data_dir, wire, peers, emit, tasks, clock, limits, timings,
                            stats, self._random_bytes, store=self._transfer_store)
        self._away = AwayResponder(me, wire, clock, limits, timings, stats)
        self._inbound = Inbound(self.peer_id, wire, gate, peers, directory, rooms, sessions,
                                chat, emit, tasks, clock, stats, files=self._files.on_frame,
                                away=self._away.on_private)
        self._ticker = Ticker(wire, peers, rooms, sessions, chat, log, clock, timings, stats,
                              listen_only=self._listen_only)

    def _connection_dropped(self, peer: bytes) -> None:
        if self._tasks.closed:
            return
        self._sessions.disconnected(peer)
        self._peers.connection_dropped(peer)

    def _peer_gone(self, peer: bytes, reason: str) -> None:
        self._directory.forget_host(peer)
        self._sessions.peer_gone(peer, reason)

    async def close(self, reason: str = "quit") -> None:
        """Leave every room (a host hands off first), say goodbye, and release everything."""
        if not self._started or self._tasks.closed:
            return
        self._tasks.closed = True
        for room_id in list(self._rooms):
            with contextlib.suppress(MeshchatError):
                await self._joining.leave(room_id, "quit")
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
        self._files.close()
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

    def _room_infos(self) -> list[RoomInfo]:
        return self._directory.infos([jr.state for jr in self._rooms.announced()], self._rooms)

    async def host(self, name: str, password: str | None = None, *, announce: bool = True
                   ) -> Room:
        """Create a room hosted by this node."""
        return self._room_handle(await self._joining.host(name, password, announce))

    async def join(self, name: str, password: str | None = None) -> Room:
        """Join the room called ``name`` on the network."""
        wait_s = max(self.timings.discovery_wait_s, 2.0 - self.uptime())
        listing = await self._directory.find(name, wait_s)
        return self._room_handle(await self._joining.join(listing, password))

    async def msg(self, to: str | Sequence[str], text: str) -> None:
        """A private message to one peer or several (names or fingerprint prefixes)."""
        text = check_text(text, self.limits)
        ids = self._peers.resolve_all([to] if isinstance(to, str) else to)
        message = Private(text, tuple(ids))
        for pid in ids:
            if pid == self.peer_id:
                continue
            if not self._wire.send(pid, message):
                raise PeerNotFound(f"{self._peers.info(pid).label} cannot be reached")
            self._peers.pin(pid)
        self._events.emit(Message(None, self.me, text, True, self._clock.time(), 0,
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
        self._events.emit(BroadcastReceived(self.me, text, self._clock.time()))

    async def rename(self, new_name: str) -> None:
        """Change this node's name; allowed once per ``Timings.rename_interval_s``."""
        old = self._me.rename(new_name, self._clock.time(), self.timings.rename_interval_s)
        if old is None:
            return
        self._ticker.publish_heartbeat()
        with contextlib.suppress(Exception):
            await self._discovery.update_node(self._me.card())
        self._sessions.member_renamed(self.peer_id, self.name)
        self._events.emit(Renamed(self.me, old, self.name))

    def set_color(self, color: str) -> None:
        self._me.set_color(color)
        self._ticker.publish_heartbeat()

    @property
    def away(self) -> str | None:
        """This node's away text (``/away``), or None when here."""
        return self._me.away

    def set_away(self, text: str | None) -> None:
        """Away with ``text`` (shown to others; a private message to this node gets it back,
        once a minute per sender), or back with None or a blank text. Control characters
        and runs of white space become one space; at most ``Limits.max_away_chars``."""
        most = self.limits.max_away_chars
        cleaned = clean_away(text, most + 1)  # one more than allowed: too long, or not
        if cleaned is not None and len(cleaned) > most:
            raise MeshchatError(f"an away text is at most {most} characters")
        if not self._away.set(text):
            return
        self._ticker.publish_heartbeat()  # others see it now, not at the next beat
        self._events.emit(AwayChanged(self.me, self._me.away))

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

    # ---------------------------------------------------------------- files (issue 7)

    async def send_file(self, to: str, path: str | os.PathLike[str]) -> Transfer:
        """Offer a file or a folder to a peer; returns once offered (direction "out")."""
        pid = self._peers.resolve(to)
        if pid == self.peer_id:
            raise PeerNotFound("you cannot send a file to yourself")
        return await self._files.send(pid, path)

    async def accept_file(self, transfer_id: str | None = None,
                          into: str | os.PathLike[str] | None = None) -> Transfer:
        """Accept an offer (the latest without an id) into ``into`` (default ``downloads/``
        in the data dir)."""
        return await self._files.accept(transfer_id, into)

    async def decline_file(self, transfer_id: str | None = None) -> Transfer:
        return await self._files.decline(transfer_id)

    async def cancel_transfer(self, transfer_id: str) -> Transfer:
        return await self._files.cancel(transfer_id)

    async def wait_transfer(self, transfer_id: str, timeout: float | None = None) -> Transfer:
        """The transfer once it is in a final state (done, failed, declined, cancelled)."""
        return await self._files.wait(transfer_id, timeout)

    def transfers(self) -> list[Transfer]:
        """Every transfer this node remembers, incoming and outgoing, interrupted included."""
        return self._files.transfers()

    def accept_files_from(self, *names: str, anyone: bool = False) -> None:
        """Offers from these peers (names) are accepted without asking; ``anyone``: all."""
        self._files.accept_from.update(n.lower() for n in names)
        self._files.accept_all = self._files.accept_all or anyone

    def _room_handle(self, jr: JoinedRoom) -> Room:
        if jr.handle is None:
            jr.handle = Room(self, jr.room_id)
        return jr.handle
