"""The public handles of ``Node``: ``Room`` (one joined room) and the details it and the node
give (``BanInfo``, ``RoomDetails``, ``PeerDetails``). They are read by name from
``meshchat.node`` and ``meshchat`` as well.

A ``Room`` holds no state of its own: every property reads the node's current copy of the
room, and every operation goes to the part of the node that does it (``runtime.chat``,
``runtime.hostops``, ``runtime.joining``, ``runtime.files``), so a handle kept across a host
change or a rename stays right, and one kept after leaving raises ``NotInRoom``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import NotInRoom, PeerNotFound
from .events import Message, Notice, PeerInfo, Transfer
from .identity import fingerprint_of
from .protocol.messages import RoomState

if TYPE_CHECKING:
    from .node import Node
    from .runtime.rooms import JoinedRoom

__all__ = ["BanInfo", "PeerDetails", "Room", "RoomDetails"]


@dataclass(frozen=True, slots=True)
class BanInfo:
    name: str
    fingerprint: str
    reason: str
    peer_id: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class RoomDetails:
    name: str
    host: PeerInfo
    term: int
    version: int
    created_at: float
    members: tuple[PeerInfo, ...]
    joined_at: tuple[float, ...]
    locked: bool
    has_password: bool
    room_id: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class PeerDetails:
    peer: PeerInfo
    addresses: tuple[str, ...]
    router_port: int
    pub_port: int
    card_port: int
    former_names: tuple[str, ...]
    first_seen: float | None
    started_at: float | None
    liveness: str


class Room:
    """A room this node is a member of. Operations act on the room's current host."""

    def __init__(self, node: Node, room_id: bytes) -> None:
        self._node = node
        self.room_id = room_id

    def _joined(self) -> JoinedRoom:
        jr = self._node._rooms.get(self.room_id)
        if jr is None:
            raise NotInRoom("you are not in this room any more")
        return jr

    @property
    def active(self) -> bool:
        return self.room_id in self._node._rooms

    @property
    def _state(self) -> RoomState:
        state = self._node._rooms.state_of(self.room_id)
        if state is None:
            raise NotInRoom("you are not in this room any more")
        return state

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def host(self) -> PeerInfo:
        return self._node._peers.info(self._state.host)

    @property
    def is_host(self) -> bool:
        return self._state.host == self._node.peer_id

    @property
    def members(self) -> list[PeerInfo]:
        return [self._node._peers.info(m.peer_id, m.name) for m in self._state.members]

    @property
    def locked(self) -> bool:
        return self._state.locked

    @property
    def has_password(self) -> bool:
        return self._state.password is not None

    @property
    def term(self) -> int:
        return self._state.term

    @property
    def bans(self) -> list[BanInfo]:
        return [BanInfo(b.name, fingerprint_of(b.peer_id), b.reason, b.peer_id)
                for b in self._state.bans]

    def info(self) -> RoomDetails:
        s = self._state
        return RoomDetails(
            name=s.name, host=self.host, term=s.term, version=s.version,
            created_at=s.created_at, members=tuple(self.members),
            joined_at=tuple(m.joined_at for m in s.members), locked=s.locked,
            has_password=s.password is not None, room_id=s.room_id,
        )

    def history(self) -> list[Message]:
        """Every message this node holds for the room, in the canonical order."""
        return self._node._chat.history(self.room_id, self._state.name)

    async def say(self, text: str, *, action: bool = False) -> None:
        """Say ``text`` to the room; ``action``: as a ``/me`` line (``* alice waves``)."""
        await self._node._chat.say(self._joined(), text, action)

    async def leave(self) -> None:
        await self._node._joining.leave(self.room_id, "left")

    async def handoff(self, name: str) -> None:
        await self._node._hostops.run(self._joined(), "handoff", name)

    async def kick(self, name: str, reason: str | None = None) -> None:
        await self._node._hostops.run(self._joined(), "kick", name, reason or "")

    async def ban(self, name: str, reason: str | None = None) -> None:
        await self._node._hostops.run(self._joined(), "ban", name, reason or "")

    async def unban(self, name_or_fp: str) -> None:
        await self._node._hostops.run(self._joined(), "unban", name_or_fp)

    async def lock(self) -> None:
        await self._node._hostops.run(self._joined(), "lock")

    async def unlock(self) -> None:
        await self._node._hostops.run(self._joined(), "unlock")

    async def close(self) -> None:
        await self._node._hostops.run(self._joined(), "close")

    async def rename(self, new_room_name: str) -> None:
        await self._node._hostops.run(self._joined(), "rename", new_room_name)

    async def set_password(self, password: str | None) -> None:
        await self._node._hostops.run(self._joined(), "password", password or "")

    async def send_file(self, path: str | os.PathLike[str]) -> list[Transfer]:
        """Offer a file (or folder) to every other member; each accepts on its own. A member
        that cannot be reached is left out with a warning; ``PeerNotFound`` if none can."""
        out: list[Transfer] = []
        missed: list[PeerNotFound] = []
        for m in self._state.members:
            if m.peer_id == self._node.peer_id:
                continue
            try:
                out.append(await self._node._files.send(m.peer_id, path,
                                                        warn=not out and not missed))
            except PeerNotFound as exc:
                missed.append(exc)
        if missed and not out:
            raise missed[0]
        for miss in missed:
            self._node._events.emit(Notice(f"{miss}: not offered", "warning"))
        return out

    def __repr__(self) -> str:
        return f"Room({self.name!r}, host={self.host.name!r})"
