"""ZmqTransport across a cut that heals: two lab hosts, one transport each (no node).

After a cut of seconds, a TCP connection that carried frames through it resends them only when
its retransmission timer next runs out, and that timer doubled at every try meanwhile: the
connection stays silent for up to about as long again after the heal. ``refresh`` (what the
node calls when it hears a peer it had given up) replaces each connection that is up, so every
stream flows again at once — the lower id's dialled link, the higher's answers over it, and
both PUB connections.
"""

from __future__ import annotations

import sys
import time

from .conftest import LabFactory
from .netlab import Host, JsonProc

# One transport: connects to the peer it is told, then sends a numbered direct frame and a
# numbered publication every 20 ms, and prints the first frame of each kind it gets after each
# "mark" (with the system-wide monotonic clock, the same in every namespace).
AGENT = r"""
import asyncio, json, sys, threading, time
from meshchat.identity import Identity
from meshchat.transport.zmq import ZmqTransport

def out(**obj):
    print(json.dumps(obj), flush=True)

async def main(addr):
    loop = asyncio.get_running_loop()
    me = Identity.generate()
    seen = {}
    def receive(inc):
        if inc.kind not in seen:
            seen[inc.kind] = True
            out(ev="first", kind=inc.kind, at=time.monotonic())
    transport = ZmqTransport()
    ports = await transport.start(me, [addr], receive)
    transport.subscribe(b"T")
    out(ev="ready", peer_id=me.peer_id.hex(), router_port=ports.router_port,
        pub_port=ports.pub_port)
    commands = asyncio.Queue()
    def read():
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, json.loads(line))
    threading.Thread(target=read, daemon=True).start()
    other = None
    async def tick():
        n = 0
        while True:
            await asyncio.sleep(0.02)
            if other is not None:
                n += 1
                transport.send(other, b"d%d" % n)
                transport.publish(b"T", b"p%d" % n)
    ticker = asyncio.create_task(tick())
    while True:
        cmd = await commands.get()
        if cmd["cmd"] == "connect":
            other = bytes.fromhex(cmd["peer_id"])
            transport.connect_peer(other, cmd["address"], cmd["router_port"], cmd["pub_port"])
        elif cmd["cmd"] == "mark":
            seen.clear()
            out(ev="marked")
        elif cmd["cmd"] == "refresh":
            out(ev="refreshed", value=transport.refresh(other))
        elif cmd["cmd"] == "quit":
            ticker.cancel()
            await transport.close(0)
            return

asyncio.run(main(sys.argv[1]))
"""

CUT_S = 2.5
RESUMED_WITHIN_S = 0.5


def _agent(host: Host) -> JsonProc:
    return host.spawn_as(JsonProc, [sys.executable, "-c", AGENT, host.addr])


def _resumed(agents: list[JsonProc], since: list[int], healed_at: float) -> dict[str, float]:
    """How long after the heal each agent's first direct frame and publication came."""
    took = {}
    for i, agent in enumerate(agents):
        for kind in ("direct", "pub"):
            got = agent.wait_json({"ev": "first", "kind": kind}, since=since[i], timeout=10)
            took[f"{i}:{kind}"] = float(got["at"]) - healed_at
    return took


def test_refresh_after_a_heal_gets_every_stream_flowing_at_once(
        lab_factory: LabFactory) -> None:
    lab = lab_factory(2)
    agents = [_agent(host) for host in lab.hosts]
    ready = [a.wait_json({"ev": "ready"}, timeout=15) for a in agents]
    for agent, other, host in ((agents[0], ready[1], lab.hosts[1]),
                               (agents[1], ready[0], lab.hosts[0])):
        agent.send_json({"cmd": "connect", "peer_id": other["peer_id"], "address": host.addr,
                         "router_port": other["router_port"], "pub_port": other["pub_port"]})
    for agent in agents:
        agent.wait_json({"ev": "first", "kind": "direct"}, timeout=10)
        agent.wait_json({"ev": "first", "kind": "pub"}, timeout=10)

    def cut_and_heal(refresh: bool) -> dict[str, float]:
        lab.split([lab.hosts[0]], [lab.hosts[1]])
        time.sleep(CUT_S)  # the fault's length; both sides keep sending through it
        since = []
        for agent in agents:
            mark = agent.json_mark()
            agent.send_json({"cmd": "mark"})
            agent.wait_json({"ev": "marked"}, since=mark)
            since.append(mark)
        lab.heal()
        healed_at = time.monotonic()
        if refresh:
            for agent in agents:
                agent.send_json({"cmd": "refresh"})
        return _resumed(agents, since, healed_at)

    kept = cut_and_heal(refresh=False)
    fresh = cut_and_heal(refresh=True)
    print("after the heal, first frame (s): links kept", kept, "refreshed", fresh)
    assert max(fresh.values()) < RESUMED_WITHIN_S, fresh
    for agent in agents:
        agent.send_json({"cmd": "quit"})
