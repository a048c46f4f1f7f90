"""The pure room rules: signed states, who may change them, elections, merges, passwords."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import pwhash

from meshchat.config import Limits
from meshchat.errors import NotHost, ProtocolError
from meshchat.identity import Identity
from meshchat.protocol.codec import Codec
from meshchat.room import (
    FAILOVER,
    HANDOFF,
    RoomCore,
    accepts,
    check_proof,
    host_priority,
    make_verifier,
    outranks,
    password_proof,
    seal_key,
    signer_of,
    successor,
    unseal_key,
)

CODEC = Codec()
FAST_OPS = pwhash.argon2id.OPSLIMIT_MIN
FAST_MEM = pwhash.argon2id.MEMLIMIT_MIN


def _ids(n: int) -> list[Identity]:
    return [Identity.generate() for _ in range(n)]


def _room(host: Identity, *members: Identity) -> RoomCore:
    core, _, _ = RoomCore.create(host, CODEC, "lobby", "host", 1.0, os.urandom)
    for i, m in enumerate(members):
        core.add_member(m.peer_id, f"m{i}", 2.0 + i)
    return core


def _view(me: Identity, core: RoomCore) -> RoomCore:
    return RoomCore(me, CODEC, core.current)


_BOUND_IDS = [Identity(bytes([i + 1]) * 32) for i in range(2)]
_BOUND_ROOM = _room(*_BOUND_IDS)  # a room for property tests: host 0, member 1


def test_member_takes_newer_host_states_only() -> None:
    a, b, c = _ids(3)
    host = _room(a, b)
    member = _view(b, host)
    old_blob = host.blob
    host.add_member(c.peer_id, "carol", 3.0)
    assert member.offer(host.blob) is not None
    assert member.state.version == 3
    assert member.offer(old_blob) is None  # replay of an older state
    assert member.state.version == 3


def test_non_host_cannot_change_the_room() -> None:
    a, b, c = _ids(3)
    host = _room(a, b, c)
    bob = _view(b, host)
    for op in (lambda: bob.add_member(c.peer_id, "x", 1.0), lambda: bob.set_locked(True),
               lambda: bob.close(), lambda: bob.rename("mine"), lambda: bob.unban(c.peer_id),
               lambda: bob.handoff(c.peer_id)):
        with pytest.raises(NotHost):
            op()
    # A state bob signs himself, naming himself host without a term change, is refused.
    forged = replace(host.state, host=b.peer_id, version=99, locked=True)
    blob = CODEC.sign_record(b, forged)
    carol = _view(c, host)
    assert carol.offer(blob) is None
    # ... and one claiming to come from the host but signed by bob fails the signature.
    fake = replace(host.state, version=99, locked=True)
    with pytest.raises(ProtocolError):
        carol.offer(CODEC.sign_record(b, fake))


def test_outsider_claims_are_refused() -> None:
    a, b, x = _ids(3)
    host = _room(a, b)
    bob = _view(b, host)
    outsider = RoomCore(x, CODEC, host.current)
    with pytest.raises(NotHost):
        outsider.claim(a.peer_id, 7)
    claim = replace(host.state, host=x.peer_id, term=5, version=9, change=FAILOVER,
                    change_peer=a.peer_id)
    assert bob.offer(CODEC.sign_record(x, claim)) is None


def test_claim_needs_a_silent_host() -> None:
    a, b, c = _ids(3)
    host = _room(a, b, c)
    bob = _view(b, host)
    carol = _view(c, host)
    bob.claim(a.peer_id, 42)
    assert bob.state.host == b.peer_id and bob.state.term == 2
    assert [m.peer_id for m in bob.state.members] == [b.peer_id, c.peer_id]
    assert carol.offer(bob.blob, host_silent=False) is None  # carol still hears alice
    assert carol.offer(bob.blob, host_silent=True) is not None


def test_handoff_is_signed_by_the_old_host() -> None:
    a, b, c = _ids(3)
    host = _room(a, b, c)
    carol = _view(c, host)
    host.handoff(b.peer_id)
    assert host.state.change == HANDOFF and signer_of(host.state) == a.peer_id
    assert carol.offer(host.blob) is not None
    assert carol.state.host == b.peer_id and carol.state.term == 2
    # Only the current host can hand off: bob forging a handoff to carol is refused.
    bob_state = replace(carol.state, host=c.peer_id, term=3, version=10, change=HANDOFF,
                        change_peer=c.peer_id)
    assert not accepts(carol.state, bob_state)


def test_two_claims_of_one_term_earlier_member_wins() -> None:
    a, b, c, d = _ids(4)
    host = _room(a, b, c, d)
    bob, carol, dave = _view(b, host), _view(c, host), _view(d, host)
    carol_claim = _view(c, host)
    carol_claim.claim(a.peer_id, 1)
    bob.claim(a.peer_id, 2)
    assert dave.offer(carol_claim.blob) is not None
    assert dave.offer(bob.blob) is not None  # same term, bob ranks before carol
    assert dave.state.host == b.peer_id
    assert carol.offer(bob.blob) is not None


def test_successor_is_first_live_member() -> None:
    a, b, c, d = _ids(4)
    host = _room(a, b, c, d)
    alive = {c.peer_id, d.peer_id}
    assert successor(host.state, lambda p: p in alive) == c.peer_id
    assert successor(host.state, lambda p: False) is None


def test_partition_priority() -> None:
    a, b = _ids(2)
    r1 = _room(a, b)
    r2 = _view(b, r1)
    r2.claim(a.peer_id, 3)
    assert host_priority(r2.state) > host_priority(r1.state)


def test_password_proof_never_contains_the_password() -> None:
    a, b = _ids(2)
    verifier = make_verifier("correct horse", os.urandom, FAST_OPS, FAST_MEM)
    nonce = os.urandom(24)
    room_id = os.urandom(16)
    proof = password_proof("correct horse", verifier.salt, FAST_OPS, FAST_MEM, room_id,
                           b.peer_id, nonce)
    assert b"correct horse" not in proof
    assert check_proof(verifier, room_id, b.peer_id, nonce, proof)
    assert not check_proof(verifier, room_id, b.peer_id, os.urandom(24), proof)  # no replay
    assert not check_proof(verifier, room_id, a.peer_id, nonce, proof)  # bound to the joiner
    wrong = password_proof("wrong", verifier.salt, FAST_OPS, FAST_MEM, room_id, b.peer_id,
                           nonce)
    assert not check_proof(verifier, room_id, b.peer_id, nonce, wrong)


def test_room_key_sealed_to_one_member() -> None:
    a, b, c = _ids(3)
    key = os.urandom(32)
    sealed = seal_key(a, b.peer_id, key)
    assert unseal_key(b, a.peer_id, sealed) == key
    with pytest.raises(ProtocolError):
        unseal_key(c, a.peer_id, sealed)


def test_kept_boxes_seal_the_same_way_and_stay_bounded() -> None:
    from meshchat.room import KeyBoxes

    a, b, c, d = _ids(4)
    key = os.urandom(32)
    host, member = KeyBoxes(a, 2), KeyBoxes(b, 2)
    assert unseal_key(b, a.peer_id, host.seal(b.peer_id, key)) == key
    assert member.unseal(a.peer_id, seal_key(a, b.peer_id, key)) == key
    with pytest.raises(ProtocolError):
        KeyBoxes(c, 2).unseal(a.peer_id, host.seal(b.peer_id, key))
    # at most two peers kept, the least recently used going first; a bad key is skipped
    assert host.warm([c.peer_id, b"\x00" * 32, d.peer_id], at_most=8) == 1
    assert len(host) == 2 and c.peer_id in host and b.peer_id in host
    host.seal(d.peer_id, key)
    assert len(host) == 2 and b.peer_id not in host and d.peer_id in host


def test_kick_and_ban_rotate_the_key_and_record_the_ban() -> None:
    a, b, c = _ids(3)
    host = _room(a, b, c)
    epoch = host.state.key_epoch
    host.remove_member(c.peer_id, "banned", "spam", new_epoch=epoch + 2)
    assert host.state.key_epoch == epoch + 2
    assert [x.peer_id for x in host.state.bans] == [c.peer_id]
    assert c.peer_id not in [m.peer_id for m in host.state.members]
    host.unban(c.peer_id)
    assert host.state.bans == ()


# ---------------------------------------------------------------- issue 6, case 10: weak checks


def test_same_term_rival_claim_needs_silence_or_an_open_contest() -> None:
    a, b, c, d = _ids(4)
    host = _room(a, b, c, d)
    carol_claim = _view(c, host)
    carol_claim.claim(a.peer_id, 1)
    bob = _view(b, host)
    bob.claim(a.peer_id, 2)
    # dave took carol's claim and hears carol: bob's same-term claim is a takeover ...
    assert not accepts(carol_claim.state, bob.state, host_silent=False)
    # ... unless it crossed carol's on the way (the contest is still open) ...
    assert accepts(carol_claim.state, bob.state, host_silent=False, contest_open=True)
    # ... or carol went silent as well
    assert accepts(carol_claim.state, bob.state, host_silent=True)
    # a later member never wins the same term, whatever the silence
    assert not accepts(bob.state, carol_claim.state, host_silent=True, contest_open=True)


def test_two_honest_simultaneous_claims_converge_on_the_earlier_member() -> None:
    a, b, c, d = _ids(4)
    host = _room(a, b, c, d)
    bob, carol = _view(b, host), _view(c, host)
    bob.claim(a.peer_id, 1)
    carol.claim(a.peer_id, 2)
    bob_blob, carol_blob = bob.blob, carol.blob
    for order in ((bob_blob, carol_blob), (carol_blob, bob_blob)):
        dave = _view(d, host)
        for blob in order:
            # dave stopped hearing alice; the fresh claimer he took first, he hears
            dave.offer(blob, host_silent=dave.state.host == a.peer_id, contest_open=True)
        assert dave.state.host == b.peer_id
    assert carol.offer(bob_blob, host_silent=False, contest_open=True) is not None
    assert bob.offer(carol_blob, host_silent=True, contest_open=True) is None
    assert carol.state.host == bob.state.host == b.peer_id


@pytest.mark.parametrize("term", [2**64 - 1, 2**63, 18])
def test_a_claim_cannot_push_the_term_towards_the_codec_maximum(term: int) -> None:
    a, b, c = _ids(3)
    host = _room(a, b, c)
    carol = _view(c, host)
    huge = replace(host.state, host=b.peer_id, term=term, version=host.state.version + 1,
                   members=host.state.members[1:], change=FAILOVER, change_peer=a.peer_id)
    assert carol.offer(CODEC.sign_record(b, huge), host_silent=True) is None
    # the honest election still works afterwards: term + 1
    bob = _view(b, host)
    bob.claim(a.peer_id, 5)
    assert carol.offer(bob.blob, host_silent=True) is not None and carol.state.term == 2


def test_a_handoff_cannot_jump_the_term_or_the_version() -> None:
    a, b, c = _ids(3)
    host = _room(a, b, c)
    carol = _view(c, host)
    base = replace(host.state, host=b.peer_id, change=HANDOFF, change_peer=a.peer_id)
    limits = Limits()
    far_term = replace(base, term=base.term + limits.max_term_step + 1)
    far_version = replace(base, term=base.term + 1,
                          version=base.version + limits.max_version_step + 1)
    assert carol.offer(CODEC.sign_record(a, far_term)) is None
    assert carol.offer(CODEC.sign_record(a, far_version)) is None
    ok = replace(base, term=base.term + limits.max_term_step, version=base.version + 1)
    assert carol.offer(CODEC.sign_record(a, ok)) is not None


def test_the_host_itself_cannot_push_its_version_to_the_maximum() -> None:
    a, b = _ids(2)
    host = _room(a, b)
    bob = _view(b, host)
    near_max = replace(host.state, version=2**64 - 2)
    assert bob.offer(CODEC.sign_record(a, near_max)) is None
    host.set_locked(True)  # the host's own versions grow by one per change
    assert bob.offer(host.blob) is not None


@given(step=st.integers(min_value=0, max_value=2**64 - 2), same_host=st.booleans(),
       change=st.sampled_from([FAILOVER, HANDOFF, "joined"]))
@settings(max_examples=200, deadline=None)
def test_no_accepted_state_moves_the_term_beyond_the_bound(step: int, same_host: bool,
                                                           change: str) -> None:
    current = _BOUND_ROOM.state
    limits = Limits()
    new = replace(current, term=current.term + step, version=current.version + 1,
                  host=current.host if same_host else _BOUND_IDS[1].peer_id, change=change,
                  change_peer=_BOUND_IDS[0].peer_id)
    if accepts(current, new, host_silent=True, contest_open=True):
        assert new.term - current.term <= limits.max_term_step


def test_outranks_needs_strictly_higher_term_and_rank_within_the_step() -> None:
    a, b = _ids(2)
    r1 = _room(a, b)
    r2 = _view(b, r1)
    r2.claim(a.peer_id, 3)
    assert outranks(r2.state, r1.state) and not outranks(r1.state, r2.state)
    assert not outranks(r1.state, r1.state)
    far = replace(r2.state, term=r1.state.term + Limits().max_term_step + 1)
    assert not outranks(far, r1.state)
