"""The terminal interface: prompt_toolkit, incoming lines above the input line, coloured names,
Tab completion of commands and names (``meshchat.commands.complete``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.styles import Style

from meshchat import commands
from meshchat.tui import render
from meshchat.tui.api import NodeAPI
from meshchat.tui.controller import Controller
from meshchat.tui.render import Line
from meshchat.tui.session import StartOptions, interact, until_stopped


class MeshCompleter(Completer):
    """Commands, sub-commands, colours and peer/room names (``names(line_before_cursor)``)."""

    def __init__(self, names: Callable[[str], list[str]]) -> None:
        self._names = names

    def get_completions(self, document: Document, complete_event: CompleteEvent
                        ) -> Iterator[Completion]:
        before = document.text_before_cursor
        start = -len(commands.fragment(before))
        for candidate in commands.complete(before, self._names(before)):
            yield Completion(candidate, start_position=start)


def tab_bindings(completer: Completer) -> KeyBindings:
    """Tab: the next entry of an open menu; else complete now (a single candidate at once).

    Computing the candidates here, not in prompt_toolkit's background completion, means a Tab
    typed right after the text (pasted, or from a fast typist) is never lost.
    """
    bindings = KeyBindings()

    @bindings.add("tab")
    def _complete(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.complete_state:
            buffer.complete_next()
            return
        found = list(completer.get_completions(buffer.document,
                                               CompleteEvent(completion_requested=True)))
        if len(found) == 1:
            buffer.apply_completion(found[0])
        elif found:
            buffer.start_completion(insert_common_part=True)

    return bindings


class ChatApp:
    """One terminal session on a node. ``input``/``output`` are for tests (pipe input)."""

    def __init__(
        self,
        node: NodeAPI,
        *,
        input: Any = None,
        output: Any = None,
        sink: Callable[[Line], None] | None = None,
    ) -> None:
        self.style = Style.from_dict(render.STYLE_RULES)
        self._output = output
        self.controller = Controller(node, self._print_plain, styled_out=sink or self._print)
        completer = MeshCompleter(self.controller.completion_names)
        self.session: PromptSession[str] = PromptSession(
            completer=completer,
            key_bindings=tab_bindings(completer),
            complete_while_typing=True,
            history=InMemoryHistory(),
            style=self.style,
            input=input,
            output=output,
        )

    def _print(self, line: Line) -> None:
        print_formatted_text(FormattedText(line), style=self.style, output=self._output)

    def _print_plain(self, text: str) -> None:
        print_formatted_text(text, output=self._output)

    async def read_line(self) -> str | None:
        try:
            line: str = await self.session.prompt_async(
                lambda: FormattedText(self.controller.prompt()), handle_sigint=False)
        except (EOFError, KeyboardInterrupt):
            return None
        return line

    async def run(self, options: StartOptions, stop: asyncio.Event | None = None) -> None:
        with patch_stdout(raw=True):
            await until_stopped(interact(self.controller, self.read_line, options), stop)


async def run_app(node: NodeAPI, options: StartOptions, *, stop: asyncio.Event | None = None
                  ) -> None:
    await ChatApp(node).run(options, stop)
