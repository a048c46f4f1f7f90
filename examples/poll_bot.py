"""Polls: ``!poll question | a | b``, ``!vote N``, ``!close`` (one open poll per room).

    meshchat bot examples/poll_bot.py --room lobby
"""

from dataclasses import dataclass, field

from meshchat import Bot, Context

bot = Bot(name="poll", rooms=["lobby"])


@dataclass
class Poll:
    question: str
    options: list[str]
    by: str  # fingerprint of who opened it
    votes: dict[str, int] = field(default_factory=dict)  # voter fingerprint -> option

    def tally(self) -> str:
        counts = [sum(1 for v in self.votes.values() if v == i) for i in range(len(self.options))]
        return "; ".join(f"{i + 1}) {o}: {c}" for i, (o, c) in
                         enumerate(zip(self.options, counts, strict=True)))


polls: dict[str, Poll] = {}


@bot.command("poll", help="open a poll: !poll question | option | option ...")
async def poll(ctx: Context, *words: str) -> None:
    if ctx.room is None:
        await ctx.reply("polls are for rooms")
        return
    parts = [p.strip() for p in " ".join(words).split("|")]
    if len(parts) < 3 or not all(parts) or len(parts) > 11:
        await ctx.reply("usage: !poll question | option | option (2 to 10 options)")
        return
    if ctx.room.name in polls:
        await ctx.reply("a poll is open here already: !close it first")
        return
    polls[ctx.room.name] = Poll(parts[0], parts[1:], ctx.sender.fingerprint)
    choices = " ".join(f"{i + 1}) {o}" for i, o in enumerate(parts[1:]))
    await ctx.reply(f"poll: {parts[0]} — {choices} — vote with !vote N")


@bot.command("vote", help="vote for option N of the open poll")
async def vote(ctx: Context, choice: int) -> None:
    current = polls.get(ctx.room.name) if ctx.room else None
    if current is None:
        await ctx.reply("no poll is open here")
        return
    if not 1 <= choice <= len(current.options):
        await ctx.reply(f"choose 1 to {len(current.options)}")
        return
    current.votes[ctx.sender.fingerprint] = choice - 1
    await ctx.reply(f"{ctx.sender.name} voted {choice}; {current.tally()}")


@bot.command("close", help="close the open poll and show the result")
async def close(ctx: Context) -> None:
    current = polls.get(ctx.room.name) if ctx.room else None
    if current is None or ctx.room is None:
        await ctx.reply("no poll is open here")
        return
    if ctx.sender.fingerprint != current.by:
        await ctx.reply("only who opened the poll can close it")
        return
    del polls[ctx.room.name]
    await ctx.reply(f"poll closed: {current.question} — {current.tally()}")


if __name__ == "__main__":
    bot.run()
