"""The ``meshchat`` command: ``meshchat start``, ``meshchat rooms``, ``meshchat send``,
``meshchat receive``, ``meshchat --version``.

``start`` runs a node with an interface: the prompt_toolkit app when stdin and stdout are
terminals, line mode otherwise (or with ``--no-tui``). Ctrl-C and SIGTERM end it cleanly: the
node leaves its rooms (a host hands off), says goodbye, and the process exits with status 0.
A node that cannot start (an interface that is missing or has no address, a data dir that
cannot be written, no name) prints one line, `meshchat: error: ...`, and exits with status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

import meshchat
from meshchat import MeshchatError, RoomInfo
from meshchat.commands import normalize_color, validate_name
from meshchat.tui import StartOptions, render, run_interface
from meshchat.tui.api import NodeAPI
from meshchat.tui.transfers import TransferLines

_ASK = "\0ask"
_SAME_ROOM = "\0room"
CLOSE_TIMEOUT_S = 10.0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(meshchat.__version__, "--version", prog_name="meshchat",
                      message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log details to stderr.")
def main(verbose: bool) -> None:
    """A chat for the local network with no server."""
    if verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _network_options(func: Any) -> Any:
    for option in reversed([
        click.option("--interface", "interfaces", multiple=True, metavar="NAME|ADDR",
                     help="Network interface to use (repeatable; default: all)."),
        click.option("--peer", "peers", multiple=True, metavar="HOST:PORT",
                     help="A peer to contact directly, for networks without multicast "
                          "(repeatable)."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where identity, settings and history live."),
        click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
                     help="Port others can pass to --peer (0: any free port)."),
        click.option("--loopback-only", is_flag=True,
                     help="Use 127.0.0.1 only (tests and local experiments)."),
        click.option("--fast-timings", is_flag=True, hidden=True,
                     help="Short timers, for tests on one machine."),
    ]):
        func = option(func)
    return func


@main.command()
@click.option("--name", help="Your name (kept for the next start).")
@click.option("--room", metavar="ROOM",
              help="Join ROOM if it exists on the network, otherwise host it.")
@click.option("--host", "host_room", metavar="ROOM", is_flag=False, flag_value=_SAME_ROOM,
              default=None, help="Host ROOM (alone: host the --room without looking for it).")
@click.option("--password", is_flag=False, flag_value=_ASK, default=None,
              help="Password of the room (alone: ask for it without echo).")
@click.option("--color", help="Colour of your name (a name or #RRGGBB).")
@click.option("--no-tui", is_flag=True, help="Line mode even on a terminal.")
@click.option("--discovery-timeout", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Seconds to look for rooms at start.")
@click.option("--accept-files-from", "accept_from", multiple=True, metavar="NAME",
              help="Accept file offers from NAME without asking (repeatable).")
@_network_options
def start(name: str | None, room: str | None, host_room: str | None, password: str | None,
          color: str | None, no_tui: bool, discovery_timeout: float, accept_from: tuple[str, ...],
          interfaces: tuple[str, ...], peers: tuple[str, ...], data_dir: Path | None, port: int,
          loopback_only: bool, fast_timings: bool) -> None:
    """Start a node and chat."""
    terminal = not no_tui and sys.stdin.isatty() and sys.stdout.isatty()
    if name is not None and (problem := validate_name(name)):
        raise click.BadParameter(problem, param_hint="--name")
    if color is not None:
        color = normalize_color(color)
        if color is None:
            raise click.BadParameter("not a colour name or #RRGGBB", param_hint="--color")
    host: str | None = None
    if host_room == _SAME_ROOM:
        if room is None:
            raise click.UsageError("--host without a room name needs --room ROOM")
        host, room = room, None
    elif host_room is not None:
        if room is not None and room != host_room:
            raise click.UsageError("--host ROOM and --room ROOM name different rooms")
        host, room = host_room, None
    if password == _ASK:
        if not sys.stdin.isatty():
            raise click.UsageError("--password needs a value when stdin is not a terminal")
        password = click.prompt("Room password", hide_input=True, default="",
                                show_default=False) or None
    options = StartOptions(room=room, host=host, password=password,
                           discovery_timeout_s=discovery_timeout)
    node_args: dict[str, Any] = dict(
        interfaces=list(interfaces) or None, data_dir=data_dir, peers=list(peers) or None,
        color=color, port=port, loopback_only=loopback_only, timings=_timings(fast_timings),
    )
    _reconfigure_stdout()
    _log_to_file(data_dir)
    sys.exit(_run(_start(name, node_args, options, terminal=terminal,
                         accept_from=accept_from)))


def _log_to_file(data_dir: Path | None) -> None:
    """Diagnostics go to rotating files in the data dir (``-v`` adds stderr): warnings meant
    for the user reach the screen as ``* warning:`` lines, not as raw log records."""
    from logging.handlers import RotatingFileHandler

    root = logging.getLogger()
    if any(isinstance(h, RotatingFileHandler) for h in root.handlers):
        return
    try:
        logs = meshchat.log_dir(data_dir)
        handler = RotatingFileHandler(logs / "meshchat.log", maxBytes=1 << 20, backupCount=3,
                                      encoding="utf-8")
    except (OSError, MeshchatError):
        handler = logging.NullHandler()  # type: ignore[assignment]
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    wanted = _env_log_level()
    if wanted is not None:
        root.setLevel(min(wanted, root.level or wanted))
    elif root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)


def _env_log_level() -> int | None:
    """``MESHCHAT_LOG_LEVEL`` (``debug``, ``info``, ``warning``…): how much the log file
    gets, for a bug report without ``-v``'s stderr. Unknown values are ignored."""
    name = os.environ.get("MESHCHAT_LOG_LEVEL", "").strip().upper()
    level = logging.getLevelNamesMapping().get(name) if name else None
    return level if isinstance(level, int) and level > logging.NOTSET else None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Seconds to look for rooms.")
@_network_options
def rooms(as_json: bool, timeout: float, interfaces: tuple[str, ...], peers: tuple[str, ...],
          data_dir: Path | None, port: int, loopback_only: bool, fast_timings: bool) -> None:
    """List the rooms on the network and exit."""
    node_args: dict[str, Any] = dict(
        interfaces=list(interfaces) or None, peers=list(peers) or None, port=port,
        loopback_only=loopback_only, timings=_timings(fast_timings),
    )
    sys.exit(_run(_list_rooms(node_args, data_dir, timeout, as_json)))


@main.command()
@click.argument("to", metavar="NAME")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="Your name (kept for the next start).")
@click.option("--timeout", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Seconds to wait for NAME to appear on the network.")
@_network_options
def send(to: str, path: Path, name: str | None, timeout: float, interfaces: tuple[str, ...],
         peers: tuple[str, ...], data_dir: Path | None, port: int, loopback_only: bool,
         fast_timings: bool) -> None:
    """Send a file or folder to NAME, wait until it is done, exit (0 done, 1 declined or
    failed). Progress goes to stderr."""
    node_args: dict[str, Any] = dict(
        interfaces=list(interfaces) or None, data_dir=data_dir, peers=list(peers) or None,
        port=port, loopback_only=loopback_only, timings=_timings(fast_timings))
    sys.exit(_run(_send(name, node_args, to, path, timeout)))


@main.command()
@click.option("--from", "from_", metavar="NAME", help="Accept offers from NAME only.")
@click.option("--into", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to save into (default: downloads/ in the data dir).")
@click.option("--once", is_flag=True, help="Exit after the first transfer ends.")
@click.option("--name", help="Your name (kept for the next start).")
@_network_options
def receive(from_: str | None, into: Path | None, once: bool, name: str | None,
            interfaces: tuple[str, ...], peers: tuple[str, ...], data_dir: Path | None,
            port: int, loopback_only: bool, fast_timings: bool) -> None:
    """Accept file offers (from NAME, or anyone) until Ctrl-C, or ``--once``."""
    node_args: dict[str, Any] = dict(
        interfaces=list(interfaces) or None, data_dir=data_dir, peers=list(peers) or None,
        port=port, loopback_only=loopback_only, timings=_timings(fast_timings))
    sys.exit(_run(_receive(name, node_args, from_, into, once)))


async def _send(name: str | None, node_args: dict[str, Any], to: str, path: Path,
                wait_s: float) -> int:
    node = meshchat.Node(name, **node_args)
    try:
        await node.start()
    except (MeshchatError, OSError) as exc:
        return _fail(str(exc))
    lines = TransferLines()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                node.resolve(to)
                break
            except meshchat.PeerNotFound:
                if loop.time() > deadline:
                    return _fail(f"{to} is not on the network")
                await asyncio.sleep(0.1)
        events = node.events()
        try:
            t = await node.send_file(to, path)
        except MeshchatError as exc:
            return _fail(str(exc))
        click.echo(f"offered {t.name} to {t.peer.name}; waiting", err=True)
        async for ev in events:
            if isinstance(ev, meshchat.TransferProgress | meshchat.TransferDone |
                          meshchat.TransferFailed) and ev.transfer.id == t.id and \
                    ev.transfer.direction == "out":
                text = lines.line(ev)
                if text:
                    click.echo(text, err=True)
                if ev.transfer.state in ("done", "failed", "declined", "cancelled"):
                    return 0 if ev.transfer.state == "done" else 1
        return 1
    finally:
        await _close(node)


async def _receive(name: str | None, node_args: dict[str, Any], from_: str | None,
                   into: Path | None, once: bool) -> int:
    stop = asyncio.Event()
    _on_signals(stop.set)
    node = meshchat.Node(name, **node_args)
    try:
        await node.start()
    except (MeshchatError, OSError) as exc:
        return _fail(str(exc))
    lines = TransferLines()
    status = 0
    try:
        events = node.events()
        stopping = asyncio.ensure_future(stop.wait())
        while not stop.is_set():
            nxt = asyncio.ensure_future(anext(events))
            await asyncio.wait({nxt, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                nxt.cancel()
                break
            ev = nxt.result()
            if isinstance(ev, meshchat.FileOffered):
                t = ev.transfer
                if from_ is not None and t.peer.name.lower() != from_.lower():
                    click.echo(f"declining {t.name} from {t.peer.name}", err=True)
                    await node.decline_file(t.id)
                    continue
                try:
                    await node.accept_file(t.id, into)
                except MeshchatError as exc:
                    click.echo(f"meshchat: {exc}", err=True)
                    status = 1
                    if once:
                        break
                continue
            if isinstance(ev, meshchat.TransferProgress | meshchat.TransferDone |
                          meshchat.TransferFailed) and ev.transfer.direction == "in":
                text = lines.line(ev)
                if text:
                    click.echo(text, err=True)
                if isinstance(ev, meshchat.TransferDone):
                    click.echo(str(ev.transfer.path))
                if isinstance(ev, meshchat.TransferDone | meshchat.TransferFailed):
                    status = 0 if isinstance(ev, meshchat.TransferDone) else 1
                    if once:
                        break
        stopping.cancel()
        return status
    finally:
        await _close(node)


@main.command("bot")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--room", "rooms_", multiple=True, metavar="ROOM",
              help="A room to keep joined (repeatable; default: the rooms the file names).")
@click.option("--name", help="The bot's name (default: the name the file gives it).")
@click.option("--password", default=None, help="The rooms' password, if they have one.")
@_network_options
def bot(file: Path, rooms_: tuple[str, ...], name: str | None, password: str | None,
        interfaces: tuple[str, ...], peers: tuple[str, ...], data_dir: Path | None, port: int,
        loopback_only: bool, fast_timings: bool) -> None:
    """Run the bot that FILE.py defines (a ``meshchat.Bot``), without ``bot.run()``."""
    from .bot import load_bots

    try:
        bots = load_bots(file)
    except Exception as exc:  # the user's file: say what is wrong with it, briefly
        click.echo(f"meshchat: error: {file} could not be loaded: "
                   f"{type(exc).__name__}: {exc}", err=True)
        sys.exit(2)
    if len(bots) != 1:
        click.echo(f"meshchat: error: {file} defines {len(bots)} bots; it must define one",
                   err=True)
        sys.exit(2)
    chosen = bots[0]
    if rooms_:
        chosen.rooms = list(rooms_)
    if name:
        chosen.name = _checked_name(name)
    if password is not None:
        chosen.password = password
    if interfaces:
        chosen.interfaces = list(interfaces)
    if peers:
        chosen.peers = list(peers)
    if data_dir is not None:
        chosen.data_dir = data_dir
    chosen.node_options.setdefault("port", port)
    chosen.node_options.setdefault("loopback_only", loopback_only)
    if fast_timings:
        chosen.node_options["timings"] = meshchat.Timings.fast()
    if not chosen.rooms:
        click.echo("meshchat: error: the bot has no rooms: give --room ROOM", err=True)
        sys.exit(2)
    chosen.echo_joins = True
    click.echo(f"* bot {chosen.name} in {', '.join(chosen.rooms)} (Ctrl-C stops it)", err=True)
    try:
        chosen.run()
    except meshchat.MeshchatError as exc:
        sys.exit(_fail(str(exc)))


def _timings(fast: bool) -> Any:
    return meshchat.Timings.fast() if fast else None


def _new_node(name: str | None, node_args: dict[str, Any]) -> NodeAPI:
    node: NodeAPI = meshchat.Node(name, **node_args)
    return node


def _run(main_coro: Any) -> int:
    try:
        result: int = asyncio.run(main_coro)
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 0
    return result


START_FAILED = 2  # `meshchat start` could not start: a bad interface, data dir, or name


def _fail(message: str, status: int = 1) -> int:
    click.echo(f"meshchat: error: {message}", err=True)
    return status


async def _start(name: str | None, node_args: dict[str, Any], options: StartOptions, *,
                 terminal: bool, accept_from: Sequence[str] = ()) -> int:
    stop = asyncio.Event()
    _on_signals(stop.set)
    node = _new_node(name, node_args)
    try:
        await node.start()
    except MeshchatError as exc:
        if name is not None or not str(exc).startswith("no name"):
            return _fail(str(exc), START_FAILED)
        if not sys.stdin.isatty():
            return _fail("no name saved yet: pass --name NAME", START_FAILED)
        name = click.prompt("Your name", value_proc=_checked_name)
        node = _new_node(name, node_args)
        try:
            await node.start()
        except MeshchatError as again:
            return _fail(str(again), START_FAILED)
    except OSError as exc:
        return _fail(str(exc), START_FAILED)
    if accept_from and isinstance(node, meshchat.Node):
        node.accept_files_from(*accept_from)
    try:
        await run_interface(node, options, terminal=terminal, stop=stop)
    finally:
        await _close(node)
    return 0


async def _list_rooms(node_args: dict[str, Any], data_dir: Path | None, wait_s: float,
                      as_json: bool) -> int:
    with contextlib.ExitStack() as stack:
        if data_dir is None:  # a throwaway identity: never clash with a running `start`
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="meshchat-")))
        node = _new_node(None, {**node_args, "data_dir": data_dir, "listen_only": True})
        try:
            await node.start()
        except (MeshchatError, OSError) as exc:
            return _fail(str(exc))
        try:
            infos = await node.rooms(timeout=wait_s)
        finally:
            await _close(node)
    for line in rooms_output(infos, as_json=as_json):
        click.echo(line)
    return 0


def rooms_output(infos: Sequence[RoomInfo], *, as_json: bool) -> list[str]:
    """What ``meshchat rooms`` prints: a table, or JSON (``join``: what ``--room`` and
    ``/join`` take — ``name#fp8`` where two rooms share a name)."""
    ordered = render.sorted_rooms(infos)
    clashes = render.clashing_room_names(infos)
    if as_json:
        return [json.dumps([
            {"name": i.name, "host": i.host, "host_fingerprint": i.host_fingerprint,
             "members": i.members, "locked": i.locked, "has_password": i.has_password,
             "join": render.room_ref(i, i.name in clashes)}
            for i in ordered
        ], indent=2)]
    if not infos:
        return ["no rooms on the network"]
    rows = [("ROOM", "HOST", "MEMBERS", "FLAGS")] + [
        (render.short(i.name), render.host_label(i, i.name in clashes), str(i.members),
         ",".join(f for f, on in (("locked", i.locked), ("password", i.has_password)) if on))
        for i in ordered
    ]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    for name in sorted(clashes, key=str.casefold):
        refs = [render.clean(render.room_ref(i, True)) for i in ordered if i.name == name]
        lines.append(f"{len(refs)} rooms are called {render.short(name)}: pick one with --room"
                     f" or /join: {', '.join(refs)}")
    return lines


async def _close(node: NodeAPI) -> None:
    try:
        await asyncio.wait_for(node.close(reason="quit"), CLOSE_TIMEOUT_S)
    except TimeoutError:
        click.echo("meshchat: the node did not close in time", err=True)
    except MeshchatError as exc:
        click.echo(f"meshchat: error while closing: {exc}", err=True)


def _on_signals(callback: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, callback)


def _checked_name(text: str) -> str:
    name = text.strip()
    problem = validate_name(name)
    if problem:
        raise click.BadParameter(problem)
    return name


def _reconfigure_stdout() -> None:
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(Exception):
            reconfigure(errors="replace")
