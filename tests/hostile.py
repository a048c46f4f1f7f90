"""A hostile peer for tests: its own keys, our wire format spoken perfectly, any field value.

It runs on any ``Transport`` (the in-memory fake in node tests, ``ZmqTransport`` over real
sockets in the namespace lab), so the node under attack sees exactly what a malicious machine
on the LAN would send: authenticated frames from a key that is not the victim's friend.

    evil = HostilePeer(MemoryTransport(mesh.network))
    await evil.start()
    evil.introduce(node)                 # Hello: the node learns the card and connects back
    evil.send(node.peer_id, Ping(2**64 - 1))
    evil.publish_sealed(room_id, epoch, key, Heads((SeqRange(evil.peer_id, 0, 2**64 - 1),), 1, 1))
    reply = await evil.wait_for(Pong)

``raw_envelope`` packs values the honest codec would refuse to encode (a seq near 2^64, a
float of 1e300, a wrong type), so the victim's decoder is tried as well as its logic.

``listeners`` are called with every frame received, and its envelope (None when it did not
decode): ``tests/net/hostile_agent.py`` reports them on stdout.

``TwinIdentity`` (issue 6, case 7) is the same key speaking as its *twin* id: the peer id with
the sign bit (byte 31, bit 7) flipped. Both ids map to one CURVE key, so the transport cannot
tell them apart; the twin also signs for its id, with the negated secret scalar.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack
from nacl.bindings import (
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_negate,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
)
from nacl.secret import SecretBox

from meshchat.config import PROTOCOL_VERSION, Limits
from meshchat.errors import ProtocolError
from meshchat.identity import Identity, fingerprint_of
from meshchat.protocol.codec import Codec, Envelope
from meshchat.protocol.messages import (
    ChatBatch,
    ChatLine,
    Heartbeat,
    Hello,
    JoinAccept,
    JoinRequest,
    PeerCard,
    Sealed,
    SeqRange,
    WireMessage,
)
from meshchat.room import unseal_key
from meshchat.transport.base import Incoming, Transport

W = TypeVar("W", bound=WireMessage)


def twin_of(peer_id: bytes) -> bytes:
    """The other encoding of the same Ed25519 point's CURVE key: the sign bit of x flipped
    (the point -A; its X25519 form is the same)."""
    return peer_id[:31] + bytes([peer_id[31] ^ 0x80])


class TwinIdentity(Identity):
    """``identity``'s key pair speaking as ``twin_of(identity.peer_id)``.

    The CURVE keys are the original ones (they are the twin's too). Signatures are real
    Ed25519 signatures for the twin id: the twin's public key is ``-A = (-a)B``, so signing
    with the negated scalar ``-a mod L`` (and a nonce from the seed's hash, as RFC 8032 does)
    verifies under it.
    """

    __slots__ = ("_prefix", "_scalar")

    def __init__(self, identity: Identity) -> None:
        super().__init__(identity.seed)
        digest = hashlib.sha512(identity.seed).digest()
        clamped = bytearray(digest[:32])
        clamped[0] &= 248
        clamped[31] &= 127
        clamped[31] |= 64
        scalar = crypto_core_ed25519_scalar_reduce(bytes(clamped) + bytes(32))
        self._scalar = crypto_core_ed25519_scalar_negate(scalar)
        self._prefix = digest[32:]
        self.peer_id = twin_of(identity.peer_id)
        self.fingerprint = fingerprint_of(self.peer_id)
        assert crypto_scalarmult_ed25519_base_noclamp(self._scalar) == self.peer_id

    def sign(self, data: bytes) -> bytes:
        r = crypto_core_ed25519_scalar_reduce(hashlib.sha512(self._prefix + data).digest())
        big_r = crypto_scalarmult_ed25519_base_noclamp(r)
        k = crypto_core_ed25519_scalar_reduce(
            hashlib.sha512(big_r + self.peer_id + data).digest())
        return big_r + crypto_core_ed25519_scalar_add(
            r, crypto_core_ed25519_scalar_mul(k, self._scalar))

TOPIC_PRESENCE = b"P"
TOPIC_ROOM = b"R"


class HostilePeer:
    """A peer with its own identity that sends whatever a test tells it to."""

    def __init__(self, transport: Transport, identity: Identity | None = None,
                 name: str = "mallory", limits: Limits | None = None) -> None:
        self.transport = transport
        self.identity = identity or Identity.generate()
        self.peer_id = self.identity.peer_id
        self.name = name
        self.codec = Codec(limits or Limits())
        self.received: list[tuple[Incoming, Envelope]] = []
        self.undecodable = 0
        self.listeners: list[Callable[[Incoming, Envelope | None], None]] = []
        self._changed = asyncio.Event()
        self._seq = 0
        self.router_port = 0
        self.pub_port = 0
        self.address = "mem"

    async def start(self, bind: list[str] | None = None, address: str = "mem") -> None:
        ports = await self.transport.start(self.identity, bind or ["127.0.0.1"], self._receive)
        self.router_port, self.pub_port = ports.router_port, ports.pub_port
        self.address = address
        for topic in (b"P", b"B", b"R"):
            self.transport.subscribe(topic)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.transport.close(0)

    # ------------------------------------------------------------------ receiving

    def _receive(self, inc: Incoming) -> None:
        try:
            env = self.codec.decode(inc.payload)
        except ProtocolError:
            self.undecodable += 1
            for listener in self.listeners:
                listener(inc, None)
            return
        self.received.append((inc, env))
        self._changed.set()
        for listener in self.listeners:
            listener(inc, env)

    def messages(self, cls: type[W]) -> list[W]:
        return [env.message for _, env in self.received if isinstance(env.message, cls)]

    async def wait_for(self, cls: type[W], predicate: Callable[[W], bool] = lambda m: True,
                       timeout: float = 3.0) -> W:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for _, env in self.received[seen:]:
                if isinstance(env.message, cls) and predicate(env.message):
                    return env.message
            seen = len(self.received)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"hostile peer: no {cls.__name__} within {timeout}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # ------------------------------------------------------------------ sending

    def card(self) -> PeerCard:
        return PeerCard(self.peer_id, self.name, (self.address,), self.router_port,
                        self.pub_port, 0)

    def connect(self, peer_id: bytes, router_port: int, pub_port: int,
                address: str = "mem") -> None:
        self.transport.connect_peer(peer_id, address, router_port, pub_port)

    def introduce(self, node: Any) -> None:
        """Connect to a ``Node`` and say Hello, so it learns our card and connects back."""
        address = node._me.addresses[0] if node._me.addresses else "mem"
        self.connect(node.peer_id, node._me.router_port, node._me.pub_port, address)
        self.send(node.peer_id, Hello(self.card(), time.time(), ""))

    def next_seq(self) -> int:
        """The next sequence number of our own stream (what ``envelope`` uses by default)."""
        self._seq += 1
        return self._seq

    def envelope(self, message: WireMessage, *, sender: bytes | None = None,
                 seq: int | None = None, sent_at: float | None = None) -> bytes:
        if seq is None:
            self._seq += 1
            seq = self._seq
        return self.codec.encode(Envelope(sender or self.peer_id, seq,
                                          time.time() if sent_at is None else sent_at, message))

    def send(self, to: bytes, message: WireMessage, **fields: Any) -> bool:
        return self.transport.send(to, self.envelope(message, **fields))

    def send_raw(self, to: bytes, frame: bytes) -> bool:
        return self.transport.send(to, frame)

    def publish(self, topic: bytes, message: WireMessage, **fields: Any) -> None:
        self.transport.publish(topic, self.envelope(message, **fields))

    def publish_raw(self, topic: bytes, frame: bytes) -> None:
        self.transport.publish(topic, frame)

    def sealed(self, room_id: bytes, epoch: int, key: bytes, inner: WireMessage | bytes,
               **fields: Any) -> Sealed:
        data = inner if isinstance(inner, bytes) else self.envelope(inner, **fields)
        return Sealed(room_id, epoch, bytes(SecretBox(key).encrypt(data)))

    def publish_sealed(self, room_id: bytes, epoch: int, key: bytes,
                       inner: WireMessage | bytes, **fields: Any) -> None:
        self.publish(TOPIC_ROOM + room_id, self.sealed(room_id, epoch, key, inner, **fields))

    def sign(self, record: object) -> bytes:
        return self.codec.sign_record(self.identity, record)

    def raw_envelope(self, tag: str, body: list[Any], *, sender: bytes | None = None,
                     seq: Any = 1, sent_at: Any = 0.0, version: Any = PROTOCOL_VERSION) -> bytes:
        """An envelope packed by hand: any value in any field, checked by nobody."""
        return bytes(msgpack.packb([version, tag, sender or self.peer_id, seq, sent_at, body],
                                   use_bin_type=True))

    # ------------------------------------------------------------------ as a room member

    async def join_room(self, node: Any, room_id: bytes, timeout: float = 3.0
                        ) -> tuple[bytes, int]:
        """Join ``node``'s room the honest way (JoinRequest → JoinAccept), to misbehave as a
        member afterwards: the room key and its epoch. Keep it alive with ``heartbeat``."""
        rid = int.from_bytes(os.urandom(4), "big")
        self.send(node.peer_id, JoinRequest(room_id, self.name, rid, b"", b"", b""))
        reply = await self.wait_for(JoinAccept, lambda m: m.request_id == rid, timeout)
        return unseal_key(self.identity, node.peer_id, reply.sealed_key), reply.key_epoch

    def heartbeat(self) -> None:
        """One presence heartbeat: a member that sends none is soon removed as vanished."""
        self.publish(TOPIC_PRESENCE, Heartbeat(self.card(), time.time(), "", (), ()))

    def batch(self, room_id: bytes, first: int, texts: list[str],
              author: Identity | None = None, after: tuple[SeqRange, ...] = ()) -> bytes:
        """A chat batch signed by ``author`` (default: us), numbered from ``first``, that
        claims to follow ``after``."""
        who = author or self.identity
        lines = tuple(ChatLine(time.time(), t) for t in texts)
        return self.codec.sign_record(who, ChatBatch(room_id, who.peer_id, first, lines, after))
