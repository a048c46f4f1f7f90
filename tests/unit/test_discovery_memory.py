"""MemoryDiscovery: the in-process fake has the semantics of mDNS discovery the node relies on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from meshchat.discovery.base import DiscoveryHandlers, RoomAnnouncement
from meshchat.discovery.memory import MemoryDiscovery, MemoryDiscoveryHub
from meshchat.identity import Identity
from meshchat.protocol.messages import PeerCard

Event = tuple[str, object]


def card(name: str, port: int = 7000) -> PeerCard:
    return PeerCard(Identity.generate().peer_id, name, ("mem",), port, port + 1, port + 2)


def room(host: PeerCard, name: str = "lobby", members: int = 1) -> RoomAnnouncement:
    return RoomAnnouncement(b"r-" + name.encode(), name, host, members, False, False, 1)


class Node:
    """A discovery and every callback it got, in order."""

    def __init__(self, hub: MemoryDiscoveryHub, name: str) -> None:
        self.card = card(name)
        self.discovery = MemoryDiscovery(hub)
        self.events: list[Event] = []
        self.handlers = DiscoveryHandlers(
            on_peer=lambda c: self.events.append(("peer", c)),
            on_peer_removed=lambda pid: self.events.append(("peer_removed", pid)),
            on_room=lambda r: self.events.append(("room", r)),
            on_room_removed=lambda rid, host: self.events.append(("room_removed", (rid, host))),
        )

    async def start(self) -> Node:
        await self.discovery.start(self.card, self.handlers)
        return self

    def take(self) -> list[Event]:
        taken, self.events = self.events, []
        return taken


async def settle() -> None:
    """Run every callback already scheduled on the loop."""
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
async def hub() -> AsyncIterator[MemoryDiscoveryHub]:
    yield MemoryDiscoveryHub()


async def test_nodes_hear_each_other_but_not_themselves(hub: MemoryDiscoveryHub) -> None:
    a = await Node(hub, "alice").start()
    b = await Node(hub, "bob").start()
    await settle()
    assert a.take() == [("peer", b.card)]
    assert b.take() == [("peer", a.card)]


async def test_news_arrives_later_not_inside_the_call(hub: MemoryDiscoveryHub) -> None:
    a = await Node(hub, "alice").start()
    b = await Node(hub, "bob").start()
    assert a.events == [] and b.events == []
    await b.discovery.announce_room(room(b.card))
    assert a.events == []
    await settle()
    assert [kind for kind, _ in a.take()] == ["peer", "room"]


async def test_a_late_joiner_hears_existing_peers_and_rooms(hub: MemoryDiscoveryHub) -> None:
    a = await Node(hub, "alice").start()
    lobby = room(a.card)
    await a.discovery.announce_room(lobby)
    await settle()
    c = await Node(hub, "carol").start()
    await settle()
    assert c.take() == [("peer", a.card), ("room", lobby)]
    assert hub.announced_rooms() == [lobby]
    assert set(p.peer_id for p in hub.announced_peers()) == {a.card.peer_id, c.card.peer_id}


async def test_room_updates_and_withdrawal_propagate(hub: MemoryDiscoveryHub) -> None:
    a = await Node(hub, "alice").start()
    b = await Node(hub, "bob").start()
    await settle()
    b.take()
    lobby = room(a.card)
    bigger = replace(lobby, members=3, locked=True)
    await a.discovery.announce_room(lobby)
    await a.discovery.announce_room(bigger)
    await a.discovery.withdraw_room(lobby.room_id)
    await a.discovery.withdraw_room(lobby.room_id)  # twice: nothing more
    await settle()
    assert b.take() == [
        ("room", lobby),
        ("room", bigger),
        ("room_removed", (lobby.room_id, a.card.peer_id)),
    ]
    assert a.take() == [("peer", b.card)]  # its own room is never reported back


async def test_handoff_moves_the_room_to_the_new_host(hub: MemoryDiscoveryHub) -> None:
    a = await Node(hub, "alice").start()
    b = await Node(hub, "bob").start()
    c = await Node(hub, "carol").start()
    lobby = room(a.card)
    await a.discovery.announce_room(lobby)
    await settle()
    c.take()
    moved = replace(lobby, host=b.card, term=2)
    await a.discovery.withdraw_room(lobby.room_id)
    await b.discovery.announce_room(moved)
    await settle()
    assert c.take() == [("room_removed", (lobby.room_id, a.card.peer_id)), ("room", moved)]


async def test_update_node_is_heard_as_a_new_card(hub: MemoryDiscoveryHub) -> None:
    a = await Node(hub, "alice").start()
    b = await Node(hub, "bob").start()
    await settle()
    b.take()
    renamed = replace(a.card, name="alicia")
    await a.discovery.update_node(renamed)
    await a.discovery.update_node(renamed)  # unchanged: not repeated
    await settle()
    assert b.take() == [("peer", renamed)]


async def test_close_withdraws_rooms_then_the_node(hub: MemoryDiscoveryHub) -> None:
    a = await Node(hub, "alice").start()
    b = await Node(hub, "bob").start()
    lobby = room(a.card)
    await a.discovery.announce_room(lobby)
    await settle()
    b.take()
    a.take()
    await a.discovery.close()
    await a.discovery.close()  # idempotent
    await b.discovery.announce_room(room(b.card, "after"))
    await settle()
    assert b.take() == [
        ("room_removed", (lobby.room_id, a.card.peer_id)),
        ("peer_removed", a.card.peer_id),
    ]
    assert a.take() == []  # closed: hears nothing more
    assert [p.peer_id for p in hub.announced_peers()] == [b.card.peer_id]


async def test_news_pending_for_a_closed_discovery_is_dropped(hub: MemoryDiscoveryHub) -> None:
    a = await Node(hub, "alice").start()
    b = await Node(hub, "bob").start()
    await a.discovery.close()  # b's arrival was scheduled for a, not yet delivered
    await settle()
    assert a.take() == []
    assert b.take() == [("peer", a.card), ("peer_removed", a.card.peer_id)]


async def test_calls_before_start_or_after_close_are_harmless(hub: MemoryDiscoveryHub) -> None:
    a = Node(hub, "alice")
    await a.discovery.announce_room(room(a.card))
    await a.discovery.update_node(a.card)
    await a.discovery.close()
    with pytest.raises(RuntimeError):
        await a.discovery.start(a.card, a.handlers)
    assert hub.announced_rooms() == [] and hub.announced_peers() == []


async def test_a_discovery_starts_once(hub: MemoryDiscoveryHub) -> None:
    a = await Node(hub, "alice").start()
    with pytest.raises(RuntimeError):
        await a.discovery.start(a.card, a.handlers)
