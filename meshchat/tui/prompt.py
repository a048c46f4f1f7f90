"""The input line: a lean stand-in for prompt_toolkit's ``PromptSession``.

``PromptSession`` builds one layout for every kind of prompt: toolbars, two kinds of menu, a
right prompt, validation, a multi-line message split again on each of the ten or so times a
redraw asks for it. During a burst of lines the screen redraws for every frame and every key,
and that layout was most of the interface's time (about 1.4 ms a redraw here, against 0.4 ms
for this one). Here the screen is only what the chat shows:

    the status bar           (the message's lines before the last, ``FormattedTextControl``)
    prompt> what you type    (one ``BufferControl``, the prompt in front of it)
    reverse search           (only while Ctrl-R searches the history)

with the completion menu floating at the cursor, and room for it kept below the input line as
``PromptSession`` keeps it (``reserve_space_for_menu``), so the screen does not jump when the menu
opens. Keys are prompt_toolkit's Emacs defaults, plus Enter (send), Ctrl-C (``KeyboardInterrupt``)
and Ctrl-D on an empty line (``EOFError``), as with ``PromptSession``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import Completer
from prompt_toolkit.filters import Condition, has_focus
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.history import History
from prompt_toolkit.key_binding import (
    KeyBindings,
    KeyBindingsBase,
    KeyPressEvent,
    merge_key_bindings,
)
from prompt_toolkit.key_binding.defaults import load_key_bindings
from prompt_toolkit.layout import Dimension, Float, FloatContainer, HSplit, Layout, Window
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput
from prompt_toolkit.styles import BaseStyle
from prompt_toolkit.widgets import SearchToolbar

Message = Callable[[], FormattedText]

MENU_ROWS = 8
"""Rows kept free under the input line for the completion menu (PromptSession's default)."""


def split_message(message: StyleAndTextTuples) -> tuple[StyleAndTextTuples, StyleAndTextTuples]:
    """The fragments before the message's last newline (the bar), and after it (the prompt)."""
    for i in range(len(message) - 1, -1, -1):
        style, text = message[i][0], message[i][1]
        if "\n" in text:
            head, _, tail = text.rpartition("\n")
            above: StyleAndTextTuples = [*message[:i]]
            if head:
                above.append((style, head))
            prompt: StyleAndTextTuples = [(style, tail)] if tail else []
            prompt += message[i + 1:]
            return above, prompt
    return [], list(message)


class ChatPrompt:
    """Reads one line at a time (``prompt_async``) under a message of status and prompt."""

    def __init__(self, *, completer: Completer, key_bindings: KeyBindingsBase, history: History,
                 style: BaseStyle, input: Any = None, output: Any = None,
                 complete_while_typing: bool = True) -> None:
        self.completer = completer
        self.history = history
        self._message: Message = lambda: FormattedText([])
        self._made: tuple[int, StyleAndTextTuples, StyleAndTextTuples] | None = None
        self.default_buffer = Buffer(
            name="DEFAULT_BUFFER", multiline=False, completer=completer, history=history,
            complete_while_typing=complete_while_typing, accept_handler=self._accept)
        search = SearchToolbar()
        buffer_window = Window(
            BufferControl(self.default_buffer, input_processors=[BeforeInput(self._prompt)],
                          preview_search=True,
                          search_buffer_control=search.control),
            height=self._input_height, dont_extend_height=True, wrap_lines=True)
        bar = Window(FormattedTextControl(self._bar), dont_extend_height=True,
                     wrap_lines=False, height=self._bar_height)
        root = FloatContainer(
            HSplit([bar, buffer_window, search]),
            floats=[Float(xcursor=True, ycursor=True,
                          content=CompletionsMenu(max_height=16, scroll_offset=1))])
        self.app: Application[str] = Application(
            layout=Layout(root, focused_element=buffer_window),
            key_bindings=merge_key_bindings([load_key_bindings(), self._keys(),
                                             key_bindings]),
            style=style, input=input, output=output, erase_when_done=True,
            full_screen=False, mouse_support=False)
        self.output = self.app.output

    # -- the message --------------------------------------------------------------------

    def _parts(self) -> tuple[StyleAndTextTuples, StyleAndTextTuples]:
        """The message once per redraw, however often the layout asks for it."""
        counter = self.app.render_counter
        made = self._made
        if made is None or made[0] != counter:
            above, prompt = split_message(list(self._message()))
            made = self._made = (counter, above, prompt)
        return made[1], made[2]

    def _bar(self) -> StyleAndTextTuples:
        return self._parts()[0]

    def _bar_height(self) -> Dimension:
        above = self._parts()[0]
        rows = sum(text.count("\n") for _, text, *_ in above) + 1 if above else 0
        return Dimension.exact(rows)

    def _prompt(self) -> StyleAndTextTuples:
        return self._parts()[1]

    def _input_height(self) -> Dimension:
        buffer = self.default_buffer
        if not self.app.is_done and (buffer.complete_while_typing()
                                     or buffer.complete_state is not None):
            return Dimension(min=MENU_ROWS)
        return Dimension()

    # -- keys and lines -----------------------------------------------------------------

    def _keys(self) -> KeyBindings:
        bindings = KeyBindings()
        focused = has_focus(self.default_buffer)
        empty = Condition(lambda: not self.default_buffer.text)

        @bindings.add("c-c", filter=focused)
        def _interrupt(event: KeyPressEvent) -> None:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

        @bindings.add("c-d", filter=focused & empty)
        def _end(event: KeyPressEvent) -> None:
            event.app.exit(exception=EOFError, style="class:exiting")

        return bindings

    def _accept(self, buffer: Buffer) -> bool:
        self.app.exit(result=buffer.document.text)
        return True  # the text stays until the next line starts (``prompt_async``)

    async def prompt_async(self, message: Message, *, handle_sigint: bool = True) -> str:
        """The next line typed; ``KeyboardInterrupt`` on Ctrl-C, ``EOFError`` on Ctrl-D."""
        self._message = message
        self._made = None
        self.default_buffer.reset()
        return await self.app.run_async(handle_sigint=handle_sigint)
