"""The one table of slash commands: each command's row, its frozen dataclass, and its help."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "BY_KEY",
    "COMMANDS",
    "GROUPS",
    "Away",
    "Ban",
    "Banned",
    "Bell",
    "Broadcast",
    "Clear",
    "Close",
    "Command",
    "CommandSpec",
    "Help",
    "Host",
    "Info",
    "Join",
    "Kick",
    "Leave",
    "List",
    "Lock",
    "Me",
    "Msg",
    "MyColor",
    "NewHost",
    "NewPassword",
    "NewRoomName",
    "Ping",
    "Quit",
    "Rename",
    "Rooms",
    "SaveChat",
    "Say",
    "SendFile",
    "TestServer",
    "Unban",
    "Unlock",
    "Uptime",
    "UserCount",
    "Users",
    "Version",
    "Whoami",
    "help_for",
    "help_table_markdown",
    "help_text",
    "is_command_word",
    "spec_for",
]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One row of the command table. ``name`` is the canonical spelling without the slash."""

    name: str
    usage: str
    summary: str
    host_only: bool = False
    aliases: tuple[str, ...] = ()
    action: str = ""
    """What 'only the host can …' says for a host-only command."""


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("help", "/help [COMMAND]", "list the commands, or explain one"),
    CommandSpec("msg", "/msg NAME[,NAME...] TEXT",
                "private message to one or more peers (names or fingerprint prefixes)"),
    CommandSpec("join", "/join ROOM[#FP] [PASSWORD]",
                "join a room on the network; ROOM#FP picks the host when two announce ROOM"),
    CommandSpec("leave", "/leave", "leave the room you are in"),
    CommandSpec("list", "/list", "in a room: its members; outside a room: the rooms"),
    CommandSpec("rooms", "/rooms", "list the rooms on the network"),
    CommandSpec("host", "/host ROOM [PASSWORD]", "open a room and host it"),
    CommandSpec("new host", "/new host NAME", "hand hosting over to another member (also IP:PORT)",
                host_only=True, action="hand the room over"),
    CommandSpec("new servername", "/new servername NAME", "rename the room", host_only=True,
                aliases=("new roomname",), action="rename the room"),
    CommandSpec("new password", "/new password [PASSWORD]",
                "set the room's password; without one, remove it", host_only=True,
                aliases=("new passwort",), action="change the password"),
    CommandSpec("myColor", "/myColor [COLOR]",
                "show or set the colour of your name (name or #RRGGBB)", aliases=("mycolour",)),
    CommandSpec("rename", "/rename NAME", "change your name (once every 7 days)"),
    CommandSpec("info", "/info [NAME|ROOM]",
                "a peer's fingerprint, addresses, ports and former names; without NAME: the room"),
    CommandSpec("test server", "/test server",
                "host a local test room 'test' that is not announced"),
    CommandSpec("send file", "/send file NAME|ROOM PATH",
                "offer a file or folder to a peer, or to every member of a room"),
    CommandSpec("save chat", "/save chat [FILE]", "save the room's chat history to a text file"),
    CommandSpec("ping", "/ping [NAME|ROOM]", "round-trip time to a peer, or to a room's host"),
    CommandSpec("version", "/version", "show the program version"),
    CommandSpec("uptime", "/uptime", "how long this node, the room and its host have been up"),
    CommandSpec("broadcast", "/broadcast TEXT", "send a line to everyone on the network"),
    CommandSpec("kick", "/kick NAME [REASON]", "remove a member from the room", host_only=True,
                action="kick"),
    CommandSpec("ban", "/ban NAME [REASON]", "remove a member and keep them out under any name",
                host_only=True, action="ban"),
    CommandSpec("unban", "/unban NAME|FINGERPRINT", "lift a ban", host_only=True, action="unban"),
    CommandSpec("banned", "/banned", "list the room's bans", host_only=True,
                aliases=("banned-users",), action="list the bans"),
    CommandSpec("users", "/users", "list the room's members with fingerprints and addresses",
                host_only=True, action="list the users"),
    CommandSpec("user-count", "/user-count", "count the room's members", host_only=True,
                action="count the users"),
    CommandSpec("lock", "/lock", "lock the room: nobody new can join", host_only=True,
                action="lock the room"),
    CommandSpec("unlock", "/unlock", "unlock the room", host_only=True, action="unlock the room"),
    CommandSpec("close", "/close [ROOM]", "close the room for everyone", host_only=True,
                aliases=("delete-channel",), action="close the room"),
    CommandSpec("whoami", "/whoami", "your name, fingerprint, colour and address"),
    CommandSpec("quit", "/quit", "leave the room and quit", aliases=("exit",)),
    CommandSpec("accept", "/accept [ID] [DIR]",
                "accept a file offer (the latest without ID) into DIR (default downloads/)"),
    CommandSpec("decline", "/decline [ID]", "decline a file offer (the latest without ID)"),
    CommandSpec("files", "/files", "list file transfers: id, peer, name, size, state, %"),
    CommandSpec("cancel", "/cancel ID", "stop a file transfer, either way"),
    CommandSpec("bell", "/bell [on|off]",
                "ring the terminal bell on a mention of your name or a private message, or not"),
    CommandSpec("clear", "/clear", "clear the screen (the terminal interface)"),
    CommandSpec("me", "/me TEXT", "an action line in the room: /me waves shows * alice waves"),
    CommandSpec("away", "/away [TEXT]",
                "show others you are away (in /list and /info; a private message to you gets"
                " TEXT back); without TEXT: back"),
)

_by_key: dict[str, CommandSpec] = {}
for _spec in COMMANDS:
    for _key in (_spec.name, *_spec.aliases):
        _by_key[_key.lower()] = _spec
_groups: dict[str, tuple[CommandSpec, ...]] = {}
for _spec in COMMANDS:
    if " " in _spec.name:
        _first = _spec.name.split(" ", 1)[0]
        _groups[_first] = (*_groups.get(_first, ()), _spec)
BY_KEY: Mapping[str, CommandSpec] = _by_key
"""Every spelling (canonical name or alias, lowercase, sub-command words joined by a space)."""
GROUPS: Mapping[str, tuple[CommandSpec, ...]] = _groups
"""The first words that take a sub-command (``new``, ``test``...) and their rows."""


def spec_for(name: str) -> CommandSpec:
    """The table row of a command by canonical name or alias (case-insensitive)."""
    return BY_KEY[name.lower()]


def is_command_word(word: str) -> bool:
    """Whether ``word`` is a command name, an alias or the first word of a sub-command."""
    return word.lower() in BY_KEY or word.lower() in GROUPS


# --- the commands ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    """A chat line for the current room."""

    text: str
    command: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class Help:
    topic: str | None = None
    command: ClassVar[str] = "help"


@dataclass(frozen=True, slots=True)
class Msg:
    to: tuple[str, ...]
    text: str
    command: ClassVar[str] = "msg"


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    password: str | None = None
    command: ClassVar[str] = "join"


@dataclass(frozen=True, slots=True)
class Leave:
    command: ClassVar[str] = "leave"


@dataclass(frozen=True, slots=True)
class List:
    command: ClassVar[str] = "list"


@dataclass(frozen=True, slots=True)
class Rooms:
    command: ClassVar[str] = "rooms"


@dataclass(frozen=True, slots=True)
class Host:
    room: str
    password: str | None = None
    command: ClassVar[str] = "host"


@dataclass(frozen=True, slots=True)
class NewHost:
    """``who`` is a name, a fingerprint prefix, or ``IP:PORT`` of a member."""

    who: str
    command: ClassVar[str] = "new host"


@dataclass(frozen=True, slots=True)
class NewRoomName:
    name: str
    command: ClassVar[str] = "new servername"


@dataclass(frozen=True, slots=True)
class NewPassword:
    password: str | None
    command: ClassVar[str] = "new password"


@dataclass(frozen=True, slots=True)
class MyColor:
    """``color`` is normalised (see ``normalize_color``); None asks for the current one."""

    color: str | None = None
    command: ClassVar[str] = "myColor"


@dataclass(frozen=True, slots=True)
class Rename:
    name: str
    command: ClassVar[str] = "rename"


@dataclass(frozen=True, slots=True)
class Info:
    target: str | None = None
    command: ClassVar[str] = "info"


@dataclass(frozen=True, slots=True)
class TestServer:
    command: ClassVar[str] = "test server"


@dataclass(frozen=True, slots=True)
class SendFile:
    to: str
    path: str
    command: ClassVar[str] = "send file"


@dataclass(frozen=True, slots=True)
class Accept:
    transfer_id: str | None = None
    into: str | None = None
    command: ClassVar[str] = "accept"


@dataclass(frozen=True, slots=True)
class Decline:
    transfer_id: str | None = None
    command: ClassVar[str] = "decline"


@dataclass(frozen=True, slots=True)
class Files:
    command: ClassVar[str] = "files"


@dataclass(frozen=True, slots=True)
class Cancel:
    transfer_id: str
    command: ClassVar[str] = "cancel"


@dataclass(frozen=True, slots=True)
class SaveChat:
    path: str | None = None
    command: ClassVar[str] = "save chat"


@dataclass(frozen=True, slots=True)
class Ping:
    target: str | None = None
    command: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class Version:
    command: ClassVar[str] = "version"


@dataclass(frozen=True, slots=True)
class Uptime:
    command: ClassVar[str] = "uptime"


@dataclass(frozen=True, slots=True)
class Me:
    """An action line in the current room (``/me waves`` → ``* alice waves``)."""

    text: str
    command: ClassVar[str] = "me"


@dataclass(frozen=True, slots=True)
class Broadcast:
    text: str
    command: ClassVar[str] = "broadcast"


@dataclass(frozen=True, slots=True)
class Kick:
    who: str
    reason: str | None = None
    command: ClassVar[str] = "kick"


@dataclass(frozen=True, slots=True)
class Ban:
    who: str
    reason: str | None = None
    command: ClassVar[str] = "ban"


@dataclass(frozen=True, slots=True)
class Unban:
    who: str
    command: ClassVar[str] = "unban"


@dataclass(frozen=True, slots=True)
class Banned:
    command: ClassVar[str] = "banned"


@dataclass(frozen=True, slots=True)
class Users:
    command: ClassVar[str] = "users"


@dataclass(frozen=True, slots=True)
class UserCount:
    command: ClassVar[str] = "user-count"


@dataclass(frozen=True, slots=True)
class Lock:
    command: ClassVar[str] = "lock"


@dataclass(frozen=True, slots=True)
class Unlock:
    command: ClassVar[str] = "unlock"


@dataclass(frozen=True, slots=True)
class Close:
    """``room``: the ``/delete-channel ROOM`` form names the room; it must be the current one."""

    room: str | None = None
    command: ClassVar[str] = "close"


@dataclass(frozen=True, slots=True)
class Whoami:
    command: ClassVar[str] = "whoami"


@dataclass(frozen=True, slots=True)
class Quit:
    command: ClassVar[str] = "quit"


@dataclass(frozen=True, slots=True)
class Bell:
    """``on`` None asks whether the bell rings."""

    on: bool | None = None
    command: ClassVar[str] = "bell"


@dataclass(frozen=True, slots=True)
class Clear:
    command: ClassVar[str] = "clear"


@dataclass(frozen=True, slots=True)
class Away:
    """``text`` None: back."""

    text: str | None = None
    command: ClassVar[str] = "away"


Command = (
    Say | Help | Msg | Join | Leave | List | Rooms | Host | NewHost | NewRoomName | NewPassword
    | MyColor | Rename | Info | TestServer | SendFile | SaveChat | Ping | Version | Uptime
    | Broadcast | Kick | Ban | Unban | Banned | Users | UserCount | Lock | Unlock | Close | Whoami
    | Quit | Accept | Decline | Files | Cancel | Bell | Clear | Me | Away
)


# --- help ----------------------------------------------------------------------------------


def help_text() -> list[str]:
    """The command table as aligned plain-text lines (what ``/help`` prints)."""
    width = max(len(s.usage) for s in COMMANDS) + 2
    lines = [
        f"{s.usage.ljust(width)}{'(host) ' if s.host_only else ''}{s.summary}" for s in COMMANDS
    ]
    lines.append(
        "aliases: " + ", ".join(f"/{a} = /{s.name}" for s in COMMANDS for a in s.aliases)
        + ", //COMMAND = /COMMAND"
    )
    lines.append("a line without / is said in the room; //text says /text")
    return lines


def help_for(key: str) -> list[str]:
    """The help lines of one command (``key``: name or alias, no slash)."""
    lowered = key.lower()
    if lowered in GROUPS:
        return [f"{s.usage}  {s.summary}" for s in GROUPS[lowered]]
    spec = BY_KEY[lowered]
    lines = [f"{spec.usage}  {'(host only) ' if spec.host_only else ''}{spec.summary}"]
    if spec.aliases:
        lines.append("also: " + ", ".join(f"/{a}" for a in spec.aliases))
    return lines


def help_table_markdown() -> str:
    """The command table in Markdown, for the README."""
    rows = ["| command | what it does | host only |", "|---|---|---|"]
    for spec in COMMANDS:
        usage = spec.usage.replace("|", "\\|")
        also = f" (also {', '.join(f'`/{a}`' for a in spec.aliases)})" if spec.aliases else ""
        rows.append(
            f"| `{usage}` | {spec.summary}{also} | {'yes' if spec.host_only else ''} |"
        )
    return "\n".join(rows) + "\n"
