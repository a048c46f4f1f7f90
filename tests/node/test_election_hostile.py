"""Issue 6, cases 1 and 10, at node level: a hostile peer attacks the room's hosting.

Each attack goes over the in-memory transport from a ``HostilePeer`` with its own keys. Each
test checks that the frame is dropped, a ``dropped_*`` (or ``rejected_claims``) counter
moved, nothing else changed (state, keys, history, host), and the node still answers a ping
at once. Elections run on a FakeClock, so every step is deterministic.
"""

from __future__ import annotations

import os
from dataclasses import replace

from meshchat import room as rules
from meshchat.hostwatch import Watch
from meshchat.identity import Identity
from meshchat.protocol.messages import (
    Heartbeat,
    Hello,
    HostedRoom,
    JoinAccept,
    JoinRequest,
    KeyUpdate,
    Pong,
    RoomState,
    StatePush,
    StateRequest,
)

from .conftest import Mesh
from .elections import FakeMesh, Mallory, answers_ping, snapshot


def _forged(state: RoomState, host: bytes, term: int) -> RoomState:
    return replace(state, host=host, term=term, version=state.version + 1,
                   change=rules.FAILOVER, change_peer=state.host, change_reason="vanished")


# ---------------------------------------------------------------- case 1: a stranger's takeover


async def test_a_strangers_heartbeat_hosting_our_room_changes_nothing(mesh: Mesh) -> None:
    fake = FakeMesh(mesh)
    nodes, rooms = await fake.room_of("alice", "bob")
    alice, bob = nodes
    evil = await Mallory.on(mesh)
    evil.introduce(alice)
    evil.introduce(bob)
    await fake.advance_until(lambda: evil.peer_id in alice._peers and evil.peer_id in bob._peers,
                             what="the stranger is known")
    before = [snapshot(n, r) for n, r in zip(nodes, rooms, strict=True)]
    room_id = rooms[0].room_id
    for term in (2, 2**63, 2**64 - 1):
        hosted = (HostedRoom(room_id, "lobby", 9, False, False, term),)
        evil.publish(b"P", Heartbeat(evil.card(), 0.0, "", hosted, ()))
        # the same listing in a Hello (which lists hosted rooms too) weighs no more
        evil.send(alice.peer_id, Hello(evil.card(), 0.0, "", None, hosted))
        await fake.advance(0.05)
    await fake.advance_until(lambda: alice.stats["dropped_not_lineage"] >= 6, what="counted")
    await fake.advance(0.5)
    assert [snapshot(n, r) for n, r in zip(nodes, rooms, strict=True)] == before
    assert rooms[0].is_host and rooms[1].host.name == "alice"
    assert not evil.messages(StateRequest)  # a hint from a stranger is not even followed up
    assert not alice._rooms[room_id].merging
    await answers_ping(evil, alice, 901, fake)


async def test_a_strangers_signed_state_pushed_directly_is_refused(mesh: Mesh) -> None:
    fake = FakeMesh(mesh)
    nodes, rooms = await fake.room_of("alice", "bob", "carol")
    evil = await Mallory.on(mesh)
    for n in nodes:
        evil.introduce(n)
    await fake.advance_until(lambda: all(evil.peer_id in n._peers for n in nodes), what="known")
    state = nodes[0]._rooms[rooms[0].room_id].state
    room_id = rooms[0].room_id
    # it even announces itself first, as a partition's other host would
    hosted = (HostedRoom(room_id, "lobby", 9, False, False, state.term + 1),)
    evil.publish(b"P", Heartbeat(evil.card(), 0.0, "", hosted, ()))
    await fake.advance(0.1)
    before = [snapshot(n, r) for n, r in zip(nodes, rooms, strict=True)]
    for term in (state.term + 1, 2**63):
        members = (*state.members, rules.Member(evil.peer_id, "mallory", 0.0))
        forged = replace(_forged(state, evil.peer_id, term), members=members)
        for n in nodes:
            evil.send(n.peer_id, StatePush(room_id, evil.sign(forged)))
    await fake.advance_until(lambda: all(n.stats["dropped_unsolicited"] >= 2 for n in nodes),
                             what="refused everywhere")
    await fake.advance(0.5)
    assert [snapshot(n, r) for n, r in zip(nodes, rooms, strict=True)] == before
    assert all(r.host.name == "alice" for r in rooms)
    await answers_ping(evil, nodes[0], 902, fake)


async def test_honest_partition_heal_steps_down_through_the_lineage_check(mesh: Mesh) -> None:
    fake = FakeMesh(mesh)
    nodes, rooms = await fake.room_of("alice", "bob", "carol", "dave")
    side_a, side_b = nodes[:2], nodes[2:]
    for a in side_a:
        for b in side_b:
            mesh.network.set_link(a.peer_id, b.peer_id, False)
    await fake.advance_until(lambda: rooms[3].host.name == "carol", what="side B elects carol")
    await fake.advance(1.5)  # alice gives carol and dave up as vanished
    assert [m.name for m in rooms[0].members] == ["alice", "bob"]
    for a in side_a:
        for b in side_b:
            mesh.network.set_link(a.peer_id, b.peer_id, True)
    await fake.advance_until(lambda: len({r.host.fingerprint for r in rooms if r.active}) == 1
                             and all(r.active and len(r.members) == 4 for r in rooms),
                             limit_s=15.0, what="one room again")
    assert all(r.host.name == "carol" for r in rooms)
    assert nodes[0].stats["dropped_not_lineage"] == 0


# ---------------------------------------------------------------- case 10: weak checks


async def test_a_key_update_from_a_member_is_refused(mesh: Mesh) -> None:
    fake = FakeMesh(mesh)
    nodes, rooms = await fake.room_of("alice", "bob")
    evil = await Mallory.on(mesh)
    fake.on_step.append(evil.beat)
    await evil.join(nodes[0], rooms[0], fake, tuple(nodes[1:]))
    await fake.advance_until(lambda: len(rooms[1].members) == 3, what="mallory is a member")
    bob = nodes[1]
    before = snapshot(bob, rooms[1])
    sealed = rules.seal_key(evil.identity, bob.peer_id, b"k" * 32)
    evil.send(bob.peer_id, KeyUpdate(rooms[1].room_id, 77, sealed))
    evil.send(bob.peer_id, KeyUpdate(rooms[1].room_id, evil.key_epoch, sealed))
    await fake.advance_until(lambda: bob.stats["dropped_not_host"] >= 2, what="refused")
    assert snapshot(bob, rooms[1]) == before
    assert 77 not in bob._rooms[rooms[1].room_id].keys
    await answers_ping(evil, bob, 903, fake)


async def test_a_pong_from_anyone_but_the_host_keeps_the_suspicion(mesh: Mesh) -> None:
    fake = FakeMesh(mesh)
    nodes, rooms = await fake.room_of("alice", "bob", "carol")
    alice, bob, carol = nodes
    evil = await Mallory.on(mesh)
    fake.on_step.append(evil.beat)
    await evil.join(alice, rooms[0], fake, (bob, carol))
    await fake.advance_until(lambda: len(rooms[2].members) == 4, what="mallory is a member")
    mesh.network.kill(alice.peer_id)
    jr = carol._rooms[rooms[2].room_id]
    await fake.advance_until(lambda: jr.watch is not None and jr.watch.watch is Watch.PINGING,
                             what="carol pings alice")
    assert jr.watch is not None and jr.watch.ping_nonce is not None
    # mallory answers the ping meant for alice, with the right nonce, and others
    for nonce in (jr.watch.ping_nonce, jr.watch.ping_nonce + 1, 2**64 - 1):
        evil.send(carol.peer_id, Pong(nonce))
    await fake.step()
    assert carol.stats["dropped_unsolicited"] >= 3
    assert jr.watch.watch is Watch.PINGING
    await fake.advance_until(lambda: all(r.host.name == "bob" for r in rooms[1:]),
                             what="the failover still happens")
    await answers_ping(evil, carol, 904, fake)


async def test_a_claim_with_a_huge_term_is_refused_and_elections_go_on(mesh: Mesh) -> None:
    fake = FakeMesh(mesh)
    nodes, rooms = await fake.room_of("alice", "bob", "carol")
    alice, bob, carol = nodes
    evil = await Mallory.on(mesh)
    fake.on_step.append(evil.beat)
    await evil.join(alice, rooms[0], fake, (bob, carol))
    await fake.advance_until(lambda: len(rooms[2].members) == 4, what="mallory is a member")
    state = carol._rooms[rooms[2].room_id].state
    mesh.network.kill(alice.peer_id)
    jr = carol._rooms[rooms[2].room_id]
    # the moment carol no longer hears alice, and before bob's honest claim
    await fake.advance_until(lambda: jr.watch is not None and jr.watch.watch is Watch.PINGING,
                             what="alice silent to carol")
    assert rooms[2].host.name == "alice"
    members = tuple(m for m in state.members if m.peer_id != alice.peer_id)
    for term in (2**64 - 1, 2**63, state.term + 100):
        evil.announce(replace(_forged(state, evil.peer_id, term), members=members))
    await fake.step()
    assert carol.stats["rejected_claims"] >= 3 and bob.stats["rejected_claims"] >= 3
    assert rooms[2].host.name == "alice"
    await fake.advance_until(lambda: all(r.host.name == "bob" for r in rooms[1:]),
                             what="the honest election")
    assert all(r.term == 2 for r in rooms[1:])
    await answers_ping(evil, carol, 905, fake)


async def test_a_same_term_claim_after_the_contest_is_a_refused_takeover(mesh: Mesh) -> None:
    fake = FakeMesh(mesh)
    alice = await fake.add("alice")
    room_a = await alice.host("lobby")
    evil = await Mallory.on(mesh)
    fake.on_step.append(evil.beat)
    bob, carol = await fake.add("bob"), await fake.add("carol")
    await evil.join(alice, room_a, fake, (bob, carol))  # mallory ranks right after alice
    room_b = await fake.run(bob.join("lobby"))
    room_c = await fake.run(carol.join("lobby"))
    await fake.advance_until(lambda: len(room_c.members) == 4, what="all in")
    # mallory goes quiet as alice dies, so bob (next in line) claims ...
    fake.on_step.remove(evil.beat)
    mesh.network.kill(alice.peer_id)
    await fake.advance_until(lambda: room_b.is_host and room_c.host.name == "bob",
                             what="bob claims")
    # ... then mallory is back, still a member, and waits for the contest to close
    fake.on_step.append(evil.beat)
    await fake.advance(0.1)
    claim = carol._rooms[room_c.room_id].state
    assert rules.is_member(claim, evil.peer_id) and claim.change == rules.FAILOVER
    await fake.advance(carol.timings.claim_contest_s)
    before = [snapshot(bob, room_b), snapshot(carol, room_c)]
    rival = replace(claim, host=evil.peer_id, version=claim.version + 1)  # same term, earlier
    evil.announce(rival)  # sealed with alice's key, which every member still holds
    await fake.step()
    assert carol.stats["rejected_claims"] >= 1 and bob.stats["rejected_claims"] >= 1
    await fake.advance(0.3)
    assert [snapshot(bob, room_b), snapshot(carol, room_c)] == before
    assert room_c.host.name == "bob" and room_b.is_host
    await answers_ping(evil, carol, 906, fake)


async def test_a_member_follows_its_host_only_to_a_host_of_the_lineage(mesh: Mesh) -> None:
    """A hostile host points its member at a stranger's room, as a stepping-down host would
    point at the partition's winner: the member refuses, and stays."""
    fake = FakeMesh(mesh)
    bob = await fake.add("bob")
    evil = await Mallory.on(mesh)
    core, epoch, key = rules.RoomCore.create(evil.identity, evil.codec, "den", "mallory",
                                             0.0, os.urandom)
    hosted = (HostedRoom(core.state.room_id, "den", 1, False, False, core.state.term),)

    def host_the_den() -> None:
        evil.publish(b"P", Heartbeat(evil.card(), 0.0, "", hosted, ()))
        for _, env in evil.received[len(answered):]:
            answered.append(env)
            if isinstance(env.message, JoinRequest) and env.sender == bob.peer_id:
                core.add_member(bob.peer_id, env.message.name, 1.0)
                evil.send(bob.peer_id, JoinAccept(
                    core.state.room_id, env.message.request_id, core.blob,
                    rules.seal_key(evil.identity, bob.peer_id, key), epoch, (), ()))

    answered: list[object] = []
    fake.on_step.append(host_the_den)
    evil.introduce(bob)
    room = await fake.run(bob.join("den"))
    assert room.host.name == "mallory"
    before = snapshot(bob, room)
    stranger = Identity.generate()
    for term in (core.state.term + 1, 2**63):
        elsewhere = replace(_forged(core.state, stranger.peer_id, term),
                            members=(rules.Member(stranger.peer_id, "x", 0.0),))
        blob = evil.codec.sign_record(stranger, elsewhere)
        # Not signed over: a state that merely claims to win.
        evil.send(bob.peer_id, StatePush(room.room_id, blob))
        # Signed over by the host itself, but to a stranger: no lineage.
        signed_over = rules.step_down(evil.codec, evil.identity, core.state, elsewhere)
        evil.send(bob.peer_id, StatePush(room.room_id, blob, signed_over))
        # A step-down that is not the host's own signature: refused like none.
        forged = rules.step_down(evil.codec, stranger, core.state, elsewhere)
        evil.send(bob.peer_id, StatePush(room.room_id, blob, forged))
    await fake.advance_until(lambda: bob.stats["dropped_not_lineage"] >= 2
                             and bob.stats["dropped_step_down_unsigned"] >= 4, what="refused")
    await fake.advance(0.5)
    assert snapshot(bob, room) == before and room.active and room.host.name == "mallory"
    assert not bob._rooms[room.room_id].merging
    await answers_ping(evil, bob, 907, fake)
