"""The results table (console and Markdown) and the machine it was measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata

from bench.lab import REPO

HEADERS = ("figure", "meshchat", "baseline(s)", "ratio", "target", "pass?")


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    meshchat: str
    baselines: str = "—"
    ratio: str = "—"
    target: str = "—"
    verdict: str = "n/a"  # pass, FAIL, n/a (no target or nothing measured)

    def cells(self) -> tuple[str, ...]:
        return (self.figure, self.meshchat, self.baselines, self.ratio, self.target, self.verdict)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "FAIL")


def text_table(rows: list[Row]) -> str:
    widths = [max(len(h), *(len(r.cells()[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r.cells(), widths, strict=True)) for r in rows]
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(esc(c) for c in r.cells()) + " |" for r in rows]
    return "\n".join(out)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(f.readline().split()[1])
        return f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "unknown"


def _commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "meshchat"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head or "unknown") + (" + uncommitted changes in meshchat/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(load_at_start: float) -> dict[str, str]:
    """What the figures were measured on; other work on the machine shows in the load."""
    import zmq

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} cores",
        "memory": _mem_gib(),
        "load average (1 min), start / end": f"{load_at_start:.2f} / {os.getloadavg()[0]:.2f}",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyzmq / libzmq": f"{zmq.__version__} / {zmq.zmq_version()}",
        "msgpack": _version("msgpack"),
        "zeromq-pyre": _version("zeromq-pyre"),
        "meshchat": _version("meshchat"),
    }
