"""Node identity: an Ed25519 key pair, its fingerprint, and the X25519 keys derived from it.

The peer id is the 32-byte Ed25519 public key. The CURVE key pair that ZeroMQ uses on every
socket is the X25519 form of the same key, so pinning a peer id pins its CURVE server key too.
Pure: no files here (the key file lives in ``storage.keystore``).

The map from Ed25519 to X25519 is two-to-one: a peer id and its *twin* (the same point with
the sign bit, byte 31 bit 7, flipped) give the same CURVE key, and whoever holds one holds
both as far as the transport can tell. So the CURVE key is the identity below the envelope:
``canonical_id`` names it, bans and the peer table compare by it, and a transport binds each
CURVE key to one peer id at a time.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from nacl.bindings import (
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

PeerId = bytes
PEER_ID_BYTES = 32
SIGNATURE_BYTES = 64
FINGERPRINT_CHARS = 16


@functools.lru_cache(maxsize=4096)
def fingerprint_of(peer_id: PeerId) -> str:
    """A short human form of a peer id: 16 lowercase base32 characters of its hash."""
    digest = hashlib.blake2b(peer_id, digest_size=10, person=b"meshchat-fp").digest()
    return base64.b32encode(digest).decode("ascii").lower()


def short_fingerprint(peer_id: PeerId) -> str:
    """The first 8 characters of the fingerprint, for display."""
    return fingerprint_of(peer_id)[:8]


def curve_public_of(peer_id: PeerId) -> bytes:
    """The X25519 (CURVE) public key that belongs to an Ed25519 peer id."""
    return bytes(crypto_sign_ed25519_pk_to_curve25519(peer_id))


@functools.lru_cache(maxsize=4096)
def canonical_id(peer_id: PeerId) -> bytes:
    """The identity a peer id stands for at the transport: its CURVE key (``ValueError`` if
    ``peer_id`` is not a usable Ed25519 key). Twins have the same canonical id. Cached: the
    conversion costs about 100 µs."""
    try:
        return curve_public_of(peer_id)
    except (CryptoError, RuntimeError, TypeError) as exc:
        raise ValueError("not a peer id") from exc


def same_key(a: PeerId, b: PeerId) -> bool:
    """True if ``a`` and ``b`` are one peer id or twins; False for anything else (never raises)."""
    if a == b:
        return True
    try:
        return canonical_id(a) == canonical_id(b)
    except ValueError:
        return False


def is_valid_peer_id(peer_id: object) -> bool:
    """True if ``peer_id`` is 32 bytes that form a usable Ed25519 public key."""
    if not isinstance(peer_id, bytes) or len(peer_id) != PEER_ID_BYTES:
        return False
    try:
        curve_public_of(peer_id)
    except (CryptoError, ValueError, RuntimeError):
        return False
    return True


def verify(peer_id: PeerId, data: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``peer_id``'s Ed25519 signature of ``data``."""
    if len(signature) != SIGNATURE_BYTES or len(peer_id) != PEER_ID_BYTES:
        return False
    try:
        VerifyKey(peer_id).verify(data, signature)
    except (BadSignatureError, CryptoError, ValueError):
        return False
    return True


class Identity:
    """A node's own key pair."""

    __slots__ = ("_signing_key", "curve_public", "curve_secret", "fingerprint", "peer_id")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an identity seed is 32 bytes")
        self._signing_key = SigningKey(seed)
        self.peer_id: PeerId = bytes(self._signing_key.verify_key)
        self.fingerprint = fingerprint_of(self.peer_id)
        self.curve_public = curve_public_of(self.peer_id)
        self.curve_secret = bytes(
            crypto_sign_ed25519_sk_to_curve25519(bytes(self._signing_key) + self.peer_id)
        )

    @classmethod
    def generate(cls) -> Identity:
        return cls(bytes(SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing_key)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``data``."""
        return self._signing_key.sign(data).signature

    def __repr__(self) -> str:
        return f"Identity({self.fingerprint})"
