"""File names from peers, made safe to write (pure, except ``free_path`` which looks).

A peer's name for a file is a label, never a path: separators, ``..``, absolute paths,
control characters and reserved device names go; the result is at most 255 bytes of UTF-8
and never empty. A folder sent as a tree has each part of each relative path cleaned the
same way, so nothing can land outside the folder the user chose. ``plan_offer`` decides
what a whole offer becomes on disk: one file, or one folder of files, or a refusal.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_NAME_BYTES", "REFUSALS", "OfferPlan", "clean_name", "clean_relpath",
           "free_path", "inside", "plan_offer"]

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


# ---------------------------------------------------------------- a whole offer

REFUSALS = {  # plan_offer's refusals: counted as dropped_file_<key>, told to the sender
    "bad_tree": "files not in one folder",
    "bad_path": "a path that leaves its folder",
    "long_path": "a path too long",
}
_NOT_A_PART = ("", ".", "..")


@dataclass(frozen=True, slots=True)
class OfferPlan:
    """What an offer becomes: ``name`` (one safe component: the file, or the tree's folder)
    and each file's path, ``name/part/...`` for a tree (``tree``), ``name`` for one file."""

    name: str
    paths: tuple[str, ...]
    tree: bool


def plan_offer(title: str, paths: Sequence[str], max_path_bytes: int) -> OfferPlan | str:
    """A peer's offer (its title and each file's path) as safe names, or a ``REFUSALS`` key.

    A folder is a tree whose every path starts with the folder's name, the title (as
    ``_scan`` sends it). Anything else is one file, saved as one file under the last part
    of its path, whatever separators, ``..`` or drive it carries; several files that are
    not one folder are refused. A tree's paths may not climb (``..``), start again at the
    root or have empty parts; two that clean to the same name get ``name (1).ext``; a file
    where another needs a folder is refused, and so is a path over ``max_path_bytes``.
    """
    raw = [p.replace("\\", "/").split("/") for p in paths]
    folder_ok = title.strip() not in _NOT_A_PART and "/" not in title and "\\" not in title
    if not (folder_ok and raw and all(len(r) >= 2 and r[0] == title for r in raw)):
        if len(raw) != 1:
            return "bad_tree"
        kept = [c for c in raw[0] if c.strip() not in _NOT_A_PART]
        name = clean_name(kept[-1] if kept else title)
        return OfferPlan(name, (name,), False)
    root = clean_name(title)
    files: set[str] = set()
    dirs: set[str] = set()
    out: list[str] = []
    for parts in raw:
        if any(c.strip() in _NOT_A_PART for c in parts[1:]):
            return "bad_path"
        clean = [root, *(clean_name(c) for c in parts[1:])]
        prefixes = ["/".join(clean[:i]) for i in range(2, len(clean))]
        if any(d in files for d in prefixes):
            return "bad_tree"
        path = "/".join(clean)
        n = 0
        while path in files:
            n += 1
            path = "/".join([*clean[:-1], with_suffix_number(clean[-1], n)])
        if path in dirs:
            return "bad_tree"
        if len(path.encode("utf-8")) > max_path_bytes:
            return "long_path"
        files.add(path)
        dirs.update(prefixes)
        out.append(path)
    return OfferPlan(root, tuple(out), True)
