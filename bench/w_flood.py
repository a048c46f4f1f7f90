"""A hostile member that floods: ``python -m bench.w_flood JSON``.

``tests.hostile.HostilePeer`` on the real ``ZmqTransport`` (the one ``tests/net/hostile_agent.py``
drives line by line), here driven by a tight loop so it sends as fast as one process can. It
fetches the host's card (``card``: ``IP:PORT``), says Hello, joins the open room the host's
heartbeat lists with a JoinRequest made by hand (an open room admits anyone: it gets the room
key like any member), and then, on ``go``, sends round after round of

  - a ``Ping`` to the host,
  - a ``HistoryRequest`` to the host for everything it ever sent and for the host's own lines,
  - a sealed ``Chat`` (a signed batch of one 100-byte line) on the room's topic, to every member,

for ``duration_s``, yielding to its event loop every ``chunk`` rounds (so its heartbeat goes out
and what comes back is read). Config: ``bind`` (address), ``card``, ``name``.

Events: ``ready`` {peer_id, room_id, epoch}, ``done`` {rounds, frames, t0, t1, per_s}.
Commands: ``go`` {duration_s, chunk}, ``quit``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.common import CommandReader, emit, log, now, text_of

HEARTBEAT_S = 0.25


async def run(config: dict[str, Any]) -> None:
    from meshchat import room as room_rules
    from meshchat.discovery.static import fetch_card_from
    from meshchat.protocol.messages import (
        Chat,
        ChatBatch,
        ChatLine,
        Heartbeat,
        Hello,
        HistoryRequest,
        JoinAccept,
        JoinRequest,
        Ping,
        SeqRange,
    )
    from meshchat.transport.zmq import ZmqTransport
    from tests.hostile import HostilePeer

    bind = config["bind"]
    peer = HostilePeer(ZmqTransport(), name=config.get("name", "mallory"))
    await peer.start([bind], address=bind)
    reader = CommandReader()
    try:
        host_ip, _, port = config["card"].rpartition(":")
        card, reached = await fetch_card_from(host_ip, int(port), 5.0)
        host_id = card.peer_id
        peer.connect(host_id, card.router_port, card.pub_port, reached)
        peer.send(host_id, Hello(peer.card(), time.time(), ""))

        def heartbeat() -> None:
            peer.publish(b"P", Heartbeat(peer.card(), time.time(), "", (), ()))

        heartbeat()
        beat = await peer.wait_for(Heartbeat, lambda hb: hb.card.peer_id == host_id
                                   and bool(hb.hosted), timeout=10.0)
        room_id = beat.hosted[0].room_id
        peer.send(host_id, JoinRequest(room_id, peer.name, 1, b"", b"", b""))
        accept = await peer.wait_for(JoinAccept, lambda m: m.request_id == 1, timeout=10.0)
        key = room_rules.unseal_key(peer.identity, host_id, accept.sealed_key)
        epoch = accept.key_epoch
        emit("ready", peer_id=peer.peer_id.hex(), room_id=room_id.hex(), epoch=epoch)

        last_beat = time.monotonic()
        while True:
            cmd = reader.poll()
            if cmd is None:
                if time.monotonic() - last_beat >= HEARTBEAT_S:
                    heartbeat()
                    last_beat = time.monotonic()
                peer.received.clear()  # what comes back is read, never kept
                await asyncio.sleep(0.02)
                continue
            if cmd.get("cmd") == "quit":
                break
            if cmd.get("cmd") != "go":
                log("w_flood: unknown command", cmd)
                continue
            duration_s, chunk = float(cmd.get("duration_s", 5.0)), int(cmd.get("chunk", 20))
            rounds = frames = 0
            chat_seq = 0
            t0, started = now(), time.monotonic()
            while time.monotonic() - started < duration_s:
                for _ in range(chunk):
                    rounds += 1
                    peer.send(host_id, Ping(rounds))
                    peer.send(host_id, HistoryRequest(room_id, (
                        SeqRange(peer.peer_id, 1, max(1, chat_seq)),
                        SeqRange(host_id, 1, 1_000_000))))
                    chat_seq += 1
                    batch = ChatBatch(room_id, peer.peer_id, chat_seq,
                                      (ChatLine(time.time(), text_of("evil", chat_seq)),))
                    peer.publish_sealed(room_id, epoch, key, Chat(peer.sign(batch)))
                    frames += 3
                if time.monotonic() - last_beat >= HEARTBEAT_S:
                    heartbeat()
                    last_beat = time.monotonic()
                peer.received.clear()
                await asyncio.sleep(0)
            span = time.monotonic() - started
            emit("done", id=cmd.get("id"), rounds=rounds, frames=frames, t0=t0, t1=now(),
                 per_s=frames / span if span > 0 else 0.0)
    finally:
        await peer.close()


def main() -> None:
    config = json.loads(sys.argv[1])
    try:
        asyncio.run(run(config))
    except Exception as exc:
        log(f"w_flood failed: {exc!r}")
        emit("error", error=f"w_flood: {exc!r}")


if __name__ == "__main__":
    main()
