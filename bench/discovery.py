"""Figure 3: from the start of a node to another node listing it, over ``trials`` fresh nodes.

An observer runs in host 0 for the whole figure. Each trial starts a new process in host 1
(a fresh identity and name); the clock starts in that process just before the node object is
made (after imports: interpreter start-up is not the node's) and stops when the observer
reports the name — Pyre: its ENTER event; meshchat: a ``PeerDiscovered`` event or
``node.peers()`` listing it, whichever comes first (the observer polls every 5 ms).
Both clocks are the machine's wall clock, shared by all namespaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.common import percentile
from bench.lab import Lab, has, spawn_worker, stop_workers


@dataclass(frozen=True, slots=True)
class DiscoveryResult:
    system: str
    times_s: tuple[float, ...]

    @property
    def p50_s(self) -> float:
        return percentile(self.times_s, 50)

    @property
    def max_s(self) -> float:
        return max(self.times_s) if self.times_s else float("nan")


def pyre(lab: Lab, trials: int) -> DiscoveryResult:
    times = []
    try:
        observer = spawn_worker(lab.hosts[0], "pyre-observer", "w_pyre", "observer", json.dumps(
            {"name": "observer"}))
        observer.expect_event("ready", 15)
        for i in range(trials):
            name = f"new{i}"
            newbie = spawn_worker(lab.hosts[1], f"pyre-{name}", "w_pyre", "newbie", json.dumps(
                {"name": name}))
            t0 = float(newbie.expect_event("t0", 15)["t"])
            seen = observer.expect_event("enter", 15, where=has(name=name))
            times.append(float(seen["t"]) - t0)
            newbie.close()
            observer.expect_event("exit", 15, where=has(name=name))
        return DiscoveryResult("pyre", tuple(times))
    finally:
        stop_workers(lab)


def meshchat(lab: Lab, trials: int, timings: str = "default") -> DiscoveryResult:
    from bench.agent_ctl import spawn_agent, start_agents

    times = []
    try:
        observer = start_agents(lab, ["observer"], timings=timings, tag="disc",
                                watch_peers=True)[0]
        for i in range(trials):
            name = f"new{i}"
            newbie = spawn_agent(lab.hosts[1], name, timings=timings, tag="disc")
            t0 = float(newbie.expect_event("t0", 30)["t"])
            seen = observer.expect_event("discovered", 15, where=has(name=name))
            times.append(float(seen["t"]) - t0)
            newbie.expect_event("started", 15)
            newbie.close()
        return DiscoveryResult("meshchat", tuple(times))
    finally:
        stop_workers(lab)
