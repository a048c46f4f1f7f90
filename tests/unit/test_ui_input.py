"""Input history (``tui.inputhistory``), the mention check, ``/bell`` and ``/clear`` — in the
controller, in line mode and in the prompt_toolkit app (pipe input, ``DummyOutput``)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
from pathlib import Path

import pytest
from prompt_toolkit.output import DummyOutput

from meshchat import Message
from meshchat.tui import render
from meshchat.tui.inputhistory import InputHistory, worth_keeping
from meshchat.tui.linemode import make_bell
from meshchat.tui.session import StartOptions
from tests.unit.uifake import ALICE, BOB, NOW, FakeNode, Session, msg, until

# --- input history ----------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "kept"), [
    ("hello", True),
    ("/me waves", True),
    ("/join lobby", True),
    ("/host lobby", True),
    ("/away lunch", True),
    ("   ", False),
    ("", False),
    ("/msg bob secret", False),
    ("/MSG bob secret", False),
    ("//msg bob secret", False),
    ("/msg", False),  # does not parse, but starts like a private message
    ("/join lobby hunter2", False),
    ("/host lobby hunter2", False),
    ("/new password swordfish", False),
    ("/new passwort swordfish", False),
    ("/new", False),
    ("/nope whatever", True),
])
def test_worth_keeping(line: str, kept: bool) -> None:
    assert worth_keeping(line) is kept


def test_history_is_kept_private_bounded_and_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "input_history"
    history = InputHistory(path, limit=3)
    assert list(history.load_history_strings()) == []  # no file yet
    for line in ["one", "/msg bob psst", "two\nlines", "three", "four"]:
        history.append_string(line)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = [json.loads(raw) for raw in path.read_text(encoding="utf-8").splitlines()]
    assert stored == ["two\nlines", "three", "four"]  # the last 3; /msg never
    assert "psst" not in path.read_text(encoding="utf-8")

    again = InputHistory(path, limit=3)
    assert list(again.load_history_strings()) == ["four", "three", "two\nlines"]


def test_a_damaged_or_foreign_history_file_loads_what_it_can(tmp_path: Path) -> None:
    path = tmp_path / "input_history"
    path.write_bytes(b'"good"\nnot json\n\xff\xfe\n42\n"/join x pw"\n"/msg a b"\n"last"\n')
    assert list(InputHistory(path).load_history_strings()) == ["last", "good"]


def test_an_unwritable_history_loses_lines_not_the_session(tmp_path: Path) -> None:
    history = InputHistory(tmp_path / "missing-dir" / "input_history")
    history.append_string("still fine")  # logged, not raised
    assert list(history.get_strings()) == ["still fine"]


# --- mentions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "name", "mentioned"), [
    ("alice, look", "alice", True),
    ("hey @Alice!", "alice", True),
    ("ALICE", "alice", True),
    ("is alice's build green?", "alice", True),
    ("malice aforethought", "alice", False),
    ("alicebot said", "alice", False),
    ("alice_2 said", "alice", False),
    ("nobody here", "alice", False),
    ("anything", "", False),
    ("ping a.b+c now", "a.b+c", True),  # regex characters in a name are literal
    ("ping aXb+c now", "a.b+c", False),
    ("Grüße, Jürgen", "jürgen", True),
])
def test_mentions(text: str, name: str, mentioned: bool) -> None:
    assert render.mentions(text, name) is mentioned


# --- /bell and the bell -----------------------------------------------------------------------


def _ringing() -> tuple[Session, list[int]]:
    rings: list[int] = []
    s = Session()
    s.ctl._alert = lambda: rings.append(1)
    return s, rings


def test_a_mention_is_highlighted_and_rings_and_so_does_a_private_message() -> None:
    s, rings = _ringing()
    styled: list[render.Line] = []
    s.ctl._styled_out = styled.append
    s.ctl.show_event(msg(BOB, "alice: look"))
    assert rings == [1]
    assert all("class:mention" in style for style, _ in styled[-1])
    s.ctl.show_event(msg(BOB, "nothing for you"))
    assert rings == [1] and not any("class:mention" in st for st, _ in styled[-1])
    s.ctl.show_event(msg(BOB, "psst", None))
    assert rings == [1, 1]
    s.ctl.show_event(msg(ALICE, "alice talks about alice"))  # my own: hidden, silent
    assert rings == [1, 1]


async def test_bell_off_and_on() -> None:
    s, rings = _ringing()
    assert await s("/bell") == [
        "* the bell is on (it rings on a mention of your name or a private message)"]
    assert await s("/bell off") == [
        "* the bell is off (it rings on a mention of your name or a private message)"]
    s.show(msg(BOB, "hi alice"))
    s.show(msg(BOB, "psst", None))
    assert rings == []
    assert await s("/bell ON") == [
        "* the bell is on (it rings on a mention of your name or a private message)"]
    s.show(msg(BOB, "hi alice"))
    assert rings == [1]
    assert await s("/bell maybe") == ["* error: on or off — usage: /bell [on|off]"]


async def test_bell_without_a_terminal_says_nothing_rings() -> None:
    s = Session()  # no alert: output that is not a terminal
    assert await s("/bell") == [
        "* the bell is on (it rings on a mention of your name or a private message;"
        " the output is not a terminal here, so nothing rings)"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return True


def test_make_bell_rings_only_on_a_terminal() -> None:
    assert make_bell(io.StringIO()) is None
    closed = _Tty()
    closed.close()
    assert make_bell(closed) is None  # isatty on a closed stream raises: no bell
    tty = _Tty()
    ring = make_bell(tty)
    assert ring is not None
    ring()
    assert tty.getvalue() == "\a"


async def test_line_mode_rings_on_a_terminal_on_mentions_and_private_messages() -> None:
    from meshchat.tui.linemode import run_linemode

    node = FakeNode()
    out = _Tty()
    read_fd, write_fd = os.pipe()
    task = asyncio.create_task(run_linemode(node, StartOptions(room="lobby"),
                                            stdin_fd=read_fd, stdout=out))
    try:
        await until(lambda: len(node.hosted) == 1 and len(node.queues) == 1)
        node.emit(msg(BOB, "plain line"))
        node.emit(msg(BOB, "hey alice"))
        node.emit(Message(None, BOB, "psst", True, NOW, 0, (ALICE,)))
        await until(lambda: "psst" in out.getvalue())
        os.write(write_fd, b"/bell off\n")
        await until(lambda: "the bell is off" in out.getvalue())
        node.emit(msg(BOB, "alice again"))
        await until(lambda: "alice again" in out.getvalue())
        os.write(write_fd, b"/quit\n")
        async with asyncio.timeout(5):
            await task
    finally:
        os.close(write_fd)
        task.cancel()
    text = out.getvalue()
    assert text.count("\a") == 2, repr(text)
    assert "\a" not in text.split("plain line")[0].rsplit("\n", 1)[-1]
    assert text.index("\a") < text.index("hey alice") < text.rindex("\a") < text.index("psst")
    os.close(read_fd)


async def test_line_mode_to_a_pipe_never_writes_a_bell() -> None:
    from meshchat.tui.linemode import run_linemode

    node = FakeNode()
    out = io.StringIO()
    read_fd, write_fd = os.pipe()
    task = asyncio.create_task(run_linemode(node, StartOptions(room="lobby"),
                                            stdin_fd=read_fd, stdout=out))
    try:
        await until(lambda: len(node.hosted) == 1 and len(node.queues) == 1)
        node.emit(msg(BOB, "hey alice"))
        await until(lambda: "hey alice" in out.getvalue())
        os.write(write_fd, b"/quit\n")
        async with asyncio.timeout(5):
            await task
    finally:
        os.close(write_fd)
        task.cancel()
    assert "\a" not in out.getvalue()
    os.close(read_fd)


# --- /clear -----------------------------------------------------------------------------------


async def test_clear_calls_the_screen_and_is_refused_without_one() -> None:
    cleared: list[int] = []
    s = Session()
    assert await s("/clear") == [
        "* error: /clear clears the screen of the terminal interface only"]
    s.ctl._clear = lambda: cleared.append(1)
    assert await s("/clear") == []
    assert cleared == [1]


class _CountingOutput(DummyOutput):
    def __init__(self) -> None:
        super().__init__()
        self.erased = 0
        self.bells = 0

    def erase_screen(self) -> None:
        self.erased += 1

    def bell(self) -> None:
        self.bells += 1


async def test_the_app_clears_the_screen_and_rings_the_terminal_bell() -> None:
    from prompt_toolkit.input import create_pipe_input

    from meshchat.tui.app import ChatApp

    node = FakeNode()
    output = _CountingOutput()
    with create_pipe_input() as pipe:
        app = ChatApp(node, input=pipe, output=output, frame_s=0.001)
        task = asyncio.create_task(app.run(StartOptions(room="lobby")))
        try:
            await until(lambda: app.controller.room is not None and len(node.queues) == 1)
            pipe.send_text("/clear\r")
            await until(lambda: output.erased == 1)
            node.emit(msg(BOB, "alice, ping"))
            await until(lambda: output.bells == 1)
            pipe.send_text("/bell off\r")
            await until(lambda: not app.controller.bell)
            node.emit(msg(BOB, "alice, again"))
            node.emit(msg(BOB, "psst", None))
            pipe.send_text("/quit\r")
            async with asyncio.timeout(5):
                await task
        finally:
            task.cancel()
    assert output.bells == 1
