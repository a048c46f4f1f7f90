"""File transfers in the interface (issue 7): the commands and the lines they print.

Line mode prints an offer as ``* alice offers talk.pdf (12.3 MiB) — /accept 3 or /decline 3``
and a progress line at every 10%. Uses only the public API (``meshchat``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from meshchat import (
    Event,
    FileOffered,
    PeerNotFound,
    Transfer,
    TransferDone,
    TransferFailed,
    TransferProgress,
)
from meshchat import commands as c

__all__ = ["FilesNode", "TransferLines", "human_size", "run", "transfer_event"]


class FilesNode(Protocol):
    async def send_file(self, to: str, path: str) -> Transfer: ...
    async def accept_file(self, transfer_id: str | None = None,
                          into: str | None = None) -> Transfer: ...
    async def decline_file(self, transfer_id: str | None = None) -> Transfer: ...
    async def cancel_transfer(self, transfer_id: str) -> Transfer: ...
    def transfers(self) -> list[Transfer]: ...


class FilesRoom(Protocol):
    @property
    def name(self) -> str: ...
    async def send_file(self, path: str) -> list[Transfer]: ...


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def transfer_event(ev: Event) -> bool:
    return isinstance(ev, FileOffered | TransferProgress | TransferDone | TransferFailed)


def _pct(t: Transfer) -> int:
    return 100 if t.size == 0 else min(100, t.done_bytes * 100 // t.size)


class TransferLines:
    """The line for a transfer event, or None: progress only when it crosses a 10% step."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._step: dict[tuple[str, str], int] = {}
        self._started: dict[tuple[str, str], tuple[float, int]] = {}

    def line(self, ev: Event) -> str | None:
        match ev:
            case FileOffered(transfer=t):
                what = f"{t.name} ({human_size(t.size)})" if t.files == 1 else \
                    f"{t.name}/ ({t.files} files, {human_size(t.size)})"
                return f"{t.peer.name} offers {what} — /accept {t.id} or /decline {t.id}"
            case TransferProgress(transfer=t):
                key = (t.direction, t.id)
                if t.state == "interrupted":
                    return f"transfer {t.id} ({t.name}) interrupted at {_pct(t)}%; waiting"
                self._started.setdefault(key, (self._now(), t.done_bytes))
                step = _pct(t) // 10
                if step <= self._step.get(key, 0) or step >= 10:
                    return None
                self._step[key] = step
                t0, b0 = self._started[key]
                rate = (t.done_bytes - b0) / max(1e-6, self._now() - t0)
                left = (t.size - t.done_bytes) / rate if rate > 0 else 0.0
                arrow = "→" if t.direction == "out" else "←"
                return (f"{t.name} {arrow} {t.peer.name}: {step * 10}%"
                        f" ({human_size(int(rate))}/s, {left:.0f}s left)")
            case TransferDone(transfer=t):
                where = f" → {t.path}" if t.direction == "in" and t.path else ""
                return f"{t.name} ({human_size(t.size)}) done{where}"
            case TransferFailed(transfer=t, reason=reason):
                return f"{t.name}: {reason or t.state}"
        return None


def listing(transfers: list[Transfer]) -> list[str]:
    if not transfers:
        return ["no file transfers"]
    header = f"{'id':>3} dir {'peer':<12} name size state done"
    return [header] + [f"{t.id:>3} {'out' if t.direction == 'out' else 'in '} {t.peer.name:<12} "
            f"{t.name} {human_size(t.size)} {t.state} {_pct(t)}%"
            + (f" ({t.error})" if t.error else "") for t in transfers]


async def run(node: FilesNode, room: FilesRoom | None, cmd: c.Command,
              say: Callable[[str], None]) -> bool:
    """Run a file command; False if ``cmd`` is not one."""
    match cmd:
        case c.SendFile(to=to, path=path):
            if room is not None and to.lower() == room.name.lower():
                sent = await room.send_file(path)
                say(f"offered {path} to {len(sent)} member(s) of {room.name}")
                return True
            try:
                t = await node.send_file(to, path)
            except PeerNotFound:
                raise
            say(f"offered {t.name} ({human_size(t.size)}) to {t.peer.name} — /cancel {t.id}")
        case c.Accept(transfer_id=tid, into=into):
            t = await node.accept_file(tid, into)
            say(f"accepted {t.name} into {t.path}")
        case c.Decline(transfer_id=tid):
            t = await node.decline_file(tid)
            say(f"declined {t.name}")
        case c.Cancel(transfer_id=tid):
            t = await node.cancel_transfer(tid)
            say(f"transfer {t.id} ({t.name}) is {t.state}")
        case c.Files():
            for line in listing(node.transfers()):
                say(line)
        case _:
            return False
    return True
