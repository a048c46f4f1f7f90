"""A meshchat node driven by JSON-line commands: ``python -m bench.agent JSON``.

It uses only the public Python API (``Node``, ``Room``, events), like any bot would. Config:
``name``, ``interface``, ``data_dir``, ``timings`` ('default' or 'fast'), ``watch_peers``.

Commands (each answered by ``{"ev": "done", "id": ..., "cmd": ...}`` or an ``error``):
  host / join {room}                      t_called, t_done
  say_many {room, prefix, count, rate, duration_s, report_times}
                                           runs in the background; sent, failed, t0, t1
                                           (report_times: the wall time of each say() call)
  stop_say                                 ends every say_many early
  count {room, prefix, expected, deadline_s, idle_s, times}   received, unique, t_first,
                                           t_last (times: first arrival per index)
  stop_count {count_id, grace_s}           ends that running count grace_s from now
  await_text {room, prefix, timeout_s}     the first such message after the command
  await_peer {peer, timeout_s}             ``node.peers()`` lists that name
  ping {peer, rounds, warmup, rate}        rtts_us (timed around ``await node.ping``),
                                           reported_us, failures, last_error; ``rate``
                                           paces the round trips (per second, 0: back to back)
  history {room, prefix}                   texts with that prefix, in order
  state {room}                             host and members as this node sees them
  stats                                    the node's counters (``node.stats``: drops by reason)
  send_file {peer, path}                   ``await node.send_file``: the transfer's id, t
  ping_bg {peer, rate} / stop_ping         pings in the background until ``stop_ping``, which
                                           answers with rtts_us and failures
  transfers                                ``node.transfers()``: id, direction, state, done_bytes
  quit
Events: started (with ``address``, what ``--peer`` takes), t0 (just before the Node is made),
discovered, host_changed, peer_joined, peer_left, peer_gone, first_message (after a join),
notice; with file transfer: file_offered, transfer_progress (done_bytes), transfer_done
(sha256, path), transfer_failed (reason). With ``accept_files_into`` (a folder) in the config
every offer is accepted into it, as ``meshchat receive --into`` does.

With ``profile`` (a path) in the config the whole run is under cProfile, dumped there at exit;
with ``trace_start`` the phases of ``Node.start()`` are timed (bench/startup_trace.py) and
reported in a ``phases`` event after ``started``; with ``trace_observer`` what the node does on
discovering a peer is timed, and the ``spans`` command returns (and forgets) those spans.
``MESHCHAT_BENCH_LOG`` (a level: ``debug``, ``info``) in the environment sends the node's log
to the agent's stderr (the worker's log file: keep them with ``--logs DIR``), each line led by
the wall-clock time the events carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import emit, index_of, log, now, text_of


@dataclass
class Counter:
    room: str
    prefix: str
    expected: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    received: int = 0
    seen: set[int] = field(default_factory=set)
    times: dict[int, float] | None = None  # first arrival per index, when asked
    t_first: float = 0.0
    t_last: float = 0.0
    ident: str | None = None
    stop_at: float | None = None  # set by ``stop_count``: end then (monotonic)


@dataclass
class TextWaiter:
    room: str
    prefix: str
    seen: asyncio.Event = field(default_factory=asyncio.Event)


def _name(peer: Any) -> str:
    return str(getattr(peer, "name", peer))


class Agent:
    def __init__(self, node: Any, api: Any, watch_peers: bool,
                 accept_files_into: str | None = None) -> None:
        self.node = node
        self.accept_files_into = accept_files_into
        self.pinging: asyncio.Event | None = None
        self.api = api
        self.rooms: dict[str, Any] = {}
        self.counters: list[Counter] = []
        self.waiters: list[TextWaiter] = []
        self.join_marks: set[str] = set()
        self.discovered: set[str] = set()
        self.say_tasks: set[asyncio.Task[None]] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.watch_peers = watch_peers

    # ------------------------------------------------------------------ events

    async def pump(self) -> None:
        ev = self.api
        async for event in self.node.events():
            if isinstance(event, ev.Message):
                self.on_message(event)
            elif isinstance(event, ev.PeerDiscovered):
                self.on_discovered(_name(event.peer), "event")
            elif isinstance(event, ev.HostChanged):
                logging.getLogger("bench.agent").debug("event HostChanged: %s is host of %s",
                                                       _name(event.new), event.room)
                emit("host_changed", room=event.room, new=_name(event.new),
                     old=_name(event.old) if event.old is not None else None,
                     term=event.term, t=now())
            elif isinstance(event, ev.PeerJoined):
                emit("peer_joined", room=event.room, name=_name(event.peer), t=now())
            elif isinstance(event, ev.PeerLeft):
                emit("peer_left", room=event.room, name=_name(event.peer),
                     reason=event.reason, t=now())
            elif isinstance(event, ev.PeerGone):
                emit("peer_gone", name=_name(event.peer), reason=event.reason, t=now())
            elif isinstance(event, ev.Notice):
                emit("notice", text=event.text, level=event.level, t=now())
            else:
                self.on_file_event(event)

    def on_file_event(self, event: Any) -> None:
        kind = type(event).__name__
        transfer = getattr(event, "transfer", None)
        if transfer is None:
            return
        fields = {"transfer": transfer.id, "size": transfer.size,
                  "done_bytes": transfer.done_bytes, "t": now()}
        if kind == "FileOffered":
            emit("file_offered", name=transfer.name, **fields)
            if self.accept_files_into is not None:
                self.spawn(self.accept(transfer.id))
        elif kind == "TransferProgress":
            emit("transfer_progress", direction=transfer.direction, **fields)
        elif kind == "TransferDone":
            emit("transfer_done", direction=transfer.direction, sha256=transfer.sha256,
                 path=str(transfer.path or ""), **fields)
        elif kind == "TransferFailed":
            emit("transfer_failed", direction=transfer.direction,
                 reason=str(getattr(event, "reason", "")), **fields)

    async def accept(self, transfer_id: str) -> None:
        try:
            await self.node.accept_file(transfer_id, into=self.accept_files_into)
            emit("file_accepted", transfer=transfer_id, t=now())
        except Exception as exc:
            emit("error", cmd="accept_file", error=f"accept_file: {exc!r}")

    def on_message(self, msg: Any) -> None:
        room, text = msg.room, msg.text
        if room in self.join_marks:
            self.join_marks.discard(room)
            emit("first_message", room=room, t=now())
        for counter in self.counters:
            if counter.room == room and (index := index_of(text, counter.prefix)) is not None:
                counter.t_last = now()
                if counter.received == 0:
                    counter.t_first = counter.t_last
                counter.received += 1
                counter.seen.add(index)
                if counter.times is not None:
                    counter.times.setdefault(index, counter.t_last)
                if len(counter.seen) >= counter.expected:
                    counter.done.set()
        for waiter in self.waiters:
            if waiter.room == room and text.startswith(waiter.prefix):
                waiter.seen.set()

    def on_discovered(self, name: str, via: str) -> None:
        if name not in self.discovered:
            self.discovered.add(name)
            emit("discovered", name=name, via=via, t=now())

    async def poll_peers(self) -> None:
        while True:
            for peer in self.node.peers():
                self.on_discovered(_name(peer), "peers()")
            await asyncio.sleep(0.005)

    # ---------------------------------------------------------------- commands

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any] | None:
        """Run one command; a dict is the answer, None means the command answers later."""
        match cmd["cmd"]:
            case "host" | "join":
                t_called = now()
                if cmd["cmd"] == "join":
                    self.join_marks.add(cmd["room"])
                    room = await self.node.join(cmd["room"])
                else:
                    room = await self.node.host(cmd["room"])
                self.rooms[cmd["room"]] = room
                return {"t_called": t_called, "t_done": now()}
            case "say_many":
                self.spawn(self.say_many(cmd), say=True)
                return None
            case "stop_say":
                for task in list(self.say_tasks):
                    task.cancel()
                return {}
            case "count":
                self.spawn(self.count(cmd))
                return None
            case "stop_count":  # end a running count after grace_s (lines still in flight)
                for counter in self.counters:
                    if counter.ident == cmd["count_id"]:
                        counter.stop_at = time.monotonic() + float(cmd.get("grace_s", 1.0))
                return {}
            case "await_text":
                self.spawn(self.await_text(cmd))
                return None
            case "await_peer":
                deadline = time.monotonic() + float(cmd.get("timeout_s", 20.0))
                while cmd["peer"] not in {_name(p) for p in self.node.peers()}:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{cmd['peer']} not among peers()")
                    await asyncio.sleep(0.01)
                return {"t": now()}
            case "ping":
                return await self.ping(cmd)
            case "history":
                room = self.rooms[cmd["room"]]
                prefix = cmd.get("prefix", "")
                texts = [m.text for m in room.history() if m.text.startswith(prefix)]
                return {"texts": texts}
            case "state":
                room = self.rooms[cmd["room"]]
                return {"host": _name(room.host), "members": [_name(m) for m in room.members]}
            case "spans":  # with trace_observer: what the node did since the last ask
                from bench import startup_trace

                return {"spans": startup_trace.take()}
            case "stats":
                return {"stats": dict(getattr(self.node, "stats", {})),
                        "peers": len(self.node.peers())}
            case "send_file":
                if not hasattr(self.node, "send_file"):
                    raise NotImplementedError("this node has no send_file")
                transfer = await self.node.send_file(cmd["peer"], cmd["path"])
                return {"transfer": transfer.id, "t": now()}
            case "transfers":
                return {"transfers": [
                    {"id": t.id, "direction": t.direction, "state": str(t.state),
                     "done_bytes": t.done_bytes, "size": t.size}
                    for t in self.node.transfers()]}
            case "ping_bg":
                self.pinging = asyncio.Event()
                self.spawn(self.ping_background(cmd, self.pinging))
                return None
            case "stop_ping":
                if self.pinging is not None:
                    self.pinging.set()
                return {}
            case "profile":  # cProfile of the event loop's thread for ``seconds``, dumped
                self.spawn(self.profile_for(str(cmd["path"]), float(cmd.get("seconds", 3.0))))
                return {}
            case other:
                raise ValueError(f"unknown command {other!r}")

    async def profile_for(self, path: str, seconds: float) -> None:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU, not the time others ran
        profiler.enable()
        try:
            await asyncio.sleep(seconds)
        finally:
            profiler.disable()
            profiler.dump_stats(path)

    def spawn(self, coro: Any, say: bool = False) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if say:
            self.say_tasks.add(task)
            task.add_done_callback(self.say_tasks.discard)

    async def say_many(self, cmd: dict[str, Any]) -> None:
        room = self.rooms[cmd["room"]]
        count, rate, prefix = int(cmd["count"]), float(cmd.get("rate", 0.0)), cmd["prefix"]
        duration_s = float(cmd.get("duration_s", 0.0))  # 0: no time limit
        times: list[float] | None = [] if cmd.get("report_times") else None
        sent, failed, last_error, stopped = [], 0, "", False
        t0 = now()
        started = time.monotonic()
        try:
            for i in range(count):
                if rate > 0:
                    ahead = started + i / rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if duration_s and time.monotonic() - started > duration_s:
                    break
                try:
                    if times is not None:
                        times.append(now())
                    await room.say(text_of(prefix, i))
                    sent.append(i)
                except Exception as exc:  # a failed say is counted, not fatal
                    failed += 1
                    last_error = repr(exc)
        except asyncio.CancelledError:
            stopped = True
        reply: dict[str, Any] = {"sent": len(sent), "failed": failed, "last_error": last_error,
                                 "t0": t0, "t1": now(), "stopped": stopped}
        if cmd.get("report_indices"):
            reply["indices"] = sent
        if times is not None:
            reply["times"] = times
        emit("done", id=cmd.get("id"), cmd="say_many", **reply)

    async def count(self, cmd: dict[str, Any]) -> None:
        counter = Counter(cmd["room"], cmd["prefix"], int(cmd["expected"]),
                          times={} if cmd.get("times") else None, ident=cmd.get("id"))
        self.counters.append(counter)
        deadline = time.monotonic() + float(cmd.get("deadline_s", 60.0))
        idle_s = float(cmd.get("idle_s", 5.0))
        try:
            while not counter.done.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(counter.done.wait(), 0.2)
                if counter.received and now() - counter.t_last > idle_s:
                    break
                if counter.stop_at is not None and time.monotonic() >= counter.stop_at:
                    break
        finally:
            self.counters.remove(counter)
        extra = {} if counter.times is None else {"times": counter.times}
        emit("done", id=cmd.get("id"), cmd="count", received=counter.received,
             unique=len(counter.seen), t_first=counter.t_first, t_last=counter.t_last, **extra)

    async def await_text(self, cmd: dict[str, Any]) -> None:
        waiter = TextWaiter(cmd["room"], cmd["prefix"])
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter.seen.wait(), float(cmd.get("timeout_s", 20.0)))
            emit("done", id=cmd.get("id"), cmd="await_text", t=now())
        except TimeoutError:
            emit("error", id=cmd.get("id"), cmd="await_text",
                 error=f"no message with prefix {cmd['prefix']!r} in {cmd['room']}")
        finally:
            self.waiters.remove(waiter)

    async def ping(self, cmd: dict[str, Any]) -> dict[str, Any]:
        rounds, warmup = int(cmd["rounds"]), int(cmd.get("warmup", 50))
        rate = float(cmd.get("rate", 0.0))
        rtts, reported, failures, last_error = [], [], 0, ""
        begun = time.monotonic()
        for i in range(warmup + rounds):
            if rate > 0:
                ahead = begun + i / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            started = time.perf_counter()
            try:
                value = await self.node.ping(cmd["peer"])
            except Exception as exc:  # a timeout under load is a figure, not a crash
                value, failures, last_error = None, failures + 1, repr(exc)
            elapsed = (time.perf_counter() - started) * 1e6
            if i >= warmup:
                rtts.append(elapsed)  # a failed round counts with the time it took to fail
                if value is not None:
                    reported.append(float(value) * 1e6)
        return {"rtts_us": rtts, "reported_us": reported, "failures": failures,
                "last_error": last_error}


    async def ping_background(self, cmd: dict[str, Any], stop: asyncio.Event) -> None:
        """Ping at ``rate`` per second until ``stop`` is set (``stop_ping``)."""
        interval = 1.0 / float(cmd.get("rate", 50.0))
        rtts, failures, last_error = [], 0, ""
        while not stop.is_set():
            started = time.perf_counter()
            try:
                await self.node.ping(cmd["peer"])
            except Exception as exc:  # counted: a lost ping under load is a figure
                failures, last_error = failures + 1, repr(exc)
            elapsed = time.perf_counter() - started
            rtts.append(elapsed * 1e6)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, interval - elapsed))
        emit("done", id=cmd.get("id"), cmd="ping_bg", rtts_us=rtts, failures=failures,
             last_error=last_error)


def read_commands(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[dict[str, Any]]) -> None:
    for line in sys.stdin:
        with contextlib.suppress(ValueError):
            loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
    loop.call_soon_threadsafe(queue.put_nowait, {"cmd": "quit"})


async def run(config: dict[str, Any]) -> None:
    try:
        import meshchat
        from meshchat import Limits, Node, Timings
        from meshchat import events as api
    except Exception as exc:  # the product is not there yet: say so, never fake a figure
        emit("unavailable", why=f"meshchat.Node not importable: {exc!r}")
        return
    timings = Timings.fast() if config.get("timings") == "fast" else Timings()
    data_dir = Path(config["data_dir"])
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=read_commands, args=(loop, queue), daemon=True).start()
    if config.get("trace_start") or config.get("trace_observer"):
        from bench import startup_trace

        if config.get("trace_start"):
            startup_trace.install()
        else:
            startup_trace.install_observer()
    t0 = now()
    emit("t0", t=t0, version=getattr(meshchat, "__version__", "?"))
    async with contextlib.AsyncExitStack() as stack:
        try:
            node = await stack.enter_async_context(Node(
                name=config["name"], interfaces=[config.get("interface", "eth0")],
                data_dir=data_dir, timings=timings,
                limits=Limits(**(config.get("limits") or {}))))
        except (ImportError, NotImplementedError) as exc:  # a part of the product is missing
            emit("unavailable", why=f"Node cannot start: {exc!r}")
            return
        agent = Agent(node, api, bool(config.get("watch_peers")),
                      config.get("accept_files_into"))
        agent.spawn(agent.pump())
        if agent.watch_peers:
            agent.spawn(agent.poll_peers())
        emit("started", t=now(), address=str(getattr(node, "address", "")))
        if config.get("trace_start"):
            from bench import startup_trace

            emit("phases", spans=startup_trace.spans_since(t0))
        while (cmd := await queue.get())["cmd"] != "quit":
            try:
                reply = await agent.handle(cmd)
            except Exception as exc:  # one failed command is reported, the node keeps going
                log(f"{cmd['cmd']} failed: {exc!r}")
                emit("error", id=cmd.get("id"), cmd=cmd["cmd"], error=f"{cmd['cmd']}: {exc!r}")
                continue
            if reply is not None:
                emit("done", id=cmd.get("id"), cmd=cmd["cmd"], **reply)
        for task in list(agent.tasks):
            task.cancel()


def main() -> None:
    config = json.loads(sys.argv[1])
    level = os.environ.get("MESHCHAT_BENCH_LOG", "")
    if level:
        logging.basicConfig(stream=sys.stderr, level=level.upper(),
                            format="%(created).3f %(name)s %(levelname)s %(message)s")
    Path(config["data_dir"]).mkdir(parents=True, exist_ok=True)
    profiler = None
    if config.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        asyncio.run(run(config))
    except Exception as exc:
        log(f"agent failed: {exc!r}")
        emit("error", error=f"agent: {exc!r}")
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(config["profile"])


if __name__ == "__main__":
    main()
