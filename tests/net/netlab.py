"""A small network lab: hosts as network namespaces joined by one Linux bridge.

    with Lab(3) as lab:
        a = lab.hosts[0].spawn(meshchat_argv("start", "--name", "alice"))
        a.expect(r"\\* .*ready", timeout=10)
        a.send("hello")

Layout of ``Lab(n)`` (``P`` is the lab's prefix, ``x`` a per-lab number)::

    netns P-br:  br0 (bridge, multicast snooping off) ── v0, v1, … (veth ends)
    netns P-h<i>: eth0 = 10.x.0.<i+1>/24 (veth peer of v<i>), lo up with multicast,
                  route 224.0.0.0/4 dev eth0 (mDNS 224.0.0.251:5353 goes to the bridge)

``eth0`` has a broadcast address too (``10.x.0.255``: Pyre's beacons in ``bench/`` use it).

The bridge lives in a namespace of its own, so the namespace that runs the tests keeps only
``lo``. Names carry a per-run prefix (``ml<pid>-``): namespaces of a run whose process is gone
are removed when the next lab starts. Every lab cleans up on exit, on error and at interpreter
exit; processes spawned from the main thread also die with the test process (``PDEATHSIG``).

Processes: ``Host.spawn`` gives a ``Proc`` (line-based stdio, ``expect``); a ``JsonProc`` speaks
JSON lines (``send_json``, ``wait_json``), which the agents in ``tests/net`` (``api_agent``,
``hostile_agent``) and the benchmark workers in ``bench/`` use. ``Host.spawn_module`` runs
``python -m MODULE`` with the repository importable. ``Lab.stop_procs`` ends a batch of
processes at once (the benchmarks do between figures); ``Lab.close`` ends the rest.

This one lab serves both ``tests/net`` and ``bench/`` (``bench/lab.py`` adds only the
benchmark workers' conventions on top).

No wait here sleeps a fixed time except ``Proc.expect_no`` without a marker: everything else
waits for an event with a deadline. ``MESHCHAT_TEST_TIMEOUT_SCALE`` multiplies every deadline
(slow CI machines).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

__all__ = [
    "Capture",
    "ExpectError",
    "Host",
    "JsonProc",
    "Lab",
    "LabError",
    "Proc",
    "meshchat_argv",
    "remove_stale_namespaces",
    "run_prefix",
    "scaled",
    "subset_match",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
TAIL_LINES = 40
KILL_GRACE_S = 2.0
# ``ml<pid>-``: this lab; ``mcb<pid>-``: the benchmarks' own lab before it moved here.
_NAME_RE = re.compile(r"^(?:ml|mcb)(\d+)-")
_lab_numbers = itertools.count()
_live_labs: set[Lab] = set()
_live_lock = threading.Lock()


class LabError(RuntimeError):
    """The lab could not be built, or a lab command failed."""


class ExpectError(AssertionError):
    """A process did not print what a test waited for (or printed what it must not)."""


def scaled(seconds: float) -> float:
    """A deadline stretched by ``MESHCHAT_TEST_TIMEOUT_SCALE`` (default 1)."""
    return seconds * float(os.environ.get("MESHCHAT_TEST_TIMEOUT_SCALE", "1"))


def run_prefix() -> str:
    """The prefix of every namespace this process creates: ``ml<pid>-``."""
    return f"ml{os.getpid()}-"


def meshchat_argv(*args: str) -> list[str]:
    """The command line of our CLI run by the current interpreter: ``python -m meshchat …``."""
    return [sys.executable, "-m", "meshchat", *args]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def _list_namespaces() -> list[str]:
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace(ns: str) -> None:
    """SIGKILL whatever still runs in ``ns`` and delete it."""
    pids = _ip("netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", ns, check=False)


def remove_stale_namespaces(prefix: str | None = None) -> list[str]:
    """Delete namespaces left by runs that died; with ``prefix``, every namespace under it.

    A namespace ``ml<pid>-…`` is stale when process ``pid`` no longer exists; namespaces of live
    runs (another pytest worker, another checkout) are left alone.
    """
    removed = []
    for ns in _list_namespaces():
        if prefix is not None:
            stale = ns.startswith(prefix)
        else:
            match = _NAME_RE.match(ns)
            stale = match is not None and not _pid_alive(int(match.group(1)))
        if stale:
            _kill_namespace(ns)
            removed.append(ns)
    return removed


def _tail(lines: Sequence[str], n: int = TAIL_LINES) -> str:
    shown = lines[-n:]
    return "\n".join(f"  | {line}" for line in shown) if shown else "  | (nothing)"


class Proc:
    """A process in a namespace with piped stdio; stdout and stderr are collected by threads.

    ``expect`` consumes stdout lines from a cursor, so each call waits for a line printed after
    the one the previous call matched. With ``log_path``, stderr is also written to that file
    as it comes (the benchmarks keep their workers' logs).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        ns: str,
        label: str,
        env: dict[str, str],
        cwd: str | os.PathLike[str] | None,
        log_path: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.ns = ns
        self.label = label
        self.cursor = 0
        self.log_path = log_path
        self._out: list[str] = []
        self._err: list[str] = []
        self._out_closed = False
        self._cond = threading.Condition()
        self._log: IO[str] | None = (
            open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the reader
            if log_path is not None else None
        )
        command = ["ip", "netns", "exec", ns]
        if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
            # Dies with the test process even when that is SIGKILLed. Only from the main
            # thread: the signal fires when the *thread* that forked exits.
            command += ["setpriv", "--pdeathsig", "KILL", "--"]
        try:
            self.popen = subprocess.Popen(
                [*command, *self.argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            if self._log is not None:
                self._log.close()
            raise
        self.pid = self.popen.pid
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.popen.stdout, self._out, True),
                name=f"netlab-out-{label}", daemon=True,
            ),
            threading.Thread(
                target=self._read, args=(self.popen.stderr, self._err, False),
                name=f"netlab-err-{label}", daemon=True,
            ),
        ]
        for reader in self._readers:
            reader.start()

    def __repr__(self) -> str:
        return f"<Proc {self.label} pid={self.pid} rc={self.popen.poll()} argv={self.argv!r}>"

    def _read(self, stream: object, sink: list[str], is_stdout: bool) -> None:
        assert stream is not None
        log = None if is_stdout else self._log
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if log is not None:
                with contextlib.suppress(OSError, ValueError):
                    log.write(line + "\n")
                    log.flush()
            with self._cond:
                sink.append(line)
                if is_stdout:
                    self._on_stdout(line)
                self._cond.notify_all()
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()
        with self._cond:
            if is_stdout:
                self._out_closed = True
            self._cond.notify_all()

    def _on_stdout(self, line: str) -> None:
        """Called (holding the condition) for every stdout line; subclasses parse it."""

    # -- output --------------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        """Every stdout line so far."""
        with self._cond:
            return list(self._out)

    @property
    def err_lines(self) -> list[str]:
        """Every stderr line so far."""
        with self._cond:
            return list(self._err)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def skip(self) -> None:
        """Move the cursor past every line printed so far."""
        with self._cond:
            self.cursor = len(self._out)

    def describe(self, headline: str) -> str:
        """``headline`` followed by the process and the tails of its stdout and stderr."""
        with self._cond:
            out, err, cursor = list(self._out), list(self._err), self.cursor
        rc = self.popen.poll()
        state = "running" if rc is None else f"exited rc={rc}"
        return (
            f"{headline}\n{self.label} (pid {self.pid}, {state}): {' '.join(self.argv)}\n"
            f"--- stdout: last {min(TAIL_LINES, len(out))} of {len(out)} lines, "
            f"cursor at {cursor} ---\n{_tail(out)}\n"
            f"--- stderr: last {min(TAIL_LINES, len(err))} of {len(err)} lines ---\n{_tail(err)}"
        )

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        """Wait for a stdout line after the cursor where ``pattern`` is found (``re.search``).

        The cursor moves past the matching line. Raises ``ExpectError`` with the tails of stdout
        and stderr when the deadline passes or stdout closes first.
        """
        __tracebackhide__ = True
        regex = re.compile(pattern)
        deadline = time.monotonic() + scaled(timeout)
        with self._cond:
            while True:
                while self.cursor < len(self._out):
                    line = self._out[self.cursor]
                    self.cursor += 1
                    match = regex.search(line)
                    if match:
                        return match
                if self._out_closed:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            closed = self._out_closed
        if closed:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(1.0)
            raise ExpectError(self.describe(f"expect({regex.pattern!r}): stdout closed first"))
        raise ExpectError(
            self.describe(f"expect({regex.pattern!r}) timed out after {scaled(timeout):.1f}s")
        )

    def expect_no(
        self,
        pattern: str | re.Pattern[str],
        within: float = 2.0,
        until: str | re.Pattern[str] | None = None,
    ) -> None:
        """Fail if a stdout line after the cursor matches ``pattern``.

        With ``until`` (preferred): wait like ``expect(until, within)`` for a marker line and
        check the lines before it; the cursor moves past the marker. Without: watch for
        ``within`` seconds (a fixed wait — use sparingly); the cursor stays.
        """
        __tracebackhide__ = True
        regex = re.compile(pattern)
        start = self.cursor
        if until is not None:
            self.expect(until, timeout=within)
            end = self.cursor - 1
        else:
            deadline = time.monotonic() + scaled(within)
            with self._cond:
                while not self._out_closed and (left := deadline - time.monotonic()) > 0:
                    if any(regex.search(line) for line in self._out[start:]):
                        break
                    self._cond.wait(left)
            end = len(self.lines)
        with self._cond:
            seen = self._out[start:end]
        for line in seen:
            if regex.search(line):
                raise ExpectError(self.describe(f"expect_no({regex.pattern!r}) saw: {line!r}"))

    # -- input and control ---------------------------------------------------------------

    def send(self, line: str) -> None:
        """Write one line (a message or a /command) to stdin."""
        __tracebackhide__ = True
        stdin = self.popen.stdin
        assert stdin is not None
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise ExpectError(self.describe(f"send({line!r}): stdin is closed ({exc})")) from exc

    def close_stdin(self) -> None:
        if self.popen.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.popen.stdin.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group (the process and anything it started)."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self) -> None:
        """SIGSTOP: the process stays, but reads and answers nothing (a slow consumer)."""
        self.kill(signal.SIGSTOP)

    def cont(self) -> None:
        self.kill(signal.SIGCONT)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for exit; the return code. Raises ``ExpectError`` on timeout."""
        __tracebackhide__ = True
        try:
            rc = self.popen.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            headline = f"did not exit within {scaled(timeout):.1f}s"
            raise ExpectError(self.describe(headline)) from None
        for reader in self._readers:
            reader.join(1.0)
        return rc

    def terminate(self, grace: float = KILL_GRACE_S) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; closes the pipes."""
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            self.kill(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(5.0)
        else:
            self.kill(signal.SIGKILL)  # leftovers in its group
        self.close_stdin()
        for reader in self._readers:
            reader.join(1.0)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


JsonObject = dict[str, Any]
JsonMatch = Mapping[str, Any] | Callable[[JsonObject], bool]


def subset_match(obj: Any, want: Mapping[str, Any]) -> bool:
    """Whether ``obj`` (a decoded JSON object) holds every item of ``want``; a dict value
    matches a nested object by its own items (``sender={"name": "bob"}``)."""
    if not isinstance(obj, dict):
        return False
    for key, value in want.items():
        if key not in obj:
            return False
        have = obj[key]
        if isinstance(value, Mapping):
            if not subset_match(have, value):
                return False
        elif have != value:
            return False
    return True


class JsonProc(Proc):
    """A ``Proc`` that speaks JSON lines: one object per stdin line to it, one per stdout line
    from it. Stdout lines that are not a JSON object stay in ``lines`` only.

    ``wait_json(match)`` finds an object (a dict ``match`` is a subset of it, see
    ``subset_match``; or ``match(obj)`` is true), waiting with a deadline. ``since`` (a
    ``json_mark()``) skips objects printed before; ``take=True`` finds only objects no earlier
    ``take`` returned, and marks the one found taken (request/reply matching).
    """

    def __init__(self, argv: Sequence[str], **kwargs: Any) -> None:
        self._objects: list[JsonObject] = []
        self._taken: set[int] = set()
        super().__init__(argv, **kwargs)

    def _on_stdout(self, line: str) -> None:
        if not line.startswith("{"):
            return
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if isinstance(obj, dict):
            self._objects.append(obj)

    def send_json(self, obj: Mapping[str, Any]) -> None:
        """Write ``obj`` as one line to stdin (``ExpectError`` if stdin is closed)."""
        __tracebackhide__ = True
        self.send(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))

    @property
    def objects(self) -> list[JsonObject]:
        """Every JSON object printed so far, in order."""
        with self._cond:
            return list(self._objects)

    def json_mark(self) -> int:
        """A position among the objects, for ``since=``."""
        with self._cond:
            return len(self._objects)

    def untaken(self) -> list[JsonObject]:
        """Every object no ``take`` has returned yet."""
        with self._cond:
            return [o for i, o in enumerate(self._objects) if i not in self._taken]

    def wait_json(
        self, match: JsonMatch, *, since: int = 0, timeout: float = 10.0, take: bool = False
    ) -> JsonObject:
        """The first object at or after ``since`` that ``match`` accepts, waiting for it.

        Raises ``ExpectError`` with the tails of stdout and stderr when the deadline passes or
        stdout closes first.
        """
        __tracebackhide__ = True
        test: Callable[[JsonObject], bool] = (
            match if callable(match) else lambda obj: subset_match(obj, match)
        )
        deadline = time.monotonic() + scaled(timeout)
        scanned = since
        with self._cond:
            while True:
                while scanned < len(self._objects):
                    index, obj = scanned, self._objects[scanned]
                    scanned += 1
                    if take and index in self._taken:
                        continue
                    if test(obj):
                        if take:
                            self._taken.add(index)
                        return obj
                if self._out_closed:
                    headline = "stdout closed first"
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    headline = f"timed out after {scaled(timeout):.1f}s"
                    break
                self._cond.wait(remaining)
        if self._out_closed:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(1.0)
        raise ExpectError(self.describe(f"{self.label}: wait_json({match!r}): {headline}"))


P = TypeVar("P", bound=Proc)


_PING_SOURCE = r"""
import os, select, socket, struct, sys, time

def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

addr, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
ident = os.getpid() & 0xFFFF
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for seq in range(1, 1000):
    body = b"netlab-ping"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, checksum(header + body), ident, seq) + body
    sent = time.monotonic()
    sock.sendto(packet, (addr, 0))
    retry = min(sent + 0.2, deadline)
    while (left := retry - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
        reply, source = sock.recvfrom(2048)
        icmp = reply[(reply[0] & 0x0F) * 4:]
        if source[0] == addr and icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
            print(time.monotonic() - sent)
            sys.exit(0)
    if time.monotonic() >= deadline:
        break
sys.exit(f"no echo reply from {addr}")
"""


class Host:
    """One namespace of a lab: ``ns``, ``ifname`` (eth0), ``addr`` (no mask), ``home``."""

    def __init__(self, lab: Lab, index: int, ns: str, addr: str, home: Path) -> None:
        self.lab = lab
        self.index = index
        self.name = f"h{index}"
        self.ns = ns
        self.addr = addr
        self.ifname = "eth0"
        self.bridge_port = f"v{index}"
        self.home = home

    def __repr__(self) -> str:
        return f"<Host {self.name} ns={self.ns} addr={self.addr}>"

    @property
    def cidr(self) -> str:
        return f"{self.addr}/24"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of processes on this host: own HOME and XDG dirs (so each host has
        its own meshchat data dir and identity), unbuffered Python, ``extra`` on top."""
        env = dict(os.environ)
        pythonpath = env.get("PYTHONPATH")
        env.update(
            PYTHONUNBUFFERED="1",
            PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(REPO_ROOT),
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            MESHCHAT_LAB_HOST=self.name,
        )
        env.update(extra or {})
        return env

    def spawn(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> Proc:
        """Start ``argv`` in this namespace; ``env`` is added to ``Host.env()``."""
        return self.spawn_as(Proc, argv, env=env, cwd=cwd)

    def spawn_as(
        self,
        kind: type[P],
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        label: str | None = None,
        log_path: Path | None = None,
    ) -> P:
        """``spawn`` as a ``Proc`` subclass (``JsonProc``, ...), optionally with a ``label``
        (default ``h<i>#<n>``) and a stderr log file."""
        number = next(self.lab.proc_numbers)
        proc = kind(
            argv, ns=self.ns, label=label or f"{self.name}#{number}", env=self.env(env),
            cwd=cwd if cwd is not None else self.home, log_path=log_path,
        )
        self.lab.procs.append(proc)
        return proc

    def spawn_module(
        self,
        module: str,
        *args: str,
        kind: type[P],
        env: dict[str, str] | None = None,
        label: str | None = None,
        log_path: Path | None = None,
    ) -> P:
        """``python -m MODULE ARGS`` on this host (the repository root is on ``PYTHONPATH``)."""
        return self.spawn_as(kind, [sys.executable, "-m", module, *args], env=env,
                             label=label, log_path=log_path)

    def spawn_meshchat(
        self, *args: str, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> Proc:
        """``python -m meshchat ARGS`` on this host."""
        return self.spawn(meshchat_argv(*args), env=env, cwd=cwd)

    def spawn_python(
        self,
        code_or_script: str | os.PathLike[str],
        *args: str,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> Proc:
        """Run a Python script file, or source code (``python -c``), in this namespace."""
        is_file = isinstance(code_or_script, os.PathLike) or (
            "\n" not in code_or_script
            and len(code_or_script) < 4096
            and code_or_script.endswith(".py")
            and Path(code_or_script).is_file()
        )
        head = [os.fspath(code_or_script)] if is_file else ["-c", str(code_or_script)]
        return self.spawn([sys.executable, *head, *args], env=env, cwd=cwd)

    def run(
        self,
        cmd: str | Sequence[str],
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in this namespace (a string goes through ``sh -c``)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True,
            env=self.env(), timeout=scaled(timeout), input=input, check=False,
        )
        if check and result.returncode != 0:
            raise LabError(
                f"{self.name}: {argv!r} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def ping(self, addr: str, timeout: float = 5.0) -> float:
        """One ICMP echo to ``addr`` (retried until ``timeout``); the round trip in seconds.

        Done in Python with a raw socket so the lab needs no ``ping`` binary.
        """
        result = self.run([sys.executable, "-c", _PING_SOURCE, addr, str(scaled(timeout))],
                          check=False, timeout=timeout + 5)
        if result.returncode != 0:
            raise LabError(f"{self.name} ({self.addr}) cannot ping {addr}: {result.stderr.strip()}")
        return float(result.stdout)

    def link_down(self) -> None:
        """Unplug the cable: the bridge side of this host's veth goes down (eth0 loses carrier)."""
        _ip("-n", self.lab.bridge_ns, "link", "set", self.bridge_port, "down")

    def link_up(self) -> None:
        _ip("-n", self.lab.bridge_ns, "link", "set", self.bridge_port, "up")


def _count_pcap_packets(data: bytes) -> int:
    if len(data) < 24:
        return 0
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise LabError(f"not a pcap file (magic {magic.hex()})")
    count, offset = 0, 24
    while offset + 16 <= len(data):
        (incl_len,) = struct.unpack_from(endian + "I", data, offset + 8)
        offset += 16 + incl_len
        if offset > len(data):
            break
        count += 1
    return count


class Capture:
    """tcpdump on the lab's bridge, written to a pcap file.

    After the ``with`` block (or ``stop()``): ``contains(b"text")`` searches the raw pcap bytes,
    ``packets`` counts the frames. Assert ``packets > 0`` beside a "secret never on the wire"
    check so a broken capture cannot pass it vacuously.
    """

    def __init__(self, lab: Lab, path: Path, bpf_filter: str | None = None) -> None:
        self.lab = lab
        self.path = path
        self.bpf_filter = bpf_filter
        self.kernel_drops: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: list[str] = []

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        argv = ["ip", "netns", "exec", self.lab.bridge_ns, "tcpdump", "-i", "br0", "-n", "-s", "0",
                "-B", "32768", "-U", "--immediate-mode", "-Z", "root", "-w", str(self.path)]
        if self.bpf_filter:
            argv.append(self.bpf_filter)
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        ready = threading.Event()

        def read_stderr() -> None:
            assert self._proc is not None and self._proc.stderr is not None
            for raw in iter(self._proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                self._stderr.append(line)
                if "listening on" in line:
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read_stderr, name="netlab-tcpdump", daemon=True)
        self._reader.start()
        if not ready.wait(scaled(timeout)) or self._proc.poll() is not None:
            self.stop()
            raise LabError("tcpdump did not start:\n" + "\n".join(self._stderr))

    def stop(self) -> None:
        """Stop tcpdump (SIGINT flushes the file). Idempotent."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reader.join(2.0)
        for line in self._stderr:
            match = re.match(r"(\d+) packets? dropped by kernel", line)
            if match:
                self.kernel_drops = int(match.group(1))

    @property
    def data(self) -> bytes:
        """The raw pcap file."""
        return self.path.read_bytes() if self.path.exists() else b""

    @property
    def packets(self) -> int:
        return _count_pcap_packets(self.data)

    def contains(self, needle: bytes) -> bool:
        """Whether ``needle`` occurs anywhere in the captured bytes (headers included)."""
        return needle in self.data


def _room_for_neighbours(n_hosts: int) -> None:
    """Check that the kernel's ARP table holds a full mesh of ``n_hosts`` namespaces.

    That table is one for the whole machine, shared by every namespace, with a hard limit
    (``gc_thresh3``) of 1,024 entries by default: a mesh of 33 or more namespaces needs more
    (n·(n−1)), and past the limit the kernel logs "neighbor table overflow" and sends no ARP,
    so TCP connects to the unresolved peers sit in SYN-SENT for good — a 40-node lab formed a
    mesh of ~27 peers a node and a 64-node room never formed. ``scripts/in-netns.sh`` raises
    it before it enters the suite's namespace (the knob exists only in the machine's first
    one); here, where it can be read, a lab too big for it is refused with that reason.
    """
    needed = n_hosts * n_hosts + 256  # each host's peers, the bridge, and other labs' hosts
    path = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
    try:
        limit = int(path.read_text())
    except (OSError, ValueError):
        return  # not visible from this namespace: in-netns.sh raised it
    if limit < needed:
        raise LabError(f"the kernel's ARP table holds {limit} entries; {n_hosts} hosts need "
                       f"{needed}: sysctl -w net.ipv4.neigh.default.gc_thresh3={2 * needed}"
                       " (scripts/in-netns.sh does)")


class Lab:
    """``n_hosts`` namespaces on one bridge. A context manager; ``close()`` is idempotent.

    ``prefix`` names every namespace (default ``ml<pid>-<k>-``); namespaces that already carry
    it are taken as leftovers and removed first. ``workdir`` holds each host's home and the
    pcaps (default: a temporary dir removed on close). On close, processes get SIGTERM and,
    ``kill_grace_s`` later, SIGKILL.
    """

    def __init__(
        self,
        n_hosts: int,
        prefix: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        kill_grace_s: float = KILL_GRACE_S,
    ) -> None:
        if not 1 <= n_hosts <= 250:
            raise ValueError("n_hosts must be between 1 and 250")
        if prefix is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", prefix):
            raise ValueError(f"bad namespace prefix {prefix!r}")
        number = next(_lab_numbers)
        self.n_hosts = n_hosts
        self.prefix = prefix if prefix is not None else f"{run_prefix()}{number}-"
        self.subnet = 100 + number % 150
        self.bridge_ns = f"{self.prefix}br"
        self.hosts: list[Host] = []
        self.procs: list[Proc] = []
        self.proc_numbers = itertools.count()
        self._captures: list[Capture] = []
        self._namespaces: list[str] = []
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="netlab-") if workdir is None else workdir)
        self.kill_grace_s = kill_grace_s
        self.setup_s = 0.0
        self._closed = False
        self._switches: set[str] = set()
        self._split_ports: set[str] = set()

    def __repr__(self) -> str:
        return f"<Lab {self.prefix} hosts={len(self.hosts)}>"

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)

    def start(self) -> None:
        started = time.monotonic()
        with _live_lock:
            _live_labs.add(self)
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            remove_stale_namespaces()
            remove_stale_namespaces(self.prefix)
            _room_for_neighbours(self.n_hosts)
            self._add_ns(self.bridge_ns)
            br = ["-n", self.bridge_ns]
            # Snooping off: the bridge floods every multicast group to every port, mDNS
            # included, without waiting for IGMP reports or a querier.
            _ip(*br, "link", "add", "br0", "type", "bridge",
                "mcast_snooping", "0", "stp_state", "0", "forward_delay", "0")
            _ip(*br, "link", "set", "br0", "up")
            for i in range(self.n_hosts):
                ns = f"{self.prefix}h{i}"
                addr = f"10.{self.subnet}.0.{i + 1}"
                home = self.workdir / f"h{i}"
                home.mkdir(parents=True, exist_ok=True)
                self._add_ns(ns)
                host = Host(self, i, ns, addr, home)
                _ip("link", "add", "eth0", "netns", ns, "type", "veth",
                    "peer", "name", host.bridge_port, "netns", self.bridge_ns)
                _ip(*br, "link", "set", host.bridge_port, "master", "br0", "up")
                _ip("-n", ns, "link", "set", "lo", "up", "multicast", "on")
                _ip("-n", ns, "addr", "add", host.cidr, "broadcast", "+", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up", "multicast", "on")
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
                self.hosts.append(host)
        except BaseException:
            self.close()
            raise
        self.setup_s = time.monotonic() - started

    def capture(self, bpf_filter: str | None = None) -> Capture:
        """A ``Capture`` of everything crossing the bridge; use it as a context manager."""
        capture = Capture(self, self.workdir / f"capture-{len(self._captures)}.pcap", bpf_filter)
        self._captures.append(capture)
        return capture

    @contextlib.contextmanager
    def partitioned(self, *hosts: Host) -> Iterator[None]:
        """Cut ``hosts`` off the bridge for the duration of the block."""
        for host in hosts:
            host.link_down()
        try:
            yield
        finally:
            for host in hosts:
                host.link_up()

    def split(self, *groups: Sequence[Host]) -> None:
        """Cut the LAN between switches: each group of hosts keeps its own links (every host's
        cable stays up, no carrier is lost) but hears nothing from the other groups, as if the
        trunk between their switches were cut. The first group (and every host in no group)
        stays on ``br0``; group i moves to a switch of its own, ``br<i>``, made on first use."""
        self.heal()
        br = ["-n", self.bridge_ns]
        for i, group in enumerate(groups[1:], start=1):
            name = f"br{i}"
            if name not in self._switches:
                _ip(*br, "link", "add", name, "type", "bridge",
                    "mcast_snooping", "0", "stp_state", "0", "forward_delay", "0")
                _ip(*br, "link", "set", name, "up")
                self._switches.add(name)
            for host in group:
                _ip(*br, "link", "set", host.bridge_port, "master", name)
                self._split_ports.add(host.bridge_port)

    def heal(self) -> None:
        """Undo ``split``: every port back on the one switch."""
        for port in sorted(self._split_ports):
            _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
        self._split_ports.clear()

    def stop_procs(
        self, procs: Iterable[Proc] | None = None, *, wait_s: float = 0.0,
        grace: float | None = None,
    ) -> None:
        """End ``procs`` (default: every process of the lab) together and forget them.

        First up to ``wait_s`` for them to exit by themselves (after the caller asked them to),
        then SIGTERM to all at once and, ``grace`` (default ``kill_grace_s``) later, SIGKILL.
        """
        chosen = list(self.procs if procs is None else procs)
        deadline = time.monotonic() + wait_s
        for proc in chosen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
        for proc in chosen:
            if proc.popen.poll() is None:
                proc.kill(signal.SIGTERM)
                proc.kill(signal.SIGCONT)
        deadline = time.monotonic() + (self.kill_grace_s if grace is None else grace)
        for proc in chosen:
            proc.terminate(grace=max(0.0, deadline - time.monotonic()))
        ended = set(map(id, chosen))
        self.procs[:] = [p for p in self.procs if id(p) not in ended]

    def close(self) -> None:
        """Stop captures, end every process (SIGTERM, SIGKILL after a grace period), delete the
        namespaces (their veths and the bridge go with them) and the work dir."""
        if self._closed:
            return
        self._closed = True
        for capture in self._captures:
            with contextlib.suppress(Exception):
                capture.stop()
        self.stop_procs()
        for ns in reversed(self._namespaces):
            _kill_namespace(ns)
        self._namespaces.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        with _live_lock:
            _live_labs.discard(self)


@atexit.register
def _close_live_labs() -> None:
    with _live_lock:
        labs = list(_live_labs)
    for lab in labs:
        with contextlib.suppress(Exception):
            lab.close()
