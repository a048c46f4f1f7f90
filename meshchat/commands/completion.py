"""Tab completion: the candidates for the word under the cursor (commands, colours, names,
``@names`` anywhere in a line, and local paths for ``/send file NAME PATH``)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

from .names import COLOR_NAMES
from .table import BY_KEY, COMMANDS, GROUPS, is_command_word

__all__ = ["complete", "complete_path", "fragment", "wants_path"]

MAX_PATH_CANDIDATES = 200  # a huge directory offers its first entries, not all of them
MAX_PATH_SCANNED = 20_000  # ... and is read this far at most, matching or not
PATH_BUDGET_S = 0.2  # ... for this long at most (the interface also runs it off the loop)

_SEPARATORS = re.compile(r"[\s,]")
_NO_COMPLETION = frozenset({
    "rename", "new servername", "new password", "save chat", "version", "uptime", "leave",
    "list", "rooms", "test server", "banned", "users", "user-count", "lock", "unlock",
    "whoami", "quit",
})


def fragment(line_before_cursor: str) -> str:
    """The part of the line that a completion replaces: after the last space or comma."""
    cut = max((m.end() for m in _SEPARATORS.finditer(line_before_cursor)), default=0)
    return line_before_cursor[cut:]


def _match(prefix: str, candidates: list[str] | tuple[str, ...]) -> list[str]:
    lowered = prefix.lower()
    seen: dict[str, None] = {}
    for candidate in candidates:
        if candidate.lower().startswith(lowered) and candidate != prefix:
            seen.setdefault(candidate, None)
    return sorted(seen, key=str.lower)


def complete(line_before_cursor: str, names: list[str]) -> list[str]:
    """Completions that replace ``fragment(line_before_cursor)``; see ``meshchat.commands``."""
    line = line_before_cursor
    frag = fragment(line)
    if frag.startswith("@") and not wants_path(line):
        return ["@" + n for n in _match(frag[1:], names)]  # a mention, anywhere in the line
    if not line.startswith("/") or (line.startswith("//") and not _command_prefix_ok(line)):
        return _match(frag, names) if frag else []
    slash = "//" if line.startswith("//") else "/"
    body = line[len(slash):]
    if not _SEPARATORS.search(body):
        words = [s.name for s in COMMANDS] + [a for s in COMMANDS for a in s.aliases]
        return [slash + w for w in _match(body, words)]
    words = body.split()
    first = words[0].lower()
    at_second_word = len(words) == 1 or (len(words) == 2 and not body[-1].isspace())
    if first in GROUPS and at_second_word and "," not in body:
        subs = [n.split(" ", 1)[1] for n in BY_KEY if n.startswith(first + " ")]
        return _match(frag, subs)
    key = f"{first} {words[1].lower()}" if first in GROUPS and len(words) > 1 else first
    spec = BY_KEY.get(key)
    if spec is None or spec.name in _NO_COMPLETION:
        return []
    if spec.name == "myColor":
        return _match(frag, COLOR_NAMES)
    if spec.name == "help":
        return _match(frag, [s.name for s in COMMANDS])
    if spec.name == "send file" and wants_path(line):
        return complete_path(frag)
    return _match(frag, names)


def _command_prefix_ok(line: str) -> bool:
    """Whether a ``//`` line is (or is becoming) a command rather than an escaped chat line."""
    word = _SEPARATORS.split(line[2:], 1)[0].lower()
    if not _SEPARATORS.search(line[2:]):
        return any(k.startswith(word) for k in (*BY_KEY, *GROUPS))
    return is_command_word(word)


def wants_path(line: str) -> bool:
    """Whether the cursor (at the end of ``line``) is on the PATH of ``/send file NAME PATH``:
    where ``complete`` reads the disk."""
    words = line.split()
    if len(words) < 2 or words[0].lower() != "/send" or words[1].lower() != "file":
        return False
    return len(words) - (0 if line[-1].isspace() else 1) >= 3


def complete_path(prefix: str, *, max_scanned: int = MAX_PATH_SCANNED,
                  budget_s: float = PATH_BUDGET_S,
                  clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Local paths that start with ``prefix`` (``~`` expanded; directories end with ``/``).

    Hidden entries are offered only when the prefix's last part starts with a dot. An
    unreadable or missing directory offers nothing. The work is bounded: at most
    ``MAX_PATH_CANDIDATES`` found, ``max_scanned`` entries read and ``budget_s`` seconds spent
    (then what was found so far). A call blocked inside the OS (a hung network mount) is not
    bounded by that: the terminal interface runs this in a thread of its own."""
    deadline = clock() + budget_s
    expanded = os.path.expanduser(prefix) if prefix.startswith("~") else prefix
    head, _, tail = expanded.rpartition("/")
    folder = (head or "/") if "/" in expanded else "."
    shown_head = prefix[:len(prefix) - len(tail)]
    found: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for scanned, entry in enumerate(entries, 1):
                if scanned > max_scanned or (scanned % 256 == 0 and clock() > deadline):
                    break
                if not entry.name.lower().startswith(tail.lower()):
                    continue
                if entry.name.startswith(".") and not tail.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                found.append(shown_head + entry.name + ("/" if is_dir else ""))
                if len(found) >= MAX_PATH_CANDIDATES:
                    break
    except OSError:
        return []
    return sorted((f for f in found if f != prefix), key=str.lower)
