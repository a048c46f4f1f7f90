"""The wire schema: what every field of every message and record may hold, and its checkers.

The schema is read once, at import, from the type hints of the classes in ``messages`` (and
of the records nested in them); a field's bounds come from its type and, for ``bytes`` and
``str``, from its name (the field-name rules below), scaled by a ``Limits``. ``compiled_tables``
turns the schema for one ``Limits`` into one converter per class, for decoding and for
encoding, so ``codec.Codec`` does no reflection on the hot path. A value that breaks the
schema raises ``Invalid``; the codec turns it into a ``ProtocolError`` or a ``ValueError``.

Pure: no msgpack, sockets, clocks or asyncio. The public names are re-exported by ``codec``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..config import Limits
from ..identity import PEER_ID_BYTES
from . import messages
from .messages import WireMessage

__all__ = [
    "ADDRESS_MAX_CHARS",
    "PORT_MAX",
    "ROOM_ID_BYTES",
    "TOKEN_MAX_BYTES",
    "UINT64_MAX",
    "BoolSpec",
    "BytesSpec",
    "CompiledTables",
    "Converter",
    "FieldSpec",
    "FloatSpec",
    "IntSpec",
    "Invalid",
    "OptionalSpec",
    "RecordSpec",
    "Spec",
    "StrSpec",
    "TupleSpec",
    "compiled_tables",
]

ROOM_ID_BYTES = 16
TOKEN_MAX_BYTES = 256
ADDRESS_MAX_CHARS = 255
PORT_MAX = 65535
UINT64_MAX = 2**64 - 1

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


class Invalid(Exception):
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
                    raise Invalid(f"{where}: want {min_len}..{max_len} bytes")
                return v

            return conv_bytes
        case StrSpec(max_chars):

            def conv_str(v: Any) -> Any:
                if type(v) is not str or len(v) > max_chars:
                    raise Invalid(f"{where}: want a str of at most {max_chars} chars")
                return v

            return conv_str
        case IntSpec(lo, hi):

            def conv_int(v: Any) -> Any:
                if type(v) is not int or not lo <= v <= hi:
                    raise Invalid(f"{where}: want an int in {lo}..{hi}")
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
                raise Invalid(f"{where}: want a finite float")

            return conv_float
        case BoolSpec():

            def conv_bool(v: Any) -> Any:
                if v is not True and v is not False:
                    raise Invalid(f"{where}: want a bool")
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
                    raise Invalid(f"{where}: want an array of at most {max_items} items")
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
                    raise Invalid(f"{label}: want an array of at least 1 field")
                return cls(only(v[0]))

            return decode_one

        def decode_record(v: Any) -> Any:
            # Extra trailing values are fields a newer peer added: ignored on purpose. Missing
            # trailing fields that have a default are ones an older peer does not know.
            if type(v) is not tuple or len(v) < required:
                raise Invalid(f"{label}: want an array of at least {required} fields")
            return cls(*[conv(x) for conv, x in zip(convs, v, strict=False)])

        return decode_record

    names = [f.name for f in spec.fields]
    getter = operator.attrgetter(*names) if names else (lambda _obj: ())
    if count == 1:
        (only,) = convs

        def encode_one(v: Any) -> Any:
            if type(v) is not cls:
                raise Invalid(f"{label}: want a {label}, got {type(v).__name__}")
            return (only(getter(v)),)

        return encode_one

    def encode_record(v: Any) -> Any:
        if type(v) is not cls:
            raise Invalid(f"{label}: want a {label}, got {type(v).__name__}")
        return tuple([conv(x) for conv, x in zip(convs, getter(v), strict=True)])

    return encode_record


@dataclass(frozen=True, slots=True)
class CompiledTables:
    specs: dict[type, RecordSpec]
    decoders: dict[type, Converter]
    encoders: dict[type, Converter]
    by_tag: dict[str, type[WireMessage]]
    max_str_bytes: int


@functools.lru_cache(maxsize=8)
def compiled_tables(limits: Limits) -> CompiledTables:
    specs = {cls: _record_spec(cls, limits) for cls in _HINTS}
    by_tag: dict[str, type[WireMessage]] = {}
    for cls in messages.ALL_TYPES:
        if not cls.TYPE or cls.TYPE in by_tag:
            raise TypeError(f"{cls.__name__}: type tag {cls.TYPE!r} is empty or taken")
        by_tag[cls.TYPE] = cls
    longest = max(limits.max_text_chars, limits.max_name_chars, limits.max_room_name_chars,
                  limits.max_away_chars, ADDRESS_MAX_CHARS)
    return CompiledTables(
        specs=specs,
        decoders={cls: _compile_record(spec, True) for cls, spec in specs.items()},
        encoders={cls: _compile_record(spec, False) for cls, spec in specs.items()},
        by_tag=by_tag,
        max_str_bytes=4 * longest,  # UTF-8 needs at most 4 bytes per character
    )


compiled_tables(Limits())  # an unsupported field type fails at import, not on the first message
