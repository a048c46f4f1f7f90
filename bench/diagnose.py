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
``Node.start()`` timed (bench/startup_trace.py) and, for comparison, the same number of plain
trials (no wrappers; ``start()`` imports nothing any more, so the two differ only by the
wrappers' cost). Prints each phase's median start and end (ms after t0) and the median time at
which the observer listed the node. The quickest real run: ``discovery --trials 1``.

The step lists follow the node as rebuilt (``meshchat/node.py`` a facade, the work in
``meshchat/runtime/*.py`` and ``meshchat/transport/*.py``); each old ``Node._x`` step is mapped
to the function that does that work now (comments in the lists). Dropped: the receiver's
``meshchat/events.py:__init__`` step. The events are dataclasses whose generated ``__init__``
has no file of its own (cProfile and py-spy put it in ``<string>``), so it never matched; its
time is inside ``emit``/``take_batch``.

Failing loudly: before anything runs, every step is checked to name a function defined in its
file (``StepMissing`` names those that are not); a cProfile run whose profile lacks a step exits
non-zero naming it (py-spy only warns: a cheap step can go unsampled); the discovery mode stops
if a traced start misses a phase (bench/startup_trace.py raises in the agent) or the observer
never produced one of ``startup_trace.OBSERVER_REQUIRED``.
"""

from __future__ import annotations

import argparse
import ast
import os
import pstats
import shutil
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import fanout, startup_trace
from bench.lab import REPO, Lab, has, stop_workers

# Steps of the fan-out path, by (file suffix, function name), in path order. The node is a
# facade now: each old ``Node._x`` step points at the runtime/transport code that does it
# (``meshchat/runtime/*.py``, ``meshchat/transport/*.py``).
SENDER_STEPS = [
    ("bench/agent.py", "say_many"),
    ("meshchat/handles.py", "say"),                  # Room.say, the facade
    ("meshchat/runtime/chat.py", "say"),             # was Node._say
    ("meshchat/runtime/chat.py", "check_text"),      # was Node._check_text
    ("meshchat/storage/log.py", "reserve_seq"),
    ("meshchat/session.py", "add"),                  # Outbox.add: the line joins the batch
    ("meshchat/runtime/emitter.py", "emit"),         # was Node._emit
    ("meshchat/runtime/local.py", "info"),           # was Node.me
    ("meshchat/runtime/chat.py", "flush"),           # was Node._flush_outbox
    ("meshchat/protocol/codec.py", "sign_record"),
    ("meshchat/runtime/chat.py", "_store"),          # was Node._store_batch
    ("meshchat/storage/log.py", "add_many"),
    ("meshchat/runtime/wire.py", "publish_sealed"),  # was Node._publish_room
    ("meshchat/runtime/wire.py", "envelope"),        # was Node._envelope
    ("meshchat/protocol/codec.py", "encode"),
    ("meshchat/transport/zmq.py", "publish"),
]
RECEIVER_STEPS = [
    ("meshchat/transport/pump.py", "fire"),          # was ZmqTransport's fire
    ("meshchat/transport/pump.py", "drain"),         # (fire's work, also run on resume)
    ("meshchat/runtime/inbound.py", "on_incoming"),  # was Node._on_incoming
    ("meshchat/runtime/inbound.py", "_dispatch"),    # was Node._dispatch
    ("meshchat/runtime/wire.py", "open"),            # (frame attribution around the decode)
    ("meshchat/runtime/wire.py", "decode"),          # was Node._decode
    ("meshchat/protocol/codec.py", "decode"),
    ("meshchat/runtime/wire.py", "admit"),           # Gatekeeper.admit, was Node._authorized
    ("meshchat/runtime/wire.py", "roles"),           # Gatekeeper.roles, was Node._roles
    ("meshchat/authority.py", "admit"),
    ("meshchat/runtime/session.py", "open_sealed"),  # was Node._open_sealed
    ("meshchat/runtime/chat.py", "take_batch"),      # was Node._take_batch
    ("meshchat/protocol/codec.py", "peek_signed"),
    ("meshchat/historysync.py", "take"),             # (the rules, around the tracker)
    ("meshchat/history.py", "add_range"),            # was SeqTracker.add, line by line
    ("meshchat/runtime/chat.py", "_store"),          # was Node._store_batch
    ("meshchat/storage/log.py", "add_many"),
    ("meshchat/storage/log.py", "_note_run"),        # was _note_added (now its fallback)
    ("meshchat/runtime/peers.py", "info"),           # was Node._peer_info
    ("meshchat/runtime/emitter.py", "emit"),         # was Node._emit
    ("bench/agent.py", "pump"),
    ("bench/agent.py", "on_message"),
    ("meshchat/storage/log.py", "flush"),
]


class StepMissing(RuntimeError):
    """A step names a function that is not there (the code moved): fix the step list."""


def check_steps(steps: list[tuple[str, str]]) -> None:
    """Every step's function is defined in its file (parsed, nothing imported): raises
    ``StepMissing`` naming the ones that are not, before anything is measured."""
    missing = []
    for suffix, name in steps:
        path = REPO / suffix
        try:
            tree = ast.parse(path.read_text(), str(path))
        except OSError:
            missing.append(f"{suffix} (no such file) for {name}")
            continue
        if not any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
                   for n in ast.walk(tree)):
            missing.append(f"{suffix}:{name}")
        if path.suffix != ".py":
            missing.append(f"{suffix} is not a .py file")
    if missing:
        raise StepMissing("bench/diagnose.py: these steps name code that no longer exists: "
                          + ", ".join(missing) + "; point them at where that work lives now")


def _entries(stats: pstats.Stats, file_suffix: str, name: str) -> list[tuple[int, float, float]]:
    found = []
    for (path, _line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and path.endswith(file_suffix):
            found.append((nc, tt, ct))
    return found


def _label(suffix: str, name: str) -> str:
    return "/".join(suffix.split("/")[-2:]) + ":" + name


def report_profile(label: str, path: Path, steps: list[tuple[str, str]], messages: int,
                   top: int) -> list[str]:
    """Prints the steps and the top functions; returns the steps the profile never saw."""
    stats = pstats.Stats(str(path))
    unseen = []
    print(f"\n=== {label}: {path.name} ({messages:,} messages counted)")
    print(f"{'step':58} {'calls':>9} {'own µs/call':>11} {'cum µs/call':>11} {'cum µs/msg':>10}")
    for suffix, name in steps:
        found = _entries(stats, suffix, name)
        if not found:
            unseen.append(f"{label} {suffix}:{name}")
            print(f"{_label(suffix, name):58} !! NOT IN THE PROFILE (never called?)")
        for nc, tt, ct in found:
            print(f"{_label(suffix, name):58} {nc:9,} {tt / nc * 1e6:11.2f} "
                  f"{ct / nc * 1e6:11.2f} {ct / messages * 1e6:10.3f}")
    print(f"\n--- top {top} by own time")
    stats.sort_stats("tottime").print_stats(top)
    return unseen


def _unseen_exit(unseen: list[str]) -> None:
    if unseen:
        raise SystemExit("bench/diagnose.py: steps that exist but were never seen running: "
                         + ", ".join(unseen) + " (the path changed? fix the step lists)")


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
    unseen = report_profile("sender", prof / "k1-sender.prof", SENDER_STEPS, messages,
                            args.top)
    unseen += report_profile("receiver", prof / "k1-recv1.prof", RECEIVER_STEPS, messages,
                             args.top)
    _unseen_exit(unseen)


def _spy_table(path: Path, messages: int, rate: int, steps: list[tuple[str, str]],
               top: int) -> list[str]:
    """A py-spy ``raw`` (collapsed) profile: own and inclusive µs per message. Returns the
    steps never sampled (at a low rate a cheap step can be missed: a warning, not an error)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        # "func (dir/dir/file.py)": the last three parts of the path, so that e.g.
        # runtime/peers.py and storage/peers.py stay apart.
        frames = [f.split(" (")[0] + " ("
                  + "/".join(f.split(" (")[-1].split(":")[0].split("/")[-3:]) + ")"
                  if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count

    def us(samples: int) -> float:
        return samples / rate / messages * 1e6

    print(f"\n=== {path.name}: {total} samples at {rate}/s = {total / rate:.2f} s of CPU, "
          f"{us(total):.2f} µs per message ({messages:,} messages)")
    print(f"{'step (inclusive)':58} {'µs/msg':>7} {'share':>6}")
    unseen = []
    for suffix, name in steps:
        hits = 0
        for key, n in incl.items():
            func, _, where = key.rpartition(" (")
            where = where.removesuffix(")")
            if ((where == suffix or where.endswith("/" + suffix) or suffix.endswith("/" + where))
                    and (func == name or func.endswith("." + name))):
                hits += 1
                print(f"{key:58} {us(n):7.2f} {n / total:6.1%}")
        if not hits:
            unseen.append(f"{path.name} {suffix}:{name}")
            print(f"{_label(suffix, name):58} !! not sampled")
    print(f"{'own time, top ' + str(top):58} {'µs/msg':>7} {'share':>6}")
    for key, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{key[:58]:58} {us(n):7.2f} {n / total:6.1%}")
    return unseen


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
    unseen = _spy_table(out / f"spy-{sender.name}.txt", args.count, rate, SENDER_STEPS,
                        args.top)
    unseen += _spy_table(out / f"spy-{recv.name}.txt", args.count, rate, RECEIVER_STEPS,
                         args.top)
    if unseen:
        print(f"\n!! never sampled (too cheap for {rate}/s, or gone from the path): "
              + ", ".join(unseen), file=sys.stderr)


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
    obs_seen = {phase for phase in phases if phase.startswith("obs:")}
    if lost := [p for p in startup_trace.OBSERVER_REQUIRED if p not in obs_seen]:
        raise SystemExit("bench/diagnose.py: the observer never produced "
                         + ", ".join(repr(p) for p in lost)
                         + " (bench/startup_trace.py install_observer: target no longer called)")
    med = statistics.median
    print(f"plain  (no wrappers):                               listed p50 "
          f"{med(listed[False]):.1f} ms, start() returned p50 {med(started[False]):.1f} ms; "
          f"listed: {', '.join(f'{t:.1f}' for t in listed[False])}")
    print(f"traced (phases wrapped):                            listed p50 "
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
    check_steps(SENDER_STEPS)
    check_steps(RECEIVER_STEPS)
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
