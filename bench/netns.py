"""A minimal namespace lab for the benchmarks: hosts in `ip netns` joined by one bridge.

Every host gets ``eth0`` (10.77.0.N/24, broadcast 10.77.0.255) and ``lo``; the bridge lives in a
namespace of its own, so building the lab touches no interface of the namespace it runs in and
no benchmark packet can leave the lab. Namespace names carry the orchestrator's pid, so parallel
runs (and the test suite's own labs) never collide; a later run removes labs whose owner died.

Worker processes run in a host with ``ip netns exec`` (which execs, so the pid we hold is the
worker's own pid: ``kill -9`` hits the node, not a wrapper) and speak JSON lines (bench.common).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
PREFIX = "mcb"
SUBNET = "10.77.0"

Event = dict[str, Any]


class BenchError(RuntimeError):
    """A benchmark step failed (a worker died, a deadline passed, a tool is missing)."""


class Unavailable(BenchError):
    """What a figure needs does not exist yet (e.g. the product lacks an API)."""


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise BenchError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the orchestrator dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_labs() -> list[str]:
    """Delete namespaces left by benchmark runs whose process is gone; returns their names."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    removed = []
    for line in out.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{PREFIX}(\d+)-\w+", name)
        if match and not _pid_alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
            removed.append(name)
    return removed


def has(**fields: object) -> Callable[[Event], bool]:
    """A ``where`` test for ``Worker.expect``: the event carries these field values."""

    def test(event: Event) -> bool:
        return all(event.get(key) == value for key, value in fields.items())

    return test


class Worker:
    """One process in a host: JSON-line events out, commands in, stderr to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[str] = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            cwd=REPO,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._backlog: list[Event] = []
        self._ended = False
        self._closed = False
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, name=f"read-{name}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict):
                self._events.put(event)
            else:
                self._log.write(f"[stdout] {line}")
        self._events.put(None)

    def send(self, cmd: str, **fields: Any) -> None:
        """Send one command line; a worker that has gone away is not an error here."""
        fields["cmd"] = cmd
        if self.proc.stdin is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self.proc.stdin.write(json.dumps(fields) + "\n")
            self.proc.stdin.flush()

    def _pull(self, timeout: float) -> bool:
        try:
            event = self._events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        if event is None:
            self._ended = True
            return False
        self._backlog.append(event)
        return True

    def expect(
        self, ev: str, timeout: float, where: Callable[[Event], bool] | None = None
    ) -> Event:
        """Take the first event named ``ev`` (matching ``where``), waiting up to ``timeout`` s.

        An ``error`` or ``unavailable`` event from the worker, its exit, or the deadline raise
        BenchError with the tail of the worker's log.
        """
        deadline = time.monotonic() + timeout
        scanned = 0
        while True:
            while scanned < len(self._backlog):
                event = self._backlog[scanned]
                if event.get("ev") == ev and (where is None or where(event)):
                    del self._backlog[scanned]
                    return event
                if event.get("ev") == "unavailable" and ev != "unavailable":
                    del self._backlog[scanned]
                    raise Unavailable(str(event.get("why")))
                if event.get("ev") == "error" and ev != "error":
                    del self._backlog[scanned]
                    raise BenchError(f"{self.name}: {event.get('error')}")
                scanned += 1
            remaining = deadline - time.monotonic()
            if self._ended:
                raise BenchError(f"{self.name} exited (rc={self.proc.poll()}): {self.log_tail()}")
            if remaining <= 0:
                raise BenchError(f"{self.name}: no '{ev}' within {timeout:.1f} s")
            self._pull(min(remaining, 0.5))

    def call(self, cmd: str, timeout: float, **fields: Any) -> Event:
        """Send a command and wait for its ``done`` answer."""
        ident = f"{self.name}-{next(self._ids)}"
        self.send(cmd, id=ident, **fields)
        return self.expect("done", timeout, where=has(id=ident))

    def drain(self) -> list[Event]:
        """Every event received so far that no ``expect`` has taken (they stay available)."""
        while self._pull(0):
            pass
        return list(self._backlog)

    def log_tail(self, lines: int = 6) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker process itself (not its group): what ``kill -9 PID`` does."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def close(self, grace_s: float = 3.0) -> None:
        """Ask the worker to quit, then end its process group if it does not, and reap it."""
        if self._closed:
            return
        self._closed = True
        if self.proc.poll() is None:
            self.send("quit")
            with contextlib.suppress(OSError, ValueError):
                if self.proc.stdin:
                    self.proc.stdin.close()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=5.0)
        else:
            # The leader may be dead (kill -9) while threads or children of its group live on.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin:
                self.proc.stdin.close()
        self._log.close()


class Host:
    """One namespace with ``eth0`` on the lab's bridge."""

    def __init__(self, lab: Lab, index: int) -> None:
        self.lab = lab
        self.index = index
        self.ns = f"{lab.prefix}-h{index}"
        self.ip = f"{SUBNET}.{index + 1}"

    def spawn(self, name: str, module: str, *args: str) -> Worker:
        """Run ``python -m bench.<module> args...`` in this host."""
        python = [sys.executable, "-u", "-m", f"bench.{module}"]
        argv = ["ip", "netns", "exec", self.ns, *python, *args]
        worker = Worker(name, argv, self.lab.log_dir / f"{name}.log")
        self.lab.workers.append(worker)
        return worker


class Lab:
    """``n_hosts`` namespaces on one bridge; a context manager that always cleans up."""

    def __init__(self, n_hosts: int, log_dir: Path) -> None:
        if not 1 <= n_hosts <= 250:
            raise ValueError("n_hosts must be within 1..250")
        self.prefix = f"{PREFIX}{os.getpid()}"
        self.switch_ns = f"{self.prefix}-sw"
        self.hosts = [Host(self, i) for i in range(n_hosts)]
        self.log_dir = log_dir
        self.workers: list[Worker] = []
        self._made: list[str] = []

    def __enter__(self) -> Lab:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        _ip("netns", "add", self.switch_ns)
        self._made.append(self.switch_ns)
        _ip("-n", self.switch_ns, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.switch_ns, "link", "set", "br0", "up")
        for host in self.hosts:
            _ip("netns", "add", host.ns)
            self._made.append(host.ns)
            port = f"p{host.index}"
            # Created inside the host, so no interface ever appears in the caller's namespace.
            _ip("-n", host.ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                "netns", self.switch_ns)
            _ip("-n", self.switch_ns, "link", "set", port, "master", "br0", "up")
            _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "broadcast", f"{SUBNET}.255",
                "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "lo", "up")
            _ip("-n", host.ns, "link", "set", "eth0", "up")
            _ip("-n", host.ns, "route", "add", "224.0.0.0/4", "dev", "eth0")

    def stop_workers(self) -> None:
        """Close every worker started so far (in parallel: each may take its grace period)."""
        workers, self.workers = self.workers, []
        threads = [threading.Thread(target=w.close, daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15.0)

    def close(self) -> None:
        self.stop_workers()
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self._made.clear()
