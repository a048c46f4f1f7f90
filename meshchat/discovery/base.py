"""The discovery seam: announcing this node and its hosted rooms, and hearing of others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..protocol.messages import PeerCard


@dataclass(frozen=True, slots=True)
class RoomAnnouncement:
    """A hosted room as discovery carries it (no secrets)."""

    room_id: bytes
    name: str
    host: PeerCard
    members: int
    locked: bool
    has_password: bool
    term: int


@dataclass(frozen=True, slots=True)
class DiscoveryHandlers:
    """Callbacks from discovery into the node, called on the event loop."""

    on_peer: Callable[[PeerCard], None]
    on_peer_removed: Callable[[bytes], None]
    on_room: Callable[[RoomAnnouncement], None]
    on_room_removed: Callable[[bytes, bytes], None]  # (room_id, host peer_id)


class Discovery(Protocol):
    async def start(self, me: PeerCard, handlers: DiscoveryHandlers) -> None:
        """Announce this node and start listening for others."""
        ...

    async def close(self) -> None:
        """Withdraw every announcement (goodbye packets) and stop. Idempotent."""
        ...

    async def announce_room(self, room: RoomAnnouncement) -> None:
        """Announce (or update) a room this node hosts."""
        ...

    async def withdraw_room(self, room_id: bytes) -> None: ...

    async def update_node(self, me: PeerCard) -> None:
        """The node's name or addresses changed."""
        ...
