"""The keyring: keys by epoch in a bounded ring, and bounded frames waiting for a key."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.config import Limits
from meshchat.keyring import Keyring
from meshchat.protocol.messages import Sealed

ROOM, A = b"r" * 16, b"a" * 32


def sealed(epoch: int, size: int = 10) -> Sealed:
    return Sealed(ROOM, epoch, b"x" * size)


def test_keys_by_epoch_in_a_bounded_ring() -> None:
    ring = Keyring.with_key(Limits(max_room_keys=3), 1, b"k1")
    for epoch in (2, 3, 4):
        ring.install(epoch, b"k%d" % epoch)
    assert list(ring) == [2, 3, 4] and 1 not in ring and ring[4] == b"k4"
    assert ring.get(1) is None


def test_send_epoch_prefers_the_state_epoch_else_the_newest() -> None:
    ring = Keyring.with_key(Limits(), 7, b"k7")
    ring.install(9, b"k9")
    assert ring.send_epoch(7) == 7
    assert ring.send_epoch(12345) == 9


def test_a_frame_waits_for_its_key_and_comes_back_in_order() -> None:
    ring = Keyring(Limits())
    assert ring.park(A, sealed(5), 0.0) == 0
    assert ring.park(A, sealed(6), 0.0) == 0
    assert ring.park(b"b" * 32, sealed(5, 3), 0.1) == 0
    ready = ring.install(5, b"k5")
    assert [(p.sender, len(p.sealed.box)) for p in ready] == [(A, 10), (b"b" * 32, 3)]
    assert ring.pending == 1 and ring.pending_bytes == 10


def test_waiting_frames_are_bounded_by_count_and_bytes_and_expire() -> None:
    limits = Limits(max_pending_sealed=4, max_pending_sealed_bytes=100, pending_sealed_s=5.0)
    ring = Keyring(limits)
    dropped = sum(ring.park(A, sealed(e), 0.0) for e in range(10))
    assert dropped == 6 and ring.pending == 4
    assert ring.install(0, b"k") == []  # the oldest went first
    assert ring.park(A, sealed(99, 90), 0.0) == 3  # bytes: room made from the oldest
    assert ring.pending == 2 and ring.pending_bytes == 100
    assert ring.park(A, sealed(98, 101), 0.0) == 1  # can never fit on its own
    assert ring.expire(5.0) == 0 and ring.expire(5.1) == 2 and ring.pending == 0


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 300)), max_size=300))
@settings(max_examples=100, deadline=None)
def test_any_flood_of_unknown_epochs_stays_within_bounds(frames: list[tuple[int, int]]) -> None:
    limits = Limits(max_pending_sealed=16, max_pending_sealed_bytes=1000)
    ring = Keyring(limits)
    kept = 0
    for epoch, size in frames:
        kept += 1 - ring.park(A, sealed(epoch, size), 0.0)
        assert ring.pending <= 16 and ring.pending_bytes <= 1000
    assert kept == ring.pending
