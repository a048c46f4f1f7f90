"""`meshchat start` that cannot start says so in one line and exits with status 2: no traceback,
in line mode and in the terminal interface alike (the check comes before either runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _start(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshchat", "start", "--no-tui", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
        cwd=tmp_path)


@pytest.mark.parametrize(("args", "says"), [
    (["--name", "x", "--interface", "nope0"], "no interface named 'nope0'"),
    (["--name", "x", "--interface", "203.0.113.77"], "no interface has the address 203.0.113.77"),
    (["--name", "x", "--loopback-only", "--data-dir", "{file}/below"],
     "cannot create data directory"),
    (["--loopback-only", "--data-dir", "{empty}"], "no name saved yet: pass --name NAME"),
])
def test_a_start_that_cannot_work_is_one_line_and_status_2(
        tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    args = [a.format(file=tmp_path / "a-file", empty=tmp_path / "fresh") for a in args]
    done = _start(tmp_path, *args)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("meshchat: error: "), done.stderr
    assert says in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
