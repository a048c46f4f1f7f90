"""A fake node with the API subset the interface uses (``meshchat.tui.api``), and a session
on it: what the interface tests drive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from meshchat import (
    AmbiguousName,
    Event,
    MeshchatError,
    Message,
    NotHost,
    PeerInfo,
    PeerNotFound,
    RoomInfo,
    RoomNotFound,
    Transfer,
)
from meshchat.tui.controller import Controller

NOW = datetime(2024, 5, 1, 12, 0, 1).timestamp()  # local time: renders as 12:00:01
ALICE = PeerInfo("alice", "74gqoyewaaaaaaaa", ("10.0.0.1",), b"a", "blue")
BOB = PeerInfo("bob", "bbbbcccc11112222", ("10.0.0.2",), b"b")
CAROL = PeerInfo("carol", "cccc000011112222", ("10.0.0.3",), b"c")
BOB2 = PeerInfo("bob", "dddd000011112222", ("10.0.0.4",), b"d")


async def until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Wait for ``predicate`` with a deadline (never a fixed sleep)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110  # a condition of the fake, not an event
            await asyncio.sleep(0.005)


# --- a fake node implementing the API subset the interface uses ------------------------------


@dataclass(frozen=True)
class FakeBan:
    name: str
    fingerprint: str
    reason: str | None


@dataclass(frozen=True)
class FakeRoomDetails:
    name: str
    host: PeerInfo
    term: int
    created_at: float
    members: Sequence[PeerInfo]
    joined_at: Sequence[float]
    locked: bool
    has_password: bool
    version: int


@dataclass(frozen=True)
class FakePeerDetails:
    peer: PeerInfo
    addresses: Sequence[str]
    router_port: int | None
    pub_port: int | None
    card_port: int | None
    former_names: Sequence[str]
    first_seen: float | None
    started_at: float | None


class FakeRoom:
    def __init__(self, node: FakeNode, name: str, host: PeerInfo, members: list[PeerInfo],
                 password: str | None = None) -> None:
        self.node = node
        self.name = name
        self.host = host
        self.members = members
        self.locked = False
        self.has_password = password is not None
        self.term = 1
        self.bans: list[FakeBan] = []
        self.said: list[str] = []
        self.calls: list[tuple[str, ...]] = []
        self.messages: list[Message] = []
        self.left = False

    def _host_op(self, *call: str) -> None:
        if self.host.fingerprint != self.node.fingerprint:
            raise NotHost("not the host")
        self.calls.append(call)

    async def say(self, text: str, /, *, action: bool = False) -> None:
        self.said.append(f"/me {text}" if action else text)

    def history(self) -> list[Message]:
        return list(self.messages)

    async def leave(self) -> None:
        self.left = True

    async def handoff(self, name: str, /) -> None:
        self._host_op("handoff", name)
        self.host = self.node.resolve(name)

    async def kick(self, name: str, reason: str | None = None, /) -> None:
        self._host_op("kick", name, reason or "")

    async def ban(self, name: str, reason: str | None = None, /) -> None:
        self._host_op("ban", name, reason or "")

    async def unban(self, name_or_fingerprint: str, /) -> None:
        self._host_op("unban", name_or_fingerprint)

    async def lock(self) -> None:
        self._host_op("lock")
        self.locked = True

    async def unlock(self) -> None:
        self._host_op("unlock")
        self.locked = False

    async def close(self) -> None:
        self._host_op("close")

    async def rename(self, new_name: str, /) -> None:
        self._host_op("rename", new_name)
        self.name = new_name

    async def set_password(self, password: str | None, /) -> None:
        self._host_op("password", password or "")
        self.has_password = password is not None

    def info(self) -> FakeRoomDetails:
        return FakeRoomDetails(self.name, self.host, self.term, NOW - 3600, list(self.members),
                               [NOW - 3600 + i for i in range(len(self.members))], self.locked,
                               self.has_password, 7)


@dataclass
class FakeNode:
    me: PeerInfo = ALICE
    known: list[PeerInfo] = field(default_factory=lambda: [BOB, CAROL])
    network_rooms: list[RoomInfo] = field(default_factory=list)
    remote_rooms: dict[str, FakeRoom] = field(default_factory=dict)
    address: str = "10.0.0.1:47001"
    started_at: float = NOW - 65
    data_dir: Path = Path("/tmp/meshchat-test")
    sent: list[tuple[str | list[str], str]] = field(default_factory=list)
    broadcasts: list[str] = field(default_factory=list)
    colors: list[str] = field(default_factory=list)
    hosted: list[tuple[str, str | None, bool]] = field(default_factory=list)
    queues: list[asyncio.Queue[Event]] = field(default_factory=list)
    ping_rtt: float = 0.00123
    pinged: list[str] = field(default_factory=list)
    join_error: MeshchatError | None = None
    join_hook: Callable[[FakeRoom], Awaitable[None]] | None = None
    """Awaited inside ``join`` before it returns: where a test makes events arrive mid-join."""
    joined: list[str] = field(default_factory=list)
    rename_error: MeshchatError | None = None
    closed: str | None = None

    @property
    def name(self) -> str:
        return self.me.name

    @property
    def fingerprint(self) -> str:
        return self.me.fingerprint

    @property
    def color(self) -> str:
        return self.me.color

    def uptime(self) -> float:
        return 65.0

    async def start(self) -> None:
        pass

    async def close(self, *, reason: str = "quit") -> None:
        self.closed = reason

    async def rooms(self, *, timeout: float = 2.0) -> list[RoomInfo]:
        return list(self.network_rooms)

    async def host(self, name: str, password: str | None = None, /, *,
                   announce: bool = True) -> FakeRoom:
        self.hosted.append((name, password, announce))
        return FakeRoom(self, name, self.me, [self.me], password)

    async def join(self, name: str, password: str | None = None, /) -> FakeRoom:
        self.joined.append(name)
        if self.join_error is not None:
            raise self.join_error
        if name not in self.remote_rooms:
            raise RoomNotFound(f"no room {name!r}")
        room = self.remote_rooms[name]
        room.members.append(self.me)
        if self.join_hook is not None:
            await self.join_hook(room)
        return room

    async def msg(self, to: str | list[str], text: str, /) -> None:
        for who in [to] if isinstance(to, str) else to:
            self.resolve(who)
        self.sent.append((to, text))

    async def ping(self, who: str, /) -> float:
        self.pinged.append(self.resolve(who).name)
        return self.ping_rtt

    async def broadcast(self, text: str, /) -> None:
        self.broadcasts.append(text)

    async def send_file(self, to: str, path: str) -> Transfer:  # issue 7
        return Transfer("1", "out", self.resolve(to), Path(path).name, 1234, 1, 0, "offered")

    def transfers(self) -> list[Transfer]:
        return []

    def peers(self) -> list[PeerInfo]:
        return list(self.known)

    def resolve(self, who: str, /) -> PeerInfo:
        everyone = [self.me, *self.known]
        named = [p for p in everyone if p.name.casefold() == who.casefold()]
        if len(named) > 1:
            raise AmbiguousName(who, [p.label for p in named])
        if named:
            return named[0]
        by_fp = [p for p in everyone if len(who) >= 4 and p.fingerprint.startswith(who)]
        if len(by_fp) == 1:
            return by_fp[0]
        raise PeerNotFound(f"no peer called {who!r}")

    def joined_rooms(self) -> list[FakeRoom]:
        return []

    def peer_details(self, who: str, /) -> FakePeerDetails:
        peer = self.resolve(who)
        return FakePeerDetails(peer, peer.addresses, 47001, 47002, 47003, ["bobby"], NOW - 86400,
                               NOW - 7200)

    async def rename(self, new_name: str, /) -> None:
        if self.rename_error is not None:
            raise self.rename_error
        self.me = PeerInfo(new_name, self.me.fingerprint, self.me.addresses, b"a", self.me.color)

    def set_color(self, color: str, /) -> None:
        self.colors.append(color)

    def set_away(self, text: str | None, /) -> None:
        away = " ".join(text.split()) if text else None
        self.me = PeerInfo(self.me.name, self.me.fingerprint, self.me.addresses, self.me.peer_id,
                           self.me.color, away or None)

    def events(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self.queues.append(queue)

        async def drain() -> AsyncIterator[Event]:
            while True:
                yield await queue.get()

        return drain()

    def emit(self, event: Event) -> None:
        for queue in self.queues:
            queue.put_nowait(event)


def msg(sender: PeerInfo, text: str, room: str | None = "lobby", *, seq: int = 1,
        to: tuple[PeerInfo, ...] = ()) -> Message:
    return Message(room, sender, text, room is None, NOW, seq, to)


class Session:
    def __init__(self, node: FakeNode | None = None) -> None:
        self.node = node or FakeNode()
        self.lines: list[str] = []
        self.ctl = Controller(self.node, self.lines.append, now=lambda: NOW)

    async def __call__(self, line: str) -> list[str]:
        """Run one input line; the lines it printed."""
        start = len(self.lines)
        await self.ctl.handle_line(line)
        return self.lines[start:]

    def show(self, event: Event) -> list[str]:
        start = len(self.lines)
        self.ctl.show_event(event)
        return self.lines[start:]

    async def in_room(self, host: PeerInfo = ALICE, members: Sequence[PeerInfo] = (ALICE, BOB)
                      ) -> FakeRoom:
        room = FakeRoom(self.node, "lobby", host, list(members))
        self.ctl.room = room
        return room
