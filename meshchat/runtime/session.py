"""The joined rooms at run time: each room's state applied through the pure cores, the host's
side of it, its keys, and the glue to its election and its admissions.

A state that arrives is judged by the room's host watch (``meshchat.hostwatch``); what a
change means to this member is ``meshchat.session.state_change``; who gets in is
``meshchat.admission``. This module runs what they return: it publishes and pushes signed
states, rekeys and hands keys out, stores states, and tells the join flows (``rejoin``,
``step_down``, passed in) when this member must rejoin or merge into another side.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable

from .. import hostwatch as hw
from .. import moderation as mod
from .. import room as rules
from ..admission import Admission, Admit, Challenge, Lineage, Refuse
from ..clock import Clock
from ..config import Limits, Timings
from ..errors import ProtocolError
from ..events import Event, Notice
from ..historysync import newest_that_fit
from ..identity import fingerprint_of
from ..protocol.messages import (
    Chat,
    CommandResult,
    Heads,
    HostCommand,
    HostedRoom,
    JoinAccept,
    JoinChallenge,
    JoinRefusal,
    JoinRequest,
    KeyUpdate,
    Leave,
    RoomState,
    Sealed,
    StateAnnounce,
    StatePush,
    StateRequest,
    WireMessage,
)
from ..session import StateAction, state_change
from ..storage.log import MessageLog
from ..transport.base import Transport
from .chat import RoomChat
from .directory import Directory
from .local import LocalPeer
from .peers import PeerBook
from .rooms import JoinedRoom, Rooms
from .tasks import Tasks
from .wire import Gatekeeper, ReplyCache, Wire, room_topic

__all__ = ["Sessions"]

log = logging.getLogger("meshchat.node")


class Sessions:
    """What the node does for and in each joined room.

    ``rejoin(jr, state, merge)``: join the room again at ``state``'s host (``merge``: our host
    stepped down in its favour); ``step_down(jr, host)``: we host, and a host of our lineage
    outranks us: merge into its room."""

    def __init__(self, me: LocalPeer, rooms: Rooms, wire: Wire, gate: Gatekeeper,
                 chat: RoomChat, peers: PeerBook, directory: Directory, admission: Admission,
                 log: MessageLog, transport: Transport, emit: Callable[[Event], None],
                 tasks: Tasks, clock: Clock, limits: Limits, timings: Timings,
                 stats: Counter[str], random_bytes: Callable[[int], bytes], *,
                 rejoin: Callable[[JoinedRoom, RoomState, bool], None],
                 step_down: Callable[[JoinedRoom, bytes], None]) -> None:
        self._me = me
        # Each peer's X25519 box, kept: rekeys and a claim seal without key agreements.
        self.boxes = rules.KeyBoxes(me.identity, limits.max_peers)
        self._rooms = rooms
        self._wire = wire
        self._gate = gate
        self._chat = chat
        self._peers = peers
        self._directory = directory
        self.admission = admission
        self._log = log
        self._transport = transport
        self._emit = emit
        self._tasks = tasks
        self._clock = clock
        self._limits = limits
        self._timings = timings
        self._stats = stats
        self._random_bytes = random_bytes
        self._rejoin = rejoin
        self._step_down = step_down
        # The answer to each peer's latest join request, repeated if that request comes again.
        self._join_replies = ReplyCache(limits.max_join_replies, timings.join_timeout_s)

    # ---------------------------------------------------------------- entering and leaving

    def enter(self, jr: JoinedRoom) -> None:
        me = self._me.peer_id
        used = self._log.next_seq(jr.room_id, me) - 1
        jr.own_seq = jr.reserved_seq = max(used, self._log.reserved_seq(jr.room_id, me))
        # Numbers skipped after a crash are ours and settled: nothing there to fetch.
        jr.tracker.set_base(me, jr.own_seq)
        self._rooms.add(jr)
        self._peers.sync_rooms()
        jr.remember_members(self._limits.max_ever_members)
        self._transport.subscribe(room_topic(jr.room_id))
        self._log.save_room(jr.room_id, jr.state.name, jr.core.blob)

    def flush_chat(self, jr: JoinedRoom) -> None:
        self._chat.flush(jr)

    def drop(self, jr: JoinedRoom) -> None:
        self._chat.flush(jr)
        if not self._rooms.remove(jr):
            return
        self._peers.sync_rooms()
        if jr.own_seq:
            # A clean exit gives back the unused numbers, so a restart resumes without a gap.
            self._log.reserve_seq(jr.room_id, self._me.peer_id, jr.own_seq)
        self._transport.unsubscribe(room_topic(jr.room_id))
        if jr.core.is_host:
            self._tasks.spawn(self.withdraw(jr))

    async def announce(self, jr: JoinedRoom) -> None:
        if not jr.announce or not jr.core.is_host or self._tasks.closed:
            return
        await self._directory.announce(jr.state)

    async def withdraw(self, jr: JoinedRoom) -> None:
        await self._directory.withdraw(jr.room_id)

    # ---------------------------------------------------------------- room traffic

    def open_sealed(self, jr: JoinedRoom, peer: bytes, sealed: Sealed) -> None:
        key = jr.keys.get(sealed.epoch)
        if key is None:
            # Its KeyUpdate may still be on the way: wait for it, bounded (keyring.Keyring).
            self._stats["dropped_no_key"] += jr.keys.park(peer, sealed, self._clock.monotonic())
            self.ask_state(jr, jr.state.host)  # a key we missed: the host sends it again
            return
        env = self._wire.unseal(peer, sealed, key)
        if env is None or not self._gate.admit(peer, env.message, "inner", jr):
            return
        match env.message:
            case Chat(batch=blob):
                self._chat.take_batch(jr, blob, verify=False, live=True, author=peer)
            case StateAnnounce(state=blob):
                self.on_state_blob(jr.room_id, blob, peer, direct=False)
            case Heads() as heads:
                self._chat.on_heads(jr, peer, heads)
                if (heads.term, heads.version) > (jr.state.term, jr.state.version):
                    self.ask_state(jr, peer)

    def refused_sealed(self, jr: JoinedRoom, peer: bytes) -> None:
        """Someone the gate refused on the room's channel, speaking with a key from before:
        not a member's voice any more. If we host and only lost it for a while, tell it so it
        rejoins."""
        if jr.core.is_host and peer in jr.dropped_silent and jr.rejoin_ask_due(
                peer, self._clock.monotonic(), self._timings.gap_fill_interval_s):
            self._wire.send(peer, StatePush(jr.room_id, jr.core.blob))

    def ask_state(self, jr: JoinedRoom, peer: bytes) -> bool:
        """Ask ``peer`` for the room's state (and, if it hosts, our key); False if we asked
        it too lately to ask again."""
        if peer != self._me.peer_id and jr.state_ask_due(peer, self._clock.monotonic(),
                                                         self._timings.gap_fill_interval_s,
                                                         self._limits.max_peers):
            self._wire.send(peer, StateRequest(jr.room_id))
            return True
        return False

    def on_state_request(self, peer: bytes, m: StateRequest) -> None:
        asked = self._rooms.get(m.room_id)
        # A member or a former member in good standing may ask (the state holds no key):
        # after a merge, our former members follow our answer to the room's current host.
        # The key goes to current members only.
        if asked is not None:
            self._wire.send(peer, self.state_push(asked))
            epoch = asked.state.key_epoch
            if (asked.core.is_host and epoch in asked.keys
                    and rules.is_member(asked.state, peer)):
                self.distribute_key(asked, epoch, to=[peer])

    def state_push(self, jr: JoinedRoom) -> StatePush:
        """Our state of the room, direct, with our step-down if we gave its hosting up."""
        if jr.core.is_host:
            return StatePush(jr.room_id, jr.core.blob)
        return StatePush(jr.room_id, jr.core.blob, self._step_down_for(jr))

    def stepped_down(self, jr: JoinedRoom, hosted: RoomState) -> None:
        """We hosted ``hosted`` and gave the room up (a merge, a handoff) but stayed in it."""
        jr.hosted_last = hosted
        jr.step_down_to = None

    def _step_down_for(self, jr: JoinedRoom) -> bytes:
        """Our step-down, signed over to the room's host *now*. The side we merged into may
        have merged on into a third (or failed over, or handed off): a member we left behind
        follows only a record that names the state it is shown, and we are the one host it
        trusts to sign one."""
        hosted, state = jr.hosted_last, jr.state
        if hosted is None:
            return b""
        if jr.step_down_to != (state.host, state.term):
            jr.stepped_down = rules.step_down(jr.core.codec, self._me.identity, hosted, state)
            jr.step_down_to = (state.host, state.term)
        return jr.stepped_down

    def host_heartbeat(self, peer: bytes, hosted: Iterable[HostedRoom]) -> None:
        """``peer``'s heartbeat lists the rooms it hosts."""
        hosted_ids = {room.room_id for room in hosted}
        for jr in self._rooms.values():
            if jr.state.host == peer and jr.room_id not in hosted_ids:
                # Our host does not host the room any more (it merged into another side, or
                # handed off and we missed it): its answer points us at the current host.
                self.ask_state(jr, peer)

    # ---------------------------------------------------------------- states

    def on_state_blob(self, room_id: bytes, blob: bytes, peer: bytes, direct: bool,
                      step_down: bytes = b"") -> None:
        jr = self._rooms.get(room_id)
        if jr is None:
            return
        new = jr.core.open_state(blob)
        old = jr.state
        record = None
        if step_down:
            try:
                record = rules.open_step_down(jr.core.codec, step_down)
            except ProtocolError:
                self._stats["dropped_step_down_bad"] += 1
        judgement = self.watch(jr).judge(
            old, new, peer, direct, self._clock.monotonic(),
            self._peers.last_heard(old.host), jr.removed, record)
        if (judgement.verdict is not hw.Verdict.REFUSE or judgement.reason) and \
                log.isEnabledFor(logging.DEBUG):
            log.debug("%s: state of %s from %s (host %s, term %d): %s %s",
                      fingerprint_of(self._me.peer_id), new.name, fingerprint_of(peer),
                      fingerprint_of(new.host), new.term, judgement.verdict.name,
                      judgement.reason)
        match judgement.verdict:
            case hw.Verdict.TAKE:
                self.after_state_change(jr, jr.core.adopt(rules.SignedState(new, blob)), new)
            case hw.Verdict.FOLLOW:
                self._rejoin(jr, new, True)
            case hw.Verdict.STEP_DOWN:
                self._step_down(jr, new.host)
            case hw.Verdict.REFUSE if judgement.reason == "rejected_claims":
                self._stats["rejected_claims"] += 1
            case hw.Verdict.REFUSE if judgement.reason:
                self._stats["dropped_" + judgement.reason] += 1

    def after_state_change(self, jr: JoinedRoom, old: RoomState, new: RoomState) -> None:
        """Emit events for a state change and act on it (host side and member side alike)."""
        self.watch(jr).handle(hw.StateChanged(self._clock.monotonic(), old, new))
        jr.note_state(new, self._limits.max_ever_members)
        self._log.save_room(new.room_id, new.name, jr.core.blob)
        if new.bans != old.bans or new.members != old.members:
            self._peers.sync_rooms()
        following = jr.following
        if following and self._clock.monotonic() > jr.following_until:
            following = jr.following = frozenset()  # whoever did not come has left
        outcome = state_change(old, new, self._me.peer_id, self._peers.info, following)
        if following:
            jr.following = following - set(rules.member_ids(new))
        for event in outcome.events:
            self._emit(event)
        if outcome.action is StateAction.DROP:
            self.drop(jr)
            return
        if outcome.action is StateAction.REJOIN:
            if not self._tasks.closed:
                # The host lost us for a while (a stall, a flaky link): come back and fetch
                # what we missed, rather than drop out of the room.
                if outcome.stopped_hosting:
                    self._tasks.spawn(self.withdraw(jr))
                    self._emit(Notice(
                        f"you were out of {new.name} while "
                        f"{self._peers.info(new.host).name} took over as host: rejoining"))
                else:
                    self._emit(Notice(f"the host of {new.name} lost contact with you: "
                                      "rejoining"))
                self._rejoin(jr, new, False)
            return
        if outcome.host_changed:
            if outcome.became_host:
                self._became_host(jr, old)
            elif outcome.stopped_hosting:
                # A handoff: sign it over, for members that miss the handoff state itself.
                self.stepped_down(jr, old)
                self._tasks.spawn(self.withdraw(jr))
        if jr.core.is_host:
            self._tasks.spawn(self.announce(jr))

    def _became_host(self, jr: JoinedRoom, old: RoomState) -> None:
        """A handoff made us host: a fresh key shuts out whoever left with the old host."""
        epoch = self.new_key(jr)
        jr.core.rekey(epoch)
        self.distribute_key(jr, epoch)
        self.host_publish(jr, old, announce_only=True)

    # ---------------------------------------------------------------- the host's side

    def host_publish(self, jr: JoinedRoom, old: RoomState, announce_only: bool = False
                     ) -> None:
        """Publish our new signed state; emit events for the change unless already done."""
        self._push_state(jr)
        if announce_only:
            jr.remember_members(self._limits.max_ever_members)
            self._log.save_room(jr.room_id, jr.state.name, jr.core.blob)
            self._tasks.spawn(self.announce(jr))
            return
        self.after_state_change(jr, old, jr.state)

    def _push_state(self, jr: JoinedRoom, seal_epoch: int | None = None) -> None:
        """Our signed state to the room (sealed with ``seal_epoch``, default the current
        key) and, since a PUB frame can be lost, straight to every member too."""
        self._wire.publish_sealed(jr.room_id, *jr.seal_key(seal_epoch),
                                  StateAnnounce(jr.core.blob))
        for m in jr.state.members:
            if m.peer_id != self._me.peer_id:
                self._wire.send(m.peer_id, StatePush(jr.room_id, jr.core.blob))

    def new_key(self, jr: JoinedRoom) -> int:
        """A fresh room key, kept in the (bounded) key ring; its epoch."""
        epoch, key = rules.new_room_key(self._random_bytes)
        self.install_key(jr, epoch, key)
        return epoch

    def install_key(self, jr: JoinedRoom, epoch: int, key: bytes) -> None:
        """Keep a room key and open what arrived sealed with it before it did."""
        for parked in jr.keys.install(epoch, key):
            self.open_sealed(jr, parked.sender, parked.sealed)
        if epoch == jr.state.key_epoch:
            jr.key_missing_since = None
            if jr.unsent_for_key:  # lines kept back for this key: members fetch them now
                jr.unsent_for_key = False
                self._chat.publish_heads(jr)

    def want_key(self, jr: JoinedRoom, now: float) -> None:
        """Each beat: a member whose state names a key it does not hold asks the host for
        it, once the KeyUpdate that follows a state is overdue (one that came while we
        counted another peer as host was refused: rival claims in a failover)."""
        if jr.core.is_host or jr.state.key_epoch in jr.keys:
            jr.key_missing_since = None
            return
        if jr.key_missing_since is None:
            jr.key_missing_since = now
        elif (now - jr.key_missing_since >= 2 * self._timings.gap_fill_interval_s
              and self.ask_state(jr, jr.state.host)):
            self._stats["key_asked"] += 1

    def distribute_key(self, jr: JoinedRoom, epoch: int, to: Iterable[bytes] | None = None
                       ) -> None:
        """The key of ``epoch``, sealed to each member of the current state (or to ``to``)."""
        key = jr.keys[epoch]
        targets = to if to is not None else rules.member_ids(jr.state)
        for pid in targets:
            if pid != self._me.peer_id:
                sealed = self.boxes.seal(pid, key)
                self._wire.send(pid, KeyUpdate(jr.room_id, epoch, sealed))

    def on_key_update(self, peer: bytes, m: KeyUpdate) -> None:
        jr = self._rooms.get(m.room_id)
        if jr is None:
            return
        self.install_key(jr, m.epoch, self.boxes.unseal(peer, m.sealed_key))

    def host_remove(self, jr: JoinedRoom, peer: bytes, change: str, reason: str) -> None:
        old = jr.state
        jr.note_removal(peer, change, self._limits.max_peers)
        epoch = self.new_key(jr)
        jr.core.remove_member(peer, change, reason, new_epoch=epoch)
        self.distribute_key(jr, epoch)
        if change in (rules.KICKED, rules.BANNED):
            self._wire.send(peer, StatePush(jr.room_id, jr.core.blob))
        self.host_publish(jr, old)

    def on_leave(self, peer: bytes, m: Leave) -> None:
        jr = self._rooms.get(m.room_id)
        if jr is not None and jr.core.is_host and rules.is_member(jr.state, peer):
            self.host_remove(jr, peer, rules.LEFT, "quit" if m.reason == "quit" else "")

    def member_renamed(self, pid: bytes, name: str) -> None:
        """A member took a new name: the rooms we host say so in a new state."""
        for jr in self._rooms.values():
            if (jr.core.is_host and rules.is_member(jr.state, pid)
                    and jr.core.member_renamed(pid, name) is not None):
                self.host_publish(jr, jr.state)

    def peer_gone(self, peer: bytes, reason: str) -> None:
        for jr in list(self._rooms.values()):
            if not rules.is_member(jr.state, peer):
                continue
            if jr.core.is_host:
                # A member's Bye can come before its Leave (the PUB and the dialled
                # connection are two): it quit all the same.
                quit_ = reason == "quit"
                self.host_remove(jr, peer, rules.LEFT if quit_ else rules.VANISHED,
                                 "quit" if quit_ else "")
            elif peer == jr.state.host:
                self.run_watch(jr, hw.HostGone(self._clock.monotonic(), jr.state,
                                               self._peers.is_alive))

    def on_host_command(self, peer: bytes, cmd: HostCommand) -> None:
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

    # ---------------------------------------------------------------- admission

    def on_join_request(self, peer: bytes, req: JoinRequest, now: float, address: str = ""
                        ) -> None:
        """Run the admission core's decision (meshchat/admission.py) on a join request; a
        request sent again (its answer was late: ``Wire.request``) gets the same answer."""
        mono = self._clock.monotonic()
        again = self._join_replies.get(peer, req.request_id, mono)
        if again is not None:
            self._stats["join_repeated"] += 1
            self._wire.send(peer, again)
            return
        jr = self._rooms.get(req.room_id)
        lineage = None if jr is None else Lineage(jr.ever_members.keys(), jr.removed,
                                                  jr.dropped_silent)
        decision = self.admission.decide(None if jr is None else jr.core.current, lineage, req,
                                          peer, address, mono)
        if decision.token_refused:
            self._stats["dropped_merge_" + decision.token_refused] += 1
        reply: WireMessage | None = None
        match decision:
            case Refuse(reason=reason, detail=detail):
                self._stats["dropped_join_" + reason] += 1
                reply = JoinRefusal(req.room_id, req.request_id, reason, detail)
                self._wire.send(peer, reply)
            case Challenge():
                reply = JoinChallenge(req.room_id, req.request_id, decision.salt,
                                      decision.nonce, decision.opslimit, decision.memlimit)
                self._wire.send(peer, reply)
            case Admit() if jr is not None:
                if decision.merged_from is not None:
                    self._merge_join(jr, decision.merged_from)
                jr.dropped_silent.discard(peer)
                jr.told_to_rejoin.pop(peer, None)
                reply = self._admit(jr, peer, decision.name, req.request_id, now,
                                    full_history=decision.full_history)
        if reply is not None:
            self._join_replies.put(peer, req.request_id, reply, mono)

    def _admit(self, jr: JoinedRoom, peer: bytes, name: str, request_id: int, now: float,
               full_history: bool = False) -> JoinAccept:
        old = jr.state
        jr.core.add_member(peer, name, now)
        epoch, key = jr.seal_key()
        self._chat.flush(jr)
        rows = self._log.last(jr.room_id, self._limits.history_on_join)
        blobs = self._chat.batch_blobs(jr.room_id, rows)
        # The newest that fit in half a frame; the joiner fetches the rest of the backlog
        # windows (heads: where each author's backlog starts) before its join returns.
        history = tuple(blobs[newest_that_fit([len(b) for b in blobs],
                                              self._limits.max_frame_bytes // 2):])
        heads = () if full_history else jr.sync.join_heads((row.sender, row.seq)
                                                           for row in rows)
        accept = JoinAccept(jr.room_id, request_id, jr.core.blob,
                            self.boxes.seal(peer, key), epoch, history, heads)
        self._wire.send(peer, accept)
        self.host_publish(jr, old)
        return accept

    def _merge_join(self, jr: JoinedRoom, other: RoomState) -> None:
        """The other side's host of a healed partition merges in (its token was taken):
        vouch for its members and union its bans."""
        jr.merge_allow.update(rules.member_ids(other))
        old = jr.state
        if jr.core.merge_bans(other.bans) is not None:
            self.host_publish(jr, old)

    # ---------------------------------------------------------------- elections

    def watch(self, jr: JoinedRoom) -> hw.HostWatch:
        """The room's host watch, made on first use."""
        if jr.watch is None:
            jr.watch = hw.HostWatch(self._me.peer_id, jr.state, self._clock.monotonic(),
                                    self._timings, self._limits, self._wire.next_request_id)
        return jr.watch

    def run_watch(self, jr: JoinedRoom, event: hw.Input) -> None:
        """Feed the room's host watch one input and run its effects."""
        watch = self.watch(jr)
        before = watch.watch
        effects = watch.handle(event)
        if watch.watch is not before and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s: watch of host %s %s -> %s on %s", fingerprint_of(self._me.peer_id),
                      jr.state.name, fingerprint_of(jr.state.host), before.value,
                      watch.watch.value, type(event).__name__)
        for effect in effects:
            match effect:
                case hw.SendPing(peer=peer, nonce=nonce):
                    self._wire.send_ping(peer, nonce)
                    self._tasks.spawn(self._ping_due(jr, nonce), name="host-ping-due")
                case hw.Claim(vanished=vanished):
                    self._claim(jr, vanished)

    async def _ping_due(self, jr: JoinedRoom, nonce: int) -> None:
        """The watch hears the moment its ping's answer is overdue, not at the next beat (up
        to a beat later: a quarter of a second of every failover)."""
        await self._clock.sleep(self._timings.host_ping_timeout_s + 0.001)  # never early
        watch = jr.watch
        if self._rooms.get(jr.room_id) is jr and watch is not None \
                and watch.watch is hw.Watch.PINGING and watch.ping_nonce == nonce:
            self.watch_host(jr, self._clock.monotonic())

    def _claim(self, jr: JoinedRoom, vanished: bytes) -> None:
        """Run the watch's ``Claim``: take over the room of a host that does not answer."""
        if jr.core.is_host or jr.state.host != vanished:
            return
        old = jr.state
        log.info("%s: %s: claims the room of %s, which does not answer",
                 fingerprint_of(self._me.peer_id), old.name, fingerprint_of(vanished))
        epoch = self.new_key(jr)
        jr.core.claim(vanished, epoch)
        # The claim is sealed with the old key, which every member still holds. The new key
        # follows it on the same channels: members take a key only from the host, so the
        # state that makes us host must arrive first.
        self._push_state(jr, old.key_epoch if old.key_epoch in jr.keys else None)
        self.after_state_change(jr, old, jr.state)
        # Then the key, one turn of the loop later: on a LAN busy with the same failover the
        # seals to every member (each a key agreement where the box is not kept yet) come
        # after our own user, or bot, has heard that we host.
        self._tasks.spawn(self._distribute_claimed_key(jr, epoch))

    async def _distribute_claimed_key(self, jr: JoinedRoom, epoch: int) -> None:
        if self._rooms.get(jr.room_id) is jr and jr.core.is_host and epoch in jr.keys:
            self.distribute_key(jr, epoch)

    def watch_host(self, jr: JoinedRoom, now: float) -> None:
        """Each beat: the room's watch hears how long its host has been silent."""
        self.run_watch(jr, hw.Tick(now, jr.state, self._peers.last_heard(jr.state.host),
                                   self._peers.is_alive))
        self._warm_boxes(jr)

    def _warm_boxes(self, jr: JoinedRoom) -> None:
        """First in line to claim the room: make the members' boxes ahead of it, a few a beat,
        so that the claim seals the new key without a key agreement per member."""
        state = jr.state
        at = (state.term, state.version)
        if jr.boxes_warm_at == at or jr.core.is_host:
            return
        me = self._me.peer_id
        if rules.successor(state, self._peers.is_alive) != me:
            jr.boxes_warm_at = at  # looked again when the state changes
            return
        if not self.boxes.warm((p for p in rules.member_ids(state) if p != me),
                               self._limits.boxes_per_beat):
            jr.boxes_warm_at = at

    def stalled(self, now: float) -> None:
        """We were stalled ourselves: silence meanwhile is ours, not the hosts'."""
        for jr in list(self._rooms.values()):
            self.run_watch(jr, hw.Stalled(now))

    def pong(self, peer: bytes, nonce: int) -> None:
        pong = hw.PongFrom(self._clock.monotonic(), peer, nonce)
        for jr in list(self._rooms.values()):
            if jr.watch is not None:
                self.run_watch(jr, pong)

    def disconnected(self, peer: bytes) -> None:
        """A peer's connection closed: if it hosts one of our rooms, ask it at once."""
        if self._tasks.closed:
            return
        now = self._clock.monotonic()
        for jr in list(self._rooms.values()):
            if jr.state.host == peer and not jr.core.is_host:
                self.run_watch(jr, hw.ConnectionDropped(now))

    def check_partition(self, hosted: HostedRoom, other_host: bytes) -> None:
        """Another node says it hosts a room we host. Only a hint: if that peer is of our
        room's lineage and would outrank us, ask it for its signed state; the answer decides
        (``HostWatch.judge``). A stranger's listing changes nothing."""
        jr = self._rooms.get(hosted.room_id)
        if jr is None or not jr.core.is_host or jr.merging:
            return
        hint = self.watch(jr).judge_hint(jr.state, other_host, hosted.term, jr.removed)
        if hint.verdict is hw.Verdict.ASK:
            self.ask_state(jr, other_host)
        elif hint.reason:
            self._stats["dropped_" + hint.reason] += 1
