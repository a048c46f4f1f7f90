"""Our ZAP handler (RFC 27): the deny list of CURVE keys, and the socket that enforces it."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from .base import TransportStats

__all__ = ["ZAP_DOMAIN", "ZAP_ENDPOINT", "Zap"]

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"meshchat"


class Zap:
    """Admits every CURVE client key not denied, with User-Id = hex of that key.

    Bound before any server socket: without a handler, libzmq admits every CURVE client (and
    our servers set ZAP_ENFORCE_DOMAIN, so they refuse everyone instead). Refusals are counted
    in ``stats.zap_denied``.
    """

    def __init__(self, stats: TransportStats) -> None:
        self._stats = stats
        self.denied_keys: set[bytes] = set()
        self.denied_hex: set[str] = set()
        """The same keys in hex, as ROUTER frames carry them in User-Id."""
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    def deny(self, curve_key: bytes) -> None:
        self.denied_keys.add(curve_key)
        self.denied_hex.add(curve_key.hex())

    def allow(self, curve_key: bytes) -> None:
        self.denied_keys.discard(curve_key)
        self.denied_hex.discard(curve_key.hex())

    def start(self, ctx: zmq.asyncio.Context, loop: asyncio.AbstractEventLoop) -> None:
        zap = self._sock = ctx.socket(zmq.ROUTER)
        zap.setsockopt(zmq.LINGER, 0)
        zap.bind(ZAP_ENDPOINT)
        self._task = loop.create_task(self._serve(zap), name="meshchat-zap")

    def stop(self) -> list[asyncio.Task[None]]:
        """Cancel the handler; returns its task if it was cancelled, for close to await."""
        task = self._task
        if task is None:
            return []
        task.cancel()
        if task is asyncio.current_task() or not task.cancelling():
            return []
        return [task]

    def close(self) -> None:
        """Close the socket (after ``stop``, once every server socket is closed)."""
        if self._sock is not None:
            self._sock.close(linger=0)

    async def _serve(self, zap: zmq.asyncio.Socket) -> None:
        while True:
            request = await zap.recv_multipart()
            reply = self.answer(request)
            if reply is not None:
                await zap.send_multipart(reply)

    def answer(self, request: list[bytes]) -> list[bytes] | None:
        """RFC 27: [envelope.., b'', version, request id, domain, address, identity, mechanism,
        credentials..] -> [envelope.., b'', version, request id, status, text, user id, meta]."""
        try:
            split = request.index(b"")
        except ValueError:
            return None
        envelope, body = request[: split + 1], request[split + 1 :]
        if len(body) < 6:
            return None
        version, request_id, _domain, _address, _identity, mechanism, *credentials = body

        def answer(status: bytes, text: bytes, user_id: bytes = b"") -> list[bytes]:
            return [*envelope, b"1.0", request_id, status, text, user_id, b""]

        if version != b"1.0":
            return answer(b"400", b"unsupported ZAP version")
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self._stats.zap_denied += 1
            return answer(b"400", b"CURVE only")
        client_key = credentials[0]
        if client_key in self.denied_keys:
            self._stats.zap_denied += 1
            return answer(b"400", b"denied")
        return answer(b"200", b"OK", client_key.hex().encode("ascii"))
