"""Room chat: what this node says, what it stores and shows, and the history it asks for and
serves.

Lines said in one turn of the loop are signed once, as one batch (``meshchat.session.Outbox``),
logged and published. Each received batch goes through the history-sync core
(``meshchat.historysync``), which decides what is new, what is a gap to fetch and from whom,
and what a peer may send or be sent; this module only reads and writes the log and sends.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable

from .. import room as rules
from ..causal import CausalOrder
from ..clock import Clock
from ..config import Limits, Timings
from ..errors import MeshchatError, NotInRoom, ProtocolError
from ..events import Event, Message, PeerInfo
from ..historysync import Ask, ReplyBudget, Source, unused_ranges
from ..protocol.codec import Codec
from ..protocol.messages import (
    Chat,
    ChatBatch,
    ChatLine,
    Heads,
    HistoryReply,
    HistoryRequest,
    SeqRange,
)
from ..ratelimit import TokenBuckets
from ..session import Outbox
from ..storage.log import LogRow, MessageLog
from .local import LocalPeer
from .rooms import JoinedRoom, Rooms
from .tasks import Tasks
from .wire import Wire

__all__ = ["RoomChat", "check_text"]

SEQ_BLOCK = 1024
BATCH_LINES = 256  # at most this many lines said in one loop turn share a frame
BATCH_TEXT_CHARS = 48 * 1024
BATCH_REF = b"@"  # log rows after a batch's first hold "@" + first seq instead of the blob


ACTION_OPEN, ACTION_CLOSE = "\x01ACTION ", "\x01"  # a /me line on the wire, as IRC's CTCP


def as_action(text: str) -> str:
    """The wire text of the action line ``text`` (``/me waves`` → ``\\x01ACTION waves\\x01``)."""
    return f"{ACTION_OPEN}{text}{ACTION_CLOSE}"


def split_action(text: str) -> tuple[str, bool]:
    """A line's wire text as (what to show, whether it is an action line)."""
    if text.startswith(ACTION_OPEN) and text.endswith(ACTION_CLOSE) and \
            len(text) > len(ACTION_OPEN) + len(ACTION_CLOSE):
        return text[len(ACTION_OPEN):-len(ACTION_CLOSE)], True
    return text, False


def _message(room: str, sender: PeerInfo, text: str, sent_at: float, seq: int) -> Message:
    shown, action = split_action(text)
    return Message(room, sender, shown, False, sent_at, seq, action=action)


def check_text(text: str, limits: Limits) -> str:
    if not text:
        raise MeshchatError("empty message")
    if len(text) > limits.max_text_chars:
        raise MeshchatError(f"a message is at most {limits.max_text_chars} characters")
    return text


class RoomChat:
    """Say, store, show, and sync the history of the joined rooms."""

    def __init__(self, me: LocalPeer, rooms: Rooms, wire: Wire, codec: Codec, log: MessageLog,
                 info: Callable[[bytes, str], PeerInfo], emit: Callable[[Event], None],
                 tasks: Tasks, clock: Clock, limits: Limits, timings: Timings,
                 stats: Counter[str]) -> None:
        self._me = me
        self._rooms = rooms
        self._wire = wire
        self._codec = codec
        self._log = log
        self._info = info
        self._emit = emit
        self._tasks = tasks
        self._clock = clock
        self._limits = limits
        self._timings = timings
        self._stats = stats
        self._pace_buckets: TokenBuckets[bytes] = TokenBuckets(limits.max_rate_entries)
        # The pace and a batch's most lines follow from the (frozen) limits: worked out once,
        # not for every line said.
        self._pace_rate = limits.chat_lines_per_s / 2
        self._pace_burst = float(max(1, limits.chat_lines_burst // 2))
        self._batch_most = max(1, min(BATCH_LINES,
                                      int(self._pace_burst) - limits.chat_batch_cost))

    # ---------------------------------------------------------------- what we say

    async def say(self, jr: JoinedRoom, text: str, action: bool = False) -> None:
        text = check_text(text, self._limits)
        shown = text
        if action:
            text = check_text(as_action(text), self._limits)
        await self._room_in_outbox(jr)
        me = self._me.peer_id
        seq = max(jr.own_seq, jr.tracker.head(me)) + 1
        jr.own_seq = seq
        if seq > jr.reserved_seq:
            # Numbers are reserved a block at a time, so the hot path never commits and a
            # crash never hands out a number that peers may already hold.
            jr.reserved_seq = seq + SEQ_BLOCK - 1
            self._log.reserve_seq(jr.room_id, me, jr.reserved_seq)
        now = self._clock.time()
        box = jr.outbox
        if box is None or not box.follows(seq):
            self.flush(jr)
            box = jr.outbox = Outbox(seq)
            asyncio.get_running_loop().call_soon(self._due, jr)
        box.add(ChatLine(now, text))
        self._emit(Message(jr.state.name, self._me.info, shown, False, now, seq, action=action))
        if self._full(box):
            self._due(jr)

    # The pace: half of what members take live from one author (``Limits.chat_lines_per_s``
    # and ``_burst``), each batch counted as receivers count it, its lines plus
    # ``chat_batch_cost``. A batch waits in the outbox until the pace lets it out whole, and
    # lines said meanwhile join it: a bot saying a line at a time at any rate up to the pace
    # gets them out in fewer, fuller batches, late by at most what the pace asks. A paste of
    # thousands of lines goes out at once, in full batches; once the outbox is full, say()
    # waits: a runaway loop is slowed, never dropped.

    def _pace(self) -> tuple[float, float]:
        return self._pace_rate, self._pace_burst

    def _cost(self, box: Outbox) -> float:
        return min(self._pace_burst, len(box.lines) + self._limits.chat_batch_cost)

    def _full(self, box: Outbox) -> bool:
        """A batch never costs more than the pace's burst, so it can always go out."""
        return box.full(self._batch_most, BATCH_TEXT_CHARS)

    def _due(self, jr: JoinedRoom) -> None:
        """The outbox goes out if the pace lets it; else this is tried again when it will."""
        box = jr.outbox
        if box is None or not box.lines or self._rooms.get(jr.room_id) is not jr:
            return
        rate, burst = self._pace()
        now = self._clock.monotonic()
        cost = self._cost(box)
        if self._pace_buckets.take(jr.room_id, rate, burst, now, cost):
            self._send(jr)
            return
        if jr.pace_timer is None:
            self._stats["said_paced"] += 1
            wait = self._pace_buckets.wait_s(jr.room_id, rate, burst, now, cost)
            jr.pace_timer = asyncio.get_running_loop().call_later(
                max(0.001, wait), self._paced_due, jr)

    def _paced_due(self, jr: JoinedRoom) -> None:
        jr.pace_timer = None
        self._due(jr)

    async def _room_in_outbox(self, jr: JoinedRoom) -> None:
        """Wait while the outbox is full and the pace holds it back."""
        while (box := jr.outbox) is not None and self._full(box):
            self._due(jr)
            if jr.outbox is not box:
                return
            rate, burst = self._pace()
            await self._clock.sleep(max(0.001, self._pace_buckets.wait_s(
                jr.room_id, rate, burst, self._clock.monotonic(), self._cost(box))))
            if self._rooms.get(jr.room_id) is not jr:
                raise NotInRoom("the room was left while this line waited to go out")

    def flush(self, jr: JoinedRoom) -> None:
        """What waits in the outbox goes out now, paced or not (the room is left, a joiner
        is admitted, a batch that does not follow on): it is drawn from the pace if it can be."""
        box = jr.outbox
        if box is None or not box.lines:
            return
        rate, burst = self._pace()
        self._pace_buckets.take(jr.room_id, rate, burst, self._clock.monotonic(),
                                self._cost(box))
        self._send(jr)

    def _send(self, jr: JoinedRoom) -> None:
        """Sign the outbox's lines once as a batch, log, count and publish them."""
        box, jr.outbox = jr.outbox, None
        if jr.pace_timer is not None:
            jr.pace_timer.cancel()
            jr.pace_timer = None
        if box is None or not box.lines:
            return
        me = self._me.peer_id
        # What was shown here since our last batch: receivers show this one after it.
        after = tuple(SeqRange(author, 0, seq) for author, seq in jr.shown_since_said.items())
        jr.shown_since_said.clear()
        batch = ChatBatch(jr.room_id, me, box.first, tuple(box.lines), after)
        blob = self._codec.sign_record(self._me.identity, batch)
        self._store(batch, blob)
        # Only now are these numbers ours on the wire: heads, and "unused" in a history
        # reply, must not speak of lines still waiting in the outbox.
        jr.tracker.add_range(me, box.first, box.first + len(box.lines) - 1)
        self._stats["said_batches"] += 1
        if jr.room_id in self._rooms and not self._tasks.closed:
            if jr.state.key_epoch not in jr.keys:
                # The state names a key we do not hold yet (its KeyUpdate is late, or came
                # while we counted another as host). An older key could be read by whoever
                # the new one shuts out, and a newer one of ours only by some: the lines
                # stay in our log, and members fetch them once the key is here and our heads
                # go out (``Sessions.install_key``; the ticker asks the host for it).
                jr.unsent_for_key = True
                self._stats["chat_unsent_no_key"] += 1
                return
            self._wire.publish_sealed(jr.room_id, *jr.seal_key(), Chat(blob), box.first)

    def publish_heads(self, jr: JoinedRoom, full: bool = True) -> None:
        """Where each author's numbers stand here, so members see what they miss; not
        ``full``: only the state's term and version (a host's room beat with nothing new)."""
        heads = jr.tracker.heads()[: self._limits.max_collection_items] if full else ()
        self._wire.publish_sealed(jr.room_id, *jr.seal_key(),
                                  Heads(heads, jr.state.term, jr.state.version))

    # ---------------------------------------------------------------- the log

    def _store(self, batch: ChatBatch, blob: bytes,
               only: Callable[[int], bool] | None = None) -> None:
        room_id, sender, first = batch.room_id, batch.sender, batch.first
        kept = range(len(batch.lines)) if only is None else [
            i for i in range(len(batch.lines)) if only(first + i)]
        if not kept:
            return
        # The blob goes on the first row stored (a joiner may take only a batch's tail), so
        # this node can relay the batch later; the other rows point to that row.
        anchor = first + kept[0]
        ref = BATCH_REF + anchor.to_bytes(8, "big")
        self._log.add_many(
            (room_id, sender, first + i, batch.lines[i].sent_at, batch.lines[i].text,
             blob if first + i == anchor else ref)
            for i in kept
        )

    def batch_blobs(self, room_id: bytes, rows: Iterable[LogRow]) -> list[bytes]:
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

    def history(self, room_id: bytes, name: str) -> list[Message]:
        """Every message held for the room, in the canonical order (``name``: the room's)."""
        held = [_message(name, self._info(row.sender, "?"), row.text, row.sent_at, row.seq)
                for row in self._log.all(room_id)]
        jr = self._rooms.get(room_id)
        box = jr.outbox if jr is not None else None
        if box is not None:  # said, shown, and waiting for the pace: ours all the same
            me = self._info(self._me.peer_id, "?")
            held += [_message(name, me, line.text, line.sent_at, box.first + i)
                     for i, line in enumerate(box.lines)]
        return held

    # ---------------------------------------------------------------- what arrives

    def take_batch(self, jr: JoinedRoom, blob: bytes, verify: bool, live: bool,
                   author: bytes | None = None, emit: bool = True,
                   source: Source | None = None, peer: bytes = b"") -> int:
        """Check, store and show one signed batch (rules in historysync); how many new."""
        if verify:
            batch = self._codec.open_signed(blob, ChatBatch, lambda b: b.sender)
        else:
            batch = self._codec.peek_signed(blob, ChatBatch)
            if batch.sender != author:
                self._stats["dropped_spoofed"] += 1
                return 0
        if batch.room_id != jr.room_id:
            self._stats["dropped_misdirected"] += 1
            return 0
        sender = batch.sender
        taken = jr.sync.take(sender, batch.first, len(batch.lines), self._clock.monotonic(),
                             source or (Source.LIVE if live else Source.REPLY), peer,
                             jr.knows_author(sender))
        if taken.drop:
            self._stats["dropped_" + taken.drop] += 1
            return 0
        if taken.duplicates:
            self._stats["duplicates"] += taken.duplicates
        if not taken.fresh:
            return 0
        # Live, a batch is new as a whole: no line needs looking up in what was taken.
        whole = not taken.duplicates and taken.fresh == (
            (batch.first, batch.first + len(batch.lines) - 1),)
        self._store(batch, blob, None if whole else taken.__contains__)
        if emit:
            room = jr.state.name
            info = self._info(sender, "?")
            first = batch.first
            shown = [_message(room, info, line.text, line.sent_at, first + i)
                     for i, line in enumerate(batch.lines) if whole or first + i in taken]
            self._show(jr, sender, taken.fresh[0][0], batch.after, shown, peer or sender)
        self.ask(jr, taken.ask)
        return len(batch.lines) - taken.duplicates

    # ---------------------------------------------------------------- causal order

    def _show(self, jr: JoinedRoom, sender: bytes, first: int, after: tuple[SeqRange, ...],
              messages: list[Message], peer: bytes) -> None:
        """Show a batch's new lines once what it follows is shown (``meshchat.causal``); if
        it must wait, ask ``peer`` (who sent it, so holds them) for the lines it lacks."""
        order = jr.order
        if order is None:
            order = jr.order = CausalOrder(self._me.peer_id, self._limits.max_causal_held,
                                           self._limits.max_causal_deps,
                                           self._timings.causal_hold_s)
        now = self._clock.monotonic()
        before = order.timed_out
        deps = [(r.sender, r.last) for r in after[: self._limits.max_causal_deps]]
        item = (sender, messages)
        out = order.offer(sender, first, deps, now, jr.tracker.holds, item)
        self._stats["causal_timed_out"] += order.timed_out - before
        if all(o is not item for o in out):  # it waits
            self._stats["causal_held"] += 1
            lacking = [SeqRange(a, 0, s) for a, s in deps if not jr.tracker.holds(a, s)]
            if lacking:
                ask, drops = jr.sync.on_heads(peer, lacking, now, jr.knows_author)
                for reason, n in drops.items():
                    self._stats["dropped_" + reason] += n
                self.ask(jr, ask)
        self._emit_shown(jr, out)

    def show_due(self, jr: JoinedRoom) -> None:
        """Show the batches that waited long enough for lines that did not come."""
        order = jr.order
        if order is None or not len(order):
            return
        before = order.timed_out
        out = order.due(self._clock.monotonic(), jr.tracker.holds)
        self._stats["causal_timed_out"] += order.timed_out - before
        self._emit_shown(jr, out)

    def _emit_shown(self, jr: JoinedRoom, batches: list[tuple[bytes, list[Message]]]) -> None:
        seen = jr.shown_since_said
        most = self._limits.max_causal_deps
        for author, messages in batches:
            for m in messages:
                self._emit(m)
            if messages:
                seen.pop(author, None)  # the most recent authors are kept
                seen[author] = messages[-1].seq
                while len(seen) > most:
                    del seen[next(iter(seen))]

    def ask(self, jr: JoinedRoom, ask: Ask | None) -> None:
        if ask is not None and ask.peer != self._me.peer_id:
            self._wire.send(ask.peer, HistoryRequest(jr.room_id, ask.ranges))
            self._stats["history_requests"] += 1

    def ask_overdue(self, jr: JoinedRoom, alive: Callable[[bytes], bool]) -> None:
        """Ask again for the holes nobody answered: of the author while it is alive, else
        of the room's host."""
        me = self._me.peer_id

        def whom(author: bytes) -> bytes | None:
            if author != me and alive(author):
                return author
            host = jr.state.host
            return host if host != me and alive(host) else None

        for ask in jr.sync.overdue(self._clock.monotonic(), whom):
            self.ask(jr, ask)

    def on_heads(self, jr: JoinedRoom, peer: bytes, heads: Heads) -> None:
        ask, drops = jr.sync.on_heads(peer, heads.heads, self._clock.monotonic(),
                                      jr.knows_author)
        for reason, n in drops.items():
            self._stats["dropped_" + reason] += n
        self.ask(jr, ask)

    def on_history_request(self, peer: bytes, m: HistoryRequest) -> None:
        """One reply frame within the reply budget; void for our own unused numbers."""
        jr = self._rooms.get(m.room_id)
        if jr is None or not (rules.is_member(jr.state, peer) or peer in jr.merge_allow):
            self._stats["dropped_not_member"] += 1
            return
        budget = ReplyBudget(self._limits)
        records: list[bytes] = []
        void: list[SeqRange] = []
        rows_per_range = self._limits.history_reply_batches
        served = jr.sync.serve(m.ranges)
        if len(served) < len(m.ranges):
            self._stats["dropped_history_ranges"] += len(m.ranges) - len(served)
        for r in served:
            if budget.full:
                break
            rows = self._log.range(jr.room_id, r.sender, r.first, r.last, limit=rows_per_range)
            for blob in self.batch_blobs(jr.room_id, rows):
                if not budget.take(len(blob)):
                    budget.batches_left = 0
                    break
                records.append(blob)
            if r.sender == self._me.peer_id:
                sent = jr.outbox.first - 1 if jr.outbox is not None else jr.own_seq
                upto = rows[-1].seq if len(rows) >= rows_per_range else min(r.last, sent)
                void.extend(unused_ranges(r.sender, r.first, upto, [row.seq for row in rows]))
        # Always an answer, even an empty one: the asker learns there is nothing more here.
        self._wire.send(peer, HistoryReply(jr.room_id, tuple(records),
                                           tuple(void[: self._limits.max_void_ranges])))

    def on_history_reply(self, peer: bytes, m: HistoryReply) -> None:
        jr = self._rooms.get(m.room_id)
        if jr is None:
            return
        limit = self._limits.history_reply_batches
        new = 0
        for blob in m.records[:limit]:
            try:
                new += self.take_batch(jr, blob, verify=True, live=False, peer=peer)
            except ProtocolError:
                self._stats["dropped_bad_record"] += 1
        if len(m.records) > limit:
            self._stats["dropped_over_budget"] += len(m.records) - limit
        now = self._clock.monotonic()
        voided, refused = jr.sync.take_void(peer, m.void, now)
        if refused:
            self._stats["dropped_void"] += refused
        jr.history_progress = bool(new or voided)
        jr.history_arrived.set()
        self.ask(jr, jr.sync.after_reply(peer, jr.history_progress, now))

    async def fetch_backlog(self, room_id: bytes, host: bytes) -> None:
        """Before a join returns: the part of the backlog that did not fit in the JoinAccept,
        from the host, one reply frame at a time (each reply with news asks for the rest)."""
        jr = self._rooms.get(room_id)
        if jr is None or not jr.backlog:
            return
        windows, jr.backlog = jr.backlog, ()
        now = self._clock.monotonic()
        deadline = now + self._timings.request_timeout_s
        jr.history_arrived.clear()
        self.ask(jr, jr.sync.backlog_ask(host, windows, now))
        while jr.sync.backlog_missing(windows) and room_id in self._rooms:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                self._stats["backlog_incomplete"] += 1
                return
            try:
                await asyncio.wait_for(jr.history_arrived.wait(), remaining)
            except TimeoutError:
                continue
            jr.history_arrived.clear()
            if not jr.history_progress:
                return  # the host holds no more of it: gap filling carries on from others
