"""Late joiners see the room's backlog, marked as earlier messages, and nothing twice (issue 6)."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from meshchat import JoinRefused, RoomInfo
from meshchat.tui import render
from meshchat.tui.session import StartOptions
from tests.unit.uifake import BOB, CAROL, NOW, FakeNode, FakeRoom, Session, msg, until

DAY_S = 86400.0


@pytest.fixture
async def s() -> AsyncIterator[Session]:
    """A session whose event pump runs, as in both interfaces."""
    session = Session()
    session.ctl.subscribe()
    pump = asyncio.create_task(session.ctl.pump_events())
    yield session
    pump.cancel()


async def drained(s: Session) -> None:
    """Every event emitted so far has been taken (and so shown or held) by the pump."""
    await until(lambda: all(q.empty() for q in s.node.queues))


def lobby(s: Session, count: int) -> FakeRoom:
    room = FakeRoom(s.node, "lobby", BOB, [BOB, CAROL])
    room.messages = [msg(BOB if i % 2 else CAROL, f"m{i}", seq=i) for i in range(1, count + 1)]
    s.node.remote_rooms["lobby"] = room
    return room


async def test_join_shows_the_backlog_under_a_separator_then_live_messages(s: Session) -> None:
    lobby(s, 3)
    assert await s("/join lobby") == [
        "* joining lobby…",
        "* joined lobby (host bob; members: bob, carol, alice)",
        "* ── 3 earlier messages ──",
        "12:00:01 <bob> m1",
        "12:00:01 <carol> m2",
        "12:00:01 <bob> m3",
    ]
    s.node.emit(msg(BOB, "m3", seq=3))  # a late live copy of a backlog line
    s.node.emit(msg(BOB, "live", seq=4))
    await until(lambda: s.lines[-1].endswith("live"))
    assert s.lines[-1] == "12:00:01 <bob> live"
    assert sum(line.endswith("m3") for line in s.lines) == 1


async def test_messages_arriving_during_the_join_come_after_the_backlog_once(
        s: Session) -> None:
    room = lobby(s, 2)

    async def live_while_joining(joined: FakeRoom) -> None:
        s.node.emit(msg(CAROL, "m2", seq=2))  # also in the backlog
        s.node.emit(msg(BOB, "in both", seq=3))
        s.node.emit(msg(CAROL, "only live", seq=4))
        s.node.emit(msg(BOB, "elsewhere", room="dev", seq=1))  # another room: not held
        await drained(s)
        joined.messages.append(msg(BOB, "in both", seq=3))  # the node logged it before returning

    s.node.join_hook = live_while_joining
    await s("/join lobby")
    s.node.emit(msg(BOB, "in both", seq=3))  # and once more after the join
    s.node.emit(msg(BOB, "after", seq=5))
    await until(lambda: s.lines[-1].endswith("after"))
    assert s.lines == [
        "* joining lobby…",
        "12:00:01 [dev] <bob> elsewhere",
        "* joined lobby (host bob; members: bob, carol, alice)",
        "* ── 3 earlier messages ──",
        "12:00:01 <bob> m1",
        "12:00:01 <carol> m2",
        "12:00:01 <bob> in both",
        "12:00:01 <carol> only live",
        "12:00:01 <bob> after",
    ]
    assert s.ctl.room is room


async def test_messages_held_during_a_failed_join_are_shown(s: Session) -> None:
    lobby(s, 1)

    async def emit_then_fail(name: str, password: str | None = None, /) -> FakeRoom:
        s.node.emit(msg(BOB, "meanwhile", seq=9))
        await drained(s)
        raise JoinRefused("password")

    s.node.join = emit_then_fail  # type: ignore[method-assign]
    lines = await s("/join lobby")
    assert lines == ["* joining lobby…", "12:00:01 [lobby] <bob> meanwhile",
                     "* error: lobby needs a password: /join lobby PASSWORD"]
    assert s.ctl.room is None


async def test_lines_from_another_day_show_their_date(s: Session) -> None:
    room = lobby(s, 0)
    room.messages = [replace(msg(BOB, "last week", seq=1), sent_at=NOW - 7 * DAY_S),
                     replace(msg(BOB, "yesterday", seq=2), sent_at=NOW - DAY_S),
                     msg(BOB, "today", seq=3)]
    lines = await s("/join lobby")
    assert lines[3:] == ["2024-04-24 12:00:01 <bob> last week",
                         "2024-04-30 12:00:01 <bob> yesterday", "12:00:01 <bob> today"]
    s.node.emit(replace(msg(BOB, "late", seq=4), sent_at=NOW - DAY_S))
    await until(lambda: s.lines[-1].endswith("late"))
    assert s.lines[-1] == "12:00:01 <bob> late"  # live lines keep the line-mode format


async def test_a_long_history_shows_its_last_200(s: Session) -> None:
    lobby(s, 300)
    lines = await s("/join lobby")
    assert lines[2] == "* ── 200 earlier messages (the last of 300; /save chat writes them all) ──"
    assert lines[3] == "12:00:01 <bob> m101" and lines[-1] == "12:00:01 <carol> m300"
    assert len(lines) == 3 + 200


async def test_one_earlier_message_and_none(s: Session) -> None:
    lobby(s, 1)
    assert (await s("/join lobby"))[2] == "* ── 1 earlier message ──"
    s.node.remote_rooms["dev"] = FakeRoom(s.node, "dev", BOB, [BOB])
    assert await s("/join dev") == ["* joining dev…",
                                    "* joined dev (host bob; members: bob, alice)"]


async def test_joining_again_shows_the_backlog_again(s: Session) -> None:
    room = lobby(s, 2)
    await s("/join lobby")
    s.node.emit(msg(BOB, "live", seq=3))
    await until(lambda: s.lines[-1].endswith("live"))
    room.messages.append(msg(BOB, "live", seq=3))
    await s("/leave")
    room.members.remove(s.node.me)
    lines = await s("/join lobby")
    assert lines[2:] == ["* ── 3 earlier messages ──", "12:00:01 <bob> m1", "12:00:01 <carol> m2",
                         "12:00:01 <bob> live"]


async def test_startup_with_room_shows_the_backlog(s: Session) -> None:
    lobby(s, 2)
    s.node.network_rooms = [RoomInfo("lobby", "bob", 2, False, host_fingerprint=BOB.fingerprint)]
    await s.ctl.startup(room="lobby")
    assert s.lines[3:] == ["* ── 2 earlier messages ──", "12:00:01 <bob> m1", "12:00:01 <carol> m2"]


async def test_linemode_join_prints_the_backlog_then_live_lines() -> None:
    from meshchat.tui.linemode import run_linemode

    node = FakeNode(network_rooms=[RoomInfo("lobby", "bob", 2, False)])
    room = FakeRoom(node, "lobby", BOB, [BOB, CAROL])
    now = time.time()  # line mode runs on the real clock: these are from today
    room.messages = [replace(msg(CAROL if i % 2 else BOB, f"hello {i}", seq=i), sent_at=now)
                     for i in range(1, 13)]
    node.remote_rooms["lobby"] = room
    read_fd, write_fd = os.pipe()
    out = io.StringIO()
    task = asyncio.create_task(run_linemode(node, StartOptions(room="lobby"), stdin_fd=read_fd,
                                            stdout=out))
    try:
        await until(lambda: "hello 12" in out.getvalue())
        node.emit(replace(msg(BOB, "hello 12", seq=12), sent_at=now))  # a backlog line again
        node.emit(replace(msg(BOB, "live one", seq=13), sent_at=now))
        await until(lambda: "live one" in out.getvalue())
        os.write(write_fd, b"/quit\n")
        async with asyncio.timeout(5):
            await task
    finally:
        os.close(write_fd)
        await until(lambda: not any(t.name == "meshchat-stdin" for t in threading.enumerate()))
        os.close(read_fd)
    lines = out.getvalue().splitlines()
    start = lines.index("* ── 12 earlier messages ──")
    assert lines[start - 1] == "* joined lobby (host bob; members: bob, carol, alice)"
    stamp = render.clock(now)
    assert lines[start + 1:start + 14] == [
        *(f"{stamp} <{'carol' if i % 2 else 'bob'}> hello {i}" for i in range(1, 13)),
        f"{stamp} <bob> live one",
    ]
    assert lines[-1] == "* bye"


async def test_the_terminal_app_shows_the_backlog() -> None:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from meshchat.tui.app import ChatApp

    node = FakeNode(network_rooms=[RoomInfo("lobby", "bob", 2, False)])
    room = FakeRoom(node, "lobby", BOB, [BOB])
    room.messages = [replace(msg(BOB, "before you came", seq=1), sent_at=time.time())]
    node.remote_rooms["lobby"] = room
    shown: list[str] = []
    with create_pipe_input() as pipe:
        app = ChatApp(node, input=pipe, output=DummyOutput(),
                      sink=lambda line: shown.append(render.plain(line)))
        task = asyncio.create_task(app.run(StartOptions(room="lobby")))
        try:
            await until(lambda: any(line.endswith("<bob> before you came") for line in shown))
            pipe.send_text("/quit\r")
            async with asyncio.timeout(5):
                await task
        finally:
            task.cancel()
    at = shown.index("* ── 1 earlier message ──")
    assert shown[at + 1] == f"{render.clock(room.messages[0].sent_at)} <bob> before you came"
