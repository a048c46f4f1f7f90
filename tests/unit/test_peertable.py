"""meshchat.peertable: candidates, probes, twins and bans, decided without sockets or sleeps."""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.config import Limits
from meshchat.identity import Identity
from meshchat.peertable import DISCOVERY, DISCOVERY_TRIES, BanList, PeerTable, Probe, Unprobe
from meshchat.protocol.messages import PeerCard

from ..twins import twin_of

ME = Identity.generate().peer_id
LIMITS = Limits(max_candidates=20, max_candidates_per_introducer=8, max_probes=4,
                max_probes_per_introducer=2, introduced_cards_per_s=1.0,
                introduced_cards_burst=10, probe_timeout_s=2.0, max_peers=6)
ALICE, BOB = b"A" * 32, b"B" * 32  # introducers are only names to the table


def card(pid: bytes | None = None, address: str = "10.0.0.2") -> PeerCard:
    return PeerCard(pid or Identity.generate().peer_id, "x", (address,), 5000, 5001, 0)


def table(limits: Limits = LIMITS) -> PeerTable:
    return PeerTable(limits, ME, Counter())


def probed(effects: list[Probe | Unprobe]) -> list[bytes]:
    return [e.card.peer_id for e in effects if isinstance(e, Probe)]


def closed(effects: list[Probe | Unprobe]) -> list[bytes]:
    return [e.peer_id for e in effects if isinstance(e, Unprobe)]


def test_an_introduced_card_is_probed_then_admitted_on_its_own_answer() -> None:
    t, c = table(), card()
    assert probed(t.offer([c], ALICE, 0.0)) == [c.peer_id]
    assert t.is_candidate(c.peer_id) and t.candidate_card(c.peer_id) == c and len(t) == 0
    admission = t.admit(c.peer_id, 0.01)
    assert admission.refusal is None and admission.probed  # our Hello already went out
    assert not t.is_candidate(c.peer_id) and len(t) == 1 and t.probing == 0
    assert t.offer([c], BOB, 0.1) == []  # a peer already: nothing to do
    assert t.admit(c.peer_id, 0.2).refusal is None


def test_a_peer_that_speaks_first_is_admitted_without_a_probe() -> None:
    t, pid = table(), Identity.generate().peer_id
    admission = t.admit(pid, 0.0)
    assert admission.refusal is None and not admission.probed


def test_probes_are_bounded_in_total_and_per_introducer() -> None:
    t = table()
    a_cards, b_cards = [card() for _ in range(5)], [card() for _ in range(5)]
    assert len(probed(t.offer(a_cards, ALICE, 0.0))) == 2
    assert len(probed(t.offer(b_cards, BOB, 0.0))) == 2
    assert t.probing == 4 and t.candidates() == 10
    assert probed(t.offer([card()], DISCOVERY, 0.0)) == []  # every probe slot is taken


def test_an_unanswered_probe_expires_and_frees_its_slot() -> None:
    t = table()
    cards = [card() for _ in range(3)]
    first = probed(t.offer(cards, ALICE, 0.0))
    assert t.tick(1.9) == []
    effects = t.tick(2.0)
    assert sorted(closed(effects)) == sorted(first)
    assert probed(effects) == [cards[2].peer_id]
    assert t.stats["candidates_expired"] == 2 and t.candidates() == 1


def test_our_discovery_may_offer_a_whole_lan_and_all_of_it_is_probed() -> None:
    """At a start mDNS finds every node at once and reports each only once: a card it
    offers is kept past the per-introducer cap (the 64-node bench saw nodes know only the
    first 32 they found, for good), and probed ``max_probes`` at a time."""
    t = table()
    lan = [card() for _ in range(LIMITS.max_candidates)]
    first = probed(t.offer(lan, DISCOVERY, 0.0))
    assert t.candidates() == LIMITS.max_candidates and len(first) == LIMITS.max_probes
    admitted: list[bytes] = []
    waiting = first
    while waiting:
        effects: list[Probe | Unprobe] = []
        for pid in waiting:
            if len(t) < LIMITS.max_peers:
                admitted.append(pid)
                effects += t.admit(pid, 0.1).effects
            else:
                effects += t.failed(pid, 0.1) or []
        waiting = probed(effects)
    assert len(admitted) == LIMITS.max_peers  # every probe answered, up to max_peers
    assert t.stats["dropped_too_many_candidates"] == 0


def test_a_discovered_card_whose_probe_expires_is_probed_again_later() -> None:
    t = table()
    slow = card()
    assert probed(t.offer([slow], DISCOVERY, 0.0)) == [slow.peer_id]
    effects = t.tick(2.0)  # no answer in probe_timeout_s: closed, kept
    assert closed(effects) == [slow.peer_id] and probed(effects) == []
    assert t.is_candidate(slow.peer_id) and t.probing == 0
    assert probed(t.tick(5.9)) == []  # not before 2 × probe_timeout_s after the expiry
    assert probed(t.tick(6.0)) == [slow.peer_id]
    assert t.admit(slow.peer_id, 6.1).refusal is None and len(t) == 1
    # one that never answers is dropped after DISCOVERY_TRIES probes
    dead = card()
    t.offer([dead], DISCOVERY, 10.0)
    now, probes = 10.0, 1
    while t.is_candidate(dead.peer_id):
        now += 1.0
        probes += len(probed(t.tick(now)))
    assert probes == DISCOVERY_TRIES and t.probing == 0
    # an introduced card is forgotten at once: its introducer, or another, offers it again
    other = card()
    t.offer([other], ALICE, now)
    t.tick(now + 2.0)
    assert not t.is_candidate(other.peer_id)


def test_a_failed_handshake_drops_the_candidate_and_probes_the_next() -> None:
    t = table()
    cards = [card() for _ in range(3)]
    t.offer(cards, ALICE, 0.0)
    effects = t.failed(cards[0].peer_id, 0.1)
    assert effects is not None
    assert closed(effects) == [cards[0].peer_id] and probed(effects) == [cards[2].peer_id]
    assert t.failed(Identity.generate().peer_id, 0.1) is None  # not a candidate


def test_an_introducer_hands_over_a_bounded_number_of_cards() -> None:
    t = table(Limits(introduced_cards_burst=10, introduced_cards_per_s=1.0, max_candidates=500,
                     max_candidates_per_introducer=500))
    junk = [card(os.urandom(32)) for _ in range(1000)]
    t.offer(junk, ALICE, 0.0)
    taken = 1000 - t.stats["dropped_introduction_rate"]
    assert taken == 10
    t.offer([card(os.urandom(32)) for _ in range(1000)], ALICE, 5.0)
    assert 1000 + 1000 - t.stats["dropped_introduction_rate"] == 15  # refilled 1/s
    assert t.candidates() <= 15


def test_candidates_are_bounded_per_introducer_and_in_total() -> None:
    t = table(Limits(max_candidates=12, max_candidates_per_introducer=8,
                     introduced_cards_burst=100))
    t.offer([card() for _ in range(20)], ALICE, 0.0)
    assert t.candidates() == 8
    t.offer([card() for _ in range(20)], BOB, 0.0)
    assert t.candidates() == 12 and t.stats["dropped_too_many_candidates"] == 20 - 8 + 20 - 4


SHARES = Limits(max_candidates=20, max_candidates_per_introducer=8, max_probes=4,
                max_probes_per_introducer=2, introduced_cards_burst=100,
                max_discovered_candidates=15, max_introduced_candidates=15,
                max_discovered_probes=3, max_introduced_probes=3)


def test_a_flood_of_fake_mdns_cards_leaves_room_for_introduced_ones() -> None:
    """Anyone on the LAN can send mDNS records: a thousand fake cards fill discovery's share
    and its probes, and the cards an admitted peer introduces still get in and are probed."""
    t = table(SHARES)
    fakes = probed(t.offer([card(os.urandom(32)) for _ in range(1000)], DISCOVERY, 0.0))
    assert t.candidates(discovered=True) == 15 and len(fakes) == 3
    real = card()
    assert probed(t.offer([real], ALICE, 0.1)) == [real.peer_id]
    assert t.admit(real.peer_id, 0.2).refusal is None
    assert t.probing_from(discovered=True) == 3 and t.probing_from(discovered=False) == 0


def test_introductions_from_many_peers_leave_room_for_discovered_cards() -> None:
    t = table(SHARES)
    for who in (ALICE, BOB, b"C" * 32):
        t.offer([card() for _ in range(8)], who, 0.0)
    assert t.candidates(discovered=False) == 15 and t.probing_from(discovered=False) == 3
    lan = card()
    assert probed(t.offer([lan], DISCOVERY, 0.1)) == [lan.peer_id]
    assert t.candidates() == 16


def test_peers_are_bounded_by_max_peers() -> None:
    t = table()
    for _ in range(LIMITS.max_peers):
        assert t.admit(Identity.generate().peer_id, 0.0).refusal is None
    assert t.admit(Identity.generate().peer_id, 0.0).refusal == "too_many_peers"


def test_a_twin_never_replaces_a_peer_nor_a_candidate() -> None:
    t = table()
    peer, waiting = Identity.generate().peer_id, card()
    t.admit(peer, 0.0)
    t.offer([waiting], ALICE, 0.0)
    assert t.admit(twin_of(peer), 0.1).refusal == "twin"
    assert t.offer([card(twin_of(peer)), card(twin_of(waiting.peer_id))], BOB, 0.1) == []
    assert t.stats["dropped_twin"] == 2
    # Even after the peer left: its key keeps its first id for this run.
    t.remove(peer, 0.2)
    assert t.admit(twin_of(peer), 0.3).refusal == "twin"
    assert t.admit(peer, 0.3).refusal is None


def test_a_proven_id_wins_over_its_twin_waiting_as_a_candidate() -> None:
    t = table()
    real = Identity.generate().peer_id
    t.offer([card(twin_of(real))], ALICE, 0.0)
    admission = t.admit(real, 0.1)
    assert admission.refusal is None and list(admission.effects) == [Unprobe(twin_of(real))]
    assert not t.is_candidate(twin_of(real))


def test_bad_cards_cost_nothing_but_a_count() -> None:
    t = table()
    assert t.offer([card(ME), PeerCard(Identity.generate().peer_id, "x", (), 1, 2, 0),
                    card(b"\xff" * 32)], ALICE, 0.0) == []
    assert t.stats["dropped_card_no_address"] == 1 and t.stats["dropped_invalid_peer"] == 1
    assert t.admit(b"\xff" * 32, 0.0).refusal == "invalid_peer"


def test_withdrawn_candidate_is_closed() -> None:
    t, c = table(), card()
    t.offer([c], DISCOVERY, 0.0)
    assert closed(t.remove(c.peer_id, 0.1)) == [c.peer_id]
    assert not t.is_candidate(c.peer_id)


def test_banned_keys_are_neither_candidates_nor_peers() -> None:
    t, c = table(), card()
    deny, allow = t.sync_bans([twin_of(c.peer_id)])
    assert deny == [twin_of(c.peer_id)] and allow == []
    assert t.offer([c], ALICE, 0.0) == [] and t.stats["dropped_banned"] == 1
    assert t.admit(c.peer_id, 0.0).refusal == "banned"
    assert t.sync_bans([]) == ([], [twin_of(c.peer_id)])
    assert t.admit(c.peer_id, 0.0).refusal is None


def test_ban_list_denies_the_union_of_the_rooms_bans() -> None:
    bans = BanList(ME)
    x, y = Identity.generate().peer_id, Identity.generate().peer_id
    assert bans.update([x, y, x, ME, b"junk"]) == ([x, y], [])
    assert bans.update([x, y]) == ([], [])  # nothing new: no transport call
    assert bans.update([twin_of(x)]) == ([], [y])  # the same key under its twin id
    assert bans.is_denied(x) and bans.is_denied(twin_of(x)) and not bans.is_denied(y)
    assert bans.update([]) == ([], [x])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["offer", "admit", "fail", "tick", "remove"]),
                          st.integers(0, 40), st.integers(0, 2)), max_size=80))
def test_bounds_hold_whatever_happens(steps: list[tuple[str, int, int]]) -> None:
    limits = Limits(max_candidates=10, max_candidates_per_introducer=6, max_probes=3,
                    max_probes_per_introducer=2, introduced_cards_burst=8, max_peers=5,
                    max_discovered_candidates=7, max_introduced_candidates=8,
                    max_discovered_probes=2, max_introduced_probes=2)
    t = table(limits)
    pool = [Identity(bytes([n]) * 32).peer_id for n in range(41)]
    introducers = [ALICE, BOB, DISCOVERY]
    open_probes: set[bytes] = set()
    now = 0.0
    for op, n, who in steps:
        now += 0.3
        pid = pool[n]
        if op == "offer":
            effects = t.offer([card(pid), card(twin_of(pid))], introducers[who], now)
        elif op == "admit":
            effects = list(t.admit(pid, now).effects)
            open_probes.discard(pid)  # a probe becomes the peer's link
        elif op == "fail":
            effects = t.failed(pid, now) or []
        elif op == "tick":
            effects = t.tick(now)
        else:
            effects = t.remove(pid, now)
        for e in effects:
            if isinstance(e, Probe):
                assert e.card.peer_id not in open_probes
                open_probes.add(e.card.peer_id)
            else:
                open_probes.discard(e.peer_id)
        assert len(open_probes) == t.probing <= limits.max_probes
        assert t.candidates() <= limits.max_candidates and len(t) <= limits.max_peers
        assert t.candidates(discovered=True) <= limits.max_discovered_candidates
        assert t.candidates(discovered=False) <= limits.max_introduced_candidates
        assert t.probing_from(discovered=True) <= limits.max_discovered_probes
        assert t.probing_from(discovered=False) <= limits.max_introduced_probes


def test_a_room_ban_covers_the_twin_id_but_membership_does_not() -> None:
    from dataclasses import replace

    from meshchat import room as rules
    from meshchat.protocol.messages import Ban

    from .test_room import _ids, _room

    host, member, banned = _ids(3)
    state = _room(host, member).state
    state = replace(state, bans=(Ban(banned.peer_id, "eve", "spam"), Ban(b"junk", "", "")))
    assert rules.is_banned(state, banned.peer_id)
    assert rules.is_banned(state, twin_of(banned.peer_id))
    assert not rules.is_banned(state, member.peer_id)
    assert rules.is_member(state, member.peer_id)
    assert not rules.is_member(state, twin_of(member.peer_id))  # a twin is nobody's member
