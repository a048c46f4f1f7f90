"""The terminal interface: prompt_toolkit, incoming lines above the input line, coloured names,
Tab completion of commands and names (``meshchat.commands.complete``).

The screen, bottom up: the input line, the status bar (``status``), and above them the chat in
the terminal's own scrollback. A typed line is erased when Enter is pressed; what it did shows
once, formatted, above. Lines are printed in frames: all that arrived within ``frame_s`` go
out in one write and one redraw of the input line (a burst of thousands of lines shows at the
speed of the terminal). A line that mentions your name is highlighted; it and a private message
ring the bell (``/bell off`` stops that). A bracketed paste of several lines is one message;
past ``paste_max_lines`` it asks first. What you type is kept in the data dir
(``inputhistory``); Up and Down walk it. Paths after ``/send file NAME`` are completed in a
thread (``PathScanner``): a slow or huge directory never stalls the screen or the keys."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any

from prompt_toolkit import print_formatted_text
from prompt_toolkit.application import get_app_or_none, run_in_terminal
from prompt_toolkit.buffer import Buffer, CompletionState
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent, merge_key_bindings
from prompt_toolkit.keys import Keys
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth

from meshchat import Event, MeshchatError, commands
from meshchat.tui import render, status
from meshchat.tui.api import NodeAPI
from meshchat.tui.controller import Controller
from meshchat.tui.inputhistory import FILE_NAME, InputHistory
from meshchat.tui.prompt import ChatPrompt
from meshchat.tui.render import Line
from meshchat.tui.session import StartOptions, interact, until_stopped


class PathScanner:
    """``commands.complete_path`` in a thread of its own, awaited for at most ``timeout_s``.

    ``complete_path`` bounds its own work, but a directory on a hung network mount can block
    inside ``scandir`` for minutes: the loop waits for no more than ``timeout_s`` (then offers
    nothing), and while one scan is still running no second thread is started: a call for the
    same prefix takes its result, one for another prefix waits for it to end first (all within
    ``timeout_s``)."""

    def __init__(self, scan: Callable[[str], list[str]] = commands.complete_path,
                 timeout_s: float = 0.5) -> None:
        self._scan = scan
        self.timeout_s = timeout_s
        self._running: asyncio.Future[list[str]] | None = None
        self._prefix = ""

    @property
    def busy(self) -> bool:
        return self._running is not None

    async def __call__(self, prefix: str) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while self._running is not None:  # never pile threads on a stuck disk
            if prefix == self._prefix:
                return await self._wait(self._running, deadline - loop.time())
            await self._wait(self._running, deadline - loop.time())
            if loop.time() >= deadline:
                return []
        running: asyncio.Future[list[str]] = loop.create_future()
        self._running, self._prefix = running, prefix

        def done(found: list[str]) -> None:
            self._running = None
            if not running.done():
                running.set_result(found)

        def scan() -> None:
            try:
                found = self._scan(prefix)
            except Exception:  # a path that cannot be read offers nothing
                found = []
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(done, found)

        threading.Thread(target=scan, name="meshchat-path-completion", daemon=True).start()
        return await self._wait(running, deadline - loop.time())

    @staticmethod
    async def _wait(running: asyncio.Future[list[str]], timeout_s: float) -> list[str]:
        try:
            return await asyncio.wait_for(asyncio.shield(running), max(0.0, timeout_s))
        except TimeoutError:
            return []


class MeshCompleter(Completer):
    """Commands, sub-commands, colours and peer/room names (``names(line_before_cursor)``);
    paths after ``/send file NAME`` only through ``get_completions_async`` (``paths``, off the
    loop)."""

    def __init__(self, names: Callable[[str], list[str]],
                 paths: PathScanner | None = None) -> None:
        self._names = names
        self.paths = paths or PathScanner()

    def get_completions(self, document: Document, complete_event: CompleteEvent
                        ) -> Iterator[Completion]:
        before = document.text_before_cursor
        if commands.wants_path(before):
            return  # reading the disk here would block the loop: see get_completions_async
        start = -len(commands.fragment(before))
        for candidate in commands.complete(before, self._names(before)):
            yield Completion(candidate, start_position=start)

    async def get_completions_async(self, document: Document, complete_event: CompleteEvent
                                    ) -> AsyncGenerator[Completion, None]:
        before = document.text_before_cursor
        if not commands.wants_path(before):
            for completion in self.get_completions(document, complete_event):
                yield completion
            return
        frag = commands.fragment(before)
        for candidate in await self.paths(frag):
            if candidate != frag:
                yield Completion(candidate, start_position=-len(frag))


def tab_bindings(completer: Completer) -> KeyBindings:
    """Tab: the next entry of an open menu; else complete now (a single candidate at once).

    Computing the candidates here, not in prompt_toolkit's background completion, means a Tab
    typed right after the text (pasted, or from a fast typist) is never lost.
    """
    bindings = KeyBindings()

    @bindings.add("tab")
    def _complete(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.complete_state and buffer.complete_state.completions:
            buffer.complete_next()
            return
        if commands.wants_path(buffer.document.text_before_cursor):
            # Paths come from a thread (MeshCompleter.get_completions_async): the keys go on
            # meanwhile; a single one is inserted when it comes, several open the menu.
            event.app.create_background_task(_complete_path(buffer, completer))
            return
        found = list(completer.get_completions(buffer.document,
                                               CompleteEvent(completion_requested=True)))
        if len(found) == 1:
            buffer.apply_completion(found[0])
        elif found:
            buffer.start_completion(insert_common_part=True)

    return bindings


async def _complete_path(buffer: Buffer, completer: Completer) -> None:
    document = buffer.document
    found = [c async for c in completer.get_completions_async(
        document, CompleteEvent(completion_requested=True))]
    if buffer.document != document:
        return  # typed on meanwhile: these are for a line that is gone
    if len(found) == 1:
        buffer.apply_completion(found[0])
    elif found:
        buffer.complete_state = CompletionState(document, found)  # the menu; Tab walks it


class ChatApp:
    """One terminal session on a node. ``input``/``output`` are for tests (pipe input);
    ``sink`` takes each line instead of the screen (tests); ``history_file`` keeps what is
    typed across runs (in memory only without it)."""

    def __init__(
        self,
        node: NodeAPI,
        *,
        input: Any = None,
        output: Any = None,
        sink: Callable[[Line], None] | None = None,
        history_file: Path | None = None,
        frame_s: float = 0.02,
        paste_max_lines: int = 5,
    ) -> None:
        self.style = Style.from_dict(render.STYLE_RULES)
        self.node = node
        self.frame_s = frame_s
        self.paste_max_lines = paste_max_lines
        self.tracker = status.Tracker(node.fingerprint)
        self.frames = 0
        """Frames written so far (each is one write and one redraw of the input line)."""
        self._sink = sink
        self._pending: list[Line] = []
        self._ring = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._paste: str | None = None
        self.controller = Controller(node, self._print_plain, styled_out=self._print,
                                     on_event=self._observe, alert=self._alert,
                                     clear=self._clear, keep_rooms=True)
        completer = MeshCompleter(self.controller.completion_names)
        history: History = InMemoryHistory() if history_file is None else \
            InputHistory(history_file)
        self.session = ChatPrompt(
            completer=completer,
            key_bindings=merge_key_bindings([tab_bindings(completer), self._bindings()]),
            complete_while_typing=True,
            history=history,
            style=self.style,
            input=input,
            output=output,
        )
        # A key's redraw runs at the loop's next turn. prompt_toolkit's default postpones it
        # while other callbacks are ready, up to 10 ms: in a burst of lines, always.
        self.session.app.max_render_postpone_time = None
        self.output = self.session.output

    # ------------------------------------------------------------------ the screen

    def _print(self, line: Line) -> None:
        if self._sink is not None:
            self._sink(line)
            return
        self._pending.append(line)
        self._schedule()

    def _schedule(self) -> None:
        """A frame in ``frame_s``: the lines waiting then, and a redraw of the status bar."""
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self.frame_s, self._flush)

    def _print_plain(self, text: str) -> None:
        self._print([("", text)])

    def _alert(self) -> None:
        self._ring = True
        if self._sink is not None:
            self._sink([("class:bell", "\a")])

    def _flush(self) -> None:
        """Everything that arrived since the last frame, in one write."""
        self._flush_handle = None
        lines, self._pending = self._pending, []
        ring, self._ring = self._ring, False
        if not lines and not ring:  # the status bar may have changed
            app = get_app_or_none()
            if app is not None:
                app.invalidate()
            return
        text: Line = []
        for line in lines:
            text += indented(line)
            text.append(("", "\n"))
        self.frames += 1

        def write() -> None:
            print_formatted_text(FormattedText(text), style=self.style, output=self.output,
                                 end="")
            if ring:
                self.output.bell()
            self.output.flush()

        run_in_terminal(write, in_executor=False)

    def flush_now(self) -> None:
        """Write what is waiting (at the end of a session)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    def _clear(self) -> None:
        def clear() -> None:
            self.output.erase_screen()
            self.output.cursor_goto(0, 0)
            self.output.flush()

        self.flush_now()
        run_in_terminal(clear, in_executor=False)

    def _observe(self, ev: Event) -> None:
        room = self.controller.room
        try:
            current = room.name if room is not None else None
            joined = [r.name for r in self.node.joined_rooms()]
        except MeshchatError:
            current, joined = None, []
        self.tracker.observe(ev, current, joined)
        self._schedule()

    def snapshot(self) -> status.Snapshot:
        """What the status bar shows now."""
        room = self.controller.room
        try:
            joined = [r.name for r in self.node.joined_rooms()]
            if room is None:
                return status.Snapshot(unread=self.tracker.unread_in(joined, None),
                                       private_unread=self.tracker.private_unread,
                                       transfers=self.tracker.transfers)
            host = room.host
            return status.Snapshot(
                room=room.name, host=render.shown_name(host, self.controller.view()),
                members=len(room.members), locked=room.locked, password=room.has_password,
                you_host=host.fingerprint == self.node.fingerprint,
                unread=self.tracker.unread_in(joined, room.name),
                private_unread=self.tracker.private_unread, transfers=self.tracker.transfers,
                others=tuple(name for name in joined if name != room.name))
        except MeshchatError:  # the room went away under us: the next event says so
            return status.Snapshot(transfers=self.tracker.transfers)

    def _columns(self) -> int:
        try:
            return int(self.output.get_size().columns)
        except Exception:  # some outputs (pipes in tests) have no size
            return 80

    def _message(self) -> FormattedText:
        """The status bar and, under it, the prompt (or the question about a long paste); the
        input line asks for it once per redraw (``ChatPrompt``)."""
        width = max(1, self._columns() - 1)
        line = status.line(self.snapshot(), width)
        line.append(("", "\n"))
        if self._paste is not None:
            count = self._paste.count("\n") + 1
            line.append(("class:error", f"send {count} lines? y/n "))
        else:
            line += self.controller.prompt()
        return FormattedText(line)

    # ------------------------------------------------------------------ keys

    def _bindings(self) -> KeyBindings:
        bindings = KeyBindings()
        asking = Condition(lambda: self._paste is not None)

        @bindings.add(Keys.BracketedPaste)
        def _pasted(event: KeyPressEvent) -> None:
            data = event.data.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
            if data.count("\n") + 1 > self.paste_max_lines:
                self._paste = data
                return
            event.current_buffer.insert_text(data)

        @bindings.add("escape", "left", filter=~asking)  # Alt+←, as in irssi and weechat
        def _previous_room(event: KeyPressEvent) -> None:
            self.controller.step_room(-1)

        @bindings.add("escape", "right", filter=~asking)  # Alt+→
        def _next_room(event: KeyPressEvent) -> None:
            self.controller.step_room(1)

        @bindings.add(Keys.Any, filter=asking)
        def _ignored(event: KeyPressEvent) -> None:
            pass  # until the question is answered

        @bindings.add("y", filter=asking)
        @bindings.add("Y", filter=asking)
        def _yes(event: KeyPressEvent) -> None:
            data, self._paste = self._paste or "", None
            event.current_buffer.insert_text(data)
            event.current_buffer.validate_and_handle()

        @bindings.add("n", filter=asking)
        @bindings.add("N", filter=asking)
        @bindings.add("escape", filter=asking)
        @bindings.add("c-c", filter=asking)
        def _no(event: KeyPressEvent) -> None:
            self._paste = None

        return bindings

    # ------------------------------------------------------------------ the loop

    async def read_line(self) -> str | None:
        try:
            line: str = await self.session.prompt_async(self._message, handle_sigint=False)
        except (EOFError, KeyboardInterrupt):
            return None
        room = self.controller.room
        try:
            current = room.name if room is not None else None
        except MeshchatError:
            current = None
        self.tracker.read(current, private=status.typed_into(line) == "private")
        return line

    async def run(self, options: StartOptions, stop: asyncio.Event | None = None) -> None:
        try:
            with patch_stdout(raw=True):
                await until_stopped(interact(self.controller, self.read_line, options), stop)
        finally:
            self.flush_now()


def indented(line: Line) -> Line:
    """``line`` with the next lines of a multi-line message indented under its first."""
    if not any("\n" in text for _, text in line):
        return line
    out: Line = []
    used = 0
    for style, text in line:
        if style == render.TEXT_STYLE and "\n" in text:
            pad = "\n" + " " * min(used, 40)
            text = text.replace("\n", pad)
        out.append((style, text))
        used += sum(max(0, get_cwidth(c)) for c in text)
    return out


async def run_app(node: NodeAPI, options: StartOptions, *, stop: asyncio.Event | None = None
                  ) -> None:
    await ChatApp(node, history_file=node.data_dir / FILE_NAME).run(options, stop)
