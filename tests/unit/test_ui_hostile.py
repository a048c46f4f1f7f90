"""No value a peer can send stops the interface or reaches the terminal raw (issue 6, case 8).

Rendering is checked with Hypothesis over any floats and any text (control characters, lone
surrogates, escapes included); the event pump is checked with hostile events followed by a good
one, which must still be shown — in the controller, in line mode and in the prompt_toolkit app.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat import (
    BroadcastReceived,
    Event,
    HostChanged,
    MemberRemoved,
    Message,
    Notice,
    PeerDiscovered,
    PeerGone,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    Renamed,
    RoomClosed,
    RoomInfo,
    RoomRenamed,
)
from meshchat.tui import render
from meshchat.tui.session import StartOptions
from tests.unit.uifake import ALICE, BOB, NOW, FakeNode, FakeRoom, FakeRoomDetails, Session, until

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)
"""Any code points: controls, escapes, bidi overrides, lone surrogates."""
ANY_TIME = st.one_of(st.floats(), st.integers(), st.sampled_from([1e300, -1e300, 2**63, -2**63]))
HOSTILE_TIMES = [1e300, -1e300, float(2**63), float("nan"), float("inf"), float("-inf")]

ESCAPES = "\x1b[2J\x1b[H\x1b]0;pwned\x07\x9b31m\u202e"
"""Clear screen, cursor home, set the window title, C1 CSI, right-to-left override."""

CLOCK = re.compile(r"\d\d:\d\d:\d\d|\?\?:\?\?:\?\?")


def safe_for_a_terminal(text: str) -> bool:
    return all(c.isprintable() or c in "\t\u200d" for c in text)


def peers() -> st.SearchStrategy[PeerInfo]:
    return st.builds(PeerInfo, name=ANY_TEXT, fingerprint=ANY_TEXT,
                     addresses=st.tuples(ANY_TEXT), color=ANY_TEXT)


def events() -> st.SearchStrategy[Event]:
    rooms = st.one_of(st.none(), ANY_TEXT)
    return st.one_of(
        st.builds(Message, room=rooms, sender=peers(), text=ANY_TEXT, private=st.booleans(),
                  sent_at=ANY_TIME, seq=st.integers(),
                  recipients=st.lists(peers(), max_size=3).map(tuple), action=st.booleans()),
        st.builds(PeerJoined, room=ANY_TEXT, peer=peers()),
        st.builds(PeerLeft, room=ANY_TEXT, peer=peers(), reason=ANY_TEXT),
        st.builds(HostChanged, room=ANY_TEXT, old=st.one_of(st.none(), peers()), new=peers(),
                  term=st.integers()),
        st.builds(MemberRemoved, room=ANY_TEXT, peer=peers(), by=peers(), reason=ANY_TEXT,
                  banned=st.booleans()),
        st.builds(RoomClosed, room=ANY_TEXT),
        st.builds(RoomRenamed, room=ANY_TEXT, old=ANY_TEXT, new=ANY_TEXT),
        st.builds(Renamed, peer=peers(), old=ANY_TEXT, new=ANY_TEXT),
        st.builds(PeerDiscovered, peer=peers()),
        st.builds(PeerGone, peer=peers(), reason=ANY_TEXT),
        st.builds(BroadcastReceived, sender=peers(), text=ANY_TEXT, sent_at=ANY_TIME),
        st.builds(Notice, text=ANY_TEXT, level=ANY_TEXT),
    )


def room_infos() -> st.SearchStrategy[RoomInfo]:
    return st.builds(RoomInfo, name=ANY_TEXT, host=ANY_TEXT, members=st.integers(),
                     locked=st.booleans(), has_password=st.booleans(),
                     host_fingerprint=ANY_TEXT)


# --- the render functions are total ------------------------------------------------------


@given(ANY_TIME)
def test_time_formats_never_raise(ts: Any) -> None:
    assert CLOCK.fullmatch(render.clock(ts))
    assert len(render.day(ts)) == 10
    assert render.timestamp(ts).endswith(render.clock(ts))
    assert render.duration(ts)


@pytest.mark.parametrize("ts", [*HOSTILE_TIMES, 2**63, 10**400])
def test_times_out_of_range_show_as_question_marks(ts: float) -> None:
    assert render.clock(ts) == "??:??:??"
    assert render.timestamp(ts) == "????-??-?? ??:??:??"


def test_durations_that_are_no_durations() -> None:
    assert [render.duration(x) for x in (float("nan"), float("inf"), 1e300, 10**400)] == ["?"] * 4
    assert render.duration(-5) == "0s"


@settings(max_examples=300)
@given(events(), st.booleans(), st.sampled_from([None, "lobby"]))
def test_any_event_renders_to_terminal_safe_text(ev: Event, clash: bool, current: str | None
                                                 ) -> None:
    view = render.View(ALICE.fingerprint, current, lambda name: clash)
    line = render.event(ev, view)
    if line is not None:
        assert safe_for_a_terminal(render.plain(line))
    if isinstance(ev, Message):
        for full_date in (False, True):
            text = render.plain(render.message(ev, view, full_date=full_date, today="2024-05-01"))
            assert safe_for_a_terminal(text)


@given(st.lists(room_infos(), max_size=4))
def test_any_room_listing_renders(infos: list[RoomInfo]) -> None:
    assert safe_for_a_terminal(render.rooms_line(infos))
    for info in infos:
        assert safe_for_a_terminal(render.room_summary(info, clash=True))


@given(ANY_TEXT)
def test_any_colour_gives_a_style_prompt_toolkit_accepts(color: str) -> None:
    from prompt_toolkit import print_formatted_text
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.output import DummyOutput
    from prompt_toolkit.styles import Style

    style = render.name_style(PeerInfo("x", "abcd", color=color))
    print_formatted_text(FormattedText([(style, "x")]), output=DummyOutput(),
                         style=Style.from_dict(render.STYLE_RULES))


def test_a_colour_cannot_smuggle_other_styles() -> None:
    for color in ("#ff00", "#ff0000 bg:red", "hidden", "#ff0000 blink reverse"):
        style = render.name_style(PeerInfo("x", "abcd", color=color))
        assert style == render.name_style(PeerInfo("x", "abcd"))


# --- names and text from peers ------------------------------------------------------------

DANGER = PeerInfo(f"mal{ESCAPES}lory", "eeee111122223333", (), b"e")
NAMELESS = PeerInfo("", "ffff111122223333", (), b"f")
POSER = PeerInfo("alice#74gq", "9999111122223333", (), b"9")
LONG = PeerInfo("x" * 500, "8888111122223333", (), b"8")


@pytest.mark.parametrize(("event", "line"), [
    (Message("lobby", DANGER, f"hi{ESCAPES}", False, NOW, 1),
     "12:00:01 <mal\ufffd[2J\ufffd[H\ufffd]0;pwned\ufffd\ufffd31m\ufffdlory#eeee> "
     "hi\ufffd[2J\ufffd[H\ufffd]0;pwned\ufffd\ufffd31m\ufffd"),
    (Message("lobby", NAMELESS, "", False, NOW, 1), "12:00:01 <#ffff> "),
    (PeerJoined("lobby", POSER), "* alice#74gq#9999 joined lobby"),
    (PeerJoined("lobby", LONG), f"* {'x' * 31}…#8888 joined lobby"),
    (Message(None, BOB, "psst", True, 1e300, 1, (ALICE,)), "??:??:?? [private] <bob → you> psst"),
    (Message("lobby", BOB, "hi", False, float("nan"), 1), "??:??:?? <bob> hi"),
])
def test_peer_supplied_names_and_text_are_shown_harmlessly(event: Event, line: str) -> None:
    rendered = render.event(event, render.View(ALICE.fingerprint, "lobby", lambda name: False))
    assert rendered is not None and render.plain(rendered) == line


async def test_a_peer_without_a_valid_name_can_be_messaged_as_shown() -> None:
    s = Session(FakeNode(known=[BOB, NAMELESS]))
    assert await s("/msg #ffff hi") == ["12:00:01 [private] <alice → #ffff> hi"]
    assert s.node.sent == [("ffff", "hi")]


async def test_a_4000_character_line_is_shown_whole_on_one_line() -> None:
    s = Session()
    text = ("word \n" * 700)[:4000]
    [line] = s.show(Message("lobby", BOB, text, False, NOW, 1))
    assert line.startswith("12:00:01 [lobby] <bob> word  ↵ word")
    assert line.count("word") == text.count("word")
    assert safe_for_a_terminal(line)


# --- the event pump keeps going ------------------------------------------------------------

GOOD = Message("lobby", BOB, "still here", False, NOW, 99)
BROKEN: list[Event] = [  # wrong types in fields: what a node bug could hand the interface
    Message("lobby", BOB, None, False, NOW, 3),  # type: ignore[arg-type]
    PeerJoined("lobby", PeerInfo(None, "x")),  # type: ignore[arg-type]
    Notice(b"bytes", "info"),  # type: ignore[arg-type]
]
HOSTILE: list[Event] = [
    *(Message(None, BOB, "psst", True, ts, 1, (ALICE,)) for ts in HOSTILE_TIMES),
    *(Message("lobby", BOB, "hi", False, ts, 2) for ts in HOSTILE_TIMES),
    *(BroadcastReceived(BOB, "all", ts) for ts in HOSTILE_TIMES),
    Message(None, BOB, "psst", True, 2**63, 1, (ALICE,)),  # an int where a float belongs
    PeerJoined("lobby", DANGER), PeerJoined("lobby", NAMELESS),
    PeerGone(PeerInfo("x", "abcd", color="#ff00"), "vanished"),
    Renamed(DANGER, ESCAPES, ""), Notice(ESCAPES, "warning"),
    Message("lobby", BOB, "y" * 4000, False, NOW, 4),
]


async def pumped(s: Session, events: list[Event], *, until_text: str = GOOD.text) -> list[str]:
    s.ctl.subscribe()
    pump = asyncio.create_task(s.ctl.pump_events())
    try:
        for ev in [*events, GOOD]:
            s.node.emit(ev)
        await until(lambda: any(until_text in line for line in s.lines))
        assert not pump.done()
    finally:
        pump.cancel()
    return s.lines


async def test_hostile_values_never_stop_the_pump() -> None:
    s = Session()
    lines = await pumped(s, HOSTILE)
    assert s.ctl.render_failures == 0
    assert lines[-1] == "12:00:01 [lobby] <bob> still here"
    assert len(lines) == len(HOSTILE) + 1
    assert all(safe_for_a_terminal(line) for line in lines)
    assert sum("??:??:??" in line for line in lines) == 2 * len(HOSTILE_TIMES) + 1


async def test_an_event_that_cannot_be_shown_is_logged_counted_and_skipped(
        caplog: pytest.LogCaptureFixture) -> None:
    s = Session()
    with caplog.at_level(logging.WARNING, logger="meshchat.tui"):
        lines = await pumped(s, [BROKEN[0], HOSTILE[0], *BROKEN[1:]])
    assert s.ctl.render_failures == 3
    assert lines == [
        "* error: could not show an event (details in the log)",
        "??:??:?? [private] <bob → you> psst",
        "* error: could not show an event (details in the log)",
        "* error: could not show an event (details in the log)",
        "12:00:01 [lobby] <bob> still here",
    ]
    assert [r.getMessage() for r in caplog.records][:1] == [
        "could not show a Message event (1 so far)"]
    assert caplog.records[0].exc_info is not None


async def test_a_broken_output_does_not_stop_the_pump() -> None:
    node = FakeNode()
    shown: list[str] = []

    def out(line: str) -> None:
        if "boom" in line:
            raise RuntimeError("terminal gone")
        shown.append(line)

    from meshchat.tui.controller import Controller

    ctl = Controller(node, out, now=lambda: NOW)
    ctl.subscribe()
    pump = asyncio.create_task(ctl.pump_events())
    try:
        node.emit(Notice("boom"))
        node.emit(GOOD)
        await until(lambda: any("still here" in line for line in shown))
    finally:
        pump.cancel()
    assert ctl.render_failures == 1
    assert shown == ["* error: could not show an event (details in the log)",
                     "12:00:01 [lobby] <bob> still here"]


async def test_a_hostile_message_in_the_backlog_does_not_stop_the_join() -> None:
    s = Session()
    room = FakeRoom(s.node, "lobby", BOB, [BOB])
    room.messages = [Message("lobby", BOB, "old", False, 1e300, 1),
                     Message("lobby", BOB, None, False, NOW, 2),  # type: ignore[arg-type]
                     Message("lobby", DANGER, "new", False, NOW, 3)]
    s.node.remote_rooms["lobby"] = room
    lines = await s("/join lobby")
    assert lines[2:] == [
        "* ── 3 earlier messages ──",
        "????-??-?? ??:??:?? <bob> old",
        "* error: could not show an event (details in the log)",
        "12:00:01 <mal\ufffd[2J\ufffd[H\ufffd]0;pwned\ufffd\ufffd31m\ufffdlory#eeee> new",
    ]
    assert s.ctl.room is room


async def test_commands_show_hostile_room_and_peer_times() -> None:
    s = Session()
    room = await s.in_room(host=BOB)
    room.info = lambda: FakeRoomDetails(  # type: ignore[method-assign]
        f"lob{ESCAPES}by", BOB, 1, float("nan"), [ALICE, BOB], [1e300, -1e300], False, False, 1)
    assert await s("/uptime") == ["* up 1m 05s (since 2024-05-01 11:58:56); lob\ufffd[2J\ufffd[H"
                                  "\ufffd]0;pwned\ufffd\ufffd31m\ufffdby open for ?; host bob up"
                                  " 2h 00m 00s"]
    info = await s("/info")
    assert info[0].endswith("created ????-??-?? ??:??:??")
    assert "since ????-??-?? ??:??:??" in (await s("/info bob"))[2]
    assert all(safe_for_a_terminal(line) for line in info)


# --- both interfaces ----------------------------------------------------------------------


async def test_linemode_survives_hostile_events() -> None:
    from meshchat.tui.linemode import run_linemode

    node = FakeNode()
    read_fd, write_fd = os.pipe()
    out = io.StringIO()
    task = asyncio.create_task(run_linemode(node, StartOptions(), stdin_fd=read_fd, stdout=out))
    try:
        await until(lambda: len(node.queues) == 1)
        for ev in [*HOSTILE, *BROKEN, GOOD]:
            node.emit(ev)
        await until(lambda: "still here" in out.getvalue())
        os.write(write_fd, b"/quit\n")
        async with asyncio.timeout(5):
            await task
    finally:
        os.close(write_fd)
        await until(lambda: not any(t.name == "meshchat-stdin" for t in threading.enumerate()))
        os.close(read_fd)
    lines = out.getvalue().splitlines()
    assert "12:00:01 [lobby] <bob> still here" in lines
    assert lines.count("* error: could not show an event (details in the log)") == len(BROKEN)
    assert "\x1b" not in out.getvalue()
    assert lines[-1] == "* bye"


async def test_the_terminal_app_survives_hostile_events() -> None:
    from prompt_toolkit.data_structures import Size
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output.vt100 import Vt100_Output

    from meshchat.tui.app import ChatApp

    node = FakeNode()
    screen = io.StringIO()
    output = Vt100_Output(screen, lambda: Size(rows=24, columns=200), term="xterm")
    with create_pipe_input() as pipe:
        app = ChatApp(node, input=pipe, output=output)  # the real print path, real styles
        task = asyncio.create_task(app.run(StartOptions()))
        try:
            await until(lambda: len(node.queues) == 1 and "no rooms" in screen.getvalue())
            for ev in [*HOSTILE, *BROKEN, GOOD]:
                node.emit(ev)
            await until(lambda: "still here" in screen.getvalue())
            assert not task.done()
            assert app.controller.render_failures == len(BROKEN)
            pipe.send_text("/quit\r")
            async with asyncio.timeout(5):
                await task
        finally:
            task.cancel()
    written = screen.getvalue()
    assert "pwned" in written and "\x1b]0;pwned" not in written  # the text, never the escape
    assert "\x1b[2J" not in written and "\u202e" not in written
