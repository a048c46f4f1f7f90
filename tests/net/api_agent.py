"""A meshchat node on the public Python API, driven by JSON lines: the network tests' API agent.

    python -m tests.net.api_agent --name alice [--fast] [--interface eth0] [--data-dir DIR]
                                  [--peer HOST:PORT ...]

It uses only what ``meshchat`` exports, like any bot. ``helpers.Agent`` starts one on a lab
host and wraps the protocol below; tests normally use that, not this module directly.

Protocol (``agent_io``). Every line on stdin is one command, every line on stdout one JSON object
with ``ev``:

    in:  {"id": 7, "cmd": "join", "room": "lobby", "password": null}
    out: {"ev": "ready", "fingerprint": ..., "peer_id": HEX, "address": ..., "ports": {...}}
         {"ev": "reply", "id": 7, "ok": true, "value": ...}
         {"ev": "reply", "id": 7, "ok": false, "error": "JoinRefused", "message": ...,
          "reason": "locked"}                 # reason: JoinRefused.reason, else null
         {"ev": "event", "stream": 0, "event": {"type": "Message", ...}}
         {"ev": "closed"}

Commands run one after another, in the order sent; with ``"background": true`` a command runs
as a task of its own and answers when it ends (a join that waits on something the test does
next). End of input, or ``quit``, closes the node.

Values are JSON: a dataclass becomes an object with ``type`` (its class name) and its fields,
bytes become hex, a ``Room`` becomes ``{"type": "Room", "name", "room_id", "host", "members",
"is_host", "locked", "has_password", "term", "active"}``. Events of ``node.events()`` (stream 0,
opened at start) are printed as they come; ``open_stream`` opens another stream (its events
from then on, tagged with its number).

Commands (arguments by name; the room commands act on the room of the last ``host``/``join``):

=================  ==========================================  ==============================
cmd                arguments                                   value
=================  ==========================================  ==============================
host               room, password=None, announce=True          Room
join               room, password=None                         Room
rooms              seconds=2.0                                 [RoomInfo]
room                                                           Room (the current one)
info                                                           RoomDetails
history                                                        [Message]
bans                                                           [BanInfo]
say                text                                        null
leave / lock / unlock / close_room                             null
handoff            peer                                        null
kick / ban         peer, reason=None                           null
unban              who                                         null
rename_room        name                                        null
set_password       password (null removes it)                  null
msg                to (a name, fingerprint prefix or list), text  null
ping               peer                                        seconds
broadcast          text                                        null
rename             name                                        null
me / peers                                                     PeerInfo / [PeerInfo]
peer_details       who                                         PeerDetails
stats                                                          {counter: n} (node.stats)
send_file          to, path                                    Transfer (issue 7)
room_send_file     path                                        [Transfer]
accept_file        tid=None, into=None                         Transfer
decline_file       tid=None                                    Transfer
cancel_transfer    tid                                         Transfer
wait_transfer      tid, seconds=None                           Transfer
transfers                                                      [Transfer]
open_stream                                                    stream number
quit                                                           null, then "closed"
=================  ==========================================  ==============================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import meshchat
from meshchat import Node, Room, Timings

from . import agent_io
from .agent_io import emit


def special(obj: object) -> Any:
    """A ``Room`` as its view (for ``agent_io.jsonable``)."""
    if isinstance(obj, Path):
        return str(obj)
    return room_view(obj) if isinstance(obj, Room) else None


def jsonable(obj: object) -> Any:
    return agent_io.jsonable(obj, special)


def room_view(room: Room) -> dict[str, Any]:
    view: dict[str, Any] = {"type": "Room", "room_id": room.room_id.hex(), "active": room.active}
    with contextlib.suppress(meshchat.NotInRoom):  # a room never joined has no state
        view.update(name=room.name, host=jsonable(room.host), members=jsonable(room.members),
                    is_host=room.is_host, locked=room.locked, has_password=room.has_password,
                    term=room.term)
    return view


class ApiAgent:
    """The commands (``cmd_<name>``) against one ``Node``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.current: Room | None = None
        self.streams: list[asyncio.Task[None]] = []
        self.background: set[asyncio.Task[None]] = set()

    # -- plumbing ----------------------------------------------------------------------------

    async def run(self, command: agent_io.Command) -> None:
        """Run one command and print its reply; nothing it raises escapes."""
        await agent_io.run_command(self, command, special)

    def start_background(self, command: agent_io.Command) -> None:
        task = asyncio.get_running_loop().create_task(self.run(command))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def open_stream(self) -> int:
        number = len(self.streams)
        events = self.node.events()  # subscribed now: events from this moment on

        async def pump() -> None:
            async for event in events:
                emit({"ev": "event", "stream": number, "event": jsonable(event)})

        self.streams.append(asyncio.get_running_loop().create_task(pump()))
        return number

    def room(self) -> Room:
        if self.current is None:
            raise meshchat.NotInRoom("the agent has not hosted or joined a room")
        return self.current

    async def close(self) -> None:
        for task in [*self.streams, *self.background]:
            task.cancel()
        for task in [*self.streams, *self.background]:
            with contextlib.suppress(BaseException):
                await task

    # -- rooms -------------------------------------------------------------------------------

    async def cmd_host(self, room: str, password: str | None = None,
                       announce: bool = True) -> Room:
        self.current = await self.node.host(room, password, announce=announce)
        return self.current

    async def cmd_join(self, room: str, password: str | None = None) -> Room:
        self.current = await self.node.join(room, password)
        return self.current

    async def cmd_rooms(self, seconds: float = 2.0) -> list[meshchat.RoomInfo]:
        return await self.node.rooms(timeout=seconds)

    async def cmd_room(self) -> Room:
        return self.room()

    async def cmd_info(self) -> meshchat.RoomDetails:
        return self.room().info()

    async def cmd_history(self) -> list[meshchat.Message]:
        return self.room().history()

    async def cmd_bans(self) -> list[meshchat.BanInfo]:
        return self.room().bans

    async def cmd_say(self, text: str) -> None:
        await self.room().say(text)

    async def cmd_leave(self) -> None:
        await self.room().leave()

    async def cmd_lock(self) -> None:
        await self.room().lock()

    async def cmd_unlock(self) -> None:
        await self.room().unlock()

    async def cmd_close_room(self) -> None:
        await self.room().close()

    async def cmd_handoff(self, peer: str) -> None:
        await self.room().handoff(peer)

    async def cmd_kick(self, peer: str, reason: str | None = None) -> None:
        await self.room().kick(peer, reason)

    async def cmd_ban(self, peer: str, reason: str | None = None) -> None:
        await self.room().ban(peer, reason)

    async def cmd_unban(self, who: str) -> None:
        await self.room().unban(who)

    async def cmd_rename_room(self, name: str) -> None:
        await self.room().rename(name)

    async def cmd_set_password(self, password: str | None) -> None:
        await self.room().set_password(password)

    # -- the node ----------------------------------------------------------------------------

    async def cmd_msg(self, to: str | list[str], text: str) -> None:
        await self.node.msg(to, text)

    async def cmd_ping(self, peer: str) -> float:
        return await self.node.ping(peer)

    async def cmd_broadcast(self, text: str) -> None:
        await self.node.broadcast(text)

    async def cmd_rename(self, name: str) -> None:
        await self.node.rename(name)

    async def cmd_me(self) -> meshchat.PeerInfo:
        return self.node.me

    async def cmd_peers(self) -> list[meshchat.PeerInfo]:
        return self.node.peers()

    async def cmd_peer_details(self, who: str) -> meshchat.PeerDetails:
        return self.node.peer_details(who)

    async def cmd_stats(self) -> dict[str, int]:
        return dict(getattr(self.node, "stats", {}))

    async def cmd_send_file(self, to: str, path: str) -> meshchat.Transfer:
        return await self.node.send_file(to, path)

    async def cmd_room_send_file(self, path: str) -> list[meshchat.Transfer]:
        return await self.room().send_file(path)

    async def cmd_accept_file(self, tid: str | None = None, into: str | None = None
                              ) -> meshchat.Transfer:
        return await self.node.accept_file(tid, into)

    async def cmd_decline_file(self, tid: str | None = None) -> meshchat.Transfer:
        return await self.node.decline_file(tid)

    async def cmd_cancel_transfer(self, tid: str) -> meshchat.Transfer:
        return await self.node.cancel_transfer(tid)

    async def cmd_wait_transfer(self, tid: str, seconds: float | None = None
                                ) -> meshchat.Transfer:
        return await self.node.wait_transfer(tid, seconds)

    async def cmd_transfers(self) -> list[meshchat.Transfer]:
        return self.node.transfers()

    async def cmd_open_stream(self) -> int:
        return self.open_stream()

    async def cmd_quit(self) -> None:
        return None


async def serve(args: argparse.Namespace) -> None:
    queue = agent_io.start_reading(asyncio.get_running_loop())
    node = Node(
        name=args.name, interfaces=[args.interface], data_dir=args.data_dir,
        timings=Timings.fast() if args.fast else None, peers=args.peer or None,
    )
    async with node:
        agent = ApiAgent(node)
        agent.open_stream()
        details = node.peer_details(node.me.fingerprint)
        emit({"ev": "ready", "name": node.me.name, "fingerprint": node.me.fingerprint,
              "peer_id": node.me.peer_id.hex(), "address": node.address,
              "ports": {"router": details.router_port, "pub": details.pub_port,
                        "card": details.card_port}})
        try:
            while (command := await queue.get()) is not None:
                if command.get("background"):
                    agent.start_background(command)
                    continue
                quitting = command.get("cmd") == "quit"
                await agent.run(command)
                if quitting:
                    break
        finally:
            await agent.close()
    emit({"ev": "closed"})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="meshchat API agent for the network tests")
    ap.add_argument("--name", required=True)
    ap.add_argument("--fast", action="store_true", help="Timings.fast()")
    ap.add_argument("--interface", default="eth0")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--peer", action="append", default=[], metavar="HOST:PORT")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
