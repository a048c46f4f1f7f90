"""Twin peer ids for tests: the same Ed25519 point with the sign bit flipped.

Both ids map to one X25519 (CURVE) key, so the holder of one authenticates as either at the
transport. ``twin_identity`` is the key holder speaking under its twin id (its signatures stay
those of the original key: only unsigned traffic can use the twin id).
"""

from __future__ import annotations

from meshchat.identity import Identity, fingerprint_of


def twin_of(peer_id: bytes) -> bytes:
    return peer_id[:31] + bytes([peer_id[31] ^ 0x80])


def twin_identity(identity: Identity) -> Identity:
    twin = Identity(identity.seed)
    twin.peer_id = twin_of(identity.peer_id)
    twin.fingerprint = fingerprint_of(twin.peer_id)
    return twin
