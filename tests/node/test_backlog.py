"""Issue 6 case 11: a late joiner holds the room's last ``history_on_join`` messages as soon as
``node.join()`` returns — in order, without duplicates, and what is older is no gap."""

from __future__ import annotations

import pytest

from meshchat import Node

from .conftest import Mesh, until


async def _room_with(mesh: Mesh, count: int, text: str = "m{}") -> tuple[Node, Node, list[str]]:
    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    lobby = await alice.host("lobby")
    room_b = await bob.join("lobby")
    said: list[str] = []
    for i in range(count):
        line = text.format(i)
        # Two authors, and bursts that share a batch: the backlog cuts through batches.
        await (lobby if i % 3 else room_b).say(line)
        said.append(line)
    await until(lambda: len(lobby.history()) == count and len(room_b.history()) == count,
                timeout=10, what="both members hold every line")
    return alice, bob, said


@pytest.mark.parametrize(("earlier", "expected"), [(5, 5), (150, 150), (300, 200)])
async def test_a_late_joiner_holds_the_backlog_when_join_returns(
        mesh: Mesh, earlier: int, expected: int) -> None:
    alice, bob, said = await _room_with(mesh, earlier)
    carol = await mesh.add("carol")
    room = await carol.join("lobby")
    history = room.history()  # at once: no waiting after join()
    assert [m.text for m in history] == said[-expected:]
    assert len({(m.sender.peer_id, m.seq) for m in history}) == expected
    # What is older than the backlog is settled, not a gap to fetch: carol's heads are the
    # host's, so nothing is missing and nothing will be asked.
    host = alice._rooms[room.room_id].tracker
    jr = carol._rooms[room.room_id]
    for author in (alice.peer_id, bob.peer_id):
        assert jr.tracker.head(author) == host.head(author)
        assert jr.tracker.missing(author, host.head(author)) == []

async def test_a_backlog_larger_than_a_frame_arrives_whole(mesh: Mesh) -> None:
    long = "é" * 3990 + " {}"  # max_text_chars, two bytes a char: 200 lines are ~1.6 MB
    _, _, said = await _room_with(mesh, 220, long)
    carol = await mesh.add("carol")
    room = await carol.join("lobby")
    history = room.history()
    assert [m.text for m in history] == said[-200:]
    assert carol.stats["history_requests"] >= 1  # the JoinAccept could not carry it all
    assert carol.stats["backlog_incomplete"] == 0


async def test_the_joiner_can_serve_the_backlog_it_took(mesh: Mesh) -> None:
    alice, _, said = await _room_with(mesh, 300)
    carol = await mesh.add("carol")
    room_c = await carol.join("lobby")
    # carol stored only the tail of a batch: she can still hand it on, whole and signed.
    await alice._rooms[room_c.room_id].handle.handoff("carol")  # type: ignore[union-attr]
    await until(lambda: room_c.is_host, what="carol hosts")
    dave = await mesh.add("dave")
    room_d = await dave.join("lobby")
    assert [m.text for m in room_d.history()] == said[-200:]
