"""In-process discovery for node tests: the semantics of mDNS without a network.

Every ``MemoryDiscovery`` joined to one ``MemoryDiscoveryHub`` hears the others. As on the
network, news arrives later, never inside the call that caused it: each callback is scheduled
on the event loop, in order. A discovery never hears about its own node or its own rooms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from ..protocol.messages import PeerCard
from .base import DiscoveryHandlers, RoomAnnouncement

_Event = Callable[[DiscoveryHandlers], None]


class MemoryDiscoveryHub:
    """The shared medium: who is announced, and which rooms each of them hosts."""

    def __init__(self) -> None:
        self._members: list[MemoryDiscovery] = []

    def announced_peers(self) -> list[PeerCard]:
        """The cards of every started, unclosed discovery (for assertions)."""
        return [member.card for member in self._members if member.card is not None]

    def announced_rooms(self) -> list[RoomAnnouncement]:
        """Every room currently announced on the hub (for assertions)."""
        return [room for member in self._members for room in member.rooms.values()]

    def _join(self, joiner: MemoryDiscovery, card: PeerCard | None) -> None:
        """``card`` None: the joiner only listens (nobody hears of it)."""
        self._members.append(joiner)
        for member in self._others(joiner):
            if member.card is not None:
                joiner._deliver(partial(_on_peer, card=member.card))
            for room in member.rooms.values():
                joiner._deliver(partial(_on_room, room=room))
        if card is not None:
            self._broadcast(joiner, partial(_on_peer, card=card))

    def _leave(self, leaver: MemoryDiscovery) -> None:
        if leaver in self._members:
            self._members.remove(leaver)

    def _broadcast(self, sender: MemoryDiscovery, event: _Event) -> None:
        for member in self._others(sender):
            member._deliver(event)

    def _others(self, member: MemoryDiscovery) -> list[MemoryDiscovery]:
        return [other for other in self._members if other is not member]


def _on_peer(handlers: DiscoveryHandlers, card: PeerCard) -> None:
    handlers.on_peer(card)


def _on_room(handlers: DiscoveryHandlers, room: RoomAnnouncement) -> None:
    handlers.on_room(room)


class MemoryDiscovery:
    """A ``Discovery`` whose network is a ``MemoryDiscoveryHub``; with ``announce=False`` it
    only listens, as ``MdnsDiscovery`` does for a node that only looks: its card and rooms
    are never announced."""

    def __init__(self, hub: MemoryDiscoveryHub, *, announce: bool = True) -> None:
        self.hub = hub
        self._announce = announce
        self.card: PeerCard | None = None
        self.rooms: dict[bytes, RoomAnnouncement] = {}
        self._handlers: DiscoveryHandlers | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self, me: PeerCard, handlers: DiscoveryHandlers) -> None:
        if self._handlers is not None or self._closed:
            raise RuntimeError("a discovery is started once")
        self._loop = asyncio.get_running_loop()
        self._handlers = handlers
        self.card = me if self._announce else None
        self.hub._join(self, self.card)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.card is None:
            self.hub._leave(self)
            return
        peer_id = self.card.peer_id
        for room_id in list(self.rooms):
            await self.withdraw_room(room_id)
        self.hub._broadcast(self, lambda h: h.on_peer_removed(peer_id))
        self.hub._leave(self)
        self.card = None

    async def announce_room(self, room: RoomAnnouncement) -> None:
        if not self._running() or not self._announce:
            return
        self.rooms[room.room_id] = room
        self.hub._broadcast(self, partial(_on_room, room=room))

    async def withdraw_room(self, room_id: bytes) -> None:
        room = self.rooms.pop(room_id, None)
        if room is None or self.card is None:
            return
        host_id = self.card.peer_id
        self.hub._broadcast(self, lambda h: h.on_room_removed(room_id, host_id))

    async def update_node(self, me: PeerCard) -> None:
        if not self._running() or not self._announce or me == self.card:
            return
        self.card = me
        self.hub._broadcast(self, partial(_on_peer, card=me))

    def _running(self) -> bool:
        return self._handlers is not None and not self._closed

    def _deliver(self, event: _Event) -> None:
        assert self._loop is not None
        self._loop.call_soon(self._fire, event)

    def _fire(self, event: _Event) -> None:
        if self._running():
            assert self._handlers is not None
            event(self._handlers)
