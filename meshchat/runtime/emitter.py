"""The node's event streams: every ``Node.events()`` call gets its own bounded queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

from ..events import Event

__all__ = ["EVENT_QUEUE_SIZE", "Emitter"]

EVENT_QUEUE_SIZE = 262144  # per events() stream; beyond it events are dropped and counted


class Emitter:
    """Fan each event out to every open stream; a full stream drops it (``events_dropped``)."""

    def __init__(self, stats: Counter[str]) -> None:
        self._stats = stats
        self._queues: list[asyncio.Queue[Event]] = []

    def emit(self, event: Event) -> None:
        for queue in self._queues:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._stats["events_dropped"] += 1

    def events(self) -> AsyncIterator[Event]:
        """A stream of every event from now on."""
        queue: asyncio.Queue[Event] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._queues.append(queue)
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
        try:
            while True:
                yield await queue.get()
        finally:
            with contextlib.suppress(ValueError):
                self._queues.remove(queue)
