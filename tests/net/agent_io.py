"""What the lab's agents (``api_agent``, ``hostile_agent``) share: JSON lines on stdin/stdout.

An agent reads one command object per stdin line, ``{"id": 7, "cmd": "name", ...arguments}``,
runs its method ``cmd_<name>(**arguments)`` and prints one reply line::

    {"ev": "reply", "id": 7, "ok": true, "value": ...}
    {"ev": "reply", "id": 7, "ok": false, "error": "ClassName", "message": "...", "reason": ...}

``reason`` is the exception's ``reason`` attribute when it has one (``JoinRefused``), else null.
meshchat's own errors and ``Refused`` (the agent will not do what was asked: an unknown message
type, a value the codec will not encode) are plain answers; any other exception is an agent
bug or a bad argument: answered too, and its traceback goes to stderr (where
``assert_no_trouble`` finds it).
Everything else an agent prints is an object with another ``ev``. The client side is
``netlab.JsonProc`` (``helpers.Agent``, ``helpers.Hostile``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from meshchat import MeshchatError

Command = dict[str, Any]


class Refused(Exception):
    """The agent will not do what a command asks (answered, with no traceback)."""


def jsonable(obj: object, special: Callable[[object], Any] | None = None) -> Any:
    """``obj`` as JSON data: a dataclass is an object with ``type`` (its class name) and its
    fields, bytes are hex, tuples are lists; ``special(obj)`` is tried first (None: not
    special); anything else is its ``repr``."""
    if special is not None and (value := special(obj)) is not None:
        return value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"type": type(obj).__name__}
        for f in dataclasses.fields(obj):
            out[f.name] = jsonable(getattr(obj, f.name), special)
        return out
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, list | tuple):
        return [jsonable(x, special) for x in obj]
    if isinstance(obj, dict):
        return {str(k): jsonable(v, special) for k, v in obj.items()}
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return repr(obj)


def emit(obj: dict[str, Any]) -> None:
    """Print one object as one line (from the event loop's thread only)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def start_reading(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[Command | None]:
    """A queue of the commands read from stdin by a daemon thread; None at end of input.

    A line that is not a JSON object becomes a command named None (answered as unknown).
    """
    queue: asyncio.Queue[Command | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                command = json.loads(line)
            except ValueError:
                command = None
            if not isinstance(command, dict):
                command = {"cmd": None, "bad_line": line.strip()[:200]}
            loop.call_soon_threadsafe(queue.put_nowait, command)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="agent-stdin", daemon=True).start()
    return queue


async def run_command(
    target: object, command: Command, special: Callable[[object], Any] | None = None
) -> None:
    """Run ``target.cmd_<name>(**arguments)`` for one command and print its reply.

    Nothing it raises escapes: errors are answered (see the module docstring).
    """
    command = dict(command)
    ident = command.pop("id", None)
    name = command.pop("cmd", None)
    command.pop("background", None)
    command.pop("bad_line", None)
    reply: dict[str, Any] = {"ev": "reply", "id": ident}
    method = getattr(target, f"cmd_{name}", None) if isinstance(name, str) else None
    try:
        if not callable(method):
            raise ValueError(f"unknown command {name!r}")
        value = await method(**command)
    except Exception as exc:
        if not isinstance(exc, MeshchatError | Refused):
            traceback.print_exc()
        reply.update(ok=False, error=type(exc).__name__, message=str(exc),
                     reason=getattr(exc, "reason", None))
    else:
        reply.update(ok=True, value=jsonable(value, special))
    emit(reply)
