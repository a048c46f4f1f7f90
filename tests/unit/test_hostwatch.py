"""The host watch, driven directly: no sockets, no clock, no sleeps."""

from __future__ import annotations

import itertools
import os
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat import room as rules
from meshchat.config import Limits, Timings
from meshchat.errors import ProtocolError
from meshchat.hostwatch import (
    Claim,
    ConnectionDropped,
    HostGone,
    HostWatch,
    PongFrom,
    SendPing,
    Stalled,
    StateChanged,
    Tick,
    Verdict,
    Watch,
)
from meshchat.identity import Identity
from meshchat.protocol.codec import Codec
from meshchat.protocol.messages import RoomState, StepDown

T = Timings()  # host_timeout_s 0.9, host_ping_timeout_s 0.35, claim_contest_s 1.25
L = Limits()
CODEC = Codec()
A, B, C, D, X = (Identity.generate() for _ in range(5))  # alice hosts; x is a stranger
EVERYONE = {A.peer_id, B.peer_id, C.peer_id, D.peer_id}


def _room(*members: Identity) -> rules.RoomCore:
    core, _, _ = rules.RoomCore.create(A, CODEC, "lobby", "alice", 1.0, os.urandom)
    for i, m in enumerate(members):
        core.add_member(m.peer_id, f"m{i}", 2.0 + i)
    return core


def _watch(me: Identity, state: RoomState, now: float = 0.0) -> HostWatch:
    counter = itertools.count(100)
    return HostWatch(me.peer_id, state, now, T, L, lambda: next(counter))


def _tick(now: float, state: RoomState, heard_at: float | None,
          alive: set[bytes] | None = None) -> Tick:
    live = EVERYONE if alive is None else alive
    return Tick(now, state, heard_at, live.__contains__)


def _silent_host(w: HostWatch, state: RoomState, heard_at: float = 0.0) -> SendPing:
    """Drive the watch to PINGING: the host was last heard at ``heard_at``."""
    effects = w.handle(_tick(heard_at + T.host_timeout_s, state, heard_at))
    assert w.watch is Watch.PINGING
    (ping,) = effects
    assert isinstance(ping, SendPing)
    return ping


def test_a_heard_host_is_followed_and_nothing_is_sent() -> None:
    state = _room(B, C).state
    w = _watch(B, state)
    for i in range(20):
        assert w.handle(_tick(i * 0.25, state, i * 0.25)) == []
    assert w.watch is Watch.FOLLOWING


def test_silence_pings_the_host_then_the_first_member_claims() -> None:
    state = _room(B, C).state
    w = _watch(B, state)
    ping = _silent_host(w, state)
    assert ping == SendPing(A.peer_id, 100)
    now = T.host_timeout_s
    assert w.handle(_tick(now + 0.1, state, 0.0)) == []  # the ping still has time
    assert w.handle(_tick(now + T.host_ping_timeout_s, state, 0.0)) == [Claim(A.peer_id)]
    assert w.watch is Watch.SUSPECT


def test_only_the_first_live_member_claims() -> None:
    state = _room(B, C).state
    carol = _watch(C, state)
    _silent_host(carol, state)
    late = T.host_timeout_s + T.host_ping_timeout_s
    assert carol.handle(_tick(late, state, 0.0)) == []  # bob is alive and first in line
    assert carol.watch is Watch.SUSPECT
    # bob goes quiet too: carol is first now, and claims on her next tick
    assert carol.handle(_tick(late + 0.25, state, 0.0, {C.peer_id})) == [Claim(A.peer_id)]


def test_a_pong_from_the_host_clears_suspicion() -> None:
    state = _room(B, C).state
    w = _watch(B, state)
    ping = _silent_host(w, state)
    assert w.handle(PongFrom(1.0, A.peer_id, ping.nonce)) == []
    assert w.watch is Watch.FOLLOWING and w.ping_nonce is None


def test_a_late_pong_from_the_host_clears_suspicion_too() -> None:
    state = _room(C, B).state  # carol ranks first; bob only suspects
    w = _watch(B, state)
    ping = _silent_host(w, state)
    w.handle(_tick(5.0, state, 0.0))
    assert w.watch is Watch.SUSPECT
    w.handle(PongFrom(5.1, A.peer_id, ping.nonce))
    assert w.watch is Watch.FOLLOWING


def test_a_pong_with_our_nonce_from_anyone_else_proves_nothing() -> None:
    state = _room(B, C).state
    w = _watch(B, state)
    ping = _silent_host(w, state)
    assert w.handle(PongFrom(1.0, C.peer_id, ping.nonce)) == []
    assert w.handle(PongFrom(1.0, X.peer_id, ping.nonce)) == []
    assert w.handle(PongFrom(1.0, A.peer_id, ping.nonce + 1)) == []  # not our ping
    assert w.watch is Watch.PINGING
    assert w.handle(_tick(2.0, state, 0.0)) == [Claim(A.peer_id)]


def test_our_own_stall_gives_grace() -> None:
    state = _room(B, C).state
    w = _watch(B, state)
    _silent_host(w, state)
    # we were frozen for 5 s: the host's silence meanwhile is ours, so no claim
    assert w.handle(Stalled(5.0)) == []
    assert w.watch is Watch.FOLLOWING and w.ping_nonce is None
    assert w.handle(_tick(5.0, state, 0.0)) == []
    assert w.handle(_tick(5.0 + T.host_timeout_s - 0.01, state, 0.0)) == []
    assert not w.host_silent(5.0 + T.host_timeout_s / 2 - 0.01, 0.0)
    # ... but a host that stays silent after the grace is pinged as usual
    assert isinstance(w.handle(_tick(5.0 + T.host_timeout_s, state, 0.0))[0], SendPing)


def test_a_drop_that_our_own_stall_caused_gives_no_claim_before_the_grace_ends() -> None:
    # Frozen past the peers' timeouts, we wake to their connections closing on us: those
    # drops come from our stall (the host gave us up), and may reach the watch after the
    # stall did. Bob is first in line; the host was last heard before the freeze.
    state = _room(B, C).state
    w = _watch(B, state)
    assert w.handle(Stalled(5.0)) == []
    assert w.handle(ConnectionDropped(5.01)) == []  # no ping: it tells nothing of the host
    assert w.dropped_at is None and w.watch is Watch.FOLLOWING
    for now in (5.05, 5.0 + T.host_ping_timeout_s + 0.05, 5.0 + T.host_timeout_s - 0.01):
        assert w.handle(_tick(now, state, 0.0)) == [], now
    assert not w.host_silent(5.0 + T.host_timeout_s / 2 - 0.01, 0.0)
    # A host that stays silent after the grace is pinged, and claimed from, as usual.
    (ping,) = w.handle(_tick(5.0 + T.host_timeout_s, state, 0.0))
    assert isinstance(ping, SendPing)
    late = 5.0 + T.host_timeout_s + T.host_ping_timeout_s + 0.01
    assert w.handle(_tick(late, state, 0.0)) == [Claim(A.peer_id)]
    # Past the grace, a drop is the host's again: it pings at once.
    w2 = _watch(B, state)
    w2.handle(Stalled(5.0))
    (ping,) = w2.handle(ConnectionDropped(5.0 + T.host_timeout_s))
    assert ping.peer == A.peer_id and w2.watch is Watch.PINGING


def test_a_dropped_connection_pings_at_once() -> None:
    state = _room(B, C).state
    w = _watch(B, state)
    (ping,) = w.handle(ConnectionDropped(0.5))
    assert ping.peer == A.peer_id and w.watch is Watch.PINGING
    assert w.host_silent(0.5, 0.4)  # not heard since the drop
    w.handle(PongFrom(0.55, A.peer_id, ping.nonce))
    assert w.watch is Watch.FOLLOWING
    w.handle(_tick(0.6, state, 0.55))
    assert w.dropped_at is None and not w.host_silent(0.6, 0.55)


def test_host_gone_claims_at_once_if_first() -> None:
    state = _room(B, C).state
    assert _watch(B, state).handle(HostGone(0.1, state, EVERYONE.__contains__)) == [
        Claim(A.peer_id)]
    assert _watch(C, state).handle(HostGone(0.1, state, EVERYONE.__contains__)) == []


def test_a_host_watches_nothing_and_is_never_silent_to_itself() -> None:
    state = _room(B, C).state
    w = _watch(A, state)
    assert w.watch is Watch.HOSTING
    for event in (_tick(10.0, state, None), HostGone(10.0, state, EVERYONE.__contains__),
                  ConnectionDropped(10.0), PongFrom(10.0, A.peer_id, 100)):
        assert w.handle(event) == []
    assert w.watch is Watch.HOSTING and not w.host_silent(10.0, None)


def test_a_new_host_gets_a_full_timeout_and_old_suspicion_goes() -> None:
    core = _room(B, C)
    old = core.state
    w = _watch(C, old)
    _silent_host(w, old)
    bob = rules.RoomCore(B, CODEC, core.current)
    bob.claim(A.peer_id, 7)
    w.handle(StateChanged(3.0, old, bob.state))
    assert w.watch is Watch.FOLLOWING and w.host == B.peer_id and w.ping_nonce is None
    assert w.handle(_tick(3.0 + T.host_timeout_s - 0.01, bob.state, None)) == []
    assert w.former_hosts.__contains__(A.peer_id) and A.peer_id in w.lost
    # becoming host ourselves
    w.handle(StateChanged(4.0, bob.state, replace(bob.state, host=C.peer_id)))
    assert w.watch is Watch.HOSTING


def test_a_tick_with_a_state_set_behind_our_back_rebases() -> None:
    core = _room(B, C)
    w = _watch(C, core.state)
    other = replace(core.state, host=B.peer_id)
    assert w.handle(_tick(50.0, other, None)) == []
    assert w.host == B.peer_id and w.host_since == 50.0


# ---------------------------------------------------------------- judging offered states


def _claim(core: rules.RoomCore, by: Identity) -> rules.RoomCore:
    c = rules.RoomCore(by, CODEC, core.current)
    c.claim(core.state.host, 9)
    return c


def test_judge_takes_a_claim_once_the_host_is_silent() -> None:
    core = _room(B, C)
    w = _watch(C, core.state)
    bob = _claim(core, B).state
    heard = 10.0
    assert w.judge(core.state, bob, B.peer_id, False, heard + 0.1, heard, set()).verdict \
        is Verdict.REFUSE
    assert w.judge(core.state, bob, B.peer_id, False, heard + T.host_timeout_s, heard,
                   set()).verdict is Verdict.TAKE


def test_same_term_rival_needs_an_open_contest_or_a_silent_claimer() -> None:
    core = _room(B, C, D)
    carol_claim = _claim(core, C).state
    bob_claim = _claim(core, B).state  # bob ranks before carol: the rightful winner
    dave = _watch(D, core.state)
    dave.handle(StateChanged(10.0, core.state, carol_claim))
    # within the contest window: bob's simultaneous claim wins, though carol is heard
    j = dave.judge(carol_claim, bob_claim, B.peer_id, False, 10.2, 10.2, set())
    assert j.verdict is Verdict.TAKE
    # later, while carol is heard: a member's "same-term claim" is a takeover attempt
    late = 10.0 + T.claim_contest_s + 0.1
    j = dave.judge(carol_claim, bob_claim, B.peer_id, False, late, late, set())
    assert j == type(j)(Verdict.REFUSE, "rejected_claims")
    # ... unless carol, the current claimer, has gone silent as well
    j = dave.judge(carol_claim, bob_claim, B.peer_id, False, late + 5, late, set())
    assert j.verdict is Verdict.TAKE


def test_the_fresh_claimer_itself_yields_to_an_earlier_rival_in_the_window() -> None:
    core = _room(B, C)
    carol_core = _claim(core, C)
    bob_claim = _claim(core, B).state
    carol = _watch(C, core.state)
    carol.handle(StateChanged(10.0, core.state, carol_core.state))
    assert carol.watch is Watch.HOSTING
    assert carol.judge(carol_core.state, bob_claim, B.peer_id, False, 10.3, None,
                       set()).verdict is Verdict.TAKE
    late = 10.0 + T.claim_contest_s + 0.1
    assert carol.judge(carol_core.state, bob_claim, B.peer_id, False, late, None,
                       set()).verdict is Verdict.REFUSE


def test_a_host_steps_down_only_for_a_rival_of_its_lineage() -> None:
    core = _room(B, C)
    alice = _watch(A, core.state)
    carol_side = _claim(core, C).state  # carol, elected on the other side of a split
    assert alice.judge(core.state, carol_side, C.peer_id, True, 1.0, None, set()).verdict \
        is Verdict.STEP_DOWN
    # a stranger signing itself host of our room, at any term, changes nothing
    for term in (2, 2**63):
        forged = replace(carol_side, host=X.peer_id, term=term)
        j = alice.judge(core.state, forged, X.peer_id, True, 1.0, None, set())
        assert j.verdict is Verdict.REFUSE and j.reason == "not_lineage"
    # a kicked or banned member is no lineage either
    assert alice.judge(core.state, carol_side, C.peer_id, True, 1.0, None,
                       {C.peer_id}).reason == "not_lineage"
    # lineage, but a term far beyond ours
    far = replace(carol_side, term=core.state.term + L.max_term_step + 1)
    assert alice.judge(core.state, far, C.peer_id, True, 1.0, None, set()).reason == \
        "term_step"
    # a rival we outrank: it is the one to step down
    low = replace(carol_side, term=core.state.term - 1 if core.state.term > 1 else 0)
    assert alice.judge(core.state, low, C.peer_id, True, 1.0, None, set()).reason == \
        "outranked"
    # and never on a state sealed to the room: only on the answer to our own request
    assert alice.judge(core.state, carol_side, C.peer_id, False, 1.0, None, set()).verdict \
        is Verdict.REFUSE


def test_members_lost_as_vanished_stay_in_the_lineage() -> None:
    core = _room(B, C)
    before = rules.RoomCore(A, CODEC, core.current)  # the state carol last held
    core.remove_member(C.peer_id, rules.VANISHED)
    alice = _watch(A, before.state)
    alice.handle(StateChanged(1.0, before.state, core.state))
    carol_side = _claim(before, C).state  # elected on her side meanwhile
    assert alice.may_host(C.peer_id, core.state, set())
    assert alice.judge(core.state, carol_side, C.peer_id, True, 2.0, None, set()).verdict \
        is Verdict.STEP_DOWN
    # one who left on purpose is not
    core.add_member(D.peer_id, "dave", 3.0)
    s1 = core.state
    core.remove_member(D.peer_id, rules.LEFT)
    alice.handle(StateChanged(3.0, s1, core.state))
    assert not alice.may_host(D.peer_id, core.state, set())


def test_members_left_behind_by_a_merge_stay_in_the_lineage() -> None:
    """A three-way split: alice hosted; bob (with carol) and dave each claimed the next term.
    Alice merged into dave's side first, then dave into bob's (bob outranks him): alice
    follows dave's signed step-down to bob, whom her own room held before the merge."""
    win, lose = sorted((B, D), key=lambda i: i.peer_id)  # the smaller id ranks higher
    core = _room(B, C, D)
    winner = _claim(core, win)
    winner.remove_member(lose.peer_id, rules.VANISHED)
    loser = _claim(core, lose)
    for gone in (win, C):
        loser.remove_member(gone.peer_id, rules.VANISHED)
    loser.add_member(A.peer_id, "alice", 5.0)  # alice's merge into the loser's side
    alice = _watch(A, core.state)
    alice.handle(StateChanged(1.0, core.state, loser.state))
    assert alice.host == lose.peer_id
    winner.add_member(lose.peer_id, "m", 6.0)  # the loser's own merge, one step later
    record = _step_down(lose, loser.state, winner.state)
    assert alice.judge(loser.state, winner.state, lose.peer_id, True, 10.0, 10.0, set(),
                       record).verdict is Verdict.FOLLOW
    # a stranger signed over to is still no lineage of hers
    stranger = replace(winner.state, host=X.peer_id)
    assert alice.judge(loser.state, stranger, lose.peer_id, True, 10.0, 10.0, set(),
                       _step_down(lose, loser.state, stranger)).reason == "not_lineage"


def _step_down(by: Identity, ours: RoomState, to: RoomState) -> StepDown:
    """``by``'s signed step-down from ``ours`` to ``to``, as a member opens it."""
    return rules.open_step_down(CODEC, rules.step_down(CODEC, by, ours, to))


def test_a_member_follows_its_host_only_to_a_host_of_its_lineage() -> None:
    core = _room(B, C)
    bob = _watch(B, core.state)
    carol_side = _claim(core, C).state
    signed = _step_down(A, core.state, carol_side)
    heard = 5.0
    assert bob.judge(core.state, carol_side, A.peer_id, True, heard, heard, set(),
                     signed).verdict is Verdict.FOLLOW
    forged = replace(carol_side, host=X.peer_id)
    assert bob.judge(core.state, forged, A.peer_id, True, heard, heard, set(),
                     _step_down(A, core.state, forged)).reason == "not_lineage"


def test_a_member_follows_only_a_step_down_its_own_host_signed() -> None:
    core = _room(B, C, D)
    bob = _watch(B, core.state)
    carol_side = _claim(core, C).state
    heard = 5.0

    def judge(peer: Identity, record: StepDown | None, new: RoomState = carol_side) -> str:
        j = bob.judge(core.state, new, peer.peer_id, True, heard, heard, set(), record)
        return j.verdict.value if j.verdict is not Verdict.REFUSE else j.reason

    # our host, alive and heard, signed the room over to carol: follow
    assert judge(A, _step_down(A, core.state, carol_side)) == "follow"
    # relayed by another peer, the record still speaks for our host
    assert judge(C, _step_down(A, core.state, carol_side)) == "follow"
    # a winner's state that our host did not sign over is never followed ...
    assert judge(A, None) == "step_down_unsigned"
    assert judge(C, None) == "rejected_claims"
    # ... nor one signed over by anyone else: the winner, a member, a stranger
    for signer in (C, D, X):
        assert judge(A, _step_down(signer, core.state, carol_side)) == "step_down_unsigned"
    # a record for another host, another room, or an older term of ours moves nobody
    dave_side = _claim(core, D).state
    assert judge(A, _step_down(A, core.state, dave_side)) == "step_down_unsigned"
    other_room = replace(core.state, room_id=b"o" * 16)
    assert judge(A, _step_down(A, other_room, replace(carol_side, room_id=b"o" * 16))) \
        == "step_down_unsigned"
    old_term = replace(core.state, term=core.state.term - 1)
    assert judge(A, _step_down(A, old_term, carol_side)) == "step_down_unsigned"
    # the winner's room moved on since (a later failover there): still followed
    later = replace(carol_side, host=D.peer_id, term=carol_side.term + 1)
    assert judge(A, _step_down(A, core.state, carol_side), later) == "follow"


def test_a_step_down_record_is_checked_against_its_signer() -> None:
    core = _room(B, C)
    carol_side = _claim(core, C).state
    blob = rules.step_down(CODEC, A, core.state, carol_side)
    record = rules.open_step_down(CODEC, blob)
    assert (record.old_host, record.new_host, record.term, record.new_term) == \
        (A.peer_id, C.peer_id, core.state.term, carol_side.term)
    # a record naming alice but signed by bob does not open
    forged = CODEC.sign_record(B, record)
    with pytest.raises(ProtocolError):
        rules.open_step_down(CODEC, forged)
    with pytest.raises(ProtocolError):
        rules.open_step_down(CODEC, blob[:-1])


def test_heartbeat_hints() -> None:
    core = _room(B, C)
    alice = _watch(A, core.state)
    s = core.state
    assert alice.judge_hint(s, C.peer_id, s.term + 1, set()).verdict is Verdict.ASK
    assert alice.judge_hint(s, X.peer_id, 2**63, set()).reason == "not_lineage"
    assert alice.judge_hint(s, C.peer_id, s.term + L.max_term_step + 1, set()).reason == \
        "term_step"
    assert alice.judge_hint(s, C.peer_id, s.term - 1 if s.term else 0, set()).reason == ""
    assert alice.judge_hint(s, C.peer_id, s.term + 1, {C.peer_id}).reason == "not_lineage"


def test_the_lineage_is_bounded() -> None:
    small = replace(L, max_former_hosts=4)
    core = _room(B)
    w = HostWatch(B.peer_id, core.state, 0.0, T, small, itertools.count().__next__)
    for i in range(50):
        other = replace(core.state, host=Identity.generate().peer_id, change=rules.VANISHED,
                        change_peer=Identity.generate().peer_id, term=i + 2)
        w.handle(StateChanged(float(i), core.state, other))
    assert len(w.former_hosts) <= 4 and len(w.lost) <= 4


# ---------------------------------------------------------------- any sequence of inputs

_EVENTS = st.lists(st.tuples(
    st.sampled_from(["tick", "pong_host", "pong_other", "drop", "gone", "stall"]),
    st.floats(0.0, 2.0),
    st.booleans(),  # heard in this step
    st.booleans(),  # the nonce is ours
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(_EVENTS, st.sampled_from([0, 1, 2]))
def test_any_inputs_keep_the_machine_sound(events: list[tuple[str, float, bool, bool]],
                                           who: int) -> None:
    core = _room(B, C)
    state = core.state
    me = (B, C, A)[who]
    w = _watch(me, state)
    now, heard = 0.0, 0.0
    for kind, dt, heard_now, ours in events:
        now += dt
        if heard_now:
            heard = now
        nonce = (w.ping_nonce or 0) if ours else -1
        event = {
            "tick": _tick(now, state, heard),
            "pong_host": PongFrom(now, A.peer_id, nonce),
            "pong_other": PongFrom(now, C.peer_id, nonce),
            "drop": ConnectionDropped(now),
            "gone": HostGone(now, state, EVERYONE.__contains__),
            "stall": Stalled(now),
        }[kind]
        before = w.watch
        effects = w.handle(event)
        for effect in effects:
            if isinstance(effect, SendPing):
                assert effect.peer == A.peer_id and w.watch is Watch.PINGING
            else:
                assert effect == Claim(A.peer_id) and me is B and w.watch is Watch.SUSPECT
        if me is A:
            assert w.watch is Watch.HOSTING and effects == []
        if kind == "pong_other":
            assert w.watch is before  # nobody but the host can clear suspicion
        if kind == "stall" and me is not A:
            assert w.watch is Watch.FOLLOWING
