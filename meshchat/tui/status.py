"""The status bar of the terminal interface: one line above the input line.

::

     lobby │ host alice │ 3 members │ locked │ you host │ dev:2 ops pm:1 │ a.iso ← [###   ] 45%

Room, host, member count and marks come from the room as it is at each redraw (so a ``/new
host`` handoff or a failover shows at once); unread counts and active transfers from the events
(``Tracker``). The other rooms the session is in follow, each with its count if it has one
(``dev:2 ops``). A room's count is of its messages while it was not the current room, a private
count of private messages; Enter resets the count of the view the line was typed into: the
private one for a ``/msg``, else the current room's (``typed_into``). An away peer's automatic
reply is not unread.
A narrow terminal gets short forms (``@alice``, ``3m``, ``L P H``), then loses the least
important parts, then is cut with ``…``; the bar never wraps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from prompt_toolkit.utils import get_cwidth

from meshchat import (
    CommandError,
    Event,
    Limits,
    Message,
    Transfer,
    TransferDone,
    TransferFailed,
    TransferProgress,
    commands,
)
from meshchat.tui.render import Line, clean, short

SEPARATOR = " │ "
BAR_CELLS = 10
_ACTIVE = ("accepted", "active", "interrupted")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the bar shows; ``room`` None outside a room."""

    room: str | None = None
    host: str = ""
    members: int = 0
    locked: bool = False
    password: bool = False
    you_host: bool = False
    unread: tuple[tuple[str, int], ...] = ()
    private_unread: int = 0
    others: tuple[str, ...] = ()
    """The other rooms the session is in, in the node's order (with or without unread)."""
    transfers: tuple[Transfer, ...] = ()


class Tracker:
    """Unread counts and active transfers, from the node's events (bounded by ``Limits``)."""

    def __init__(self, me_fingerprint: str, limits: Limits | None = None) -> None:
        self._me = me_fingerprint
        self._max = (limits or Limits()).max_transfers
        self.unread: dict[str, int] = {}
        self.private_unread = 0
        self._transfers: OrderedDict[tuple[str, str], Transfer] = OrderedDict()

    def observe(self, ev: Event, current_room: str | None, joined: Sequence[str]) -> None:
        match ev:
            case Message(sender=sender) if sender.fingerprint == self._me:
                return
            case Message(auto=True):
                return  # an away reply to what I sent: nothing unread
            case Message(private=True) | Message(room=None):
                self.private_unread += 1
            case Message(room=str() as room) if room != current_room and room in joined:
                self.unread[room] = self.unread.get(room, 0) + 1  # joined rooms: bounded
            case TransferProgress(transfer=t):
                key = (t.direction, t.id)
                if t.state in _ACTIVE:
                    self._transfers[key] = t
                    self._transfers.move_to_end(key)
                    while len(self._transfers) > self._max:
                        self._transfers.popitem(last=False)
                else:
                    self._transfers.pop(key, None)
            case TransferDone(transfer=t) | TransferFailed(transfer=t):
                self._transfers.pop((t.direction, t.id), None)

    def read(self, room: str | None, *, private: bool = False) -> None:
        """Enter was pressed on a line typed into a view: ``private`` (a ``/msg``), or the
        room ``room`` (the current one; None outside a room). That view's count starts again;
        the others keep theirs."""
        if private:
            self.private_unread = 0
        elif room is not None:
            self.unread.pop(room, None)

    def unread_in(self, joined: Sequence[str], current_room: str | None) -> tuple[
            tuple[str, int], ...]:
        for gone in [r for r in self.unread if r not in joined or r == current_room]:
            del self.unread[gone]
        return tuple(sorted(self.unread.items()))

    @property
    def transfers(self) -> tuple[Transfer, ...]:
        return tuple(self._transfers.values())


def typed_into(line: str) -> str:
    """The view a typed line goes to: ``"private"`` for a ``/msg``, else ``"room"``."""
    try:
        return "private" if isinstance(commands.parse(line), commands.Msg) else "room"
    except CommandError:
        return "room"


def _pct(t: Transfer) -> int:
    return 100 if t.size <= 0 else max(0, min(100, t.done_bytes * 100 // t.size))


def progress_bar(pct: int, cells: int = BAR_CELLS) -> str:
    filled = max(0, min(cells, pct * cells // 100))
    return "[" + "#" * filled + " " * (cells - filled) + "]"


def _transfer(t: Transfer, full: bool) -> str:
    arrow = "→" if t.direction == "out" else "←"
    name = short(t.name, 20 if full else 12)
    if full:
        return f"{name} {arrow} {progress_bar(_pct(t))} {_pct(t)}%"
    return f"{name} {_pct(t)}%"


def _parts(s: Snapshot, full: bool) -> list[tuple[int, str]]:
    """(priority, text) for each part: the lower the priority, the longer it stays."""
    parts: list[tuple[int, str]] = []
    if s.room is None:
        parts.append((0, "no room (/join ROOM, /host ROOM)" if full else "no room"))
    else:
        parts.append((0, short(s.room, 48 if full else 16)))
        host = short(s.host, 32 if full else 12)
        parts.append((1, f"host {host}" if full else f"@{host}"))
        parts.append((2, f"{s.members} member{'' if s.members == 1 else 's'}" if full
                      else f"{s.members}m"))
        marks = [(m, short_mark) for m, short_mark, on in (
            ("locked", "L", s.locked), ("password", "P", s.password),
            ("you host", "H", s.you_host)) if on]
        if marks:
            parts.append((3, SEPARATOR.join(m for m, _ in marks) if full
                          else " ".join(short_mark for _, short_mark in marks)))
    counts = dict(s.unread)
    unread = [f"{short(room, 16)}:{counts[room]}" if counts.get(room) else short(room, 16)
              for room in s.others]
    unread += [f"{short(room, 16)}:{n}" for room, n in s.unread if room not in s.others]
    if s.private_unread:
        unread.append(f"pm:{s.private_unread}")
    if unread:
        parts.append((4, " ".join(unread)))
    for i, t in enumerate(s.transfers[:3]):
        parts.append((5 + i, _transfer(t, full)))
    return parts


def _one_row(text: str) -> str:
    """``clean(text)`` with tabs as spaces: a tab has no fixed width in a bar of cells."""
    return clean(text).replace("\t", " ")


def _width(text: str) -> int:
    return sum(max(0, get_cwidth(c)) for c in text)


def _cut(text: str, width: int) -> str:
    out: list[str] = []
    used = 0
    for c in text:
        w = max(0, get_cwidth(c))
        if used + w > width - 1:
            return "".join(out) + "…"
        out.append(c)
        used += w
    return "".join(out)


def text(s: Snapshot, width: int) -> str:
    """The bar's text, at most ``width`` cells (one less than the terminal, so it never wraps)."""
    width = max(1, width)
    for full in (True, False):
        parts = _parts(s, full)
        while parts:
            line = " " + SEPARATOR.join(_one_row(p) for _, p in parts) + " "
            if _width(line) <= width:
                return line
            if full:
                break  # try the short forms before dropping anything
            if len(parts) == 1:
                break
            parts.remove(max(parts, key=lambda p: p[0]))
        if not full and parts:
            return _cut(" " + _one_row(parts[0][1]), width)
    return ""


def line(s: Snapshot, width: int) -> Line:
    """The bar as styled fragments, padded to ``width`` cells."""
    bar = text(s, width)
    style = "class:status.alert" if (s.unread or s.private_unread) else "class:status"
    return [(style, bar + " " * max(0, width - _width(bar)))]
