"""Events and results as output lines: styled fragments, or plain text for line mode.

A line is a list of ``(style, text)`` fragments — the shape prompt_toolkit's ``FormattedText``
takes — so the terminal interface can colour names while line mode prints ``plain(line)``.

Formats (times are local ``HH:MM:SS`` of the sender's clock)::

    12:00:01 <alice> hello                          a room message (the current room)
    12:00:01 [dev] <alice> hello                    a room message of another joined room
    12:00:01 [private] <alice → you> psst           a private message to me
    12:00:01 [private] <alice → you,carol> psst     a private message to several
    12:00:01 [private] <alice → bob,carol> psst     one I (alice) sent
    * bob joined lobby                              system lines start with "* "
    * bob left lobby (quit)                         reasons: left, quit, vanished, ...
    * bob is now the host of lobby (was alice)
    * bob was kicked from lobby by alice: spam      (banned: "was banned from")
    * [broadcast] alice: text

A name is shown as ``name``, or as ``name#fp4`` (first 4 fingerprint characters) while two
known peers share it. Control characters from the network never reach the terminal: newlines
become " ↵ ", other control characters U+FFFD.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshchat import (
    BroadcastReceived,
    Event,
    HostChanged,
    MemberRemoved,
    Message,
    Notice,
    PeerDiscovered,
    PeerGone,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    Renamed,
    RoomClosed,
    RoomInfo,
    RoomRenamed,
)

Fragment = tuple[str, str]
Line = list[Fragment]

_ANSI_STYLES = {
    "red": "ansired", "green": "ansigreen", "yellow": "ansiyellow", "blue": "ansiblue",
    "magenta": "ansimagenta", "cyan": "ansicyan", "white": "ansiwhite", "gray": "ansigray",
    "bright-red": "ansibrightred", "bright-green": "ansibrightgreen",
    "bright-yellow": "ansibrightyellow", "bright-blue": "ansibrightblue",
    "bright-magenta": "ansibrightmagenta", "bright-cyan": "ansibrightcyan",
    "orange": "#ff8700", "purple": "#af5fff", "pink": "#ff87d7", "brown": "#af5f00",
}
_DEFAULT_PALETTE = (
    "ansired", "ansigreen", "ansiyellow", "ansiblue", "ansimagenta", "ansicyan",
    "ansibrightred", "ansibrightgreen", "ansibrightblue", "ansibrightmagenta", "#ff8700",
)

STYLE_RULES = {
    "time": "ansibrightblack",
    "system": "ansibrightblack",
    "error": "ansired",
    "private": "ansimagenta bold",
    "room": "ansicyan",
    "broadcast": "ansiyellow bold",
}
"""Class styles for prompt_toolkit's ``Style.from_dict``."""


@dataclass(frozen=True, slots=True)
class View:
    """What rendering needs to know about the local node."""

    me_fingerprint: str
    current_room: str | None
    names_clash: Callable[[str], bool]


def plain(line: Line) -> str:
    return "".join(text for _, text in line)


def clean(text: str) -> str:
    """``text`` with no control characters (newlines shown as ' ↵ ')."""
    text = text.replace("\r\n", "\n")
    return "".join(
        " ↵ " if c == "\n" else c if c == "\t" or c.isprintable() or c == " " else "\ufffd"
        for c in text
    )


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def name_style(peer: PeerInfo) -> str:
    """A prompt_toolkit style for a peer's name: its chosen colour, or one from its key."""
    chosen = _ANSI_STYLES.get(peer.color) or (peer.color if peer.color.startswith("#") else "")
    if not chosen:
        digest = hashlib.blake2b(peer.fingerprint.encode(), digest_size=2).digest()
        chosen = _DEFAULT_PALETTE[int.from_bytes(digest, "big") % len(_DEFAULT_PALETTE)]
    return f"class:name bold fg:{chosen}" if chosen.startswith("#") else f"class:name bold {chosen}"


def shown_name(peer: PeerInfo, view: View) -> str:
    name = clean(peer.name)
    return f"{name}#{peer.fingerprint[:4]}" if view.names_clash(peer.name) else name


def _who(peer: PeerInfo, view: View, *, you: bool = False) -> Fragment:
    if you and peer.fingerprint == view.me_fingerprint:
        return ("class:name bold", "you")
    return (name_style(peer), shown_name(peer, view))


def system(text: str, style: str = "class:system") -> Line:
    return [(style, f"* {text}")]


def error(text: str) -> Line:
    return [("class:error", f"* error: {text}")]


def message(msg: Message, view: View, *, full_date: bool = False) -> Line:
    """A chat line: room message or private message (see the module docstring)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(msg.sent_at)) if full_date \
        else clock(msg.sent_at)
    line: Line = [("class:time", f"{stamp} ")]
    if msg.private or msg.room is None:
        line += [("class:private", "[private] "), ("", "<"), _who(msg.sender, view),
                 ("", " → ")]
        recipients = msg.recipients or ()
        if not recipients:
            line.append(("class:name bold", "you"))
        for i, peer in enumerate(recipients):
            if i:
                line.append(("", ","))
            line.append(_who(peer, view, you=True))
        line.append(("", "> "))
    else:
        if msg.room != view.current_room:
            line.append(("class:room", f"[{clean(msg.room)}] "))
        line += [("", "<"), _who(msg.sender, view), ("", "> ")]
    line.append(("", clean(msg.text)))
    return line


def own_private(me: PeerInfo, to: Sequence[PeerInfo | str], text: str, sent_at: float,
                view: View) -> Line:
    """The echo of a private message I sent."""
    line: Line = [("class:time", f"{clock(sent_at)} "), ("class:private", "[private] "),
                  ("", "<"), _who(me, view), ("", " → ")]
    for i, peer in enumerate(to):
        if i:
            line.append(("", ","))
        line.append(_who(peer, view) if isinstance(peer, PeerInfo) else ("", clean(peer)))
    line += [("", "> "), ("", clean(text))]
    return line


def broadcast(sender: PeerInfo, text: str, view: View) -> Line:
    return [("class:broadcast", "* [broadcast] "), _who(sender, view), ("", f": {clean(text)}")]


def room_summary(info: RoomInfo) -> str:
    """``lobby (alice, 3 members, locked, password)``."""
    parts = [clean(info.host), f"{info.members} member{'' if info.members == 1 else 's'}"]
    if info.locked:
        parts.append("locked")
    if info.has_password:
        parts.append("password")
    return f"{clean(info.name)} ({', '.join(parts)})"


def rooms_line(infos: Sequence[RoomInfo]) -> str:
    if not infos:
        return "no rooms on the network yet (/host NAME opens one)"
    return "rooms: " + ", ".join(room_summary(i) for i in sorted(infos, key=lambda i: i.name))


def event(ev: Event, view: View) -> Line | None:
    """The line for an event, or None for events that show nothing."""
    me = view.me_fingerprint
    match ev:
        case Message():
            return message(ev, view)
        case PeerJoined(room=room, peer=peer):
            return [("class:system", "* "), _who(peer, view),
                    ("class:system", f" joined {clean(room)}")]
        case PeerLeft(room=room, peer=peer, reason=reason):
            if reason in ("kicked", "banned", "closed"):
                return None  # MemberRemoved / RoomClosed say it better
            how = "" if reason == "left" else f" ({clean(reason)})"
            return [("class:system", "* "), _who(peer, view),
                    ("class:system", f" left {clean(room)}{how}")]
        case HostChanged(room=room, old=old, new=new):
            line: Line = [("class:system", "* ")]
            if new.fingerprint == me:
                line.append(("class:system", f"you are now the host of {clean(room)}"))
            else:
                line += [_who(new, view), ("class:system", f" is now the host of {clean(room)}")]
            if old is not None:
                line += [("class:system", " (was "), _who(old, view, you=True),
                         ("class:system", ")")]
            return line
        case MemberRemoved(room=room, peer=peer, by=by, reason=reason, banned=banned):
            verb = "banned from" if banned else "kicked from"
            because = f": {clean(reason)}" if reason else ""
            if peer.fingerprint == me:
                head: Line = [("class:error", f"* you were {verb} {clean(room)} by "),
                              _who(by, view)]
                return [*head, ("class:error", because)]
            return [("class:system", "* "), _who(peer, view),
                    ("class:system", f" was {verb} {clean(room)} by "), _who(by, view, you=True),
                    ("class:system", because)]
        case RoomClosed(room=room):
            return system(f"room {clean(room)} was closed")
        case RoomRenamed(old=old_name, new=new_name):
            return system(f"room {clean(old_name)} is now called {clean(new_name)}")
        case Renamed(peer=peer, old=old_name, new=new_name):
            return system(f"{clean(old_name)} is now known as {clean(new_name)}"
                          f" ({peer.fingerprint[:8]})")
        case PeerDiscovered(peer=peer):
            return [("class:system", "* "), _who(peer, view),
                    ("class:system", " is on the network")]
        case PeerGone(peer=peer, reason=reason):
            how = {"quit": "left the network", "vanished": "vanished from the network"}.get(
                reason, f"left the network ({reason})")
            return [("class:system", "* "), _who(peer, view), ("class:system", f" {clean(how)}")]
        case BroadcastReceived(sender=sender, text=text):
            return broadcast(sender, text, view)
        case Notice(text=text, level=level):
            if level in ("warning", "error"):
                return [("class:error", f"* {level}: {clean(text)}")]
            return system(clean(text))
    return None


def duration(seconds: float) -> str:
    """``1d 02h 03m 04s``, ``3m 04s``, ``45s``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m {secs:02d}s"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def timestamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
