"""The history-sync core and the interval tracker: pure, no sockets, no sleeps."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.config import Limits, Timings
from meshchat.history import SeqTracker
from meshchat.historysync import (
    MAX_SEQ,
    HistorySync,
    ReplyBudget,
    Source,
    newest_that_fit,
    unused_ranges,
)
from meshchat.protocol.messages import SeqRange

A, B, P = b"a" * 32, b"b" * 32, b"p" * 32
HUGE = 2**64 - 1


def sync(**limits: int) -> HistorySync:
    return HistorySync(Limits(**limits), Timings.fast())  # type: ignore[arg-type]


# ---------------------------------------------------------------- the tracker, on intervals


ops = st.lists(st.tuples(st.sampled_from(["add", "range", "base"]),
                         st.integers(1, 60), st.integers(0, 8)), max_size=60)


@given(ops)
@settings(max_examples=300, deadline=None)
def test_tracker_agrees_with_a_set_of_numbers(steps: list[tuple[str, int, int]]) -> None:
    t = SeqTracker()
    held: set[int] = set()
    for op, n, width in steps:
        if op == "add":
            assert t.add(A, n) == (n not in held)
            held.add(n)
        elif op == "range":
            fresh = t.add_range(A, n, n + width)
            assert fresh is not None
            assert {s for f, last in fresh for s in range(f, last + 1)} == \
                set(range(n, n + width + 1)) - held
            held |= set(range(n, n + width + 1))
        else:
            t.set_base(A, n)
            held |= set(range(1, n + 1))
        head = 0
        while head + 1 in held:
            head += 1
        assert t.head(A) == head
        assert t.top(A) == max(held, default=0)
        assert all(t.holds(A, s) == (s in held) for s in range(1, 75))
        gaps = {s for r in t.missing(A, 70, limit=1000) for s in range(r.first, r.last + 1)}
        assert gaps == set(range(head + 1, 71)) - held


def test_numbers_near_2_64_cost_no_loop() -> None:
    t = SeqTracker()
    started = time.perf_counter()
    t.add(A, 5)
    assert t.add_range(A, 10, HUGE) == [(10, HUGE)]
    assert t.missing(A, HUGE) == [SeqRange(A, 1, 4), SeqRange(A, 6, 9)]
    assert t.missing(A, HUGE, max_numbers=3) == [SeqRange(A, 1, 3)]
    t.set_base(A, HUGE - 1)
    assert t.head(A) == HUGE
    assert time.perf_counter() - started < 0.05


def test_missing_is_bounded_by_ranges_and_numbers() -> None:
    t = SeqTracker()
    for s in range(2, 400, 2):
        t.add(A, s)
    assert len(t.missing(A, 10**9, limit=64)) == 64
    gaps = t.missing(A, 10**9, limit=1000, max_numbers=1000)
    assert sum(r.last - r.first + 1 for r in gaps) == 1000


def test_runs_above_the_head_are_bounded() -> None:
    t = SeqTracker(max_runs=4)
    for s in (3, 5, 7, 9):
        assert t.add(A, s)
    assert t.add_range(A, 11, 11) is None  # a fifth run: refused, nothing recorded
    assert not t.holds(A, 11) and t.runs(A) == 4
    assert t.add(A, 4)  # joins two runs: allowed
    assert t.add(A, 1) and t.head(A) == 1


# ---------------------------------------------------------------- taking batches


def test_live_batch_far_ahead_is_dropped_not_tracked() -> None:
    s = sync(max_seq_ahead=1000)
    assert s.take(A, 1, 1, 0.0, Source.LIVE).fresh == ((1, 1),)
    assert s.take(A, 2000, 1, 0.0, Source.LIVE).drop == "seq_ahead"
    assert s.take(A, HUGE, 1, 0.0, Source.LIVE).drop == "seq_ahead"
    assert s.tracker.top(A) == 1
    taken = s.take(A, 500, 2, 0.0, Source.LIVE)
    assert taken.fresh == ((500, 501),) and 500 in taken and 502 not in taken
    assert taken.ask is not None and taken.ask.peer == A
    assert taken.ask.ranges == (SeqRange(A, 2, 499),)


def test_live_lines_are_taken_at_the_line_rate_and_the_gap_is_fetched_later() -> None:
    """A batch over an author's line budget is dropped unrecorded; the next one that fits
    shows the gap and asks the author for it; replies and the join backlog are not paced."""
    s = sync(chat_lines_burst=100, chat_lines_per_s=10, chat_batch_cost=0)  # type: ignore[arg-type]
    assert s.take(A, 1, 80, 0.0, Source.LIVE).fresh == ((1, 80),)
    assert s.take(A, 81, 40, 0.0, Source.LIVE).drop == "line_rate"  # 20 left: all or none
    assert s.tracker.head(A) == 80
    assert s.take(B, 1, 100, 0.0, Source.LIVE).fresh == ((1, 100),)  # a bucket per author
    assert s.take(A, 121, 10, 0.5, Source.LIVE).fresh == ((121, 130),)  # 20 + 5 left
    taken = s.take(A, 131, 1, 0.5, Source.LIVE)
    assert taken.fresh == ((131, 131),)
    late = s.ask(A, [(A, 130)], 10.0)
    assert late is not None and late.ranges == (SeqRange(A, 81, 120),)
    assert s.take(A, 81, 40, 10.1, Source.REPLY, peer=A).fresh == ((81, 120),)
    j = sync(chat_lines_burst=10)
    assert j.take(A, 1, 500, 0.0, Source.JOIN).fresh == ((1, 500),)


def test_a_hole_nobody_answered_is_asked_again_later_and_ever_later() -> None:
    s = sync()  # Timings.fast(): asked again after 2 x 0.1 s at the soonest
    s.take(A, 1, 1, 0.0, Source.LIVE)
    first = s.take(A, 5, 1, 0.0, Source.LIVE).ask  # asks A for 2..4 at once
    assert first is not None and first.ranges == (SeqRange(A, 2, 4),)
    who = {A: A}.get
    assert s.overdue(0.05, who) == []  # just asked
    again = s.overdue(0.25, who)
    assert [a.ranges for a in again] == [(SeqRange(A, 2, 4),)] and again[0].peer == A
    assert s.overdue(0.3, who) == []
    assert s.overdue(0.5, who) == []  # the same hole: 0.4 s later this time
    assert len(s.overdue(0.7, who)) == 1
    assert s.overdue(50.0, lambda author: None) == []  # nobody to ask
    assert len(s.overdue(60.0, who)) == 1
    assert s.take(A, 2, 3, 60.1, Source.REPLY, peer=A).fresh == ((2, 4),)
    assert s.tracker.holed(8) == [] and s.overdue(100.0, who) == []


def test_a_batch_costs_more_than_its_lines() -> None:
    """Each frame costs a receiver its own work: a flood of one-line batches spends the
    burst ``1 + chat_batch_cost`` at a time."""
    s = sync(chat_lines_burst=100, chat_lines_per_s=10, chat_batch_cost=9)
    taken = [s.take(A, n, 1, 0.0, Source.LIVE).drop for n in range(1, 21)]
    assert taken == [""] * 10 + ["line_rate"] * 10
    assert s.take(B, 1, 91, 0.0, Source.LIVE).fresh == ((1, 91),)


def test_a_gap_is_asked_for_once_per_interval_and_in_bounded_pieces() -> None:
    s = sync(max_gap_fetch=100)
    s.take(A, 1, 1, 0.0, Source.LIVE)
    first = s.take(A, 5000, 1, 0.0, Source.LIVE).ask
    assert first is not None and first.ranges == (SeqRange(A, 2, 101),)
    assert s.ask(A, [(A, 4999)], 0.01) is None  # asked just now
    again = s.ask(A, [(A, 4999)], 10.0)
    assert again is not None and again.ranges == (SeqRange(A, 2, 101),)


def test_a_reply_is_taken_only_for_what_we_asked_and_from_known_authors() -> None:
    s = sync()
    s.take(A, 1, 1, 0.0, Source.LIVE)
    s.take(A, 10, 1, 0.0, Source.LIVE)  # asks A for 2..9
    assert s.take(A, 2, 3, 0.1, Source.REPLY, peer=P).drop == "unasked"  # P was not asked
    assert s.take(A, 20, 3, 0.1, Source.REPLY, peer=A).drop == "unasked"  # outside 2..9
    assert s.take(A, 2, 3, 0.1, Source.REPLY, peer=A, author_ok=False).drop == "stranger"
    assert s.take(A, 2, 3, 0.1, Source.REPLY, peer=A).fresh == ((2, 4),)
    assert s.take(A, 5, 5, 60.0, Source.REPLY, peer=A).drop == "unasked"  # expired


def test_void_only_from_the_author_and_only_inside_what_we_asked() -> None:
    s = sync()
    s.take(A, 1, 1, 0.0, Source.LIVE)
    s.take(A, 100, 1, 0.0, Source.LIVE)  # asks A for 2..99
    void = (SeqRange(B, 2, 50), SeqRange(A, 1000, HUGE), SeqRange(A, 2, HUGE))
    assert s.take_void(A, void, 0.1) == (1, 2)
    assert s.tracker.head(A) == 100  # 2..99 settled, nothing beyond what we asked
    assert s.tracker.top(A) == 100
    many = tuple(SeqRange(A, n, n) for n in range(1, 5000))
    assert s.take_void(A, many, 0.1)[1] >= 5000 - Limits().max_void_ranges


def test_heads_ask_once_for_all_authors_and_drop_the_implausible() -> None:
    s = sync(max_seq_ahead=1000)
    s.take(A, 1, 1, 0.0, Source.LIVE)
    s.take(B, 1, 1, 0.0, Source.LIVE)
    heads = (SeqRange(A, 0, 50), SeqRange(B, 0, HUGE), SeqRange(P, 0, 9))
    ask, drops = s.on_heads(P, heads, 0.0, lambda author: author != P)
    assert ask is not None and ask.ranges == (SeqRange(A, 2, 50),)
    assert drops == {"seq_ahead": 1, "stranger": 1}


def test_the_asked_map_stays_bounded() -> None:
    s = sync(max_history_asked=100)
    for n in range(5000):
        s.ask(bytes([n % 251]) * 32, [(n.to_bytes(32, "big"), 5)], float(n))
    assert s.asked_entries <= 100
    assert len(s.asked_from) <= Limits().max_peers


def test_after_a_reply_with_news_the_rest_is_asked_at_once() -> None:
    s = sync(max_gap_fetch=10)
    s.take(A, 1, 1, 0.0, Source.LIVE)
    s.take(A, 30, 1, 0.0, Source.LIVE)  # asks A for 2..11
    s.take(A, 2, 10, 0.01, Source.REPLY, peer=A)
    assert s.after_reply(A, False, 0.01) is None
    more = s.after_reply(A, True, 0.01)
    assert more is not None and more.ranges == (SeqRange(A, 12, 21),)


# ---------------------------------------------------------------- serving


def test_serve_clips_every_range() -> None:
    s = sync(max_gap_fetch=100, max_ranges_per_request=3)
    asked = (SeqRange(A, 0, 5), SeqRange(A, 9, 3), SeqRange(A, 1, HUGE),
             SeqRange(A, HUGE, HUGE), SeqRange(A, 7, 8), SeqRange(A, 9, 10))
    assert s.serve(asked) == [SeqRange(A, 1, 100)]
    assert s.serve((SeqRange(A, MAX_SEQ, HUGE),)) == [SeqRange(A, MAX_SEQ, MAX_SEQ)]


def test_reply_budget_bytes_and_batches() -> None:
    b = ReplyBudget(Limits(history_reply_bytes=100, history_reply_batches=3))
    assert b.take(500)  # the first always fits
    assert not b.take(1)
    b = ReplyBudget(Limits(history_reply_bytes=100, history_reply_batches=3))
    assert b.take(10) and b.take(10) and b.take(10) and not b.take(10) and b.full


def test_unused_ranges_and_newest_that_fit() -> None:
    assert unused_ranges(A, 1, 10, [2, 3, 7]) == [SeqRange(A, 1, 1), SeqRange(A, 4, 6),
                                                  SeqRange(A, 8, 10)]
    assert unused_ranges(A, 1, 3, [1, 2, 3]) == []
    assert newest_that_fit([5, 5, 5], 10) == 1
    assert newest_that_fit([5, 5, 5], 100) == 0
    assert newest_that_fit([50], 10) == 1


# ---------------------------------------------------------------- joining


def test_join_takes_the_backlog_and_settles_what_is_older() -> None:
    host = sync()
    for n in range(1, 301):
        host.take(A, n, 1, 0.0, Source.LIVE)
    host.take(B, 1, 3, 0.0, Source.LIVE)
    backlog = [(A, n) for n in range(101, 301)]  # the last 200: all A's
    heads = host.join_heads(backlog)
    assert set(heads) == {SeqRange(A, 101, 300), SeqRange(B, 4, 3)}

    joiner = sync()
    windows = joiner.begin_join(heads)
    assert windows == (SeqRange(A, 101, 300),)
    assert joiner.tracker.head(A) == 100  # older than the backlog: not a gap
    for n in range(201, 301):  # what fitted in the JoinAccept
        assert joiner.take(A, n, 1, 0.0, Source.JOIN).fresh == ((n, n),)
    joiner.settle_join(heads)
    assert joiner.tracker.head(B) == 3
    assert joiner.backlog_missing(windows)
    ask = joiner.backlog_ask(P, windows, 0.0)
    assert ask is not None and ask.ranges == (SeqRange(A, 101, 200),)
    assert joiner.take(A, 101, 100, 0.1, Source.REPLY, peer=P).fresh == ((101, 200),)
    assert not joiner.backlog_missing(windows)


def test_old_style_heads_settle_after_the_backlog() -> None:
    joiner = sync()
    heads = (SeqRange(A, 0, 50),)
    assert joiner.begin_join(heads) == ()
    assert joiner.take(A, 41, 10, 0.0, Source.JOIN).fresh == ((41, 50),)
    joiner.settle_join(heads)
    assert joiner.tracker.head(A) == 50


def test_a_hostile_window_is_cut_to_the_backlog_size() -> None:
    joiner = sync(history_on_join=200)
    assert joiner.begin_join((SeqRange(A, 1, MAX_SEQ),)) == (SeqRange(A, MAX_SEQ - 199, MAX_SEQ),)
    # Numbers the log could never store are no base at all (our own next number is above it).
    heads = (SeqRange(B, 1, HUGE), SeqRange(P, 0, HUGE))
    assert joiner.begin_join(heads) == ()
    joiner.settle_join(heads)
    assert joiner.tracker.head(B) == 0 and joiner.tracker.head(P) == 0
