"""The rooms a terminal session is in at once, and which of them is the current one.

Line mode is in one room at a time (joining another leaves the previous one: scripts depend
on that). The terminal interface keeps every room it joined, as irssi and weechat keep their
channels: the current room is the one typed lines go to and the status bar describes; the
others' lines are shown with their room's name in front and counted as unread in the bar.

- ``/join ROOM`` of a room already joined makes it current (nothing is sent);
- Alt+← and Alt+→ go to the previous and next joined room;
- ``/leave`` and ``/close`` end the current room, and so do a kick, a ban or the room's close
  by its host: the room used most recently before it becomes current (``Rooms.fallback``).

``Rooms`` remembers the order in which rooms were current; it keeps only rooms the node still
has joined (each pruned when one ends), so only the user's own joins can grow it.
"""

from __future__ import annotations

import contextlib

from meshchat import MeshchatError
from meshchat.tui import render
from meshchat.tui.api import NodeAPI, RoomAPI
from meshchat.tui.queries import Refused

NO_OTHER = "you are in no other room (/join ROOM joins one and keeps this one)"
NO_ROOM = "you are in no room (/join ROOM or /host ROOM)"


def now_in(room: RoomAPI, view: render.View) -> str:
    """The line for a switch to ``room``."""
    count = len(room.members)
    return (f"you are in {room.name} now (host {render.shown_name(room.host, view)};"
            f" {count} member{'' if count == 1 else 's'})")


def _name(room: RoomAPI) -> str | None:
    try:
        return room.name
    except MeshchatError:
        return None


def joined(node: NodeAPI) -> list[RoomAPI]:
    """The rooms the node is in now (a room that is going away is left out)."""
    return [r for r in node.joined_rooms() if _name(r) is not None]


def find_joined(node: NodeAPI, ref: str) -> RoomAPI | None:
    """The joined room ``ref`` (``lobby`` or ``lobby#fp``) names, or None.

    Raises ``Refused`` when a plain name fits two joined rooms (two hosts' rooms of one name).
    """
    name, prefix = render.split_room_ref(ref)
    rooms = joined(node)
    exact = [r for r in rooms if _name(r) == ref]
    if not exact and prefix is not None:
        with contextlib.suppress(MeshchatError):
            exact = [r for r in rooms if _name(r) == name
                     and r.host.fingerprint.lower().startswith(prefix)]
    if len(exact) > 1:
        raise Refused(f"you are in two rooms called {ref}: /join {ref}#FP picks one")
    return exact[0] if exact else None


class Rooms:
    """The order in which joined rooms were current (most recent last)."""

    def __init__(self) -> None:
        self._used: list[RoomAPI] = []

    def entered(self, node: NodeAPI, room: RoomAPI) -> None:
        rooms = joined(node)
        self._used = [r for r in self._used if r is not room and any(r is j for j in rooms)]
        self._used.append(room)

    def fallback(self, node: NodeAPI, gone: RoomAPI | None = None) -> RoomAPI | None:
        """The room to be in after the current one ended: the most recent one still joined."""
        rooms = [r for r in joined(node) if r is not gone]
        self._used = [r for r in self._used if any(r is j for j in rooms)]
        if self._used:
            return self._used[-1]
        return rooms[0] if rooms else None

    @staticmethod
    def step(node: NodeAPI, current: RoomAPI | None, by: int) -> RoomAPI | None:
        """The joined room ``by`` places after ``current`` (wrapping), or None if there is no
        other one to go to."""
        rooms = joined(node)
        if not rooms or (len(rooms) == 1 and rooms[0] is current):
            return None
        at = next((i for i, r in enumerate(rooms) if r is current), -1 if by > 0 else 0)
        return rooms[(at + by) % len(rooms)]
