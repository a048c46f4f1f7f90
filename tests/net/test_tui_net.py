"""The terminal interface as a person uses it: ``meshchat start`` on a real terminal (tmux, so
prompt_toolkit runs as it does for a user), keys typed with ``send-keys``, the screen read with
``capture-pane``, against other nodes and a hostile peer in the namespace lab.

Needs ``tmux`` (``make system-packages`` installs it as root); without it the test is skipped
with that reason. Every tmux server runs in a lab namespace on a socket of its own, and is
killed after the test (the lab also kills whatever is left in its namespaces).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import LabFactory
from .helpers import ROOM, Chat, Hostile, all_trouble_free, chat_re, lit
from .netlab import Host, LabError, meshchat_argv, scaled

WIDTH, HEIGHT = 110, 30


class Terminal:
    """One tmux session (``WIDTH`` x ``HEIGHT``) on a lab host running ``argv``."""

    def __init__(self, host: Host, socket: Path, name: str, argv: list[str]) -> None:
        self.host = host
        self.socket = str(socket)
        self.name = name
        # remain-on-exit: a program that dies leaves its last screen to read.
        self.tmux("new-session", "-d", "-s", name, "-x", str(WIDTH), "-y", str(HEIGHT),
                  shlex.join(argv), ";", "set-option", "-t", name, "remain-on-exit", "on")

    def tmux(self, *args: str, check: bool = True) -> str:
        result = self.host.run(["tmux", "-S", self.socket, *args], check=check)
        return result.stdout

    def type(self, text: str) -> None:
        """Type ``text`` (literally) and press Enter."""
        self.tmux("send-keys", "-t", self.name, "-l", text)
        self.tmux("send-keys", "-t", self.name, "Enter")

    def screen(self) -> str:
        """What the terminal shows now (wrapped lines joined)."""
        return self.tmux("capture-pane", "-p", "-J", "-t", self.name)

    def wait(self, pattern: str, timeout: float = 10.0) -> str:
        """Poll the screen until ``pattern`` is on it (``re.M``); that screen."""
        regex = re.compile(pattern, re.M)
        end = time.monotonic() + scaled(timeout)
        while True:
            screen = self.screen()
            if regex.search(screen):
                return screen
            if time.monotonic() > end:
                raise AssertionError(f"{self.name}: {pattern!r} never on the screen within "
                                     f"{scaled(timeout):.1f}s; it shows:\n{screen}")
            time.sleep(0.05)  # pacing between screen reads; each read is a fresh capture

    def kill(self) -> None:
        self.tmux("kill-server", check=False)


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[list[Terminal]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (as root: `make system-packages` installs it)")
    made: list[Terminal] = []
    yield made
    for terminal in made:
        with contextlib.suppress(LabError, OSError, subprocess.SubprocessError):
            terminal.kill()


def test_a_person_at_the_terminal_joins_sees_the_backlog_chats_and_survives_a_bad_pm(
    lab_factory: LabFactory, terminals: list[Terminal], tmp_path: Path,
) -> None:
    lab = lab_factory(3)
    alice = Chat.start(lab.hosts[0], "alice", "--host", ROOM)
    alice.expect(rf"^\* hosting room {ROOM}$")
    earlier = ["good morning", "the build is green", "who has the keys?"]
    for text in earlier:
        alice.say(text)

    bob = Terminal(lab.hosts[1], tmp_path / "bob.tmux", "bob", meshchat_argv(
        "start", "--name", "bob", "--interface", lab.hosts[1].ifname, "--fast-timings",
        "--discovery-timeout", "0"))
    terminals.append(bob)
    you_are = re.search(r"you are bob \(fp (\w+)\), reachable at ([\d.]+:\d+)",
                        bob.wait(r"you are bob \(fp \w+\), reachable at"))
    assert you_are is not None
    bob_card = you_are[2]

    bob.type(f"/join {ROOM}")
    joined = bob.wait(rf"joined {ROOM} \(host alice; members: alice, bob\)")
    with_backlog = None
    with contextlib.suppress(AssertionError):  # checked last, so the rest is tried anyway
        with_backlog = bob.wait(rf"{lit(earlier[-1])}\s*$", timeout=3.0)

    # bob types; alice reads it.
    bob.type("hello from a real terminal")
    alice.wait_line(chat_re("bob", "hello from a real terminal"))

    # A private message from the year 1e300: the screen goes on, the next lines show.
    evil = Hostile.start(lab.hosts[2])
    bob_id = bytes.fromhex(evil.connect(bob_card)["peer_id"])
    evil.send("Private", {"text": "a line from the far future", "to": [bob_id]},
              sent_at=1e300)
    evil.sync(to=bob_id)
    alice.send("/msg bob the next normal message")
    bob.wait(r"\[private\] <alice → you> the next normal message")
    alice.say("and the room goes on")
    bob.wait(r"<alice> and the room goes on")
    bob.type("still typing")
    alice.wait_line(chat_re("bob", "still typing"))
    screen = bob.screen()
    assert "Traceback" not in screen and "[exited" not in screen, screen
    all_trouble_free(alice, evil)

    # The backlog, under its separator, above the live lines.
    assert with_backlog is not None, f"no backlog on bob's screen after the join:\n{joined}"
    lines = with_backlog.splitlines()
    separator = next(i for i, line in enumerate(lines) if re.search(
        r"── 3 earlier messages ──", line))
    after = "\n".join(lines[separator + 1:])
    positions = [after.find(f"<alice> {text}") for text in earlier]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), with_backlog
