"""The one token-bucket mechanism every per-peer and per-address limit uses."""

from __future__ import annotations

from meshchat.ratelimit import TokenBuckets


def test_burst_then_rate_and_a_refused_take_draws_nothing() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(8)
    assert [buckets.take("a", 10.0, 3, 0.0) for _ in range(4)] == [True, True, True, False]
    assert not buckets.take("a", 10.0, 3, 0.05, cost=1.0)  # half a token back: not enough
    assert buckets.take("a", 10.0, 3, 0.1)  # one whole token
    assert not buckets.take("b", 10.0, 3, 0.0, cost=4.0)  # over the burst: refused whole
    assert buckets.take("b", 10.0, 3, 0.0, cost=3.0)


def test_refill_never_passes_the_burst_and_time_going_back_adds_nothing() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(8)
    assert buckets.take("a", 1000.0, 2, 0.0, cost=2.0)
    assert not buckets.take("a", 1000.0, 2, -5.0)
    assert buckets.take("a", 1000.0, 2, 100.0, cost=2.0)
    assert not buckets.take("a", 1000.0, 2, 100.0)


def test_the_least_recently_used_bucket_goes_first() -> None:
    buckets: TokenBuckets[int] = TokenBuckets(3)
    for key in range(3):
        assert buckets.take(key, 0.0, 1, 0.0)
    assert not buckets.take(0, 0.0, 1, 0.0)  # 0 used again: most recent now
    assert buckets.take(3, 0.0, 1, 0.0)  # evicts 1, the least recently used
    assert len(buckets) == 3
    assert buckets.take(1, 0.0, 1, 0.0)  # 1 was forgotten: a full burst again
    assert not buckets.take(0, 0.0, 1, 0.0)  # 0 was kept, still empty


def test_wait_s_says_when_a_take_would_succeed_and_draws_nothing() -> None:
    b: TokenBuckets[str] = TokenBuckets(8)
    assert b.wait_s("a", 10.0, 5, 0.0) == 0.0  # an unknown key holds a full burst
    assert all(b.take("a", 10.0, 5, 0.0) for _ in range(5))
    assert b.wait_s("a", 10.0, 5, 0.0) == 0.1
    assert b.wait_s("a", 10.0, 5, 0.0, cost=3) == 0.3
    assert abs(b.wait_s("a", 10.0, 5, 0.05) - 0.05) < 1e-9
    assert b.wait_s("a", 10.0, 5, 0.0, cost=50) == 0.5  # above the burst: waits for the burst
    assert not b.take("a", 10.0, 5, 0.0)
    assert b.wait_s("a", 10.0, 5, 0.1) == 0.0 and b.take("a", 10.0, 5, 0.1)
