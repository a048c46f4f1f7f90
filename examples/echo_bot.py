"""A bot on the public API: joins a room and answers ``!echo TEXT`` with ``TEXT``.

    python examples/echo_bot.py lobby [--name echo] [--interface eth0] [--data-dir DIR]

If the room does not exist yet, the bot waits for it to appear.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from meshchat import Message, Node, RoomNotFound


async def run(room_name: str, name: str, interfaces: list[str] | None, data_dir: str | None
              ) -> None:
    async with Node(name=name, interfaces=interfaces, data_dir=data_dir) as node:
        events = node.events()
        while True:
            try:
                room = await node.join(room_name)
                break
            except RoomNotFound:
                await asyncio.sleep(1.0)
        print(f"* {name} joined {room.name}", flush=True)
        async for event in events:
            match event:
                case Message(room=r, sender=sender, text=text, private=False) if (
                    r == room.name and sender.fingerprint != node.fingerprint
                    and text.startswith("!echo ")
                ):
                    await room.say(text.removeprefix("!echo "))
                case Message(sender=sender, text=text, private=True) if text.startswith("!echo "):
                    await node.msg(sender.fingerprint, text.removeprefix("!echo "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("room")
    parser.add_argument("--name", default="echo")
    parser.add_argument("--interface", action="append")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    task = loop.create_task(run(args.room, args.name, args.interface, args.data_dir))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)
    loop.close()


if __name__ == "__main__":
    main()
