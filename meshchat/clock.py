"""One injected clock: monotonic time for timers, wall time for what users see, and sleep.

The node reads time only through a ``Clock``. ``SystemClock`` is the real one; ``FakeClock``
lets node-level tests of failover, elections and merges run in milliseconds: time moves only
when the test calls ``advance``, and every ``sleep`` due by then wakes in deadline order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock", "WallClock", "as_clock"]


@runtime_checkable
class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps: timers, liveness, rate limits."""
        ...

    def time(self) -> float:
        """Unix time: what a message says about when it was written."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class WallClock(SystemClock):
    """Real timers with a wall time of the caller's choosing (``Node(clock=lambda: ...)``)."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall

    def time(self) -> float:
        return self._wall()


class FakeClock:
    """Time that moves only on ``advance``; wall time is ``wall_at_zero`` + monotonic."""

    def __init__(self, start: float = 1000.0, wall_at_zero: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_at_zero
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall_offset + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), fut))
        await fut

    async def advance(self, seconds: float, step: float = 0.01) -> None:
        """Move time forward by ``seconds`` in steps of ``step``, letting the loop run the
        work each step wakes (frames in flight, replies) before the next."""
        end = self._now + seconds
        while self._now < end:
            self._now = min(end, self._now + step)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            for _ in range(20):  # deliveries are a few hops of call_soon/queues deep
                await asyncio.sleep(0)


def as_clock(clock: Clock | Callable[[], float] | None) -> Clock:
    """A ``Clock`` from what ``Node(clock=...)`` was given: a Clock, a wall-time function
    (the 0.1 API), or nothing."""
    if clock is None:
        return SystemClock()
    if isinstance(clock, Clock):
        return clock
    return WallClock(clock)
