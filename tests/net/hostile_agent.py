"""A hostile peer over real sockets: ``tests.hostile.HostilePeer`` on ``ZmqTransport``, driven by
JSON lines, for the namespace lab.

    python -m tests.net.hostile_agent [--name mallory] [--bind 10.x.0.3] [--seed HEX]

It makes a fresh identity (or the one of ``--seed``), binds a CURVE ROUTER and PUB like any
node, subscribes to every topic, and then does exactly what it is told: it speaks the wire
format perfectly, with any value in any field, or sends bytes that are no frame at all. Tests
use it through ``helpers.Hostile`` (start it with ``Hostile.start(lab_host)``).

Output (one JSON object per line, see ``agent_io`` for the replies)::

    {"ev": "ready", "peer_id": HEX, "fingerprint": ..., "address": ..., "router_port": N,
     "pub_port": N}
    {"ev": "reply", "id": 3, "ok": true, "value": ...}
    {"ev": "received", "kind": "direct"|"pub", "from": HEX, "curve_key": HEX, "topic": HEX,
     "size": N, "type": "Pong", "tag": "pong", "sender": HEX, "seq": N, "sent_at": T,
     "fields": {"nonce": 7}, "opened": {...}, "inner": {...}}
    {"ev": "received", ..., "type": null, "undecodable": true}
    {"ev": "closed"}

``from`` is the peer the transport authenticated (CURVE); empty, with ``curve_key`` set, for a
direct frame from a key it cannot name yet. ``fields`` are the message's fields (bytes as hex,
records as objects with ``type``). ``opened`` holds what the agent could open in them: signed
records peeked without a check (``state`` → RoomState, ``batch`` → ChatBatch, ``history`` →
[ChatBatch]) and room keys sealed to it (``sealed_key`` → ``{"key": HEX}``; such a key is also
added to its key ring). ``inner`` is the decrypted envelope of a ``Sealed`` frame whose room
key (room id, epoch) is in the key ring (same keys as above, without ``kind``/``from``).

Commands (``to`` is a peer id in hex; default: the peer of the last ``connect``):

==============  ======================================================  ======================
cmd             arguments                                               value
==============  ======================================================  ======================
connect         card="IP:PORT" (fetch the card like ``--peer``), or     the target's card
                peer_id, address, router_port, pub_port; hello=true
                (send our Hello, so the target connects back and
                receives what we publish)
hello           to, fields={} (override Hello fields: card, ...)        {sent, size}
send            type, fields={}, to, raw=false, sender, seq, sent_at,   {sent, size}
                version
send_many       type, fields=[{...}, ...] (one message each), to, raw,  {sent: N, size}
                sender, sent_at (a flood in one command)
send_envelope   tag, body=[...], to, sender, seq=1, sent_at=0.0,        {sent, size}
                version (nothing checked: any tag, any body)
send_raw        frame (bytes), to                                       {sent, size}
publish         type, fields={}, topic ("P", "B", "R"+room_id, or       {size}
                topic_hex), raw, sender, seq, sent_at, version
publish_raw     frame, topic/room_id/topic_hex                          {size}
publish_sealed  room_id, epoch, key (default: the key ring's), and      {size}
                type + fields (+ raw, sender, seq, sent_at) or inner
                (bytes: the plaintext)
publish_junk    room_id, count, size=200: Sealed frames under random    {size}
                epochs (nobody's key), random boxes
heartbeat       every (seconds; 0 stops; null: once), fields={}         null
add_key         room_id, epoch, key                                     null
keys                                                                    [{room_id, epoch,
                                                                        key}]
encode          type, fields, raw=false (the frame it would send)       HEX
sign            type (a record), fields                                 HEX (a signed blob)
mute / unmute   types=[...] (type names not reported; [] = all)         null
twin            on=true: speak (sender, card, signatures) as the twin   {peer_id, fingerprint}
                id (``tests.hostile.TwinIdentity``, same CURVE key);
                on=false: as ourselves again
stats                                                                   counters
quit                                                                    null, then "closed"
==============  ======================================================  ======================

``type`` is a message class name or wire tag (``Ping`` or ``ping``), records by class name
(``SeqRange``). ``fields`` is an object by field name (or a list in field order); nested
records are objects (or lists) too, tuples are lists, ``X | None`` takes null. Checked by the
honest codec unless ``raw``: then every value goes on the wire as given (a seq of 2**64 - 1
in a field the codec caps lower, a float of 1e300, a string where an int belongs; but msgpack
cannot pack an int above 2**64 - 1). Bytes may be given as:

- ``"HEX"`` (a string of hex digits; in raw mode a string that is not hex stays a string),
- ``{"hex": HEX}``, ``{"utf8": TEXT}``, ``{"random": N}`` (N random bytes),
- ``{"record": {"type": T, "fields": F}}`` (an encoded record),
- ``{"signed": {"type": T, "fields": F}}`` (a record signed by this agent's key),
- ``{"sealed_key": {"key": HEX, "to": PEER_ID_HEX}}`` (a room key sealed to a member, as a
  host does it).

The same forms work inside ``send_envelope``'s ``body``, where plain strings stay strings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import time
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from meshchat import room as room_rules
from meshchat.discovery.static import fetch_card_from
from meshchat.errors import MeshchatError, ProtocolError
from meshchat.identity import Identity
from meshchat.protocol import messages
from meshchat.protocol.codec import Envelope
from meshchat.protocol.messages import Hello, Sealed, WireMessage
from meshchat.transport.base import Incoming
from meshchat.transport.zmq import ZmqTransport

from ..hostile import HostilePeer, TwinIdentity
from . import agent_io
from .agent_io import Refused, emit, jsonable

TOPIC_OF_TYPE: dict[str, bytes] = {
    **{cls.__name__: b"P" for cls in messages.PRESENCE_TYPES},
    **{cls.__name__: b"B" for cls in messages.BROADCAST_TYPES},
}
SIGNED_FIELDS: dict[str, type] = {"state": messages.RoomState, "batch": messages.ChatBatch}


def _classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for cls in (*messages.ALL_TYPES, *messages.RECORD_TYPES):
        found[cls.__name__] = cls
        tag = getattr(cls, "TYPE", "")
        if tag:
            found.setdefault(tag, cls)
    return found


CLASSES = _classes()


def class_of(name: str) -> type:
    cls = CLASSES.get(name)
    if cls is None:
        raise Refused(f"no message or record type {name!r} (known: {sorted(CLASSES)})")
    return cls


def message_class(name: str) -> type[WireMessage]:
    cls = class_of(name)
    if not issubclass(cls, WireMessage):
        raise Refused(f"{name} is a record, not a message")
    return cls


def hex_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise Refused(f"{what}: want hex, got {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise Refused(f"{what}: not hex: {value!r}") from None


class Builder:
    """JSON values → message objects and wire values (see the module docstring)."""

    def __init__(self, peer: HostilePeer) -> None:
        self.peer = peer

    def special_bytes(self, value: Mapping[str, Any]) -> bytes | None:
        """The bytes a special object stands for, or None if it is no such object."""
        if len(value) != 1:
            return None
        [(key, arg)] = value.items()
        match key:
            case "hex":
                return hex_bytes(arg, "hex")
            case "utf8":
                return str(arg).encode()
            case "random":
                return os.urandom(int(arg))
            case "record":
                return self.peer.codec.encode_record(self.record(arg["type"], arg["fields"]))
            case "signed":
                return self.peer.sign(self.record(arg["type"], arg["fields"]))
            case "sealed_key":
                to = hex_bytes(arg["to"], "sealed_key.to")
                return room_rules.seal_key(self.peer.identity, to, hex_bytes(arg["key"], "key"))
        return None

    def to_bytes(self, value: Any, raw: bool) -> Any:
        if isinstance(value, Mapping):
            found = self.special_bytes(value)
            if found is not None:
                return found
        elif isinstance(value, str):
            try:
                return bytes.fromhex(value)
            except ValueError:
                if not raw:
                    raise Refused(f"not hex: {value!r}") from None
        elif isinstance(value, bytes):
            return value
        if raw:
            return value
        raise Refused(f"want bytes (hex or a special object), got {value!r}")

    def convert(self, hint: Any, value: Any, raw: bool) -> Any:
        """``value`` (JSON) as the Python value of a field typed ``hint``; in raw mode a value
        that does not fit stays as it is."""
        origin = typing.get_origin(hint)
        if hint is bytes:
            return self.to_bytes(value, raw)
        if hint is float and type(value) is int:
            return float(value)
        if hint in (int, float, str, bool):
            return value
        if origin is tuple:
            if not isinstance(value, list | tuple):
                return value if raw else self._refuse(hint, value)
            item = typing.get_args(hint)[0]
            return tuple(self.convert(item, v, raw) for v in value)
        if origin in (typing.Union, types.UnionType):
            if value is None:
                return None
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            return self.convert(inner[0], value, raw)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if isinstance(value, Mapping | list):
                return self.build(hint, value, raw)
            return value if raw else self._refuse(hint, value)
        return value

    @staticmethod
    def _refuse(hint: Any, value: Any) -> Any:
        raise Refused(f"want {hint}, got {value!r}")

    def build(self, cls: type, fields: Mapping[str, Any] | list[Any], raw: bool) -> Any:
        """An instance of the dataclass ``cls`` from fields by name (or a list in order)."""
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        if isinstance(fields, list):
            if len(fields) != len(names) and not raw:
                raise Refused(f"{cls.__name__} has {len(names)} fields, got {len(fields)}")
            given = dict(zip(names, fields, strict=False))
        else:
            unknown = set(fields) - set(names)
            if unknown:
                raise Refused(f"{cls.__name__} has no field {sorted(unknown)} (it has {names})")
            given = dict(fields)
        optional = {f.name for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING
                    or f.default_factory is not dataclasses.MISSING}
        missing = [n for n in names if n not in given and n not in optional]
        if missing:
            raise Refused(f"{cls.__name__}: missing {missing}")
        return cls(**{n: self.convert(hints[n], given[n], raw) for n in names if n in given})

    def record(self, name: str, fields: Mapping[str, Any] | list[Any]) -> Any:
        return self.build(class_of(name), fields, raw=False)

    def message(self, name: str, fields: Mapping[str, Any] | list[Any] | None,
                raw: bool) -> WireMessage:
        message: WireMessage = self.build(message_class(name), fields or {}, raw)
        return message

    def body_value(self, value: Any) -> Any:
        """A value of a hand-made body: special objects become bytes, strings stay."""
        if isinstance(value, Mapping):
            found = self.special_bytes(value)
            if found is not None:
                return found
            return {k: self.body_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.body_value(v) for v in value]
        return value


def wire_value(value: Any) -> Any:
    """A message or record as the msgpack value the codec would make of it: arrays in field
    order (what ``HostilePeer.raw_envelope`` packs, with no check at all)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [wire_value(getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, tuple | list):
        return [wire_value(v) for v in value]
    return value


class HostileAgent:
    """The commands (``cmd_<name>``) of one ``HostilePeer`` on a ``ZmqTransport``."""

    def __init__(self, peer: HostilePeer) -> None:
        self.peer = peer
        self.builder = Builder(peer)
        self.target: bytes | None = None
        self.keys: dict[tuple[bytes, int], bytes] = {}
        self.muted: set[str] = set()
        self.reported = 0
        self.heartbeat_task: asyncio.Task[None] | None = None
        self.own_identity = peer.identity
        peer.listeners.append(self.report)

    # -- receiving ---------------------------------------------------------------------------

    def report(self, inc: Incoming, env: Envelope | None) -> None:
        head: dict[str, Any] = {
            "ev": "received", "kind": inc.kind, "from": inc.peer_id.hex(),
            "curve_key": inc.curve_key.hex(), "topic": inc.topic.hex(),
            "size": len(inc.payload),
        }
        if env is None:
            if "undecodable" not in self.muted:
                emit({**head, "type": None, "undecodable": True})
            return
        if type(env.message).__name__ in self.muted:
            return
        self.reported += 1
        emit({**head, **self.describe(env)})

    def describe(self, env: Envelope) -> dict[str, Any]:
        message = env.message
        out: dict[str, Any] = {
            "type": type(message).__name__, "tag": message.TYPE, "sender": env.sender.hex(),
            "seq": env.seq, "sent_at": env.sent_at, "fields": self.fields_of(message),
        }
        opened = self.open(env.sender, message)
        if opened:
            out["opened"] = opened
        if isinstance(message, Sealed):
            inner = self.unseal(message)
            if inner is not None:
                out["inner"] = inner
        return out

    @staticmethod
    def fields_of(message: object) -> dict[str, Any]:
        value: dict[str, Any] = jsonable(message)
        value.pop("type", None)
        return value

    def open(self, sender: bytes, message: WireMessage) -> dict[str, Any]:
        """What can be read inside ``message``: signed records, room keys sealed to us."""
        opened: dict[str, Any] = {}
        codec = self.peer.codec
        for name, cls in SIGNED_FIELDS.items():
            blob = getattr(message, name, None)
            if isinstance(blob, bytes):
                with contextlib.suppress(ProtocolError, ValueError, TypeError):
                    opened[name] = jsonable(codec.peek_signed(blob, cls))
        history = getattr(message, "history", None)
        if isinstance(history, tuple):
            batches = []
            for blob in history:
                with contextlib.suppress(ProtocolError, ValueError, TypeError):
                    batches.append(jsonable(codec.peek_signed(blob, messages.ChatBatch)))
            opened["history"] = batches
        sealed_key = getattr(message, "sealed_key", None)
        room_id = getattr(message, "room_id", None)
        epoch = getattr(message, "key_epoch", getattr(message, "epoch", None))
        if isinstance(sealed_key, bytes) and sealed_key:
            try:
                key = room_rules.unseal_key(self.peer.identity, sender, sealed_key)
            except (MeshchatError, CryptoError, ValueError):
                opened["sealed_key"] = None
            else:
                opened["sealed_key"] = {"key": key.hex()}
                if isinstance(room_id, bytes) and isinstance(epoch, int):
                    self.keys[(room_id, epoch)] = key
        return opened

    def unseal(self, sealed: Sealed) -> dict[str, Any] | None:
        key = self.keys.get((sealed.room_id, sealed.epoch))
        if key is None:
            return None
        try:
            plain = SecretBox(key).decrypt(sealed.box)
            env = self.peer.codec.decode(plain, messages.ROOM_INNER_TYPES)
        except (CryptoError, ProtocolError, ValueError):
            return {"type": None, "undecodable": True}
        return self.describe(env)

    # -- helpers -----------------------------------------------------------------------------

    def to(self, to: str | None) -> bytes:
        if to is not None:
            return hex_bytes(to, "to")
        if self.target is None:
            raise Refused("no target: connect first, or give to=PEER_ID_HEX")
        return self.target

    def envelope(self, message: WireMessage, raw: bool, sender: str | None, seq: int | None,
                 sent_at: float | None, version: Any) -> bytes:
        sender_id = hex_bytes(sender, "sender") if sender is not None else None
        if raw or version is not None:
            seq_value = seq if seq is not None else self.peer.next_seq()
            return self.peer.raw_envelope(
                message.TYPE, wire_value(message), sender=sender_id, seq=seq_value,
                sent_at=time.time() if sent_at is None else sent_at,
                **({} if version is None else {"version": version}))
        try:
            return self.peer.envelope(message, sender=sender_id, seq=seq, sent_at=sent_at)
        except (ValueError, TypeError) as exc:
            raise Refused(f"the codec refuses it ({exc}); send it with raw=true") from None

    def topic(self, topic: str | None, room_id: str | None, topic_hex: str | None,
              type_name: str | None = None) -> bytes:
        if topic_hex is not None:
            return hex_bytes(topic_hex, "topic_hex")
        if room_id is not None:
            return b"R" + hex_bytes(room_id, "room_id")
        if topic is not None:
            return topic.encode()
        if type_name is not None:
            cls = message_class(type_name)
            if cls.__name__ in TOPIC_OF_TYPE:
                return TOPIC_OF_TYPE[cls.__name__]
        raise Refused("which topic? give topic ('P', 'B'), room_id or topic_hex")

    def card(self) -> dict[str, Any]:
        """Our card as ``fields`` JSON (what ``Hello`` and ``Heartbeat`` carry)."""
        card: dict[str, Any] = jsonable(self.peer.card())
        card.pop("type")
        return card

    # -- commands ----------------------------------------------------------------------------

    async def cmd_connect(self, card: str | None = None, peer_id: str | None = None,
                          address: str | None = None, router_port: int | None = None,
                          pub_port: int | None = None, hello: bool = True) -> dict[str, Any]:
        if card is not None:
            host, _, port = card.rpartition(":")
            found, reached = await fetch_card_from(host, int(port), 5.0)
            target, where = found.peer_id, reached
            ports = (found.router_port, found.pub_port)
            value: dict[str, Any] = {**jsonable(found), "address": reached}
        else:
            if peer_id is None or address is None or router_port is None or pub_port is None:
                raise Refused("connect: give card, or peer_id, address, router_port, pub_port")
            target, where, ports = hex_bytes(peer_id, "peer_id"), address, (router_port, pub_port)
            value = {"peer_id": peer_id, "address": address, "router_port": router_port,
                     "pub_port": pub_port}
        self.peer.connect(target, ports[0], ports[1], where)
        self.target = target
        if hello:
            self.peer.send(target, Hello(self.peer.card(), time.time(), ""))
        return value

    async def cmd_hello(self, to: str | None = None,
                        fields: dict[str, Any] | None = None) -> dict[str, Any]:
        base = {"card": self.card(), "started_at": time.time(), "color": ""}
        message = self.builder.message("Hello", {**base, **(fields or {})}, raw=False)
        frame = self.envelope(message, False, None, None, None, None)
        return {"sent": self.peer.send_raw(self.to(to), frame), "size": len(frame)}

    async def cmd_send(self, type: str, fields: dict[str, Any] | list[Any] | None = None,
                       to: str | None = None, raw: bool = False, sender: str | None = None,
                       seq: int | None = None, sent_at: float | None = None,
                       version: Any = None) -> dict[str, Any]:
        message = self.builder.message(type, fields, raw)
        frame = self.envelope(message, raw, sender, seq, sent_at, version)
        return {"sent": self.peer.send_raw(self.to(to), frame), "size": len(frame)}

    async def cmd_send_many(self, type: str, fields: list[Any], to: str | None = None,
                            raw: bool = False, sender: str | None = None,
                            sent_at: float | None = None) -> dict[str, Any]:
        target = self.to(to)
        frames = [self.envelope(self.builder.message(type, f, raw), raw, sender, None, sent_at,
                                None) for f in fields]
        sent = sum(self.peer.send_raw(target, frame) for frame in frames)
        return {"sent": sent, "size": sum(len(f) for f in frames)}

    async def cmd_publish_junk(self, room_id: str, count: int, size: int = 200
                               ) -> dict[str, Any]:
        room = hex_bytes(room_id, "room_id")
        total = 0
        for _ in range(count):
            epoch = int.from_bytes(os.urandom(4), "big") | 1
            frame = self.envelope(Sealed(room, epoch, os.urandom(size)), False, None, None,
                                  None, None)
            self.peer.publish_raw(b"R" + room, frame)
            total += len(frame)
        return {"size": total}

    async def cmd_send_envelope(self, tag: str, body: list[Any] | None = None,
                                to: str | None = None, sender: str | None = None,
                                seq: Any = 1, sent_at: Any = 0.0,
                                version: Any = None) -> dict[str, Any]:
        sender_id = hex_bytes(sender, "sender") if sender is not None else None
        frame = self.peer.raw_envelope(
            tag, self.builder.body_value(body or []), sender=sender_id, seq=seq,
            sent_at=sent_at, **({} if version is None else {"version": version}))
        return {"sent": self.peer.send_raw(self.to(to), frame), "size": len(frame)}

    async def cmd_send_raw(self, frame: Any, to: str | None = None) -> dict[str, Any]:
        data = self.builder.to_bytes(frame, raw=False)
        return {"sent": self.peer.send_raw(self.to(to), data), "size": len(data)}

    async def cmd_publish(self, type: str, fields: dict[str, Any] | list[Any] | None = None,
                          topic: str | None = None, room_id: str | None = None,
                          topic_hex: str | None = None, raw: bool = False,
                          sender: str | None = None, seq: int | None = None,
                          sent_at: float | None = None, version: Any = None) -> dict[str, Any]:
        message = self.builder.message(type, fields, raw)
        frame = self.envelope(message, raw, sender, seq, sent_at, version)
        self.peer.publish_raw(self.topic(topic, room_id, topic_hex, type), frame)
        return {"size": len(frame)}

    async def cmd_publish_raw(self, frame: Any, topic: str | None = None,
                              room_id: str | None = None,
                              topic_hex: str | None = None) -> dict[str, Any]:
        data = self.builder.to_bytes(frame, raw=False)
        self.peer.publish_raw(self.topic(topic, room_id, topic_hex), data)
        return {"size": len(data)}

    async def cmd_publish_sealed(self, room_id: str, epoch: int, key: str | None = None,
                                 type: str | None = None,
                                 fields: dict[str, Any] | list[Any] | None = None,
                                 inner: Any = None, raw: bool = False,
                                 sender: str | None = None, seq: int | None = None,
                                 sent_at: float | None = None) -> dict[str, Any]:
        room = hex_bytes(room_id, "room_id")
        if key is not None:
            secret = hex_bytes(key, "key")
        elif (room, epoch) in self.keys:
            secret = self.keys[(room, epoch)]
        else:
            raise Refused(f"no key for room {room_id} epoch {epoch}: give key=HEX")
        if inner is not None:
            plain = self.builder.to_bytes(inner, raw=False)
        elif type is not None:
            message = self.builder.message(type, fields, raw)
            plain = self.envelope(message, raw, sender, seq, sent_at, None)
        else:
            raise Refused("publish_sealed: give type (+ fields) or inner")
        sealed = self.peer.sealed(room, epoch, secret, plain)
        frame = self.envelope(sealed, False, None, None, None, None)
        self.peer.publish_raw(b"R" + room, frame)
        return {"size": len(frame)}

    async def cmd_heartbeat(self, every: float | None = None,
                            fields: dict[str, Any] | None = None) -> None:
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()
            self.heartbeat_task = None
        base: dict[str, Any] = {"card": self.card(), "started_at": time.time(), "color": "",
                                "hosted": [], "known": []}
        message = self.builder.message("Heartbeat", {**base, **(fields or {})}, raw=False)
        if every is None:
            self.peer.publish(b"P", message)
            return
        if every <= 0:
            return

        async def beat() -> None:
            while True:
                self.peer.publish(b"P", message)
                await asyncio.sleep(every)

        self.heartbeat_task = asyncio.get_running_loop().create_task(beat())

    async def cmd_add_key(self, room_id: str, epoch: int, key: str) -> None:
        self.keys[(hex_bytes(room_id, "room_id"), epoch)] = hex_bytes(key, "key")

    async def cmd_keys(self) -> list[dict[str, Any]]:
        return [{"room_id": r.hex(), "epoch": e, "key": k.hex()}
                for (r, e), k in self.keys.items()]

    async def cmd_encode(self, type: str, fields: dict[str, Any] | list[Any] | None = None,
                         raw: bool = False) -> str:
        message = self.builder.message(type, fields, raw)
        return self.envelope(message, raw, None, None, None, None).hex()

    async def cmd_sign(self, type: str, fields: dict[str, Any] | list[Any]) -> str:
        return self.peer.sign(self.builder.build(class_of(type), fields, raw=False)).hex()

    async def cmd_mute(self, types: list[str]) -> None:
        self.muted.update(class_of(t).__name__ if t != "undecodable" else t for t in types)

    async def cmd_unmute(self, types: list[str] | None = None) -> None:
        if not types:
            self.muted.clear()
        else:
            self.muted.difference_update(types)

    async def cmd_twin(self, on: bool = True) -> dict[str, Any]:
        identity = TwinIdentity(self.own_identity) if on else self.own_identity
        self.peer.identity = identity
        self.peer.peer_id = identity.peer_id
        return {"peer_id": identity.peer_id.hex(), "fingerprint": identity.fingerprint}

    async def cmd_stats(self) -> dict[str, Any]:
        stats = self.peer.transport.stats
        return {"received": len(self.peer.received), "undecodable": self.peer.undecodable,
                "reported": self.reported, "transport": jsonable(stats)}

    async def cmd_quit(self) -> None:
        return None

    async def close(self) -> None:
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat_task


async def serve(args: argparse.Namespace) -> None:
    queue = agent_io.start_reading(asyncio.get_running_loop())
    identity = Identity(bytes.fromhex(args.seed)) if args.seed else Identity.generate()
    peer = HostilePeer(ZmqTransport(), identity, name=args.name)
    await peer.start([args.bind], address=args.bind)
    agent = HostileAgent(peer)
    emit({"ev": "ready", "peer_id": peer.peer_id.hex(), "fingerprint": identity.fingerprint,
          "name": args.name, "address": args.bind, "router_port": peer.router_port,
          "pub_port": peer.pub_port})
    try:
        while (command := await queue.get()) is not None:
            quitting = command.get("cmd") == "quit"
            await agent_io.run_command(agent, command)
            if quitting:
                break
    finally:
        await agent.close()
        await peer.close()
    emit({"ev": "closed"})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="a hostile meshchat peer for the namespace lab")
    ap.add_argument("--name", default="mallory", help="the name in its card and Hello")
    ap.add_argument("--bind", default="127.0.0.1", help="the address to bind and announce")
    ap.add_argument("--seed", default=None, help="identity seed (64 hex digits); default: new")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
