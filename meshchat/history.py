"""Per-author sequence tracking for one room, on intervals: duplicates, gaps, what to fetch. Pure.

Every operation costs O(held runs), never O(numbers): a peer that names a number near 2^64
makes no loop walk towards it. The runs held above an author's head are bounded
(``max_runs``); a number that would fragment them further is refused, not tracked.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from .protocol.messages import SeqRange

__all__ = ["SeqTracker"]


@dataclass(slots=True)
class _Author:
    head: int = 0  # every seq in 1..head is held (or settled: history before we joined)
    runs: list[tuple[int, int]] = field(default_factory=list)  # held runs above head + 1


class SeqTracker:
    """Which (author, seq) this node holds for a room.

    ``head`` is the highest seq up to which nothing is missing. A joiner starts from the
    host's heads (``set_base``): what came before its join is history, not a gap.
    """

    def __init__(self, max_runs: int = 1024) -> None:
        self._authors: dict[bytes, _Author] = {}
        self._max_runs = max_runs

    def set_base(self, author: bytes, seq: int) -> None:
        """Settle everything up to ``seq``: held, or older than anything we will fetch."""
        a = self._authors.setdefault(author, _Author())
        if seq > a.head:
            a.head = seq
            while a.runs and a.runs[0][0] <= seq + 1:
                a.head = max(a.head, a.runs.pop(0)[1])

    def add(self, author: bytes, seq: int) -> bool:
        """Record ``seq``; False if it was already held (a duplicate) or refused."""
        return bool(self.add_range(author, seq, seq))

    def add_range(self, author: bytes, first: int, last: int) -> list[tuple[int, int]] | None:
        """Record ``first..last``; the parts that were not held before, lowest first.

        None (and nothing recorded) if the range would leave more than ``max_runs`` runs."""
        a = self._authors.setdefault(author, _Author())
        first = max(first, a.head + 1)
        if first > last:
            return []
        runs = a.runs
        # Runs that overlap or touch first..last: runs[lo:hi].
        lo = bisect_left(runs, (first, first))
        if lo > 0 and runs[lo - 1][1] >= first - 1:
            lo -= 1
        hi = lo
        while hi < len(runs) and runs[hi][0] <= last + 1:
            hi += 1
        fresh: list[tuple[int, int]] = []
        at = first
        for run_first, run_last in runs[lo:hi]:
            if run_first > at:
                fresh.append((at, min(run_first - 1, last)))
            at = max(at, run_last + 1)
        if at <= last:
            fresh.append((at, last))
        merged = (min(first, runs[lo][0]) if hi > lo else first,
                  max(last, runs[hi - 1][1]) if hi > lo else last)
        joins_head = merged[0] == a.head + 1
        if not joins_head and len(runs) - (hi - lo) + 1 > self._max_runs:
            return None
        runs[lo:hi] = [merged]
        if joins_head:
            a.head = runs.pop(0)[1]
        return fresh

    def head(self, author: bytes) -> int:
        a = self._authors.get(author)
        return a.head if a else 0

    def top(self, author: bytes) -> int:
        """The highest seq held of ``author``: what it has shown us so far."""
        a = self._authors.get(author)
        if a is None:
            return 0
        return a.runs[-1][1] if a.runs else a.head

    def knows(self, author: bytes) -> bool:
        return author in self._authors

    def holds(self, author: bytes, seq: int) -> bool:
        a = self._authors.get(author)
        if a is None:
            return False
        if seq <= a.head:
            return True
        i = bisect_left(a.runs, (seq + 1, seq + 1)) - 1
        return i >= 0 and a.runs[i][0] <= seq <= a.runs[i][1]

    def runs(self, author: bytes) -> int:
        """How many runs are held above the author's head (bounded by ``max_runs``)."""
        a = self._authors.get(author)
        return len(a.runs) if a else 0

    def heads(self) -> tuple[SeqRange, ...]:
        return tuple(SeqRange(author, 0, a.head) for author, a in self._authors.items())

    def holed(self, limit: int) -> list[tuple[bytes, int]]:
        """At most ``limit`` authors with a hole below what we hold of them: (author, top)."""
        out: list[tuple[bytes, int]] = []
        for author, a in self._authors.items():
            if a.runs:
                out.append((author, a.runs[-1][1]))
                if len(out) >= limit:
                    break
        return out

    def __len__(self) -> int:
        return len(self._authors)

    def missing(self, author: bytes, upto: int, limit: int = 64,
                max_numbers: int | None = None) -> list[SeqRange]:
        """Ranges of seqs in (head, upto] not held: at most ``limit`` ranges and, if given,
        ``max_numbers`` numbers in all (the lowest first)."""
        a = self._authors.get(author) or _Author()
        budget = max_numbers if max_numbers is not None else upto
        out: list[SeqRange] = []
        at = a.head + 1
        for run_first, run_last in (*a.runs, (upto + 1, upto + 1)):
            if at > upto or len(out) >= limit or budget <= 0:
                break
            if run_first > at:
                last = min(run_first - 1, upto, at + budget - 1)
                out.append(SeqRange(author, at, last))
                budget -= last - at + 1
            at = max(at, run_last + 1)
        return out
