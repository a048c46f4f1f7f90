"""The pure cores stay pure: no sockets, clocks, threads or asyncio, and nothing above them.

README's layering, checked on the source (``ast``), so a change that slips I/O into a core
fails here rather than in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import meshchat

ROOT = Path(meshchat.__file__).parent
PURE = ["identity.py", "protocol", "authority.py", "ratelimit.py", "room.py", "admission.py",
        "hostwatch.py", "historysync.py", "history.py", "causal.py", "keyring.py",
        "peertable.py", "session.py", "moderation.py", "commands"]
FORBIDDEN_STDLIB = {"asyncio", "socket", "threading", "time", "sqlite3", "selectors",
                    "subprocess", "zmq", "zeroconf", "prompt_toolkit", "click"}
# Path completion lists the disk, with a time budget (its clock is injected, time.monotonic by
# default): the one file of commands/ that touches I/O, run by the terminal in a thread.
IO_EDGES = {"commands/completion.py": {"time"}}
HIGHER = {"runtime", "transport", "discovery", "storage", "node", "cli", "tui", "bot",
          "handles"}


def _files() -> list[Path]:
    out: list[Path] = []
    for name in PURE:
        path = ROOT / name
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute-ish module name, level) of every import in ``path``."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_pure_core_imports_no_io_and_nothing_above_it(path: Path) -> None:
    bad: list[str] = []
    allowed = IO_EDGES.get(str(path.relative_to(ROOT)), set())
    for module, level in _imports(path):
        top = module.split(".")[0]
        if level == 0 and top in FORBIDDEN_STDLIB - allowed:
            bad.append(module)
        inner = module.split(".")[0] if level else (
            module.split(".")[1] if module.startswith("meshchat.") else "")
        if (level or module.startswith("meshchat.")) and inner in HIGHER:
            bad.append("." * level + module)
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_list_of_cores_names_files_that_exist() -> None:
    assert all((ROOT / name).exists() for name in PURE)
