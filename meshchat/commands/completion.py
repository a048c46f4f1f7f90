"""Tab completion: the candidates for the word under the cursor (commands, colours, names)."""

from __future__ import annotations

import re

from .names import COLOR_NAMES
from .table import BY_KEY, COMMANDS, GROUPS, is_command_word

__all__ = ["complete", "fragment"]

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
    if spec.name == "send file" and len(words) - (0 if body[-1].isspace() else 1) >= 3:
        return []  # the PATH argument
    return _match(frag, names)


def _command_prefix_ok(line: str) -> bool:
    """Whether a ``//`` line is (or is becoming) a command rather than an escaped chat line."""
    word = _SEPARATORS.split(line[2:], 1)[0].lower()
    if not _SEPARATORS.search(line[2:]):
        return any(k.startswith(word) for k in (*BY_KEY, *GROUPS))
    return is_command_word(word)
