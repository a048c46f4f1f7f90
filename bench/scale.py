"""Issue 9 figures: a room of N nodes, one per host, doing nothing, and what that costs.

For each N: every node joins one room (default ``Timings``); the N-th joins last and is timed;
after a settle the quiet window is measured from outside, in ``/proc`` (utime + stime of each
node's process before and after, VmRSS, open fds); then one line is said and timed until every
member has it; then a soak with one CPU burner per core counts false failovers; last the host
gets ``kill -9`` while two members chat, and the survivors' agreement and their histories are
checked as in bench/failover.py. Pyre's baseline: N ``w_pyre idle`` nodes in one group,
measured in the same way over the same window.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.agent_ctl import start_agents
from bench.common import index_of, now
from bench.failover import ROOM, _await_agreement, _burn_cpu, watch_soak
from bench.lab import BenchError, Lab, Worker, has, spawn_worker, stop_workers

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    """What the quiet window cost, per process (same order as the processes)."""

    window_s: float
    cpu_s: tuple[float, ...]  # utime + stime spent in the window
    rss_kib: tuple[int, ...]  # VmRSS at the end of the window
    fds: tuple[int, ...]  # open fds at the end of the window
    fd_kinds: dict[str, int]  # of the last process: socket, anon_inode:[eventfd], pipe, ...
    threads_cpu_s: dict[str, float]  # CPU in the window by thread name, all processes summed

    @property
    def total_cpu(self) -> float:
        """All processes together, as a share of one core."""
        return sum(self.cpu_s) / self.window_s

    @property
    def per_node_cpu(self) -> float:
        return self.total_cpu / len(self.cpu_s)

    @property
    def max_cpu(self) -> float:
        return max(self.cpu_s) / self.window_s

    @property
    def mean_rss_kib(self) -> float:
        return sum(self.rss_kib) / len(self.rss_kib)

    def fds_per_peer(self) -> float:
        peers = len(self.fds) - 1
        return sum(self.fds) / len(self.fds) / peers if peers else float("nan")


@dataclass(frozen=True, slots=True)
class ScaleResult:
    nodes: int
    form_s: float  # first agent started → the first N-1 all list N-1 members
    join_call_s: float  # the N-th: join() called → returned
    join_first_s: float  # join() called → its first Message event
    join_seen_s: float  # join() called → every other member has a PeerJoined for it
    idle: Usage
    reach_s: float  # say() called → the last member has the line
    reached: int
    soak_s: float
    burners: int
    false_failovers: int
    vanished: int
    failover_s: float
    new_host: str
    lost: int
    sent: int
    lost_detail: str = ""  # who lacked which lines when the failover's check gave up
    failover_detail: str = ""  # when the survivors heard of the new host, and any detours
    two_hosts_at_forming: int = 0  # joins that found the room listed by two hosts (retried)


@dataclass(frozen=True, slots=True)
class PyreIdle:
    nodes: int
    form_s: float  # all started → every node has seen N-1 JOINs (or the deadline passed)
    idle: Usage
    fewest_peers: int  # the fewest group members a node had seen when the window began
    short: int  # nodes that had not seen all N-1 others by the deadline


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _threads_cpu_s(pid: int) -> dict[str, float]:
    """utime + stime of each thread of ``pid``, by thread name (``ZMQbg/IO/0``, ``python``...)."""
    spent: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                raw = f.read()
        except OSError:  # the thread ended
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        spent[name] = spent.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return spent


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _fd_kinds(pid: int) -> dict[str, int]:
    """How many fds of each kind (``socket``, ``anon_inode:[eventfd]``, ``pipe``, a file)."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":[", 1)[0] if target.startswith(("socket:", "pipe:")) else (
            target if target.startswith("anon_inode:") else "file")
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def measure_idle(procs: Sequence[Worker], window_s: float) -> Usage:
    """CPU of each process over ``window_s`` (read from /proc before and after), RSS and fds."""
    pids = [p.pid for p in procs]
    try:
        started = time.monotonic()
        threads_before = [_threads_cpu_s(pid) for pid in pids]
        before = [_cpu_s(pid) for pid in pids]
        time.sleep(window_s)
        after = [_cpu_s(pid) for pid in pids]
        threads_after = [_threads_cpu_s(pid) for pid in pids]
        elapsed = time.monotonic() - started
        rss = [_rss_kib(pid) for pid in pids]
        fds = [_fds(pid) for pid in pids]
        kinds = _fd_kinds(pids[-1])
    except (OSError, ValueError, IndexError) as exc:
        dead = [p.name for p in procs if p.popen.poll() is not None]
        raise BenchError(f"reading /proc failed ({exc!r}); ended: {dead}") from exc
    dead = [p.name for p in procs if p.popen.poll() is not None]
    if dead:
        raise BenchError(f"ended during the quiet window: {dead}")
    threads: dict[str, float] = {}
    for one_before, one_after in zip(threads_before, threads_after, strict=True):
        for name, spent in one_after.items():
            threads[name] = threads.get(name, 0.0) + spent - one_before.get(name, 0.0)
    threads = dict(sorted(threads.items(), key=lambda item: -item[1]))
    return Usage(elapsed, tuple(a - b for a, b in zip(after, before, strict=True)),
                 tuple(rss), tuple(fds), kinds, threads)


def _form_room(agents: Sequence[Worker], timeout_s: float) -> int:
    """agents[0] hosts, the others join one after another; a joiner that does not know of the
    room yet (the mesh is still forming: N starts at once load the machine) tries again. So
    does one that finds two hosts listing the room: the first members replaced a host that
    the starts stalled, and the old one's listing had not gone yet. How often that happened
    is returned (and reported: it is a failover nobody caused)."""
    deadline = time.monotonic() + timeout_s
    agents[0].call("host", 30, room=ROOM)
    two_hosts = 0
    for agent in agents[1:]:
        while True:
            try:
                agent.call("join", 30, room=ROOM)
                break
            except BenchError as exc:
                ambiguous = "AmbiguousName" in str(exc)
                if not (ambiguous or "RoomNotFound" in str(exc)) or \
                        time.monotonic() > deadline:
                    raise
                two_hosts += ambiguous
                time.sleep(0.5)
    for agent in agents:
        while len(agent.call("state", 30, room=ROOM)["members"]) < len(agents):
            if time.monotonic() > deadline:
                raise BenchError(f"{agent.name} never saw all {len(agents)} members")
            time.sleep(0.1)
    return two_hosts


def _seen_by_all(others: Sequence[Worker], name: str, since: float, timeout_s: float) -> float:
    """When the last of ``others`` reported a PeerJoined of the node named ``name`` (after
    ``since``)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(others):
        for agent in others:
            if agent.name in seen:
                continue
            for event in agent.drain():
                if (event.get("ev") == "peer_joined" and event.get("name") == name
                        and float(event["t"]) >= since):
                    seen[agent.name] = float(event["t"])
                    break
        if time.monotonic() > deadline:
            missing = sorted(a.name for a in others if a.name not in seen)
            raise BenchError(f"{name} not listed by {missing} within {timeout_s} s")
        time.sleep(0.02)
    return max(seen.values())


def _reach(agents: Sequence[Worker], sender: Worker, timeout_s: float) -> tuple[float, int]:
    """One line from ``sender``: say() called → the last of the other agents has it."""
    prefix = f"reach-{int(now() * 1000)}-"
    others = [a for a in agents if a is not sender]
    ids = {}
    for agent in others:
        ident = f"{agent.name}-reach"
        ids[agent.name] = ident
        agent.send_cmd("await_text", id=ident, room=ROOM, prefix=prefix, timeout_s=timeout_s)
    for agent in others:  # a round trip: the waiter is in place before the line goes out
        agent.call("stats", 20)
    said = sender.call("say_many", 20, room=ROOM, prefix=prefix, count=1, report_times=True)
    if said["sent"] != 1:
        raise BenchError(f"say() failed: {said['last_error']}")
    t_said = float(said["times"][0])
    arrivals = [float(a.expect_event("done", timeout_s + 5, where=has(id=ids[a.name]))["t"])
                for a in others]
    return max(arrivals) - t_said, len(arrivals)


def _soak(agents: Sequence[Worker], soak_s: float, burners: int) -> tuple[int, int]:
    """Idle room, ``burners`` processes keeping cores busy: host changes and members declared
    vanished (there should be none: nothing dies)."""
    t_soak = now()
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        hogs = [_burn_cpu(soak_s + 1) for _ in range(burners)]
        return watch_soak(agents, t_soak, soak_s)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _spread(reports: dict[str, list[tuple[str, float]]], t_kill: float, new_host: str) -> str:
    """When the survivors first and last reported a new host after the kill, and who named
    another host on the way (a split claim, or a detour)."""
    first = sorted(r[0][1] - t_kill for r in reports.values())
    last = sorted(r[-1][1] - t_kill for r in reports.values())
    if not first:
        return ""
    def at(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))]
    detours = sorted(name for name, r in reports.items() if any(h != new_host for h, _ in r))
    named = sorted({h for r in reports.values() for h, _ in r} - {new_host})
    text = (f"first report of a new host p10 {at(first, 0.1):.2f} · p50 {at(first, 0.5):.2f} · "
            f"p90 {at(first, 0.9):.2f} · max {first[-1]:.2f} s; last report max {last[-1]:.2f} s")
    slowest = sorted(reports.items(), key=lambda item: -item[1][0][1])[:3]
    text += "; slowest " + ", ".join(f"{name} {r[0][1] - t_kill:.2f}" for name, r in slowest)
    if detours:
        text += (f"; {len(detours)} survivors named another host on the way ({', '.join(named)}):"
                 f" {', '.join(detours[:8])}")
    return text


class _CpuTrace:
    """All ``procs``' CPU (utime + stime summed) in steps of ``step_s`` for ``span_s``, read
    from /proc in a thread: whether a failover waits on the machine's cores or on timers."""

    def __init__(self, procs: Sequence[Worker], step_s: float = 0.25, span_s: float = 2.5
                 ) -> None:
        self._pids = [p.pid for p in procs]
        self._step_s, self._span_s = step_s, span_s
        self.shares: list[float] = []  # share of one core in each step
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> float:
        spent = 0.0
        for pid in self._pids:
            with contextlib.suppress(OSError, ValueError, IndexError):  # it ended
                spent += _cpu_s(pid)
        return spent

    def _run(self) -> None:
        t0 = last_at = time.monotonic()
        last = self._total()
        for k in range(1, int(self._span_s / self._step_s) + 1):
            time.sleep(max(0.0, t0 + k * self._step_s - time.monotonic()))
            total, at = self._total(), time.monotonic()
            if at - last_at < self._step_s / 2:
                continue  # this thread was late: the next step takes both
            self.shares.append((total - last) / (at - last_at))
            last, last_at = total, at

    def start(self) -> None:
        self._thread.start()

    def text(self) -> str:
        self._thread.join(timeout=self._span_s + 2.0)
        shares = " ".join(f"{100 * s:.0f}%" for s in self.shares)
        return (f"the survivors' CPU in each {self._step_s:g} s after the kill "
                f"(share of one core, {os.cpu_count()} cores): {shares}")


def _kill_host(agents: Sequence[Worker], rate: float, timeout_s: float
               ) -> tuple[float, str, int, int, str, str]:
    """``kill -9`` of agents[0] while agents[1] and agents[2] chat at ``rate``: time until all
    survivors agree on one new host; messages some survivor lacks; messages sent; who lacked
    which (empty when none did); when the survivors heard of the new host (``_spread``)."""
    senders = agents[1:3]
    for j, agent in enumerate(senders):
        agent.send_cmd("say_many", id=f"fo{j}", room=ROOM, prefix=f"fo{j}-",
                       count=int(rate * 120), rate=rate, report_indices=True)
    time.sleep(1.5)
    survivors = list(agents[1:])
    profile_dir = os.environ.get("MESHCHAT_BENCH_PROFILE_DIR")
    if profile_dir:  # the failover under cProfile, on the claimant and three members
        step = max(1, len(survivors) // 4)
        for agent in (survivors[0], *survivors[step::step][:3]):
            agent.send_cmd("profile", path=f"{profile_dir}/failover-{agent.name}.prof",
                           seconds=3.0)
        time.sleep(0.2)
    trace = _CpuTrace(survivors)
    trace.start()
    t_kill = now()
    agents[0].kill(signal.SIGKILL)
    reports: dict[str, list[tuple[str, float]]] = {}
    new_host, t_agreed = _await_agreement(survivors, t_kill, timeout_s=timeout_s,
                                          reports=reports)
    spread = (_spread(reports, t_kill, new_host) + f"; killed at {t_kill:.3f} (wall clock); "
              + trace.text())
    time.sleep(2.0)
    sent: dict[str, set[int]] = {}
    for j, agent in enumerate(senders):
        agent.send_cmd("stop_say")
        done = agent.expect_event("done", 15, where=has(id=f"fo{j}"))
        sent[f"fo{j}-"] = set(done["indices"])
    deadline = time.monotonic() + 10.0
    while True:
        missing = 0
        lacking: list[str] = []
        for agent in survivors:
            texts = agent.call("history", 30, room=ROOM, prefix="fo")["texts"]
            for prefix, indices in sent.items():
                have = {i for t in texts if (i := index_of(t, prefix)) is not None}
                lacks = sorted(indices - have)
                missing = max(missing, len(lacks))
                if lacks:
                    lacking.append(f"{agent.name} lacks {prefix}{lacks[0]}..{lacks[-1]} "
                                   f"({len(lacks)})")
        if missing == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    detail = "; ".join(lacking[:6]) + (f"; {len(lacking) - 6} more" if len(lacking) > 6 else "")
    if lacking:  # what one that lacks lines dropped or held, against one that lacks none
        short = {line.split()[0] for line in lacking}
        whole = [a for a in survivors if a.name not in short]
        looked = [("lacking", next(a for a in survivors if a.name in short))]
        looked += [("whole", whole[0])] if whole else []
        for label, agent in looked:
            counters = agent.call("stats", 30)["stats"]
            shown = {k: v for k, v in sorted(counters.items()) if v and any(
                w in k for w in ("drop", "pending", "causal", "sealed", "key", "history",
                                 "void", "stale", "state"))}
            detail += f"; stats of {agent.name} ({label}): {shown}"
    return (t_agreed - t_kill, new_host, missing, sum(len(s) for s in sent.values()), detail,
            spread)


def scale(lab: Lab, nodes: int, settle_s: float = 15.0, window_s: float = 20.0,
          soak_s: float = 60.0, burners: int = 0, failover_rate: float = 10.0) -> ScaleResult:
    """The issue 9 figures of a room of ``nodes`` meshchat nodes (see the module docstring)."""
    if nodes < 4:
        raise BenchError("the scale figures need at least 4 nodes")
    if nodes > len(lab.hosts):
        raise BenchError(f"{nodes} nodes need {nodes} hosts, the lab has {len(lab.hosts)}")
    try:
        started = time.monotonic()
        names = [f"s{j:02d}" for j in range(nodes)]
        agents = start_agents(lab, names, tag=f"scale{nodes}")
        two_hosts = _form_room(agents[:-1], timeout_s=60.0 + 2.0 * nodes)
        form_s = time.monotonic() - started
        last = agents[-1]
        # A member chats while the last one joins, so that its first Message is a live line.
        agents[1].send_cmd("say_many", id="joinchat", room=ROOM, prefix="j-", count=600,
                           rate=5.0)
        time.sleep(0.5)
        joined = last.call("join", 30, room=ROOM)
        first = last.expect_event("first_message", 20, where=has(room=ROOM))
        t_seen = _seen_by_all(agents[:-1], names[-1], float(joined["t_called"]),
                              timeout_s=30.0)
        agents[1].send_cmd("stop_say")
        agents[1].expect_event("done", 15, where=has(id="joinchat"))
        time.sleep(settle_s)
        idle = measure_idle(agents, window_s)
        reach_s, reached = _reach(agents, agents[nodes // 2], timeout_s=20.0)
        false_failovers, vanished = _soak(agents, soak_s, burners)
        failover_s, new_host, lost, sent, lost_detail, spread = _kill_host(
            agents, failover_rate, timeout_s=30.0)
        return ScaleResult(
            nodes=nodes,
            form_s=form_s,
            join_call_s=float(joined["t_done"]) - float(joined["t_called"]),
            join_first_s=float(first["t"]) - float(joined["t_called"]),
            join_seen_s=t_seen - float(joined["t_called"]),
            idle=idle,
            reach_s=reach_s,
            reached=reached,
            soak_s=soak_s,
            burners=burners,
            false_failovers=false_failovers,
            vanished=vanished,
            failover_s=failover_s,
            new_host=new_host,
            lost=lost,
            two_hosts_at_forming=two_hosts,
            lost_detail=lost_detail,
            failover_detail=spread,
            sent=sent,
        )
    finally:
        stop_workers(lab)


def pyre_idle(lab: Lab, nodes: int, settle_s: float = 15.0, window_s: float = 20.0
              ) -> PyreIdle:
    """N Pyre nodes, one per host, in one group; measured as ``scale`` measures meshchat."""
    if nodes > len(lab.hosts):
        raise BenchError(f"{nodes} nodes need {nodes} hosts, the lab has {len(lab.hosts)}")
    try:
        started = time.monotonic()
        workers = [spawn_worker(lab.hosts[i], f"pyre-idle{nodes}-{i:02d}", "w_pyre", "idle",
                                json.dumps({"name": f"p{i:02d}", "peers": nodes - 1}))
                   for i in range(nodes)]
        deadline = started + 60.0 + 2.0 * nodes
        short: dict[str, int] = {}
        for worker in workers:
            try:
                worker.expect_event("ready", max(0.1, deadline - time.monotonic()))
            except BenchError:
                if worker.popen.poll() is not None:
                    raise
                counts = [e["members"] for e in worker.drain() if e.get("ev") == "members"]
                short[worker.name] = int(counts[-1]) if counts else 0
        form_s = time.monotonic() - started
        time.sleep(settle_s)
        return PyreIdle(nodes, form_s, measure_idle(workers, window_s),
                        min(short.values(), default=nodes - 1), len(short))
    finally:
        stop_workers(lab)
