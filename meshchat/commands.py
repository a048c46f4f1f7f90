"""Slash commands: the one table of every command, the parser, and Tab completion.

Pure (layer L1): no I/O, no clock. ``parse(line)`` turns an input line into one frozen
``Command`` dataclass; the interface (``meshchat.tui``) carries it out against the node.

Syntax rules
------------
- A line that does not start with ``/`` is a chat line: ``Say(text)``.
- ``/name args`` is a command. Command names are case-insensitive (``/mycolor`` = ``/myColor``).
- ``//name args`` is the same command when ``name`` is a known command (the second seed's
  ``//`` prefix); any other line starting with ``//`` is a chat line with one ``/`` removed,
  which is how to send a line that starts with a slash (``//shrug`` says ``/shrug``).
- Arguments are separated by spaces; a name with spaces can be written in double quotes.
  A trailing free-text argument (message, reason, password) is the rest of the line as typed.
- Aliases from the seed documents: ``/new Passwort`` = ``/new password``, ``/new roomname`` =
  ``/new servername``, ``/banned-users`` = ``/banned``, ``/delete-channel ROOM`` = ``/close ROOM``
  (only the room you are in and host), ``/mycolour`` = ``/myColor``, ``/exit`` = ``/quit``.
- ``/new host`` also takes ``IP:PORT`` (or ``IP PORT``) of a member, as the first seed asks.
- Bad arguments raise ``BadArguments`` (a ``CommandError`` whose text is ``usage: ...``);
  an unknown command raises ``UnknownCommand`` ("unknown command /foo — /help lists them").

Completion: ``complete(line_before_cursor, names)`` returns candidates that each replace
``fragment(line_before_cursor)`` (the text after the last space or comma): command names for
the first word, sub-commands after ``/new``, ``/test``, ``/send``, ``/save``, colours after
``/myColor``, command names after ``/help``, and peer/room ``names`` elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from meshchat.errors import CommandError

__all__ = [
    "COLOR_NAMES",
    "COMMANDS",
    "BadArguments",
    "Ban",
    "Banned",
    "Broadcast",
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
    "UnknownCommand",
    "Unlock",
    "Uptime",
    "UserCount",
    "Users",
    "Version",
    "Whoami",
    "complete",
    "fragment",
    "help_for",
    "help_table_markdown",
    "help_text",
    "normalize_color",
    "parse",
    "spec_for",
    "validate_name",
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
    CommandSpec("join", "/join ROOM [PASSWORD]", "join a room on the network"),
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
    CommandSpec("send file", "/send file NAME PATH", "send a file to a peer (not available yet)"),
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
)

_BY_KEY: dict[str, CommandSpec] = {}
for _spec in COMMANDS:
    for _key in (_spec.name, *_spec.aliases):
        _BY_KEY[_key.lower()] = _spec
_GROUPS: dict[str, tuple[CommandSpec, ...]] = {}
for _spec in COMMANDS:
    if " " in _spec.name:
        _first = _spec.name.split(" ", 1)[0]
        _GROUPS[_first] = (*_GROUPS.get(_first, ()), _spec)


def spec_for(name: str) -> CommandSpec:
    """The table row of a command by canonical name or alias (case-insensitive)."""
    return _BY_KEY[name.lower()]


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


Command = (
    Say | Help | Msg | Join | Leave | List | Rooms | Host | NewHost | NewRoomName | NewPassword
    | MyColor | Rename | Info | TestServer | SendFile | SaveChat | Ping | Version | Uptime
    | Broadcast | Kick | Ban | Unban | Banned | Users | UserCount | Lock | Unlock | Close | Whoami
    | Quit
)
_Parser = Callable[["_Args"], Command]


class BadArguments(CommandError):
    """A known command with arguments that do not fit; the text is ``usage: ...``."""

    def __init__(self, spec: CommandSpec, problem: str = "") -> None:
        self.spec = spec
        self.usage = spec.usage
        super().__init__((f"{problem} — " if problem else "") + f"usage: {spec.usage}")


class UnknownCommand(CommandError):
    """A ``/word`` that is no command."""

    def __init__(self, word: str) -> None:
        self.word = word
        super().__init__(f"unknown command /{word} — /help lists them")


# --- colours and names -------------------------------------------------------------------------

COLOR_NAMES: tuple[str, ...] = (
    "red", "green", "yellow", "blue", "magenta", "cyan", "white", "gray",
    "orange", "purple", "pink", "brown",
    "bright-red", "bright-green", "bright-yellow", "bright-blue", "bright-magenta", "bright-cyan",
)
_COLOR_ALIASES = {
    "grey": "gray", "violet": "purple",
    # the first seed is German
    "rot": "red", "grün": "green", "gruen": "green", "gelb": "yellow", "blau": "blue",
    "weiß": "white", "weiss": "white", "grau": "gray", "lila": "purple", "rosa": "pink",
    "braun": "brown", "türkis": "cyan", "tuerkis": "cyan",
}
_HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")

MAX_NAME_CHARS = 32


def normalize_color(text: str) -> str | None:
    """A colour name from ``COLOR_NAMES`` or ``#rrggbb`` (lowercase), or None if not a colour."""
    key = text.strip().lower().replace("_", "-")
    if key in COLOR_NAMES:
        return key
    if key in _COLOR_ALIASES:
        return _COLOR_ALIASES[key]
    if key.startswith("bright") and "-" not in key and f"bright-{key[6:]}" in COLOR_NAMES:
        return f"bright-{key[6:]}"
    match = _HEX_COLOR.fullmatch(key)
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return f"#{digits}"


def validate_name(name: str) -> str | None:
    """Why ``name`` cannot be a peer name, or None if it can.

    Names are 1–32 characters without spaces, commas or ``#`` (the UI shows ``name#fp4``
    when names clash, and ``/msg`` separates names with commas) and do not start with ``/``.
    """
    if not name:
        return "a name cannot be empty"
    if len(name) > MAX_NAME_CHARS:
        return f"a name has at most {MAX_NAME_CHARS} characters"
    if any(c.isspace() or c in ",#" for c in name) or not name.isprintable():
        return "a name cannot contain spaces, commas or #"
    if name.startswith("/"):
        return "a name cannot start with /"
    return None


# --- parsing -----------------------------------------------------------------------------------


def parse(line: str) -> Command:
    """The command on ``line``; raises ``CommandError`` (usage or unknown command)."""
    text = line.rstrip("\r\n")
    if not text.startswith("/"):
        return Say(text)
    body = text[1:]
    if body.startswith("/"):
        word, _ = _split_word(body[1:])
        if not word or not _is_command_word(word):
            return Say(body)
        body = body[1:]
    word, rest = _split_word(body)
    if not word or body[0].isspace():
        raise CommandError("a command follows the / — /help lists them")
    key = word.lower()
    if key in _GROUPS:
        sub, rest = _split_word(rest)
        spec = _BY_KEY.get(f"{key} {sub.lower()}")
        if spec is None:
            choices = " | ".join(s.usage for s in _GROUPS[key])
            raise CommandError(f"usage: {choices}")
    else:
        found = _BY_KEY.get(key)
        if found is None:
            raise UnknownCommand(word)
        spec = found
    return _PARSERS[spec.name](_Args(spec, rest.strip()))


def _is_command_word(word: str) -> bool:
    return word.lower() in _BY_KEY or word.lower() in _GROUPS


def _split_word(text: str) -> tuple[str, str]:
    """The first whitespace-separated word (no quote handling) and the rest."""
    text = text.lstrip()
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


class _Args:
    """The argument text of one command, consumed word by word."""

    def __init__(self, spec: CommandSpec, text: str) -> None:
        self.spec = spec
        self.rest = text

    def fail(self, problem: str = "") -> BadArguments:
        return BadArguments(self.spec, problem)

    def word(self) -> str:
        """The next word (a double-quoted one may contain spaces); raises if there is none."""
        text = self.rest.lstrip()
        if text.startswith('"'):
            end = text.find('"', 1)
            if end < 0:
                raise self.fail("missing closing quote")
            word, self.rest = text[1:end], text[end + 1:]
            if self.rest and not self.rest[0].isspace():
                raise self.fail("a space must follow a closing quote")
        else:
            word, self.rest = _split_word(text)
        if not word:
            raise self.fail()
        return word

    def optional_word(self) -> str | None:
        return self.word() if self.rest.strip() else None

    def text(self) -> str:
        """The rest of the line as typed; raises if empty."""
        rest = self.rest.strip()
        if not rest:
            raise self.fail()
        self.rest = ""
        return rest

    def optional_text(self) -> str | None:
        return self.text() if self.rest.strip() else None

    def done(self) -> None:
        if self.rest.strip():
            raise self.fail("too many arguments")


def _no_args(command: Command) -> _Parser:
    def parse_none(args: _Args) -> Command:
        args.done()
        return command

    return parse_none


def _help(args: _Args) -> Command:
    topic = args.optional_text()
    if topic is None:
        return Help()
    key = topic.lstrip("/").lower()
    key = " ".join(key.split())
    if key not in _BY_KEY and key not in _GROUPS:
        raise UnknownCommand(topic.lstrip("/"))
    return Help(key)


def _msg(args: _Args) -> Command:
    names: list[str] = []
    while True:
        word = args.word()
        for name in (part.strip() for part in word.split(",")):
            if name and name not in names:
                names.append(name)
        if not word.endswith(","):
            break
    if not names:
        raise args.fail("name whom")
    return Msg(tuple(names), args.text())


def _join(args: _Args) -> Command:
    return Join(args.word(), args.optional_text())


def _host(args: _Args) -> Command:
    return Host(args.word(), args.optional_text())


def _new_host(args: _Args) -> Command:
    who = args.word()
    port = args.optional_word()
    if port is not None:
        if not port.isdigit():
            raise args.fail("too many arguments")
        who = f"{who}:{port}"
    args.done()
    return NewHost(who)


def _new_room_name(args: _Args) -> Command:
    name = args.word()
    args.done()
    return NewRoomName(name)


def _new_password(args: _Args) -> Command:
    return NewPassword(args.optional_text())


def _my_color(args: _Args) -> Command:
    text = args.optional_word()
    args.done()
    if text is None:
        return MyColor()
    color = normalize_color(text)
    if color is None:
        raise args.fail(f"unknown colour {text!r} (one of {', '.join(COLOR_NAMES)}, or #RRGGBB)")
    return MyColor(color)


def _rename(args: _Args) -> Command:
    name = args.word()
    args.done()
    problem = validate_name(name)
    if problem:
        raise args.fail(problem)
    return Rename(name)


def _info(args: _Args) -> Command:
    target = args.optional_word()
    args.done()
    return Info(target)


def _send_file(args: _Args) -> Command:
    to = args.word()
    path = args.rest.strip()
    if not path:
        raise args.fail()
    if path.startswith('"'):
        path = args.word()
        args.done()
    return SendFile(to, path)


def _save_chat(args: _Args) -> Command:
    path = args.rest.strip()
    if not path:
        return SaveChat()
    if path.startswith('"'):
        path = args.word()
        args.done()
    return SaveChat(path)


def _ping(args: _Args) -> Command:
    target = args.optional_word()
    args.done()
    return Ping(target)


def _broadcast(args: _Args) -> Command:
    return Broadcast(args.text())


def _kick(args: _Args) -> Command:
    return Kick(args.word(), args.optional_text())


def _ban(args: _Args) -> Command:
    return Ban(args.word(), args.optional_text())


def _unban(args: _Args) -> Command:
    who = args.word()
    args.done()
    return Unban(who)


def _close(args: _Args) -> Command:
    room = args.optional_word()
    args.done()
    return Close(room)


_PARSERS: dict[str, _Parser] = {
    "help": _help,
    "msg": _msg,
    "join": _join,
    "leave": _no_args(Leave()),
    "list": _no_args(List()),
    "rooms": _no_args(Rooms()),
    "host": _host,
    "new host": _new_host,
    "new servername": _new_room_name,
    "new password": _new_password,
    "myColor": _my_color,
    "rename": _rename,
    "info": _info,
    "test server": _no_args(TestServer()),
    "send file": _send_file,
    "save chat": _save_chat,
    "ping": _ping,
    "version": _no_args(Version()),
    "uptime": _no_args(Uptime()),
    "broadcast": _broadcast,
    "kick": _kick,
    "ban": _ban,
    "unban": _unban,
    "banned": _no_args(Banned()),
    "users": _no_args(Users()),
    "user-count": _no_args(UserCount()),
    "lock": _no_args(Lock()),
    "unlock": _no_args(Unlock()),
    "close": _close,
    "whoami": _no_args(Whoami()),
    "quit": _no_args(Quit()),
}
assert set(_PARSERS) == {s.name for s in COMMANDS}


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
    if lowered in _GROUPS:
        return [f"{s.usage}  {s.summary}" for s in _GROUPS[lowered]]
    spec = _BY_KEY[lowered]
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


# --- completion --------------------------------------------------------------------------------

_SEPARATORS = re.compile(r"[\s,]")
_NO_COMPLETION = frozenset({
    "rename", "new servername", "new password", "save chat", "version", "uptime", "leave",
    "list", "rooms", "test server", "banned", "users", "user-count", "lock", "unlock",
    "whoami", "quit",
})


def fragment(line_before_cursor: str) -> str:
    """The part of the line that a completion replaces: after the last space or comma."""
    cut = max((m.end() for m in _SEPARATORS.finditer(line_before_cursor)), default=0)
    return line_before_cursor[cut:]


def _match(prefix: str, candidates: list[str] | tuple[str, ...]) -> list[str]:
    lowered = prefix.lower()
    seen: dict[str, None] = {}
    for candidate in candidates:
        if candidate.lower().startswith(lowered) and candidate != prefix:
            seen.setdefault(candidate, None)
    return sorted(seen, key=str.lower)


def complete(line_before_cursor: str, names: list[str]) -> list[str]:
    """Completions that replace ``fragment(line_before_cursor)``; see the module docstring."""
    line = line_before_cursor
    frag = fragment(line)
    if not line.startswith("/") or (line.startswith("//") and not _command_prefix_ok(line)):
        return _match(frag, names) if frag else []
    slash = "//" if line.startswith("//") else "/"
    body = line[len(slash):]
    if not _SEPARATORS.search(body):
        words = [s.name for s in COMMANDS] + [a for s in COMMANDS for a in s.aliases]
        return [slash + w for w in _match(body, words)]
    words = body.split()
    first = words[0].lower()
    at_second_word = len(words) == 1 or (len(words) == 2 and not body[-1].isspace())
    if first in _GROUPS and at_second_word and "," not in body:
        subs = [n.split(" ", 1)[1] for n in _BY_KEY if n.startswith(first + " ")]
        return _match(frag, subs)
    key = f"{first} {words[1].lower()}" if first in _GROUPS and len(words) > 1 else first
    spec = _BY_KEY.get(key)
    if spec is None or spec.name in _NO_COMPLETION:
        return []
    if spec.name == "myColor":
        return _match(frag, COLOR_NAMES)
    if spec.name == "help":
        return _match(frag, [s.name for s in COMMANDS])
    if spec.name == "send file" and len(words) - (0 if body[-1].isspace() else 1) >= 3:
        return []  # the PATH argument
    return _match(frag, names)


def _command_prefix_ok(line: str) -> bool:
    """Whether a ``//`` line is (or is becoming) a command rather than an escaped chat line."""
    word = _SEPARATORS.split(line[2:], 1)[0].lower()
    if not _SEPARATORS.search(line[2:]):
        return any(k.startswith(word) for k in (*_BY_KEY, *_GROUPS))
    return _is_command_word(word)
