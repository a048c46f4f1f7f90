"""Helpers shared by the orchestrator and the worker processes (stdlib only, cheap to import).

Workers talk to the orchestrator in JSON lines: events on stdout (``{"ev": ...}``), commands on
stdin (``{"cmd": ...}``). Diagnostics go to stderr, which the orchestrator sends to a log file.
"""

from __future__ import annotations

import json
import math
import queue
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

PAYLOAD_BYTES = 100
ROOM_ID = b"bench-room-id-16"
SENDER_ID = bytes(range(32))


def emit(ev: str, **fields: Any) -> None:
    """Write one event line for the orchestrator."""
    fields["ev"] = ev
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def now() -> float:
    """Wall-clock seconds; one clock for every process on the machine, in any namespace."""
    return time.time()


def text_of(prefix: str, index: int, size: int = PAYLOAD_BYTES) -> str:
    """A chat text of exactly ``size`` ASCII bytes that names its own index."""
    head = f"{prefix}{index:08d}"
    return head + "x" * max(0, size - len(head))


def index_of(text: str, prefix: str) -> int | None:
    """The index ``text_of`` put into a text with this prefix, or None."""
    if not text.startswith(prefix):
        return None
    digits = text[len(prefix) : len(prefix) + 8]
    return int(digits) if digits.isdigit() else None


def envelope(seq: int, text: str) -> list[Any]:
    """The shape of a chat envelope (version, type, sender, seq, time, body), for raw baselines."""
    return [1, "chat", SENDER_ID, seq, time.time(), {"room": ROOM_ID, "text": text}]


class CommandReader:
    """Reads command lines from stdin on a daemon thread; end of input reads as ``quit``."""

    def __init__(self) -> None:
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._run, name="stdin", daemon=True).start()

    def _run(self) -> None:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                self.queue.put(json.loads(line))
            except ValueError:
                log("bad command line:", line)
        self.queue.put({"cmd": "quit"})

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next command, or None when ``timeout`` passes first."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def poll(self) -> dict[str, Any] | None:
        """The next command if one is waiting."""
        return self.get(timeout=0) if not self.queue.empty() else None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
