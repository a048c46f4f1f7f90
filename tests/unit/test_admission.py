"""The admission core: the host's join decision, the joiner's bounds, /join NAME. Pure."""

from __future__ import annotations

import base64
import os
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import pwhash

from meshchat import room as rules
from meshchat.admission import (
    Admission,
    Admit,
    Ambiguous,
    Challenge,
    Lineage,
    Offer,
    Refuse,
    challenge_refusal,
    choose,
    moved_detail,
    moved_target,
)
from meshchat.config import Limits
from meshchat.identity import Identity, fingerprint_of, short_fingerprint
from meshchat.protocol.codec import Codec
from meshchat.protocol.messages import JoinChallenge, JoinRequest, Member, RoomState

LIMITS = Limits()
CODEC = Codec(LIMITS)
FAST = {"opslimit": pwhash.argon2id.OPSLIMIT_MIN, "memlimit": pwhash.argon2id.MEMLIMIT_MIN}
HOST = Identity.generate()
BOB = Identity.generate()
EVE = Identity.generate()
ADDR = "10.0.0.5"


def lineage(core: rules.RoomCore, removed: set[bytes] | None = None,
            silent: set[bytes] | None = None) -> Lineage:
    return Lineage(set(rules.member_ids(core.state)), removed or set(), silent or set())


def room(password: str | None = None, locked: bool = False) -> rules.RoomCore:
    verifier = rules.make_verifier(password, os.urandom, **FAST) if password else None
    core, _, _ = rules.RoomCore.create(HOST, CODEC, "lobby", "host", 1.0, os.urandom, verifier)
    core.add_member(BOB.peer_id, "bob", 2.0)
    if locked:
        core.set_locked(True)
    return core


def admission(limits: Limits = LIMITS) -> Admission:
    return Admission(limits, CODEC, HOST.peer_id, os.urandom)


def ask(core: rules.RoomCore, name: str = "eve", challenge: bytes = b"", proof: bytes = b"",
        token: bytes = b"") -> JoinRequest:
    return JoinRequest(core.state.room_id, name, 7, challenge, proof, token)


def answer(core: rules.RoomCore, ch: Challenge, password: str, who: Identity = EVE) -> bytes:
    return rules.password_proof(password, ch.salt, ch.opslimit, ch.memlimit,
                                core.state.room_id, who.peer_id, ch.nonce)


def forged(core: rules.RoomCore, signer: Identity, *, host: bytes | None = None,
           change: str = rules.HANDOFF, room_id: bytes | None = None,
           members: tuple[bytes, ...] | None = None) -> bytes:
    """A state of our room that ``signer`` signed, listing whoever it likes."""
    s = core.state
    ids = members if members is not None else (s.host, BOB.peer_id, EVE.peer_id)
    state = replace(s, room_id=room_id or s.room_id, host=host or BOB.peer_id,
                    term=s.term + 5, version=s.version + 9, locked=False, password=None,
                    members=tuple(Member(p, "x", 3.0) for p in ids), change=change,
                    change_peer=signer.peer_id)
    return CODEC.sign_record(signer, state)


# ---------------------------------------------------------------- config


def test_the_argon2_caps_are_pwhash_moderate() -> None:
    assert LIMITS.max_pwhash_opslimit == pwhash.argon2id.OPSLIMIT_MODERATE
    assert LIMITS.max_pwhash_memlimit == pwhash.argon2id.MEMLIMIT_MODERATE == 256 * 2**20


# ---------------------------------------------------------------- the host's decision


def test_an_open_room_admits_with_the_name_trimmed() -> None:
    core = room()
    d = admission().decide(core.current, lineage(core), ask(core, "  eve " + "x" * 99),
                           EVE.peer_id, ADDR, 0.0)
    assert isinstance(d, Admit) and not d.full_history and d.merged_from is None
    assert d.name == ("eve " + "x" * 99)[: LIMITS.max_name_chars]


def test_no_room_and_not_hosting_are_refused() -> None:
    core = room()
    a = admission()
    assert a.decide(None, None, ask(core), EVE.peer_id, ADDR, 0.0) == \
        Refuse("not_found", "no such room here")
    other = Admission(LIMITS, CODEC, BOB.peer_id, os.urandom)
    d = other.decide(core.current, lineage(core), ask(core), EVE.peer_id, ADDR, 0.0)
    assert isinstance(d, Refuse) and d.reason == "moved"
    assert d.detail.startswith(HOST.peer_id.hex())


def test_bans_closed_and_lock() -> None:
    core = room(locked=True)
    a = admission()
    d = a.decide(core.current, lineage(core), ask(core), EVE.peer_id, ADDR, 0.0)
    assert isinstance(d, Refuse) and d.reason == "locked"
    # A current member, or one the host lost for a while, is back, not new.
    assert isinstance(a.decide(core.current, lineage(core), ask(core), BOB.peer_id, ADDR, 0.0),
                      Admit)
    d = a.decide(core.current, lineage(core, silent={EVE.peer_id}), ask(core), EVE.peer_id,
                 ADDR, 0.0)
    assert isinstance(d, Admit) and d.full_history
    core.ban_absent(EVE.peer_id, "eve", "spam")
    d = a.decide(core.current, lineage(core), ask(core), EVE.peer_id, ADDR, 0.0)
    assert isinstance(d, Refuse) and d.reason == "banned"
    core.close()
    d = a.decide(core.current, lineage(core), ask(core), BOB.peer_id, ADDR, 0.0)
    assert isinstance(d, Refuse) and d.reason == "closed"


def test_password_challenge_then_proof() -> None:
    core = room("hunter2")
    a = admission()
    ch = a.decide(core.current, lineage(core), ask(core), EVE.peer_id, ADDR, 0.0)
    assert isinstance(ch, Challenge) and ch.salt == core.state.password.salt  # type: ignore[union-attr]
    proof = answer(core, ch, "hunter2")
    d = a.decide(core.current, lineage(core), ask(core, challenge=ch.nonce, proof=proof),
                 EVE.peer_id, ADDR, 1.0)
    assert isinstance(d, Admit)
    # The nonce is used once: the same proof again only earns a fresh challenge.
    again = a.decide(core.current, lineage(core), ask(core, challenge=ch.nonce, proof=proof),
                     EVE.peer_id, ADDR, 2.0)
    assert isinstance(again, Challenge) and again.nonce != ch.nonce


def test_a_wrong_password_and_a_proof_for_someone_else_are_refused() -> None:
    core = room("hunter2")
    a = admission()
    ch = a.decide(core.current, lineage(core), ask(core), EVE.peer_id, ADDR, 0.0)
    assert isinstance(ch, Challenge)
    d = a.decide(core.current, lineage(core),
                 ask(core, challenge=ch.nonce, proof=answer(core, ch, "guess")),
                 EVE.peer_id, ADDR, 1.0)
    assert d == Refuse("password", "wrong password")
    ch = a.decide(core.current, lineage(core), ask(core), EVE.peer_id, ADDR, 2.0)
    assert isinstance(ch, Challenge)
    stolen = answer(core, ch, "hunter2", who=BOB)  # bound to bob's id, not eve's
    d = a.decide(core.current, lineage(core), ask(core, challenge=ch.nonce, proof=stolen),
                 EVE.peer_id, ADDR, 3.0)
    assert isinstance(d, Refuse) and d.reason == "password"


def test_a_challenge_expires_and_dies_with_a_password_change() -> None:
    core = room("hunter2")
    a = admission()
    ch = a.decide(core.current, lineage(core), ask(core), EVE.peer_id, ADDR, 0.0)
    assert isinstance(ch, Challenge)
    late = LIMITS.join_challenge_ttl_s + 1
    d = a.decide(core.current, lineage(core),
                 ask(core, challenge=ch.nonce, proof=answer(core, ch, "hunter2")),
                 EVE.peer_id, ADDR, late)
    assert isinstance(d, Challenge) and a.pending_challenges == 1
    core.set_password(rules.make_verifier("new", os.urandom, **FAST), 9)
    d2 = a.decide(core.current, lineage(core),
                  ask(core, challenge=d.nonce, proof=answer(core, d, "hunter2")),
                  EVE.peer_id, ADDR, late + 1)
    assert isinstance(d2, Challenge) and d2.salt == core.state.password.salt  # type: ignore[union-attr]


def test_password_guesses_are_limited_per_peer_and_room() -> None:
    core = room("hunter2")
    a = admission(replace(LIMITS, join_attempts_per_minute=3))
    reasons = []
    for i in range(5):
        ch = a.decide(core.current, lineage(core), ask(core), EVE.peer_id, ADDR, float(i))
        assert isinstance(ch, Challenge)
        d = a.decide(core.current, lineage(core),
                     ask(core, challenge=ch.nonce, proof=answer(core, ch, f"guess{i}")),
                     EVE.peer_id, ADDR, i + 0.5)
        assert isinstance(d, Refuse)
        reasons.append(d.reason)
    assert reasons == ["password"] * 3 + ["rate"] * 2
    # A minute later the window is open again.
    ch = a.decide(core.current, lineage(core), ask(core), EVE.peer_id, ADDR, 70.0)
    assert isinstance(ch, Challenge)
    d = a.decide(core.current, lineage(core),
                 ask(core, challenge=ch.nonce, proof=answer(core, ch, "hunter2")),
                 EVE.peer_id, ADDR, 70.5)
    assert isinstance(d, Admit)


def test_joins_are_limited_per_address_whatever_the_key() -> None:
    core = room()
    limits = replace(LIMITS, joins_per_address_burst=5, joins_per_address_per_s=1.0)
    a = admission(limits)
    keys = [Identity.generate().peer_id for _ in range(8)]
    out = [a.decide(core.current, lineage(core), ask(core), k, ADDR, 0.0) for k in keys]
    assert [isinstance(d, Admit) for d in out] == [True] * 5 + [False] * 3
    assert all(d.reason == "rate" for d in out[5:] if isinstance(d, Refuse))
    # Another address is untouched; this one refills at its rate.
    assert isinstance(a.decide(core.current, lineage(core), ask(core), keys[0], "10.0.0.9", 0.0),
                      Admit)
    assert isinstance(a.decide(core.current, lineage(core), ask(core), keys[6], ADDR, 1.0),
                      Admit)
    assert isinstance(a.decide(core.current, lineage(core), ask(core), keys[7], ADDR, 1.0),
                      Refuse)


def test_the_tables_stay_bounded_and_drop_the_oldest() -> None:
    core = room("pw")
    limits = replace(LIMITS, max_join_challenges=4, max_admission_entries=6)
    a = admission(limits)
    first = a.decide(core.current, lineage(core), ask(core), EVE.peer_id, "a0", 0.0)
    assert isinstance(first, Challenge)
    for i in range(30):
        a.decide(core.current, lineage(core), ask(core), Identity.generate().peer_id, f"a{i+1}",
                 0.0)
    assert a.pending_challenges == 4 and a.tracked <= 6
    # Eve's challenge was the oldest: her proof now only earns a new challenge.
    d = a.decide(core.current, lineage(core),
                 ask(core, challenge=first.nonce, proof=answer(core, first, "pw")),
                 EVE.peer_id, "a0", 1.0)
    assert isinstance(d, Challenge)


# ---------------------------------------------------------------- merge tokens (case 2)


def test_a_forged_handoff_token_skips_neither_password_nor_lock() -> None:
    """Case 2: eve signs a "handoff" naming a real member as host; it vouches for nothing."""
    core = room("hunter2", locked=True)
    token = forged(core, EVE)
    assert rules.signer_of(CODEC.open_signed(token, RoomState, rules.signer_of)) == EVE.peer_id
    d = admission().decide(core.current, lineage(core), ask(core, token=token), EVE.peer_id,
                           ADDR, 0.0)
    assert d == Refuse("locked", "the room is locked", token_refused="stranger_signer")
    core.set_locked(False)
    d = admission().decide(core.current, lineage(core), ask(core, token=token), EVE.peer_id,
                           ADDR, 0.0)
    assert isinstance(d, Challenge) and d.token_refused == "stranger_signer"


def test_a_token_signed_by_a_kicked_member_vouches_for_nothing() -> None:
    core = room("hunter2", locked=True)
    core.remove_member(BOB.peer_id, rules.KICKED, "rude")
    line = lineage(core, removed={BOB.peer_id})
    line = Lineage({*line.ever_members, BOB.peer_id}, line.removed, line.dropped_silent)
    token = forged(core, BOB, host=BOB.peer_id, change=rules.JOINED)
    d = admission().decide(core.current, line, ask(core, token=token), EVE.peer_id, ADDR, 0.0)
    assert isinstance(d, Refuse) and d.token_refused == "removed_signer"
    # Bob himself, with a genuine state signed by a host of this room from before his kick:
    # a kick is final for merges too (he may still join the normal way, if the room lets him).
    carol = Identity.generate()
    line = Lineage({*line.ever_members, carol.peer_id}, line.removed, line.dropped_silent)
    genuine = forged(core, carol, host=carol.peer_id, change=rules.JOINED,
                     members=(carol.peer_id, BOB.peer_id))
    d = admission().decide(core.current, line, ask(core, token=genuine), BOB.peer_id, ADDR, 0.0)
    assert d == Refuse("locked", "the room is locked", token_refused="removed_joiner")
    # And our own old state listing him is a replay, not the other side of a partition.
    own = CODEC.sign_record(HOST, replace(core.state, members=(
        *core.state.members, Member(BOB.peer_id, "bob", 2.0))))
    d = admission().decide(core.current, line, ask(core, token=own), BOB.peer_id, ADDR, 0.0)
    assert isinstance(d, Refuse) and d.token_refused == "own_state"


def test_an_honest_merge_token_admits_with_full_history() -> None:
    """The other side's host (bob, a member here before the split) merges in: no password."""
    core = room("hunter2", locked=True)
    carol = Identity.generate()
    theirs = replace(core.state, host=BOB.peer_id, term=core.state.term + 1,
                     members=(Member(BOB.peer_id, "bob", 2.0), Member(carol.peer_id, "c", 5.0)),
                     bans=(), change=rules.FAILOVER, change_peer=HOST.peer_id)
    token = CODEC.sign_record(BOB, theirs)
    a = admission()
    d = a.decide(core.current, lineage(core), ask(core, token=token), BOB.peer_id, ADDR, 0.0)
    assert isinstance(d, Admit) and d.full_history and d.merged_from == theirs
    # Carol, whom bob admitted during the split, follows with bob's state.
    d = a.decide(core.current, lineage(core), ask(core, token=token), carol.peer_id, ADDR, 0.0)
    assert isinstance(d, Admit) and d.full_history and d.merged_from is None


@pytest.mark.parametrize("why", ["bad_token", "other_room", "own_state", "not_in_token",
                                 "removed_joiner"])
def test_merge_tokens_that_do_not_vouch(why: str) -> None:
    core = room(locked=True)
    peer = EVE.peer_id
    line = lineage(core)
    match why:
        case "bad_token":
            token = b"\x93garbage"
        case "other_room":
            token = forged(core, BOB, host=BOB.peer_id, change=rules.JOINED, room_id=b"o" * 16)
        case "own_state":
            token = CODEC.sign_record(HOST, replace(core.state, members=(
                *core.state.members, Member(peer, "eve", 1.0))))
        case "not_in_token":
            token = forged(core, BOB, host=BOB.peer_id, change=rules.JOINED,
                           members=(BOB.peer_id,))
        case _:
            token = forged(core, BOB, host=BOB.peer_id, change=rules.JOINED)
            core.ban_absent(peer, "eve", "")
    d = admission().decide(core.current, line, ask(core, token=token), peer, ADDR, 0.0)
    assert isinstance(d, Refuse) and d.token_refused == why


# ---------------------------------------------------------------- the joiner's side (case 9)


def test_the_joiner_bounds_the_argon2_cost() -> None:
    def ch(ops: int, mem: int, salt: bytes = b"s" * 16) -> JoinChallenge:
        return JoinChallenge(b"r" * 16, 1, salt, b"n" * 24, ops, mem)

    a = pwhash.argon2id
    assert challenge_refusal(ch(a.OPSLIMIT_INTERACTIVE, a.MEMLIMIT_INTERACTIVE), LIMITS) is None
    assert challenge_refusal(ch(a.OPSLIMIT_MODERATE, a.MEMLIMIT_MODERATE), LIMITS) is None
    huge = challenge_refusal(ch(2, 4 * 2**40), LIMITS)
    assert huge is not None and huge.reason == "cost" and "256 MiB" in huge.detail
    assert challenge_refusal(ch(2**32 - 1, a.MEMLIMIT_INTERACTIVE), LIMITS) is not None
    assert challenge_refusal(ch(0, a.MEMLIMIT_INTERACTIVE), LIMITS) == \
        Refuse("protocol", "the host sent password parameters Argon2id cannot use")
    assert challenge_refusal(ch(2, a.MEMLIMIT_INTERACTIVE, b"short"), LIMITS) is not None


def test_moved_is_followed_only_to_a_host_a_signed_state_names() -> None:
    core = room()
    core.handoff(BOB.peer_id)  # signed by the old host, who answers "moved" now
    detail = moved_detail(core.current, LIMITS)
    rid = core.state.room_id
    assert moved_target(detail, rid, HOST.peer_id, None, CODEC) == BOB.peer_id
    # A bare id, someone else's answer, a tampered state, another room: not followed.
    assert moved_target(BOB.peer_id.hex(), rid, HOST.peer_id, None, CODEC) is None
    assert moved_target(detail, rid, EVE.peer_id, None, CODEC) is None
    assert moved_target(detail, b"o" * 16, HOST.peer_id, None, CODEC) is None
    head, _, blob = detail.partition(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    bad = f"{head} {base64.b64encode(bytes(raw)).decode()}"
    assert moved_target(bad, rid, HOST.peer_id, None, CODEC) is None
    lie = f"{EVE.peer_id.hex()} {blob}"  # the state names bob, the text names eve
    assert moved_target(lie, rid, HOST.peer_id, None, CODEC) is None
    assert moved_target("zz" * 32, rid, HOST.peer_id, None, CODEC) is None
    # With a state of our own (a rejoin): only its host or members.
    held = room().state
    assert moved_target(BOB.peer_id.hex(), held.room_id, HOST.peer_id, held, CODEC) == \
        BOB.peer_id
    assert moved_target(EVE.peer_id.hex(), held.room_id, HOST.peer_id, held, CODEC) is None


def test_a_state_too_big_for_the_detail_is_left_out() -> None:
    core = room()
    for _ in range(80):
        core.add_member(Identity.generate().peer_id, "m" * 30, 3.0)
    assert moved_detail(core.current, LIMITS) == HOST.peer_id.hex()


def test_choose_a_listing() -> None:
    alice, mallory = Identity.generate().peer_id, Identity.generate().peer_id
    lobby = Offer("lobby", b"1" * 16, alice, 1, 3)
    fake = Offer("Lobby", b"2" * 16, mallory, 99, 50)
    assert choose("lobby", [lobby]) == 0
    assert choose("LOBBY ", [lobby]) == 0
    assert choose("nope", [lobby]) is None
    picked = choose("lobby", [lobby, fake])
    assert isinstance(picked, Ambiguous) and not picked.transient
    assert picked.candidates == tuple(sorted((f"lobby#{short_fingerprint(alice)}",
                                              f"Lobby#{short_fingerprint(mallory)}")))
    assert choose(f"lobby#{fingerprint_of(alice)[:4]}", [lobby, fake]) == 0
    assert choose(f"lobby#{fingerprint_of(mallory)[:6].upper()}", [lobby, fake]) == 1
    assert choose(f"lobby#{fingerprint_of(alice)[:3]}", [lobby, fake]) is None
    # The same room id at two hosts: a handoff in flight (or a copycat): still two choices.
    copy = Offer("lobby", b"1" * 16, mallory, 2, 3)
    picked = choose("lobby", [lobby, copy])
    assert isinstance(picked, Ambiguous) and picked.transient
    # One host listing it twice (mDNS and heartbeat, or two rooms): one choice.
    assert choose("lobby", [lobby, replace_offer(lobby, term=2)]) == 1


def replace_offer(o: Offer, **kw: int) -> Offer:
    return o._replace(**kw)


# ---------------------------------------------------------------- any input


@settings(max_examples=150, deadline=None)
@given(name=st.text(max_size=40), challenge=st.binary(max_size=40),
       proof=st.binary(max_size=80), token=st.binary(max_size=200),
       address=st.text(max_size=20), now=st.floats(0, 1e6))
def test_any_request_gets_a_decision(name: str, challenge: bytes, proof: bytes, token: bytes,
                                     address: str, now: float) -> None:
    core = room("pw", locked=False)
    a = admission(replace(LIMITS, max_join_challenges=3, max_admission_entries=3))
    for who in (EVE, BOB, Identity.generate()):
        req = JoinRequest(core.state.room_id, name, 1, challenge, proof, token)
        d = a.decide(core.current, lineage(core), req, who.peer_id, address, now)
        assert isinstance(d, Admit | Challenge | Refuse)
        if isinstance(d, Admit):
            assert who is BOB  # only the member; no bytes stand in for the password
    assert a.pending_challenges <= 3 and a.tracked <= 6


@given(st.lists(st.tuples(st.sampled_from(["lobby", "Lobby", "x"]), st.binary(min_size=1,
                                                                          max_size=2),
                          st.sampled_from([HOST.peer_id, BOB.peer_id, EVE.peer_id]),
                          st.integers(0, 5), st.integers(0, 5)), max_size=8),
       st.text(max_size=20))
def test_choose_never_picks_silently(rows: list[tuple[str, bytes, bytes, int, int]],
                                     query: str) -> None:
    offers = [Offer(*r) for r in rows]
    picked = choose(query, offers)
    if isinstance(picked, int):
        hosts = {o.host for o in offers if o.name.casefold() == offers[picked].name.casefold()}
        assert len(hosts) == 1 or "#" in query
