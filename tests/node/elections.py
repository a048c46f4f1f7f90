"""Helpers for election tests: nodes on one FakeClock, and a hostile peer that joins a room.

Time moves only when a test says so (``FakeMesh.advance_until``): a failover that takes
1.25 s on a real LAN runs in a few milliseconds, and each step is deterministic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from meshchat import Node, Room
from meshchat import room as rules
from meshchat.clock import FakeClock
from meshchat.protocol.messages import (
    Heartbeat,
    JoinAccept,
    JoinRequest,
    Ping,
    Pong,
    RoomState,
    StateAnnounce,
)
from meshchat.transport.memory import MemoryTransport

from ..hostile import HostilePeer
from .conftest import Mesh

T = TypeVar("T")
STEP_S = 0.01


class FakeMesh:
    """A ``Mesh`` whose nodes all read one ``FakeClock``."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.clock = FakeClock()
        self.on_step: list[Callable[[], None]] = []  # run every step (hostile keep-alives)

    async def add(self, name: str, clock: FakeClock | None = None) -> Node:
        return await self.mesh.add(name, clock=clock or self.clock)  # type: ignore[arg-type]

    async def step(self, clocks: tuple[FakeClock, ...] = ()) -> None:
        for hook in self.on_step:
            hook()
        for clock in clocks or (self.clock,):
            await clock.advance(STEP_S, STEP_S)

    async def advance(self, seconds: float, *clocks: FakeClock) -> None:
        for _ in range(round(seconds / STEP_S)):
            await self.step(clocks)

    async def advance_until(self, predicate: Callable[[], bool], limit_s: float = 10.0,
                            what: str = "", *clocks: FakeClock) -> float:
        """Move fake time until ``predicate`` holds; the fake seconds it took."""
        start = self.clock.monotonic()
        real_deadline = time.monotonic() + 20.0
        while not predicate():
            if self.clock.monotonic() - start > limit_s or time.monotonic() > real_deadline:
                raise AssertionError(f"not within {limit_s} fake seconds: {what}")
            await self.step(clocks)
        return self.clock.monotonic() - start

    async def run(self, work: Awaitable[T], limit_s: float = 10.0, *clocks: FakeClock) -> T:
        """Await ``work`` while fake time moves (joins retry on the node's clock)."""
        task = asyncio.ensure_future(work)
        await self.advance_until(task.done, limit_s, f"{work!r} finished", *clocks)
        return task.result()

    async def room_of(self, *names: str) -> tuple[list[Node], list[Room]]:
        nodes = [await self.add(n) for n in names]
        rooms = [await nodes[0].host("lobby")]
        for node in nodes[1:]:
            rooms.append(await self.run(node.join("lobby")))
        await self.advance_until(lambda: all(len(r.members) == len(names) for r in rooms),
                                 what="all joined")
        return nodes, rooms


class Mallory(HostilePeer):
    """A hostile peer that can become a member of a room the honest way, then misbehave."""

    room_id = b""
    key_epoch = 0
    key = b""
    state: RoomState | None = None

    @classmethod
    async def on(cls, mesh: Mesh) -> Mallory:
        evil = cls(MemoryTransport(mesh.network))
        await evil.start()
        return evil

    def beat(self) -> None:
        """A heartbeat, and a pong for every ping so far: it looks alive to everyone."""
        self.publish(b"P", Heartbeat(self.card(), 0.0, "", (), ()))
        for _, env in self.received[self._scanned:]:
            if isinstance(env.message, Ping):
                self.send(env.sender, Pong(env.message.nonce))
        self._scanned = len(self.received)

    _scanned = 0

    async def join(self, host: Node, room: Room, fake: FakeMesh | None = None,
                   others: tuple[Node, ...] = ()) -> None:
        """Join ``room`` at ``host`` with an honest JoinRequest; say Hello to ``others`` too
        (a hostile peer introduces itself to every node it means to talk to)."""
        for node in (host, *others):
            self.introduce(node)
        self.room_id = room.room_id
        self.send(host.peer_id, JoinRequest(room.room_id, self.name, 4242, b"", b"", b""))
        waiting = self.wait_for(JoinAccept, lambda m: m.request_id == 4242)
        accept = await (fake.run(waiting) if fake is not None else waiting)
        self.key_epoch = accept.key_epoch
        self.key = rules.unseal_key(self.identity, host.peer_id, accept.sealed_key)
        self.state = self.codec.open_signed(accept.state, RoomState, rules.signer_of)

    def announce(self, state: RoomState, key: bytes | None = None,
                 epoch: int | None = None) -> None:
        """Our own signed state, sealed to the room as a claim."""
        self.publish_sealed(self.room_id, epoch or self.key_epoch, key or self.key,
                            StateAnnounce(self.sign(state)))


def snapshot(node: Node, room: Room) -> tuple[object, ...]:
    """Everything an attack must not change: the signed state, keys and history."""
    jr = node._rooms[room.room_id]
    return (jr.core.blob, tuple(sorted(jr.keys)), len(room.history()), room.host.fingerprint)


async def answers_ping(evil: HostilePeer, node: Node, nonce: int,
                       fake: FakeMesh | None = None) -> None:
    """The node still answers promptly (within 100 ms of real time)."""
    started = time.monotonic()
    evil.send(node.peer_id, Ping(nonce))
    waiting = evil.wait_for(Pong, lambda m: m.nonce == nonce, timeout=1.0)
    await (fake.run(waiting, 1.0) if fake is not None else waiting)
    assert time.monotonic() - started < 0.1
