"""The peers this node knows: their cards, whether they are alive, and the links to them.

A card that comes from the peer itself (its Hello or heartbeat, on a channel pinned to its
key) makes it a peer; cards others vouch for are bounded candidates first
(``meshchat.peertable``). Liveness (``meshchat.liveness``) steps each peer from alive to
evasive (pinged) to gone. The known-peers file is written in a thread, batched. Bans of the
rooms this node holds reach the transport here (``sync_rooms``). Names are resolved here too:
a peer by name or fingerprint prefix, and the ``PeerInfo`` that events carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..clock import Clock
from ..commands import clean_away
from ..config import Limits
from ..errors import AmbiguousName, JoinRefused, PeerNotFound, ProtocolError
from ..events import AwayChanged, Event, Notice, PeerDiscovered, PeerGone, PeerInfo, Renamed
from ..identity import fingerprint_of, same_key
from ..liveness import Liveness, LivenessTable
from ..peertable import DISCOVERY, PeerEffect, PeerTable, Probe, Unprobe
from ..protocol.messages import Heartbeat, Hello, HostedRoom, Look, PeerCard, Peers, RoomState
from ..room import find_member
from ..storage.peers import KnownPeers
from ..transport.base import Transport
from .local import LocalPeer
from .tasks import Tasks
from .wire import Wire

__all__ = ["Peer", "PeerBook"]

log = logging.getLogger("meshchat.node")

HEARTBEAT_KNOWN_CARDS = 64  # cards a heartbeat carries when it shares the peers we know


@dataclass(slots=True)
class Peer:
    card: PeerCard
    color: str = ""
    started_at: float | None = None
    connected_to: tuple[str, int, int] | None = None
    info: PeerInfo | None = None
    away: str | None = None


class PeerBook:
    """The peer table and everything that follows from it.

    ``room_states()`` gives the states of the rooms this node holds (their members name
    peers the network forgot; their bans are denied at the transport). ``on_gone(peer,
    reason)`` runs after a peer is forgotten; ``on_renamed(peer, name)`` after a peer took a
    new name."""

    def __init__(self, me: LocalPeer, wire: Wire, transport: Transport, known: KnownPeers,
                 table: PeerTable, liveness: LivenessTable, emit: Callable[[Event], None],
                 tasks: Tasks, clock: Clock, limits: Limits, stats: Counter[str], *,
                 listen_only: bool, room_states: Callable[[], Iterable[RoomState]],
                 on_gone: Callable[[bytes, str], None],
                 on_renamed: Callable[[bytes, str], None],
                 refused_kept_s: float = 60.0,
                 on_new: Callable[[], None] = lambda: None,
                 hosted: Callable[[], tuple[HostedRoom, ...]] = tuple) -> None:
        self._me = me
        self._wire = wire
        self._transport = transport
        self.known = known
        self.table = table
        self._liveness = liveness
        self._emit = emit
        self._tasks = tasks
        self._clock = clock
        self._limits = limits
        self._stats = stats
        self._listen_only = listen_only
        self._room_states = room_states
        self._on_gone = on_gone
        self._on_renamed = on_renamed
        self._on_new = on_new  # a peer is new to us, or back: our presence is worth sending
        self._hosted = hosted  # the rooms we host, as our presence lists them
        self._refused: OrderedDict[bytes, float] = OrderedDict()  # peer -> when its ZAP said no
        self._refused_kept_s = refused_kept_s
        self._peers: dict[bytes, Peer] = {}
        # Peers that vanished but whose connections we keep, oldest first: ZeroMQ redials
        # them, and when the cut heals their next heartbeat brings them back. Nothing else
        # closes them (an expired probe of the same card must not); at most ``max_peers``
        # together with the live ones, so a LAN that comes and goes holds no fds for good.
        self._kept: OrderedDict[bytes, None] = OrderedDict()
        self._write: asyncio.Future[bool] | None = None
        self._written_at = clock.monotonic()
        self.changed = asyncio.Event()  # set whenever a peer is learnt

    def _hello(self) -> Hello:
        return self._me.hello(self._hosted())

    def __contains__(self, pid: object) -> bool:
        return pid in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._peers))

    def get(self, pid: bytes) -> Peer | None:
        return self._peers.get(pid)

    def is_known(self, pid: bytes) -> bool:
        """A peer, or a card we are probing: the authority table's "a peer we know"."""
        return pid in self._peers or self.table.is_candidate(pid)

    # ---------------------------------------------------------------- liveness

    def heard(self, pid: bytes) -> None:
        self._liveness.heard(pid, self._clock.monotonic())
        if self._refused:
            self._refused.pop(pid, None)  # it talks to us again: whatever refused us is over

    def refused_us(self, pid: bytes) -> bool:
        """Whether ``pid``'s ZAP turned our key down and we have heard nothing from it since
        (libzmq reports that once per streak, perhaps while it was only a probed card)."""
        return pid in self._refused

    def state(self, pid: bytes) -> Liveness:
        return self._liveness.state(pid)

    def is_alive(self, pid: bytes) -> bool:
        return self._liveness.is_alive(pid)

    def last_heard(self, pid: bytes) -> float | None:
        return self._liveness.last_heard(pid)

    def grace(self, now: float) -> None:
        """We were stalled ourselves: the silence meanwhile is ours, not the peers'."""
        self._liveness.grace(now)

    def connection_dropped(self, pid: bytes) -> None:
        """The transport saw our connection to ``pid`` close (it quit or was killed) or time
        out (ZMTP heartbeats: unplugged, frozen): a hint, answered with a ping; no answer
        within ``peer_suspect_s`` and it is gone."""
        if pid in self._peers and self._liveness.suspect(pid, self._clock.monotonic()):
            self._stats["peers_suspected"] += 1
            self._wire.send_ping(pid)

    def introduce(self, pid: bytes) -> None:
        """Say Hello to ``pid`` (it answers with the peers it knows)."""
        if not self._listen_only:
            self._wire.send(pid, self._hello())

    def reconnected(self, pid: bytes) -> None:
        """Our connection to ``pid`` is up again after it dropped: a partition healed. Either
        side may have given the other up meanwhile (a vanished peer keeps its links), so say
        Hello: its answer brings it back here, ours brings us back there; and publish
        presence soon (a host: its rooms, so a split room merges)."""
        if self._listen_only:
            return
        self._stats["peers_reconnected"] += 1
        self._wire.send(pid, self._hello())
        self._on_new()

    def tick_liveness(self, now: float, quiet_s: float = 0.0) -> None:
        """Step liveness; ``quiet_s``: how much longer peers may now be silent between their
        refreshes (a large LAN stretches them, ``meshchat.beats``)."""
        for peer, state in self._liveness.tick(now, quiet_s):
            if state is Liveness.EVASIVE:
                self._wire.send_ping(peer)
            elif state is Liveness.GONE:
                refused_at = self._refused.get(peer)
                if refused_at is not None and now - refused_at < self._refused_kept_s:
                    # It answers our handshakes with "no": silent to us, not gone.
                    self._liveness.heard(peer, now)
                    continue
                self.gone(peer, "vanished")

    # ---------------------------------------------------------------- names

    def info(self, pid: bytes, fallback_name: str = "?") -> PeerInfo:
        if pid == self._me.peer_id:
            return self._me.info
        peer = self._peers.get(pid)
        if peer is not None:
            info = peer.info
            if info is None or info.name != peer.card.name or info.color != peer.color or \
                    info.addresses != peer.card.addresses or info.away != peer.away:
                info = peer.info = PeerInfo(peer.card.name, fingerprint_of(pid),
                                            peer.card.addresses, pid, peer.color, peer.away)
            return info
        for state in self._room_states():
            m = find_member(state, pid)
            if m is not None:
                return PeerInfo(m.name, fingerprint_of(pid), (), pid)
        return PeerInfo(fallback_name, fingerprint_of(pid), (), pid)

    def alive(self) -> list[PeerInfo]:
        return [self.info(pid) for pid in self._peers
                if self._liveness.state(pid) is not Liveness.GONE]

    def resolve(self, who: str) -> bytes:
        """A peer by name (case-insensitive) or fingerprint prefix; this node included."""
        query = who.strip().lstrip("@")
        if not query:
            raise PeerNotFound("no name given")
        candidates: dict[bytes, str] = {self._me.peer_id: self._me.name}
        for pid, peer in self._peers.items():
            if self._liveness.state(pid) is not Liveness.GONE:
                candidates[pid] = peer.card.name
        for state in self._room_states():
            for m in state.members:
                candidates.setdefault(m.peer_id, m.name)
        by_name = [pid for pid, n in candidates.items() if n.casefold() == query.casefold()]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise AmbiguousName(query, [self.info(p).label for p in by_name])
        q = query.casefold().lstrip("#")
        if len(q) >= 4:
            by_fp = [pid for pid in candidates if fingerprint_of(pid).startswith(q)]
            if len(by_fp) == 1:
                return by_fp[0]
            if len(by_fp) > 1:
                raise AmbiguousName(query, [self.info(p).label for p in by_fp])
        raise PeerNotFound(f"no peer called {query!r} (see /list or /users)")

    def resolve_all(self, targets: Iterable[str]) -> list[bytes]:
        """Each peer named (names may be comma-separated), once, in order."""
        ids: list[bytes] = []
        for who in targets:
            for part in who.split(","):
                if part.strip():
                    pid = self.resolve(part.strip())
                    if pid not in ids:
                        ids.append(pid)
        if not ids:
            raise PeerNotFound("no recipient")
        return ids

    def pin(self, pid: bytes) -> None:
        """Someone we talked to: their name is never evicted from the known peers."""
        self.known.pin(pid)

    # ---------------------------------------------------------------- cards

    def learn(self, card: PeerCard, source: str, color: str | None = None,
              started_at: float | None = None, address_hint: str = "") -> None:
        """A card from the peer itself (``source`` 'hello' or 'heartbeat', on a channel pinned
        to its key): it becomes or stays a peer. Cards others vouch for are candidates first
        (``offer``, meshchat.peertable)."""
        pid = card.peer_id
        if pid == self._me.peer_id:
            return
        if not card.addresses and address_hint:
            card = PeerCard(pid, card.name, (address_hint,), card.router_port, card.pub_port,
                            card.card_port)
        peer = self._peers.get(pid)
        is_new = peer is None or self._liveness.state(pid) is Liveness.GONE
        probed = False
        was_kept = pid in self._kept
        if peer is None:
            self._kept.pop(pid, None)
            admission = self.table.admit(pid, self._clock.monotonic())
            self._run(admission.effects)  # a refusal may close its probe
            if admission.refusal is not None:
                self._stats["dropped_" + admission.refusal] += 1
                return
            probed = admission.probed
            peer = Peer(card)
            self._peers[pid] = peer
            self._trim_kept()
            for warning in self.known.observe(pid, card.name, list(card.addresses)):
                self._emit(Notice(warning, "warning"))
        elif peer.card.name != card.name:
            old = peer.card.name
            peer.card = card
            self.known.observe(pid, card.name, list(card.addresses))
            self._emit(Renamed(self.info(pid), old, card.name))
            self._on_renamed(pid, card.name)
        peer.card = card
        if color is not None:
            peer.color = color
        if started_at is not None:
            peer.started_at = started_at
        self._connect(pid)
        if is_new:
            # Back after a silence (a partition healed): the links kept through it may send
            # nothing for seconds yet (TCP's backoff), so fresh ones carry our Hello.
            if was_kept and self._transport.refresh(pid):
                self._stats["links_refreshed"] += 1
            self._liveness.heard(pid, self._clock.monotonic())
            if not self._listen_only and not probed:
                self._wire.send(pid, self._hello())
            self._emit(PeerDiscovered(self.info(pid)))
            self.changed.set()
            self._on_new()

    def away_from(self, pid: bytes, away: str | None) -> None:
        """The away text in the peer's own heartbeat or Hello, cleaned (``clean_away``);
        ``AwayChanged`` when it changed."""
        peer = self._peers.get(pid)
        if peer is None:
            return
        away = clean_away(away, self._limits.max_away_chars)
        if away != peer.away:
            peer.away = away
            self._emit(AwayChanged(self.info(pid), away))

    def on_hello(self, peer: bytes, hello: Hello, address: str) -> None:
        if hello.card.peer_id != peer:
            self._stats["dropped_spoofed"] += 1
            return
        self.learn(hello.card, "hello", hello.color, hello.started_at, address)
        if peer in self._peers and not self._listen_only:
            # (a refused one — a twin, one too many — learns nothing; a looking-only node
            # says nothing)
            cards = [p.card for pid, p in self._peers.items()
                     if pid != peer and p.card.addresses]
            self._wire.send(peer, Peers(tuple(cards[: self._limits.max_collection_items])))

    def on_look(self, peer: bytes) -> None:
        """A looking-only node (``meshchat rooms``) asks what we host: our Hello says it. It
        goes back the way the question came (we need not know the asker); the introduction
        budget bounds how often."""
        if not self._listen_only:
            self._stats["looks_answered"] += 1
            self._wire.send(peer, self._hello())

    def on_peers(self, peer: bytes, m: Peers, address: str) -> None:
        probed = self.table.candidate_card(peer)
        if probed is not None:  # a candidate answered our Hello: that proves it
            self.learn(probed, "hello", address_hint=address)
        self.offer(m.peers, peer)

    def offer(self, cards: Sequence[PeerCard], introducer: bytes) -> None:
        """Cards that ``introducer`` vouches for: candidates, probed within bounds."""
        self._run(self.table.offer(cards, introducer, self._clock.monotonic()))

    def _run(self, effects: Iterable[PeerEffect]) -> None:
        for effect in effects:
            match effect:
                case Probe(card=card):
                    # One dialled connection and a Hello; a looking-only node announces
                    # nothing (no peer dials its SUB), so it asks what the peer hosts.
                    self._transport.connect_peer(
                        card.peer_id, self._pick_address(card.addresses), card.router_port,
                        card.pub_port, subscribe=False)
                    self._wire.send(card.peer_id,
                                    Look() if self._listen_only else self._hello())
                case Unprobe(peer_id=pid):
                    # A probe of a vanished peer's card (a third peer introduced it during
                    # the cut) rode on the connection we keep for it: that stays.
                    if pid not in self._peers and pid not in self._kept:
                        self._transport.disconnect_peer(pid)

    def shareable(self) -> frozenset[bytes]:
        """The live peers whose cards our heartbeat would share: when this set changes, the
        next presence carries them (``heartbeat(include_known=True)``)."""
        return frozenset(pid for pid, p in self._peers.items()
                         if p.card.addresses and self._liveness.is_alive(pid))

    def heartbeat(self, hosted: tuple[HostedRoom, ...], include_known: bool = False
                  ) -> Heartbeat:
        """Our heartbeat; when the peers we know changed, it shares their cards."""
        known: tuple[PeerCard, ...] = ()
        if include_known:
            known = tuple(p.card for pid, p in self._peers.items()
                          if p.card.addresses and self._liveness.is_alive(pid)
                          )[:HEARTBEAT_KNOWN_CARDS]
        me = self._me
        return Heartbeat(me.card(), me.started_at, me.color, hosted, known, me.away)

    def tick(self, now: float) -> None:
        """Each beat: expire unanswered probes, and write the known-peers file (batched, in a
        thread) when it changed."""
        self._run(self.table.tick(now))
        if (self._write is None and self.known.dirty
                and now - self._written_at >= self._limits.peers_file_write_interval_s):
            snapshot = self.known.snapshot()
            if snapshot is not None:
                self._written_at = now
                write = self._write = asyncio.ensure_future(
                    asyncio.to_thread(self.known.write, snapshot))
                write.add_done_callback(self._file_written)

    def _file_written(self, write: asyncio.Future[bool]) -> None:
        self._write = None
        if not write.cancelled() and write.exception() is not None:
            self._stats["peers_file_errors"] += 1
            log.warning("cannot write the known-peers file: %s", write.exception())

    def sync_rooms(self) -> None:
        """The transport denies exactly the keys that a room we hold bans (an unbanned peer is
        allowed again and, if still a peer, reconnected); the names of the members of our
        rooms are pinned. Call whenever the rooms we hold or their states change."""
        states = list(self._room_states())
        deny, allow = self.table.sync_bans(ban.peer_id for s in states for ban in s.bans)
        bans = self.table.bans
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
                self.offer((card,), DISCOVERY)
        for state in states:
            for member in state.members:
                if member.peer_id != self._me.peer_id:
                    self.known.pin(member.peer_id)

    def _connect(self, pid: bytes) -> None:
        peer = self._peers[pid]
        card = peer.card
        if not card.addresses:
            return
        target = (self._pick_address(card.addresses), card.router_port, card.pub_port)
        if peer.connected_to != target:
            self._transport.connect_peer(pid, target[0], target[1], target[2])
            peer.connected_to = target

    def redial(self, pid: bytes) -> None:
        """Dial ``pid`` afresh if our link to it is not up (``Transport.redial``)."""
        if pid in self._peers and self._transport.redial(pid):
            self._stats["peers_redialled"] += 1

    def _pick_address(self, addresses: Sequence[str]) -> str:
        mine = [a.rsplit(".", 1)[0] for a in self._me.addresses]
        for a in addresses:
            if a.rsplit(".", 1)[0] in mine:
                return a
        return addresses[0]

    def gone(self, peer: bytes, reason: str) -> None:
        if peer not in self._peers:
            return
        info = self.info(peer)
        self._liveness.forget(peer)
        del self._peers[peer]
        self._run(self.table.remove(peer, self._clock.monotonic()))
        if reason != "vanished":
            self._transport.disconnect_peer(peer)
        else:
            # A vanished peer keeps its connections: ZeroMQ reconnects by itself when a cable
            # is plugged back in or a partition heals, and its next heartbeat brings it back.
            self._keep(peer)
        self._emit(PeerGone(info, reason))
        self._on_gone(peer, reason)

    def _keep(self, peer: bytes) -> None:
        self._kept[peer] = None
        self._kept.move_to_end(peer)
        self._trim_kept()

    def _trim_kept(self) -> None:
        while self._kept and len(self._kept) + len(self._peers) > self._limits.max_peers:
            old, _ = self._kept.popitem(last=False)
            self._stats["kept_links_closed"] += 1
            self._transport.disconnect_peer(old)

    async def wait_for(self, pid: bytes, timeout: float) -> Peer | None:
        """The peer, once it is known (None after ``timeout``)."""
        deadline = self._clock.monotonic() + timeout
        while (peer := self._peers.get(pid)) is None:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return None
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return peer

    # ---------------------------------------------------------------- discovery and links

    def discovered(self, card: PeerCard) -> None:
        if self._tasks.closed:
            return
        try:
            self.offer((card,), DISCOVERY)
        except (ValueError, ProtocolError) as exc:
            self._stats["dropped_discovery"] += 1
            log.debug("bad discovery record: %s", exc)

    def discovery_removed(self, pid: bytes) -> None:
        # mDNS goodbyes are a hint; the heartbeat decides (a Bye comes over the mesh too).
        if self.table.is_candidate(pid):
            self._run(self.table.remove(pid, self._clock.monotonic()))
        elif pid in self._peers and self._liveness.state(pid) is not Liveness.ALIVE:
            self.gone(pid, "quit")

    def handshake_failed(self, pid: bytes) -> None:
        self._stats["handshake_failures"] += 1
        probe = self.table.failed(pid, self._clock.monotonic())
        if probe is not None:  # an introduced card that was wrong: no warning worth giving
            self._run(probe)
            return
        self._emit(Notice(f"the peer at {self.info(pid).label}'s address does not hold its "
                          "key: refused (an impostor, or a reinstalled machine)", "warning"))

    def refused(self, pid: bytes) -> None:
        """The peer holds its key but its ZAP turns ours down: a room it is in bans us."""
        self._stats["refused_by_peer"] += 1
        self._refused[pid] = self._clock.monotonic()
        self._refused.move_to_end(pid)
        while len(self._refused) > self._limits.max_rate_entries:
            self._refused.popitem(last=False)
        label = self.info(pid).label
        refusal = JoinRefused("banned", f"{label} refuses this node's key: you are banned")
        self._wire.fail_requests_to(pid, refusal)
        peer = self._peers.get(pid)
        if peer is None:
            if pid in self._kept:  # a vanished peer's link: stop knocking
                del self._kept[pid]
                self._transport.disconnect_peer(pid)
            return  # a card we were only probing: nothing to tell the user
        # Stop knocking; the next join (after an unban, say) connects afresh.
        self._transport.disconnect_peer(pid)
        peer.connected_to = None
        self._emit(Notice(f"{label} refuses connections from this node (banned from a room "
                          "it is in)", "warning"))

    def close(self) -> None:
        self.known.flush()
