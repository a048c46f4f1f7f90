"""The card server's frame (meshchat.protocol.card): round trip, and bad input only ever
raises ProtocolError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshchat.config import PROTOCOL_VERSION
from meshchat.errors import ProtocolError
from meshchat.identity import Identity
from meshchat.protocol.card import (
    LENGTH_BYTES,
    MAX_CARD_BYTES,
    body_length,
    decode_card,
    encode_card,
)
from meshchat.protocol.messages import PeerCard

ME = Identity(bytes(range(32)))
CARD = PeerCard(ME.peer_id, "alice", ("10.0.0.1", "fe80::1"), 5000, 5001, 5002)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def body_of(frame: bytes) -> bytes:
    assert body_length(frame[:LENGTH_BYTES]) == len(frame) - LENGTH_BYTES
    return frame[LENGTH_BYTES:]


def test_round_trip() -> None:
    assert decode_card(body_of(encode_card(ME, CARD))) == CARD


def test_only_its_own_card_is_served() -> None:
    with pytest.raises(ValueError):
        encode_card(Identity.generate(), CARD)


def test_a_card_signed_by_another_key_is_refused() -> None:
    fields = msgpack.unpackb(body_of(encode_card(ME, CARD)))
    other = Identity.generate()
    fields[1] = other.peer_id  # claims another id, keeps alice's signature
    with pytest.raises(ProtocolError, match="signature"):
        decode_card(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize("prefix", [
    b"", b"\x00\x00\x00\x00", (MAX_CARD_BYTES + 1).to_bytes(4, "big"), b"\x00\x00\x01"])
def test_bad_length_prefix(prefix: bytes) -> None:
    with pytest.raises(ProtocolError):
        body_length(prefix)


@FAST
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_card(data)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=40) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=3),
    max_leaves=20,
)


@FAST
@given(st.lists(_values, max_size=10))
def test_any_msgpack_array_raises_only_protocol_error(fields: list[object]) -> None:
    try:
        body = msgpack.packb(fields, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    with pytest.raises(ProtocolError):
        decode_card(body)


@FAST
@given(index=st.integers(0, 7), value=_values)
def test_any_one_field_replaced_is_refused_or_still_the_signed_card(index: int,
                                                                    value: object) -> None:
    fields = msgpack.unpackb(body_of(encode_card(ME, CARD)))
    fields[index] = value
    try:
        body = msgpack.packb(fields, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    try:
        card = decode_card(body)
    except ProtocolError:
        return
    assert card == CARD  # only a value equal to the signed one can pass


@FAST
@given(st.integers(0, 400), st.integers(0, 255))
def test_a_flipped_byte_is_refused_or_harmless(position: int, byte: int) -> None:
    body = bytearray(body_of(encode_card(ME, CARD)))
    body[position % len(body)] ^= byte or 1
    try:
        card = decode_card(bytes(body))
    except ProtocolError:
        return
    assert card == CARD


def test_version_must_match() -> None:
    fields = msgpack.unpackb(body_of(encode_card(ME, CARD)))
    fields[0] = PROTOCOL_VERSION + 1
    with pytest.raises(ProtocolError, match="version"):
        decode_card(msgpack.packb(fields, use_bin_type=True))
