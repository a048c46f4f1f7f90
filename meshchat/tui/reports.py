"""What the reporting commands print (/info, /whoami, /users...) and what a failed command says."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence

from meshchat import (
    AmbiguousName,
    JoinRefused,
    MeshchatError,
    Message,
    NotHost,
    NotInRoom,
    PeerInfo,
    PeerNotFound,
    RoomInfo,
    RoomNotFound,
    Timeout,
)
from meshchat import commands as c
from meshchat.tui import render
from meshchat.tui.api import NodeAPI, PeerDetailsAPI, RoomAPI


def describe_error(exc: MeshchatError, command: c.Command, listings: Sequence[RoomInfo]) -> str:
    """The error line for ``exc`` raised by ``command`` (``listings``: the rooms last listed)."""
    text = str(exc)
    match exc:
        case NotHost():
            action = c.spec_for(command.command).action if command.command else ""
            return f"only the host can {action or 'do that'}"
        case JoinRefused(reason="ambiguous") | AmbiguousName() if isinstance(command, c.Join):
            return _ambiguous_room(command.room, text, listings)
        case JoinRefused(reason=reason) if isinstance(command, c.Join):
            room = command.room
            return {
                "banned": f"you are banned from {room}",
                "locked": f"{room} is locked: nobody new can join",
                "password": (f"wrong password for {room}" if command.password else
                             f"{room} needs a password: /join {room} PASSWORD"),
                "name": f"someone in {room} already has your name",
            }.get(reason, text)
        case RoomNotFound() if isinstance(command, c.Join):
            return f"no room {command.room} on the network (/rooms lists them)"
        case AmbiguousName():
            return f"{text} — use a fingerprint prefix"
        case PeerNotFound() | Timeout() | NotInRoom():
            return text or type(exc).__name__
    return text or type(exc).__name__


def _ambiguous_room(ref: str, text: str, listings: Sequence[RoomInfo]) -> str:
    name = render.split_room_ref(ref)[0]
    listed = [i for i in render.sorted_rooms(listings) if i.name == name]
    if len({i.host_fingerprint for i in listed}) < 2:
        return f"{text} — /join {name}#FP picks one (FP: its host's fingerprint, /rooms)"
    choices = " or ".join(f"/join {render.room_ref(i, True)} (host {render.short(i.host)})"
                          for i in listed)
    return f"{len(listed)} rooms are called {name}: {choices}"


def member_label(room: RoomAPI, peer: PeerInfo, view: render.View, *, full: bool = False) -> str:
    """``bob (host, you)``; ``full`` adds the fingerprint and the addresses."""
    label = render.shown_name(peer, view)
    marks = []
    if peer.fingerprint == room.host.fingerprint:
        marks.append("host")
    if peer.fingerprint == view.me_fingerprint:
        marks.append("you")
    if peer.away is not None:
        marks.append(f"away: {render.clean(peer.away)}")
    if full:
        marks.append(f"fp {peer.fingerprint[:8]}")
        if peer.addresses:
            marks.append(", ".join(peer.addresses))
    return label + (f" ({', '.join(marks)})" if marks else "")


def members(room: RoomAPI, view: render.View) -> str:
    """What ``/list`` says in a room."""
    shown = room.members
    labels = ", ".join(member_label(room, p, view) for p in shown)
    return f"members of {room.name} ({len(shown)}): {labels}"


def users(room: RoomAPI, view: render.View) -> Iterator[str]:
    """What ``/users`` says: one line per member, with fingerprint and addresses."""
    shown = room.members
    yield f"{len(shown)} user{'' if len(shown) == 1 else 's'} in {room.name}:"
    for peer in shown:
        yield "  " + member_label(room, peer, view, full=True)


def user_count(room: RoomAPI) -> str:
    count = len(room.members)
    return f"{count} user{'' if count == 1 else 's'} in {room.name}"


def bans(room: RoomAPI) -> Iterator[str]:
    """What ``/banned`` says."""
    listed = room.bans
    if not listed:
        yield f"nobody is banned from {room.name}"
    for ban in listed:
        reason = f": {render.clean(ban.reason)}" if ban.reason else ""
        yield (f"banned from {room.name}: {render.clean(ban.name)}"
               f" ({ban.fingerprint}){reason}")


def whoami(node: NodeAPI, room: RoomAPI | None) -> Iterator[str]:
    """What ``/whoami`` says (and ``/info`` outside a room)."""
    yield (f"you are {node.name} (fp {node.fingerprint}), colour {node.color or 'default'},"
           f" reachable at {node.address}")
    if node.me.away is not None:
        yield f"  you are away: {render.clean(node.me.away)} (/away alone: back)"
    where = "not in a room"
    if room is not None:
        role = " (you host it)" if room.host.fingerprint == node.fingerprint else ""
        where = f"in room {room.name}{role}"
    yield f"  {where}; up {render.duration(node.uptime())}; data in {node.data_dir}"


def peer_info(details: PeerDetailsAPI, view: render.View, room: RoomAPI | None) -> Iterator[str]:
    """What ``/info NAME`` says about a peer (``room``: the current one, if any)."""
    peer = details.peer
    yield (f"{render.shown_name(peer, view)} (fp {peer.fingerprint}),"
           f" colour {peer.color or 'default'}")
    if peer.away is not None:
        yield f"  away: {render.clean(peer.away)}"
    addresses = ", ".join(details.addresses) or "unknown"
    yield (f"  addresses: {addresses}; ports: router {details.router_port or '-'},"
           f" pub {details.pub_port or '-'}, card {details.card_port or '-'}")
    times = []
    if details.first_seen:
        times.append(f"first seen {render.timestamp(details.first_seen)}")
    if details.started_at:
        times.append(f"running since {render.timestamp(details.started_at)}")
    if room is not None:
        joined = _joined_at(room, peer)
        if joined is not None:
            times.append(f"in {room.name} since {render.timestamp(joined)}")
    if times:
        yield "  " + ", ".join(times)
    former = ", ".join(render.clean(n) for n in details.former_names)
    yield f"  former names: {former}" if former else "  no former names"


def _joined_at(room: RoomAPI, peer: PeerInfo) -> float | None:
    details = room.info()
    for member, at in zip(details.members, details.joined_at, strict=False):
        if member.fingerprint == peer.fingerprint:
            return at
    return None


def room_info(room: RoomAPI, view: render.View) -> Iterator[str]:
    """What ``/info`` says about the current room."""
    info = room.info()
    yield (f"room {info.name}: host {render.shown_name(info.host, view)}, term {info.term},"
           f" version {info.version}, created {render.timestamp(info.created_at)}")
    labels = ", ".join(member_label(room, p, view) for p in info.members)
    count = len(info.members)
    yield f"  {count} member{'' if count == 1 else 's'}: {labels}"
    yield (f"  locked: {'yes' if info.locked else 'no'},"
           f" password: {'yes' if info.has_password else 'no'}")


def uptime(node: NodeAPI, room: RoomAPI | None, view: render.View, now: float) -> str:
    """What ``/uptime`` says: this node, the current room and its host."""
    parts = [f"up {render.duration(node.uptime())} (since {render.timestamp(node.started_at)})"]
    if room is not None:
        info = room.info()
        parts.append(f"{info.name} open for {render.duration(now - info.created_at)}")
        host = info.host
        if host.fingerprint != node.fingerprint:
            try:
                started = node.peer_details(host.fingerprint).started_at
            except MeshchatError:
                started = None
            if started:
                parts.append(f"host {render.shown_name(host, view)} up"
                             f" {render.duration(now - started)}")
    return "; ".join(parts)


def chat_file_name(room_name: str, now: float) -> str:
    """Where ``/save chat`` writes without a FILE: ``meshchat-ROOM-YYYYmmdd-HHMMSS.txt``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    safe = re.sub(r"[^\w.-]", "_", room_name)
    return f"meshchat-{safe}-{stamp}.txt"


def chat_text(room_name: str, history: Sequence[Message], view: render.View, now: float) -> str:
    """The file ``/save chat`` writes: a header line, then one line per message."""
    lines = [f"# meshchat: room {room_name}, saved {render.timestamp(now)}"]
    lines += [render.plain(render.message(m, view, full_date=True)) for m in history]
    return "\n".join(lines) + "\n"
