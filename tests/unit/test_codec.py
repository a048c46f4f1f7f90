"""The codec: round trips for every type, and hostile input that must only ever drop and count."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshchat.protocol as protocol
from meshchat.config import PROTOCOL_VERSION, Limits
from meshchat.errors import ProtocolError
from meshchat.identity import Identity
from meshchat.protocol import messages as m
from meshchat.protocol.codec import (
    ROOM_ID_BYTES,
    Codec,
    Envelope,
    OptionalSpec,
    RecordSpec,
    Spec,
    TupleSpec,
    UnknownType,
)

from ..strategies import of

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODEC = Codec()
ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(1, 33)))
ROOM = bytes(range(ROOM_ID_BYTES))


# ---------------------------------------------------------------- strategies from the schema

peer_ids = st.binary(min_size=32, max_size=32)
envelopes = st.builds(
    Envelope,
    sender=peer_ids,
    seq=st.integers(0, 2**64 - 1),
    sent_at=st.floats(allow_nan=False, allow_infinity=False),
    message=st.sampled_from(m.ALL_TYPES).flatmap(of),
)


def frame_of(message: m.WireMessage, seq: int = 7) -> bytes:
    return CODEC.encode(Envelope(ALICE.peer_id, seq, 1.7e9, message))


def chat_record(text: str = "hi", seq: int = 1) -> m.ChatBatch:
    return m.ChatBatch(ROOM, ALICE.peer_id, seq, (m.ChatLine(1.7e9, text),))


def room_state(**changes: Any) -> m.RoomState:
    state = m.RoomState(
        room_id=ROOM, name="lobby", host=ALICE.peer_id, term=1, version=3,
        members=(m.Member(ALICE.peer_id, "alice", 1.0), m.Member(BOB.peer_id, "bob", 2.0)),
        bans=(m.Ban(bytes(32), "mallory", "spam"),),
        password=m.PasswordVerifier(bytes(16), 2, 67108864, bytes(32)),
        locked=False, closed=False, key_epoch=9, created_at=1.0,
        change="joined", change_peer=BOB.peer_id, change_reason="",
    )
    return dataclasses.replace(state, **changes)


def wire(frame: bytes) -> Any:
    """A frame as plain msgpack lists, to tamper with."""
    return msgpack.unpackb(frame, raw=False, strict_map_key=False)


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def decode_drops(codec: Codec, data: bytes, reason: str, **kw: Any) -> ProtocolError:
    """Decoding ``data`` raises ProtocolError and counts exactly one drop, for ``reason``."""
    before = codec.stats.copy()
    with pytest.raises(ProtocolError) as caught:
        codec.decode(data, **kw)
    assert codec.stats - before == {reason: 1}, (codec.stats - before, caught.value)
    return caught.value


# ---------------------------------------------------------------- round trips


def test_every_message_and_record_type_has_a_schema_and_a_unique_tag() -> None:
    tags = [cls.TYPE for cls in m.ALL_TYPES]
    assert len(set(tags)) == len(tags) and all(tags)
    for cls in (*m.ALL_TYPES, *m.RECORD_TYPES):
        spec = CODEC.schema(cls)
        assert [f.name for f in spec.fields] == [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls", m.ALL_TYPES, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_every_message_round_trips(cls: type[m.WireMessage], data: st.DataObject) -> None:
    envelope = Envelope(
        data.draw(peer_ids), data.draw(st.integers(0, 2**64 - 1)),
        data.draw(st.floats(allow_nan=False, allow_infinity=False)), data.draw(of(cls)),
    )
    frame = CODEC.encode(envelope)
    assert CODEC.decode(frame) == envelope
    assert CODEC.decode(frame, allowed=(cls,)).message == envelope.message


@pytest.mark.parametrize("cls", m.RECORD_TYPES, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_every_record_round_trips_canonically(cls: type, data: st.DataObject) -> None:
    record = data.draw(of(cls))
    encoded = CODEC.encode_record(record)
    decoded: object = CODEC.decode_record(encoded, cls)
    assert decoded == record
    assert CODEC.encode_record(decoded) == encoded


def test_float_fields_accept_ints_and_encode_them_as_floats() -> None:
    record = m.ChatLine(5, "x")
    decoded = CODEC.decode_record(CODEC.encode_record(record), m.ChatLine)
    assert type(decoded.sent_at) is float and decoded.sent_at == 5.0
    assert CODEC.encode_record(decoded) == CODEC.encode_record(record)
    values = wire(CODEC.encode_record(m.ChatLine(1.7e9, "hi")))
    values[0] = 12  # an int on the wire, e.g. from another implementation
    assert CODEC.decode_record(pack(values), m.ChatLine).sent_at == 12.0


def test_chat_frame_layout_is_the_documented_one() -> None:
    frame = frame_of(m.Chat(b"blob"), seq=3)
    assert wire(frame) == [PROTOCOL_VERSION, "chat", ALICE.peer_id, 3, 1.7e9, [b"blob"]]


def test_trailing_fields_are_tolerated_and_missing_ones_are_not() -> None:
    value = wire(frame_of(m.Pong(5)))
    value[5].append("a field from the future")
    value.append("an envelope field from the future")
    assert CODEC.decode(pack(value)).message == m.Pong(5)
    nested = wire(frame_of(m.Peers((m.PeerCard(BOB.peer_id, "bob", ("10.0.0.2",), 1, 2, 3),))))
    nested[5][0][0].append(42)
    assert CODEC.decode(pack(nested)).message.peers[0].name == "bob"  # type: ignore[attr-defined]

    codec = Codec()
    short = wire(frame_of(m.JoinRefusal(ROOM, 1, "banned", "")))
    del short[5][-1]
    decode_drops(codec, pack(short), "schema")
    decode_drops(codec, pack(wire(frame_of(m.Pong(5)))[:5]), "schema")


# ---------------------------------------------------------------- field rules


@pytest.mark.parametrize(
    ("message", "index", "bad"),
    [
        (m.Ping(1), 0, True),  # bool is not int
        (m.Ping(1), 0, 1.0),  # float is not int
        (m.Ping(1), 0, -1),
        (m.Ping(1), 0, "1"),
        (m.Leave(ROOM, "left"), 0, ROOM[:-1]),
        (m.Leave(ROOM, "left"), 0, ROOM + b"x"),
        (m.Leave(ROOM, "left"), 0, ROOM.hex()),
        (m.Private("hi", (BOB.peer_id,)), 1, (BOB.peer_id[:31],)),
        (m.Private("hi", (BOB.peer_id,)), 1, BOB.peer_id),  # a bare value where an array goes
        (m.Private("hi", (BOB.peer_id,)), 0, "x" * 4001),
        (m.Private("hi", (BOB.peer_id,)), 0, b"hi"),  # bytes are not str
        (m.CommandResult(ROOM, 1, True, "", ""), 2, 1),  # int is not bool
        (m.Hello(m.PeerCard(BOB.peer_id, "b", (), 1, 2, 3), 1.0, "red"), 1, float("nan")),
        (m.Hello(m.PeerCard(BOB.peer_id, "b", (), 1, 2, 3), 1.0, "red"), 1, float("inf")),
        (m.Hello(m.PeerCard(BOB.peer_id, "b", (), 1, 2, 3), 1.0, "red"), 1, "1.0"),
        (m.Hello(m.PeerCard(BOB.peer_id, "b", (), 1, 2, 3), 1.0, "red"), 0, None),
        (m.Hello(m.PeerCard(BOB.peer_id, "b", (), 1, 2, 3), 1.0, "red"), 0,
         [BOB.peer_id, "b", [], 65536, 2, 3]),  # port out of range
        (m.Hello(m.PeerCard(BOB.peer_id, "b", (), 1, 2, 3), 1.0, "red"), 0,
         [BOB.peer_id, "n" * 33, [], 1, 2, 3]),  # name longer than max_name_chars
        (m.Hello(m.PeerCard(BOB.peer_id, "b", (), 1, 2, 3), 1.0, "red"), 0,
         [BOB.peer_id, "b", [], 1, 2]),  # nested record missing a field
        (m.JoinChallenge(ROOM, 1, bytes(16), bytes(16), 1, 1), 3, bytes(257)),
    ],
)
def test_a_wrong_field_is_a_schema_drop(message: m.WireMessage, index: int, bad: Any) -> None:
    value = wire(frame_of(message))
    value[5][index] = bad
    decode_drops(Codec(), pack(value), "schema")


def test_envelope_header_rules() -> None:
    good = wire(frame_of(m.Ping(1)))
    bad: Any
    for index, bad in [(2, ALICE.peer_id[:31]), (2, None), (3, -1), (3, True), (3, 1.0),
                       (4, float("nan")), (4, "now"), (1, 7), (5, {})]:
        value = list(good)
        value[index] = bad
        decode_drops(Codec(), pack(value), "schema")
    decode_drops(Codec(), pack("not an array"), "schema")
    decode_drops(Codec(), pack([]), "schema")


def test_caps_are_per_field_and_exact_at_the_boundary() -> None:
    limits = Limits()
    at_cap = m.Member(ALICE.peer_id, "n" * limits.max_name_chars, 1.0)
    assert CODEC.decode_record(CODEC.encode_record(at_cap), m.Member) == at_cap
    room_name = "r" * limits.max_room_name_chars  # rooms may have longer names than people
    state = room_state(name=room_name)
    assert CODEC.decode_record(CODEC.encode_record(state), m.RoomState).name == room_name
    with pytest.raises(ValueError, match=r"Member\.name"):
        CODEC.encode_record(dataclasses.replace(at_cap, name=room_name))
    text = "文" * limits.max_text_chars  # 3 bytes each in UTF-8: still within msgpack limits
    assert CODEC.decode(frame_of(m.Broadcast(text))).message == m.Broadcast(text)


def test_collections_are_capped() -> None:
    codec = Codec(Limits(max_collection_items=3))
    ok = m.Private("hi", (BOB.peer_id,) * 3)
    assert codec.decode(codec.encode(Envelope(ALICE.peer_id, 1, 1.0, ok))).message == ok
    value = wire(codec.encode(Envelope(ALICE.peer_id, 1, 1.0, ok)))
    value[5][1].append(BOB.peer_id)
    decode_drops(codec, pack(value), "schema")
    with pytest.raises(ValueError):
        codec.encode(Envelope(ALICE.peer_id, 1, 1.0, m.Private("hi", (BOB.peer_id,) * 4)))
    # Beyond what any array may hold, msgpack itself refuses before building anything.
    decode_drops(codec, pack([1, "pm", ALICE.peer_id, 1, 1.0, ["hi", [b""] * 65]]), "msgpack")


def test_optional_record_is_nil_or_the_record() -> None:
    no_password = room_state(password=None)
    assert wire(CODEC.encode_record(no_password))[7] is None
    assert CODEC.decode_record(CODEC.encode_record(no_password), m.RoomState) == no_password
    values = wire(CODEC.encode_record(no_password))
    values[7] = [b"salt"]
    with pytest.raises(ProtocolError, match="schema"):
        CODEC.decode_record(pack(values), m.RoomState)


# ---------------------------------------------------------------- envelope-level drops


def test_other_protocol_version_is_a_version_drop() -> None:
    value = wire(frame_of(m.Ping(1)))
    for version in (PROTOCOL_VERSION + 1, 0, True, "1"):
        value[0] = version
        error = decode_drops(Codec(), pack(value), "version")
        assert str(error).startswith("version")
    assert Codec().decode(frame_of(m.Ping(1))).version == PROTOCOL_VERSION


def test_unknown_type_is_its_own_error_and_counter() -> None:
    codec = Codec()
    value = wire(frame_of(m.Ping(1)))
    value[1] = "from-the-future"
    value[5] = [1, 2, 3]
    with pytest.raises(UnknownType) as caught:
        codec.decode(pack(value))
    assert caught.value.type_tag == "from-the-future"
    assert isinstance(caught.value, ProtocolError)
    assert codec.stats == {"unknown_type": 1}


def test_a_type_not_allowed_on_this_socket_is_dropped() -> None:
    codec = Codec()
    frame = frame_of(m.Ping(1))
    error = decode_drops(codec, frame, "not_allowed", allowed=m.ROOM_INNER_TYPES)
    assert not isinstance(error, UnknownType)
    assert codec.decode(frame, allowed=m.DIRECT_TYPES).message == m.Ping(1)


def test_oversize_frames_are_dropped_before_unpacking() -> None:
    codec = Codec(Limits(max_frame_bytes=100))
    decode_drops(codec, b"\xc1" * 101, "oversize")  # 0xc1 is never valid msgpack
    with pytest.raises(ValueError, match="max_frame_bytes"):
        codec.encode(Envelope(ALICE.peer_id, 1, 1.0, m.Broadcast("x" * 100)))
    assert codec.decode(codec.encode(Envelope(ALICE.peer_id, 1, 1.0, m.Broadcast("x"))))


def test_deep_nesting_cannot_recurse_or_crash() -> None:
    codec = Codec()
    deep = b"\x91" * 100_000 + b"\xc0"  # 100k arrays, each holding the next
    decode_drops(codec, deep, "nesting")
    with pytest.raises(ProtocolError):
        codec.decode_record(deep, m.RoomState)
    # Deep, but within msgpack's own stack: the schema refuses it.
    value = wire(frame_of(m.Bye("x")))
    nested: Any = "x"
    for _ in range(500):
        nested = [nested]
    value[5][0] = nested
    decode_drops(codec, pack(value), "schema")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x96\x01",  # truncated
        pack([1, "ping", bytes(32), 1, 1.0, [1]]) + b"\x00",  # trailing bytes
        pack([1, "ping", bytes(32), 1, 1.0, [1]])[:-1],
        b"\x81\xa1a\x01",  # maps are never used
        b"\xc7\x00\x05",  # ext types are never used
        b"\xd6\xff\x00\x00\x00\x00",  # not even msgpack's timestamp
        b"\xa2\xff\xfe",  # a str that is not UTF-8
    ],
)
def test_malformed_msgpack_is_a_msgpack_drop(data: bytes) -> None:
    decode_drops(Codec(), data, "msgpack")


def test_non_bytes_input_is_a_protocol_error() -> None:
    decode_drops(Codec(), None, "msgpack")  # type: ignore[arg-type]
    decode_drops(Codec(), "text", "msgpack")  # type: ignore[arg-type]


@FAST
@given(envelope=envelopes)
def test_every_truncation_of_a_valid_frame_is_dropped(envelope: Envelope) -> None:
    frame = CODEC.encode(envelope)
    codec = Codec()
    for end in range(len(frame)):
        with pytest.raises(ProtocolError):
            codec.decode(frame[:end])
    assert codec.stats == {"msgpack": len(frame)}


def _decode_or_drop(codec: Codec, data: bytes) -> Envelope | None:
    """Decode; the only failure allowed is ProtocolError, counted exactly once."""
    before = codec.stats.total()
    try:
        envelope = codec.decode(data)
    except ProtocolError:
        assert codec.stats.total() == before + 1
        return None
    assert codec.stats.total() == before
    assert isinstance(envelope, Envelope)
    assert codec.encode(envelope)  # whatever decodes is also valid to send
    return envelope


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_only_ever_drop(data: bytes) -> None:
    _decode_or_drop(Codec(), data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelope=envelopes, edits=st.lists(st.tuples(st.integers(0), st.integers(0, 255)),
                                           min_size=1, max_size=4))
def test_mutated_frames_only_ever_drop(envelope: Envelope, edits: list[tuple[int, int]]) -> None:
    data = bytearray(CODEC.encode(envelope))
    for position, byte in edits:
        data[position % len(data)] = byte
    _decode_or_drop(Codec(), bytes(data))


@FAST
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=7),
    max_leaves=30,
))
def test_well_formed_msgpack_of_any_shape_only_ever_drops(value: Any) -> None:
    codec = Codec()
    _decode_or_drop(codec, pack(value))
    _decode_or_drop(codec, pack([1, "hb", bytes(32), 0, 0.0, value]))
    for cls in m.RECORD_TYPES:
        with contextlib.suppress(ProtocolError):
            codec.decode_record(pack(value), cls)


# ---------------------------------------------------------------- encoding refuses what peers drop


def test_encode_validates_like_decode() -> None:
    for bad in [
        Envelope(ALICE.peer_id[:5], 1, 1.0, m.Ping(1)),
        Envelope(ALICE.peer_id, -1, 1.0, m.Ping(1)),
        Envelope(ALICE.peer_id, 1, float("nan"), m.Ping(1)),
        Envelope(ALICE.peer_id, 1, 1.0, m.Ping(-1)),
        Envelope(ALICE.peer_id, 1, 1.0, m.Leave(b"short", "left")),
        Envelope(ALICE.peer_id, 1, 1.0, m.Private("x", [BOB.peer_id])),  # type: ignore[arg-type]
        Envelope(ALICE.peer_id, 1, 1.0, m.Broadcast("\udcff")),  # not encodable as UTF-8
    ]:
        with pytest.raises(ValueError):
            CODEC.encode(bad)
    with pytest.raises(TypeError):
        CODEC.encode(Envelope(ALICE.peer_id, 1, 1.0, chat_record()))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CODEC.encode_record(object())
    # A failed encode leaves the codec's packer clean for the next frame.
    good = Envelope(ALICE.peer_id, 1, 1.0, m.Ping(2))
    assert CODEC.encode(good) == Codec().encode(good)


# ---------------------------------------------------------------- signed records


def test_a_good_signed_record_opens() -> None:
    record = chat_record("signed")
    blob = CODEC.sign_record(ALICE, record)
    assert CODEC.open_signed(blob, m.ChatBatch, lambda r: r.sender) == record
    assert CODEC.peek_signed(blob, m.ChatBatch) == record
    state = room_state()
    blob = CODEC.sign_record(ALICE, state)
    assert CODEC.open_signed(blob, m.RoomState, lambda s: s.host) == state


def test_a_signed_blob_is_record_bytes_and_signature() -> None:
    record = chat_record()
    data, signature = wire(CODEC.sign_record(ALICE, record))
    assert data == CODEC.encode_record(record) and len(signature) == 64


def test_wrong_signer_is_refused() -> None:
    codec = Codec()
    # Alice claims to be Bob
    forged = m.ChatBatch(ROOM, BOB.peer_id, 1, (m.ChatLine(1.0, "I am Bob"),))
    blob = codec.sign_record(ALICE, forged)
    with pytest.raises(ProtocolError, match="signature"):
        codec.open_signed(blob, m.ChatBatch, lambda r: r.sender)
    assert codec.stats == {"signature": 1}
    assert codec.peek_signed(blob, m.ChatBatch) == forged  # peek does not verify


def test_every_tampered_byte_of_a_signed_record_is_refused() -> None:
    codec = Codec()
    blob = codec.sign_record(ALICE, chat_record("tamper with me"))
    for index in range(len(blob)):
        for flip in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[index] ^= flip
            with pytest.raises(ProtocolError):
                codec.open_signed(bytes(tampered), m.ChatBatch, lambda r: r.sender)
    assert set(codec.stats) <= {"signature", "schema", "msgpack"} and codec.stats["signature"]


def test_a_signature_does_not_carry_over_to_another_record_type() -> None:
    # Ping and Pong have the same shape, so their record bytes are identical.
    blob = CODEC.sign_record(ALICE, m.Ping(5))
    assert CODEC.open_signed(blob, m.Ping, lambda _: ALICE.peer_id) == m.Ping(5)
    assert CODEC.peek_signed(blob, m.Pong) == m.Pong(5)
    with pytest.raises(ProtocolError, match="signature"):
        CODEC.open_signed(blob, m.Pong, lambda _: ALICE.peer_id)


@pytest.mark.parametrize(
    "blob",
    [pack([b"x"]), pack([b"x", b"y" * 63]), pack(["x", b"y" * 64]), pack([b"\x90", b"y" * 64]),
     pack([b"x", b"y" * 64, b"z"]), b"", b"\xdd"],
)
def test_malformed_signed_blobs_are_refused(blob: bytes) -> None:
    with pytest.raises(ProtocolError):
        CODEC.open_signed(blob, m.ChatBatch, lambda r: r.sender)
    with pytest.raises(ProtocolError):
        CODEC.peek_signed(blob, m.ChatBatch)


def test_records_of_the_wrong_class_do_not_decode() -> None:
    with pytest.raises(ProtocolError):
        CODEC.decode_record(CODEC.encode_record(room_state()), m.ChatBatch)
    with pytest.raises(TypeError):
        CODEC.decode_record(b"\x90", dict)


# ---------------------------------------------------------------- the package surface


def test_public_names_are_importable() -> None:
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None
    assert set(m.ALL_TYPES) <= {getattr(protocol, n) for n in protocol.__all__}
    for cls in m.ALL_TYPES:
        assert f"\n{cls.TYPE} " in (protocol.__doc__ or "")


def _depth(spec: Spec) -> int:
    match spec:
        case OptionalSpec(inner):
            return _depth(inner)
        case TupleSpec(item, _):
            return 1 + _depth(item)
        case RecordSpec(_, fields):
            return 1 + max((_depth(f.spec) for f in fields), default=0)
    return 0


def test_the_schema_nests_no_deeper_than_the_limit() -> None:
    # Accepted input is only as deep as the schema, so this bounds everything decode returns.
    deepest = max(1 + _depth(CODEC.schema(cls)) for cls in m.ALL_TYPES)  # 1: the envelope
    assert deepest == 5  # envelope → Heartbeat body → known → PeerCard → addresses
    assert deepest <= Limits().max_nesting


def test_peek_type_reads_only_the_tag() -> None:
    frame = CODEC.encode(Envelope(ALICE.peer_id, 1, 0.0, m.Ping(5)))
    assert CODEC.peek_type(frame) is m.Ping
    assert CODEC.peek_type(b"") is None
    assert CODEC.peek_type(msgpack.packb([1, "no-such-tag", b"", 0, 0.0, []])) is None
    assert CODEC.peek_type(msgpack.packb([1, "ping"])) is None  # too short to be an envelope


@FAST
@given(st.binary(max_size=200))
def test_peek_type_never_raises(data: bytes) -> None:
    assert CODEC.peek_type(data) in (None, *m.ALL_TYPES)


# ---------------------------------------------------------------- fields added later (issue 11)


CARD = m.PeerCard(BOB.peer_id, "bob", ("10.0.0.2",), 1, 2, 3)


def test_an_older_peers_frame_without_the_away_and_auto_fields_decodes_with_defaults() -> None:
    for message, old_fields in [
        (m.Heartbeat(CARD, 1.0, "red", (), (), away="lunch"), 5),
        (m.Hello(CARD, 1.0, "red", away="lunch",
                 hosted=(m.HostedRoom(b"r" * 16, "lobby", 2, False, False, 1),)), 3),
        (m.Private("hi", (BOB.peer_id,), auto=True), 2),
    ]:
        value = wire(frame_of(message))
        fields = dataclasses.fields(message)  # type: ignore[arg-type]
        assert len(value[5]) == len(fields) > old_fields  # the new fields go last
        del value[5][old_fields:]  # what a peer from before issues 9 and 11 sends
        decoded = CODEC.decode(pack(value)).message
        assert decoded == dataclasses.replace(message, **{  # type: ignore[type-var]
            f.name: f.default for f in fields[old_fields:]})
    short = wire(frame_of(m.Private("hi", (BOB.peer_id,))))
    del short[5][1:]  # a field without a default is still required
    decode_drops(Codec(), pack(short), "schema")


def test_away_round_trips_and_is_bounded_by_limits() -> None:
    hb = m.Heartbeat(CARD, 1.0, "", (), (), away="é" * 200)
    assert CODEC.decode(frame_of(hb)).message == hb
    assert CODEC.schema(m.Heartbeat).fields[-1].spec == OptionalSpec(
        protocol.codec.StrSpec(Limits().max_away_chars))
    with pytest.raises(ValueError):  # sending what a peer would drop is a local bug
        CODEC.encode(Envelope(ALICE.peer_id, 1, 1.0, dataclasses.replace(hb, away="x" * 201)))
    small = Codec(Limits(max_away_chars=5))
    assert small.decode(CODEC.encode(Envelope(ALICE.peer_id, 1, 1.0, dataclasses.replace(
        hb, away="12345")))).message.away == "12345"  # type: ignore[attr-defined]
    decode_drops(small, frame_of(dataclasses.replace(hb, away="123456")), "schema")


@pytest.mark.parametrize("bad", ["x" * 10_000, "x" * 201, 7, True, b"lunch", ("lunch",), 1.5])
@pytest.mark.parametrize("cls", [m.Heartbeat, m.Hello])
def test_a_hostile_away_value_is_a_schema_drop(cls: type[m.WireMessage], bad: Any) -> None:
    message = (m.Heartbeat(CARD, 1.0, "", (), ()) if cls is m.Heartbeat
               else m.Hello(CARD, 1.0, ""))
    value = wire(frame_of(message))
    value[5][-1] = bad  # away is the last field
    decode_drops(Codec(), pack(value), "schema")


def test_control_characters_in_away_pass_the_codec_for_the_node_to_clean() -> None:
    hb = m.Heartbeat(CARD, 1.0, "", (), (), away="lu\x1b[2Jnch\n\x00")
    assert CODEC.decode(frame_of(hb)).message == hb  # cleaned by the node (clean_away)


@pytest.mark.parametrize("bad", [1, "yes", None, b"\x01"])
def test_a_wrong_auto_flag_is_a_schema_drop(bad: Any) -> None:
    value = wire(frame_of(m.Private("hi", (BOB.peer_id,))))
    value[5][2] = bad
    decode_drops(Codec(), pack(value), "schema")
