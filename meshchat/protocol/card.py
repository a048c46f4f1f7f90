"""The card a card server hands out (``--peer HOST:PORT`` discovery): its frame, signed. Pure.

A client that connects to a card port receives one frame and the server closes::

    frame     = length (4 bytes, big endian) + body
    body      = msgpack [version, peer_id, name, addresses, router_port, pub_port, card_port,
                         signature]
    signature = Ed25519 signature by peer_id of
                CARD_SIGNATURE_CONTEXT + msgpack([version, peer_id, ..., card_port])

The card is self-signed: ``decode_card`` checks that whoever made it holds the key of the peer
id inside it. Whether that key is the one expected for a name is decided above this layer
(trust on first use). Bad input raises ``ProtocolError`` and nothing else.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from ..config import PROTOCOL_VERSION
from ..errors import ProtocolError
from ..identity import Identity, is_valid_peer_id, verify
from .messages import PeerCard

__all__ = [
    "CARD_SIGNATURE_CONTEXT",
    "LENGTH_BYTES",
    "MAX_CARD_ADDRESSES",
    "MAX_CARD_BYTES",
    "MAX_CARD_NAME_CHARS",
    "body_length",
    "decode_card",
    "encode_card",
]

CARD_SIGNATURE_CONTEXT = b"meshchat-card\x00"
MAX_CARD_BYTES = 4096
MAX_CARD_ADDRESSES = 32
MAX_CARD_NAME_CHARS = 256
MAX_ADDRESS_CHARS = 64
_LENGTH = struct.Struct(">I")
LENGTH_BYTES = _LENGTH.size


def _signed_part(card: PeerCard) -> list[Any]:
    return [
        PROTOCOL_VERSION,
        card.peer_id,
        card.name,
        list(card.addresses),
        card.router_port,
        card.pub_port,
        card.card_port,
    ]


def _signed_bytes(fields: list[Any]) -> bytes:
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return CARD_SIGNATURE_CONTEXT + packed


def encode_card(identity: Identity, card: PeerCard) -> bytes:
    """The length-prefixed frame a card server sends for ``card``, signed by ``identity``."""
    if card.peer_id != identity.peer_id:
        raise ValueError("a card server only serves its own card")
    fields = _signed_part(card)
    body: bytes = msgpack.packb(
        [*fields, identity.sign(_signed_bytes(fields))], use_bin_type=True
    )
    return _LENGTH.pack(len(body)) + body


def body_length(prefix: bytes, max_bytes: int = MAX_CARD_BYTES) -> int:
    """The body length a frame's 4-byte prefix announces; ``ProtocolError`` if out of bounds."""
    if len(prefix) != LENGTH_BYTES:
        raise ProtocolError(f"a card frame starts with {LENGTH_BYTES} length bytes")
    (length,) = _LENGTH.unpack(prefix)
    if not 0 < length <= max_bytes:
        raise ProtocolError(f"not a card frame ({length} bytes, limit {max_bytes})")
    return int(length)


def decode_card(body: bytes) -> PeerCard:
    """The card in a frame body (without the length prefix); ``ProtocolError`` if it is bad."""
    if not isinstance(body, bytes | bytearray | memoryview) or len(body) > MAX_CARD_BYTES:
        raise ProtocolError("a card body is at most MAX_CARD_BYTES bytes")
    try:
        fields = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_CARD_BYTES,
            max_bin_len=MAX_CARD_BYTES,
            max_array_len=MAX_CARD_ADDRESSES + 8,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"not a msgpack card: {exc}") from exc
    if not isinstance(fields, list) or len(fields) != 8:
        raise ProtocolError("a card is an array of 8 fields")
    version, peer_id, name, addresses, router_port, pub_port, card_port, signature = fields
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r}, this node speaks {PROTOCOL_VERSION}")
    if not is_valid_peer_id(peer_id):
        raise ProtocolError("bad peer id")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_CARD_NAME_CHARS:
        raise ProtocolError("bad name")
    if (
        not isinstance(addresses, list)
        or len(addresses) > MAX_CARD_ADDRESSES
        or not all(isinstance(a, str) and 0 < len(a) <= MAX_ADDRESS_CHARS for a in addresses)
    ):
        raise ProtocolError("bad address list")
    for port, allow_zero in ((router_port, False), (pub_port, False), (card_port, True)):
        if type(port) is not int or not (0 if allow_zero else 1) <= port <= 65535:
            raise ProtocolError(f"bad port {port!r}")
    if not isinstance(signature, bytes) or not verify(
        peer_id, _signed_bytes(fields[:7]), signature
    ):
        raise ProtocolError("bad signature")
    return PeerCard(peer_id, name, tuple(addresses), router_port, pub_port, card_port)
