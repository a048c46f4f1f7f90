"""The node's background tasks, and the flag that says the node is closing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any

__all__ = ["Tasks"]


class Tasks:
    """Tasks the node started; once ``closed`` is set nothing new starts."""

    def __init__(self) -> None:
        self.closed = False
        self._running: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> None:
        if self.closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._running.append(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task in self._running:
            self._running.remove(task)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._running))

    async def stop(self) -> None:
        """Cancel every task and wait for each to end."""
        self.closed = True
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
