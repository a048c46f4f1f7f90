"""Issue 3 figures: failover after ``kill -9`` of the host, losses across it, the join of the
20th member of a 20-node room, and false failovers of a 20-node room under load.

One meshchat process per host, default ``Timings`` (the LAN defaults, not the test ones).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.agent_ctl import start_agents
from bench.common import index_of, now, percentile
from bench.lab import BenchError, Lab, Worker, has, stop_workers

ROOM = "bench"


@dataclass(frozen=True, slots=True)
class FailoverResult:
    times_s: tuple[float, ...]
    lost: tuple[int, ...]  # per trial: messages a live member lacks that a live member sent
    sent: tuple[int, ...]
    failed_says: tuple[int, ...]
    new_hosts: tuple[str, ...]

    @property
    def p50_s(self) -> float:
        return percentile(self.times_s, 50)


@dataclass(frozen=True, slots=True)
class BigRoomResult:
    members: int
    join_s: float  # join() called → first message event
    join_call_s: float  # join() called → join() returned
    soak_s: float
    false_failovers: int
    vanished: int  # members some node declared vanished although nothing died
    messages_sent: int
    burners: int


def _form_room(agents: list[Worker], timeout_s: float = 20.0) -> None:
    """agents[0] hosts, the others join one after another (the succession order)."""
    agents[0].call("host", 15, room=ROOM)
    for agent in agents[1:]:
        agent.call("join", 15, room=ROOM)
    deadline = time.monotonic() + timeout_s
    for agent in agents:
        while len(agent.call("state", 10, room=ROOM)["members"]) < len(agents):
            if time.monotonic() > deadline:
                raise BenchError(f"{agent.name} never saw all {len(agents)} members")
            time.sleep(0.05)


def _await_agreement(survivors: list[Worker], since: float, timeout_s: float,
                     reports: dict[str, list[tuple[str, float]]] | None = None
                     ) -> tuple[str, float]:
    """Wait until every survivor has reported a HostChanged after ``since`` naming the same new
    host and none reports another within 0.5 s; returns (host, time of the last report).
    ``reports``, if given, gets every survivor's HostChanged reports in order (host, time)."""
    latest: dict[str, tuple[str, float]] = {}
    deadline = time.monotonic() + timeout_s
    agreed_at: float | None = None
    while True:
        for agent in survivors:
            for event in agent.drain():
                if event.get("ev") == "host_changed" and float(event["t"]) > since:
                    latest[agent.name] = (str(event["new"]), float(event["t"]))
                    if reports is not None:
                        reports.setdefault(agent.name, []).append(latest[agent.name])
        hosts = {host for host, _ in latest.values()}
        if len(latest) == len(survivors) and len(hosts) == 1:
            agreed_at = agreed_at or time.monotonic()
            if time.monotonic() - agreed_at >= 0.5:
                return hosts.pop(), max(t for _, t in latest.values())
        else:
            agreed_at = None
        if time.monotonic() > deadline:
            raise BenchError(f"no agreement on a new host within {timeout_s} s: {latest}")
        time.sleep(0.02)


def _missing(agent: Worker, prefix: str, sent: set[int]) -> int:
    texts = agent.call("history", 20, room=ROOM, prefix=prefix)["texts"]
    have = {i for t in texts if (i := index_of(t, prefix)) is not None}
    return len(sent - have)


def failover(lab: Lab, trials: int = 5, members: int = 4, rate: float = 50.0,
             before_kill_s: float = 1.5, after_s: float = 2.0) -> FailoverResult:
    times, lost, sent_total, failed, new_hosts = [], [], [], [], []
    for trial in range(trials):
        try:
            agents = start_agents(lab, [f"m{j}" for j in range(members)], tag=f"fo{trial}")
            _form_room(agents)
            senders = agents[1:3]
            budget = int(rate * (before_kill_s + after_s + 30))
            for j, agent in enumerate(senders):
                agent.send_cmd("say_many", id=f"say{j}", room=ROOM, prefix=f"s{j}-", count=budget,
                           rate=rate, report_indices=True)
            time.sleep(before_kill_s)
            t_kill = now()
            agents[0].kill(signal.SIGKILL)
            survivors = agents[1:]
            new_host, t_agreed = _await_agreement(survivors, t_kill, timeout_s=20.0)
            times.append(t_agreed - t_kill)
            new_hosts.append(new_host)
            time.sleep(after_s)
            sent: dict[str, set[int]] = {}
            for j, agent in enumerate(senders):
                agent.send_cmd("stop_say")
                done = agent.expect_event("done", 15, where=has(id=f"say{j}"))
                sent[f"s{j}-"] = set(done["indices"])
                failed.append(int(done["failed"]))
            sent_total.append(sum(len(s) for s in sent.values()))
            # Gap filling may still be at work: give it a bounded while to converge.
            deadline = time.monotonic() + 5.0
            while True:
                missing = max(_missing(a, p, s) for a in survivors for p, s in sent.items())
                if missing == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            lost.append(missing)
        except BenchError as exc:
            raise type(exc)(f"trial {trial + 1}/{trials}: {exc}") from exc
        finally:
            stop_workers(lab)
    return FailoverResult(tuple(times), tuple(lost), tuple(sent_total), tuple(failed),
                          tuple(new_hosts))


def _burn_cpu(seconds: float) -> subprocess.Popen[bytes]:
    """A process that keeps one core busy for ``seconds`` (and then ends by itself)."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def watch_soak(agents: Sequence[Worker], t_soak: float, soak_s: float) -> tuple[int, int]:
    """Watch the agents' events for ``soak_s``: how many host changes, and how many members
    declared vanished, happened since ``t_soak`` (in a soak where nothing dies, both are
    false alarms)."""
    end = time.monotonic() + soak_s
    changes: set[tuple[object, object]] = set()
    vanished: set[str] = set()
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        for agent in agents:
            for event in agent.drain():
                if float(event.get("t", 0)) < t_soak:
                    continue
                if event.get("ev") == "host_changed":
                    changes.add((event.get("term"), event.get("new")))
                elif event.get("reason") == "vanished":
                    vanished.add(str(event.get("name")))
    return len(changes), len(vanished)


def big_room(lab: Lab, members: int = 20, soak_s: float = 60.0, senders: int = 4,
             rate: float = 10.0, burners: int = 0) -> BigRoomResult:
    """A room of ``members`` nodes under chat load: the last join, then a soak during which
    ``burners`` processes keep cores busy (the machine is loaded, not only the network)."""
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        agents = start_agents(lab, [f"n{j:02d}" for j in range(members)], tag="big")
        _form_room(agents[:-1], timeout_s=60.0)
        talkers = agents[1 : min(1 + senders, members - 1)]  # never the late joiner
        budget = int(rate * (soak_s + 60))
        for j, agent in enumerate(talkers):
            agent.send_cmd("say_many", id=f"load{j}", room=ROOM, prefix=f"l{j}-", count=budget,
                       rate=rate)
        time.sleep(1.0)
        last = agents[-1]
        joined = last.call("join", 15, room=ROOM)
        first = last.expect_event("first_message", 10, where=has(room=ROOM))
        t_soak = now()
        hogs = [_burn_cpu(soak_s + 1) for _ in range(burners)]
        false_failovers, vanished = watch_soak(agents, t_soak, soak_s)
        sent = 0
        for j, agent in enumerate(talkers):
            agent.send_cmd("stop_say")
            sent += int(agent.expect_event("done", 15, where=has(id=f"load{j}"))["sent"])
        return BigRoomResult(
            members=members,
            join_s=float(first["t"]) - float(joined["t_called"]),
            join_call_s=float(joined["t_done"]) - float(joined["t_called"]),
            soak_s=soak_s,
            false_failovers=false_failovers,
            vanished=vanished,
            messages_sent=sent,
            burners=burners,
        )
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        stop_workers(lab)
