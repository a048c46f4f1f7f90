"""The input line (``meshchat.tui.prompt``): the message split into bar and prompt, the lines
read, and the keys that end the session, on pipe input and a dummy output."""

from __future__ import annotations

import asyncio

import pytest
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.styles import Style

from meshchat.tui.prompt import MENU_ROWS, ChatPrompt, split_message

from .uifake import until


def test_split_message_puts_everything_before_the_last_newline_in_the_bar() -> None:
    bar, prompt = split_message([("class:bar", " lobby │ 3 members"), ("", "\n"),
                                 ("class:prompt", "[lobby] alice> ")])
    assert bar == [("class:bar", " lobby │ 3 members")]
    assert prompt == [("class:prompt", "[lobby] alice> ")]

    bar, prompt = split_message([("a", "one\ntwo\nthr"), ("b", "ee> ")])
    assert bar == [("a", "one\ntwo")]
    assert prompt == [("a", "thr"), ("b", "ee> ")]

    assert split_message([("p", "> ")]) == ([], [("p", "> ")])
    assert split_message([]) == ([], [])
    assert split_message([("a", "bar\n")]) == ([("a", "bar")], [])


def make(pipe: object, history: InMemoryHistory | None = None) -> ChatPrompt:
    return ChatPrompt(completer=WordCompleter(["/join", "/quit"]), key_bindings=KeyBindings(),
                      history=history or InMemoryHistory(), style=Style([]), input=pipe,
                      output=DummyOutput())


def message() -> FormattedText:
    return FormattedText([("", " lobby │ host bob"), ("", "\n"), ("", "[lobby] me> ")])


async def test_lines_are_read_one_at_a_time_and_kept_in_the_history() -> None:
    history = InMemoryHistory()
    with create_pipe_input() as pipe:
        prompt = make(pipe, history)
        reading = asyncio.create_task(prompt.prompt_async(message, handle_sigint=False))
        await until(lambda: prompt.app.is_running)
        assert prompt._bar() == [("", " lobby │ host bob")]
        assert prompt._prompt() == [("", "[lobby] me> ")]
        assert prompt._bar_height().preferred == 1
        assert prompt._input_height().min == MENU_ROWS  # room for the menu while typing
        pipe.send_text("hallo\r")
        assert await asyncio.wait_for(reading, 3) == "hallo"

        reading = asyncio.create_task(prompt.prompt_async(message, handle_sigint=False))
        await until(lambda: prompt.app.is_running)
        assert prompt.default_buffer.text == ""  # a new line starts empty
        pipe.send_text("\x1b[A")  # Up: the line before
        await until(lambda: prompt.default_buffer.text == "hallo")
        pipe.send_text(" again\r")
        assert await asyncio.wait_for(reading, 3) == "hallo again"
    assert list(history.load_history_strings()) == ["hallo again", "hallo"]


@pytest.mark.parametrize(("keys", "raised"), [("\x04", EOFError), ("typed\x03", KeyboardInterrupt)])
async def test_ctrl_d_on_an_empty_line_and_ctrl_c_end_the_read(
        keys: str, raised: type[BaseException]) -> None:
    with create_pipe_input() as pipe:
        prompt = make(pipe)
        pipe.send_text(keys)  # read once it runs
        # Awaited here, not in a task of its own: a KeyboardInterrupt out of a task stops the
        # whole loop, as asyncio does with it.
        with pytest.raises(raised):
            async with asyncio.timeout(3):
                await prompt.prompt_async(message, handle_sigint=False)


async def test_ctrl_d_inside_a_line_deletes_instead() -> None:
    with create_pipe_input() as pipe:
        prompt = make(pipe)
        reading = asyncio.create_task(prompt.prompt_async(message, handle_sigint=False))
        await until(lambda: prompt.app.is_running)
        pipe.send_text("ab\x01\x04\r")  # Ctrl-A to the start, Ctrl-D deletes the a
        assert await asyncio.wait_for(reading, 3) == "b"
