"""Logger: writes each room's chat as JSON lines, one file per room and day.

    meshchat bot examples/logger_bot.py --room lobby
    # -> ./chatlogs/lobby/2026-12-02.jsonl, one {"time","room","sender","fingerprint","text"} a line
"""

import json
import os
import re
import time
from pathlib import Path

from meshchat import Bot, Context

bot = Bot(name="logger", rooms=["lobby"])
LOG_DIR = Path(os.environ.get("MESHCHAT_LOG_DIR", "chatlogs"))


def _safe(name: str) -> str:
    """A room name as a folder name: no separators, no dot-dot, nothing hidden."""
    return re.sub(r"[^\w.-]", "_", name).lstrip(".") or "_"


@bot.on_message
async def record(ctx: Context) -> None:
    if ctx.private or ctx.room is None:
        return  # private lines are nobody's log
    folder = LOG_DIR / _safe(ctx.room.name)
    folder.mkdir(parents=True, exist_ok=True)
    sent_at = getattr(ctx.event, "sent_at", time.time())
    entry = {"time": sent_at, "room": ctx.room.name, "sender": ctx.sender.name,
             "fingerprint": ctx.sender.fingerprint, "text": ctx.text}
    day = time.strftime("%Y-%m-%d", time.localtime(sent_at))
    with (folder / f"{day}.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    bot.run()
