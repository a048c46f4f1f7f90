"""Line mode: stdin lines in, one output line per event out (pipes, scripts, tests, ``--no-tui``).

Each input line is a chat line or a /command (see ``meshchat.commands``); the end of input is
``/quit``. Every output line is flushed at once. What a session prints first::

    * you are alice (fp 74gqoyew), reachable at 10.0.0.1:47001
    * rooms: lobby (alice, 1 member), dev (bob, 3 members, locked, password)
    * no rooms on the network yet (/host NAME opens one)        (when there are none)

and with ``--room lobby`` / ``--host lobby`` instead of the rooms line::

    * no room lobby on the network: hosting it                  (--room, nobody has it)
    * hosting room lobby                                        (+ " (password protected)")
    * joining lobby…
    * joined lobby (host alice; members: alice, bob)
    * ── 12 earlier messages ──                                  the room's backlog (at most 200)
    2024-04-30 18:02:11 <bob> see you tomorrow                  in the usual format, dated
    11:58:30 <alice> hi                                         when not from today

Then, as things happen (formats in ``meshchat.tui.render``)::

    12:00:01 <alice> hello
    12:00:02 [private] <alice → you> psst
    * bob joined lobby
    * bob left lobby (vanished)
    * error: no room dev on the network (/rooms lists them)
    * error: could not show an event (details in the log)       the session goes on

``--room lobby#3smw`` / ``/join lobby#3smw`` pick one of several rooms called lobby by a prefix of
its host's fingerprint; ``/rooms`` shows them as ``lobby (host alice#3smwxyz1, 2 members)``.

A line that mentions your name and a private message ring the terminal bell (``\a``, ``/bell
off`` stops it) when the output is a terminal; output to a pipe or a file never carries one, so
scripts read the same lines as before.

Input is read by a daemon thread with ``os.read`` (so a blocked read never holds a lock that
interpreter shutdown needs, and regular files work as well as pipes and terminals). Without
prompt_toolkit on a terminal, ``readline`` gives line editing and Tab completion instead.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from meshchat import commands
from meshchat.tui.api import NodeAPI
from meshchat.tui.controller import Controller
from meshchat.tui.session import StartOptions, interact, until_stopped


class LineReader:
    """Lines from a file descriptor, read in a daemon thread and handed to the event loop."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._run, name="meshchat-stdin", daemon=True).start()

    async def readline(self) -> str | None:
        if self._loop is None:
            self.start()
        return await self._queue.get()

    def _hand_over(self, line: str | None) -> bool:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                if not self._hand_over(line.rstrip("\r")):
                    return
            if not chunk:
                if pending:
                    self._hand_over(pending)
                self._hand_over(None)
                return


class ReadlineReader:
    """Terminal lines through ``input()`` with readline editing and Tab completion."""

    def __init__(self, prompt: Callable[[], str], names: Callable[[str], list[str]]) -> None:
        self._prompt = prompt
        self._names = names
        self._loop: asyncio.AbstractEventLoop | None = None
        self._matches: list[str] = []
        self.current_prompt = ""
        with contextlib.suppress(ImportError):
            import readline

            readline.set_completer_delims(" \t\n,")
            readline.set_completer(self._complete)
            if "libedit" in (readline.__doc__ or ""):
                readline.parse_and_bind("bind ^I rl_complete")
            else:
                readline.parse_and_bind("tab: complete")

    def _complete(self, text: str, state: int) -> str | None:
        if state == 0:
            import readline

            before = readline.get_line_buffer()[: readline.get_endidx()]
            self._matches = commands.complete(before, self._names(before))
        return self._matches[state] if state < len(self._matches) else None

    def _read(self, prompt: str) -> str | None:
        try:
            return input(prompt)
        except EOFError:
            return None

    async def readline(self) -> str | None:
        self.current_prompt = self._prompt()
        return await asyncio.to_thread(self._read, self.current_prompt)


def make_writer(stream: TextIO, redraw: Callable[[], str] | None = None) -> Callable[[str], None]:
    """A line printer that flushes at once and never raises (a closed pipe drops the line)."""

    def write(line: str) -> None:
        try:
            if redraw is None:
                stream.write(line + "\n")
            else:  # print above what the user is typing, then show it again
                stream.write("\r\x1b[K" + line + "\n" + redraw())
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    return write


def make_bell(stream: TextIO) -> Callable[[], None] | None:
    """Ring the bell on ``stream`` (a BEL, no newline) if it is a terminal; None if not."""
    try:
        on_terminal = stream.isatty()
    except (ValueError, OSError):
        on_terminal = False
    if not on_terminal:
        return None

    def ring() -> None:
        try:
            stream.write("\a")
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    return ring


async def run_linemode(
    node: NodeAPI,
    options: StartOptions,
    *,
    stop: asyncio.Event | None = None,
    stdin_fd: int | None = None,
    stdout: TextIO | None = None,
    use_readline: bool = False,
) -> None:
    """Run a line-mode session on ``node`` until /quit, end of input, or ``stop``."""
    out_stream = stdout if stdout is not None else sys.stdout
    # readline completes in the input thread: it reads these copies, never the controller
    names: list[str] = []
    room_names: list[str] = []

    def names_for(before: str) -> list[str]:
        return room_names if Controller.wants_room(before) else names

    reader: LineReader | ReadlineReader
    if use_readline:
        readline_reader = ReadlineReader(lambda: _plain_prompt(controller), names_for)
        reader = readline_reader

        def redraw() -> str:
            with contextlib.suppress(ImportError):
                import readline

                return readline_reader.current_prompt + readline.get_line_buffer()
            return ""

        write = make_writer(out_stream, redraw)
    else:
        reader = LineReader(stdin_fd if stdin_fd is not None else sys.stdin.fileno())
        write = make_writer(out_stream)

    def refresh_names() -> None:
        names[:] = controller.completion_names()
        room_names[:] = controller.completion_names("/join ")

    def out(line: str) -> None:
        write(line)
        if use_readline:
            refresh_names()

    controller = Controller(node, out, alert=make_bell(out_stream))
    if use_readline:
        refresh_names()
    await until_stopped(interact(controller, reader.readline, options), stop)


def _plain_prompt(controller: Controller) -> str:
    from meshchat.tui.render import plain

    return plain(controller.prompt())
