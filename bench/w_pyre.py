"""Pyre (zeromq-pyre, the Python Zyre) baselines, one role per process.

``python -m bench.w_pyre ROLE JSON``. Pyre beacons by UDP broadcast on the first IPv4 interface
that is neither loopback nor link-local (port 5670), so these roles must only ever run inside
the benchmark's namespaces, where that interface is the lab's ``eth0``; ``main`` refuses to
start if it sees any other candidate interface.

roles
  shout_send    join the group, wait for ``receivers`` members, probe until ``go``, SHOUT ``count``
                (paced at ``rate`` msg/s when given: Pyre drops a peer whose queue overflows)
  shout_recv    join the group, count SHOUTs, report ``result``
  whisper_echo  answer every WHISPER with the same frames
  whisper_ping  measure ``rounds`` WHISPER round trips to ``peer``
  observer      report every ENTER with its time
  newbie        report the time just before the node is made, then run until ``quit``
  idle          join the group, report ``ready`` once ``peers`` others have joined it, then
                take events (and nothing else) until ``quit``: Pyre's idle cost at N nodes
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
from pyre import Pyre, zhelper
from pyre.pyre_event import PyreEvent

from bench.common import CommandReader, emit, envelope, index_of, log, now, text_of

GROUP = "bench"
PROBE = b"probe"
END = b"end"


def check_confined(allowed: str) -> None:
    """Refuse to run unless the only interface Pyre could beacon on is ``allowed``."""
    candidates = []
    for entry in zhelper.get_ifaddrs():
        for name, families in entry.items():
            inet = families.get(2)
            if not inet or not inet.get("addr") or not inet.get("netmask"):
                continue
            iface = ipaddress.ip_interface(f"{inet['addr']}/{inet['netmask']}")
            if not iface.is_loopback and not iface.is_link_local:
                candidates.append(name)
    if candidates != [allowed]:
        raise SystemExit(f"pyre would beacon on {candidates}, expected only [{allowed!r}]")


def next_event(node: Pyre, timeout_s: float) -> PyreEvent | None:
    if node.socket().poll(int(timeout_s * 1000)):
        return PyreEvent(node)
    return None


def wait_for(
    node: Pyre, test: Callable[[PyreEvent], bool], timeout_s: float, what: str
) -> PyreEvent:
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        event = next_event(node, min(remaining, 0.2))
        if event is not None and test(event):
            return event
    raise TimeoutError(f"no {what} within {timeout_s} s")


def run_shout_send(node: Pyre, opts: dict[str, Any]) -> None:
    commands = CommandReader()
    node.join(GROUP)
    node.start()
    members: set[bytes] = set()
    wanted = int(opts["receivers"])

    def joined(event: PyreEvent) -> bool:
        if event.type == "JOIN" and event.group == GROUP:
            members.add(event.peer_uuid_bytes)
        return len(members) >= wanted

    wait_for(node, joined, float(opts.get("sync_timeout_s", 20.0)), f"{wanted} JOINs")
    emit("ready")
    deadline = time.monotonic() + float(opts.get("sync_timeout_s", 20.0))
    while True:
        node.shout(GROUP, PROBE)
        cmd = commands.poll()
        if cmd is not None and cmd["cmd"] == "quit":
            return
        if cmd is not None and cmd["cmd"] == "go":
            break
        if time.monotonic() > deadline:
            raise TimeoutError("no 'go' before the sync deadline")
        next_event(node, 0.02)
    count, rate = int(opts["count"]), float(opts.get("rate", 0.0))
    pack = msgpack.packb
    t0 = now()
    started = time.monotonic()
    for seq in range(count):
        if rate > 0:
            ahead = started + seq / rate - time.monotonic()
            if ahead > 0.001:
                time.sleep(ahead)
        node.shout(GROUP, pack(envelope(seq, text_of("m", seq))))
    node.shout(GROUP, END)
    emit("sent", count=count, t0=t0, t1=now())
    hold = time.monotonic() + float(opts.get("hold_s", 120.0))
    while time.monotonic() < hold and commands.poll() is None:
        next_event(node, 0.1)


def run_shout_recv(node: Pyre, opts: dict[str, Any]) -> None:
    node.join(GROUP)
    node.start()
    emit("ready")
    unpack = msgpack.unpackb
    expected = int(opts["count"])
    deadline = time.monotonic() + float(opts.get("deadline_s", 60.0))
    received, synced = 0, False
    seen: set[int] = set()
    t_first = t_last = 0.0
    idle_s = float(opts.get("idle_s", 3.0))
    while time.monotonic() < deadline:
        event = next_event(node, 0.2)
        if event is None or event.type != "SHOUT":
            if received and now() - t_last > idle_s:
                break
            continue
        payload = event.msg[0]
        if payload == PROBE:
            if not synced:
                synced = True
                emit("synced")
        elif payload == END:
            break
        else:
            index = index_of(unpack(payload)[5]["text"], "m")
            t_last = now()
            if received == 0:
                t_first = t_last
            received += 1
            if index is not None:
                seen.add(index)
            if received >= expected:
                break
    emit("result", received=received, unique=len(seen), t_first=t_first, t_last=t_last)
    CommandReader().get(timeout=float(opts.get("hold_s", 30.0)))


def run_whisper_echo(node: Pyre, opts: dict[str, Any]) -> None:
    commands = CommandReader()
    node.start()
    emit("ready")
    deadline = time.monotonic() + float(opts.get("hold_s", 120.0))
    while time.monotonic() < deadline and commands.poll() is None:
        event = next_event(node, 0.1)
        if event is not None and event.type == "WHISPER":
            node.whisper(event.peer_uuid, event.msg)


def run_whisper_ping(node: Pyre, opts: dict[str, Any]) -> None:
    node.start()
    target = str(opts["peer"])
    entered = wait_for(
        node, lambda e: e.type == "ENTER" and e.peer_name == target, 20.0, f"ENTER of {target}"
    )
    peer = uuid.UUID(bytes=entered.peer_uuid_bytes)
    pack, unpack = msgpack.packb, msgpack.unpackb
    rounds, warmup = int(opts["rounds"]), int(opts.get("warmup", 50))
    rtts: list[float] = []
    i = 0
    first_deadline = time.monotonic() + 10.0
    while i < warmup + rounds:
        started = time.perf_counter()
        node.whisper(peer, pack([1, "ping", bytes(32), i, now(), {"pad": b"x" * 60}]))
        # Until the peer has connected back to us it cannot answer: retry the first rounds.
        timeout = 0.5 if i == 0 else 5.0
        try:
            reply = wait_for(node, lambda e: e.type == "WHISPER", timeout, "WHISPER reply")
        except TimeoutError:
            if i == 0 and time.monotonic() < first_deadline:
                continue
            raise
        unpack(reply.msg[0])
        if i >= warmup:
            rtts.append((time.perf_counter() - started) * 1e6)
        i += 1
    emit("result", rtts_us=rtts)
    CommandReader().get(timeout=30.0)


def run_observer(node: Pyre, opts: dict[str, Any]) -> None:
    commands = CommandReader()
    node.start()
    emit("ready")
    deadline = time.monotonic() + float(opts.get("hold_s", 300.0))
    while time.monotonic() < deadline and commands.poll() is None:
        event = next_event(node, 0.05)
        if event is not None and event.type in ("ENTER", "EXIT"):
            emit(event.type.lower(), name=event.peer_name, t=now())


def run_idle(node: Pyre, opts: dict[str, Any]) -> None:
    commands = CommandReader()
    node.join(GROUP)
    node.start()
    wanted = int(opts["peers"])
    members: set[bytes] = set()
    ready = False
    reported = -1
    deadline = time.monotonic() + float(opts.get("hold_s", 900.0))
    while time.monotonic() < deadline and commands.poll() is None:
        # A wake-up a second to look for ``quit``: the rest is Pyre's own work.
        event = next_event(node, 1.0)
        if event is not None and event.type == "JOIN" and event.group == GROUP:
            members.add(event.peer_uuid_bytes)
        elif event is not None and event.type in ("LEAVE", "EXIT"):
            members.discard(event.peer_uuid_bytes)
        if not ready and len(members) >= wanted:
            ready = True
            emit("ready", members=len(members), t=now())
        elif not ready and len(members) != reported:  # how far it got, if it never gets there
            reported = len(members)
            emit("members", members=reported, t=now())


ROLES: dict[str, Callable[[Pyre, dict[str, Any]], None]] = {
    "shout_send": run_shout_send,
    "shout_recv": run_shout_recv,
    "whisper_echo": run_whisper_echo,
    "whisper_ping": run_whisper_ping,
    "observer": run_observer,
    "idle": run_idle,
}


def main() -> None:
    role, opts = sys.argv[1], json.loads(sys.argv[2])
    check_confined(str(opts.get("interface", "eth0")))
    if role == "newbie":
        emit("t0", t=now())
    node = Pyre(str(opts["name"]))
    try:
        if role == "newbie":
            node.start()
            emit("started", t=now())
            CommandReader().get(timeout=float(opts.get("hold_s", 60.0)))
        else:
            ROLES[role](node, opts)
    except Exception as exc:  # report, never hang the orchestrator
        log(f"{role} failed: {exc!r}")
        emit("error", error=f"{role}: {exc!r}")
    finally:
        node.stop()


if __name__ == "__main__":
    main()
