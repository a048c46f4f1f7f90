"""The interface on a fake node: controller, rendering, line mode and the prompt_toolkit app."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from meshchat import (
    BroadcastReceived,
    Event,
    HostChanged,
    JoinRefused,
    MemberRemoved,
    Notice,
    PeerDiscovered,
    PeerGone,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    Renamed,
    RenameTooSoon,
    RoomClosed,
    RoomInfo,
    RoomRenamed,
)
from meshchat.tui import render
from meshchat.tui.session import StartOptions
from tests.unit.uifake import (
    ALICE,
    BOB,
    BOB2,
    CAROL,
    NOW,
    FakeBan,
    FakeNode,
    FakeRoom,
    Session,
    msg,
    until,
)


@pytest.fixture
def s() -> Session:
    return Session()


# --- startup --------------------------------------------------------------------------------


async def test_startup_without_a_room_lists_the_rooms(s: Session) -> None:
    s.node.network_rooms = [RoomInfo("lobby", "bob", 1, False), RoomInfo("dev", "carol", 3, True,
                                                                         True)]
    await s.ctl.startup()
    assert s.lines == [
        "* you are alice (fp 74gqoyew), reachable at 10.0.0.1:47001",
        "* rooms: dev (carol, 3 members, locked, password), lobby (bob, 1 member)",
    ]


async def test_startup_says_when_there_are_no_rooms(s: Session) -> None:
    await s.ctl.startup()
    assert s.lines[1] == "* no rooms on the network yet (/host NAME opens one)"


async def test_startup_room_that_nobody_has_is_hosted(s: Session) -> None:
    await s.ctl.startup(room="lobby")
    assert s.lines[1:] == ["* no room lobby on the network: hosting it", "* hosting room lobby"]
    assert s.node.hosted == [("lobby", None, True)]
    assert s.ctl.room is not None and s.ctl.room.name == "lobby"


async def test_startup_room_that_exists_is_joined_and_its_history_shown(s: Session) -> None:
    room = FakeRoom(s.node, "lobby", BOB, [BOB, CAROL])
    room.messages = [msg(BOB, "earlier", seq=1), msg(CAROL, "later", seq=1)]
    s.node.remote_rooms["lobby"] = room
    s.node.network_rooms = [RoomInfo("lobby", "bob", 2, False)]
    await s.ctl.startup(room="lobby", password="pw")
    assert s.lines[1:] == [
        "* joining lobby…",
        "* joined lobby (host bob; members: bob, carol, alice)",
        "* ── 2 earlier messages ──",
        "12:00:01 <bob> earlier",
        "12:00:01 <carol> later",
    ]
    assert s.ctl.room is room
    # the same messages arriving as events are not shown twice; new ones are
    assert s.show(msg(BOB, "earlier", seq=1)) == []
    assert s.show(msg(BOB, "new", seq=2)) == ["12:00:01 <bob> new"]


async def test_startup_host_option_hosts_with_password(s: Session) -> None:
    await s.ctl.startup(host="lobby", password="pw")
    assert s.lines[1:] == ["* hosting room lobby (password protected)"]
    assert s.node.hosted == [("lobby", "pw", True)]


# --- chat -------------------------------------------------------------------------------------


async def test_a_chat_line_goes_to_the_room_and_is_echoed(s: Session) -> None:
    room = await s.in_room()
    assert await s("hello all") == ["12:00:01 <alice> hello all"]
    assert room.said == ["hello all"]
    assert await s("   ") == []
    assert room.said == ["hello all"]


async def test_me_is_an_action_line_in_the_room(s: Session) -> None:
    room = await s.in_room()
    assert await s("/me waves") == ["12:00:01 * alice waves"]
    assert room.said == ["/me waves"]
    assert await s("/me") == ["* error: usage: /me TEXT"]


async def test_a_chat_line_outside_a_room_is_one_error_line(s: Session) -> None:
    assert await s("hello") == [
        "* error: you are not in a room (/join ROOM or /host ROOM; /rooms lists them)"
    ]


async def test_private_messages(s: Session) -> None:
    assert await s("/msg bob psst") == ["12:00:01 [private] <alice → bob> psst"]
    assert await s("/msg bob,carol hi both") == ["12:00:01 [private] <alice → bob,carol> hi both"]
    assert s.node.sent == [("bob", "psst"), (["bob", "carol"], "hi both")]


async def test_private_message_to_an_unknown_or_ambiguous_name(s: Session) -> None:
    assert await s("/msg zed hi") == ["* error: no peer called 'zed'"]
    s.node.known.append(BOB2)
    out = await s("/msg bob hi")
    assert len(out) == 1
    assert out[0].startswith("* error: 'bob' is ambiguous: bob (bbbbcccc), bob (dddd0000)")
    assert out[0].endswith("— use a fingerprint prefix")
    # name#fp4, as shown when names clash, reaches the right one
    assert await s("/msg bob#dddd hi") == ["12:00:01 [private] <alice → bob#dddd> hi"]
    assert s.node.sent == [("dddd", "hi")]


async def test_own_events_are_not_shown_twice(s: Session) -> None:
    await s.in_room()
    assert s.show(msg(ALICE, "mine")) == []
    assert s.show(BroadcastReceived(ALICE, "mine", NOW)) == []
    assert s.show(PeerJoined("lobby", ALICE)) == []
    assert s.show(Renamed(ALICE, "alice", "alicia")) == []
    assert s.show(HostChanged("lobby", ALICE, BOB, 2)) == []
    assert s.show(MemberRemoved("lobby", BOB, ALICE, "", False)) == []
    assert await s("/leave") == ["* you left lobby"]
    assert s.show(Notice("you left lobby")) == []
    assert s.show(Notice("something else")) == ["* something else"]


# --- rendering ----------------------------------------------------------------------------


def view(current: str | None = "lobby", clash: Sequence[str] = ()) -> render.View:
    return render.View(ALICE.fingerprint, current, lambda name: name in clash)


@pytest.mark.parametrize(("event", "line"), [
    (msg(BOB, "hello"), "12:00:01 <bob> hello"),
    (msg(BOB, "hello", room="dev"), "12:00:01 [dev] <bob> hello"),
    (msg(BOB, "psst", room=None, to=(ALICE,)), "12:00:01 [private] <bob → you> psst"),
    (msg(BOB, "psst", room=None), "12:00:01 [private] <bob → you> psst"),
    (msg(BOB, "hi", room=None, to=(ALICE, CAROL)), "12:00:01 [private] <bob → you,carol> hi"),
    (msg(BOB, "two\nlines\x1b[31m"), "12:00:01 <bob> two ↵ lines\ufffd[31m"),
    (dataclasses.replace(msg(BOB, "waves"), action=True), "12:00:01 * bob waves"),
    (dataclasses.replace(msg(BOB, "waves", room="dev"), action=True), "12:00:01 [dev] * bob waves"),
    (PeerJoined("lobby", BOB), "* bob joined lobby"),
    (PeerLeft("lobby", BOB, "left"), "* bob left lobby"),
    (PeerLeft("lobby", BOB, "quit"), "* bob left lobby (quit)"),
    (PeerLeft("lobby", BOB, "vanished"), "* bob left lobby (vanished)"),
    (PeerLeft("lobby", BOB, "kicked"), None),
    (HostChanged("lobby", BOB, CAROL, 2), "* carol is now the host of lobby (was bob)"),
    (HostChanged("lobby", BOB, ALICE, 2), "* you are now the host of lobby (was bob)"),
    (HostChanged("lobby", None, CAROL, 1), "* carol is now the host of lobby"),
    (MemberRemoved("lobby", CAROL, BOB, "spam", False),
     "* carol was kicked from lobby by bob: spam"),
    (MemberRemoved("lobby", CAROL, BOB, "", True), "* carol was banned from lobby by bob"),
    (MemberRemoved("lobby", ALICE, BOB, "bye", True), "* you were banned from lobby by bob: bye"),
    (RoomClosed("lobby"), "* room lobby was closed"),
    (RoomRenamed("hall", "lobby", "hall"), "* room lobby is now called hall"),
    (Renamed(BOB, "bobby", "bob"), "* bobby is now known as bob (bbbbcccc)"),
    (PeerDiscovered(BOB), "* bob is on the network"),
    (PeerGone(BOB, "quit"), "* bob left the network"),
    (PeerGone(BOB, "vanished"), "* bob vanished from the network"),
    (BroadcastReceived(BOB, "coffee", NOW), "* [broadcast] bob: coffee"),
    (Notice("the network healed"), "* the network healed"),
    (Notice("key changed", "warning"), "* warning: key changed"),
])
def test_event_lines(event: Event, line: str | None) -> None:
    rendered = render.event(event, view())
    assert (None if rendered is None else render.plain(rendered)) == line


def test_clashing_names_show_a_fingerprint_prefix() -> None:
    line = render.event(msg(BOB2, "hi"), view(clash=["bob"]))
    assert line is not None and render.plain(line) == "12:00:01 <bob#dddd> hi"


async def test_the_controller_knows_when_names_clash(s: Session) -> None:
    assert not s.ctl.names_clash("bob")
    s.node.known.append(BOB2)
    assert s.ctl.names_clash("bob")
    assert s.show(PeerJoined("lobby", BOB2)) == ["* bob#dddd joined lobby"]
    assert {"bob#bbbb", "bob#dddd", "carol"} <= set(s.ctl.completion_names())


def test_name_styles_use_the_chosen_colour_or_one_from_the_key() -> None:
    assert render.name_style(ALICE) == "class:name bold ansiblue"
    hexed = PeerInfo("x", "ffff", color="#ff8800")
    assert render.name_style(hexed) == "class:name bold fg:#ff8800"
    assert render.name_style(BOB) == render.name_style(PeerInfo("other", BOB.fingerprint))


def test_durations() -> None:
    assert render.duration(45) == "45s"
    assert render.duration(184) == "3m 04s"
    assert render.duration(7201) == "2h 00m 01s"
    assert render.duration(93784) == "1d 02h 03m 04s"


# --- commands against the node ------------------------------------------------------------


async def test_join_errors_are_one_clear_line(s: Session) -> None:
    assert (await s("/join nowhere"))[-1] == (
        "* error: no room nowhere on the network (/rooms lists them)")
    s.node.join_error = JoinRefused("password")
    assert (await s("/join lobby"))[-1] == (
        "* error: lobby needs a password: /join lobby PASSWORD")
    assert (await s("/join lobby wrong"))[-1] == "* error: wrong password for lobby"
    s.node.join_error = JoinRefused("banned")
    assert (await s("/join lobby"))[-1] == "* error: you are banned from lobby"
    s.node.join_error = JoinRefused("locked")
    assert (await s("/join lobby"))[-1] == "* error: lobby is locked: nobody new can join"
    assert s.ctl.room is None


async def test_joining_another_room_leaves_the_current_one(s: Session) -> None:
    old = await s.in_room()
    s.node.remote_rooms["dev"] = FakeRoom(s.node, "dev", BOB, [BOB])
    await s("/join dev")
    await until(lambda: old.left)
    assert s.ctl.room is s.node.remote_rooms["dev"]
    assert "* you left lobby" in s.lines
    assert (await s("/join dev")) == ["* error: you are already in dev"]


async def test_usage_and_unknown_command_lines(s: Session) -> None:
    assert await s("/msg") == ["* error: usage: /msg NAME[,NAME...] TEXT"]
    assert await s("/foo") == ["* error: unknown command /foo — /help lists them"]


async def test_unexpected_failures_are_one_line_too(s: Session) -> None:
    room = await s.in_room()

    async def broken(text: str, /) -> None:
        raise RuntimeError("disk on fire")

    room.say = broken  # type: ignore[method-assign]
    assert await s("hi") == ["* error: unexpected RuntimeError: disk on fire"]


async def test_list_inside_and_outside_a_room(s: Session) -> None:
    s.node.network_rooms = [RoomInfo("lobby", "alice", 2, False)]
    assert await s("/list") == ["* rooms: lobby (alice, 2 members)"]
    await s.in_room(members=(ALICE, BOB, CAROL))
    assert await s("/list") == ["* members of lobby (3): alice (host, you), bob, carol"]
    assert await s("/rooms") == ["* rooms: lobby (alice, 2 members)"]


async def test_host_and_test_server(s: Session) -> None:
    assert await s("/host dev pw") == ["* hosting room dev (password protected)"]
    assert await s("/test server") == ["* hosting room test (a local test server: not announced)"]
    assert s.node.hosted == [("dev", "pw", True), ("test", None, False)]


async def test_moderation_as_host(s: Session) -> None:
    room = await s.in_room(members=(ALICE, BOB, CAROL))
    assert await s("/kick bob too loud") == ["* bob was kicked from lobby by you: too loud"]
    assert await s("/ban carol") == ["* carol was banned from lobby by you"]
    assert await s("/unban carol") == ["* carol is no longer banned from lobby"]
    assert await s("/lock") == ["* lobby is locked: nobody new can join"]
    assert await s("/unlock") == ["* lobby is unlocked"]
    assert await s("/new password s3cret") == ["* lobby now needs a password"]
    assert await s("/new password") == ["* lobby no longer needs a password"]
    assert room.calls == [("kick", "bob", "too loud"), ("ban", "carol", ""), ("unban", "carol"),
                          ("lock",), ("unlock",), ("password", "s3cret"), ("password", "")]
    room.bans = [FakeBan("carol", CAROL.fingerprint, "spam")]
    assert await s("/banned-users") == ["* banned from lobby: carol (cccc000011112222): spam"]
    assert await s("/user-count") == ["* 3 users in lobby"]
    assert await s("/users") == [
        "* 3 users in lobby:",
        "*   alice (host, you, fp 74gqoyew, 10.0.0.1)",
        "*   bob (fp bbbbcccc, 10.0.0.2)",
        "*   carol (fp cccc0000, 10.0.0.3)",
    ]


async def test_handoff_rename_and_close(s: Session) -> None:
    room = await s.in_room()
    assert await s("/new host bob") == ["* bob is now the host of lobby"]
    assert room.host == BOB
    room.host = ALICE
    assert await s("/new host 10.0.0.2 47001") == ["* bob is now the host of lobby"]
    assert room.calls[-1] == ("handoff", BOB.fingerprint)
    room.host = ALICE
    assert await s("/new servername hall") == ["* room lobby is now called hall"]
    assert s.show(RoomRenamed("hall", "lobby", "hall")) == []
    assert await s("/delete-channel other") == [
        "* error: you can only close the room you are in (hall)"]
    assert await s("/close") == ["* you closed hall"]
    assert s.ctl.room is None
    assert s.show(RoomClosed("hall")) == []


@pytest.mark.parametrize(("line", "what"), [
    ("/kick bob", "kick"), ("/ban bob", "ban"), ("/unban bob", "unban"),
    ("/lock", "lock the room"), ("/unlock", "unlock the room"), ("/close", "close the room"),
    ("/new host carol", "hand the room over"), ("/new servername x", "rename the room"),
    ("/new password x", "change the password"), ("/banned", "list the bans"),
    ("/users", "list the users"), ("/user-count", "count the users"),
])
async def test_host_only_commands_from_a_member(s: Session, line: str, what: str) -> None:
    await s.in_room(host=BOB)
    assert await s(line) == [f"* error: only the host can {what}"]


async def test_kicked_or_closed_room_is_no_longer_current(s: Session) -> None:
    await s.in_room(host=BOB)
    assert s.show(MemberRemoved("lobby", ALICE, BOB, "", False)) == [
        "* you were kicked from lobby by bob"]
    assert s.ctl.room is None
    await s.in_room(host=BOB)
    assert s.show(RoomClosed("lobby")) == ["* room lobby was closed"]
    assert s.ctl.room is None


async def test_colour_and_rename(s: Session) -> None:
    assert (await s("/myColor"))[0].startswith("* your colour is blue (choose from red, green")
    assert await s("/myColor Gelb") == ["* your colour is now yellow"]
    assert s.node.colors == ["yellow"]
    assert await s("/rename alicia") == ["* you are now known as alicia"]
    s.node.rename_error = RenameTooSoon(datetime(2024, 5, 8, 12, 0).timestamp())
    assert await s("/rename al") == ["* error: you can rename again from 2024-05-08 12:00"]


async def test_info_about_a_peer_and_the_room(s: Session) -> None:
    await s.in_room()
    assert await s("/info bob") == [
        "* bob (fp bbbbcccc11112222), colour default",
        "*   addresses: 10.0.0.2; ports: router 47001, pub 47002, card 47003",
        "*   first seen 2024-04-30 12:00:01, running since 2024-05-01 10:00:01,"
        " in lobby since 2024-05-01 11:00:02",
        "*   former names: bobby",
    ]
    assert await s("/info") == [
        "* room lobby: host alice, term 1, version 7, created 2024-05-01 11:00:01",
        "*   2 members: alice (host, you), bob",
        "*   locked: no, password: no",
    ]
    assert await s("/info zed") == ["* error: no peer or room called 'zed'"]


async def test_whoami_uptime_version_ping(s: Session) -> None:
    assert await s("/whoami") == [
        "* you are alice (fp 74gqoyewaaaaaaaa), colour blue, reachable at 10.0.0.1:47001",
        "*   not in a room; up 1m 05s; data in /tmp/meshchat-test",
    ]
    assert await s("/uptime") == ["* up 1m 05s (since 2024-05-01 11:58:56)"]
    assert (await s("/version"))[0].startswith("* meshchat ")
    assert await s("/ping bob") == ["* ping bob: 1.23 ms"]
    assert await s("/ping") == ["* error: usage: /ping NAME|ROOM (outside a room, name whom)"]
    await s.in_room(host=BOB)
    assert await s("/ping") == ["* ping lobby (host bob): 1.23 ms"]
    assert await s("/uptime") == [
        "* up 1m 05s (since 2024-05-01 11:58:56); lobby open for 1h 00m 00s; host bob up"
        " 2h 00m 00s"
    ]
    assert s.node.pinged == ["bob", "bob"]


async def test_broadcast_help_send_file_and_quit(s: Session) -> None:
    assert await s("/broadcast coffee") == ["* [broadcast] alice: coffee"]
    assert s.node.broadcasts == ["coffee"]
    help_lines = await s("/help")
    assert help_lines[0].startswith("* /help [COMMAND]")
    assert any(line.startswith("* /kick NAME [REASON]") for line in help_lines)
    assert await s("/help kick") == [
        "* /kick NAME [REASON]  (host only) remove a member from the room"]
    assert await s("/send file bob notes.txt") == [
        "* offered notes.txt (1.2 KiB) to bob — /cancel 1"]
    assert await s("/files") == ["* no file transfers"]
    assert not s.ctl.quit_requested
    assert await s("/quit") == ["* bye"]
    assert s.ctl.quit_requested


async def test_save_chat_writes_the_history(s: Session, tmp_path: Path) -> None:
    room = await s.in_room()
    room.messages = [msg(BOB, "one"), msg(ALICE, "two", seq=1)]
    target = tmp_path / "chat.txt"
    assert await s(f"/save chat {target}") == [f"* saved 2 messages of lobby to {target}"]
    assert target.read_text(encoding="utf-8").splitlines() == [
        "# meshchat: room lobby, saved 2024-05-01 12:00:01",
        "2024-05-01 12:00:01 <bob> one",
        "2024-05-01 12:00:01 <alice> two",
    ]
    assert await s(f"/save chat {tmp_path / 'missing' / 'x.txt'}") == [
        f"* error: No such file or directory ({tmp_path / 'missing' / 'x.txt'})"]


async def test_events_are_pumped_from_the_node(s: Session) -> None:
    s.ctl.subscribe()
    pump = asyncio.create_task(s.ctl.pump_events())
    try:
        s.node.emit(PeerJoined("lobby", BOB))
        s.node.emit(msg(BOB, "hi"))
        await until(lambda: len(s.lines) == 2)
        assert s.lines == ["* bob joined lobby", "12:00:01 [lobby] <bob> hi"]
    finally:
        pump.cancel()


# --- line mode ------------------------------------------------------------------------------


class Pipe:
    """The write end of the pipe a line-mode session reads as its stdin."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def write(self, text: str) -> None:
        assert self.fd is not None
        os.write(self.fd, text.encode())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def _run_linemode(node: FakeNode, options: StartOptions,
                        feed: Callable[[Pipe], Awaitable[None]]) -> list[str]:
    from meshchat.tui.linemode import run_linemode

    read_fd, write_fd = os.pipe()
    pipe = Pipe(write_fd)
    out = io.StringIO()
    task = asyncio.create_task(run_linemode(node, options, stdin_fd=read_fd, stdout=out))
    try:
        await feed(pipe)
        async with asyncio.timeout(5):
            await task
    finally:
        pipe.close()  # the reader thread sees the end of input and stops
        await until(lambda: not any(t.name == "meshchat-stdin" for t in threading.enumerate()))
        os.close(read_fd)
    return out.getvalue().splitlines()


async def test_linemode_runs_lines_until_end_of_input() -> None:
    node = FakeNode()

    async def feed(pipe: Pipe) -> None:
        await until(lambda: len(node.hosted) == 1)
        pipe.write("hello\n/msg bob psst\n/nope\n")
        pipe.close()

    lines = await _run_linemode(node, StartOptions(room="lobby"), feed)
    stamp = lines[3][:8]  # the echo carries the local time of sending
    assert lines == [
        "* you are alice (fp 74gqoyew), reachable at 10.0.0.1:47001",
        "* no room lobby on the network: hosting it",
        "* hosting room lobby",
        f"{stamp} <alice> hello",
        f"{stamp} [private] <alice → bob> psst",
        "* error: unknown command /nope — /help lists them",
    ]


async def test_linemode_shows_events_while_waiting_for_input_and_quits_on_quit() -> None:
    node = FakeNode()

    async def feed(pipe: Pipe) -> None:
        await until(lambda: len(node.queues) == 1)
        node.emit(PeerDiscovered(BOB))
        pipe.write("/quit\n")  # the pipe stays open: /quit alone ends the session

    lines = await _run_linemode(node, StartOptions(), feed)
    assert "* bob is on the network" in lines
    assert lines[-1] == "* bye"


def test_line_reader_handles_partial_lines_and_bad_bytes() -> None:
    from meshchat.tui.linemode import LineReader

    async def main() -> list[str | None]:
        read_fd, write_fd = os.pipe()
        reader = LineReader(read_fd)
        reader.start()
        os.write(write_fd, b"one\r\ntw")
        os.write(write_fd, b"o\n\xffbad\nlast")
        os.close(write_fd)
        got = [await reader.readline() for _ in range(5)]
        os.close(read_fd)
        return got

    assert asyncio.run(main()) == ["one", "two", "\ufffdbad", "last", None]


# --- the prompt_toolkit app ---------------------------------------------------------------


async def test_app_sends_typed_lines_and_completes_with_tab() -> None:
    pytest.importorskip("prompt_toolkit")
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from meshchat.tui.app import ChatApp

    node = FakeNode(known=[PeerInfo("Maximilian", "mmmm000011112222", ("10.0.0.9",), b"m"),
                           BOB])
    shown: list[str] = []
    with create_pipe_input() as pipe:
        app = ChatApp(node, input=pipe, output=DummyOutput(),
                      sink=lambda line: shown.append(render.plain(line)))
        task = asyncio.create_task(app.run(StartOptions(room="lobby")))
        try:
            await until(lambda: "* hosting room lobby" in shown)
            assert app.controller.room is not None
            room = app.controller.room
            assert isinstance(room, FakeRoom)

            pipe.send_text("hello there\r")
            await until(lambda: room.said == ["hello there"])

            buffer = app.session.default_buffer
            pipe.send_text("/ms\t")
            await until(lambda: buffer.text == "/msg")
            pipe.send_text(" Ma\t")
            await until(lambda: buffer.text == "/msg Maximilian")
            pipe.send_text(" servus\r")
            await until(lambda: node.sent == [("Maximilian", "servus")])
            assert shown[-1].endswith("[private] <alice → Maximilian> servus")

            node.emit(PeerJoined("lobby", BOB))
            await until(lambda: "* bob joined lobby" in shown)
            pipe.send_text("/quit\r")
            async with asyncio.timeout(5):
                await task
        finally:
            task.cancel()
    assert shown[-1] == "* bye"


async def test_app_ends_at_end_of_input() -> None:
    pytest.importorskip("prompt_toolkit")
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from meshchat.tui.app import ChatApp

    with create_pipe_input() as pipe:
        app = ChatApp(FakeNode(), input=pipe, output=DummyOutput(), sink=lambda line: None)
        task = asyncio.create_task(app.run(StartOptions()))
        pipe.send_text("\x04")  # Ctrl-D on an empty line
        async with asyncio.timeout(5):
            await task


async def test_a_stop_signal_ends_the_app() -> None:
    pytest.importorskip("prompt_toolkit")
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from meshchat.tui.app import ChatApp

    stop = asyncio.Event()
    shown: list[str] = []
    with create_pipe_input() as pipe:
        app = ChatApp(FakeNode(), input=pipe, output=DummyOutput(),
                      sink=lambda line: shown.append(render.plain(line)))
        task = asyncio.create_task(app.run(StartOptions(), stop))
        await until(lambda: len(shown) >= 2)
        stop.set()
        async with asyncio.timeout(5):
            await task
