"""The status bar (``tui.status``): its text at every width, the unread counts and transfers it
tracks, and Enter resetting the count of the view typed into; also on prompt_toolkit's pipe
input and ``DummyOutput`` through the real ``ChatApp``."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_toolkit.utils import get_cwidth

from meshchat import Limits, Message, PeerInfo, Transfer, TransferDone, TransferProgress
from meshchat.tui import status
from meshchat.tui.session import StartOptions
from tests.unit.uifake import ALICE, BOB, NOW, FakeNode, FakeRoom, msg, until

FULL = status.Snapshot(room="lobby", host="alice", members=3, locked=True, password=True,
                       you_host=True, unread=(("dev", 2),), private_unread=1)


def _transfer(state: str = "active", done: int = 45, tid: str = "1") -> Transfer:
    return Transfer(tid, "in", BOB, "a.iso", 100, 1, done, state)


def _cells(text: str) -> int:
    return sum(max(0, get_cwidth(ch)) for ch in text)


# --- the text ---------------------------------------------------------------------------------


def test_the_full_bar_shows_room_host_count_marks_unread_and_transfers() -> None:
    snap = status.Snapshot(room="lobby", host="alice", members=3, locked=True,
                           you_host=True, unread=(("dev", 2),), private_unread=1,
                           transfers=(_transfer(),))
    assert status.text(snap, 200) == (
        " lobby │ host alice │ 3 members │ locked │ you host │ dev:2 pm:1"
        " │ a.iso ← [####      ] 45% ")
    assert status.text(status.Snapshot(room="lobby", host="bob", members=1), 200) == (
        " lobby │ host bob │ 1 member ")
    assert status.text(status.Snapshot(), 200) == " no room (/join ROOM, /host ROOM) "


def test_a_narrow_bar_takes_short_forms_then_drops_parts_then_cuts() -> None:
    assert status.text(FULL, 59) == " lobby │ @alice │ 3m │ L P H │ dev:2 pm:1 "
    assert status.text(FULL, 30) == " lobby │ @alice │ 3m │ L P H "
    assert status.text(FULL, 16) == " lobby │ @alice "
    assert status.text(FULL, 15) == " lobby "
    assert status.text(FULL, 6) == " lobb…"
    assert status.text(status.Snapshot(), 20) == " no room "


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 200), room=st.text(max_size=60), host=st.text(max_size=40),
       unread=st.lists(st.tuples(st.text(max_size=30), st.integers(1, 10**6)), max_size=5),
       pm=st.integers(0, 10**6))
def test_the_bar_never_is_wider_than_asked_and_has_no_control_characters(
        width: int, room: str, host: str, unread: list[tuple[str, int]], pm: int) -> None:
    snap = status.Snapshot(room=room, host=host, members=2, unread=tuple(unread),
                           private_unread=pm, transfers=(_transfer(),))
    bar = status.text(snap, width)
    assert _cells(bar) <= width
    assert all(ch.isprintable() for ch in bar)
    line = status.line(snap, width)
    assert len(line) == 1 and _cells(line[0][1]) == width  # padded to the width


def test_the_bar_is_styled_as_an_alert_while_something_is_unread() -> None:
    assert status.line(status.Snapshot(room="lobby"), 40)[0][0] == "class:status"
    assert status.line(FULL, 40)[0][0] == "class:status.alert"
    assert status.line(status.Snapshot(private_unread=1), 40)[0][0] == "class:status.alert"


@pytest.mark.parametrize(("pct", "bar"), [
    (0, "[          ]"), (45, "[####      ]"), (100, "[##########]"), (250, "[##########]"),
    (-5, "[          ]"),
])
def test_progress_bar(pct: int, bar: str) -> None:
    assert status.progress_bar(pct) == bar


# --- the tracker ------------------------------------------------------------------------------


def test_unread_counts_other_joined_rooms_and_private_messages_only() -> None:
    t = status.Tracker(ALICE.fingerprint)
    joined = ["lobby", "dev"]
    t.observe(msg(BOB, "here", "lobby"), "lobby", joined)  # the current room: seen
    t.observe(msg(BOB, "there", "dev"), "lobby", joined)
    t.observe(msg(BOB, "again", "dev"), "lobby", joined)
    t.observe(msg(BOB, "elsewhere", "ops"), "lobby", joined)  # not joined: not counted
    t.observe(msg(ALICE, "mine", "dev"), "lobby", joined)  # my own
    t.observe(msg(BOB, "psst", None), "lobby", joined)
    t.observe(Message(None, ALICE, "mine", True, NOW), "lobby", joined)
    assert t.unread_in(joined, "lobby") == (("dev", 2),)
    assert t.private_unread == 1
    assert t.unread_in(["lobby"], "lobby") == ()  # dev left: its count goes
    assert t.unread == {}


def test_enter_resets_the_count_of_the_view_typed_into_only() -> None:
    t = status.Tracker(ALICE.fingerprint)
    joined = ["lobby", "dev", "ops"]
    for room in ("dev", "dev", "ops"):
        t.observe(msg(BOB, "x", room), "lobby", joined)
    t.observe(msg(BOB, "psst", None), "lobby", joined)
    t.read("lobby")  # a line said in lobby: dev, ops and the private count stay
    assert t.unread_in(joined, "lobby") == (("dev", 2), ("ops", 1)) and t.private_unread == 1
    t.read("lobby", private=True)  # a /msg: the private count starts again
    assert t.private_unread == 0 and t.unread_in(joined, "lobby") == (("dev", 2), ("ops", 1))
    t.read("dev")  # typed into dev (after /join dev)
    assert t.unread_in(joined, "dev") == (("ops", 1),)
    t.read(None)  # outside a room: nothing to reset
    assert t.unread_in(joined, None) == (("ops", 1),)


@pytest.mark.parametrize(("line", "view"), [
    ("hello", "room"), ("/me waves", "room"), ("/msg bob hi", "private"),
    ("/MSG bob,carol hi", "private"), ("/msg", "room"), ("/nope", "room"), ("", "room"),
    ("//msg is a chat line", "private"),  # //cmd is the command, as the parser says
])
def test_typed_into(line: str, view: str) -> None:
    assert status.typed_into(line) == view


def test_transfers_are_tracked_while_active_and_bounded() -> None:
    t = status.Tracker(ALICE.fingerprint, Limits(max_transfers=2))
    t.observe(TransferProgress(_transfer(tid="1")), None, [])
    t.observe(TransferProgress(_transfer(tid="2")), None, [])
    t.observe(TransferProgress(_transfer(tid="3")), None, [])
    assert [x.id for x in t.transfers] == ["2", "3"]  # the oldest went
    t.observe(TransferProgress(_transfer(tid="2", done=90)), None, [])
    assert [(x.id, x.done_bytes) for x in t.transfers] == [("3", 45), ("2", 90)]
    t.observe(TransferProgress(_transfer(state="done", tid="3")), None, [])
    t.observe(TransferDone(_transfer(state="done", tid="2")), None, [])
    assert t.transfers == ()


# --- through the app, on a pipe input and DummyOutput ----------------------------------------


async def test_the_app_shows_the_bar_and_enter_resets_only_the_typed_view() -> None:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from meshchat.tui.app import ChatApp

    node = FakeNode()
    dev = FakeRoom(node, "dev", BOB, [BOB, ALICE])
    with create_pipe_input() as pipe:
        app = ChatApp(node, input=pipe, output=DummyOutput(), sink=lambda line: None)
        task = asyncio.create_task(app.run(StartOptions(room="lobby")))
        try:
            await until(lambda: app.controller.room is not None)
            lobby = app.controller.room
            assert isinstance(lobby, FakeRoom)
            node.joined_rooms = lambda: [lobby, dev]  # type: ignore[method-assign]
            bar = "".join(text for _, text in app._message())
            assert bar.startswith(" lobby │ host alice │ 1 member │ you host")
            assert bar.endswith("[lobby] alice> ")

            node.emit(msg(BOB, "in dev", "dev"))
            node.emit(msg(BOB, "psst", None))
            await until(lambda: app.snapshot().unread == (("dev", 1),)
                        and app.snapshot().private_unread == 1)
            assert "dev:1 pm:1" in "".join(text for _, text in app._message())

            pipe.send_text("hello lobby\r")
            await until(lambda: lobby.said == ["hello lobby"])
            assert app.snapshot().unread == (("dev", 1),)  # lobby's Enter leaves dev's count
            assert app.snapshot().private_unread == 1
            pipe.send_text("/msg bob back to you\r")
            await until(lambda: node.sent == [("bob", "back to you")])
            assert app.snapshot().private_unread == 0
            assert app.snapshot().unread == (("dev", 1),)
            pipe.send_text("/quit\r")
            async with asyncio.timeout(5):
                await task
        finally:
            task.cancel()


def test_a_name_from_the_network_is_cleaned_and_cut_in_the_bar() -> None:
    evil = PeerInfo("\x1b[2J" + "x" * 100, "ffff000011112222")
    snap = status.Snapshot(room="lobby\x07", host=evil.name, members=2)
    bar = status.text(snap, 200)
    assert "\x1b" not in bar and "\x07" not in bar and "…" in bar
