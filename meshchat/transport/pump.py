"""Receiving: a pump drains a socket from the event loop; readers turn frames into Incoming."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from .base import FloodGuard, Incoming, Receiver, TransportStats

__all__ = ["Pump", "Reader", "count", "pub_reader", "router_reader"]

log = logging.getLogger("meshchat.transport.zmq")

Reader = Callable[[], Incoming | None]
"""Takes one message off a socket (``zmq.Again`` if there is none) and returns what to hand
up, or None to drop it."""


def count(stats: TransportStats, name: str) -> None:
    """One more in ``stats.extra[name]``."""
    extra = stats.extra
    extra[name] = extra.get(name, 0) + 1


class Pump:
    """Drives one receiving socket from the event loop, without a task of its own.

    libzmq's ZMQ_FD is edge-triggered: it signals once when the socket's state changes, and any
    call that processes the socket's commands (a receive, a send, reading ZMQ_EVENTS) may
    consume that signal. So the FD stays registered with the loop for the socket's whole life;
    its callback drains the socket until EAGAIN, right there in the callback (no task to wake:
    one loop turn less per frame, which is most of a round trip's cost). A full batch, or a
    send on the same socket, schedules one more drain with ``call_soon`` instead of trusting
    the FD. ``busy`` guards against re-entry from the receiver (which may send or stop).
    """

    __slots__ = ("batch", "budget_s", "busy", "fd", "guard", "loop", "pending", "read",
                 "receiver", "scheduled", "sock", "stats", "stopped")

    def __init__(self, sock: zmq.Socket[Any], read: Reader, receiver: Receiver,
                 stats: TransportStats, batch: int, guard: FloodGuard | None = None,
                 budget_s: float = 0.004) -> None:
        self.sock = sock
        self.guard = guard
        self.budget_s = budget_s
        self.fd = int(sock.get(zmq.FD))
        self.read = read
        self.receiver = receiver
        self.stats = stats
        self.batch = batch
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: asyncio.Future[Any] | None = None  # an async receiver still running
        self.busy = False
        self.scheduled = False
        self.stopped = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.fd, self.fire)
        self.schedule()  # frames may have arrived before the FD was registered

    def fire(self) -> None:
        if not (self.stopped or self.busy or self.pending is not None) and self.loop is not None:
            self.drain()

    def schedule(self) -> None:
        if not self.scheduled and not self.stopped and self.loop is not None:
            self.scheduled = True
            self.loop.call_soon(self._scheduled)

    def _scheduled(self) -> None:
        self.scheduled = False
        self.fire()

    def kick(self) -> None:
        """After a send on this socket: the send may have eaten the FD's signal."""
        if not self.stopped and int(self.sock.get(zmq.EVENTS)) & zmq.POLLIN:
            self.schedule()

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop before the socket closes: afterwards the pump never touches it again."""
        if self.stopped:
            return
        self.stopped = True
        if self.loop is not None:
            loop.remove_reader(self.fd)
        # A receiver still running is left to finish: it may be the one that stops us.

    def drain(self) -> None:
        """Receive until EAGAIN, at most a batch (or ``budget_s`` of work) per call, handing
        each frame up in order.

        A receiver that returns an awaitable is awaited before the next frame is read."""
        if self.busy or self.stopped or self.pending is not None:
            return
        read, receiver, stats, guard = self.read, self.receiver, self.stats, self.guard
        clock = time.monotonic
        until = clock() + self.budget_s
        self.busy = True
        try:
            for _ in range(self.batch):
                try:
                    incoming = read()
                except zmq.Again:
                    return  # drained: libzmq signals the FD again on the next frame
                if incoming is None:
                    continue
                if guard is not None and not guard.admit(incoming.peer_id or incoming.curve_key):
                    count(stats, "dropped_flood")
                    continue
                stats.received += 1
                try:
                    result = receiver(incoming)
                    if result is not None:
                        pending = self.pending = asyncio.ensure_future(result)
                        pending.add_done_callback(self._resume)
                        return
                except Exception:
                    count(stats, "receiver_errors")
                    log.exception("receiver failed on a frame from %s", incoming.peer_id.hex())
                if self.stopped:
                    return
                if clock() > until:
                    break
            self.schedule()  # a full batch, or the budget spent: let the rest run, then go on
        finally:
            self.busy = False

    def _resume(self, done: asyncio.Future[Any]) -> None:
        self.pending = None
        if not done.cancelled() and done.exception() is not None:
            count(self.stats, "receiver_errors")
            log.error("receiver failed", exc_info=done.exception())
        self.schedule()


# Frames with copy=False and .more cost about half of recv_multipart, which converts RCVMORE to
# an enum twice per message.


def _malformed(recv: Callable[..., Any], last: zmq.Frame, stats: TransportStats) -> None:
    while last.more:
        last = recv(zmq.NOBLOCK, copy=False)
    count(stats, "dropped_malformed")


def pub_reader(sock: zmq.Socket[Any], stats: TransportStats,
               attribute: Callable[[zmq.Frame, zmq.Frame], Incoming | None]) -> Reader:
    """[topic, payload] from a peer's PUB on our SUB, handed to ``attribute`` (topic, payload)
    to say whom it is from."""
    recv = sock.recv

    def read() -> Incoming | None:
        topic: zmq.Frame = recv(zmq.NOBLOCK, copy=False)
        if not topic.more:
            count(stats, "dropped_malformed")
            return None
        payload: zmq.Frame = recv(zmq.NOBLOCK, copy=False)
        if payload.more:
            _malformed(recv, payload, stats)
            return None
        return attribute(topic, payload)

    return read


def router_reader(sock: zmq.Socket[Any], stats: TransportStats,
                  attribute: Callable[[bytes, zmq.Frame], Incoming | None]) -> Reader:
    """[routing id, payload] on our ROUTER, handed to ``attribute`` to say whom it is from."""
    recv = sock.recv

    def read() -> Incoming | None:
        head: zmq.Frame = recv(zmq.NOBLOCK, copy=False)
        if not head.more:  # libzmq always prefixes the routing id; be safe anyway
            count(stats, "dropped_malformed")
            return None
        frame: zmq.Frame = recv(zmq.NOBLOCK, copy=False)
        if frame.more:
            _malformed(recv, frame, stats)
            return None
        return attribute(head.bytes, frame)

    return read
