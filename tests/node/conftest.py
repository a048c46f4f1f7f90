"""Node tests on the in-memory transport and discovery: real node logic, no sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from meshchat import Limits, Node, Timings
from meshchat.discovery.memory import MemoryDiscovery, MemoryDiscoveryHub
from meshchat.events import Event
from meshchat.transport.memory import MemoryNetwork, MemoryTransport


class Recorder:
    """Collects one node's events; tests wait on them with a deadline."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        # Subscribed here, not when the task first runs: a frame already queued for the node
        # may be handled before that (a rename heard at once), and its event would be lost.
        self._stream = node.events()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self._stream:
            self.events.append(event)
            self._changed.set()

    async def wait(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.node.name}: no matching event in {timeout}s; "
                                     f"got {self.events[-15:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def close(self) -> None:
        self._task.cancel()


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll a condition of node state (not a fixed sleep: it returns as soon as it holds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.network = MemoryNetwork()
        self.hub = MemoryDiscoveryHub()
        self.nodes: list[Node] = []
        self.recorders: dict[str, Recorder] = {}
        self.transports: dict[str, MemoryTransport] = {}

    async def add(self, name: str, *, clock: Callable[[], float] = time.time,
                  timings: Timings | None = None, limits: Limits | None = None) -> Node:
        transport = MemoryTransport(self.network, limits or Limits())
        node = Node(name, data_dir=self.tmp / name / str(len(self.nodes)),
                    timings=timings or Timings.fast(), limits=limits or Limits(),
                    loopback_only=True,
                    transport=transport, discovery=MemoryDiscovery(self.hub), clock=clock)
        await node.start()
        self.nodes.append(node)
        self.transports[name] = transport
        self.recorders[name] = Recorder(node)
        return node

    async def close(self) -> None:
        for rec in self.recorders.values():
            rec.close()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.close()


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    m = Mesh(tmp_path)
    try:
        yield m
    finally:
        await m.close()


def lose_first(node: Node, kind: type) -> list[object]:
    """Make ``node`` lose the first frame of type ``kind`` it sends, as a connection that dies
    with the frame written into it would; the list holds it once it is lost."""
    wire = node._wire
    real = wire.send
    lost: list[object] = []

    def send(pid: bytes, m: Any) -> bool:
        if isinstance(m, kind) and not lost:
            lost.append(m)
            return True
        return real(pid, m)

    wire.send = send  # type: ignore[method-assign,assignment]
    return lost
