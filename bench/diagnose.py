"""Where the time goes, for the figures issue 6 wants faster (not part of ``make bench``).

    sudo python bench/diagnose.py fanout [--count 100000] [--top 30]
    sudo python bench/diagnose.py fanout-spy [--count 300000]   # py-spy installed in the venv
    sudo python bench/diagnose.py discovery [--trials 10]

``fanout``: the 1-receiver meshchat fan-out with both nodes under cProfile; prints, for the
sender and the receiver, the functions by own time and the steps of the path with µs per call
and µs per message. cProfile slows Python code down (about 1.5-2×) and says so in the rate; use
the shares, not the absolute rate.

``fanout-spy``: the same burst sampled by py-spy (``--nonblocking``, no slow-down of Python
code): CPU µs per message by step (inclusive) and by function (own time).

``discovery``: fresh nodes started beside an observer, as in the figure, with the phases of
``Node.start()`` timed (bench/startup_trace.py, which imports everything before the clock
starts) and, for comparison, the same number of plain trials (imports inside ``start()`` as
in the product). Prints each phase's median start and end (ms after t0) and the median time at
which the observer listed the node.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import fanout
from bench.lab import REPO, Lab, has, stop_workers

# Steps of the fan-out path, by (file suffix, function name), in path order.
SENDER_STEPS = [
    ("bench/agent.py", "say_many"),
    ("meshchat/node.py", "say"),
    ("meshchat/node.py", "_say"),
    ("meshchat/node.py", "_check_text"),
    ("meshchat/storage/log.py", "reserve_seq"),
    ("meshchat/history.py", "add"),
    ("meshchat/node.py", "_emit"),
    ("meshchat/node.py", "me"),
    ("meshchat/node.py", "_flush_outbox"),
    ("meshchat/protocol/codec.py", "sign_record"),
    ("meshchat/node.py", "_store_batch"),
    ("meshchat/storage/log.py", "add_many"),
    ("meshchat/node.py", "_publish_room"),
    ("meshchat/node.py", "_envelope"),
    ("meshchat/protocol/codec.py", "encode"),
    ("meshchat/transport/zmq.py", "publish"),
]
RECEIVER_STEPS = [
    ("meshchat/transport/zmq.py", "fire"),
    ("meshchat/node.py", "_on_incoming"),
    ("meshchat/node.py", "_dispatch"),
    ("meshchat/node.py", "_decode"),
    ("meshchat/protocol/codec.py", "decode"),
    ("meshchat/node.py", "_authorized"),
    ("meshchat/node.py", "_roles"),
    ("meshchat/authority.py", "admit"),
    ("meshchat/node.py", "_open_sealed"),
    ("meshchat/node.py", "_take_batch"),
    ("meshchat/protocol/codec.py", "peek_signed"),
    ("meshchat/history.py", "add"),
    ("meshchat/node.py", "_store_batch"),
    ("meshchat/storage/log.py", "add_many"),
    ("meshchat/storage/log.py", "_note_added"),
    ("meshchat/node.py", "_peer_info"),
    ("meshchat/node.py", "_emit"),
    ("meshchat/events.py", "__init__"),
    ("bench/agent.py", "pump"),
    ("bench/agent.py", "on_message"),
    ("meshchat/storage/log.py", "flush"),
]


def _entries(stats: pstats.Stats, file_suffix: str, name: str) -> list[tuple[int, float, float]]:
    found = []
    for (path, _line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and path.endswith(file_suffix):
            found.append((nc, tt, ct))
    return found


def report_profile(label: str, path: Path, steps: list[tuple[str, str]], messages: int,
                   top: int) -> None:
    stats = pstats.Stats(str(path))
    print(f"\n=== {label}: {path.name} ({messages:,} messages counted)")
    print(f"{'step':58} {'calls':>9} {'own µs/call':>11} {'cum µs/call':>11} {'cum µs/msg':>10}")
    for suffix, name in steps:
        for nc, tt, ct in _entries(stats, suffix, name):
            print(f"{suffix.split('/')[-1] + ':' + name:58} {nc:9,} {tt / nc * 1e6:11.2f} "
                  f"{ct / nc * 1e6:11.2f} {ct / messages * 1e6:10.3f}")
    print(f"\n--- top {top} by own time")
    stats.sort_stats("tottime").print_stats(top)


def diagnose_fanout(args: argparse.Namespace) -> None:
    prof = Path(args.logs) / "prof"
    prof.mkdir(parents=True, exist_ok=True)
    with Lab(2, workdir=Path(args.logs)) as lab:
        res = fanout.meshchat(lab, 1, args.count, bursts=1, profile_dir=str(prof))
    print(f"under cProfile: receiver {res.rate:,.0f} msg/s, sender say() loop "
          f"{res.sender_rate:,.0f} msg/s, lost {res.lost}")
    messages = args.count + 400  # the burst and (at most) the warm-up
    for _ in range(50):  # the dumps are written as the agents exit
        if (prof / "k1-sender.prof").exists() and (prof / "k1-recv1.prof").exists():
            break
        time.sleep(0.1)
    report_profile("sender", prof / "k1-sender.prof", SENDER_STEPS, messages, args.top)
    report_profile("receiver", prof / "k1-recv1.prof", RECEIVER_STEPS, messages, args.top)


def _spy_table(path: Path, messages: int, rate: int, steps: list[tuple[str, str]],
               top: int) -> None:
    """A py-spy ``raw`` (collapsed) profile: own and inclusive µs per message."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count

    def us(samples: int) -> float:
        return samples / rate / messages * 1e6

    print(f"\n=== {path.name}: {total} samples at {rate}/s = {total / rate:.2f} s of CPU, "
          f"{us(total):.2f} µs per message ({messages:,} messages)")
    print(f"{'step (inclusive)':58} {'µs/msg':>7} {'share':>6}")
    for suffix, name in steps:
        file = suffix.rsplit("/", 1)[-1]
        for key, n in incl.items():
            func, _, where = key.rpartition(" (")
            if where == file + ")" and (func == name or func.endswith("." + name)):
                print(f"{key:58} {us(n):7.2f} {n / total:6.1%}")
    print(f"{'own time, top ' + str(top):58} {'µs/msg':>7} {'share':>6}")
    for key, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{key[:58]:58} {us(n):7.2f} {n / total:6.1%}")


def diagnose_fanout_spy(args: argparse.Namespace) -> None:
    """The same fan-out with py-spy sampling both nodes (no cProfile slow-down)."""
    import subprocess

    from bench.agent_ctl import start_agents

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: pip install py-spy (into the venv)")
    out = Path(args.logs)
    out.mkdir(parents=True, exist_ok=True)
    rate = args.spy_rate
    with Lab(2, workdir=out) as lab:
        try:
            sender, recv = start_agents(lab, ["sender", "recv1"], tag="spy")
            sender.call("host", 15, room="spy")
            recv.call("join", 15, room="spy")
            recv.send_cmd("await_text", room="spy", prefix="w", timeout_s=20.0)
            sender.send_cmd("say_many", room="spy", prefix="w", count=400, rate=20.0, id="warm")
            recv.expect_event("done", 25, where=has(cmd="await_text"))
            sender.send_cmd("stop_say")
            sender.expect_event("done", 10, where=has(id="warm"))
            recv.send_cmd("count", id="b", room="spy", prefix="m-", expected=args.count,
                          deadline_s=120, idle_s=5.0)
            time.sleep(0.3)
            spies = [subprocess.Popen(
                [spy, "record", "--pid", str(w.popen.pid), "--rate", str(rate), "--duration",
                 str(args.spy_s), "--format", "raw", "--nonblocking", "--output",
                 str(out / f"spy-{w.name}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for w in (sender, recv)]
            time.sleep(0.5)
            sender.send_cmd("say_many", id="b", room="spy", prefix="m-", count=args.count)
            got = recv.expect_event("done", 180, where=has(id="b"))
            done = sender.expect_event("done", 60, where=has(id="b"))
            for proc in spies:
                proc.wait(args.spy_s + 30)
        finally:
            stop_workers(lab)
    span = float(got["t_last"]) - float(got["t_first"])
    print(f"py-spy run: receiver {(int(got['received']) - 1) / span:,.0f} msg/s, sender say() "
          f"loop {args.count / (float(done['t1']) - float(done['t0'])):,.0f} msg/s "
          f"(sampled {args.spy_s} s; the burst must fit in it)")
    _spy_table(out / f"spy-{sender.name}.txt", args.count, rate, SENDER_STEPS, args.top)
    _spy_table(out / f"spy-{recv.name}.txt", args.count, rate, RECEIVER_STEPS, args.top)


def diagnose_discovery(args: argparse.Namespace) -> None:
    from bench.agent_ctl import spawn_agent

    listed: dict[bool, list[float]] = {False: [], True: []}
    started: dict[bool, list[float]] = {False: [], True: []}
    phases: dict[str, list[tuple[float, float]]] = {}
    with Lab(2, workdir=Path(args.logs)) as lab:
        try:
            observer = spawn_agent(lab.hosts[0], "observer", tag="diag", watch_peers=True,
                                   trace_observer=True)
            observer.expect_event("started", 30)
            observer.call("spans", 10)
            for i in range(2 * args.trials):
                traced = i % 2 == 1
                name = f"new{i}"
                newbie = spawn_agent(lab.hosts[1], name, tag="diag", trace_start=traced)
                t0 = float(newbie.expect_event("t0", 30)["t"])
                seen = observer.expect_event("discovered", 15, where=has(name=name))
                listed[traced].append((float(seen["t"]) - t0) * 1000)
                started[traced].append((float(newbie.expect_event("started", 15)["t"]) - t0)
                                       * 1000)
                seen_by: dict[str, tuple[float, float]] = {}
                for phase, a, b in observer.call("spans", 10)["spans"]:
                    if a >= t0:  # the first of each since the clock started
                        seen_by.setdefault(phase, ((a - t0) * 1000, (b - t0) * 1000))
                if traced:
                    for span in newbie.expect_event("phases", 15)["spans"]:
                        phases.setdefault(span["phase"], []).append(
                            (span["start_ms"], span["end_ms"]))
                    for phase, span in seen_by.items():
                        phases.setdefault(phase, []).append(span)
                newbie.close()
        finally:
            stop_workers(lab)
    med = statistics.median
    print(f"plain  (imports inside start(), as in the product): listed p50 "
          f"{med(listed[False]):.1f} ms, start() returned p50 {med(started[False]):.1f} ms; "
          f"listed: {', '.join(f'{t:.1f}' for t in listed[False])}")
    print(f"traced (modules imported before t0):                listed p50 "
          f"{med(listed[True]):.1f} ms, start() returned p50 {med(started[True]):.1f} ms; "
          f"listed: {', '.join(f'{t:.1f}' for t in listed[True])}")
    print(f"\n{'phase (traced trials, ms after t0, medians)':46} {'start':>7} {'end':>7} "
          f"{'took':>7}")
    for phase, spans in sorted(phases.items(), key=lambda kv: med(s for s, _ in kv[1])):
        print(f"{phase:46} {med(s for s, _ in spans):7.2f} {med(e for _, e in spans):7.2f} "
              f"{med(e - s for s, e in spans):7.2f}")
    print(f"{'observer lists the node':46} {med(listed[True]):7.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("fanout", "fanout-spy", "discovery"))
    ap.add_argument("--spy-s", type=int, default=8, help="py-spy seconds (fanout-spy)")
    ap.add_argument("--spy-rate", type=int, default=199, help="py-spy samples per second")
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--logs", default=str(REPO / "bench" / "results" /
                                          ("diag-" + time.strftime("%Y%m%d-%H%M%S"))))
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("bench/diagnose.py needs root and iproute2", file=sys.stderr)
        return 2
    if args.what == "fanout":
        diagnose_fanout(args)
    elif args.what == "fanout-spy":
        diagnose_fanout_spy(args)
    else:
        diagnose_discovery(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
