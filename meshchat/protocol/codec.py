"""Envelopes and records ⇄ bytes: strict, bounded msgpack. Pure: no sockets, clocks or asyncio.

The wire format is documented in ``docs/wire.md`` and in ``meshchat.protocol``'s docstring.
The schema of every message and record class is read once, at import, from its type hints;
each ``Codec`` compiles it with its ``Limits`` into one converter per field, so the hot path
does no reflection.

``decode`` raises only ``ProtocolError`` (``UnknownType`` for a well-formed envelope with an
unknown tag) and counts each reason in ``Codec.stats``. ``encode`` validates with the same
rules and raises ``ValueError``/``TypeError``: sending what a peer would drop is a local bug.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import operator
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import msgpack

from ..config import PROTOCOL_VERSION, Limits
from ..errors import ProtocolError
from ..identity import PEER_ID_BYTES, SIGNATURE_BYTES, Identity, verify
from . import messages
from .messages import WireMessage

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

ROOM_ID_BYTES = 16
TOKEN_MAX_BYTES = 256
ADDRESS_MAX_CHARS = 255
PORT_MAX = 65535
UINT64_MAX = 2**64 - 1
SIGNATURE_CONTEXT = b"meshchat-sig\0"

# Field-name rules. They apply in every class, to the field and to the items of a tuple field.
_PEER_ID_FIELDS = frozenset({"peer_id", "sender", "host", "to", "public_key", "old_host",
                             "new_host"})
_ROOM_ID_FIELDS = frozenset({"room_id"})
_TOKEN_FIELDS = frozenset({"salt", "nonce", "challenge", "proof", "sealed_key"})
_PORT_FIELDS = frozenset({"router_port", "pub_port", "card_port"})
_NAME_FIELDS = frozenset({"name", "color", "op"})
_ROOM_NAME_CLASSES = frozenset({messages.HostedRoom, messages.RoomState})
_ADDRESS_FIELDS = frozenset({"addresses"})
_AWAY_FIELDS = frozenset({"away"})

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


# ---------------------------------------------------------------- schema description


@dataclass(frozen=True, slots=True)
class BytesSpec:
    min_len: int
    max_len: int


@dataclass(frozen=True, slots=True)
class StrSpec:
    max_chars: int


@dataclass(frozen=True, slots=True)
class IntSpec:
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class FloatSpec:
    """Any finite float; an int on the wire is accepted and converted."""


@dataclass(frozen=True, slots=True)
class BoolSpec:
    pass


@dataclass(frozen=True, slots=True)
class OptionalSpec:
    inner: Spec


@dataclass(frozen=True, slots=True)
class TupleSpec:
    item: Spec
    max_items: int


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    spec: Spec


@dataclass(frozen=True, slots=True)
class RecordSpec:
    """A dataclass on the wire: an array of its field values in field order."""

    cls: type
    fields: tuple[FieldSpec, ...]


Spec: TypeAlias = (
    BytesSpec | StrSpec | IntSpec | FloatSpec | BoolSpec | OptionalSpec | TupleSpec | RecordSpec
)


def _hints_of(cls: type) -> tuple[tuple[str, Any], ...]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def _nested_classes(hint: Any) -> list[type]:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return [hint]
    return [c for arg in typing.get_args(hint) for c in _nested_classes(arg)]


def _collect_hints() -> dict[type, tuple[tuple[str, Any], ...]]:
    todo: list[type] = [*messages.ALL_TYPES, *messages.RECORD_TYPES]
    found: dict[type, tuple[tuple[str, Any], ...]] = {}
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found[cls] = _hints_of(cls)
        for _, hint in found[cls]:
            todo.extend(_nested_classes(hint))
    return found


_HINTS = _collect_hints()  # read once, at import


def _leaf_spec(cls: type, name: str, hint: Any, limits: Limits) -> Spec:
    if hint is bytes:
        if name in _PEER_ID_FIELDS:
            return BytesSpec(PEER_ID_BYTES, PEER_ID_BYTES)
        if name in _ROOM_ID_FIELDS:
            return BytesSpec(ROOM_ID_BYTES, ROOM_ID_BYTES)
        if name in _TOKEN_FIELDS:
            return BytesSpec(0, TOKEN_MAX_BYTES)
        return BytesSpec(0, limits.max_frame_bytes)
    if hint is str:
        if name in _NAME_FIELDS:
            room = name == "name" and cls in _ROOM_NAME_CLASSES
            return StrSpec(limits.max_room_name_chars if room else limits.max_name_chars)
        if name in _ADDRESS_FIELDS:
            return StrSpec(ADDRESS_MAX_CHARS)
        if name in _AWAY_FIELDS:
            return StrSpec(limits.max_away_chars)
        return StrSpec(limits.max_text_chars)
    if hint is int:
        return IntSpec(0, PORT_MAX if name in _PORT_FIELDS else UINT64_MAX)
    if hint is float:
        return FloatSpec()
    if hint is bool:
        return BoolSpec()
    raise TypeError(f"{cls.__name__}.{name}: the codec cannot carry {hint!r}")


def _spec_of(cls: type, name: str, hint: Any, limits: Limits) -> Spec:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(rest) == 1:
            return OptionalSpec(_spec_of(cls, name, rest[0], limits))
        raise TypeError(f"{cls.__name__}.{name}: only 'X | None' unions are supported")
    if typing.get_origin(hint) is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{cls.__name__}.{name}: only tuple[X, ...] is supported")
        return TupleSpec(_spec_of(cls, name, args[0], limits), limits.max_collection_items)
    if hint in _HINTS:
        return _record_spec(hint, limits)
    return _leaf_spec(cls, name, hint, limits)


def _record_spec(cls: type, limits: Limits) -> RecordSpec:
    fields = tuple(FieldSpec(name, _spec_of(cls, name, hint, limits)) for name, hint in _HINTS[cls])
    return RecordSpec(cls, fields)


# ---------------------------------------------------------------- compiled converters


class _Invalid(Exception):
    """A value that breaks the schema; ``args[0]`` says where."""


Converter = Callable[[Any], Any]


def _compile(spec: Spec, where: str, decoding: bool) -> Converter:
    """One converter per field: checks a value and returns its other form.

    Decoding: wire value (tuples for records) → Python value. Encoding: the reverse.
    """
    match spec:
        case BytesSpec(min_len, max_len):

            def conv_bytes(v: Any) -> Any:
                if type(v) is not bytes or not min_len <= len(v) <= max_len:
                    raise _Invalid(f"{where}: want {min_len}..{max_len} bytes")
                return v

            return conv_bytes
        case StrSpec(max_chars):

            def conv_str(v: Any) -> Any:
                if type(v) is not str or len(v) > max_chars:
                    raise _Invalid(f"{where}: want a str of at most {max_chars} chars")
                return v

            return conv_str
        case IntSpec(lo, hi):

            def conv_int(v: Any) -> Any:
                if type(v) is not int or not lo <= v <= hi:
                    raise _Invalid(f"{where}: want an int in {lo}..{hi}")
                return v

            return conv_int
        case FloatSpec():
            isfinite = math.isfinite

            def conv_float(v: Any) -> Any:
                t = type(v)
                if t is float:
                    if isfinite(v):
                        return v
                elif t is int and -UINT64_MAX <= v <= UINT64_MAX:
                    return float(v)
                raise _Invalid(f"{where}: want a finite float")

            return conv_float
        case BoolSpec():

            def conv_bool(v: Any) -> Any:
                if v is not True and v is not False:
                    raise _Invalid(f"{where}: want a bool")
                return v

            return conv_bool
        case OptionalSpec(inner):
            conv_inner = _compile(inner, where, decoding)

            def conv_optional(v: Any) -> Any:
                return None if v is None else conv_inner(v)

            return conv_optional
        case TupleSpec(item, max_items):
            conv_item = _compile(item, f"{where}[]", decoding)

            def conv_tuple(v: Any) -> Any:
                if type(v) is not tuple or len(v) > max_items:
                    raise _Invalid(f"{where}: want an array of at most {max_items} items")
                return tuple(map(conv_item, v))

            return conv_tuple
        case RecordSpec():
            return _compile_record(spec, decoding)
    raise TypeError(f"no converter for {spec!r}")  # pragma: no cover


def _required_fields(cls: type) -> int:
    """How many leading fields a frame must carry: those without a default. Fields with one
    come last (a dataclass rule) and were added later; an older peer's frame lacks them."""
    return sum(1 for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING)


def _compile_record(spec: RecordSpec, decoding: bool) -> Converter:
    cls = spec.cls
    label = cls.__name__
    convs = tuple(_compile(f.spec, f"{label}.{f.name}", decoding) for f in spec.fields)
    count = len(convs)
    required = _required_fields(cls)
    if decoding:
        if count == 1 and required == 1:  # Chat, the hot path, and other one-field messages
            (only,) = convs

            def decode_one(v: Any) -> Any:
                if type(v) is not tuple or not v:
                    raise _Invalid(f"{label}: want an array of at least 1 field")
                return cls(only(v[0]))

            return decode_one

        def decode_record(v: Any) -> Any:
            # Extra trailing values are fields a newer peer added: ignored on purpose. Missing
            # trailing fields that have a default are ones an older peer does not know.
            if type(v) is not tuple or len(v) < required:
                raise _Invalid(f"{label}: want an array of at least {required} fields")
            return cls(*[conv(x) for conv, x in zip(convs, v, strict=False)])

        return decode_record

    names = [f.name for f in spec.fields]
    getter = operator.attrgetter(*names) if names else (lambda _obj: ())
    if count == 1:
        (only,) = convs

        def encode_one(v: Any) -> Any:
            if type(v) is not cls:
                raise _Invalid(f"{label}: want a {label}, got {type(v).__name__}")
            return (only(getter(v)),)

        return encode_one

    def encode_record(v: Any) -> Any:
        if type(v) is not cls:
            raise _Invalid(f"{label}: want a {label}, got {type(v).__name__}")
        return tuple([conv(x) for conv, x in zip(convs, getter(v), strict=True)])

    return encode_record


@dataclass(frozen=True, slots=True)
class _Tables:
    specs: dict[type, RecordSpec]
    decoders: dict[type, Converter]
    encoders: dict[type, Converter]
    by_tag: dict[str, type[WireMessage]]
    max_str_bytes: int


@functools.lru_cache(maxsize=8)
def _tables(limits: Limits) -> _Tables:
    specs = {cls: _record_spec(cls, limits) for cls in _HINTS}
    by_tag: dict[str, type[WireMessage]] = {}
    for cls in messages.ALL_TYPES:
        if not cls.TYPE or cls.TYPE in by_tag:
            raise TypeError(f"{cls.__name__}: type tag {cls.TYPE!r} is empty or taken")
        by_tag[cls.TYPE] = cls
    longest = max(limits.max_text_chars, limits.max_name_chars, limits.max_room_name_chars,
                  limits.max_away_chars, ADDRESS_MAX_CHARS)
    return _Tables(
        specs=specs,
        decoders={cls: _compile_record(spec, True) for cls, spec in specs.items()},
        encoders={cls: _compile_record(spec, False) for cls, spec in specs.items()},
        by_tag=by_tag,
        max_str_bytes=4 * longest,  # UTF-8 needs at most 4 bytes per character
    )


_tables(Limits())  # an unsupported field type fails at import, not on the first message

# ---------------------------------------------------------------- the codec

_DEFAULT_LIMITS = Limits()
_STACK_ERRORS = (msgpack.exceptions.StackError, RecursionError)


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError(f"msgpack ext type {code} is not used by meshchat")


def _want(ok: bool, what: str) -> None:
    if not ok:
        raise _Invalid(what)


class Codec:
    """Encode and strictly decode envelopes, records and signed records."""

    def __init__(self, limits: Limits = _DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.stats: collections.Counter[str] = collections.Counter()
        tables = _tables(limits)
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
        except _Invalid as exc:
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
        except _Invalid as exc:
            raise self._drop("schema", str(exc)) from None
        cls = self._by_tag.get(tag)
        if cls is None:
            self.stats["unknown_type"] += 1
            raise UnknownType(tag)
        if allowed is not None and cls not in allowed:
            raise self._drop("not_allowed", f"{cls.__name__} is not expected here")
        try:
            message = self._decoders[cls](body)
        except _Invalid as exc:
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
        except _Invalid as exc:
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
        except _Invalid as exc:
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
        raise _Invalid(f"{where}: want {PEER_ID_BYTES} bytes")
    return v


def _check_uint(v: Any, where: str) -> int:
    if type(v) is not int or not 0 <= v <= UINT64_MAX:
        raise _Invalid(f"{where}: want an int in 0..{UINT64_MAX}")
    return v


def _check_float(v: Any, where: str) -> float:
    if type(v) is float:
        if math.isfinite(v):
            return v
    elif type(v) is int and -UINT64_MAX <= v <= UINT64_MAX:
        return float(v)
    raise _Invalid(f"{where}: want a finite float")
