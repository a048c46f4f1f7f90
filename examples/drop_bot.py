"""Drop box: accepts files that members of its rooms send it, into a folder, and announces them.

    meshchat bot examples/drop_bot.py --room lobby
    # files land in $MESHCHAT_DROP_DIR (default ./dropbox); offers from non-members are declined
"""

import asyncio
import os
from pathlib import Path

from meshchat import Bot, Context, FileOffered, TransferDone, TransferFailed

bot = Bot(name="drop", rooms=["lobby"])
DROP_DIR = Path(os.environ.get("MESHCHAT_DROP_DIR", "dropbox"))


def _member_room(ctx: Context) -> str | None:
    """The first of the bot's rooms the sender is a member of."""
    for room in ctx.node.joined_rooms():
        if any(m.fingerprint == ctx.sender.fingerprint for m in room.members):
            return room.name
    return None


@bot.on(FileOffered)
async def offered(ctx: Context, event: FileOffered) -> None:
    if _member_room(ctx) is None:
        await ctx.node.decline_file(event.transfer.id)
        return
    await asyncio.to_thread(DROP_DIR.mkdir, parents=True, exist_ok=True)
    await ctx.accept_file(into=DROP_DIR)


@bot.on(TransferDone)
async def done(ctx: Context, event: TransferDone) -> None:
    t = event.transfer
    room_name = _member_room(ctx)
    if t.direction != "in" or room_name is None:
        return
    await ctx.bot.say(room_name, f"{t.peer.name} dropped {t.name} ({t.size:,} bytes, "
                                 f"sha256 {t.sha256[:12]}…)")


@bot.on(TransferFailed)
async def failed(ctx: Context, event: TransferFailed) -> None:
    if event.transfer.direction == "in" and event.reason != "declined":
        await ctx.reply_private(f"your file {event.transfer.name} did not arrive: "
                                f"{event.reason}")


if __name__ == "__main__":
    bot.run()
