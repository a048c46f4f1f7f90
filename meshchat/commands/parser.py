"""The parser: one input line to one ``Command``, or a ``CommandError`` with the usage."""

from __future__ import annotations

from collections.abc import Callable

from meshchat.errors import CommandError

from .names import COLOR_NAMES, normalize_color, validate_name
from .table import (
    BY_KEY,
    COMMANDS,
    GROUPS,
    Accept,
    Away,
    Ban,
    Banned,
    Bell,
    Broadcast,
    Cancel,
    Clear,
    Close,
    Command,
    CommandSpec,
    Decline,
    Files,
    Help,
    Host,
    Info,
    Join,
    Kick,
    Leave,
    List,
    Lock,
    Me,
    Msg,
    MyColor,
    NewHost,
    NewPassword,
    NewRoomName,
    Ping,
    Quit,
    Rename,
    Rooms,
    SaveChat,
    Say,
    SendFile,
    TestServer,
    Unban,
    Unlock,
    Uptime,
    UserCount,
    Users,
    Version,
    Whoami,
    is_command_word,
)

__all__ = ["BadArguments", "UnknownCommand", "parse"]

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


def parse(line: str) -> Command:
    """The command on ``line``; raises ``CommandError`` (usage or unknown command)."""
    text = line.rstrip("\r\n")
    if not text.startswith("/"):
        return Say(text)
    body = text[1:]
    if body.startswith("/"):
        word, _ = _split_word(body[1:])
        if not word or not is_command_word(word):
            return Say(body)
        body = body[1:]
    word, rest = _split_word(body)
    if not word or body[0].isspace():
        raise CommandError("a command follows the / — /help lists them")
    key = word.lower()
    if key in GROUPS:
        sub, rest = _split_word(rest)
        spec = BY_KEY.get(f"{key} {sub.lower()}")
        if spec is None:
            choices = " | ".join(s.usage for s in GROUPS[key])
            raise CommandError(f"usage: {choices}")
    else:
        found = BY_KEY.get(key)
        if found is None:
            raise UnknownCommand(word)
        spec = found
    return _PARSERS[spec.name](_Args(spec, rest.strip()))


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
    if key not in BY_KEY and key not in GROUPS:
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


def _accept(args: _Args) -> Command:
    first = args.optional_word()
    if first is None:
        return Accept()
    rest = args.rest.strip()
    if not first.isdigit():  # "/accept DIR": the latest offer
        return Accept(None, (first + (" " + rest if rest else "")).strip())
    if rest.startswith('"'):
        into: str | None = args.word()
        args.done()
    else:
        into = rest or None
    return Accept(first, into)


def _decline(args: _Args) -> Command:
    tid = args.optional_word()
    args.done()
    return Decline(tid)


def _cancel(args: _Args) -> Command:
    tid = args.word()
    args.done()
    return Cancel(tid)


def _ping(args: _Args) -> Command:
    target = args.optional_word()
    args.done()
    return Ping(target)


def _broadcast(args: _Args) -> Command:
    return Broadcast(args.text())


def _me(args: _Args) -> Command:
    return Me(args.text())


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


def _away(args: _Args) -> Command:
    return Away(args.optional_text())


def _bell(args: _Args) -> Command:
    word = args.optional_word()
    args.done()
    if word is None:
        return Bell()
    if word.lower() not in ("on", "off"):
        raise args.fail("on or off")
    return Bell(word.lower() == "on")


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
    "accept": _accept,
    "decline": _decline,
    "files": _no_args(Files()),
    "cancel": _cancel,
    "save chat": _save_chat,
    "ping": _ping,
    "version": _no_args(Version()),
    "uptime": _no_args(Uptime()),
    "broadcast": _broadcast,
    "me": _me,
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
    "bell": _bell,
    "clear": _no_args(Clear()),
    "away": _away,
}
assert set(_PARSERS) == {s.name for s in COMMANDS}
