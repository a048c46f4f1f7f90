"""Figure 1: room fan-out, 100-byte messages, msg/s per receiver, one process per host.

Every system runs the same shape: a sender in host 0, ``k`` receivers in hosts 1..k, a warm-up
until every receiver has seen traffic, then ``count`` messages sent as fast as the sender's API
allows. A receiver's rate is (received - 1) / (last arrival - first arrival); the figure is the
mean over receivers. Losses are counted per receiver against ``count``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import zmq

from bench.lab import BenchError, Lab, Worker, has, spawn_worker, stop_workers

PORT = 5601


@dataclass(frozen=True, slots=True)
class FanoutResult:
    system: str
    receivers: int
    sent: int
    rates: tuple[float, ...]
    received: tuple[int, ...]
    duplicates: int = 0
    paced_at: float = 0.0  # msg/s the sender was held to (0: as fast as it could)
    tight_loop_lost: int = 0  # losses of an unpaced first attempt, when pacing was needed
    sender_rate: float = 0.0  # msg/s the sending API accepted (meshchat: say() calls)

    @property
    def rate(self) -> float:
        """Mean msg/s per receiver."""
        return sum(self.rates) / len(self.rates) if self.rates else 0.0

    @property
    def lost(self) -> int:
        return sum(max(0, self.sent - got) for got in self.received)


def _rate(received: int, t_first: float, t_last: float) -> float:
    return (received - 1) / (t_last - t_first) if received > 1 and t_last > t_first else 0.0


def _collect(system: str, k: int, count: int, receivers: list[Worker], deadline_s: float
             ) -> FanoutResult:
    rates, got, dups = [], [], 0
    for worker in receivers:
        res = worker.expect_event("result", deadline_s)
        rates.append(_rate(int(res["received"]), float(res["t_first"]), float(res["t_last"])))
        got.append(int(res["unique"]))
        dups += int(res["received"]) - int(res["unique"])
    return FanoutResult(system, k, count, tuple(rates), tuple(got), dups)


def curve_keys() -> dict[str, str]:
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return {
        "server_public": server_public.decode(), "server_secret": server_secret.decode(),
        "client_public": client_public.decode(), "client_secret": client_secret.decode(),
    }


def deadline_for(count: int) -> float:
    """How long a receiver may take: generous, but bounded (floor of ~400 msg/s)."""
    return 20.0 + count / 400.0


def raw(lab: Lab, k: int, count: int, curve: bool = False) -> FanoutResult:
    """Raw pyzmq PUB/SUB with msgpack (optionally CURVE without ZAP)."""
    keys = curve_keys() if curve else None
    sender = lab.hosts[0]
    tag = "raw-curve" if curve else "raw"
    try:
        pub = spawn_worker(sender, f"{tag}-pub-k{k}", "w_raw", "pub", json.dumps(
            {"bind": f"tcp://{sender.addr}:{PORT}", "count": count, "curve": keys}))
        pub.expect_event("ready", 15)
        subs = [
            spawn_worker(lab.hosts[i], f"{tag}-sub{i}-k{k}", "w_raw", "sub", json.dumps(
                {"connect": f"tcp://{sender.addr}:{PORT}", "count": count, "curve": keys,
                 "deadline_s": deadline_for(count)}))
            for i in range(1, k + 1)
        ]
        for sub in subs:
            sub.expect_event("synced", 20)
        pub.send_cmd("go")
        return _collect(tag, k, count, subs, deadline_for(count) + 5)
    finally:
        stop_workers(lab)


def _pyre_once(lab: Lab, k: int, count: int, rate: float) -> FanoutResult:
    try:
        recvs = [
            spawn_worker(lab.hosts[i], f"pyre-recv{i}-k{k}", "w_pyre", "shout_recv", json.dumps(
                {"name": f"recv{i}", "count": count, "deadline_s": deadline_for(count)}))
            for i in range(1, k + 1)
        ]
        for worker in recvs:
            worker.expect_event("ready", 15)
        sender = spawn_worker(lab.hosts[0], f"pyre-send-k{k}", "w_pyre", "shout_send", json.dumps(
            {"name": "sender", "count": count, "receivers": k, "rate": rate}))
        sender.expect_event("ready", 25)
        for worker in recvs:
            worker.expect_event("synced", 20)
        sender.send_cmd("go")
        result = _collect("pyre", k, count, recvs, deadline_for(count) + 5)
        return replace(result, paced_at=rate)
    finally:
        stop_workers(lab)


def pyre(lab: Lab, k: int, count: int, attempts: int = 4) -> FanoutResult:
    """Pyre SHOUT to a group holding the ``k`` receivers: its best *lossless* rate.

    Pyre sends with a zero send timeout and drops a peer whose queue (3000 messages) is full,
    so a tight loop that outruns a receiver loses most of the burst. Then the burst is repeated
    paced at 85% of what the receivers managed, until nothing is lost (``paced_at`` says so).
    """
    result = first = _pyre_once(lab, k, count, 0.0)
    for _ in range(attempts - 1):
        if not result.lost:
            break
        result = _pyre_once(lab, k, count, 0.85 * min(r for r in result.rates if r > 0))
    return replace(result, tight_loop_lost=first.lost)


CAPACITY_LIMITS = {"chat_lines_per_s": 1e7, "chat_lines_burst": 10**8}
"""The per-author line pace, lifted for the fan-out: every other limit is the default."""


def meshchat(lab: Lab, k: int, count: int, bursts: int = 1, timings: str = "default",
             profile_dir: str | None = None) -> FanoutResult:
    """meshchat: the sender hosts a room, ``k`` nodes join; ``await room.say()`` in a loop.

    This measures how fast the nodes move lines, so the per-author line pace is lifted
    (``CAPACITY_LIMITS``): with the defaults, say() itself holds an author to 100 lines a
    second once a burst of about 3,900 is spent, by design (the flood section measures that).
    The same nodes run ``bursts`` bursts; the result is the burst with the median rate. With
    ``profile_dir`` every node runs under cProfile (bench/diagnose.py reads the dumps).
    """
    from bench.agent_ctl import start_agents

    room = "fanout"
    results = []
    try:
        sender, *recvs = start_agents(lab, ["sender"] + [f"recv{i}" for i in range(1, k + 1)],
                                      timings=timings, tag=f"k{k}", profile_dir=profile_dir,
                                      limits=CAPACITY_LIMITS)
        sender.call("host", 15, room=room)
        for worker in recvs:
            worker.call("join", 15, room=room)
        for worker in recvs:
            worker.send_cmd("await_text", room=room, prefix="w", timeout_s=20.0)
        # Warm up until every receiver has seen live traffic, so no one counts a slow join.
        sender.send_cmd("say_many", room=room, prefix="w", count=400, rate=20.0, id="warm")
        for worker in recvs:
            worker.expect_event("done", 25, where=has(cmd="await_text"))
        sender.send_cmd("stop_say")
        sender.expect_event("done", 10, where=has(id="warm"))
        for burst in range(bursts):
            prefix = f"m{burst}-"
            for worker in recvs:
                worker.send_cmd("count", id=prefix, room=room, prefix=prefix, expected=count,
                            deadline_s=deadline_for(count), idle_s=10.0)
            time.sleep(0.3)  # the count commands are in place, earlier traffic has drained
            sender.send_cmd("say_many", id=prefix, room=room, prefix=prefix, count=count, rate=0.0)
            rates, got, dups = [], [], 0
            for worker in recvs:
                res = worker.expect_event("done", deadline_for(count) + 15,
                                    where=has(id=prefix))
                rates.append(_rate(int(res["received"]), float(res["t_first"]),
                                   float(res["t_last"])))
                got.append(int(res["unique"]))
                dups += int(res["received"]) - int(res["unique"])
            done = sender.expect_event("done", 30, where=has(id=prefix))
            if int(done.get("failed", 0)):
                raise BenchError(f"say() raised {done['failed']} times: {done.get('last_error')}")
            span = float(done["t1"]) - float(done["t0"])
            results.append(FanoutResult("meshchat", k, count, tuple(rates), tuple(got), dups,
                                        sender_rate=count / span if span > 0 else 0.0))
    finally:
        stop_workers(lab)
    return median(results)


def median(results: list[FanoutResult]) -> FanoutResult:
    """The result with the median rate (of an odd count; the lower middle of an even one)."""
    ordered = sorted(results, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]
