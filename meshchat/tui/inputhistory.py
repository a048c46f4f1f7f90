"""What the user typed, kept across runs: ``input_history`` in the data dir.

One JSON string per line (a pasted multi-line message stays one entry), the last ``limit``
lines, file mode 0600. Never kept: private messages (``/msg``) and any line that carries a
password (``/join ROOM PASSWORD``, ``/host ROOM PASSWORD``, ``/new password ...``), nor a
line that does not parse but starts like one of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from prompt_toolkit.history import History

from meshchat import CommandError
from meshchat import commands as c

log = logging.getLogger("meshchat.tui")

FILE_NAME = "input_history"
DEFAULT_LIMIT = 500
_SECRET_WORDS = ("msg", "join", "host", "new")


def worth_keeping(line: str) -> bool:
    """Whether ``line`` may be written to the history file (no private text, no password)."""
    if not line.strip():
        return False
    try:
        command = c.parse(line)
    except CommandError:
        word = line.lstrip("/").split(None, 1)[0].lower() if line.startswith("/") and \
            line.lstrip("/").strip() else ""
        return word not in _SECRET_WORDS
    match command:
        case c.Msg() | c.NewPassword():
            return False
        case c.Join(password=password) | c.Host(password=password):
            return password is None
    return True


class InputHistory(History):
    """prompt_toolkit history in a file of the data dir; see the module docstring."""

    def __init__(self, path: Path, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__()
        self.path = path
        self.limit = limit
        self._lines: list[str] = []

    def load_history_strings(self) -> Iterable[str]:
        lines: list[str] = []
        try:
            with self.path.open(encoding="utf-8", errors="replace") as f:
                for raw in f:
                    with contextlib.suppress(ValueError):
                        entry = json.loads(raw)
                        if isinstance(entry, str) and worth_keeping(entry):
                            lines.append(entry)
        except OSError:
            pass
        self._lines = lines[-self.limit:]
        return list(reversed(self._lines))  # newest first, as prompt_toolkit wants

    def append_string(self, string: str) -> None:
        if worth_keeping(string):
            super().append_string(string)

    def store_string(self, string: str) -> None:
        self._lines = [*self._lines, string][-self.limit:]
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in self._lines)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError:  # a full disk loses history, not the session
            log.warning("could not write %s", self.path, exc_info=True)
