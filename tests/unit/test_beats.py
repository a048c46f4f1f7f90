"""The idle schedule (meshchat.beats) and connection-drop liveness (meshchat.liveness)."""

from __future__ import annotations

import pytest

from meshchat import Timings
from meshchat.beats import NUDGE_AGAIN_S, Beat, BeatPlan, refresh_interval
from meshchat.liveness import Liveness, LivenessTable

T = Timings()  # heartbeat 0.25 s, presence and heads refresh 10 s, budget 2 a second
PEERS = frozenset({b"b", b"c"})
ROOM = b"r" * 16


def beats(plan: BeatPlan, start: float, seconds: float, presence: object = "p",
          known: frozenset[bytes] = PEERS,
          rooms: dict[bytes, tuple[bool, object, int]] | None = None) -> list[tuple[float, Beat]]:
    """Run the plan beat by beat; each beat's (time, Beat)."""
    out = []
    n = round(seconds / T.heartbeat_interval_s)
    for i in range(n):
        now = start + i * T.heartbeat_interval_s
        out.append((now, plan.step(now, presence, known, rooms or {})))
    return out


def test_presence_goes_out_at_the_start_then_only_on_change_or_refresh() -> None:
    plan = BeatPlan(T)
    run = beats(plan, 0.0, 30.0)
    sent = [now for now, b in run if b.presence]
    assert sent == [0.0, 10.0, 20.0]
    assert plan.step(30.0, "renamed", PEERS, {}).presence
    assert not plan.step(30.25, "renamed", PEERS, {}).presence


def test_introductions_ride_on_presence_only_when_the_peers_changed() -> None:
    plan = BeatPlan(T)
    first = plan.step(0.0, "p", PEERS, {})
    assert first.presence and first.introductions
    assert not plan.step(10.0, "p", PEERS, {}).introductions  # a refresh, same peers
    more = PEERS | {b"d"}
    assert not plan.step(10.25, "p", more, {}).presence  # a new peer alone sends nothing...
    assert plan.step(20.0, "p", more, {}).introductions  # ... its card goes with the next


def test_a_nudge_sends_presence_now_and_once_more_a_moment_later() -> None:
    plan = BeatPlan(T)
    plan.step(0.0, "p", PEERS, {})
    for _ in range(50):
        plan.nudge(1.0)  # fifty new peers in one beat
    run = beats(plan, 1.0, 4.0)
    sent = [now for now, b in run if b.presence]
    assert sent == [1.0, 1.0 + NUDGE_AGAIN_S]


def test_a_host_beats_every_beat_and_sends_its_heads_in_full_only_when_they_move() -> None:
    plan = BeatPlan(T)
    rooms = {ROOM: (True, ("h", 1), 5)}
    run = beats(plan, 0.0, 12.0, rooms=rooms)
    assert all(ROOM in b.heads for _, b in run)
    full = [now for now, b in run if ROOM in b.full]
    assert full == [0.0, 10.0]
    moved = plan.step(12.0, "p", PEERS, {ROOM: (True, ("h", 2), 5)})
    assert ROOM in moved.full


def test_a_member_sends_heads_on_change_at_most_every_gap_interval() -> None:
    plan = BeatPlan(T)
    assert ROOM in plan.step(0.0, "p", PEERS, {ROOM: (False, 1, 5)}).full
    assert plan.step(0.25, "p", PEERS, {ROOM: (False, 2, 5)}).heads == ()  # too soon
    later = plan.step(0.5, "p", PEERS, {ROOM: (False, 2, 5)})
    assert later.heads == (ROOM,) and ROOM in later.full
    quiet = beats(plan, 0.75, 9.0, rooms={ROOM: (False, 2, 5)})
    assert not any(b.heads for _, b in quiet)


def test_a_room_left_is_forgotten() -> None:
    plan = BeatPlan(T)
    plan.step(0.0, "p", PEERS, {ROOM: (False, 1, 5)})
    plan.step(0.25, "p", PEERS, {})
    assert ROOM in plan.step(0.5, "p", PEERS, {ROOM: (False, 1, 5)}).full  # as new


@pytest.mark.parametrize("peers", [1, 20, 21, 100, 1000, 5000])
def test_refreshes_stretch_so_a_receiver_gets_at_most_the_budget(peers: int) -> None:
    every = refresh_interval(T.presence_refresh_s, peers, T.refresh_budget_per_s)
    assert every >= T.presence_refresh_s
    assert peers / every <= T.refresh_budget_per_s + 1e-9
    plan = BeatPlan(T)
    assert plan.quiet_s(peers) == pytest.approx(every - T.presence_refresh_s)
    if peers <= T.refresh_budget_per_s * T.presence_refresh_s:
        assert plan.quiet_s(peers) == 0


def test_a_crowd_stretches_the_presence_refresh() -> None:
    crowd = frozenset(bytes([i % 256, i // 256]) for i in range(400))
    plan = BeatPlan(T)
    run = beats(plan, 0.0, 400.0, known=crowd)
    sent = [now for now, b in run if b.presence]
    assert sent == [0.0, 200.0]  # 400 peers at 2 a second: every 200 s


def test_refresh_interval_with_no_budget_is_the_base() -> None:
    assert refresh_interval(10.0, 10_000, 0.0) == 10.0


# ---------------------------------------------------------------- liveness


def test_a_dropped_connection_makes_a_peer_suspect_and_silence_then_makes_it_gone() -> None:
    table = LivenessTable(T)
    table.heard(b"p", 0.0)
    assert table.suspect(b"p", 1.0) is True
    assert table.state(b"p") is Liveness.EVASIVE
    assert table.suspect(b"p", 1.1) is False  # already asked
    assert table.tick(1.0 + T.peer_suspect_s - 0.01) == []
    assert table.tick(1.0 + T.peer_suspect_s) == [(b"p", Liveness.GONE)]


def test_an_answer_clears_the_suspicion() -> None:
    table = LivenessTable(T)
    table.heard(b"p", 0.0)
    table.suspect(b"p", 1.0)
    table.heard(b"p", 1.2)
    assert table.is_alive(b"p")
    assert table.tick(5.0) == []


def test_an_unknown_peer_is_not_suspected() -> None:
    table = LivenessTable(T)
    assert table.suspect(b"x", 0.0) is False
    assert table.tick(100.0) == []


def test_our_own_stall_extends_a_suspicion() -> None:
    table = LivenessTable(T)
    table.heard(b"p", 0.0)
    table.suspect(b"p", 1.0)
    table.grace(3.0)  # we were frozen: the ping's answer may still be on its way
    assert table.tick(3.0) == []
    assert table.tick(3.0 + T.peer_suspect_s) == [(b"p", Liveness.GONE)]


def test_quiet_stretches_silence_based_liveness() -> None:
    table = LivenessTable(T)
    table.heard(b"p", 0.0)
    assert table.tick(T.peer_evasive_s + 1.0, quiet_s=100.0) == []
    assert table.tick(T.peer_evasive_s + 100.0, quiet_s=100.0) == [(b"p", Liveness.EVASIVE)]
    assert table.tick(T.peer_expired_s + 100.0, quiet_s=100.0) == [(b"p", Liveness.GONE)]


def test_a_drop_just_after_our_own_stall_gets_twice_as_long_to_answer() -> None:
    # Frozen past the peers' timeouts, we wake to their connections closing on us: that is
    # most likely them giving us up, and their answer may wait on a redial, so the peer gets
    # twice the drop's limit from the stall on.
    table = LivenessTable(T)
    table.heard(b"p", 0.0)
    table.grace(10.0)
    assert table.suspect(b"p", 10.05) is True  # still asked at once
    assert table.tick(10.05 + T.peer_suspect_s) == []
    assert table.tick(10.0 + 2 * T.peer_suspect_s - 0.01) == []
    assert table.tick(10.0 + 2 * T.peer_suspect_s) == [(b"p", Liveness.GONE)]
    # Long after the stall, a drop is the peer's again: the short limit.
    later = 20.0
    table.heard(b"q", later)
    table.suspect(b"q", later)
    assert table.tick(later + T.peer_suspect_s) == [(b"q", Liveness.GONE)]
