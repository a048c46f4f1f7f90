"""Bots in ten lines: ``Bot`` and ``Context``, on the public API only (layer L3).

::

    from meshchat import Bot, Context

    bot = Bot(name="dice", rooms=["lobby"], prefix="!")

    @bot.command("roll", help="roll dice, e.g. !roll 2d6")
    async def roll(ctx: Context, spec: str = "1d6") -> None:
        await ctx.reply(f"{ctx.sender.name} rolled {spec}")

    bot.run()

A command is a decorated coroutine; its arguments are parsed from its signature (``str``,
``int``, ``float``, defaults, ``*rest``). A wrong count or type is answered with a usage line
built from the signature and ``help``; ``!help`` lists the commands. A failing handler is
logged (a rotating log in the data dir) and answered with a short error line: the bot keeps
running. The bot joins its rooms when they appear and again after anything takes it out
(a close and reopen, a kick later undone), with backoff while a room is missing. Replies are
rate-limited per room (default 5 lines/s, burst 10): a loop in a handler is slowed, it cannot
flood a room. ``meshchat bot FILE.py`` runs a file that defines a ``Bot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import logging.handlers
import signal
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import JoinRefused, MeshchatError, RoomNotFound
from .events import Event, Message, PeerInfo, RoomClosed
from .node import Node, Room

__all__ = ["Bot", "Command", "Context", "ReplyLimiter", "UsageError", "parse_arguments"]

log = logging.getLogger("meshchat.bot")

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[None]])

_CONVERTERS: dict[Any, Callable[[str], Any]] = {str: str, int: int, float: float}
_TYPE_WORDS = {str: "text", int: "a whole number", float: "a number"}
MAX_RUNNING_HANDLERS = 64  # handlers running at once; beyond it a line is dropped (logged)
REJOIN_BACKOFF_S = (0.5, 30.0)  # first and longest wait between tries for a missing room


class UsageError(MeshchatError):
    """A command's arguments do not fit its signature."""


# ------------------------------------------------------------------ commands (pure)


@dataclass(frozen=True, slots=True)
class Command:
    """One ``@bot.command``: its name, handler, help and the parameters after ``ctx``."""

    name: str
    func: Callable[..., Awaitable[None]]
    help: str = ""
    params: tuple[inspect.Parameter, ...] = ()
    types: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, func: Callable[..., Awaitable[None]], help: str = "") -> Command:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"command {name!r}: the handler must be an async function")
        params = list(inspect.signature(func).parameters.values())[1:]  # after ctx
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable annotations: every argument is text
            hints = {}
        types: dict[str, Any] = {}
        for p in params:
            if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD):
                raise TypeError(f"command {name!r}: only positional parameters and *rest")
            hint = hints.get(p.name, str)
            if hint not in _CONVERTERS:
                raise TypeError(f"command {name!r}: {p.name} must be str, int or float")
            types[p.name] = hint
        return cls(name, func, help or (inspect.getdoc(func) or "").split("\n")[0],
                   tuple(params), types)

    def usage(self, prefix: str) -> str:
        """``!roll [spec]`` — its parameters as a user types them, then the help."""
        parts = [f"{prefix}{self.name}"]
        for p in self.params:
            if p.kind is p.VAR_POSITIONAL:
                parts.append(f"[{p.name}...]")
            elif p.default is p.empty:
                parts.append(f"<{p.name}>")
            else:
                parts.append(f"[{p.name}]")
        line = " ".join(parts)
        return f"{line} — {self.help}" if self.help else line


def parse_arguments(command: Command, words: Sequence[str]) -> list[Any]:
    """The positional arguments for ``command`` from the words after its name."""
    values: list[Any] = []
    rest = list(words)
    for p in command.params:
        convert = _CONVERTERS[command.types[p.name]]
        if p.kind is p.VAR_POSITIONAL:
            values += [_convert(convert, p, w, command) for w in rest]
            rest = []
            break
        if rest:
            values.append(_convert(convert, p, rest.pop(0), command))
        elif p.default is not p.empty:
            values.append(p.default)
        else:
            raise UsageError(f"{p.name} is missing")
    if rest:
        raise UsageError(f"too many arguments ({len(rest)} more than it takes)")
    return values


def _convert(convert: Callable[[str], Any], p: inspect.Parameter, word: str,
             command: Command) -> Any:
    try:
        return convert(word)
    except ValueError:
        kind = _TYPE_WORDS.get(command.types[p.name], "text")
        raise UsageError(f"{p.name} must be {kind}, not {word!r}") from None


class ReplyLimiter:
    """A token bucket per room (pure: the caller passes ``now``). ``delay`` draws a token and
    says how long to wait before the line may go out; waiting lines queue behind it."""

    def __init__(self, rate_per_s: float = 5.0, burst: int = 10, max_rooms: int = 256) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("the reply rate must be positive and the burst at least 1")
        self.rate = rate_per_s
        self.burst = burst
        self._max = max_rooms
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def delay(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate) - 1.0
        if key not in self._buckets and len(self._buckets) >= self._max:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / self.rate


# ------------------------------------------------------------------ context


@dataclass(slots=True)
class Context:
    """What a handler gets: the bot, its node, where the line came from and how to answer."""

    bot: Bot
    node: Node
    room: Room | None
    sender: PeerInfo
    text: str = ""
    args: list[str] = field(default_factory=list)
    private: bool = False
    event: Event | None = None

    async def reply(self, text: str) -> None:
        """Answer where the line came from: the room, or privately if it came privately."""
        if self.private or self.room is None:
            await self.reply_private(text)
        else:
            await self.bot._say(self.room, text)

    async def reply_private(self, text: str) -> None:
        """Answer the sender alone."""
        await self.bot._wait_turn(f"@{self.sender.fingerprint}")
        await self.node.msg(self.sender.fingerprint, text)

    async def accept_file(self, into: str | Path | None = None) -> object:
        """Accept the file offer this context is about (``@bot.on(FileOffered)``)."""
        transfer = getattr(self.event, "transfer", None)
        accept = getattr(self.node, "accept_file", None)
        if transfer is None or accept is None:
            raise MeshchatError("there is no file offer to accept here")
        return await accept(transfer.id, into=into)


# ------------------------------------------------------------------ the bot


class Bot:
    """A chat bot: commands, message and event handlers, rooms kept joined."""

    def __init__(self, name: str = "bot", rooms: Sequence[str] = (), prefix: str = "!", *,
                 data_dir: str | Path | None = None, interfaces: Sequence[str] | None = None,
                 peers: Sequence[str] | None = None, password: str | None = None,
                 host: bool = False, reply_rate: float = 5.0, reply_burst: int = 10,
                 goodbye: str | None = None, **node_options: Any) -> None:
        if not prefix:
            raise ValueError("a bot needs a command prefix")
        self.name = name
        self.rooms = list(rooms)
        self.prefix = prefix
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.interfaces = list(interfaces) if interfaces else None
        self.peers = list(peers) if peers else None
        self.password = password
        self.host = host
        self.goodbye = goodbye
        self.node_options = node_options
        self.commands: dict[str, Command] = {}
        self._message_handlers: list[Callable[[Context], Awaitable[None]]] = []
        self._event_handlers: list[tuple[type, Callable[[Context, Any], Awaitable[None]]]] = []
        self._limiter = ReplyLimiter(reply_rate, reply_burst)
        self._node: Node | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._room_changed = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self.errors = 0  # handlers that raised
        self.echo_joins = True  # print "* NAME joined ROOM" on stdout, for whoever runs it

    # ---------------------------------------------------------------- decorators

    def command(self, name: str | None = None, *, help: str = "") -> Callable[[Handler], Handler]:
        """``@bot.command("roll", help=...)``: a command; arguments from the signature."""

        def register(func: Handler) -> Handler:
            cmd = Command.of((name or func.__name__).lower(), func, help)
            if cmd.name in self.commands or cmd.name == "help":
                raise ValueError(f"command {cmd.name!r} is defined twice")
            self.commands[cmd.name] = cmd
            return func

        return register

    def on_message(self, func: Handler) -> Handler:
        """``@bot.on_message``: every chat line but the bot's own, after commands are tried."""
        self._message_handlers.append(func)
        return func

    def on(self, event_type: type) -> Callable[[Handler], Handler]:
        """``@bot.on(PeerJoined)``: any event type of meshchat's event set."""

        def register(func: Handler) -> Handler:
            self._event_handlers.append((event_type, func))
            return func

        return register

    # ---------------------------------------------------------------- running

    @property
    def node(self) -> Node:
        if self._node is None:
            raise MeshchatError("the bot is not running")
        return self._node

    def run(self) -> None:
        """Run until Ctrl-C or SIGTERM (``asyncio.run``); both stop it cleanly."""
        if _loading is not None:  # ``meshchat bot FILE.py`` runs it, with its options
            _loading.append(self)
            return
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.run_async(handle_signals=True))

    async def run_async(self, *, handle_signals: bool = False) -> None:
        """Start, run until ``stop()`` (or a signal, with ``handle_signals``), then close."""
        self._stop = asyncio.Event()
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._stop.set)
        node = Node(self.name, data_dir=self.data_dir, interfaces=self.interfaces,
                    peers=self.peers, **self.node_options)
        await node.start()
        self._node = node
        self._setup_log(node)
        log.info("bot %s started (%s), rooms %s", node.name, node.fingerprint[:8], self.rooms)
        # Subscribed before any task runs: a frame the node already holds (a private message
        # sent as the bot came up) may be handled before the pump's first step.
        tasks = [asyncio.create_task(self._pump(node, node.events()))]
        tasks += [asyncio.create_task(self._keep_joined(node, r)) for r in self.rooms]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*tasks, *self._running, return_exceptions=True)
            if self.goodbye:
                for room in node.joined_rooms():
                    with contextlib.suppress(MeshchatError):
                        await room.say(self.goodbye)
            await node.close("quit")  # leaves every room, says bye to the network
            log.info("bot %s stopped", node.name)
            self._node = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _setup_log(self, node: Node) -> None:
        from . import log_dir

        try:
            path = log_dir(node.data_dir) / f"bot-{node.name}.log"
        except MeshchatError as exc:
            log.warning("no bot log file: %s", exc)
            return
        if any(isinstance(h, logging.handlers.RotatingFileHandler)
               and getattr(h, "baseFilename", "") == str(path) for h in log.handlers):
            return
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=1 << 20, backupCount=3,
                                                       encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    # ---------------------------------------------------------------- rooms

    def _room(self, node: Node, name: str | None) -> Room | None:
        if name is None:
            return None
        for room in node.joined_rooms():
            if room.name == name:
                return room
        return None

    async def _keep_joined(self, node: Node, name: str) -> None:
        """Join ``name`` when it appears; again whenever the bot is out of it."""
        wait = REJOIN_BACKOFF_S[0]
        while True:
            if self._room(node, name) is not None:
                wait = REJOIN_BACKOFF_S[0]
                self._room_changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room_changed.wait(), 1.0)
                continue
            try:
                try:
                    await node.join(name, self.password)
                except RoomNotFound:
                    if not self.host:
                        raise
                    await node.host(name, self.password)
                log.info("in %s", name)
                if self.echo_joins:
                    print(f"* {self.name} joined {name}", flush=True)
                continue
            except (RoomNotFound, JoinRefused) as exc:
                log.info("cannot join %s yet (%s); again in %.1f s", name, exc, wait)
            except MeshchatError as exc:
                log.warning("join of %s failed: %s; again in %.1f s", name, exc, wait)
            await asyncio.sleep(wait)
            wait = min(REJOIN_BACKOFF_S[1], wait * 2)

    # ---------------------------------------------------------------- events

    async def _pump(self, node: Node, events: AsyncIterator[Event]) -> None:
        async for event in events:
            if isinstance(event, RoomClosed) or type(event).__name__ == "MemberRemoved":
                self._room_changed.set()
            if isinstance(event, Message) and event.sender.fingerprint != node.fingerprint:
                self._spawn(self._on_message(node, event))
            for event_type, handler in self._event_handlers:
                if isinstance(event, event_type):
                    self._spawn(self._on_event(node, event, handler))

    def _spawn(self, coro: Awaitable[None]) -> None:
        if len(self._running) >= MAX_RUNNING_HANDLERS:
            log.warning("%d handlers running: an event is dropped", len(self._running))
            if inspect.iscoroutine(coro):
                coro.close()
            return
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _context(self, node: Node, msg: Message) -> Context:
        return Context(self, node, None if msg.private else self._room(node, msg.room),
                       msg.sender, msg.text, msg.text.split(), msg.private, msg)

    async def _on_message(self, node: Node, msg: Message) -> None:
        ctx = self._context(node, msg)
        # `/me !roll` is no command, nor an away peer's automatic reply that reads "!roll"
        if msg.text.startswith(self.prefix) and not msg.action and not msg.auto:
            words = msg.text[len(self.prefix):].split()
            if words:
                ctx.args = words[1:]
                await self._dispatch(ctx, words[0].lower(), words[1:])
        for handler in self._message_handlers:
            await self._guarded(ctx, "a message handler", handler(ctx))

    async def _dispatch(self, ctx: Context, name: str, words: list[str]) -> None:
        if name == "help":
            await self._help(ctx, words)
            return
        cmd = self.commands.get(name)
        if cmd is None:
            return  # not ours: another bot's command, or a line that starts with the prefix
        try:
            values = parse_arguments(cmd, words)
        except UsageError as exc:
            await self._guarded(ctx, "a usage reply",
                                ctx.reply(f"{exc}. usage: {cmd.usage(self.prefix)}"))
            return
        await self._guarded(ctx, f"{self.prefix}{name}", cmd.func(ctx, *values))

    async def _help(self, ctx: Context, words: list[str]) -> None:
        if words:
            cmd = self.commands.get(words[0].lower().removeprefix(self.prefix))
            text = cmd.usage(self.prefix) if cmd else f"no command {words[0]!r}"
            await self._guarded(ctx, "help", ctx.reply(text))
            return
        names = " ".join(f"{self.prefix}{n}" for n in sorted(self.commands))
        await self._guarded(ctx, "help", ctx.reply(
            f"commands: {names or '(none)'} — {self.prefix}help NAME for one"))

    async def _on_event(self, node: Node, event: Event,
                        handler: Callable[[Context, Any], Awaitable[None]]) -> None:
        room_name = getattr(event, "room", None)
        sender = getattr(event, "peer", None) or getattr(event, "sender", None)
        transfer = getattr(event, "transfer", None)
        if sender is None and transfer is not None:
            sender = getattr(transfer, "peer", None)
        room = self._room(node, room_name) if isinstance(room_name, str) else None
        who = sender if isinstance(sender, PeerInfo) else node.me
        ctx = Context(self, node, room, who, event=event)
        await self._guarded(ctx, type(event).__name__ + " handler", handler(ctx, event))

    async def _guarded(self, ctx: Context, what: str, call: Awaitable[None]) -> None:
        """Run one handler; a failure is logged and answered, never a crash."""
        try:
            await call
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors += 1
            log.exception("%s failed on %r from %s", what, ctx.text, ctx.sender.label)
            if ctx.text:  # answer a line, not an event nobody typed
                with contextlib.suppress(Exception):
                    await ctx.reply(f"sorry, {what} failed: {type(exc).__name__}")

    # ---------------------------------------------------------------- saying

    async def _wait_turn(self, key: str) -> None:
        delay = self._limiter.delay(key, time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)

    async def say(self, room: str | Room, text: str) -> None:
        """Say ``text`` in one of the bot's rooms (by name or handle), within the reply
        limit: for lines that answer no one (announcements, timers)."""
        handle = self._room(self.node, room) if isinstance(room, str) else room
        if handle is None:
            raise MeshchatError(f"the bot is not in {room}")
        await self._say(handle, text)

    async def _say(self, room: Room, text: str) -> None:
        await self._wait_turn(room.name)
        await room.say(text)


# ``meshchat bot FILE.py``: while the file loads, ``Bot.run()`` records the bot instead.
_loading: list[Bot] | None = None


def load_bots(path: str | Path) -> list[Bot]:
    """The bots a bot file defines (every module-level ``Bot``, and any it asked to run)."""
    import runpy

    global _loading
    _loading = []
    try:
        found = runpy.run_path(str(path), run_name="__meshchat_bot__")
        bots = list(_loading)
    finally:
        _loading = None
    for value in found.values():
        if isinstance(value, Bot) and value not in bots:
            bots.append(value)
    return bots
