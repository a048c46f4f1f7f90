"""Dice: ``!roll NdM`` (default 1d6) rolls N dice of M sides.

    meshchat bot examples/dice_bot.py --room lobby
"""

import random

from meshchat import Bot, Context

bot = Bot(name="dice", rooms=["lobby"])


@bot.command("roll", help="roll dice, e.g. !roll 2d6")
async def roll(ctx: Context, spec: str = "1d6") -> None:
    count, _, sides = spec.lower().partition("d")
    if not (count.isdigit() and sides.isdigit()) or not (1 <= int(count) <= 100
                                                          and 2 <= int(sides) <= 1000):
        await ctx.reply("usage: !roll NdM, with 1-100 dice of 2-1000 sides (e.g. 2d6)")
        return
    dice = [random.randint(1, int(sides)) for _ in range(int(count))]
    shown = " + ".join(map(str, dice)) + (f" = {sum(dice)}" if len(dice) > 1 else "")
    await ctx.reply(f"{ctx.sender.name} rolled {spec}: {shown}")


if __name__ == "__main__":
    bot.run()
