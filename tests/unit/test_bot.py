"""The pure parts of ``meshchat.bot``: arguments from signatures, usage lines, reply limits."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshchat.bot import Command, Context, ReplyLimiter, UsageError, parse_arguments


async def roll(ctx: Context, spec: str = "1d6") -> None: ...
async def add(ctx: Context, a: int, b: float = 1.5) -> None: ...
async def say(ctx: Context, first: str, *rest: str) -> None: ...
async def nums(ctx: Context, *values: int) -> None: ...


def test_arguments_follow_the_signature() -> None:
    assert parse_arguments(Command.of("roll", roll), []) == ["1d6"]
    assert parse_arguments(Command.of("roll", roll), ["2d6"]) == ["2d6"]
    assert parse_arguments(Command.of("add", add), ["2", "3"]) == [2, 3.0]
    assert parse_arguments(Command.of("add", add), ["2"]) == [2, 1.5]
    assert parse_arguments(Command.of("say", say), ["a", "b", "c"]) == ["a", "b", "c"]
    assert parse_arguments(Command.of("nums", nums), ["1", "2"]) == [1, 2]
    assert parse_arguments(Command.of("nums", nums), []) == []


@pytest.mark.parametrize(("cmd", "words", "says"), [
    (Command.of("add", add), [], "a is missing"),
    (Command.of("add", add), ["x"], "a must be a whole number, not 'x'"),
    (Command.of("add", add), ["1", "y"], "b must be a number"),
    (Command.of("roll", roll), ["1d6", "2d6"], "too many arguments"),
    (Command.of("nums", nums), ["1", "two"], "values must be a whole number"),
])
def test_wrong_arguments_say_what_is_wrong(cmd: Command, words: list[str], says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_arguments(cmd, words)


def test_usage_lines_come_from_the_signature_and_help() -> None:
    assert Command.of("roll", roll, "roll dice").usage("!") == "!roll [spec] — roll dice"
    assert Command.of("add", add).usage("!") == "!add <a> [b]"
    assert Command.of("say", say).usage("?") == "?say <first> [rest...]"


def test_a_handler_must_be_async_and_typed_simply() -> None:
    def sync(ctx: Context) -> None: ...

    async def odd(ctx: Context, when: list[str]) -> None: ...

    with pytest.raises(TypeError):
        Command.of("sync", sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Command.of("odd", odd)


@given(st.lists(st.text(min_size=1, max_size=8).filter(lambda w: not w.isspace()),
                max_size=6))
def test_any_words_parse_or_give_a_usage_error(words: list[str]) -> None:
    for cmd in (Command.of("add", add), Command.of("nums", nums), Command.of("roll", roll)):
        with contextlib.suppress(UsageError):
            parse_arguments(cmd, words)


def test_replies_are_limited_per_room_with_a_burst() -> None:
    limiter = ReplyLimiter(rate_per_s=5.0, burst=10)
    delays = [limiter.delay("lobby", 100.0) for _ in range(15)]
    assert delays[:10] == [0.0] * 10
    assert delays[10:] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert limiter.delay("other", 100.0) == 0.0  # another room has its own bucket
    # after a quiet while the bucket is full again (at most the burst)
    later = [limiter.delay("lobby", 200.0) for _ in range(11)]
    assert later[:10] == [0.0] * 10 and later[10] > 0


def test_a_limiter_table_is_bounded() -> None:
    limiter = ReplyLimiter(max_rooms=4)
    for i in range(100):
        limiter.delay(f"room{i}", 0.0)
    assert len(limiter._buckets) <= 4
