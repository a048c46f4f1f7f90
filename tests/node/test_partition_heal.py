"""Issue 10 at node level (in-memory transport): after a partition heals into one room, what
each side said while apart reaches every member as a ``Message`` event, not only the store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from meshchat import Node
from meshchat.events import Event, Message

from .conftest import Mesh, until


def _cut(mesh: Mesh, side_a: list[Node], side_b: list[Node], up: bool) -> None:
    for a in side_a:
        for b in side_b:
            mesh.network.set_link(a.peer_id, b.peer_id, up)


@pytest.mark.parametrize("length", [0.6, 1.5])  # below and above peer_expired_s (1 s)
async def test_lines_said_apart_are_shown_after_the_heal(mesh: Mesh, length: float) -> None:
    alice = await mesh.add("alice")
    await alice.host("lobby")
    nodes = [alice]
    for name in ("bob", "carol", "dave"):
        node = await mesh.add(name)
        await node.join("lobby")
        nodes.append(node)
    await until(lambda: all(len(n.joined_rooms()[0].members) == 4 for n in nodes),
                what="four members everywhere")
    a, b, c, d = nodes
    _cut(mesh, [a, b], [c, d], False)
    await until(lambda: c.joined_rooms()[0].host.name != "alice", what="carol's side elects")
    await b.joined_rooms()[0].say("from-bob-while-apart")
    await d.joined_rooms()[0].say("from-dave-while-apart")
    await asyncio.sleep(length)  # the partition's length is the fault itself
    _cut(mesh, [a, b], [c, d], True)

    def one_room() -> bool:
        rooms = [n.joined_rooms() for n in nodes]
        return all(r and len(r[0].members) == 4 for r in rooms) and \
            len({r[0].host.name for r in rooms}) == 1

    await until(one_room, timeout=5, what="one room with one host")
    for node in nodes:
        rec = mesh.recorders[node.name]
        for text in ("from-bob-while-apart", "from-dave-while-apart"):
            await rec.wait(_message(text), timeout=5)


def _message(text: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, Message) and e.text == text


@pytest.mark.parametrize(("length", "locked"), [(0.6, False), (1.5, False), (0.6, True),
                                               (1.5, True)])
async def test_a_password_room_heals_into_one_room(mesh: Mesh, length: float, locked: bool
                                                   ) -> None:
    """The merge after a heal needs no password: the loser's host and its members come in on
    the signed state of a host the room admitted (issue 6, the honest merge)."""
    alice = await mesh.add("alice")
    lobby = await alice.host("lobby", password="hunter22")
    nodes = [alice]
    for name in ("bob", "carol", "dave"):
        node = await mesh.add(name)
        await node.join("lobby", password="hunter22")
        nodes.append(node)
    if locked:
        await lobby.lock()
    await until(lambda: all(len(n.joined_rooms()[0].members) == 4 for n in nodes),
                what="four members everywhere")
    a, b, c, d = nodes
    _cut(mesh, [a, b], [c, d], False)
    await until(lambda: c.joined_rooms()[0].host.name != "alice", what="carol's side elects")
    await asyncio.sleep(length)  # the partition's length, below and past peer_expired_s
    _cut(mesh, [a, b], [c, d], True)

    def one_room() -> bool:
        rooms = [n.joined_rooms() for n in nodes]
        return all(r and len(r[0].members) == 4 for r in rooms) and \
            len({r[0].host.name for r in rooms}) == 1

    await until(one_room, timeout=5, what="one room with one host")
    assert not any(n.stats["dropped_join_password"] or n.stats["dropped_join_locked"]
                   for n in nodes)
