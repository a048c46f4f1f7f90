"""Echo: answers ``!echo TEXT`` with TEXT, in the room or privately, as it was asked.

    meshchat bot examples/echo_bot.py --room lobby
    python examples/echo_bot.py            # the same, with the rooms and name below
"""

from meshchat import Bot, Context

bot = Bot(name="echo", rooms=["lobby"])


@bot.command("echo", help="say TEXT back")
async def echo(ctx: Context, *words: str) -> None:
    await ctx.reply(" ".join(words) or "(nothing to echo)")


if __name__ == "__main__":
    bot.run()
