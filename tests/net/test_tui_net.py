"""The terminal interface as a person uses it: ``meshchat start`` on a real terminal (tmux, so
prompt_toolkit runs as it does for a user), keys typed with ``send-keys``, the screen read with
``capture-pane``, against other nodes and a hostile peer in the namespace lab.

Needs ``tmux`` (``make system-packages`` installs it as root); without it the test is skipped
with that reason. Every tmux server runs in a lab namespace on a socket of its own, and is
killed after the test (the lab also kills whatever is left in its namespaces).
"""

from __future__ import annotations

import contextlib
import os
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
from .netlab import Host, Lab, LabError, meshchat_argv, scaled

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

    def keys(self, *keys: str) -> None:
        """Press keys by tmux name (``Up``, ``Enter``, ``y``)."""
        self.tmux("send-keys", "-t", self.name, *keys)

    def paste(self, text: str) -> None:
        """Paste ``text`` as a terminal does with bracketed paste on."""
        self.tmux("set-buffer", "-b", "paste", text)
        self.tmux("paste-buffer", "-p", "-d", "-b", "paste", "-t", self.name)

    def screen(self, escapes: bool = False) -> str:
        """What the terminal shows now (wrapped lines joined; ``escapes``: with colours)."""
        return self.tmux("capture-pane", "-p", "-J", *(["-e"] if escapes else []),
                         "-t", self.name)

    def rows(self) -> list[str]:
        """The screen's rows as they are (not joined), trailing blanks cut."""
        return [row.rstrip() for row in
                self.tmux("capture-pane", "-p", "-t", self.name).splitlines()]

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

    def wait_exit(self, timeout: float = 15.0) -> None:
        """Until the program in the pane has exited (a zombie counts: tmux may be slow to see
        it and mark the pane dead)."""
        pid = self.tmux("display-message", "-p", "-t", self.name, "#{pane_pid}").strip()
        end = time.monotonic() + scaled(timeout)
        while True:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if state in ("Z", "X"):
                return
            if time.monotonic() > end:
                raise AssertionError(f"{self.name}: still running {scaled(timeout):.1f}s after "
                                     f"/quit; it shows:\n{self.screen()}")
            time.sleep(0.05)

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


def _terminal(host: Host, socket: Path, name: str, *extra: str) -> Terminal:
    return Terminal(host, socket, name, meshchat_argv(
        "start", "--name", name, "--interface", host.ifname, "--fast-timings",
        "--discovery-timeout", "0", *extra))


def _alice_hosts_and_bob_joins_in_a_terminal(lab: Lab, terminals: list[Terminal],
                                              tmp_path: Path) -> tuple[Chat, Terminal]:
    """alice hosts ``ROOM`` in line mode; bob joins it in a terminal on the second host."""
    alice = Chat.start(lab.hosts[0], "alice", "--host", ROOM)
    alice.expect(rf"^\* hosting room {ROOM}$")
    bob = _terminal(lab.hosts[1], tmp_path / "bob.tmux", "bob")
    terminals.append(bob)
    bob.wait(r"you are bob")
    bob.type(f"/join {ROOM}")
    bob.wait(rf"joined {ROOM} \(host alice")
    return alice, bob


def test_the_status_bar_follows_a_failover_after_the_host_is_killed(
    lab_factory: LabFactory, terminals: list[Terminal], tmp_path: Path,
) -> None:
    """kill -9 of the host: the next member in join order takes over, and the terminal's
    status bar says so (host and member count) without anything typed."""
    lab = lab_factory(3)
    alice = Chat.start(lab.hosts[0], "alice", "--host", ROOM)
    alice.expect(rf"^\* hosting room {ROOM}$")
    carol = Chat.start(lab.hosts[2], "carol")
    carol.send(f"/join {ROOM}")
    carol.expect(rf"^\* joined {ROOM} \(host alice")
    bob = _terminal(lab.hosts[1], tmp_path / "bob.tmux", "bob")
    terminals.append(bob)
    bob.wait(r"you are bob")
    bob.type(f"/join {ROOM}")
    bob.wait(rf"^ {ROOM} │ host alice │ 3 members\s*$")
    alice.kill()
    bob.wait(rf"^ {ROOM} │ host carol │ 2 members\s*$")
    bob.wait(rf"carol is now the host of {ROOM} \(was alice\)")
    # and the room works under its new host, seen from the terminal
    carol.say("carol hosts now")
    screen = bob.wait(r"<carol> carol hosts now")
    assert "Traceback" not in screen and "[exited" not in screen, screen


def test_a_typed_line_shows_once_the_status_bar_follows_the_room_and_mentions_stand_out(
    lab_factory: LabFactory, terminals: list[Terminal], tmp_path: Path,
) -> None:
    alice, bob = _alice_hosts_and_bob_joins_in_a_terminal(lab_factory(2), terminals, tmp_path)
    bob.wait(rf"^ {ROOM} │ host alice │ 2 members\s*$")

    bob.type("said just once")
    alice.wait_line(chat_re("bob", "said just once"))
    screen = bob.wait(r"<bob> said just once")
    assert screen.count("said just once") == 1, screen
    rows = bob.rows()
    while rows and not rows[-1]:
        rows.pop()
    assert rows[-1] == f"[{ROOM}] bob>", screen  # the input line is at the bottom, empty
    assert rows[-2].startswith(f" {ROOM} │ host alice"), screen

    # A mention is highlighted (yellow background); a plain line is not.
    alice.say("nothing for you here")
    alice.say("Bob, look at this")
    bob.wait(r"<alice> Bob, look at this")
    coloured = bob.screen(escapes=True)
    mention = next(row for row in coloured.splitlines() if "look at this" in row)
    plain = next(row for row in coloured.splitlines() if "nothing for you here" in row)
    assert re.search(r"\x1b\[[0-9;]*43[0-9;]*m", mention), repr(mention)
    assert not re.search(r"\x1b\[[0-9;]*43[0-9;]*m", plain), repr(plain)

    # The bar follows a handoff: bob hosts now.
    alice.send("/new host bob")
    bob.wait(rf"^ {ROOM} │ host bob │ 2 members │ you host\s*$")
    alice.send("/leave")
    bob.wait(rf"^ {ROOM} │ host bob │ 1 member │ you host\s*$")

    # 60 columns: the bar is cut to fit, the input line stays and works.
    bob.tmux("resize-window", "-t", bob.name, "-x", "60", "-y", str(HEIGHT))
    bob.wait(rf"^ {ROOM} │ host bob │ 1 member │ you host\s*$")
    bob.type("still here at sixty")
    bob.wait(r"<bob> still here at sixty")
    rows = [r for r in bob.rows() if r]
    assert rows[-1] == f"[{ROOM}] bob>", "\n".join(rows)
    assert all(len(r) <= 60 for r in rows[-2:]), "\n".join(rows)
    assert "Traceback" not in bob.screen()


def test_a_pasted_block_is_one_message_and_a_long_one_asks_first(
    lab_factory: LabFactory, terminals: list[Terminal], tmp_path: Path,
) -> None:
    alice, bob = _alice_hosts_and_bob_joins_in_a_terminal(lab_factory(2), terminals, tmp_path)

    bob.paste("first line\nsecond line\nthird line\n")
    bob.keys("Enter")
    # line mode shows it as one line, its newlines as ↵; bob's screen as indented lines
    alice.wait_line(chat_re("bob", "first line ↵ second line ↵ third line"))
    screen = bob.wait(r"^ +third line$")
    assert re.search(r"<bob> first line\n +second line\n +third line$", screen, re.M), screen
    assert re.search(r"^ +second line$", screen, re.M), screen

    bob.paste("\n".join(f"row {i}" for i in range(1, 8)))
    bob.wait(r"send 7 lines\? y/n")
    bob.keys("n")
    bob.wait(rf"^\[{ROOM}\] bob>\s*$")
    bob.paste("\n".join(f"row {i}" for i in range(1, 8)))
    bob.wait(r"send 7 lines\? y/n")
    bob.keys("y")
    alice.wait_line(chat_re("bob", " ↵ ".join(f"row {i}" for i in range(1, 8))))
    assert len([t for t in alice.texts(sender="bob") if t.startswith("row 1")]) == 1


def test_input_history_survives_a_restart_without_private_lines_or_passwords(
    lab_factory: LabFactory, terminals: list[Terminal], tmp_path: Path,
) -> None:
    lab = lab_factory(1)
    data = tmp_path / "bob"
    bob = _terminal(lab.hosts[0], tmp_path / "bob.tmux", "bob", "--data-dir", str(data))
    terminals.append(bob)
    bob.wait(r"you are bob")
    bob.type("/host secret hunter2")
    bob.wait(r"hosting room secret \(password protected\)")
    bob.type("remember this line")
    bob.wait(r"<bob> remember this line")
    bob.type("/msg nobody private words")
    bob.wait(r"\* error: .*nobody")
    bob.type("/new password swordfish")
    bob.wait(r"secret now needs a password")
    bob.type("/quit")
    bob.wait(r"^\* bye$")
    bob.wait_exit()
    bob.kill()

    stored = data / "input_history"
    assert stored.stat().st_mode & 0o777 == 0o600
    text = stored.read_text()
    assert "remember this line" in text and "/quit" in text
    for secret in ("hunter2", "swordfish", "private words"):
        assert secret not in text, text

    again = _terminal(lab.hosts[0], tmp_path / "bob2.tmux", "bob", "--data-dir", str(data))
    terminals.append(again)
    again.wait(r"you are bob")
    again.keys("Up")
    again.wait(r"bob> /quit *$")
    again.keys("Up")
    again.wait(r"bob> remember this line *$")
    again.keys("Down")
    again.wait(r"bob> /quit *$")


def test_tab_cycles_through_names_case_insensitively_and_me_is_an_action(
    lab_factory: LabFactory, terminals: list[Terminal], tmp_path: Path,
) -> None:
    lab = lab_factory(3)
    marie = Chat.start(lab.hosts[0], "Marie", "--host", ROOM)
    marie.expect(rf"^\* hosting room {ROOM}$")
    maximilian = Chat.start(lab.hosts[1], "Maximilian")
    maximilian.expect(rf"Marie is on the network|rooms: {ROOM} \(Marie")
    maximilian.send(f"/join {ROOM}")
    maximilian.expect(rf"joined {ROOM}")
    bob = _terminal(lab.hosts[2], tmp_path / "bob.tmux", "bob")
    terminals.append(bob)
    bob.wait(r"you are bob")
    bob.type(f"/join {ROOM}")
    bob.wait(rf"^ {ROOM} │ host Marie │ 3 members\s*$")

    def wait_input(text: str) -> None:
        bob.wait(rf"^\[{ROOM}\] bob> {re.escape(text)}\s*$", timeout=5.0)

    bob.tmux("send-keys", "-t", bob.name, "-l", "hi @ma")
    wait_input("hi @ma")
    bob.wait(r"^\s+@Marie\s*\n\s+@Maximilian\s*$")  # typing opened the menu of both
    bob.keys("Tab")
    wait_input("hi @Marie")
    bob.keys("Tab")
    wait_input("hi @Maximilian")
    bob.keys("Tab")  # past the last: back to what was typed
    wait_input("hi @ma")
    bob.keys("Tab")
    wait_input("hi @Marie")
    bob.keys("Tab")
    wait_input("hi @Maximilian")
    bob.tmux("send-keys", "-t", bob.name, "-l", " !")
    wait_input("hi @Maximilian !")
    bob.keys("Enter")
    marie.wait_line(chat_re("bob", "hi @Maximilian !"))

    # /me: an action line, from the terminal and from line mode, seen by both.
    bob.type("/me waves")
    marie.wait_line(r"^\d\d:\d\d:\d\d \* bob waves$")
    bob.wait(r"\* bob waves")
    maximilian.send("/me nods")
    bob.wait(r"\* Maximilian nods")
    marie.wait_line(r"^\d\d:\d\d:\d\d \* Maximilian nods$")


def test_away_shows_in_list_and_info_and_a_private_message_gets_it_back_once(
    lab_factory: LabFactory, terminals: list[Terminal], tmp_path: Path,
) -> None:
    alice, bob = _alice_hosts_and_bob_joins_in_a_terminal(lab_factory(2), terminals, tmp_path)

    bob.type("/away out for lunch")
    bob.wait(r"^\* you are away: out for lunch \(a private message to you gets this back")
    alice.wait_line(r"^\* bob is away: out for lunch$")
    alice.send("/list")
    alice.wait_line(rf"^\* members of {ROOM} \(2\): alice \(host, you\),"
                    r" bob \(away: out for lunch\)$")
    alice.send("/info bob")
    alice.wait_line(r"^\*   away: out for lunch$")

    # A private message to bob gets the away text back, once; bob still sees both.
    mark = alice.mark()
    alice.send("/msg bob are you there?")
    alice.wait_line(r"^\* bob is away: out for lunch$", since=mark)
    bob.wait(r"\[private\] <alice → you> are you there\?")
    alice.send("/msg bob hello?")
    bob.wait(r"\[private\] <alice → you> hello\?")
    alice.send("/ping bob")  # the reply to the second message would have come before this
    alice.wait_line(r"^\* ping bob: ", since=mark)
    assert len([ln for ln in alice.lines_since(mark)
                if re.fullmatch(r"\* bob is away: out for lunch", ln)]) == 1

    # alice goes away too: bob's message gets hers back, and nobody answers an answer.
    alice.send("/away coffee")
    alice.wait_line(r"^\* you are away: coffee")
    bob.wait(r"^\* alice is away: coffee$")
    bob.type("/msg alice ok, later")
    bob.wait(r"^\* alice is away: coffee$(?s:.*)^\* alice is away: coffee$")  # event, reply
    alice.wait_line(r"\[private\] <bob → you> ok, later$", since=mark)
    bob.type("/ping alice")
    bob.wait(r"^\* ping alice: ")
    assert len([ln for ln in alice.lines_since(mark)
                if re.fullmatch(r"\* bob is away: out for lunch", ln)]) == 1

    bob.type("/away")
    bob.wait(r"^\* you are back$")
    alice.wait_line(r"^\* bob is back$", since=mark)
    screen = bob.screen()
    assert "Traceback" not in screen and "[exited" not in screen, screen


def test_a_file_sent_from_the_terminal_shows_its_percent_in_the_bar_then_done(
    lab_factory: LabFactory, terminals: list[Terminal], tmp_path: Path,
) -> None:
    lab = lab_factory(2)
    alice, bob = _alice_hosts_and_bob_joins_in_a_terminal(lab, terminals, tmp_path)
    # bob's cable is slowed to ~3 MB/s (tc tbf), so 6 MiB take about two seconds: long
    # enough to read the bar between 1 and 99%, on any machine
    lab.hosts[1].run(["tc", "qdisc", "add", "dev", lab.hosts[1].ifname, "root", "tbf",
                      "rate", "24mbit", "burst", "64kb", "latency", "500ms"])
    src = tmp_path / "slides.bin"
    src.write_bytes(os.urandom(6 * 1024 * 1024))
    bob.type(f"/send file alice {src}")
    bob.wait(r"offered slides\.bin \(6\.0 MiB\) to alice — /cancel 1")
    alice.expect(r"bob offers slides\.bin \(6\.0 MiB\) — /accept 1 or /decline 1")
    alice.send("/accept")
    alice.expect(r"accepted slides\.bin into ")
    # the status bar, just above the input line, shows the transfer going out and its percent
    screen = bob.wait(r"│ slides\.bin → \[[# ]+\] ([1-9]|[1-9][0-9])%\s*$", timeout=20.0)
    rows = [row for row in screen.splitlines() if row.strip()]
    assert "slides.bin →" in rows[-2] and rows[-1] == f"[{ROOM}] bob>", screen
    seen = {int(m) for m in re.findall(r"slides\.bin → \[[# ]+\] (\d+)%", screen)}
    assert seen and all(0 < p < 100 for p in seen), screen
    done = alice.expect(r"slides\.bin \(6\.0 MiB\) done → (?P<path>\S+)$", timeout=30.0)
    assert Path(done["path"]).read_bytes() == src.read_bytes()
    screen = bob.wait(r"slides\.bin \(6\.0 MiB\) done$", timeout=10.0)
    bob.wait(rf"^ {ROOM} │ host alice │ 2 members\s*$")  # the bar no longer shows it
    all_trouble_free(alice)


def test_the_terminal_stays_in_every_room_it_joins_and_alt_arrows_switch(
    lab_factory: LabFactory, terminals: list[Terminal], tmp_path: Path,
) -> None:
    """bob joins two rooms in a terminal: both stay joined, the other room's lines show with
    its name and count as unread in the bar, Alt+← makes it current, and a typed line goes to
    the current room only."""
    lab = lab_factory(3)
    alice, bob = _alice_hosts_and_bob_joins_in_a_terminal(lab, terminals, tmp_path)
    carol = Chat.start(lab.hosts[2], "carol", "--host", "dev")
    carol.expect(r"^\* hosting room dev$")
    bob.type("/join dev")
    bob.wait(r"^ dev │ host carol │ 2 members │ lobby\s*$")
    alice.wait_line(r"^\* bob joined lobby$")

    alice.say("news in the lobby")
    bob.wait(rf"\[{ROOM}\] <alice> news in the lobby")
    bob.wait(rf"^ dev │ host carol │ 2 members │ {ROOM}:1\s*$")
    bob.type("to dev only")
    carol.wait_line(chat_re("bob", "to dev only"))

    bob.keys("M-Left")
    bob.wait(rf"you are in {ROOM} now \(host alice; 2 members\)")
    bob.wait(rf"^ {ROOM} │ host alice │ 2 members │ dev\s*$")
    bob.type("to the lobby only")
    alice.wait_line(chat_re("bob", "to the lobby only"))
    bob.keys("M-Right")
    bob.wait(r"^ dev │ host carol │ 2 members │ lobby\s*$")
    bob.type(f"/join {ROOM}")  # a joined room: /join switches to it
    bob.wait(rf"^ {ROOM} │ host alice │ 2 members │ dev\s*$")
    before_leave = alice.mark()
    assert not any("bob left" in line for line in alice.lines[:before_leave])  # lobby stayed
    bob.type("/leave")
    bob.wait(r"you are in dev now \(host carol; 2 members\)")
    bob.wait(r"^ dev │ host carol │ 2 members\s*$")
    alice.wait_line(r"^\* bob left lobby", since=before_leave)
    assert "to the lobby only" not in carol.texts()
    assert "to dev only" not in alice.texts()
    assert "Traceback" not in bob.screen()
