"""Issue 3 at node level: handoff, failover, moderation, passwords, renames, partitions."""

from __future__ import annotations

import asyncio

import pytest

from meshchat import (
    HostChanged,
    JoinRefused,
    MemberRemoved,
    Message,
    NotHost,
    PeerLeft,
    Renamed,
    RenameTooSoon,
    RoomClosed,
)

from .conftest import Mesh, until


async def _room_of(mesh: Mesh, *names: str):  # type: ignore[no-untyped-def]
    nodes = [await mesh.add(n) for n in names]
    rooms = [await nodes[0].host("lobby")]
    for node in nodes[1:]:
        rooms.append(await node.join("lobby"))
    await until(lambda: all(len(r.members) == len(names) for r in rooms), what="all joined")
    return nodes, rooms


async def test_handoff(mesh: Mesh) -> None:
    nodes, rooms = await _room_of(mesh, "alice", "bob", "carol")
    await rooms[0].handoff("bob")
    for name in ("alice", "bob", "carol"):
        ev = await mesh.recorders[name].wait(lambda e: isinstance(e, HostChanged))
        assert isinstance(ev, HostChanged) and ev.new.name == "bob" and ev.old
        assert ev.old.name == "alice"
    await until(lambda: all(r.host.name == "bob" for r in rooms))
    infos = await nodes[2].rooms(timeout=0)
    await until(lambda: any(i.host == "bob" for i in nodes[2]._room_infos()))
    assert infos


async def test_host_quits_next_member_takes_over(mesh: Mesh) -> None:
    nodes, rooms = await _room_of(mesh, "alice", "bob", "carol")
    await nodes[0].close()
    for name in ("bob", "carol"):
        ev = await mesh.recorders[name].wait(lambda e: isinstance(e, HostChanged))
        assert isinstance(ev, HostChanged) and ev.new.name == "bob"
    await until(lambda: [m.name for m in rooms[2].members] == ["bob", "carol"])
    await rooms[2].say("still here")
    await mesh.recorders["bob"].wait(lambda e: isinstance(e, Message) and e.text == "still here")


async def test_host_vanishes_failover_loses_nothing(mesh: Mesh) -> None:
    nodes, rooms = await _room_of(mesh, "alice", "bob", "carol", "dave")
    for i in range(5):
        await rooms[i % 4].say(f"before {i}")
    await until(lambda: all(len(r.history()) == 5 for r in rooms[1:]))
    mesh.network.kill(nodes[0].peer_id)
    for i in range(6):
        await rooms[1 + i % 3].say(f"during {i}")
    for name in ("bob", "carol", "dave"):
        ev = await mesh.recorders[name].wait(lambda e: isinstance(e, HostChanged), timeout=5)
        assert isinstance(ev, HostChanged) and ev.new.name == "bob"
    for i in range(3):
        await rooms[1 + i].say(f"after {i}")
    await until(lambda: len({tuple((m.sender.fingerprint, m.seq) for m in r.history())
                             for r in rooms[1:]}) == 1 and len(rooms[1].history()) == 14,
                what="equal histories")
    assert [m.name for m in rooms[3].members] == ["bob", "carol", "dave"]


async def test_kick_ban_unban_and_refusals(mesh: Mesh) -> None:
    nodes, rooms = await _room_of(mesh, "alice", "bob", "carol")
    carol = nodes[2]
    with pytest.raises(NotHost, match="only the host can kick"):
        await rooms[1].kick("carol")
    assert [m.name for m in rooms[0].members] == ["alice", "bob", "carol"]

    await rooms[0].kick("carol", "too loud")
    ev = await mesh.recorders["carol"].wait(lambda e: isinstance(e, MemberRemoved))
    assert isinstance(ev, MemberRemoved) and ev.reason == "too loud" and not ev.banned
    await mesh.recorders["bob"].wait(lambda e: isinstance(e, MemberRemoved))
    await rooms[0].say("after the kick")
    await mesh.recorders["bob"].wait(
        lambda e: isinstance(e, Message) and e.text == "after the kick")
    await asyncio.sleep(0)  # let carol's queue run; she must not have it
    assert not any(isinstance(e, Message) and e.text == "after the kick"
                   for e in mesh.recorders["carol"].events)

    room_c = await carol.join("lobby")  # a kick is not a ban
    await until(lambda: len(rooms[0].members) == 3)
    await rooms[0].ban("carol", "spam")
    await mesh.recorders["carol"].wait(lambda e: isinstance(e, MemberRemoved) and e.banned)
    assert not room_c.active
    with pytest.raises(JoinRefused) as refused:
        await carol.join("lobby")
    assert refused.value.reason == "banned"
    assert [b.name for b in rooms[0].bans] == ["carol"]
    await rooms[0].unban("carol")
    await carol.join("lobby")
    await until(lambda: len(rooms[0].members) == 3)


async def test_lock_password_close(mesh: Mesh) -> None:
    _, rooms = await _room_of(mesh, "alice", "bob")
    dave = await mesh.add("dave")
    await rooms[0].lock()
    with pytest.raises(JoinRefused) as refused:
        await dave.join("lobby")
    assert refused.value.reason == "locked"
    await rooms[0].unlock()
    await rooms[0].set_password("s3cret")
    with pytest.raises(JoinRefused) as refused:
        await dave.join("lobby")
    assert refused.value.reason == "password"
    with pytest.raises(JoinRefused) as refused:
        await dave.join("lobby", "wrong")
    assert refused.value.reason == "password"
    room_d = await dave.join("lobby", "s3cret")
    assert room_d.has_password
    await rooms[0].close()
    for name in ("bob", "dave"):
        await mesh.recorders[name].wait(lambda e: isinstance(e, RoomClosed))
    assert not room_d.active


async def test_hosted_room_with_password(mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    await alice.host("vault", password="pw")
    with pytest.raises(JoinRefused):
        await bob.join("vault", "nope")
    room = await bob.join("vault", "pw")
    assert room.host.name == "alice"


async def test_rename_once_per_week(mesh: Mesh) -> None:
    now = [1_000_000.0]
    alice = await mesh.add("alice", clock=lambda: now[0])
    bob = await mesh.add("bob")
    await until(lambda: len(bob.peers()) == 1)
    await alice.rename("alicia")
    ev = await mesh.recorders["bob"].wait(lambda e: isinstance(e, Renamed))
    assert isinstance(ev, Renamed) and (ev.old, ev.new) == ("alice", "alicia")
    now[0] += 6 * 24 * 3600
    with pytest.raises(RenameTooSoon) as early:
        await alice.rename("ally")
    assert early.value.allowed_at == pytest.approx(1_000_000.0 + 7 * 24 * 3600)
    now[0] += 24 * 3600 + 1
    await alice.rename("ally")
    assert alice.name == "ally" and alice.former_names == ["alice", "alicia"]


async def test_partition_heals_into_one_room(mesh: Mesh) -> None:
    nodes, rooms = await _room_of(mesh, "alice", "bob", "carol", "dave")
    side_a = nodes[:2]
    side_b = nodes[2:]
    for a in side_a:
        for b in side_b:
            mesh.network.set_link(a.peer_id, b.peer_id, False)
    # side B elects carol; both sides keep chatting
    await mesh.recorders["dave"].wait(
        lambda e: isinstance(e, HostChanged) and e.new.name == "carol", timeout=8)
    await rooms[1].say("from side A")
    await rooms[3].say("from side B")
    await mesh.recorders["alice"].wait(lambda e: isinstance(e, Message) and e.text == "from side A")
    await mesh.recorders["carol"].wait(lambda e: isinstance(e, Message) and e.text == "from side B")
    for a in side_a:
        for b in side_b:
            mesh.network.set_link(a.peer_id, b.peer_id, True)
    await until(lambda: len({r.host.fingerprint for r in rooms if r.active}) == 1
                and all(r.active and len(r.members) == 4 for r in rooms), timeout=10,
                what="one host and four members everywhere")
    await until(lambda: all({m.text for m in r.history()} >= {"from side A", "from side B"}
                            for r in rooms), timeout=10, what="merged histories")


async def test_removed_member_cannot_speak_with_an_old_key(mesh: Mesh) -> None:
    nodes, rooms = await _room_of(mesh, "alice", "bob", "carol")
    carol = nodes[2]
    stale = carol._rooms[rooms[2].room_id]  # what carol holds before the kick: the old key
    member_state = stale.core.current  # ... and the state that lists her
    await rooms[0].kick("carol")
    await mesh.recorders["carol"].wait(lambda e: isinstance(e, MemberRemoved))
    # A modified client that keeps the room anyway, as it was before the kick: it seals with
    # the old key (an unmodified one holds back lines for a key it lacks).
    stale.core.current = member_state
    carol._rooms.add(stale)
    await rooms[2].say("still here, with the old key")
    await rooms[0].say("marker")
    await mesh.recorders["bob"].wait(lambda e: isinstance(e, Message) and e.text == "marker")
    assert not any(isinstance(e, Message) and e.text.startswith("still here")
                   for e in mesh.recorders["bob"].events)
    assert nodes[1].stats["dropped_not_member"] >= 1


async def test_member_lost_for_a_while_rejoins_and_fills_its_gap(mesh: Mesh) -> None:
    nodes, rooms = await _room_of(mesh, "alice", "bob", "carol")
    alice, _, carol = nodes
    mesh.network.set_link(alice.peer_id, carol.peer_id, False)
    await mesh.recorders["alice"].wait(
        lambda e: isinstance(e, PeerLeft) and e.peer.name == "carol", timeout=5)
    await rooms[0].say("while carol was away")
    await rooms[1].say("bob too")
    mesh.network.set_link(alice.peer_id, carol.peer_id, True)
    await until(lambda: rooms[2].active and len(rooms[2].members) == 3
                and {"while carol was away", "bob too"} <= {m.text for m in rooms[2].history()},
                timeout=8, what="carol back with the lines she missed")
    assert rooms[2].host.name == "alice"
