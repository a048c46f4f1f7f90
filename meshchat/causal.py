"""Causal order on screen across authors: a reply is never shown above what it answers. Pure.

Each author's lines come in its own order (sequence numbers), but two authors' lines travel on
two connections, so a third member may get a reply before the line it answers. A batch
therefore says what its author had been shown (``ChatBatch.after``: per other author, the
highest number shown to it since its own previous batch). A receiver shows a batch once it
has shown each of those lines. Until then the batch waits here, bounded three ways:

- at most ``max_held`` batches wait per room; one more shows the oldest at once;
- each waits at most ``hold_s``: a line that never comes (lost, or a hostile author naming
  numbers nobody said) delays only the lines that named it, and for a bounded time;
- only the first ``max_deps`` names of a batch are looked at.

A batch also waits behind an earlier waiting batch of the same author, so each author's order
holds too. Nothing here is dropped: every batch offered is returned once, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["CausalOrder"]

T = TypeVar("T")

Shown = Callable[[bytes, int], bool]
"""Whether (author, seq) is held here: stored, so shown unless it waits in this order."""


@dataclass(slots=True)
class _Waiting(Generic[T]):
    sender: bytes
    first: int
    after: tuple[tuple[bytes, int], ...]
    until: float
    item: T


class CausalOrder(Generic[T]):
    """The batches of one room that wait for lines they follow (``item``: what to show)."""

    def __init__(self, me: bytes, max_held: int = 64, max_deps: int = 16,
                 hold_s: float = 1.0) -> None:
        self._me = me
        self._max_held = max(1, max_held)
        self._max_deps = max(0, max_deps)
        self._hold_s = hold_s
        self._waiting: list[_Waiting[T]] = []  # in arrival order
        self.timed_out = 0
        """Batches shown because what they follow did not come in time (or the line was full)."""

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, sender: bytes, first: int, after: Sequence[tuple[bytes, int]],
              now: float, shown: Shown, item: T) -> list[T]:
        """A batch of ``sender`` from ``first`` that follows ``after``: what to show now, in
        order (this batch and any it lets out), or nothing yet if it must wait."""
        deps = tuple((a, s) for a, s in after[: self._max_deps] if a not in (sender, self._me))
        entry = _Waiting(sender, first, deps, now + self._hold_s, item)
        if not self._waiting and self._met(entry, shown):
            return [item]  # the common case: nothing waits, and what it follows is here
        self._waiting.append(entry)
        out: list[T] = []
        if len(self._waiting) > self._max_held:
            self.timed_out += 1
            out.append(self._waiting.pop(0).item)
        return out + self._release(shown)

    def due(self, now: float, shown: Shown) -> list[T]:
        """Batches that waited ``hold_s``, and whatever they let out, in order (deadlines
        come in arrival order: the overdue ones are the oldest)."""
        out: list[T] = []
        while self._waiting and self._waiting[0].until <= now:
            self.timed_out += 1
            out.append(self._waiting.pop(0).item)
            out += self._release(shown)
        return out

    # ------------------------------------------------------------------ inside

    def _lowest(self) -> dict[bytes, int]:
        """Per author, the lowest first number of its batches that wait."""
        low: dict[bytes, int] = {}
        for w in self._waiting:
            if w.first < low.get(w.sender, w.first + 1):
                low[w.sender] = w.first
        return low

    @staticmethod
    def _ready(entry: _Waiting[T], shown: Shown, low: dict[bytes, int]) -> bool:
        if low.get(entry.sender, entry.first) < entry.first:
            return False  # an earlier batch of the same author waits
        return all(shown(a, s) and low.get(a, s + 1) > s for a, s in entry.after)

    def _met(self, entry: _Waiting[T], shown: Shown) -> bool:
        return self._ready(entry, shown, self._lowest())

    def _release(self, shown: Shown) -> list[T]:
        """Every waiting batch whose lines are all shown now; O(held x deps) a pass."""
        out: list[T] = []
        while self._waiting:
            low = self._lowest()
            ready = [w for w in self._waiting if self._ready(w, shown, low)]
            if not ready:
                break
            for w in ready:
                self._waiting.remove(w)
                out.append(w.item)
        return out
