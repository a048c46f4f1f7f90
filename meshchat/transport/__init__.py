"""Transports: the seam (``base``), the ZeroMQ implementation and an in-memory fake.

``ZmqTransport`` is imported on first use, so importing this package does not load pyzmq.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Incoming, LocalPorts, Receiver, Transport, TransportStats
from .memory import MemoryNetwork, MemoryTransport

if TYPE_CHECKING:
    from .zmq import ZmqTransport, ZmqTuning

__all__ = [
    "Incoming",
    "LocalPorts",
    "MemoryNetwork",
    "MemoryTransport",
    "Receiver",
    "Transport",
    "TransportStats",
    "ZmqTransport",
    "ZmqTuning",
]


def __getattr__(name: str) -> Any:
    if name in ("ZmqTransport", "ZmqTuning"):
        from . import zmq

        return getattr(zmq, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
