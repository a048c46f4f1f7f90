"""History sync for one room: what to take, what to ask whom, what to serve. Pure.

The node feeds in what arrived (a batch's author and numbers, a peer's heads, a reply's void
ranges, a request's ranges) with ``now``, and gets back decisions: the numbers that are new,
a reason to drop, an ``Ask`` to send. It reads and writes the log and the sockets itself.

The rules that keep one member from freezing or flooding the others (issue 6, cases 4, 5):

- every loop runs over held *runs* or over a ``Limits`` budget, never over a peer's numbers;
- a number more than ``max_seq_ahead`` past the highest its author has shown is dropped;
- a reply is taken only from a peer we asked, only for ranges we asked it for, and only with
  lines of authors this room knows (a relay cannot introduce a stranger);
- ``void`` (an author never used some numbers) only from that author, clipped to what we
  asked it, and stored as intervals;
- one request is answered by at most one frame (``history_reply_bytes``/``_batches``); a
  requester that got new lines asks again for the rest;
- live lines from one author are taken at ``chat_lines_per_s`` (burst ``chat_lines_burst``;
  a batch costs its lines plus ``chat_batch_cost``): a batch over it is dropped unrecorded,
  so the author's later lines or heads show the gap and it is fetched at the history
  budget's pace, never lost and never faster.

Late joiners (case 11): the host's JoinAccept heads say, per author, where the backlog starts
(``first``) and the host's head (``last``). The joiner settles what is older than the backlog,
takes the backlog, and fetches what did not fit in the JoinAccept before ``join()`` returns.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from .config import Limits, Timings
from .history import SeqTracker
from .protocol.messages import SeqRange
from .ratelimit import TokenBuckets

__all__ = ["Ask", "HistorySync", "ReplyBudget", "Source", "Taken", "newest_that_fit",
           "unused_ranges"]


class Source(Enum):
    LIVE = "live"  # a Chat from its author, sealed on the room's topic
    JOIN = "join"  # the backlog in the host's JoinAccept: the host vouches for it
    REPLY = "reply"  # a HistoryReply from a peer we asked


@dataclass(frozen=True, slots=True)
class Ask:
    """Effect: send ``HistoryRequest(room, ranges)`` to ``peer``."""

    peer: bytes
    ranges: tuple[SeqRange, ...]


@dataclass(frozen=True, slots=True)
class Taken:
    """What to do with a batch: store and show the ``fresh`` runs, or drop it (``drop``)."""

    fresh: tuple[tuple[int, int], ...] = ()
    duplicates: int = 0
    drop: str = ""  # set: nothing was recorded; the node counts ``dropped_<drop>``
    ask: Ask | None = None

    def __contains__(self, seq: object) -> bool:
        return isinstance(seq, int) and any(f <= seq <= last for f, last in self.fresh)


_Asked = tuple[int, int, float]  # first, last, when
OVERDUE_MAX_S = 60.0  # the longest wait between asks for one unanswered hole
MAX_SEQ = 2**63 - 1  # the log's integers are SQLite's: no number above this is ever stored


class HistorySync:
    """One room's history sync state: the tracker, and what we asked of whom (bounded)."""

    def __init__(self, limits: Limits, timings: Timings) -> None:
        self.tracker = SeqTracker(limits.max_held_runs)
        self._limits = limits
        self._lines: TokenBuckets[bytes] = TokenBuckets(limits.max_rate_entries)  # by author
        # author -> ((head, top) of its hole, next ask at, the wait before it)
        self._overdue: dict[bytes, tuple[tuple[int, int], float, float]] = {}
        self._reask_s = timings.gap_fill_interval_s * 2
        self._window_s = timings.request_timeout_s
        # peer -> author -> ranges asked of it (newest last); at most max_history_asked in all
        self._asked: OrderedDict[bytes, dict[bytes, list[_Asked]]] = OrderedDict()
        self._asked_count = 0
        self._last_ask: OrderedDict[tuple[bytes, int], float] = OrderedDict()  # of any peer
        self._asked_from: OrderedDict[bytes, float] = OrderedDict()

    @property
    def asked_from(self) -> Mapping[bytes, float]:
        """Peer -> when we last asked it for history: its replies are solicited for a while."""
        return self._asked_from

    @property
    def asked_entries(self) -> int:
        return self._asked_count

    # ------------------------------------------------------------ taking batches

    def take(self, author: bytes, first: int, count: int, now: float, source: Source,
             peer: bytes = b"", author_ok: bool = True) -> Taken:
        """A signed batch of ``count`` lines from ``first`` by ``author`` arrived."""
        last = first + count - 1
        if first < 1 or count < 1:
            return Taken(drop="misdirected")
        if last > MAX_SEQ:
            return Taken(drop="seq_ahead")
        if source is Source.REPLY:
            if not author_ok:
                return Taken(drop="stranger")
            if not self._was_asked(peer, author, first, last, now):
                return Taken(drop="unasked")
        if source is not Source.JOIN and last > self.tracker.top(author) + \
                self._limits.max_seq_ahead:
            return Taken(drop="seq_ahead")
        if source is Source.LIVE and not self._lines.take(
                author, self._limits.chat_lines_per_s, self._limits.chat_lines_burst, now,
                count + self._limits.chat_batch_cost):
            return Taken(drop="line_rate")
        head_before = self.tracker.head(author)
        fresh = self.tracker.add_range(author, first, last)
        if fresh is None:
            return Taken(drop="fragmented")
        new = sum(b - a + 1 for a, b in fresh)
        ask = None
        if new and source is Source.LIVE and first > head_before + 1:
            ask = self.ask(author, [(author, first - 1)], now)
        return Taken(tuple(fresh), count - new, "", ask)

    def take_void(self, peer: bytes, void: Sequence[SeqRange], now: float) -> tuple[int, int]:
        """An author's word that it never used some of its numbers: (taken, dropped).

        Only the author's own numbers, only inside ranges we asked it for."""
        taken = dropped = 0
        ranges = self._fresh_asked(peer, peer, now)
        for r in void[: self._limits.max_void_ranges]:
            if r.sender != peer or r.first < 1 or r.last < r.first:
                dropped += 1
                continue
            hit = False
            for first, last, _ in ranges:
                lo, hi = max(first, r.first), min(last, r.last)
                if lo <= hi:
                    hit = True
                    taken += bool(self.tracker.add_range(peer, lo, hi))
            dropped += not hit
        return taken, dropped + max(0, len(void) - self._limits.max_void_ranges)

    # ------------------------------------------------------------ asking

    def on_heads(self, peer: bytes, heads: Sequence[SeqRange], now: float,
                 author_ok: Callable[[bytes], bool]) -> tuple[Ask | None, Counter[str]]:
        """A member's heads: one Ask for what it holds that we lack; drops by reason."""
        drops: Counter[str] = Counter()
        wants: list[tuple[bytes, int]] = []
        for r in heads[: self._limits.max_collection_items]:
            if r.last <= self.tracker.head(r.sender):
                continue
            if not author_ok(r.sender):
                drops["stranger"] += 1
            elif r.last > self.tracker.top(r.sender) + self._limits.max_seq_ahead:
                drops["seq_ahead"] += 1
            else:
                wants.append((r.sender, r.last))
        return self.ask(peer, wants, now), drops

    def overdue(self, now: float, ask_whom: Callable[[bytes], bytes | None],
                limit: int = 8) -> list[Ask]:
        """Holes we know of (numbers missing below what an author has shown) that nobody was
        asked for lately: one Ask each, of ``ask_whom(author)`` (None: nobody to ask).

        A gap is asked for when a later line or a member's heads show it; if every answer
        was lost or late (a host's failover on loaded machines), this asks again each
        ``2 * gap_fill_interval_s`` instead of waiting for the next heads refresh (which
        stretches to half a minute on a LAN of 64). At most ``limit`` authors a call."""
        asks: list[Ask] = []
        if len(self._overdue) > self._limits.max_collection_items:
            self._overdue.clear()  # bounded; forgetting only makes the next ask come sooner
        for author, top in self.tracker.holed(limit):
            hole = (self.tracker.head(author), top)
            seen = self._overdue.get(author)
            if seen is not None and seen[0] == hole and now < seen[1]:
                continue
            # The same hole unanswered: asked again ever later (a line nobody holds any
            # more must not cost a request a second for good); a new hole: soon.
            wait = self._reask_s if seen is None or seen[0] != hole else \
                min(seen[2] * 2, OVERDUE_MAX_S)
            self._overdue[author] = (hole, now + wait, wait)
            peer = ask_whom(author)
            if peer is None:
                continue
            ask = self.ask(peer, [(author, top)], now)
            if ask is not None:
                asks.append(ask)
        return asks

    def ask(self, peer: bytes, wants: Iterable[tuple[bytes, int]], now: float,
            force: bool = False) -> Ask | None:
        """One request to ``peer`` for what we lack of each (author, up to seq): at most
        ``max_ranges_per_request`` ranges, ``max_gap_fetch`` numbers per author. Ranges asked
        of anyone within ``2 * gap_fill_interval_s`` are left out unless ``force``."""
        limits = self._limits
        ranges: list[SeqRange] = []
        for author, upto in wants:
            room = limits.max_ranges_per_request - len(ranges)
            if room <= 0:
                break
            gaps = [r for r in self.tracker.missing(author, upto, room, limits.max_gap_fetch)
                    if force or now - self._last_ask.get((author, r.first), -1e18) > self._reask_s]
            if gaps:
                # What we want of this peer runs to ``upto``: its replies are taken in there,
                # and a reply with news asks for the next piece.
                self._record(peer, SeqRange(author, gaps[0].first, upto), now)
                ranges.extend(gaps)
        if not ranges:
            return None
        for r in ranges:
            key = (r.sender, r.first)
            self._last_ask[key] = now
            self._last_ask.move_to_end(key)
        while len(self._last_ask) > limits.max_history_asked:
            self._last_ask.popitem(last=False)
        return Ask(peer, tuple(ranges))

    def after_reply(self, peer: bytes, progressed: bool, now: float) -> Ask | None:
        """A reply from ``peer`` brought new lines: ask it at once for the rest of what we
        asked it (one frame answers a request, so a big gap takes several)."""
        if not progressed:
            return None
        wants = [(author, max(last for _, last, _ in ranges))
                 for author in list(self._asked.get(peer, {}))
                 if (ranges := self._fresh_asked(peer, author, now))]
        return self.ask(peer, wants, now, force=True)

    def _record(self, peer: bytes, r: SeqRange, now: float) -> None:
        self._asked_from[peer] = now
        self._asked_from.move_to_end(peer)
        while len(self._asked_from) > self._limits.max_peers:
            self._asked_from.popitem(last=False)
        by_author = self._asked.setdefault(peer, {})
        self._asked.move_to_end(peer)
        ranges = by_author.setdefault(r.sender, [])
        ranges.append((r.first, r.last, now))
        self._asked_count += 1
        if len(ranges) > self._limits.max_ranges_per_request:
            del ranges[0]
            self._asked_count -= 1
        while self._asked_count > self._limits.max_history_asked:
            oldest_peer, oldest = next(iter(self._asked.items()))
            self._asked_count -= len(oldest.pop(next(iter(oldest))))
            if not oldest:
                del self._asked[oldest_peer]

    def _fresh_asked(self, peer: bytes, author: bytes, now: float) -> list[_Asked]:
        ranges = self._asked.get(peer, {}).get(author)
        if not ranges:
            return []
        fresh = [r for r in ranges if now - r[2] <= self._window_s]
        if len(fresh) < len(ranges):
            self._asked_count -= len(ranges) - len(fresh)
            ranges[:] = fresh
        return fresh

    def _was_asked(self, peer: bytes, author: bytes, first: int, last: int, now: float) -> bool:
        return any(f <= last and first <= la for f, la, _ in self._fresh_asked(peer, author, now))

    # ------------------------------------------------------------ serving a request

    def serve(self, ranges: Sequence[SeqRange]) -> list[SeqRange]:
        """The ranges of a request we will read: valid ones, at most
        ``max_ranges_per_request``, each cut to ``max_gap_fetch`` numbers."""
        limits = self._limits
        return [SeqRange(r.sender, r.first,
                         min(r.last, r.first + limits.max_gap_fetch - 1, MAX_SEQ))
                for r in ranges[: limits.max_ranges_per_request]
                if 1 <= r.first <= min(r.last, MAX_SEQ)]

    # ------------------------------------------------------------ joining

    def join_heads(self, backlog: Iterable[tuple[bytes, int]]) -> tuple[SeqRange, ...]:
        """Host side, for a JoinAccept: per author our head (``last``) and where its part of
        the backlog starts (``first``; ``last + 1`` if it has none)."""
        lowest: dict[bytes, int] = {}
        for sender, seq in backlog:
            lowest[sender] = min(seq, lowest.get(sender, seq))
        return tuple(SeqRange(r.sender, min(lowest.get(r.sender, r.last + 1), r.last + 1),
                              r.last)
                     for r in self.tracker.heads()[: self._limits.max_collection_items])

    def begin_join(self, heads: Sequence[SeqRange]) -> tuple[SeqRange, ...]:
        """Joiner side, before taking the backlog: settle what is older than each author's
        backlog; the windows (author, first..last) the backlog should fill."""
        windows: list[SeqRange] = []
        for r in heads[: self._limits.max_collection_items]:
            if 1 <= r.first <= r.last <= MAX_SEQ:
                first = max(r.first, r.last - self._limits.history_on_join + 1)
                self.tracker.set_base(r.sender, first - 1)
                windows.append(SeqRange(r.sender, first, r.last))
        return tuple(windows)

    def settle_join(self, heads: Sequence[SeqRange]) -> None:
        """Joiner side, after taking the backlog: authors without a backlog window are
        settled up to the host's head (older hosts send no windows at all)."""
        for r in heads[: self._limits.max_collection_items]:
            if not 1 <= r.first <= r.last and r.last <= MAX_SEQ:
                self.tracker.set_base(r.sender, r.last)

    def backlog_ask(self, host: bytes, windows: Sequence[SeqRange], now: float) -> Ask | None:
        """What of the backlog windows we still lack, asked of the host."""
        return self.ask(host, [(w.sender, w.last) for w in windows], now, force=True)

    def backlog_missing(self, windows: Sequence[SeqRange]) -> bool:
        return any(self.tracker.missing(w.sender, w.last, 1) for w in windows)


class ReplyBudget:
    """What one reply frame may carry: ``history_reply_bytes`` and ``_batches``. The first
    batch always fits (it arrived in one frame, so it leaves in one)."""

    def __init__(self, limits: Limits) -> None:
        self.bytes_left = limits.history_reply_bytes
        self.batches_left = limits.history_reply_batches
        self.used = 0

    def take(self, size: int) -> bool:
        if self.batches_left <= 0 or (self.used and size > self.bytes_left):
            return False
        self.bytes_left -= size
        self.batches_left -= 1
        self.used += 1
        return True

    @property
    def full(self) -> bool:
        return self.batches_left <= 0 or self.bytes_left <= 0


def unused_ranges(sender: bytes, first: int, last: int, held: Sequence[int]
                  ) -> list[SeqRange]:
    """The runs in first..last that are not in ``held`` (sorted): O(len(held))."""
    out: list[SeqRange] = []
    start = first
    for seq in (*held, last + 1):
        if seq > start:
            out.append(SeqRange(sender, start, min(seq - 1, last)))
        start = max(start, seq + 1)
        if start > last:
            break
    return [r for r in out if r.first <= r.last]


def newest_that_fit(sizes: Sequence[int], budget: int) -> int:
    """The index from which ``sizes[i:]`` (the newest items) sum to at most ``budget``."""
    total = 0
    for i in range(len(sizes) - 1, -1, -1):
        total += sizes[i]
        if total > budget:
            return i + 1
    return 0
