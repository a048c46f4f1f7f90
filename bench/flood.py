"""Issue 6 figure: one member floods the room; does another member still get through?

A room of 3 nodes, one per host: the host (host 0), a flooder (host 1) and an honest member
(host 2). In one measurement window the honest member pings the host (``await node.ping``,
paced at ``PING_RATE`` per second, under the product's per-peer ping limit) and says chat lines
at ``CHAT_RATE`` per second; the host records when each of them arrives as a ``Message`` event.
Chat latency is that arrival minus the wall time just before ``room.say`` (one clock for all
namespaces). The window runs twice on the same nodes: first with the flooder idle (the
baseline), then while it floods. Two flooders, each with fresh nodes:

- ``say``: a meshchat node that calls ``await room.say(text)`` in a loop as fast as it can (the
  public API, the way a runaway bot would),
- ``hostile``: ``bench/w_flood.py``, a ``tests.hostile.HostilePeer`` on the real
  ``ZmqTransport`` that joined the open room by hand and sends raw frames in a tight loop:
  Pings and HistoryRequests to the host, sealed chat to the room.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import percentile
from bench.lab import BenchError, Lab, Worker, has, spawn_worker, stop_workers

ROOM = "flood"
PING_RATE = 50.0  # per second: half of Limits.pings_per_s, the honest member stays under it
CHAT_RATE = 20.0  # lines per second from the honest member
LEAD_S = 0.7  # the flood runs this long before the window opens, and as long after it closes
TAIL_S = 1.0


@dataclass(frozen=True, slots=True)
class Window:
    """What the honest member saw in one window."""

    rtts_us: tuple[float, ...]
    ping_failures: int
    chat_sent: int
    chat_latencies_ms: tuple[float, ...]  # of the lines the host saw, in send order
    chat_in_history: int  # lines of the window in the host's room.history() afterwards

    @property
    def p50_ms(self) -> float:
        return percentile(self.rtts_us, 50) / 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.rtts_us, 99) / 1000

    @property
    def chat_lost(self) -> int:
        return self.chat_sent - len(self.chat_latencies_ms)

    def chat_ms(self, q: float) -> float:
        return percentile(self.chat_latencies_ms, q)


@dataclass(frozen=True, slots=True)
class FloodResult:
    variant: str
    baseline: Window
    flood: Window
    flood_rate: float  # say() calls/s (say) or frames/s (hostile) while flooding
    flood_count: int
    flood_s: float
    host_drops: dict[str, int] = field(default_factory=dict)  # node.stats dropped_* in the flood


def _start(lab: Lab, index: int, name: str, tag: str) -> tuple[Worker, str]:
    """A meshchat agent in host ``index``; with its card address (what ``--peer`` takes)."""
    from bench.agent_ctl import meshchat_missing, spawn_agent

    missing = meshchat_missing()
    if missing:
        from bench.lab import Unavailable

        raise Unavailable(missing)
    agent = spawn_agent(lab.hosts[index], name, tag=tag)
    started = agent.expect_event("started", 30)
    return agent, str(started.get("address", ""))


def _drops(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) - int(before.get(k, 0)) for k, v in sorted(after.items())
            if k.startswith("dropped") and int(v) - int(before.get(k, 0))}


def _window(host: Worker, honest: Worker, prefix: str, window_s: float,
            flooding: bool) -> Window:
    rounds = int(PING_RATE * window_s)
    lines = int(CHAT_RATE * window_s)
    host.send_cmd("count", id=prefix, room=ROOM, prefix=prefix, expected=lines, times=True,
                  deadline_s=window_s + 20, idle_s=window_s + 10)
    time.sleep(0.2)
    if flooding:
        time.sleep(LEAD_S)
    honest.send_cmd("say_many", id=prefix, room=ROOM, prefix=prefix, count=lines,
                    rate=CHAT_RATE, report_times=True)
    ping = honest.call("ping", window_s + 60, peer="host", rounds=rounds, warmup=5,
                       rate=PING_RATE)
    said = honest.expect_event("done", window_s + 30, where=has(id=prefix))
    got = host.expect_event("done", window_s + 40, where=has(id=prefix))
    sent_at = [float(t) for t in said.get("times", [])]
    arrived = {int(k): float(v) for k, v in got.get("times", {}).items()}
    latencies = tuple((arrived[i] - sent_at[i]) * 1000 for i in range(len(sent_at))
                      if i in arrived)
    texts = host.call("history", 20, room=ROOM, prefix=prefix)["texts"]
    return Window(tuple(ping["rtts_us"]), int(ping.get("failures", 0)), int(said["sent"]),
                  latencies, len(set(texts)))


def _room(host: Worker, honest: Worker) -> None:
    host.call("host", 15, room=ROOM)
    honest.call("join", 15, room=ROOM)
    honest.call("await_peer", 20, peer="host")


def _await_members(host: Worker, count: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(host.call("state", 10, room=ROOM)["members"]) < count:
        if time.monotonic() > deadline:
            raise BenchError(f"the room never had {count} members")
        time.sleep(0.05)


def flood_say(lab: Lab, window_s: float = 5.0) -> FloodResult:
    """The flooder is a meshchat member calling ``await room.say()`` in a loop."""
    try:
        host, _ = _start(lab, 0, "host", "fl-say")
        flooder, _ = _start(lab, 1, "flooder", "fl-say")
        honest, _ = _start(lab, 2, "honest", "fl-say")
        _room(host, honest)
        flooder.call("join", 15, room=ROOM)
        _await_members(host, 3)
        time.sleep(0.5)
        base = _window(host, honest, "b-", window_s, flooding=False)
        before = host.call("stats", 10)["stats"]
        flood_s = LEAD_S + 0.2 + window_s + TAIL_S
        flooder.send_cmd("say_many", id="flood", room=ROOM, prefix="f", count=10**9, rate=0.0,
                         duration_s=flood_s)
        hit = _window(host, honest, "w-", window_s, flooding=True)
        done = flooder.expect_event("done", flood_s + 60, where=has(id="flood"))
        after = host.call("stats", 10)["stats"]
        span = float(done["t1"]) - float(done["t0"])
        sent = int(done["sent"])
        return FloodResult("say", base, hit, sent / span if span > 0 else 0.0, sent, span,
                           _drops(before, after))
    finally:
        stop_workers(lab)


def flood_hostile(lab: Lab, window_s: float = 5.0) -> FloodResult:
    """The flooder is a hostile member sending raw frames (``bench/w_flood.py``)."""
    try:
        host, card = _start(lab, 0, "host", "fl-evil")
        honest, _ = _start(lab, 2, "honest", "fl-evil")
        _room(host, honest)
        evil = spawn_worker(lab.hosts[1], "fl-evil-mallory", "w_flood", json.dumps(
            {"bind": lab.hosts[1].addr, "card": card, "name": "mallory"}))
        evil.expect_event("ready", 30)
        _await_members(host, 3)
        time.sleep(0.5)
        base = _window(host, honest, "b-", window_s, flooding=False)
        before = host.call("stats", 10)["stats"]
        flood_s = LEAD_S + 0.2 + window_s + TAIL_S
        evil.send_cmd("go", id="flood", duration_s=flood_s)
        hit = _window(host, honest, "w-", window_s, flooding=True)
        done = evil.expect_event("done", flood_s + 60, where=has(id="flood"))
        after = host.call("stats", 10)["stats"]
        return FloodResult("hostile", base, hit, float(done["per_s"]), int(done["frames"]),
                           float(done["t1"]) - float(done["t0"]), _drops(before, after))
    finally:
        stop_workers(lab)
