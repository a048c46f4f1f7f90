"""What a peer or room typed at the prompt refers to, and the names Tab completion offers."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence

from meshchat import MeshchatError, PeerInfo, RoomInfo
from meshchat.tui import render
from meshchat.tui.api import NodeAPI, RoomAPI

_ADDRESS = re.compile(r"\[?([0-9A-Fa-f:.]+)\]?:(\d+)")


def known_peers(node: NodeAPI, room: RoomAPI | None) -> list[PeerInfo]:
    """This node, the peers it knows, and the members of ``room``."""
    peers = [node.me, *node.peers()]
    if room is not None:
        with contextlib.suppress(MeshchatError):
            peers.extend(room.members)
    return peers


def names_clash(node: NodeAPI, room: RoomAPI | None, name: str) -> bool:
    """Whether two known peers (this node included) go by ``name``."""
    folded = name.casefold()
    prints = {p.fingerprint for p in known_peers(node, room) if p.name.casefold() == folded}
    return len(prints) > 1


def peer_and_room_names(
    node: NodeAPI, room: RoomAPI | None, view: render.View, room_names: Iterable[str]
) -> list[str]:
    """Peer, member and room names (``name#fp4`` where names clash), sorted."""
    names = {render.shown_name(p, view) for p in known_peers(node, room)
             if p.fingerprint != node.fingerprint}
    names.update(room_names)
    for joined in node.joined_rooms():
        with contextlib.suppress(MeshchatError):
            names.add(joined.name)
    # never put a peer's control characters into the input line
    return sorted((n for n in names if render.clean(n) == n), key=str.casefold)


def wants_room(before: str) -> bool:
    """Whether the cursor is on the ROOM argument of ``/join`` in ``before``."""
    body = before.lstrip()
    if body.startswith("//"):
        body = body[1:]
    words = body.split()
    if not body.startswith("/") or not words or words[0][1:].lower() != "join":
        return False
    return len(words) == 1 or (len(words) == 2 and not body[-1].isspace())


def join_choices(listings: Sequence[RoomInfo], room_names: Iterable[str]) -> list[str]:
    """The rooms ``/join`` can take (``lobby#fp8`` where two rooms share a name), sorted."""
    clashes = render.clashing_room_names(listings)
    choices = {render.room_ref(i, i.name in clashes) for i in listings}
    choices.update(n for n in room_names if n not in clashes)
    return sorted((n for n in choices if render.clean(n) == n), key=str.casefold)


def peer_ref(node: NodeAPI, room: RoomAPI | None, who: str) -> str:
    """What the node resolves: ``name#fp4`` → the fingerprint prefix; a member's IP:PORT."""
    _, sep, prefix = who.rpartition("#")
    if sep and len(prefix) >= 4:  # also "#fp": how a peer with no valid name is shown
        return prefix
    match = _ADDRESS.fullmatch(who)
    if match and room is not None:
        host, port = match.groups()
        for peer in room.members:
            if who in peer.addresses or (host in peer.addresses and _has_port(node, peer, port)):
                return peer.fingerprint
    return who


def _has_port(node: NodeAPI, peer: PeerInfo, port: str) -> bool:
    try:
        details = node.peer_details(peer.fingerprint)
    except MeshchatError:
        return False
    return port in {str(details.router_port), str(details.pub_port), str(details.card_port)}


def peer_or_name(node: NodeAPI, who: str) -> PeerInfo | str:
    """The peer ``who`` names, or ``who`` itself if the node knows none."""
    try:
        return node.resolve(who)
    except MeshchatError:
        return who


def is_peer(node: NodeAPI, ref: str) -> bool:
    try:
        node.resolve(ref)
    except MeshchatError:
        return False
    return True


def is_current(ref: str, room: RoomAPI | None, current: str | None) -> bool:
    """Whether ``ref`` (``lobby`` or ``lobby#fp``) is ``room``, named ``current``."""
    if current is None or room is None:
        return False
    name, prefix = render.split_room_ref(ref)
    if ref == current:
        return True
    return prefix is not None and name == current \
        and room.host.fingerprint.lower().startswith(prefix)
