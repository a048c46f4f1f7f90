"""Idle cost as the LAN grows (issue 9): frames per node per second, doing nothing.

Two views of the same schedule (``meshchat.beats``):

- **the model**: one ``BeatPlan`` per node, exactly as each node's ticker runs it, for 100,
  300 and 1,000 nodes in one room, with the PUB/SUB fan-out counted (presence reaches every
  node, a room's frames its members). Nodes start at random phases, as real ones do.
- **real nodes** on the in-memory transport and one fake clock (16 and 48 of them, default
  timings): what their transports actually received, which must agree with the model.

What must hold: a member's frames received per second stay flat as N grows; the host's
grow at most linearly (its room beat goes to every member); 0.1.0's schedule (presence every
beat to everyone, heads every gap interval from everyone) is there as the baseline.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import pytest

from meshchat import Limits, Timings
from meshchat.beats import BeatPlan

from .conftest import Mesh
from .elections import FakeMesh

T = Timings()  # the real LAN's timers: beats 0.25 s, refreshes 10 s, budget 2 a second
ROOM = b"\x01" * 16


@dataclass(frozen=True)
class Rates:
    """Frames a second at idle: a member's (median) and the host's."""

    nodes: int
    member_rx: float
    host_rx: float
    host_tx_wire: float  # frames the host's PUB and ROUTER put on the wire (fan-out counted)
    member_tx_wire: float


def baseline(n: int, t: Timings = T) -> Rates:
    """0.1.0's schedule: every node's presence each beat to all, heads each gap interval."""
    beat, gap = 1 / t.heartbeat_interval_s, 1 / t.gap_fill_interval_s
    rx = (n - 1) * (beat + gap)
    return Rates(n, rx, rx, (n - 1) * (beat + gap), (n - 1) * (beat + gap))


def model(n: int, seconds: float = 60.0, seed: int = 9) -> Rates:
    """Run ``n`` BeatPlans in one room (node 0 hosts) for ``seconds`` after a warm-up."""
    rng = random.Random(seed)
    plans = [BeatPlan(T) for _ in range(n)]
    # The schedule reads only how many peers a node knows, and whether that set changed:
    # one set of n - 1 ids serves every node.
    known = frozenset(i.to_bytes(2, "big") for i in range(n - 1))
    presence = [("card", i) for i in range(n)]
    heads = [("heads", i) for i in range(n)]
    every = plans[0].presence_interval(n - 1)
    for i, plan in enumerate(plans):  # a random phase: nodes did not start together
        plan.step(-rng.uniform(0, every), presence[i], known,
                  {ROOM: (i == 0, heads[i], n)})
    rx = [0] * n
    tx_wire = [0] * n
    beats = round(seconds / T.heartbeat_interval_s)
    for k in range(beats):
        now = k * T.heartbeat_interval_s
        published = [0] * n
        for i, plan in enumerate(plans):
            b = plan.step(now, presence[i], known,
                          {ROOM: (i == 0, heads[i], n)})
            published[i] = int(b.presence) + len(b.heads)  # one room: everyone is a member
        total = sum(published)
        for i in range(n):
            rx[i] += total - published[i]
            tx_wire[i] += published[i] * (n - 1)
    return Rates(n, statistics.median(rx[1:]) / seconds, rx[0] / seconds,
                 tx_wire[0] / seconds, statistics.median(tx_wire[1:]) / seconds)


@pytest.fixture(scope="module")
def modelled() -> dict[int, Rates]:
    return {n: model(n) for n in (100, 300, 1000)}


def test_a_members_idle_frames_stay_flat_from_100_to_1000_nodes(
        modelled: dict[int, Rates]) -> None:
    beat = 1 / T.heartbeat_interval_s
    ceiling = beat + 2 * T.refresh_budget_per_s  # the host's beat, presence and heads refreshes
    for rates in modelled.values():
        assert beat <= rates.member_rx <= ceiling * 1.15, rates
        assert rates.member_rx < baseline(rates.nodes).member_rx / 50
    small, large = modelled[100].member_rx, modelled[1000].member_rx
    assert large <= small * 1.15, (small, large)


def test_the_hosts_cost_grows_at_most_linearly(modelled: dict[int, Rates]) -> None:
    per_member = [r.host_tx_wire / (r.nodes - 1) for r in modelled.values()]
    # Its room beat to each member, every beat, and nearly nothing else.
    assert all(1 / T.heartbeat_interval_s <= x <= 1 / T.heartbeat_interval_s + 0.2
               for x in per_member), per_member
    # What it receives is flat too: the members' refreshes, within the budget.
    assert all(r.host_rx <= 2 * T.refresh_budget_per_s * 1.15 for r in modelled.values())
    # A member's own sending, on the wire, is its refreshes to everyone: flat per receiver.
    for r in modelled.values():
        assert r.member_tx_wire / (r.nodes - 1) <= 2 * r.member_rx / (r.nodes - 1) + 0.01


async def _idle_room(mesh: Mesh, n: int, seconds: float) -> Rates:
    fake = FakeMesh(mesh)
    # Every node is at the one in-memory address: the per-address join limit would turn a
    # crowd away. Nothing else differs from the defaults.
    limits = Limits(joins_per_address_per_s=1000.0, joins_per_address_burst=1000)
    nodes = [await mesh.add(f"n{i}", clock=fake.clock, timings=T, limits=limits)
             for i in range(n)]
    rooms = [await nodes[0].host("lobby")]
    for node in nodes[1:]:
        rooms.append(await fake.run(node.join("lobby"), 30.0))
    await fake.advance_until(lambda: all(len(r.members) == n for r in rooms), 60.0,
                             "everyone in")
    await fake.advance(2 * T.presence_refresh_s)  # the nudges of the joins die down
    transports = [mesh.transports[f"n{i}"] for i in range(n)]
    before = [(t.stats.received, t.stats.sent) for t in transports]
    await fake.advance(seconds)
    rx = [t.stats.received - b[0] for t, b in zip(transports, before, strict=True)]
    # Nobody was taken for gone in the quiet: the stretched liveness matches the refreshes.
    assert all(len(r.members) == n and r.host.name == "n0" for r in rooms)
    return Rates(n, statistics.median(rx[1:]) / seconds, rx[0] / seconds, 0.0, 0.0)


async def test_real_nodes_idle_as_the_model_says_and_flat(mesh: Mesh) -> None:
    small = await _idle_room(mesh, 16, 60.0)
    await mesh.close()
    mesh.nodes.clear()
    mesh.transports.clear()
    mesh.recorders.clear()
    large = await _idle_room(mesh, 48, 60.0)
    for real in (small, large):
        expected = model(real.nodes, 60.0)
        assert real.member_rx == pytest.approx(expected.member_rx, rel=0.25), (real, expected)
        assert real.member_rx < baseline(real.nodes).member_rx / 5
    assert large.member_rx <= small.member_rx * 1.35, (small, large)
