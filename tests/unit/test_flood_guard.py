"""The transport's flood guard: frames per peer, checked before anything is decoded."""

from __future__ import annotations

from meshchat.config import Limits
from meshchat.transport.base import FloodGuard
from meshchat.transport.memory import MemoryNetwork, MemoryTransport


def test_each_peer_gets_its_burst_then_its_rate() -> None:
    now = [0.0]
    guard = FloodGuard(100.0, 10, 64, lambda: now[0])
    assert [guard.admit(b"a") for _ in range(12)] == [True] * 10 + [False] * 2
    assert guard.admit(b"b")  # a bucket of its own
    now[0] = 0.05  # five tokens back
    assert [guard.admit(b"a") for _ in range(6)] == [True] * 5 + [False]


def test_the_table_is_bounded() -> None:
    guard = FloodGuard(1.0, 1, 50, lambda: 0.0)
    for i in range(1000):
        guard.admit(i.to_bytes(4, "big"))
    assert len(guard) == 50


def test_the_memory_transport_drops_a_flood_before_delivery() -> None:
    limits = Limits(peer_frames_per_s=1.0, peer_frames_burst=5)
    transport = MemoryTransport(MemoryNetwork(), limits)
    from meshchat.transport.base import Incoming

    transport._alive_ = True
    for _ in range(20):
        transport._arrive(Incoming("direct", b"p" * 32, b"x"))
    assert transport._queue.qsize() == 5
    assert transport.stats.extra["dropped_flood"] == 15
