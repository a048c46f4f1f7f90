"""File names from peers, made safe to write (pure, except ``free_path`` which looks).

A peer's name for a file is a label, never a path: separators, ``..``, absolute paths,
control characters and reserved device names go; the result is at most 255 bytes of UTF-8
and never empty. A folder sent as a tree has each part of each relative path cleaned the
same way, so nothing can land outside the folder the user chose.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

__all__ = ["MAX_NAME_BYTES", "clean_name", "clean_relpath", "free_path", "inside"]

MAX_NAME_BYTES = 255 - len(".part")  # the partial file beside it must fit the 255 too
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
             *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
_BAD = set('/\\:*?"<>|')


def _fits(text: str, limit: int) -> str:
    while len(text.encode("utf-8")) > limit:
        text = text[:-1]
    return text


def clean_name(name: str, fallback: str = "file") -> str:
    """One safe path component for ``name``."""
    name = unicodedata.normalize("NFC", name)
    out = "".join("_" if (ch in _BAD or unicodedata.category(ch)[0] == "C") else ch
                  for ch in name)
    out = out.strip().strip(".").strip()
    if not out:
        out = fallback
    stem = out.split(".", 1)[0].rstrip()
    if stem.upper() in _RESERVED:
        out = "_" + out
    if len(out.encode("utf-8")) > MAX_NAME_BYTES:
        base, dot, ext = out.rpartition(".")
        if dot and 0 < len(ext.encode("utf-8")) <= 16 and base:
            out = _fits(base, MAX_NAME_BYTES - len(ext.encode("utf-8")) - 1) + "." + ext
        else:
            out = _fits(out, MAX_NAME_BYTES)
    return out


def clean_relpath(path: str) -> tuple[str, ...]:
    """A relative path from a peer, as safe components (empty and ``.``/``..`` parts go)."""
    parts = path.replace("\\", "/").split("/")
    kept = [clean_name(p) for p in parts if p.strip() not in ("", ".", "..")]
    return tuple(kept) or ("file",)


def with_suffix_number(name: str, n: int) -> str:
    """``name (n).ext``."""
    base, dot, ext = name.rpartition(".")
    if not dot or not base:
        base, ext = name, ""
    tag = f" ({n})"
    room = MAX_NAME_BYTES - len(tag.encode("utf-8")) - (len(ext.encode("utf-8")) + 1 if ext
                                                         else 0)
    return _fits(base, room) + tag + ("." + ext if ext else "")


def free_path(folder: Path, name: str, taken: set[str] | None = None) -> Path:
    """``folder / name``, or ``name (1).ext`` and on when that exists (or its ``.part``,
    or a name in ``taken``)."""
    taken = taken or set()
    candidate = name
    n = 0
    while (candidate in taken or os.path.lexists(folder / candidate)
           or os.path.lexists(folder / (candidate + ".part"))):
        n += 1
        candidate = with_suffix_number(name, n)
    return folder / candidate


def inside(folder: Path, path: Path) -> bool:
    """``path`` is below ``folder`` (symlinks resolved on both)."""
    base = os.path.realpath(folder)
    return os.path.commonpath([base, os.path.realpath(path)]) == base and \
        os.path.realpath(path) != base
