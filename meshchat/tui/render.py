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
    * bob is away: lunch                            /away; also bob's automatic reply to a
    * bob is back                                   private message while away

A name is shown as ``name``, or as ``name#fp4`` (first 4 fingerprint characters) while two
known peers share it, or always when it is not a name this program would accept (empty, too
long, with spaces, commas or ``#``), so a peer cannot pose as ``alice#74gq``. Rooms that share
a name are listed with their host's fingerprint: ``lobby (host alice#3smwxyz1, 2 members)``.

Rendering is total: any value a peer can put in an event renders as *something*. Control
characters (ANSI escapes, C1 codes, bidi overrides, lone surrogates) never reach the terminal:
newlines become " ↵ " (the terminal interface shows the lines of a multi-line message as
lines, the next ones indented under the first), the others U+FFFD. A time outside the
platform's range shows as ``??:??:??``; a colour that is not ``#RRGGBB`` or a known name falls
back to one from the key.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshchat import (
    AwayChanged,
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
from meshchat.commands import MAX_NAME_CHARS, validate_name

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
    "mention": "bg:ansiyellow fg:ansiblack",
    "status": "bg:ansiblue fg:ansiwhite",
    "status.alert": "bg:ansiblue fg:ansibrightyellow bold",
}
"""Class styles for prompt_toolkit's ``Style.from_dict``."""


@dataclass(frozen=True, slots=True)
class View:
    """What rendering needs to know about the local node."""

    me_fingerprint: str
    current_room: str | None
    names_clash: Callable[[str], bool]


def plain(line: Line) -> str:
    """The text of ``line`` on one line (a multi-line message's newlines shown as ' ↵ ')."""
    return "".join(text for _, text in line).replace("\n", " ↵ ")


_ZERO_WIDTH_JOINER = "\u200d"  # format character, but harmless and part of many emoji
_HEX_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")
UNKNOWN_CLOCK = "??:??:??"
UNKNOWN_DATE = "????-??-??"


def clean(text: str) -> str:
    """``text`` with no control characters (newlines shown as ' ↵ ')."""
    if text.isprintable():  # the common case, at C speed
        return text
    text = text.replace("\r\n", "\n")
    return "".join(
        " ↵ " if c == "\n"
        else c if c == "\t" or c.isprintable() or c == _ZERO_WIDTH_JOINER
        else "\ufffd"
        for c in text
    )


def clean_lines(text: str) -> str:
    """``clean`` on each line of ``text``, the newlines kept (a multi-line message, shown as
    such by the terminal interface)."""
    return "\n".join(clean(part) for part in text.replace("\r\n", "\n").split("\n"))


TEXT_STYLE = "class:text"
"""The fragment of a chat line that is the message itself (it may hold several lines)."""


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` as a word (any case, ``@name`` too)."""
    if not name:
        return False
    pattern = r"(?<![\w])" + re.escape(name.casefold()) + r"(?![\w])"
    return re.search(pattern, text.casefold()) is not None


def highlight(line: Line) -> Line:
    """``line`` marked as one that mentions me."""
    return [(f"{style} class:mention".strip(), text) for style, text in line]


def short(text: str, limit: int = MAX_NAME_CHARS) -> str:
    """``clean(text)`` cut to ``limit`` characters (a name or room name from the network)."""
    cleaned = clean(text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _local(ts: float) -> time.struct_time | None:
    """Local time of a Unix time; None when the platform cannot represent it or its year is
    outside 1–9999 (time.strftime overflows on some years time.localtime allows)."""
    try:
        local = time.localtime(ts)
    except (OverflowError, OSError, ValueError, TypeError):
        return None
    return local if 1 <= local.tm_year <= 9999 else None


def clock(ts: float) -> str:
    """``HH:MM:SS`` local time; ``??:??:??`` for a time the platform cannot show."""
    local = _local(ts)
    return UNKNOWN_CLOCK if local is None else \
        f"{local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d}"


def day(ts: float) -> str:
    """``YYYY-MM-DD`` local date; ``????-??-??`` for a time the platform cannot show."""
    local = _local(ts)  # by hand: strftime's %Y does not pad years before 1000
    return UNKNOWN_DATE if local is None else \
        f"{local.tm_year:04d}-{local.tm_mon:02d}-{local.tm_mday:02d}"


def timestamp(ts: float) -> str:
    """``YYYY-MM-DD HH:MM:SS`` local time, never raising (see ``clock``)."""
    return f"{day(ts)} {clock(ts)}"


def name_style(peer: PeerInfo) -> str:
    """A prompt_toolkit style for a peer's name: its chosen colour, or one from its key."""
    chosen = _ANSI_STYLES.get(peer.color) or (
        peer.color if _HEX_COLOR.fullmatch(peer.color) else "")
    if not chosen:
        key = peer.fingerprint.encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(key, digest_size=2).digest()
        chosen = _DEFAULT_PALETTE[int.from_bytes(digest, "big") % len(_DEFAULT_PALETTE)]
    return f"class:name bold fg:{chosen}" if chosen.startswith("#") else f"class:name bold {chosen}"


def shown_name(peer: PeerInfo, view: View) -> str:
    """``name``, or ``name#fp4`` while names clash or when the name is not a valid one."""
    name = short(peer.name)
    if validate_name(peer.name) is None and not view.names_clash(peer.name):
        return name
    return f"{name}#{clean(peer.fingerprint[:4])}"


def _who(peer: PeerInfo, view: View, *, you: bool = False) -> Fragment:
    if you and peer.fingerprint == view.me_fingerprint:
        return ("class:name bold", "you")
    return (name_style(peer), shown_name(peer, view))


def system(text: str, style: str = "class:system") -> Line:
    return [(style, f"* {clean(text)}")]


def error(text: str) -> Line:
    return [("class:error", f"* error: {clean(text)}")]


def message(msg: Message, view: View, *, full_date: bool = False, today: str | None = None
            ) -> Line:
    """A chat line: room message or private message (see the module docstring).

    ``full_date``: always show the date; ``today`` (``YYYY-MM-DD``): show it when the line is
    from another day (the backlog shown on joining).
    """
    stamp = clock(msg.sent_at)
    if full_date or (today is not None and day(msg.sent_at) != today):
        stamp = f"{day(msg.sent_at)} {stamp}"
    line: Line = [("class:time", f"{stamp} ")]
    if msg.auto:  # the automatic reply of an away peer to a private message
        return away_line(msg.sender, msg.text or "?", view)
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
            line.append(("class:room", f"[{short(msg.room)}] "))
        if msg.action:
            line += [("class:action", "* "), _who(msg.sender, view), ("", " ")]
        else:
            line += [("", "<"), _who(msg.sender, view), ("", "> ")]
    line.append((TEXT_STYLE, clean_lines(msg.text)))
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
    line += [("", "> "), (TEXT_STYLE, clean_lines(text))]
    return line


def away_line(peer: PeerInfo, away: str | None, view: View) -> Line:
    """``* bob is away: lunch`` (``away`` None: ``* bob is back``)."""
    if away is None:
        return [("class:system", "* "), _who(peer, view), ("class:system", " is back")]
    return [("class:system", "* "), _who(peer, view),
            ("class:system", f" is away: {clean(away)}")]


def broadcast(sender: PeerInfo, text: str, view: View) -> Line:
    return [("class:broadcast", "* [broadcast] "), _who(sender, view), ("", f": {clean(text)}")]


def backlog(count: int, total: int) -> Line:
    """The line above the messages a room had before we joined it."""
    what = f"{count} earlier message{'' if count == 1 else 's'}"
    if total > count:
        what += f" (the last of {total}; /save chat writes them all)"
    return system(f"── {what} ──")


def split_room_ref(ref: str) -> tuple[str, str | None]:
    """``lobby#3smw`` → ``("lobby", "3smw")`` (name, host fingerprint prefix); else (ref, None)."""
    name, sep, prefix = ref.rpartition("#")
    if sep and name and len(prefix) >= 4 and prefix.isalnum():
        return name, prefix.lower()
    return ref, None


def matching_rooms(infos: Sequence[RoomInfo], ref: str) -> list[RoomInfo]:
    """The listings ``ref`` (``name`` or ``name#fp``) names; several when a plain name clashes."""
    exact = [i for i in infos if i.name == ref]
    if exact:
        return exact
    name, prefix = split_room_ref(ref)
    if prefix is None:
        return []
    return [i for i in infos if i.name == name and i.host_fingerprint.lower().startswith(prefix)]


def clashing_room_names(infos: Sequence[RoomInfo]) -> set[str]:
    """Names that more than one listed room (by host) goes by."""
    hosts: dict[str, set[str]] = {}
    for info in infos:
        hosts.setdefault(info.name, set()).add(info.host_fingerprint or info.host)
    return {name for name, found in hosts.items() if len(found) > 1}


def room_ref(info: RoomInfo, clash: bool) -> str:
    """What ``/join`` takes for this listing: its name, or ``name#fp8`` when names clash."""
    if clash and info.host_fingerprint:
        return f"{info.name}#{info.host_fingerprint[:8]}"
    return info.name


def host_label(info: RoomInfo, clash: bool) -> str:
    """The host of a listing: ``alice``, or ``alice#3smwxyz1`` when room names clash."""
    host = short(info.host)
    if clash and info.host_fingerprint:
        host += "#" + clean(info.host_fingerprint[:8])
    return host


def room_summary(info: RoomInfo, clash: bool = False) -> str:
    """``lobby (alice, 3 members, locked, password)``; ``lobby (host alice#3smwxyz1, …)`` when
    another listed room is called ``lobby`` too."""
    members = f"{info.members} member{'' if info.members == 1 else 's'}"
    parts = [f"host {host_label(info, clash)}" if clash else host_label(info, clash), members]
    if info.locked:
        parts.append("locked")
    if info.has_password:
        parts.append("password")
    return f"{short(info.name)} ({', '.join(parts)})"


def sorted_rooms(infos: Sequence[RoomInfo]) -> list[RoomInfo]:
    """By room name, then host name, then host fingerprint."""
    return sorted(infos, key=lambda i: (i.name.casefold(), i.name, i.host.casefold(),
                                        i.host_fingerprint))


def rooms_line(infos: Sequence[RoomInfo]) -> str:
    if not infos:
        return "no rooms on the network yet (/host NAME opens one)"
    clashes = clashing_room_names(infos)
    line = "rooms: " + ", ".join(room_summary(i, i.name in clashes) for i in sorted_rooms(infos))
    if clashes:
        example = next(room_ref(i, True) for i in sorted_rooms(infos) if i.name in clashes)
        line += f"; names shared by several rooms: /join NAME#FP picks one (/join {clean(example)})"
    return line


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
            return system(f"{short(old_name)} is now known as {short(new_name)}"
                          f" ({clean(peer.fingerprint[:8])})")
        case PeerDiscovered(peer=peer):
            return [("class:system", "* "), _who(peer, view),
                    ("class:system", " is on the network")]
        case AwayChanged(peer=peer, away=away):
            return away_line(peer, away, view)
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


_LONGEST_DURATION_S = 1e12  # about 31,700 years: longer ones are not real uptimes


def duration(seconds: float) -> str:
    """``1d 02h 03m 04s``, ``3m 04s``, ``45s``; ``?`` for no real duration (inf, nan, huge)."""
    try:
        total = max(0, int(seconds))
    except (OverflowError, ValueError, TypeError):
        return "?"
    if total > _LONGEST_DURATION_S:
        return "?"
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
