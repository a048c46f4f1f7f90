"""Raw pyzmq baselines, one role per process: ``python -m bench.w_raw ROLE JSON``.

Plain synchronous pyzmq in tight loops, msgpack envelopes shaped like a chat message; the
floor any design on ZeroMQ + msgpack can reach on this machine.

roles
  pub     bind PUB, send probes until ``go``, then ``count`` messages and an end marker
  sub     connect SUB, report ``synced`` on the first probe, count messages, report ``result``
  router  bind ROUTER, echo every request until ``quit``
  dealer  connect DEALER, measure ``rounds`` round trips, report ``result`` (µs each)

Options in JSON: ``curve`` {"server_public", "server_secret", "client_public", "client_secret"}
(z85 strings) turns CURVE on (no ZAP handler: the cheapest CURVE setup libzmq allows).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import zmq

from bench.common import (
    SENDER_ID,
    CommandReader,
    emit,
    envelope,
    index_of,
    log,
    now,
    text_of,
)

PROBE = b"probe"
DATA = b"room"
END = b"end"


def _curve_server(sock: zmq.Socket[bytes], curve: dict[str, str] | None) -> None:
    if curve:
        sock.curve_server = True
        sock.curve_publickey = curve["server_public"].encode()
        sock.curve_secretkey = curve["server_secret"].encode()


def _curve_client(sock: zmq.Socket[bytes], curve: dict[str, str] | None) -> None:
    if curve:
        sock.curve_serverkey = curve["server_public"].encode()
        sock.curve_publickey = curve["client_public"].encode()
        sock.curve_secretkey = curve["client_secret"].encode()


def run_pub(ctx: zmq.Context[zmq.Socket[bytes]], opts: dict[str, Any]) -> None:
    commands = CommandReader()
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 0  # unbounded: the baseline loses nothing and is limited by its receivers
    pub.linger = 1000
    _curve_server(pub, opts.get("curve"))
    pub.bind(opts["bind"])
    emit("ready")
    deadline = time.monotonic() + opts.get("sync_timeout_s", 20.0)
    while time.monotonic() < deadline:
        pub.send_multipart([PROBE])
        cmd = commands.poll()
        if cmd is not None and cmd["cmd"] == "quit":
            return
        if cmd is not None and cmd["cmd"] == "go":
            break
        time.sleep(0.01)
    else:
        emit("error", error="no 'go' before the sync deadline")
        return
    count = int(opts["count"])
    pack = msgpack.packb
    t0 = now()
    for seq in range(count):
        pub.send_multipart([DATA, pack(envelope(seq, text_of("m", seq)))])
    pub.send_multipart([END])
    emit("sent", count=count, t0=t0, t1=now())
    commands.get(timeout=opts.get("hold_s", 120.0))


def run_sub(ctx: zmq.Context[zmq.Socket[bytes]], opts: dict[str, Any]) -> None:
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 0
    sub.linger = 0
    _curve_client(sub, opts.get("curve"))
    sub.subscribe(b"")
    sub.connect(opts["connect"])
    emit("ready")
    unpack = msgpack.unpackb
    expected = int(opts["count"])
    deadline = time.monotonic() + float(opts.get("deadline_s", 60.0))
    received = 0
    seen: set[int] = set()
    synced = False
    t_first = t_last = 0.0
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    idle_s = float(opts.get("idle_s", 3.0))
    while time.monotonic() < deadline:
        if not poller.poll(200):
            if received and now() - t_last > idle_s:
                break
            continue
        frames = sub.recv_multipart()
        topic = frames[0]
        if topic == DATA:
            body = unpack(frames[1])[5]
            index = index_of(body["text"], "m")
            t_last = now()
            if received == 0:
                t_first = t_last
            received += 1
            if index is not None:
                seen.add(index)
        elif topic == PROBE and not synced:
            synced = True
            emit("synced")
        elif topic == END:
            break
        if received >= expected:
            break
    emit("result", received=received, unique=len(seen), t_first=t_first, t_last=t_last)


def run_router(ctx: zmq.Context[zmq.Socket[bytes]], opts: dict[str, Any]) -> None:
    commands = CommandReader()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    _curve_server(router, opts.get("curve"))
    router.bind(opts["bind"])
    emit("ready")
    unpack, pack = msgpack.unpackb, msgpack.packb
    deadline = time.monotonic() + float(opts.get("hold_s", 120.0))
    while time.monotonic() < deadline:
        if router.poll(100):
            peer, payload = router.recv_multipart()
            request = unpack(payload)
            router.send_multipart([peer, pack([1, "pong", SENDER_ID, request[3], now(), {}])])
        if commands.poll() is not None:
            return


def run_dealer(ctx: zmq.Context[zmq.Socket[bytes]], opts: dict[str, Any]) -> None:
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    _curve_client(dealer, opts.get("curve"))
    dealer.connect(opts["connect"])
    unpack, pack = msgpack.unpackb, msgpack.packb
    timeout_ms = int(float(opts.get("reply_timeout_s", 5.0)) * 1000)
    rounds, warmup = int(opts["rounds"]), int(opts.get("warmup", 50))
    rtts: list[float] = []
    for i in range(warmup + rounds):
        started = time.perf_counter()
        dealer.send(pack([1, "ping", SENDER_ID, i, now(), {"pad": b"x" * 60}]))
        if not dealer.poll(timeout_ms):
            emit("error", error=f"no reply to round {i} within {timeout_ms} ms")
            return
        unpack(dealer.recv())
        if i >= warmup:
            rtts.append((time.perf_counter() - started) * 1e6)
    emit("result", rtts_us=rtts)


ROLES = {"pub": run_pub, "sub": run_sub, "router": run_router, "dealer": run_dealer}


Role = Callable[[zmq.Context[zmq.Socket[bytes]], dict[str, Any]], None]


def main(roles: Mapping[str, Role] = ROLES) -> None:
    """``python -m bench.<worker> ROLE JSON``: run one role with its options (shared by the
    raw workers)."""
    role, opts = sys.argv[1], json.loads(sys.argv[2])
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        roles[role](ctx, opts)
    except Exception as exc:  # report, never hang the orchestrator
        log(f"{role} failed: {exc!r}")
        emit("error", error=f"{role}: {exc!r}")
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
