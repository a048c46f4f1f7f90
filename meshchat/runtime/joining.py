"""Getting into rooms and out of them: hosting a new room, joining one (password challenge,
following a room that moved, the backlog), leaving it (a host hands off first), and the flows
that rejoin a room or merge one side of a healed partition into the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from .. import admission
from .. import room as rules
from ..clock import Clock
from ..config import Limits, Timings
from ..errors import JoinRefused, MeshchatError, NotInRoom, ProtocolError, RoomNotFound, Timeout
from ..events import Event, HostChanged, Notice, PeerLeft
from ..historysync import HistorySync, Source
from ..identity import fingerprint_of
from ..keyring import Keyring
from ..protocol.codec import Codec
from ..protocol.messages import (
    JoinAccept,
    JoinChallenge,
    JoinRefusal,
    JoinRequest,
    Leave,
    Peers,
    RoomState,
)
from ..storage.log import MessageLog
from .chat import RoomChat
from .directory import Listing
from .local import LocalPeer
from .peers import PeerBook
from .rooms import JoinedRoom, Rooms
from .session import Sessions
from .tasks import Tasks
from .wire import Wire

__all__ = ["Joining"]

log = logging.getLogger("meshchat.node")

MAX_MOVES = 4  # a join follows a room that moved to another host this many times


class _Moved(Exception):
    def __init__(self, listing: Listing) -> None:
        self.listing = listing


class Joining:
    """Host, join, leave, rejoin and merge."""

    def __init__(self, me: LocalPeer, rooms: Rooms, sessions: Sessions, chat: RoomChat,
                 peers: PeerBook, wire: Wire, codec: Codec, log: MessageLog,
                 emit: Callable[[Event], None], tasks: Tasks, clock: Clock, limits: Limits,
                 timings: Timings, stats: Counter[str], random_bytes: Callable[[int], bytes]
                 ) -> None:
        self._me = me
        self._rooms = rooms
        self._sessions = sessions
        self._chat = chat
        self._peers = peers
        self._wire = wire
        self._codec = codec
        self._log = log
        self._emit = emit
        self._tasks = tasks
        self._clock = clock
        self._limits = limits
        self._timings = timings
        self._stats = stats
        self._random_bytes = random_bytes

    async def host(self, name: str, password: str | None, announce: bool) -> JoinedRoom:
        """A new room hosted by this node."""
        name = name.strip()
        limit = self._limits.max_room_name_chars
        if not name or len(name) > limit:
            raise MeshchatError(f"a room name is 1 to {limit} characters")
        verifier = None
        if password:
            verifier = await asyncio.to_thread(rules.make_verifier, password, self._random_bytes)
        core, epoch, key = rules.RoomCore.create(
            self._me.identity, self._codec, name, self._me.name, self._clock.time(),
            self._random_bytes, verifier,
        )
        jr = JoinedRoom(core, Keyring.with_key(self._limits, epoch, key),
                        HistorySync(self._limits, self._timings), announce=announce)
        self._sessions.enter(jr)
        await self._sessions.announce(jr)
        return jr

    async def join(self, listing: Listing, password: str | None, merge_token: bytes = b"",
                   rejoin: bool = False) -> JoinedRoom:
        """Join, following the room to its current host if it moved meanwhile."""
        for _ in range(MAX_MOVES):
            try:
                return await self._join_listing(listing, password, merge_token, rejoin)
            except _Moved as moved:
                listing = moved.listing
        raise JoinRefused("moved", "the room's host kept changing")

    async def _join_listing(self, listing: Listing, password: str | None,
                            merge_token: bytes = b"", rejoin: bool = False) -> JoinedRoom:
        me = self._me.peer_id
        host_id = listing.host.peer_id
        if host_id == me:
            jr = self._rooms.get(listing.room_id)
            if jr is not None:
                return jr
            raise RoomNotFound("that room is hosted here but no longer exists")
        if listing.room_id in self._rooms and not (merge_token or rejoin):
            return self._rooms[listing.room_id]
        self._peers.learn(listing.host, "introduction")
        # Someone waits for this answer: a link to the host that is down (it refused us until
        # an unban a moment ago, say) is dialled again now, not after libzmq's backoff.
        self._peers.redial(host_id)
        timeout, resend = self._timings.join_timeout_s, self._timings.request_resend_s
        rid = self._wire.next_request_id()
        request = JoinRequest(listing.room_id, self._me.name, rid, b"", b"", merge_token)
        try:
            reply = await self._wire.request(host_id, request, rid, timeout, resend)
            # The host may not know our card (it refused our key until an unban, or missed
            # our Hello): now that it answers, introduce ourselves, so it subscribes to us.
            self._peers.introduce(host_id)
        except Timeout:
            # A host that banned us refuses our key at the transport, so it cannot say so;
            # the last state we saw of the room can.
            last = self._rooms.last_state(listing.room_id)
            if (last is not None and rules.is_banned(last, me)) or self._peers.refused_us(host_id):
                raise JoinRefused("banned", "you are banned from this room") from None
            raise
        if isinstance(reply, JoinChallenge):
            if not password:
                raise JoinRefused("password", "this room needs a password")
            # The host picks the Argon2id cost; an unbounded one would take our memory in a
            # thread nobody can cancel. Refuse before any hashing starts.
            too_costly = admission.challenge_refusal(reply, self._limits)
            if too_costly is not None:
                self._stats["dropped_join_cost"] += 1
                raise JoinRefused(too_costly.reason, too_costly.detail)
            proof = await asyncio.to_thread(
                rules.password_proof, password, reply.salt, reply.opslimit, reply.memlimit,
                listing.room_id, me, reply.nonce,
            )
            rid = self._wire.next_request_id()
            request = JoinRequest(listing.room_id, self._me.name, rid, reply.nonce, proof, b"")
            reply = await self._wire.request(host_id, request, rid, timeout, resend)
        if isinstance(reply, JoinRefusal):
            if reply.reason == "moved":
                raise _Moved(await self._moved(listing, host_id, reply))
            raise JoinRefused(reply.reason, reply.detail)
        if not isinstance(reply, JoinAccept):
            raise JoinRefused("protocol", "unexpected answer from the host")
        jr = self._accept(listing.room_id, host_id, reply, merge=bool(merge_token) or rejoin)
        await self._chat.fetch_backlog(listing.room_id, host_id)
        return jr

    async def _moved(self, listing: Listing, host_id: bytes, reply: JoinRefusal) -> Listing:
        """The listing of the host the refusal points to, if a signed state names it."""
        held = self._rooms.state_of(listing.room_id)
        target = admission.moved_target(reply.detail, listing.room_id, host_id, held,
                                        self._codec)
        if target is None:
            self._stats["dropped_moved_unsigned"] += 1
            raise JoinRefused("moved", "the room moved to a host no signed state names")
        new_host = await self._peers.wait_for(target, self._timings.discovery_wait_s)
        if new_host is None:
            raise JoinRefused("moved", "the room's new host is not reachable yet")
        return Listing(listing.room_id, listing.name, new_host.card, listing.members,
                       listing.locked, listing.has_password, listing.term, "moved")

    def _accept(self, room_id: bytes, host_id: bytes, reply: JoinAccept, merge: bool
                ) -> JoinedRoom:
        state = self._codec.open_signed(reply.state, RoomState, rules.signer_of)
        if state.room_id != room_id or state.host != host_id:
            raise JoinRefused("protocol", "the host sent a state that is not its own")
        identity = self._me.identity
        key = self._sessions.boxes.unseal(host_id, reply.sealed_key)
        old = self._rooms.get(room_id)
        previous: RoomState | None = None
        if old is not None:
            previous = old.state
            old.core.current = rules.SignedState(state, reply.state)
            self._sessions.install_key(old, reply.key_epoch, key)
            jr = old
        else:
            core = rules.RoomCore(identity, self._codec, rules.SignedState(state, reply.state))
            jr = JoinedRoom(core, Keyring.with_key(self._limits, reply.key_epoch, key),
                            HistorySync(self._limits, self._timings))
            for sender, seq in self._log.heads(room_id).items():
                jr.tracker.set_base(sender, seq)
            self._sessions.enter(jr)
            if not merge:
                # What is older than the backlog is settled; the backlog itself is not, so
                # it is taken (and what did not fit is fetched), not seen as duplicates.
                jr.backlog = jr.sync.begin_join(reply.heads)
        # A first join's backlog is shown by whoever called join (room.history()); on a
        # rejoin or a merge we were in the room all along, so what the other side said while
        # we were apart arrives as messages (only lines we did not hold: no repeats).
        for blob in reply.history:
            with contextlib.suppress(ProtocolError):
                self._chat.take_batch(jr, blob, verify=True, live=False, emit=old is not None,
                                      source=Source.JOIN)
        if old is None and not merge:
            jr.sync.settle_join(reply.heads)
        if previous is not None:
            if merge:
                # Our side's members follow us over (our state push, their own merge): not
                # gone, and not new when they arrive; the merge notice tells it once.
                me = self._me.peer_id
                jr.following = frozenset(
                    rules.member_ids(previous)) - set(rules.member_ids(state)) - {me}
                jr.following_until = self._clock.monotonic() + self._timings.join_timeout_s
            self._sessions.after_state_change(jr, previous, state)
        self._chat.publish_heads(jr)
        return jr

    async def leave(self, room_id: bytes, reason: str) -> None:
        jr = self._rooms.get(room_id)
        if jr is None:
            raise NotInRoom("you are not in this room")
        sessions = self._sessions
        # Lines that wait for the pace go out under the state they were said in: before a
        # handoff or a Leave makes them a non-member's.
        self._chat.flush(jr)
        if jr.core.is_host:
            others = [m.peer_id for m in jr.state.members if m.peer_id != self._me.peer_id]
            succ = rules.successor(jr.state, self._peers.is_alive) or (
                others[0] if others else None)
            if succ is not None:
                old = jr.state
                jr.core.handoff(succ, leaving=True, quitting=reason == "quit")
                sessions.host_publish(jr, old, announce_only=True)
            sessions.drop(jr)
            await sessions.withdraw(jr)
        else:
            self._wire.send(jr.state.host, Leave(room_id, "quit" if reason == "quit" else "left"))
            sessions.drop(jr)

    # ---------------------------------------------------------------- rejoin and merge

    def start_merge(self, jr: JoinedRoom, other_host: bytes) -> None:
        """Step down in favour of ``other_host`` (a state of a host of our lineage outranks
        ours), once."""
        if not jr.merging:
            jr.merging = True
            self._tasks.spawn(self._merge_into(jr, other_host))

    async def _merge_into(self, jr: JoinedRoom, other_host: bytes) -> None:
        """Join the winning host's room, then send our members there."""
        peer = self._peers.get(other_host)
        try:
            if peer is None:
                return
            listing = Listing(jr.room_id, jr.state.name, peer.card, 0, False, False, 0,
                              "merge")
            members = [m.peer_id for m in jr.state.members if m.peer_id != self._me.peer_id]
            token = jr.core.blob
            old_state = jr.state
            await self.join(listing, None, merge_token=token)
            winner = self._rooms.get(jr.room_id)
            if winner is None or winner.state.host != other_host:
                return
            # Signed over: our members follow that (room, our term, the winner), never a
            # state that merely claims to win.
            self._sessions.stepped_down(winner, old_state)
            for pid in members:
                self._wire.send(pid, Peers((peer.card,)))
                self._wire.send(pid, self._sessions.state_push(winner))
            new_host = self._peers.info(other_host)
            self._emit(HostChanged(old_state.name, self._me.info, new_host, winner.state.term))
            self._emit(Notice(f"the network healed: {old_state.name} merged into the room "
                              f"hosted by {new_host.name}"))
        except MeshchatError as exc:
            self._stats["merges_failed"] += 1
            log.info("merge into %s failed: %s", fingerprint_of(other_host), exc)
        finally:
            self._done_merging(jr)

    def start_rejoin(self, jr: JoinedRoom, state: RoomState, merge: bool = False) -> None:
        """Join the room again at ``state``'s host: after the host lost contact with us, or
        (``merge``) after a partition healed and our host stepped down in its favour."""
        if jr.merging:
            return
        jr.merging = True
        self._tasks.spawn(self._rejoin(jr, state, merge))

    async def _rejoin(self, jr: JoinedRoom, state: RoomState, merge: bool) -> None:
        try:
            peer = await self._peers.wait_for(state.host, self._timings.join_timeout_s)
            if peer is None:
                raise RoomNotFound("the host is gone")
            listing = Listing(jr.room_id, state.name, peer.card, 0, False, False, state.term,
                              "merge" if merge else "rejoin")
            if merge:
                # Our old host's signed state vouches that we were members on its side.
                await self.join(listing, None, merge_token=jr.core.blob)
            else:
                await self.join(listing, None, rejoin=True)
        except MeshchatError as exc:
            self._stats["follows_failed" if merge else "rejoins_failed"] += 1
            log.info("%s of %s at %s (term %d) failed: %s", "follow" if merge else "rejoin",
                     state.name, fingerprint_of(state.host), state.term, exc)
            # A failed merge keeps the old room: the next state our host sends retries it.
            if not merge:
                self._emit(Notice(f"could not rejoin {state.name}: {exc}", "warning"))
                cur = self._rooms.get(jr.room_id)
                if cur is not None:
                    self._emit(PeerLeft(state.name, self._me.info, "vanished"))
                    self._sessions.drop(cur)
        finally:
            self._done_merging(jr)

    def _done_merging(self, jr: JoinedRoom) -> None:
        cur = self._rooms.get(jr.room_id)
        if cur is not None:
            cur.merging = False
