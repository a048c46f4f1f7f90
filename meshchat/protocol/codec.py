"""Envelopes and records ⇄ bytes: strict, bounded msgpack. Pure: no sockets, clocks or asyncio.

The wire format is documented in ``docs/wire.md`` and in ``meshchat.protocol``'s docstring.
The schema of every message and record class (``schema``) is read once, at import, from its
type hints; each ``Codec`` compiles it with its ``Limits`` into one converter per field, so the
hot path does no reflection.

``decode`` raises only ``ProtocolError`` (``UnknownType`` for a well-formed envelope with an
unknown tag) and counts each reason in ``Codec.stats``. ``encode`` validates with the same
rules and raises ``ValueError``/``TypeError``: sending what a peer would drop is a local bug.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from ..config import PROTOCOL_VERSION, Limits
from ..errors import ProtocolError
from ..identity import PEER_ID_BYTES, SIGNATURE_BYTES, Identity, verify
from .messages import WireMessage

# The schema used to live here: each public name of it is still importable from here (the
# ``X as X`` ones were never in ``__all__`` and stay out of it).
from .schema import ADDRESS_MAX_CHARS as ADDRESS_MAX_CHARS
from .schema import PORT_MAX as PORT_MAX
from .schema import (
    ROOM_ID_BYTES,
    UINT64_MAX,
    BoolSpec,
    BytesSpec,
    FieldSpec,
    FloatSpec,
    IntSpec,
    Invalid,
    OptionalSpec,
    RecordSpec,
    Spec,
    StrSpec,
    TupleSpec,
    compiled_tables,
)
from .schema import TOKEN_MAX_BYTES as TOKEN_MAX_BYTES
from .schema import Converter as Converter

__all__ = [
    "ROOM_ID_BYTES",
    "BoolSpec",
    "BytesSpec",
    "Codec",
    "Envelope",
    "FieldSpec",
    "FloatSpec",
    "IntSpec",
    "OptionalSpec",
    "RecordSpec",
    "Spec",
    "StrSpec",
    "TupleSpec",
    "UnknownType",
]

R = TypeVar("R")

SIGNATURE_CONTEXT = b"meshchat-sig\0"

ENVELOPE_FIELDS = 6  # [version, type_tag, sender, seq, sent_at, body]


class UnknownType(ProtocolError):
    """A well-formed envelope whose type tag this node does not know: ignore it and count it."""

    def __init__(self, type_tag: str) -> None:
        self.type_tag = type_tag
        super().__init__(f"unknown_type: {type_tag!r}")


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every frame carries around its message."""

    sender: bytes
    seq: int
    sent_at: float
    message: WireMessage
    version: int = PROTOCOL_VERSION


# ---------------------------------------------------------------- the codec

_DEFAULT_LIMITS = Limits()
_STACK_ERRORS = (msgpack.exceptions.StackError, RecursionError)


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError(f"msgpack ext type {code} is not used by meshchat")


def _want(ok: bool, what: str) -> None:
    if not ok:
        raise Invalid(what)


class Codec:
    """Encode and strictly decode envelopes, records and signed records."""

    def __init__(self, limits: Limits = _DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.stats: collections.Counter[str] = collections.Counter()
        tables = compiled_tables(limits)
        self._specs = tables.specs
        self._decoders = tables.decoders
        self._encoders = tables.encoders
        self._by_tag = tables.by_tag
        self._tag_of = {cls: tag for tag, cls in tables.by_tag.items()}
        self._max_frame = limits.max_frame_bytes
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._unpack = functools.partial(
            msgpack.unpackb,
            raw=False,
            use_list=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_str_len=tables.max_str_bytes,
            max_bin_len=limits.max_frame_bytes,
            max_array_len=max(limits.max_collection_items, 64),
            max_map_len=0,  # meshchat never sends maps
            max_ext_len=0,
        )

    def schema(self, cls: type) -> RecordSpec:
        """What this codec enforces for ``cls`` (a message or record class)."""
        try:
            return self._specs[cls]
        except KeyError:
            raise TypeError(f"{cls.__name__} has no wire schema") from None

    # ------------------------------------------------------------ envelopes

    def encode(self, envelope: Envelope) -> bytes:
        """The frame for ``envelope``. ``ValueError`` if a peer would drop it."""
        message = envelope.message
        cls = type(message)
        tag = self._tag_of.get(cls)
        if tag is None:
            raise TypeError(f"{cls.__name__} is not a wire message")
        try:
            header = (
                _check_uint(envelope.version, "version"),
                tag,
                _check_peer_id(envelope.sender, "sender"),
                _check_uint(envelope.seq, "seq"),
                _check_float(envelope.sent_at, "sent_at"),
                self._encoders[cls](message),
            )
        except Invalid as exc:
            raise ValueError(f"cannot encode {cls.__name__}: {exc}") from None
        return self._checked_size(self._packer.pack(header))

    def decode(
        self, data: bytes, allowed: Collection[type[WireMessage]] | None = None
    ) -> Envelope:
        """The envelope in ``data``; ``ProtocolError`` (and a count in ``stats``) if it is bad.

        ``allowed`` restricts the message classes this socket/topic may carry.
        """
        frame = self._unpack_bounded(data)
        if type(frame) is not tuple or not frame:
            raise self._drop("schema", "the envelope is not an array")
        version = frame[0]
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise self._drop("version", f"got {version!r}, speak {PROTOCOL_VERSION}")
        if len(frame) < ENVELOPE_FIELDS:
            raise self._drop("schema", "the envelope is too short")
        _, tag, sender, seq, sent_at, body = frame[:ENVELOPE_FIELDS]
        try:
            _want(type(tag) is str, "type tag: want a str")
            _check_peer_id(sender, "sender")
            _check_uint(seq, "seq")
            sent_at = _check_float(sent_at, "sent_at")
            _want(type(body) is tuple, "body: want an array")
        except Invalid as exc:
            raise self._drop("schema", str(exc)) from None
        cls = self._by_tag.get(tag)
        if cls is None:
            self.stats["unknown_type"] += 1
            raise UnknownType(tag)
        if allowed is not None and cls not in allowed:
            raise self._drop("not_allowed", f"{cls.__name__} is not expected here")
        try:
            message = self._decoders[cls](body)
        except Invalid as exc:
            raise self._drop("schema", str(exc)) from None
        return Envelope(sender, seq, sent_at, message, version)

    # ------------------------------------------------------------ records

    def peek_type(self, data: bytes) -> type[WireMessage] | None:
        """The message class a frame says it carries, read from its first fields only (cheap:
        the body is not unpacked), so a flood can be refused before it is decoded. None when
        the frame does not even start like an envelope; ``decode`` still checks everything."""
        if not isinstance(data, bytes) or len(data) > self._max_frame:
            return None
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) or 1,
                                    max_str_len=64, max_bin_len=0, max_array_len=0,
                                    max_map_len=0, max_ext_len=0)
        unpacker.feed(data)
        try:
            if unpacker.read_array_header() < ENVELOPE_FIELDS:
                return None
            unpacker.skip()  # version
            tag = unpacker.unpack()
        except (ValueError, msgpack.UnpackException, msgpack.OutOfData):
            return None
        return self._by_tag.get(tag) if type(tag) is str else None

    def encode_record(self, record: object) -> bytes:
        """The canonical bytes of a record: the same record always gives the same bytes."""
        encoder = self._encoders.get(type(record))
        if encoder is None:
            raise TypeError(f"{type(record).__name__} has no wire schema")
        try:
            values = encoder(record)
        except Invalid as exc:
            raise ValueError(f"cannot encode: {exc}") from None
        return self._checked_size(self._packer.pack(values))

    def decode_record(self, data: bytes, cls: type[R]) -> R:
        """The ``cls`` record in ``data``; ``ProtocolError`` if it is bad."""
        decoder = self._decoders.get(cls)
        if decoder is None:
            raise TypeError(f"{cls.__name__} has no wire schema")
        values = self._unpack_bounded(data)
        try:
            record: R = decoder(values)
        except Invalid as exc:
            raise self._drop("schema", str(exc)) from None
        return record

    # ------------------------------------------------------------ signed records

    def sign_record(self, identity: Identity, record: object) -> bytes:
        """A signed blob: msgpack ``[record_bytes, signature]``, signed by ``identity``."""
        data = self.encode_record(record)
        signature = identity.sign(_signed_message(type(record), data))
        return self._checked_size(self._packer.pack((data, signature)))

    def open_signed(self, blob: bytes, cls: type[R], signer: Callable[[R], bytes]) -> R:
        """The record in ``blob`` if ``signer(record)`` signed it, else ``ProtocolError``."""
        data, signature = self._split_signed(blob)
        record = self.decode_record(data, cls)
        if not verify(signer(record), _signed_message(cls, data), signature):
            raise self._drop("signature", f"{cls.__name__} is not signed by its signer")
        return record

    def peek_signed(self, blob: bytes, cls: type[R]) -> R:
        """The record in ``blob`` without checking the signature (verify it before trusting)."""
        data, _ = self._split_signed(blob)
        return self.decode_record(data, cls)

    # ------------------------------------------------------------ internals

    def _split_signed(self, blob: bytes) -> tuple[bytes, bytes]:
        value = self._unpack_bounded(blob)
        if (
            type(value) is not tuple
            or len(value) != 2
            or type(value[0]) is not bytes
            or type(value[1]) is not bytes
            or len(value[1]) != SIGNATURE_BYTES
        ):
            raise self._drop("schema", "a signed blob is [record bytes, 64-byte signature]")
        return value[0], value[1]

    def _unpack_bounded(self, data: bytes) -> Any:
        try:
            size = len(data)
        except TypeError:
            raise self._drop("msgpack", f"cannot decode a {type(data).__name__}") from None
        if size > self._max_frame:
            raise self._drop("oversize", f"{size} bytes > {self._max_frame}")
        try:
            return self._unpack(data)
        except _STACK_ERRORS:
            raise self._drop("nesting", "nested too deeply") from None
        except Exception as exc:  # any malformed input: msgpack raises several kinds
            raise self._drop("msgpack", f"{type(exc).__name__}: {exc}") from None

    def _checked_size(self, frame: bytes) -> bytes:
        if len(frame) > self._max_frame:
            raise ValueError(f"frame of {len(frame)} bytes > max_frame_bytes {self._max_frame}")
        return frame

    def _drop(self, reason: str, detail: str) -> ProtocolError:
        self.stats[reason] += 1
        return ProtocolError(f"{reason}: {detail}")


def _signed_message(cls: type, data: bytes) -> bytes:
    # The class name binds a signature to one record type: a signed ChatBatch can never
    # be replayed as another record whose bytes happen to decode.
    return SIGNATURE_CONTEXT + cls.__name__.encode("ascii") + b"\0" + data


def _check_peer_id(v: Any, where: str) -> bytes:
    if type(v) is not bytes or len(v) != PEER_ID_BYTES:
        raise Invalid(f"{where}: want {PEER_ID_BYTES} bytes")
    return v


def _check_uint(v: Any, where: str) -> int:
    if type(v) is not int or not 0 <= v <= UINT64_MAX:
        raise Invalid(f"{where}: want an int in 0..{UINT64_MAX}")
    return v


def _check_float(v: Any, where: str) -> float:
    if type(v) is float:
        if math.isfinite(v):
            return v
    elif type(v) is int and -UINT64_MAX <= v <= UINT64_MAX:
        return float(v)
    raise Invalid(f"{where}: want a finite float")
