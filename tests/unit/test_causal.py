"""meshchat.causal: a batch is shown after the lines it follows, and nothing waits unbounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.causal import CausalOrder

ME, A, B, C = b"me", b"a", b"b", b"c"


class Screen:
    """What a receiver holds (stored lines) and what it showed, in order."""

    def __init__(self) -> None:
        self.held: set[tuple[bytes, int]] = set()
        self.shown: list[str] = []

    def holds(self, author: bytes, seq: int) -> bool:
        return (author, seq) in self.held

    def take(self, author: bytes, seqs: range) -> None:
        self.held.update((author, s) for s in seqs)

    def show(self, items: list[str]) -> None:
        self.shown += items


def test_a_batch_whose_lines_are_here_is_shown_at_once() -> None:
    order: CausalOrder[str] = CausalOrder(ME)
    screen = Screen()
    screen.take(A, range(1, 2))
    assert order.offer(A, 1, [], 0.0, screen.holds, "a1") == ["a1"]
    screen.take(B, range(1, 2))
    assert order.offer(B, 1, [(A, 1)], 0.0, screen.holds, "b1") == ["b1"]
    assert len(order) == 0 and order.timed_out == 0


def test_a_reply_waits_for_its_question_and_comes_right_after_it() -> None:
    order: CausalOrder[str] = CausalOrder(ME)
    screen = Screen()
    screen.take(B, range(1, 2))
    assert order.offer(B, 1, [(A, 1)], 0.0, screen.holds, "b1 answers a1") == []
    screen.take(A, range(1, 2))
    assert order.offer(A, 1, [], 0.1, screen.holds, "a1") == ["a1", "b1 answers a1"]
    assert len(order) == 0


def test_an_authors_later_batch_waits_behind_its_earlier_one() -> None:
    order: CausalOrder[str] = CausalOrder(ME)
    screen = Screen()
    screen.take(B, range(1, 3))
    assert order.offer(B, 1, [(A, 1)], 0.0, screen.holds, "b1") == []
    assert order.offer(B, 2, [], 0.0, screen.holds, "b2") == []  # follows nothing, but b1
    screen.take(A, range(1, 2))
    assert order.offer(A, 1, [], 0.0, screen.holds, "a1") == ["a1", "b1", "b2"]


def test_a_line_that_waits_is_not_yet_shown_to_what_follows_it() -> None:
    """c1 follows b1, which waits for a1: c1 waits too, and all come out in order."""
    order: CausalOrder[str] = CausalOrder(ME)
    screen = Screen()
    screen.take(B, range(1, 2))
    screen.take(C, range(1, 2))
    assert order.offer(B, 1, [(A, 1)], 0.0, screen.holds, "b1") == []
    assert order.offer(C, 1, [(B, 1)], 0.0, screen.holds, "c1") == []
    screen.take(A, range(1, 2))
    assert order.offer(A, 1, [], 0.0, screen.holds, "a1") == ["a1", "b1", "c1"]


def test_what_never_comes_is_waited_for_hold_s_and_counted() -> None:
    order: CausalOrder[str] = CausalOrder(ME, hold_s=1.0)
    screen = Screen()
    screen.take(B, range(1, 2))
    assert order.offer(B, 1, [(A, 2**64 - 1)], 0.0, screen.holds, "b1") == []
    assert order.due(0.99, screen.holds) == []
    assert order.due(1.0, screen.holds) == ["b1"]
    assert order.timed_out == 1 and len(order) == 0


def test_the_waiting_line_is_bounded_and_the_oldest_goes_out_first() -> None:
    order: CausalOrder[str] = CausalOrder(ME, max_held=3)
    screen = Screen()
    out: list[str] = []
    for i in range(1, 6):
        screen.take(B, range(i, i + 1))
        out += order.offer(B, i, [(A, 10**9 + i)], float(i), screen.holds, f"b{i}")
    assert out == ["b1", "b2"] and len(order) == 3 and order.timed_out == 2


def test_own_and_self_names_are_not_waited_for_and_only_max_deps_are_read() -> None:
    order: CausalOrder[str] = CausalOrder(ME, max_deps=2)
    screen = Screen()
    screen.take(B, range(1, 2))
    # Our own lines, and the author's own, never make a batch wait; the third name is unread.
    assert order.offer(B, 1, [(ME, 99), (B, 99), (A, 99)], 0.0, screen.holds, "b1") == ["b1"]


_AUTHORS = [A, B, C]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_AUTHORS), st.integers(1, 3),
                          st.lists(st.tuples(st.sampled_from(_AUTHORS), st.integers(0, 12)),
                                   max_size=4),
                          st.floats(0, 0.5)), max_size=25))
def test_every_batch_comes_out_once_and_in_order_when_nothing_times_out(
        batches: list[tuple[bytes, int, list[tuple[bytes, int]], float]]) -> None:
    """Any batches, any names (true or not), any arrival times: each batch is shown exactly
    once; each author's batches in their order; and a batch shown before its hold ran out
    comes after every line it names."""
    order: CausalOrder[tuple[bytes, int, int]] = CausalOrder(ME, max_held=8, hold_s=1.0)
    screen = Screen()
    next_seq = {a: 1 for a in _AUTHORS}
    now = 0.0
    out: list[tuple[bytes, int, int]] = []
    deps_of: dict[tuple[bytes, int, int], list[tuple[bytes, int]]] = {}
    for author, count, after, step in batches:
        now += step
        out += order.due(now, screen.holds)
        first = next_seq[author]
        next_seq[author] += count
        screen.take(author, range(first, first + count))
        item = (author, first, first + count - 1)
        deps_of[item] = after
        before = order.timed_out
        got = order.offer(author, first, after, now, screen.holds, item)
        out += got
        if order.timed_out == before:
            for shown in got:
                done = out[: out.index(shown)]
                for a, s in deps_of[shown]:
                    if a != shown[0] and (a, s) in screen.held:
                        assert any(x[0] == a and x[1] <= s <= x[2] for x in done), (shown, a, s)
    out += order.due(now + 10.0, screen.holds)
    assert sorted(out) == sorted(deps_of) and len(out) == len(deps_of)
    for a in _AUTHORS:
        mine = [x[1] for x in out if x[0] == a]
        if order.timed_out == 0:
            assert mine == sorted(mine)
