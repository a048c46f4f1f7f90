"""Figure 2: one request and its answer between two hosts, p50 and p99 over many rounds.

Raw pyzmq DEALER→ROUTER echo (with and without CURVE), Pyre WHISPER → WHISPER back, and
meshchat's ``await node.ping(name)`` timed around the call (what a user of the API waits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.common import percentile
from bench.fanout import curve_keys
from bench.lab import BenchError, Lab, spawn_worker, stop_workers

PORT = 5602


@dataclass(frozen=True, slots=True)
class RttResult:
    system: str
    rtts_us: tuple[float, ...]
    reported_us: tuple[float, ...] = ()  # what the API itself says (meshchat's ping())

    @property
    def p50_us(self) -> float:
        return percentile(self.rtts_us, 50)

    @property
    def p99_us(self) -> float:
        return percentile(self.rtts_us, 99)


def raw(lab: Lab, rounds: int, curve: bool = False) -> RttResult:
    keys = curve_keys() if curve else None
    server = lab.hosts[0]
    tag = "raw-curve" if curve else "raw"
    try:
        router = spawn_worker(server, f"{tag}-router", "w_raw", "router", json.dumps(
            {"bind": f"tcp://{server.addr}:{PORT}", "curve": keys}))
        router.expect_event("ready", 15)
        dealer = spawn_worker(lab.hosts[1], f"{tag}-dealer", "w_raw", "dealer", json.dumps(
            {"connect": f"tcp://{server.addr}:{PORT}", "rounds": rounds, "curve": keys}))
        res = dealer.expect_event("result", 30 + rounds * 0.05)
        return RttResult(tag, tuple(res["rtts_us"]))
    finally:
        stop_workers(lab)


def pyre(lab: Lab, rounds: int) -> RttResult:
    try:
        echo = spawn_worker(lab.hosts[0], "pyre-echo", "w_pyre", "whisper_echo", json.dumps(
            {"name": "echo"}))
        echo.expect_event("ready", 15)
        pinger = spawn_worker(lab.hosts[1], "pyre-ping", "w_pyre", "whisper_ping", json.dumps(
            {"name": "pinger", "peer": "echo", "rounds": rounds}))
        res = pinger.expect_event("result", 40 + rounds * 0.05)
        return RttResult("pyre", tuple(res["rtts_us"]))
    finally:
        stop_workers(lab)


def meshchat(lab: Lab, rounds: int, timings: str = "default") -> RttResult:
    from bench.agent_ctl import start_agents

    try:
        pinger = start_agents(lab, ["pinger", "target"], timings=timings, tag="rtt")[0]
        pinger.call("await_peer", 20, peer="target")
        res = pinger.call("ping", 30 + rounds * 0.05, peer="target", rounds=rounds, warmup=50)
        if int(res.get("failures", 0)):
            raise BenchError(f"{res['failures']} of {rounds + 50} pings failed: "
                             f"{res.get('last_error')}")
        return RttResult("meshchat", tuple(res["rtts_us"]), tuple(res["reported_us"]))
    finally:
        stop_workers(lab)
