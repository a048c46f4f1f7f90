"""The loop both interfaces share: events shown as they come, input lines run one by one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshchat.tui.controller import Controller

ReadLine = Callable[[], Awaitable[str | None]]
"""The next input line, or None at the end of input (EOF, Ctrl-D, Ctrl-C at the prompt)."""


@dataclass(frozen=True, slots=True)
class StartOptions:
    """What ``meshchat start`` asked for beyond the node itself."""

    room: str | None = None
    host: str | None = None
    password: str | None = None
    discovery_timeout_s: float = 2.0


async def interact(controller: Controller, read_line: ReadLine, options: StartOptions) -> None:
    """Startup lines, then input lines until /quit or the end of input."""
    controller.subscribe()
    events = asyncio.create_task(controller.pump_events(), name="meshchat-ui-events")
    try:
        await controller.startup(
            room=options.room, host=options.host, password=options.password,
            discovery_timeout_s=options.discovery_timeout_s,
        )
        while not controller.quit_requested:
            line = await read_line()
            if line is None:
                break
            await controller.handle_line(line)
    finally:
        events.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await events


async def until_stopped(work: Awaitable[None], stop: asyncio.Event | None) -> None:
    """Run ``work`` until it ends or ``stop`` is set (a signal), whichever comes first."""
    main = asyncio.ensure_future(work)
    if stop is None:
        await main
        return
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({main, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (main, waiter):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if not main.cancelled():
        main.result()
