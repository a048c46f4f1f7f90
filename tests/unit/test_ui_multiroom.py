"""The terminal interface is in several rooms at once (issue 11: unread counts for the other
rooms you are in); line mode stays in one room at a time."""

from __future__ import annotations

import asyncio

import pytest

from meshchat import MemberRemoved, PeerInfo, RoomClosed
from meshchat.tui.controller import Controller
from meshchat.tui.session import StartOptions
from tests.unit.uifake import ALICE, BOB, CAROL, NOW, FakeNode, FakeRoom, msg, until

DORA = PeerInfo("dora", "3smwxyz1abcdefgh", ("10.0.0.5",), b"3")


class RoomsNode(FakeNode):
    """A fake node that remembers the rooms it joined, as the real one does."""

    def __init__(self) -> None:
        super().__init__()
        self.rooms_in: list[FakeRoom] = []
        for name, host in (("lobby", BOB), ("dev", CAROL), ("ops", DORA)):
            self.remote_rooms[name] = LeavingRoom(self, name, host, [host])

    async def join(self, name: str, password: str | None = None, /) -> FakeRoom:
        room = await super().join(name, password)
        if room not in self.rooms_in:
            self.rooms_in.append(room)
        return room

    def joined_rooms(self) -> list[FakeRoom]:
        return list(self.rooms_in)


class LeavingRoom(FakeRoom):
    async def leave(self) -> None:
        await super().leave()
        assert isinstance(self.node, RoomsNode)
        self.node.rooms_in.remove(self)


def session(*, keep_rooms: bool = True) -> tuple[RoomsNode, Controller, list[str]]:
    node = RoomsNode()
    lines: list[str] = []
    return node, Controller(node, lines.append, now=lambda: NOW, keep_rooms=keep_rooms), lines


async def run(ctl: Controller, lines: list[str], line: str) -> list[str]:
    start = len(lines)
    await ctl.handle_line(line)
    return lines[start:]


async def test_joining_a_second_room_keeps_the_first_and_join_switches_back() -> None:
    node, ctl, lines = session()
    await run(ctl, lines, "/join lobby")
    await run(ctl, lines, "/join dev")
    lobby, dev = node.remote_rooms["lobby"], node.remote_rooms["dev"]
    assert ctl.room is dev and not lobby.left
    assert node.joined_rooms() == [lobby, dev]

    assert await run(ctl, lines, "/join lobby") == [
        "* you are in lobby now (host bob; 2 members)"]
    assert node.joined == ["lobby", "dev"]  # nothing was joined again
    assert ctl.room is lobby
    await run(ctl, lines, "hello lobby")
    assert lobby.said == ["hello lobby"] and dev.said == []
    assert ctl.prompt()[0] == ("class:room", "[lobby] ")
    assert await run(ctl, lines, "/join lobby") == ["* error: you are already in lobby"]


async def test_a_line_of_another_room_shows_its_name() -> None:
    _node, ctl, lines = session()
    await run(ctl, lines, "/join lobby")
    await run(ctl, lines, "/join dev")
    start = len(lines)
    ctl.show_event(msg(BOB, "over here", "lobby", seq=3))
    ctl.show_event(msg(CAROL, "and here", "dev", seq=4))
    assert lines[start:] == ["12:00:01 [lobby] <bob> over here", "12:00:01 <carol> and here"]


async def test_step_room_walks_the_joined_rooms_and_wraps() -> None:
    _node, ctl, lines = session()
    ctl.step_room(1)
    assert lines[-1] == "* you are in no room (/join ROOM or /host ROOM)"
    await run(ctl, lines, "/join lobby")
    ctl.step_room(1)
    assert lines[-1] == "* you are in no other room (/join ROOM joins one and keeps this one)"
    await run(ctl, lines, "/join dev")
    await run(ctl, lines, "/join ops")
    names = []
    for by in (1, 1, 1, -1, -1):
        ctl.step_room(by)
        assert ctl.room is not None
        names.append(ctl.room.name)
    assert names == ["lobby", "dev", "ops", "dev", "lobby"]


async def test_leave_and_close_go_back_to_the_room_used_before() -> None:
    node, ctl, lines = session()
    for name in ("lobby", "dev", "ops"):
        await run(ctl, lines, f"/join {name}")
    await run(ctl, lines, "/join lobby")  # used order now: dev, ops, lobby
    assert await run(ctl, lines, "/leave") == [
        "* you left lobby", "* you are in ops now (host dora; 2 members)"]
    assert await run(ctl, lines, "/leave") == [
        "* you left ops", "* you are in dev now (host carol; 2 members)"]
    assert await run(ctl, lines, "/leave") == ["* you left dev"]
    assert ctl.room is None and node.joined_rooms() == []


async def test_a_room_that_ends_under_us_hands_over_after_its_line() -> None:
    node, ctl, lines = session()
    await run(ctl, lines, "/join lobby")
    await run(ctl, lines, "/join dev")
    dev = node.remote_rooms["dev"]
    node.rooms_in.remove(dev)  # the node left it: the host closed it
    start = len(lines)
    ctl.show_event_safely(RoomClosed("dev"))
    assert lines[start:] == ["* room dev was closed",
                             "* you are in lobby now (host bob; 2 members)"]

    await run(ctl, lines, "/join ops")
    ops = node.remote_rooms["ops"]
    node.rooms_in.remove(ops)
    start = len(lines)
    ctl.show_event_safely(MemberRemoved("ops", ALICE, DORA, "spam", True))
    assert lines[start:] == ["* you were banned from ops by dora: spam",
                             "* you are in lobby now (host bob; 2 members)"]
    ctl.show_event_safely(RoomClosed("dev"))  # not the current room: nothing changes
    assert ctl.room is node.remote_rooms["lobby"]


async def test_two_joined_rooms_of_one_name_are_told_apart_by_fingerprint() -> None:
    node, ctl, lines = session()
    other = LeavingRoom(node, "lobby", DORA, [DORA])
    node.remote_rooms["lobby#3smw"] = other
    await run(ctl, lines, "/join lobby")
    await run(ctl, lines, "/join lobby#3smw")
    await run(ctl, lines, "/join dev")
    assert await run(ctl, lines, "/join lobby") == [
        "* error: you are in two rooms called lobby: /join lobby#FP picks one"]
    assert await run(ctl, lines, "/join lobby#3smw") == [
        "* you are in lobby now (host dora; 2 members)"]
    assert ctl.room is other


async def test_line_mode_stays_in_one_room_at_a_time() -> None:
    node, ctl, lines = session(keep_rooms=False)
    await run(ctl, lines, "/join lobby")
    await run(ctl, lines, "/join dev")
    await until(lambda: node.remote_rooms["lobby"].left)
    assert node.joined_rooms() == [node.remote_rooms["dev"]]
    assert await run(ctl, lines, "/leave") == ["* you left dev"]
    assert ctl.room is None


@pytest.mark.parametrize(("key", "expected"), [("\x1b[1;3C", "lobby"), ("\x1b[1;3D", "lobby")])
async def test_alt_arrows_switch_rooms_and_the_bar_lists_the_others(key: str,
                                                                    expected: str) -> None:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from meshchat.tui.app import ChatApp

    node = RoomsNode()
    shown: list[str] = []
    with create_pipe_input() as pipe:
        app = ChatApp(node, input=pipe, output=DummyOutput(),
                      sink=lambda line: shown.append("".join(t for _, t in line)))
        task = asyncio.create_task(app.run(StartOptions()))
        try:
            pipe.send_text("/join lobby\r")
            await until(lambda: app.controller.room is node.remote_rooms["lobby"])
            pipe.send_text("/join dev\r")
            await until(lambda: app.controller.room is node.remote_rooms["dev"])
            node.emit(msg(BOB, "in lobby", "lobby", seq=5))
            await until(lambda: app.snapshot().unread == (("lobby", 1),))
            bar = "".join(text for _, text in app._message())
            assert bar.startswith(" dev │ host carol │ 2 members │ lobby:1 ")

            pipe.send_text(key)  # two rooms: either way is the other one
            await until(lambda: app.controller.room is node.remote_rooms[expected])
            assert "* you are in lobby now (host bob; 2 members)" in shown
            assert app.snapshot().unread == ()
            bar = "".join(text for _, text in app._message())
            assert bar.startswith(" lobby │ host bob │ 2 members │ dev ")
            assert bar.endswith("[lobby] alice> ")
            pipe.send_text("/quit\r")
            async with asyncio.timeout(5):
                await task
        finally:
            task.cancel()
