"""``/away`` in the interface (issue 11), on the fake node: the command, the lines for the away
events and automatic replies, and the away text in /list, /info and /whoami."""

from __future__ import annotations

import dataclasses

import pytest

from meshchat import AwayChanged, Message
from meshchat.tui import render, status
from tests.unit.uifake import ALICE, BOB, CAROL, NOW, Session


@pytest.fixture
def s() -> Session:
    return Session()


BOB_AWAY = dataclasses.replace(BOB, away="lunch")


async def test_away_and_back(s: Session) -> None:
    assert await s("/away  out for   lunch") == [
        "* you are away: out for lunch (a private message to you gets this back;"
        " /away alone: back)"]
    assert s.node.me.away == "out for lunch"
    assert s.show(AwayChanged(s.node.me, "out for lunch")) == []  # said already
    assert (await s("/whoami"))[1] == "*   you are away: out for lunch (/away alone: back)"
    assert await s("/away") == ["* you are back"]
    assert s.node.me.away is None
    assert len(await s("/whoami")) == 2


async def test_away_errors_are_one_line(s: Session) -> None:
    def refuse(text: str | None, /) -> None:
        from meshchat import MeshchatError
        raise MeshchatError("an away text is at most 200 characters")

    s.node.set_away = refuse  # type: ignore[method-assign]
    assert await s("/away " + "x" * 300) == ["* error: an away text is at most 200 characters"]


async def test_a_peer_going_away_and_back_is_shown(s: Session) -> None:
    await s.in_room(members=(ALICE, BOB))
    assert s.show(AwayChanged(BOB_AWAY, "lunch")) == ["* bob is away: lunch"]
    assert s.show(AwayChanged(BOB, None)) == ["* bob is back"]
    hostile = dataclasses.replace(BOB, away="\x1b[2Jx")
    assert s.show(AwayChanged(hostile, "\x1b[2Jx\n")) == ["* bob is away: \ufffd[2Jx ↵ "]


async def test_only_peers_near_us_have_their_away_changes_shown(s: Session) -> None:
    """A member of our room, or someone we talked to privately; not the whole LAN."""
    carol_away = dataclasses.replace(CAROL, away="gym")
    assert s.show(AwayChanged(carol_away, "gym")) == []  # a stranger to our rooms
    await s.in_room(members=(ALICE, BOB))
    assert s.show(AwayChanged(carol_away, "gym")) == []  # not in this room either
    s.show(Message(None, CAROL, "hi", True, NOW, 0, (ALICE,)))  # she wrote to us
    assert s.show(AwayChanged(carol_away, "gym")) == ["* carol is away: gym"]
    fresh = Session()
    await fresh("/msg carol are you there?")  # we wrote to her
    assert fresh.show(AwayChanged(carol_away, "gym")) == ["* carol is away: gym"]


def test_an_auto_reply_is_an_away_line_that_neither_rings_nor_counts_as_unread() -> None:
    rings: list[int] = []
    s = Session()
    s.ctl._alert = lambda: rings.append(1)
    reply = Message(None, BOB_AWAY, "lunch", True, NOW, 0, (ALICE,), auto=True)
    assert s.show(reply) == ["* bob is away: lunch"]
    assert rings == []
    normal = Message(None, BOB, "psst", True, NOW, 0, (ALICE,))
    assert s.show(normal)[0].endswith("[private] <bob → you> psst")
    assert rings == [1]

    tracker = status.Tracker(ALICE.fingerprint)
    tracker.observe(reply, "lobby", ["lobby"])
    assert tracker.private_unread == 0
    tracker.observe(normal, "lobby", ["lobby"])
    assert tracker.private_unread == 1


def test_render_message_of_an_auto_reply_is_one_clean_line() -> None:
    view = render.View(ALICE.fingerprint, None, lambda name: False)
    reply = Message(None, BOB, "a\nb\x07", True, NOW, 0, (ALICE,), auto=True)
    assert render.plain(render.message(reply, view)) == "* bob is away: a ↵ b\ufffd"


async def test_list_and_info_show_who_is_away(s: Session) -> None:
    s.node.known = [BOB_AWAY, CAROL]
    await s.in_room(members=(ALICE, BOB_AWAY, CAROL))
    assert await s("/list") == [
        "* members of lobby (3): alice (host, you), bob (away: lunch), carol"]
    info = await s("/info bob")
    assert info[1] == "*   away: lunch"
    assert (await s("/info"))[1] == "*   3 members: alice (host, you), bob (away: lunch), carol"
    assert "away" not in " ".join(await s("/info carol"))
