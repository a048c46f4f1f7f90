"""Raw pyzmq file pull, the baseline for file transfer: ``python -m bench.w_rawfile ROLE JSON``.

The least a chunked, encrypted, verified pull can cost on this machine: plain synchronous pyzmq,
CURVE on the DEALER/ROUTER pair (no ZAP handler), a credit window of requests in flight, each
chunk written to disk at its offset and the whole file hashed with SHA-256 as it arrives (a
single connection keeps replies in request order, so the hash runs in order). No per-chunk
hash, no state on disk, no resume: what meshchat adds on top is what the ratio measures.

roles
  serve   bind ROUTER; answer ``[offset, length]`` with ``[offset, bytes]`` read from ``path``
          until ``quit``
  fetch   connect DEALER; pull ``size`` bytes in ``chunk``-byte pieces with ``window`` requests
          in flight into ``dest``; report ``result`` (seconds, bytes, sha256)
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import msgpack
import zmq

from bench.common import CommandReader, emit
from bench.w_raw import _curve_client, _curve_server, main


def run_serve(ctx: zmq.Context[zmq.Socket[bytes]], opts: dict[str, Any]) -> None:
    commands = CommandReader()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.sndhwm = 0
    _curve_server(router, opts.get("curve"))
    router.bind(opts["bind"])
    fd = os.open(opts["path"], os.O_RDONLY)
    emit("ready")
    unpack, pack = msgpack.unpackb, msgpack.packb
    deadline = time.monotonic() + float(opts.get("hold_s", 300.0))
    try:
        while time.monotonic() < deadline:
            if router.poll(100):
                peer, payload = router.recv_multipart(copy=False)
                offset, length = unpack(payload.bytes)
                data = os.pread(fd, int(length), int(offset))
                router.send_multipart([peer.bytes, pack([offset, data])], copy=False)
            if commands.poll() is not None:
                return
    finally:
        os.close(fd)


def run_fetch(ctx: zmq.Context[zmq.Socket[bytes]], opts: dict[str, Any]) -> None:
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.rcvhwm = 0
    _curve_client(dealer, opts.get("curve"))
    dealer.connect(opts["connect"])
    size, chunk, window = int(opts["size"]), int(opts["chunk"]), int(opts["window"])
    timeout_ms = int(float(opts.get("reply_timeout_s", 10.0)) * 1000)
    unpack, pack = msgpack.unpackb, msgpack.packb
    digest = hashlib.sha256()
    fd = os.open(opts["dest"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        next_offset = received = 0
        in_flight = 0
        started = time.perf_counter()
        while received < size:
            while in_flight < window and next_offset < size:
                dealer.send(pack([next_offset, min(chunk, size - next_offset)]))
                next_offset += chunk
                in_flight += 1
            if not dealer.poll(timeout_ms):
                emit("error", error=f"no chunk within {timeout_ms} ms at {received} bytes")
                return
            offset, data = unpack(dealer.recv())
            in_flight -= 1
            os.pwrite(fd, data, offset)
            digest.update(data)
            received += len(data)
        os.fsync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
    emit("result", seconds=elapsed, bytes=received, sha256=digest.hexdigest())


ROLES = {"serve": run_serve, "fetch": run_fetch}


if __name__ == "__main__":
    main(ROLES)
