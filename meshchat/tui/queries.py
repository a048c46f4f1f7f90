"""The commands that look something up for the ``Controller`` and report it: ``/whoami``,
``/info`` (this node, the current room, a peer, or rooms on the network by name), ``/ping``
(a peer, or the host of a room) and ``/save chat`` (the current room's history to a file).

Each takes the session's controller and shows its lines through it; what they print is in
``reports``, what a typed name refers to in ``lookup``. A command that cannot run in the
current situation raises ``Refused``, which the controller shows as one error line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from meshchat import PeerNotFound
from meshchat.tui import lookup, render, reports

if TYPE_CHECKING:
    from meshchat.tui.controller import Controller


class Refused(Exception):
    """A command that cannot run in the current situation; the text is shown as an error."""


def whoami(ctl: Controller) -> None:
    for text in reports.whoami(ctl.node, ctl.room):
        ctl.say(text)


async def info(ctl: Controller, target: str | None) -> None:
    room = ctl.room
    if target is None or (room is not None and target == room.name):
        if room is None:
            whoami(ctl)
            return
        for text in reports.room_info(room, ctl.view()):
            ctl.say(text)
        return
    ref = ctl._ref(target)
    try:
        details = ctl.node.peer_details(ref)
    except PeerNotFound:
        found = render.matching_rooms(await ctl._list_rooms(ctl._rooms_timeout_s), target)
        if not found:
            raise PeerNotFound(f"no peer or room called {target!r}") from None
        clash = len(found) > 1
        for room_info in render.sorted_rooms(found):
            ctl.say("room " + render.room_summary(room_info, clash))
        return
    for text in reports.peer_info(details, ctl.view(), room):
        ctl.say(text)


async def save_chat(ctl: Controller, path: str | None) -> None:
    room = ctl._need_room()
    name = room.name
    if path is None:
        path = reports.chat_file_name(name, ctl._now())
    view = render.View(ctl.node.fingerprint, name, ctl.names_clash)
    history = room.history()
    text = reports.chat_text(name, history, view, ctl._now())
    target = await asyncio.to_thread(_write_text, path, text)
    ctl.say(f"saved {len(history)} message{'' if len(history) == 1 else 's'}"
            f" of {name} to {target}")


async def ping(ctl: Controller, target: str | None) -> None:
    room = ctl.room
    if target is None:
        if room is None:
            raise Refused("usage: /ping NAME|ROOM (outside a room, name whom)")
        target = room.name
    label = target
    ref = ctl._ref(target)
    if room is not None and target == room.name:
        host = room.host
        if host.fingerprint == ctl.node.fingerprint:
            raise Refused(f"you host {room.name} yourself (/ping NAME pings a peer)")
        ref, label = host.fingerprint, f"{target} (host {render.shown_name(host, ctl.view())})"
    elif target in ctl._room_names and not lookup.is_peer(ctl.node, ref):
        found = render.matching_rooms(await ctl._list_rooms(ctl._rooms_timeout_s), target)
        if len(found) > 1:
            refs = ", ".join(render.room_ref(i, True) for i in render.sorted_rooms(found))
            raise Refused(f"{len(found)} rooms are called {target}: /ping one of {refs}")
        for room_info in found:
            ref = room_info.host_fingerprint or room_info.host
            label = f"{target} (host {room_info.host})"
    rtt = await ctl.node.ping(ref)
    ctl.say(f"ping {label}: {rtt * 1000:.2f} ms")


def _write_text(path: str, text: str) -> Path:
    target = Path(path).expanduser()
    target.write_text(text, encoding="utf-8")
    return target
