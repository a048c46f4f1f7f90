"""The user's settings (name, colour, last rename) as a small JSON file in the data dir.

A damaged file never stops the node: what can be read is kept, the rest falls back to the
defaults, the damaged file is kept beside it as ``settings.json.corrupt-<time>`` and a warning
says so.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshchat.storage.keystore import (
    ensure_private_dir,
    move_aside,
    tighten_mode,
    write_private_file,
)

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
DEFAULT_COLOR = "default"
MAX_FORMER_NAMES = 50


@dataclass(slots=True)
class Settings:
    """What the user chose. ``name`` is None until the first start asks for one."""

    name: str | None = None
    color: str = DEFAULT_COLOR
    renamed_at: float | None = None
    former_names: list[tuple[str, float]] = field(default_factory=list)


class SettingsStore:
    """Loads and saves ``Settings`` in ``data_dir/settings.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / SETTINGS_FILE
        self.warnings: list[str] = []

    def load(self) -> Settings:
        """The saved settings, or the defaults if there are none; never raises on bad content."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Settings()
        except OSError as exc:
            self._warn(f"cannot read {self.path} ({exc}); using default settings")
            return Settings()
        try:
            tighten_mode(self.path, self.warnings)
        except OSError as exc:
            self._warn(f"cannot restrict permissions of {self.path}: {exc}")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._keep_corrupt(f"is not valid JSON ({exc})")
            return Settings()
        if not isinstance(data, dict):
            self._keep_corrupt("does not hold a JSON object")
            return Settings()
        settings, problems = _settings_from_json(data)
        if problems:
            self._keep_corrupt("has invalid " + ", ".join(problems))
        return settings

    def save(self, settings: Settings) -> None:
        """Write ``settings`` atomically (mode 0600)."""
        ensure_private_dir(self.path.parent)
        data = {
            "name": settings.name,
            "color": settings.color,
            "renamed_at": settings.renamed_at,
            "former_names": [[n, t] for n, t in settings.former_names[-MAX_FORMER_NAMES:]],
        }
        text = json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
        write_private_file(self.path, text.encode("utf-8"))

    def _keep_corrupt(self, problem: str) -> None:
        try:
            backup = move_aside(self.path)
        except OSError as exc:
            self._warn(f"{self.path} {problem}; could not move it aside ({exc}); using defaults")
            return
        self._warn(f"{self.path} {problem}; kept as {backup.name}, using defaults for the rest")

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)


def _settings_from_json(data: dict[str, Any]) -> tuple[Settings, list[str]]:
    """Every field that checks out, defaults for the others, and the names of the others."""
    settings = Settings()
    problems: list[str] = []

    name = data.get("name")
    if name is None or (isinstance(name, str) and name.strip()):
        settings.name = name
    else:
        problems.append("name")

    color = data.get("color", DEFAULT_COLOR)
    if isinstance(color, str) and color:
        settings.color = color
    else:
        problems.append("color")

    renamed_at = data.get("renamed_at")
    if renamed_at is None or _is_time(renamed_at):
        settings.renamed_at = None if renamed_at is None else float(renamed_at)
    else:
        problems.append("renamed_at")

    former = data.get("former_names", [])
    if isinstance(former, list) and all(
        isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and _is_time(item[1])
        for item in former
    ):
        settings.former_names = [(n, float(t)) for n, t in former][-MAX_FORMER_NAMES:]
    else:
        problems.append("former_names")
    return settings, problems


def _is_time(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
