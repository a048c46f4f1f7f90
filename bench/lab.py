"""The benchmarks' side of the namespace lab: ``tests.net.netlab`` plus the workers' conventions.

The lab itself (hosts as network namespaces on one bridge, cleanup of stale namespaces,
process handling) is ``tests/net/netlab.py``, the same one the network tests use. What is
added here: a ``Worker`` is a ``JsonProc`` that prints events ``{"ev": ...}`` and reads
commands ``{"cmd": ...}`` (``bench.common``), whose failures are ``BenchError``s, whose stderr
goes to ``<log dir>/<name>.log``; ``spawn_worker`` starts ``python -m bench.<module>`` in a host.

Processes start with ``ip netns exec`` and ``setpriv --pdeathsig`` (both exec), so the pid held
is the worker's own: ``kill -9`` hits the node, not a wrapper.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from tests.net.netlab import REPO_ROOT, ExpectError, Host, JsonProc, Lab, remove_stale_namespaces

__all__ = [
    "REPO",
    "BenchError",
    "Event",
    "Host",
    "Lab",
    "Unavailable",
    "Worker",
    "has",
    "remove_stale_namespaces",
    "spawn_worker",
    "stop_workers",
]

REPO = REPO_ROOT
QUIT_GRACE_S = 3.0

Event = dict[str, Any]


class BenchError(RuntimeError):
    """A benchmark step failed (a worker died, a deadline passed, a tool is missing)."""


class Unavailable(BenchError):
    """What a figure needs does not exist yet (e.g. the product lacks an API)."""


def has(**fields: object) -> Callable[[Event], bool]:
    """A ``where`` test for ``Worker.expect_event``: the event carries these field values."""

    def test(event: Event) -> bool:
        return all(event.get(key) == value for key, value in fields.items())

    return test


class Worker(JsonProc):
    """One benchmark process in a host: JSON-line events out, commands in."""

    _ids = itertools.count(1)

    @property
    def name(self) -> str:
        return self.label

    def send_cmd(self, cmd: str, **fields: Any) -> None:
        """Send one command line; a worker that has gone away is not an error here."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ExpectError):
            self.send_json({**fields, "cmd": cmd})

    def expect_event(
        self, ev: str, timeout: float, where: Callable[[Event], bool] | None = None
    ) -> Event:
        """Take the first event named ``ev`` (matching ``where``), waiting up to ``timeout`` s.

        An ``error`` or ``unavailable`` event from the worker, its exit, or the deadline raise
        ``BenchError`` (``Unavailable``) with the tails of the worker's output.
        """

        def wanted(event: Event) -> bool:
            kind = event.get("ev")
            if kind == ev:
                return where is None or where(event)
            return kind in ("error", "unavailable")

        try:
            event = self.wait_json(wanted, timeout=timeout, take=True)
        except ExpectError as exc:
            raise BenchError(f"{self.name}: no '{ev}' within {timeout:.1f} s\n{exc}") from None
        if event.get("ev") == ev:
            return event
        if event.get("ev") == "unavailable":
            raise Unavailable(str(event.get("why")))
        raise BenchError(f"{self.name}: {event.get('error')}")

    def call(self, cmd: str, timeout: float, **fields: Any) -> Event:
        """Send a command and wait for its ``done`` answer (``expect_event``)."""
        ident = f"{self.name}-{next(self._ids)}"
        self.send_cmd(cmd, id=ident, **fields)
        return self.expect_event("done", timeout, where=has(id=ident))

    def drain(self) -> list[Event]:
        """Every event received so far that no ``expect`` has taken (they stay available)."""
        return self.untaken()

    def ask_to_quit(self) -> None:
        """``quit`` and end of input: the worker shuts down on its own."""
        self.send_cmd("quit")
        self.close_stdin()

    def close(self, grace_s: float = QUIT_GRACE_S) -> None:
        """Ask the worker to quit; SIGTERM, then SIGKILL, if it does not within ``grace_s``."""
        self.ask_to_quit()
        with contextlib.suppress(Exception):
            self.popen.wait(grace_s)
        self.terminate()


def spawn_worker(host: Host, name: str, module: str, *args: str) -> Worker:
    """Run ``python -m bench.<module> ARGS`` in ``host``; stderr to ``<lab workdir>/<name>.log``."""
    return host.spawn_module(f"bench.{module}", *args, kind=Worker, label=name,
                             log_path=host.lab.workdir / f"{name}.log")


def stop_workers(lab: Lab, grace_s: float = QUIT_GRACE_S) -> None:
    """End every process of the lab, in parallel: ``quit`` first, SIGTERM/SIGKILL after."""
    for proc in lab.procs:
        if isinstance(proc, Worker):
            proc.ask_to_quit()
    lab.stop_procs(wait_s=grace_s)
