"""The node's edge: envelopes out, frames in, and what is pending between the two.

Out: every envelope gets the next number of its stream and this node's wall time; room traffic
is sealed with the room key (``publish_sealed``). Pending: each ping's nonce and each request's
id remember the one peer they went to, so only that peer's answer counts as solicited
(``Role.ASKED``). In: ``open`` decodes a frame strictly and attributes it to the peer the
transport authenticated; ``Gatekeeper.admit`` is the one call to the authority gate
(``meshchat.authority.Gate``). Whatever is refused is counted as ``dropped_<reason>`` in the
shared ``stats`` and goes no further.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from ..authority import Gate, Role
from ..clock import Clock
from ..config import Limits, Timings
from ..errors import NotInRoom, PeerNotFound, ProtocolError, Timeout
from ..identity import curve_public_of, is_valid_peer_id
from ..protocol.codec import Codec, Envelope, UnknownType
from ..protocol.messages import (
    BROADCAST_TYPES,
    DIRECT_TYPES,
    PRESENCE_TYPES,
    ROOM_INNER_TYPES,
    ROOM_OUTER_TYPES,
    CommandResult,
    JoinAccept,
    JoinChallenge,
    JoinRefusal,
    Ping,
    Pong,
    Sealed,
    WireMessage,
)
from ..transport.base import Incoming, Transport

__all__ = ["TOPIC_BROADCAST", "TOPIC_PRESENCE", "TOPIC_ROOM", "Frame", "Gatekeeper", "ReplyCache",
           "RoomRoles", "Wire", "room_topic"]

TOPIC_PRESENCE = b"P"
TOPIC_BROADCAST = b"B"
TOPIC_ROOM = b"R"
_RETRY_S = 0.05  # a request that cannot be sent yet (no route) is tried again this often


def room_topic(room_id: bytes) -> bytes:
    return TOPIC_ROOM + room_id


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame and whom it is from. ``socket``: 'direct', 'presence', 'broadcast' or
    'room' (a ``Sealed``; its topic is not checked yet)."""

    peer: bytes
    socket: str
    env: Envelope
    topic: bytes = b""
    address: str = ""
    charged: bool = False  # its rate token was drawn before decoding (``Wire.open``)


class ReplyCache:
    """The last answer this node gave each peer's request, to give again when the same
    request id comes back: the asker sends a request again when its answer is late
    (``Wire.request``), and the repeat must get the same answer, not a second decision (a
    second admission, a fresh challenge nonce). One entry per peer, at most ``max_peers``
    peers (the oldest goes first), each kept ``keep_s``."""

    def __init__(self, max_peers: int, keep_s: float) -> None:
        self._max_peers = max_peers
        self._keep_s = keep_s
        self._entries: OrderedDict[bytes, tuple[int, float, WireMessage]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, peer: bytes, request_id: int, now: float) -> WireMessage | None:
        """The answer given to ``peer``'s request ``request_id``, if it is recent."""
        entry = self._entries.get(peer)
        if entry is None or entry[0] != request_id or now - entry[1] > self._keep_s:
            return None
        return entry[2]

    def put(self, peer: bytes, request_id: int, reply: WireMessage, now: float) -> None:
        self._entries[peer] = (request_id, now, reply)
        self._entries.move_to_end(peer)
        while len(self._entries) > self._max_peers:
            self._entries.popitem(last=False)


class Wire:
    """Send, publish, ping and request; decode and gate what arrives."""

    def __init__(self, me: bytes, codec: Codec, transport: Transport, clock: Clock,
                 limits: Limits, stats: Counter[str], first_request_id: int = 0) -> None:
        self._me = me
        self._codec = codec
        self._transport = transport
        self._clock = clock
        self._limits = limits
        self._stats = stats
        self._seq: Counter[bytes] = Counter()
        # A random start (the node passes one): a restarted node does not repeat the ids of
        # its last run, which a host may still remember answers to (``ReplyCache``).
        self._request_ids = first_request_id
        self._futures: dict[int, asyncio.Future[WireMessage]] = {}
        self._future_peers: dict[int, bytes] = {}  # request id -> the peer it went to
        self._ping_peers: OrderedDict[int, bytes] = OrderedDict()  # nonce -> pinged peer
        self._pings: dict[int, asyncio.Future[float]] = {}
        # Answers that another part asked for (file chunks and sums): it says which.
        self.also_solicited: Callable[[bytes, WireMessage], bool] | None = None

    # ---------------------------------------------------------------- out

    def next_request_id(self) -> int:
        self._request_ids += 1
        return self._request_ids

    def envelope(self, stream: bytes, message: WireMessage, seq: int | None = None) -> bytes:
        if seq is None:
            self._seq[stream] += 1
            seq = self._seq[stream]
        return self._codec.encode(Envelope(self._me, seq, self._clock.time(), message))

    def publish(self, topic: bytes, message: WireMessage) -> None:
        self._transport.publish(topic, self.envelope(topic, message))

    def send(self, pid: bytes, message: WireMessage) -> bool:
        ok = self._transport.send(pid, self.envelope(b"D", message))
        if not ok:
            self._stats["send_failed"] += 1
        return ok

    def publish_sealed(self, room_id: bytes, epoch: int, key: bytes, message: WireMessage,
                       seq: int | None = None) -> None:
        """``message`` to the room, sealed with the room key of ``epoch``."""
        topic = room_topic(room_id)
        box = SecretBox(key).encrypt(self.envelope(topic, message, seq))
        self._transport.publish(topic, self.envelope(b"S", Sealed(room_id, epoch, bytes(box))))

    # ---------------------------------------------------------------- pings and requests

    def send_ping(self, pid: bytes, nonce: int | None = None) -> bool:
        """A Ping whose Pong only ``pid`` may answer (the authority table's "asked")."""
        if nonce is None:
            nonce = self.next_request_id()
        self._ping_peers[nonce] = pid
        while len(self._ping_peers) > self._limits.max_rate_entries:
            self._ping_peers.popitem(last=False)
        return self.send(pid, Ping(nonce))

    async def ping(self, pid: bytes, label: str, timeout: float) -> float:
        """Round-trip time to ``pid`` (called ``label`` in errors), in seconds."""
        nonce = self.next_request_id()
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[nonce] = fut
        started = self._clock.monotonic()
        try:
            if not self.send_ping(pid, nonce):
                raise PeerNotFound(f"{label} cannot be reached")
            try:
                async with asyncio.timeout(timeout):
                    answered = await fut
            except TimeoutError as exc:
                raise Timeout(f"no answer from {label}") from exc
            return answered - started
        finally:
            self._pings.pop(nonce, None)

    def take_pong(self, pong: Pong) -> None:
        self._ping_peers.pop(pong.nonce, None)
        ping = self._pings.get(pong.nonce)
        if ping is not None and not ping.done():
            ping.set_result(self._clock.monotonic())

    def _expect(self, rid: int, pid: bytes) -> asyncio.Future[WireMessage]:
        fut: asyncio.Future[WireMessage] = asyncio.get_running_loop().create_future()
        self._futures[rid] = fut
        self._future_peers[rid] = pid
        return fut

    def _forget(self, rid: int) -> None:
        self._futures.pop(rid, None)
        self._future_peers.pop(rid, None)

    async def request(self, pid: bytes, message: WireMessage, rid: int, timeout: float,
                      resend_s: float | None = None) -> WireMessage:
        """Send ``message`` (request id ``rid``), retrying while there is no route, and wait
        for the answer; ``Timeout`` when none comes.

        With ``resend_s``, an unanswered request goes again that often, under the same id: a
        connection that dies just as a partition heals takes what was written into it along,
        and a request lost that way would otherwise cost the whole ``timeout``. The answering
        side repeats its answer to a repeated id (``ReplyCache``) instead of deciding again."""
        fut = self._expect(rid, pid)
        try:
            deadline = self._clock.monotonic() + timeout
            sent = self.send(pid, message)
            while not sent and not fut.done() and self._clock.monotonic() < deadline:
                await self._clock.sleep(_RETRY_S)
                sent = self.send(pid, message)
            if fut.done():  # refused before it could even be sent (the peer denies our key)
                return fut.result()
            if not sent:
                raise Timeout("the host cannot be reached")
            while True:
                left = deadline - self._clock.monotonic()
                if left <= 0:
                    raise Timeout("the host did not answer")
                wait = left if resend_s is None else min(left, resend_s)
                try:
                    async with asyncio.timeout(wait):
                        return await asyncio.shield(fut)
                except TimeoutError:
                    if fut.done():
                        return fut.result()
                    if self._clock.monotonic() < deadline and resend_s is not None:
                        self._stats["request_resent"] += 1
                        self.send(pid, message)
        finally:
            self._forget(rid)

    async def request_once(self, pid: bytes, message: WireMessage, rid: int, timeout: float
                           ) -> WireMessage:
        """Send once and wait for the answer; ``TimeoutError`` when none comes."""
        fut = self._expect(rid, pid)
        try:
            self.send(pid, message)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._forget(rid)

    def take_reply(self, reply: JoinChallenge | JoinAccept | JoinRefusal | CommandResult
                   ) -> None:
        fut = self._futures.get(reply.request_id)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def fail_requests_to(self, pid: bytes, exc: Exception) -> None:
        """Every request waiting on ``pid`` fails with ``exc`` at once."""
        for rid, target in list(self._future_peers.items()):
            fut = self._futures.get(rid)
            if target == pid and fut is not None and not fut.done():
                fut.set_exception(exc)

    def close(self) -> None:
        pending: list[asyncio.Future[WireMessage] | asyncio.Future[float]] = [
            *self._futures.values(), *self._pings.values()]
        for fut in pending:
            if not fut.done():
                fut.set_exception(NotInRoom("the node is closing"))

    # ---------------------------------------------------------------- in

    def decode(self, payload: bytes, allowed: tuple[type[WireMessage], ...],
               peer: bytes | None) -> Envelope | None:
        try:
            env = self._codec.decode(payload, allowed)
        except UnknownType:
            self._stats["dropped_unknown_type"] += 1
            return None
        except ProtocolError:
            self._stats["dropped_malformed"] += 1
            return None
        if peer is not None and env.sender != peer:
            self._stats["dropped_spoofed"] += 1
            return None
        return env

    def open(self, inc: Incoming,
             charge: Callable[[bytes, type[WireMessage]], bool] | None = None) -> Frame | None:
        """The frame decoded for its socket and attributed to its sender, or None (counted).

        ``charge(peer, cls)`` draws the peer's rate token for the type the frame says it
        carries *before* the frame is decoded, so a flood of any type costs a peek, not a
        decode: refused frames count as ``dropped_rate``."""
        peer = inc.peer_id
        charged = False
        if charge is not None and peer:
            cls = self._codec.peek_type(inc.payload)
            if cls is not None:
                if not charge(peer, cls):
                    self._stats["dropped_rate"] += 1
                    return None
                charged = True
        if inc.kind == "direct":
            if peer:
                env = self.decode(inc.payload, DIRECT_TYPES, peer)
            else:
                # A key the transport cannot name yet (a first Hello): the envelope names the
                # sender, who must own the CURVE key that authenticated the connection.
                env = self.decode(inc.payload, DIRECT_TYPES, None)
                if env is None:
                    return None
                if not is_valid_peer_id(env.sender) or \
                        curve_public_of(env.sender) != inc.curve_key:
                    self._stats["dropped_spoofed"] += 1
                    return None
                peer = env.sender
            return None if env is None else Frame(peer, "direct", env, b"", inc.peer_address,
                                                  charged)
        topic = inc.topic
        if topic == TOPIC_PRESENCE:
            socket, allowed = "presence", PRESENCE_TYPES
        elif topic == TOPIC_BROADCAST:
            socket, allowed = "broadcast", BROADCAST_TYPES
        elif topic.startswith(TOPIC_ROOM):
            socket, allowed = "room", ROOM_OUTER_TYPES
        else:
            self._stats["dropped_topic"] += 1
            return None
        env = self.decode(inc.payload, allowed, peer)
        return None if env is None else Frame(peer, socket, env, topic, charged=charged)

    def unseal(self, peer: bytes, sealed: Sealed, key: bytes) -> Envelope | None:
        """The envelope inside a room frame, from ``peer``; None if it does not open."""
        try:
            inner = SecretBox(key).decrypt(sealed.box)
        except CryptoError:
            self._stats["dropped_undecryptable"] += 1
            return None
        return self.decode(inner, ROOM_INNER_TYPES, peer)

    def solicited(self, peer: bytes, m: WireMessage) -> bool:
        """``m`` answers a ping or request of ours that went to ``peer``."""
        match m:
            case Pong(nonce=nonce):
                return self._ping_peers.get(nonce) == peer
            case JoinChallenge() | JoinAccept() | JoinRefusal() | CommandResult():
                return self._future_peers.get(m.request_id) == peer
        if self.also_solicited is not None:
            return self.also_solicited(peer, m)
        return False


class RoomRoles(Protocol):
    def roles(self, peer: bytes, m: WireMessage, now: float, window_s: float) -> Role: ...


class Gatekeeper:
    """The one gate call: what a peer is to us for a message (``Role``: known to us, what it
    is in the room the message is about, whether we asked it), then ``Gate.admit``, the
    authority table and the per-peer rate limits."""

    def __init__(self, gate: Gate, wire: Wire, is_known: Callable[[bytes], bool],
                 room_of: Callable[[bytes], RoomRoles | None], clock: Clock, timings: Timings,
                 stats: Counter[str]) -> None:
        self._gate = gate
        self._wire = wire
        self._is_known = is_known
        self._room_of = room_of
        self._clock = clock
        self._timings = timings
        self._stats = stats

    def roles(self, peer: bytes, m: WireMessage, room: RoomRoles | None = None) -> Role:
        roles = Role.ANYONE
        if self._is_known(peer):
            roles |= Role.KNOWN
        if room is None:
            room_id = getattr(m, "room_id", None)
            room = self._room_of(room_id) if isinstance(room_id, bytes) else None
        now = self._clock.monotonic()
        if room is not None:
            roles |= room.roles(peer, m, now, self._timings.request_timeout_s)
        if self._wire.solicited(peer, m):
            roles |= Role.ASKED
        return roles

    def charge(self, peer: bytes, cls: type[WireMessage]) -> bool:
        """Draw ``peer``'s rate token for a frame of ``cls`` before it is decoded."""
        return self._gate.charge(peer, cls, self._clock.monotonic())

    def admit(self, peer: bytes, m: WireMessage, socket: str, room: RoomRoles | None = None,
              charged: bool = False) -> bool:
        """May ``peer`` send ``m`` on ``socket`` (about ``room``, default the one ``m``
        names)? A refusal is counted as ``dropped_<reason>``. ``charged``: the rate token
        was drawn already (``charge``)."""
        refusal = self._gate.admit(peer, m, socket, self.roles(peer, m, room),
                                   self._clock.monotonic(), charged)
        if refusal is None:
            return True
        self._stats["dropped_" + refusal.reason] += 1
        return False
