"""Slash commands: the one table of every command, the parser, and Tab completion.

Pure (layer L1): no I/O, no clock. ``parse(line)`` turns an input line into one frozen
``Command`` dataclass; the interface (``meshchat.tui``) carries it out against the node.
The table and the dataclasses are in ``table``, the parser in ``parser``, completion in
``completion``, colours and names in ``names``; import them all from here.

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
``/myColor``, command names after ``/help``, ``@names`` anywhere in a line, local paths
after ``/send file NAME`` (``complete_path``), and peer/room ``names`` elsewhere. Only the
paths read the disk (``wants_path(line_before_cursor)`` says when); that reading is bounded
(entries read, time) and the terminal interface does it off its event loop.
"""

from __future__ import annotations

from .completion import complete, complete_path, fragment, wants_path
from .names import COLOR_NAMES, clean_away, normalize_color, validate_name
from .names import MAX_NAME_CHARS as MAX_NAME_CHARS  # not in __all__, but tui.render uses it
from .parser import BadArguments, UnknownCommand, parse
from .table import (
    COMMANDS,
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
    help_for,
    help_table_markdown,
    help_text,
    spec_for,
)

__all__ = [
    "COLOR_NAMES",
    "COMMANDS",
    "Accept",
    "Away",
    "BadArguments",
    "Ban",
    "Banned",
    "Bell",
    "Broadcast",
    "Cancel",
    "Clear",
    "Close",
    "Command",
    "CommandSpec",
    "Decline",
    "Files",
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
    "UnknownCommand",
    "Unlock",
    "Uptime",
    "UserCount",
    "Users",
    "Version",
    "Whoami",
    "clean_away",
    "complete",
    "complete_path",
    "fragment",
    "help_for",
    "help_table_markdown",
    "help_text",
    "normalize_color",
    "parse",
    "spec_for",
    "validate_name",
    "wants_path",
]
