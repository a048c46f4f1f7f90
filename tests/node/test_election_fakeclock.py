"""Elections at node level on a FakeClock: failover, our own stall, rival claims.

No real-second waits: fake time moves in 10 ms steps only as far as each test needs.
"""

from __future__ import annotations

import time

import pytest

from meshchat import Timings
from meshchat.clock import FakeClock
from meshchat.hostwatch import Watch

from .conftest import Mesh
from .elections import FakeMesh

FAST = Timings.fast()  # heartbeats 50 ms, host timeout 0.3 s + ping 0.15 s


async def test_failover_after_the_host_vanishes(mesh: Mesh) -> None:
    fake = FakeMesh(mesh)
    nodes, rooms = await fake.room_of("alice", "bob", "carol", "dave")
    await rooms[2].say("before")
    await fake.advance_until(lambda: all(len(r.history()) == 1 for r in rooms), what="line")
    started = time.monotonic()
    mesh.network.kill(nodes[0].peer_id)
    took = await fake.advance_until(
        lambda: all(r.host.name == "bob" for r in rooms[1:]), what="bob hosts everywhere")
    assert FAST.host_timeout_s + FAST.host_ping_timeout_s <= took < 1.0
    assert time.monotonic() - started < 5.0  # fake seconds, not real ones
    assert all(r.term == 2 for r in rooms[1:])
    await fake.advance_until(lambda: all([m.name for m in r.members] == ["bob", "carol", "dave"]
                                         for r in rooms[1:]), what="alice removed")
    await rooms[3].say("after")
    await fake.advance_until(lambda: all({m.text for m in r.history()} == {"before", "after"}
                                         for r in rooms[1:]), what="nothing lost")
    assert all(n.stats["rejected_claims"] == 0 for n in nodes[1:])


async def test_our_own_stall_gives_the_host_grace(mesh: Mesh,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMesh(mesh)
    slow = FakeClock()  # bob's own clock: it stands still while bob "stalls"
    alice = await fake.add("alice")
    bob = await fake.add("bob", clock=slow)
    both = (fake.clock, slow)
    room_a = await alice.host("lobby")
    room_b = await fake.run(bob.join("lobby"), 10.0, *both)
    await fake.advance_until(lambda: len(room_a.members) == 2, 5.0, "bob in", *both)
    pings: list[bytes] = []
    real_send_ping = bob._wire.send_ping

    def spy(pid: bytes, nonce: int | None = None) -> bool:
        pings.append(pid)
        return real_send_ping(pid, nonce)

    monkeypatch.setattr(bob._wire, "send_ping", spy)
    # bob's clock freezes for 0.5 s while alice's runs on (bob still takes her frames, but
    # stamps them with the frozen time), then jumps: the silence bob sees is his own.
    await fake.advance(0.5, fake.clock)
    await slow.advance(0.5, step=0.5)
    await fake.advance(0.2, *both)
    assert bob.stats["stalls"] == 1
    jr = bob._rooms[room_b.room_id]
    assert jr.watch is not None and jr.watch.watch is Watch.FOLLOWING
    assert alice.peer_id not in pings  # not even a ping: the grace covers the stall
    assert room_b.host.name == "alice" and room_b.term == 1


async def test_rival_claims_converge_on_one_host(mesh: Mesh) -> None:
    fake = FakeMesh(mesh)
    nodes, rooms = await fake.room_of("alice", "bob", "carol", "dave")
    alice, bob, carol, _ = nodes
    # carol stops hearing bob just as alice dies: both think they are first in line
    mesh.network.set_link(bob.peer_id, carol.peer_id, False)
    mesh.network.kill(alice.peer_id)
    await fake.advance_until(lambda: rooms[1].is_host and rooms[2].is_host, what="two claims")
    assert rooms[1].term == rooms[2].term == 2
    # dave heard both claims at once: the earlier member (bob) wins with him
    await fake.advance_until(lambda: rooms[3].host.name == "bob", what="dave follows bob")
    mesh.network.set_link(bob.peer_id, carol.peer_id, True)
    await fake.advance_until(
        lambda: len({r.host.fingerprint for r in rooms[1:] if r.active}) == 1
        and all(r.active and len(r.members) == 3 for r in rooms[1:]),
        limit_s=15.0, what="one host, three members")


async def test_the_claim_comes_when_the_ping_is_overdue_not_at_the_next_beat(
        mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real LAN's timers: beats every 0.25 s, a ping answered within 0.35 s. Ticks alone
    # would see the ping overdue only at the second beat after it (0.5 s): a quarter of a
    # second of every failover.
    timings = Timings()
    assert timings.host_ping_timeout_s % timings.heartbeat_interval_s > 0.05
    fake = FakeMesh(mesh)
    alice = await mesh.add("alice", clock=fake.clock, timings=timings)  # type: ignore[arg-type]
    bob = await mesh.add("bob", clock=fake.clock, timings=timings)  # type: ignore[arg-type]
    room_a = await alice.host("lobby")
    room_b = await fake.run(bob.join("lobby"))
    await fake.advance_until(lambda: len(room_a.members) == 2, what="bob in")
    pinged_at: list[float] = []
    real_send_ping = bob._wire.send_ping

    def spy(pid: bytes, nonce: int | None = None) -> bool:
        if pid == alice.peer_id:
            pinged_at.append(fake.clock.monotonic())
        return real_send_ping(pid, nonce)

    monkeypatch.setattr(bob._wire, "send_ping", spy)
    mesh.network.kill(alice.peer_id)
    await fake.advance_until(lambda: room_b.host.name == "bob", what="bob hosts")
    took = fake.clock.monotonic() - pinged_at[-1]
    assert timings.host_ping_timeout_s <= took < timings.host_ping_timeout_s + 0.05, took
