"""Colours and peer names: the colour table, its normalisation, what a name may be, and the
away text (``/away``) as it is shown."""

from __future__ import annotations

import re

__all__ = ["COLOR_NAMES", "MAX_NAME_CHARS", "clean_away", "normalize_color", "validate_name"]

COLOR_NAMES: tuple[str, ...] = (
    "red", "green", "yellow", "blue", "magenta", "cyan", "white", "gray",
    "orange", "purple", "pink", "brown",
    "bright-red", "bright-green", "bright-yellow", "bright-blue", "bright-magenta", "bright-cyan",
)
_COLOR_ALIASES = {
    "grey": "gray", "violet": "purple",
    # the first seed is German
    "rot": "red", "grün": "green", "gruen": "green", "gelb": "yellow", "blau": "blue",
    "weiß": "white", "weiss": "white", "grau": "gray", "lila": "purple", "rosa": "pink",
    "braun": "brown", "türkis": "cyan", "tuerkis": "cyan",
}
_HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")

MAX_NAME_CHARS = 32


def normalize_color(text: str) -> str | None:
    """A colour name from ``COLOR_NAMES`` or ``#rrggbb`` (lowercase), or None if not a colour."""
    key = text.strip().lower().replace("_", "-")
    if key in COLOR_NAMES:
        return key
    if key in _COLOR_ALIASES:
        return _COLOR_ALIASES[key]
    if key.startswith("bright") and "-" not in key and f"bright-{key[6:]}" in COLOR_NAMES:
        return f"bright-{key[6:]}"
    match = _HEX_COLOR.fullmatch(key)
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return f"#{digits}"


def validate_name(name: str) -> str | None:
    """Why ``name`` cannot be a peer name, or None if it can.

    Names are 1–32 characters without spaces, commas or ``#`` (the UI shows ``name#fp4``
    when names clash, and ``/msg`` separates names with commas) and do not start with ``/``.
    """
    if not name:
        return "a name cannot be empty"
    if len(name) > MAX_NAME_CHARS:
        return f"a name has at most {MAX_NAME_CHARS} characters"
    if any(c.isspace() or c in ",#" for c in name) or not name.isprintable():
        return "a name cannot contain spaces, commas or #"
    if name.startswith("/"):
        return "a name cannot start with /"
    return None


def clean_away(text: str | None, max_chars: int) -> str | None:
    """An away text as it is kept and shown: one line, no control or format characters (each
    run of them and of white space is one space), at most ``max_chars``; None when nothing is
    left (here, not away)."""
    if text is None:
        return None
    kept = "".join(c if c.isprintable() else " " for c in text[: 4 * max_chars])
    out = " ".join(kept.split())[:max_chars].rstrip()
    return out or None
