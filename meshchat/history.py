"""Per-author sequence tracking for one room: duplicates, gaps and what to fetch. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from .protocol.messages import SeqRange


@dataclass(slots=True)
class _Author:
    head: int = 0  # every seq in (base, head] is held
    above: set[int] = field(default_factory=set)  # held seqs beyond head


class SeqTracker:
    """Which (author, seq) this node holds for a room.

    ``head`` is the highest seq up to which nothing is missing. A joiner starts from the
    host's heads (``set_base``): what came before its join is history, not a gap.
    """

    def __init__(self) -> None:
        self._authors: dict[bytes, _Author] = {}

    def set_base(self, author: bytes, seq: int) -> None:
        a = self._authors.setdefault(author, _Author())
        if seq > a.head:
            a.head = seq
            a.above = {s for s in a.above if s > seq}
            self._advance(a)

    def add(self, author: bytes, seq: int) -> bool:
        """Record ``seq``; False if it was already held (a duplicate)."""
        a = self._authors.setdefault(author, _Author())
        if seq <= a.head or seq in a.above:
            return False
        a.above.add(seq)
        self._advance(a)
        return True

    @staticmethod
    def _advance(a: _Author) -> None:
        while a.head + 1 in a.above:
            a.head += 1
            a.above.discard(a.head)

    def head(self, author: bytes) -> int:
        a = self._authors.get(author)
        return a.head if a else 0

    def heads(self) -> tuple[SeqRange, ...]:
        return tuple(SeqRange(author, 0, a.head) for author, a in self._authors.items())

    def missing(self, author: bytes, upto: int, limit: int = 64) -> list[SeqRange]:
        """Ranges of seqs in (head, upto] not held, at most ``limit`` ranges."""
        a = self._authors.get(author) or _Author()
        out: list[SeqRange] = []
        start: int | None = None
        for seq in range(a.head + 1, upto + 1):
            if seq in a.above:
                if start is not None:
                    out.append(SeqRange(author, start, seq - 1))
                    start = None
                    if len(out) >= limit:
                        return out
            elif start is None:
                start = seq
        if start is not None:
            out.append(SeqRange(author, start, upto))
        return out
