"""200 peers work (issue 9): one real ``meshchat start`` and 200 peers over real sockets.

The peers are lean: each is a CURVE ROUTER and SUB bound on loopback, plus a DEALER to the
node's ROUTER and a PUB to its SUB, with keys of its own — the connections a real peer has
with a node. Of a pair, only the lower id keeps a direct connection to the other's ROUTER: a
lean peer with the higher id closes its DEALER once the node's own connection has reached it,
and speaks over that from then on, as a real peer does. Each says Hello the way a node does,
and answers pings. The node learns all 200 of them and opens its links to each. It answers
pings from all of them and pings some of them back. Its open fds are counted per peer (issue
9's bar: 3 per peer).

Everything runs on the loopback of the test's own network namespace (``make test`` runs
pytest under ``unshare -n``). The node runs with ``--loopback-only``, so no mDNS goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from meshchat.discovery.static import fetch_card
from meshchat.identity import Identity, curve_public_of
from meshchat.protocol.codec import Codec, Envelope
from meshchat.protocol.messages import Hello, PeerCard, Ping, Pong, WireMessage
from meshchat.storage.keystore import load_or_create_identity

PEERS = 200
CARD_PORT = re.compile(r"reachable at 127\.0\.0\.1:(\d+)$")


class LeanPeer:
    """A peer in four sockets: it says Hello, answers pings, and counts what it got."""

    def __init__(self, ctx: zmq.asyncio.Context, codec: Codec, index: int) -> None:
        self.identity = Identity.generate()
        self.codec = codec
        self.name = f"p{index:03d}"
        self.seq = 0
        self.pings = 0
        self.pongs: set[int] = set()
        self.ponged = asyncio.Event()
        self.router = self._server(ctx, zmq.ROUTER)
        self.sub = self._server(ctx, zmq.SUB)  # the node's PUB dials it
        self.router_port = _port(self.router)
        self.pub_port = _port(self.sub)
        self.dealer: zmq.asyncio.Socket | None = None
        self.pub: zmq.asyncio.Socket | None = None
        self.dials = True  # our id is the lower: we keep the DEALER
        self.route: bytes | None = None  # the node's connection to our ROUTER, once it spoke
        self.routed = asyncio.Event()
        self._poller: zmq.asyncio.Poller | None = None
        self._ctx = ctx

    def _server(self, ctx: zmq.asyncio.Context, kind: int) -> zmq.asyncio.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.identity.curve_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.identity.curve_secret)
        sock.bind("tcp://127.0.0.1:*")
        return sock

    def envelope(self, message: WireMessage) -> bytes:
        self.seq += 1
        return self.codec.encode(Envelope(self.identity.peer_id, self.seq, time.time(),
                                          message))

    def card(self) -> PeerCard:
        return PeerCard(self.identity.peer_id, self.name, ("127.0.0.1",), self.router_port,
                        self.pub_port, 0)

    def _client(self, kind: int, node: PeerCard, port: int) -> zmq.asyncio.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.identity.curve_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.identity.curve_secret)
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve_public_of(node.peer_id))
        sock.connect(f"tcp://127.0.0.1:{port}")
        return sock

    async def say_hello(self, node: PeerCard) -> None:
        self.dials = self.identity.peer_id < node.peer_id
        dealer = self.dealer = self._client(zmq.DEALER, node, node.router_port)
        self.pub = self._client(zmq.PUB, node, node.pub_port)
        await dealer.send(self.envelope(Hello(self.card(), time.time(), "")))

    async def ping(self, nonce: int) -> None:
        frame = self.envelope(Ping(nonce))
        if self.dealer is not None:
            await self.dealer.send(frame)
        else:
            assert self.route is not None
            await self.router.send_multipart([self.route, frame])

    async def serve(self) -> None:
        """Answer the node's pings; note its pongs."""
        poller = zmq.asyncio.Poller()
        poller.register(self.router, zmq.POLLIN)
        assert self.dealer is not None
        poller.register(self.dealer, zmq.POLLIN)
        while True:
            for sock, _ in await poller.poll():
                if sock is not self.router and sock is not self.dealer:
                    continue  # the DEALER, closed a moment ago in this same round
                frames = await sock.recv_multipart()
                if sock is self.router:
                    # The node's latest connection to us (it may have dialled again).
                    self.route = frames[0]
                    self.routed.set()
                    if not self.dials and self.dealer is not None:
                        # The node dials us (its id is the lower): ours goes.
                        poller.unregister(self.dealer)
                        self.dealer.close(linger=0)
                        self.dealer = None
                if not frames[-1]:  # the node's first word on its connection: who it is
                    continue
                env = self.codec.decode(frames[-1])
                if isinstance(env.message, Ping):  # back the way it came
                    self.pings += 1
                    await sock.send_multipart(
                        [*frames[:-1], self.envelope(Pong(env.message.nonce))])
                elif isinstance(env.message, Pong):
                    self.pongs.add(env.message.nonce)
                    self.ponged.set()

    def close(self) -> None:
        for sock in (self.router, self.sub, self.dealer, self.pub):
            if sock is not None:
                sock.close(linger=0)


def _port(sock: Any) -> int:
    return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Node:
    """``meshchat start`` in line mode, its stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        regex = re.compile(pattern)
        for line in self.lines:
            if (m := regex.search(line)) is not None:
                return m
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"the node exited; last lines: {self.lines[-5:]}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if (m := regex.search(line)) is not None:
                    return m

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()


@pytest.mark.net
async def test_a_node_takes_200_peers_and_answers_them_all(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    me = load_or_create_identity(data_dir)  # the node will load this key
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshchat", "start", "--name", "hub", "--no-tui",
        "--loopback-only", "--discovery-timeout", "0", "--data-dir", str(data_dir),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    node = Node(proc)
    ctx = zmq.asyncio.Context()
    codec = Codec()
    peers: list[LeanPeer] = []
    servers: list[asyncio.Task[None]] = []
    try:
        card_port = int((await node.expect(CARD_PORT.pattern)).group(1))
        card = await fetch_card("127.0.0.1", card_port)
        assert card.peer_id == me.peer_id
        idle_fds = _fds(proc.pid)
        peers = [LeanPeer(ctx, codec, i) for i in range(PEERS)]
        for peer in peers:
            await peer.say_hello(card)
            servers.append(asyncio.ensure_future(peer.serve()))
        started = time.monotonic()
        for peer in peers:
            await node.expect(rf"^\* {peer.name} is on the network$", timeout=30.0)
        learnt_s = time.monotonic() - started
        async with asyncio.timeout(20.0):  # the node dials every peer with the higher id
            for peer in peers:
                if not peer.dials:
                    await peer.routed.wait()
        # Every peer pings the node; every one is answered.
        for i, peer in enumerate(peers):
            await peer.ping(1000 + i)
        try:
            async with asyncio.timeout(20.0):
                for peer in peers:
                    await peer.ponged.wait()
        except TimeoutError:
            missing = [(p.name, p.dials, p.dealer is None) for p in peers if not p.ponged.is_set()]
            raise AssertionError(f"no pong for {len(missing)}: {missing[:10]}") from None
        # The node pings peers by name, across the table (its dialled links to them).
        for peer in (peers[0], peers[PEERS // 2], peers[-1]):
            await node.send(f"/ping {peer.name}")
            await node.expect(rf"^\* ping {peer.name}: [\d.]+ ms$", timeout=10.0)
        fds_per_peer = (_fds(proc.pid) - idle_fds) / PEERS
        print(f"200 peers learnt in {learnt_s:.2f} s; {fds_per_peer:.1f} fds per peer")
        # Issue 9's bar: three TCP connections per peer (the node's PUB out, the peer's PUB
        # in, and one direct connection: the node's dialled one or the peer's DEALER in), and
        # no socket of its own. More than this is a leak.
        assert fds_per_peer <= 3.2, fds_per_peer
        await node.send("/quit")
        await node.expect(r"^\* bye$", timeout=15.0)
        assert await asyncio.wait_for(proc.wait(), 15.0) == 0
    finally:
        for task in servers:
            task.cancel()
        for task in servers:
            with contextlib.suppress(BaseException):
                await task
        for peer in peers:
            peer.close()
        ctx.term()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode() if proc.stderr is not None else ""
    assert "Traceback" not in stderr, stderr
