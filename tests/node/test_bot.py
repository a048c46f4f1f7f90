"""``meshchat.Bot`` on the in-memory transport: commands, usage lines, failures, events,
rate limits and rooms kept joined, against real nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshchat import Bot, Context, Message, Node, PeerJoined, Timings
from meshchat.discovery.memory import MemoryDiscovery
from meshchat.transport.memory import MemoryTransport

from .conftest import Mesh, until


def make_bot(mesh: Mesh, tmp_path: Path, **kw: object) -> Bot:
    return Bot(name="dice", rooms=["lobby"], data_dir=tmp_path / "bot",
               transport=MemoryTransport(mesh.network), discovery=MemoryDiscovery(mesh.hub),
               timings=Timings.fast(), loopback_only=True, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def running(mesh: Mesh, tmp_path: Path) -> AsyncIterator[tuple[Bot, Node]]:
    alice = await mesh.add("alice")
    await alice.host("lobby")
    bot = make_bot(mesh, tmp_path)

    @bot.command("roll", help="roll dice, e.g. !roll 2d6")
    async def roll(ctx: Context, spec: str = "1d6", times: int = 1) -> None:
        await ctx.reply(f"{ctx.sender.name} rolled {spec} x{times}")

    @bot.command("boom")
    async def boom(ctx: Context) -> None:
        raise RuntimeError("kaput")

    @bot.command("spam")
    async def spam(ctx: Context, n: int) -> None:
        for i in range(n):
            await ctx.reply(f"spam {i}")

    @bot.on(PeerJoined)
    async def greet(ctx: Context, event: PeerJoined) -> None:
        await ctx.reply(f"welcome, {event.peer.name}")

    task = asyncio.create_task(bot.run_async())
    await until(lambda: bot._node is not None and any(
        r.name == "lobby" for r in bot._node.joined_rooms()), what="the bot in lobby")
    try:
        yield bot, alice
    finally:
        bot.stop()
        await asyncio.wait_for(task, 10)


def texts(mesh: Mesh, who: str, sender: str = "dice") -> list[str]:
    """What ``sender`` said in rooms, as ``who`` saw it (private lines left out)."""
    return [e.text for e in mesh.recorders[who].events
            if isinstance(e, Message) and e.sender.name == sender and not e.private]


async def said(mesh: Mesh, who: str, text: str) -> None:
    await mesh.recorders[who].wait(
        lambda e: isinstance(e, Message) and e.sender.name == "dice" and e.text == text)


async def test_a_command_is_answered_in_the_room(mesh: Mesh,
                                                 running: tuple[Bot, Node]) -> None:
    _bot, alice = running
    room = alice.joined_rooms()[0]
    await room.say("!roll 5d6", action=True)  # `/me !roll 5d6` is an action, not a command
    await room.say("!roll 2d6")
    await said(mesh, "alice", "alice rolled 2d6 x1")
    assert "alice rolled 5d6 x1" not in texts(mesh, "alice")
    await room.say("!roll 3d4 2")
    await said(mesh, "alice", "alice rolled 3d4 x2")
    await room.say("!ROLL")  # command names are case-insensitive
    await said(mesh, "alice", "alice rolled 1d6 x1")


async def test_an_away_peers_automatic_reply_is_no_command(
        mesh: Mesh, running: tuple[Bot, Node]) -> None:
    _bot, alice = running
    alice.set_away("!roll 9d6")
    await until(lambda: any(p.name == "dice" for p in alice.peers()), what="alice sees dice")
    await alice.msg("dice", "!roll 2d6")  # the bot answers privately; alice's node, away,
    await until(lambda: alice.stats["away_replies"] == 1)  # sends the bot "!roll 9d6" back
    alice.set_away(None)
    await alice.msg("dice", "!roll 3d6")  # answered after anything the bot did before
    rec = mesh.recorders["alice"]
    await rec.wait(lambda e: isinstance(e, Message) and e.text == "alice rolled 3d6 x1")
    privates = [e.text for e in rec.events if isinstance(e, Message) and e.private
                and e.sender.name == "dice"]
    assert privates == ["alice rolled 2d6 x1", "alice rolled 3d6 x1"]


async def test_bad_arguments_get_a_usage_line_and_help_lists_commands(
        mesh: Mesh, running: tuple[Bot, Node]) -> None:
    _bot, alice = running
    room = alice.joined_rooms()[0]
    await room.say("!roll 2d6 many")
    await said(mesh, "alice", "times must be a whole number, not 'many'. usage: "
                              "!roll [spec] [times] — roll dice, e.g. !roll 2d6")
    await room.say("!help")
    await said(mesh, "alice", "commands: !boom !roll !spam — !help NAME for one")
    await room.say("!help roll")
    await said(mesh, "alice", "!roll [spec] [times] — roll dice, e.g. !roll 2d6")


async def test_a_failing_handler_is_logged_answered_and_the_bot_goes_on(
        mesh: Mesh, running: tuple[Bot, Node], tmp_path: Path) -> None:
    bot, alice = running
    room = alice.joined_rooms()[0]
    await room.say("!boom")
    await said(mesh, "alice", "sorry, !boom failed: RuntimeError")
    assert bot.errors == 1
    log = (tmp_path / "bot" / "logs" / "bot-dice.log").read_text()
    assert "kaput" in log and "Traceback" in log
    await room.say("!roll")
    await said(mesh, "alice", "alice rolled 1d6 x1")


async def test_private_commands_are_answered_privately(
        mesh: Mesh, running: tuple[Bot, Node]) -> None:
    _bot, alice = running
    await alice.msg("dice", "!roll 1d20")
    await mesh.recorders["alice"].wait(
        lambda e: isinstance(e, Message) and e.private and e.text == "alice rolled 1d20 x1")
    assert "alice rolled 1d20 x1" not in texts(mesh, "alice", "dice"), "answered in the room"


async def test_events_reach_their_handlers(mesh: Mesh, running: tuple[Bot, Node]) -> None:
    bob = await mesh.add("bob")
    await bob.join("lobby")
    await said(mesh, "alice", "welcome, bob")


async def test_replies_are_rate_limited_per_room(mesh: Mesh, tmp_path: Path) -> None:
    alice = await mesh.add("alice")
    await alice.host("lobby")
    bot = make_bot(mesh, tmp_path, reply_rate=20.0, reply_burst=5)

    @bot.command("spam")
    async def spam(ctx: Context, n: int) -> None:
        for i in range(n):
            await ctx.reply(f"spam {i}")

    task = asyncio.create_task(bot.run_async())
    try:
        await until(lambda: bot._node is not None and bool(bot._node.joined_rooms()),
                    what="the bot in lobby")
        started = time.monotonic()
        await alice.joined_rooms()[0].say("!spam 25")
        await said(mesh, "alice", "spam 24")
        took = time.monotonic() - started
        assert took >= (25 - 5) / 20.0 * 0.9, f"25 replies in {took:.2f} s: not limited"
    finally:
        bot.stop()
        await asyncio.wait_for(task, 10)


async def test_the_bot_waits_for_its_room_and_rejoins_after_it_closes_and_reopens(
        mesh: Mesh, tmp_path: Path) -> None:
    bot = make_bot(mesh, tmp_path)

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        await ctx.reply("pong")

    task = asyncio.create_task(bot.run_async())
    try:
        alice = await mesh.add("alice")
        await asyncio.sleep(0.3)  # the room is missing for a while: the bot keeps trying
        room = await alice.host("lobby")
        await until(lambda: bot._node is not None and bool(bot._node.joined_rooms()),
                    timeout=10, what="the bot joins the room once it appears")
        await room.say("!ping")
        await said(mesh, "alice", "pong")
        await room.close()
        await until(lambda: bot._node is not None and not bot._node.joined_rooms(),
                    what="the bot out of the closed room")
        room = await alice.host("lobby")
        await until(lambda: bot._node is not None and bool(bot._node.joined_rooms()),
                    timeout=15, what="the bot back in the reopened room")
        mark = len(mesh.recorders["alice"].events)
        await room.say("!ping")
        await mesh.recorders["alice"].wait(
            lambda e: isinstance(e, Message) and e.text == "pong"
            and mesh.recorders["alice"].events.index(e) >= mark)
    finally:
        bot.stop()
        await asyncio.wait_for(task, 10)


async def test_the_bot_hosts_its_room_when_asked_to(mesh: Mesh, tmp_path: Path) -> None:
    bot = make_bot(mesh, tmp_path, host=True)
    task = asyncio.create_task(bot.run_async())
    try:
        await until(lambda: bot._node is not None and any(
            r.is_host for r in bot._node.joined_rooms()), timeout=10, what="the bot hosts")
        alice = await mesh.add("alice")
        room = await alice.join("lobby")
        assert room.host.name == "dice"
    finally:
        bot.stop()
        await asyncio.wait_for(task, 10)


async def test_the_bot_comes_back_after_a_kick_and_after_a_ban_is_lifted(
        mesh: Mesh, running: tuple[Bot, Node]) -> None:
    bot, alice = running
    room = alice.joined_rooms()[0]
    node = bot._node
    assert node is not None

    def bot_in() -> bool:
        return any(r.name == "lobby" for r in node.joined_rooms())

    def bot_member() -> bool:
        return any(m.name == "dice" for m in room.members)

    await room.kick("dice", "testing")
    await until(lambda: bot_in() and bot_member(), timeout=10, what="the bot back after a kick")
    await room.ban("dice", "testing")
    await until(lambda: not bot_in() and not bot_member(), what="the bot out after a ban")
    await room.unban("dice")
    await until(lambda: bot_in() and bot_member(), timeout=35,
                what="the bot back once the ban is lifted (its backoff is at most 30 s)")
    mark = len(mesh.recorders["alice"].events)
    await room.say("!roll 1d4")
    await mesh.recorders["alice"].wait(
        lambda e: isinstance(e, Message) and e.text == "alice rolled 1d4 x1"
        and mesh.recorders["alice"].events.index(e) >= mark)
