"""File transfer (issue 7): one file, namespace to namespace, written and verified.

*raw*: ``bench/w_rawfile.py``, a synchronous pyzmq CURVE DEALER/ROUTER pull with the same chunk
size and credit window meshchat uses, written to disk and hashed. *meshchat*: ``await
node.send_file(name, path)`` on one node, ``accept_file`` on the other (bench.agent with
``accept_files_into``), timed from the accept to the receiver's ``TransferDone`` (which comes
after the whole file is verified). During that transfer the sender pings the receiver 50 times
a second and says 20 lines a second, and both processes' resident memory is sampled every
50 ms. Then the resume figure: the receiver is killed (``kill -9``) at half the file, started
again on the same data dir, and the bytes the sender served in all are compared with the size.
Each of the three runs starts after ``sync``, so no run pays for the writeback of the one
before; both end with the file on disk (raw: ``fsync``; meshchat: its fsync before delivery).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import percentile
from bench.fanout import curve_keys
from bench.lab import BenchError, Lab, Unavailable, Worker, has, spawn_worker, stop_workers
from bench.scale import _threads_cpu_s

PORT = 5610
PING_RATE = 50.0
CHAT_RATE = 20.0
MIB = 1024 * 1024


def transfer_limits() -> tuple[int, int]:
    """meshchat's chunk size and credit window (bytes, chunks), from its ``Limits``."""
    try:
        from meshchat.config import Limits
    except Exception as exc:
        raise Unavailable(f"meshchat not importable: {exc!r}") from None
    limits = Limits()
    chunk = getattr(limits, "file_chunk_bytes", None) or getattr(limits, "chunk_bytes", None)
    window = getattr(limits, "file_credit_chunks", None) or getattr(limits, "file_window", None)
    if not chunk or not window:
        raise Unavailable("meshchat's Limits have no file chunk size / credit window")
    return int(chunk), int(window)


def make_source(path: Path, size: int) -> str:
    """A file of ``size`` random bytes; its SHA-256 hex."""
    digest = hashlib.sha256()
    block = 4 * MIB
    with path.open("wb") as out:
        left = size
        while left:
            data = os.urandom(min(block, left))
            out.write(data)
            digest.update(data)
            left -= len(data)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(4 * MIB):
            digest.update(data)
    return digest.hexdigest()


def _rss_kib(pid: int, key: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak resident memory of some processes, sampled every 50 ms on a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_kib = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak_kib[pid] = max(self.peak_kib[pid], _rss_kib(pid))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True, slots=True)
class RawResult:
    seconds: float
    size: int

    @property
    def rate(self) -> float:
        return self.size / self.seconds


def raw(lab: Lab, source: Path, sha: str, size: int) -> RawResult:
    chunk, window = transfer_limits()
    keys = curve_keys()
    server, client = lab.hosts[0], lab.hosts[1]
    dest = lab.workdir / "raw-received.bin"
    os.sync()  # no writeback left from the run before: each run starts on a quiet disk
    try:
        serve = spawn_worker(server, "rawfile-serve", "w_rawfile", "serve", json.dumps(
            {"bind": f"tcp://{server.addr}:{PORT}", "path": str(source), "curve": keys}))
        serve.expect_event("ready", 15)
        fetch = spawn_worker(client, "rawfile-fetch", "w_rawfile", "fetch", json.dumps(
            {"connect": f"tcp://{server.addr}:{PORT}", "size": size, "chunk": chunk,
             "window": window, "dest": str(dest), "curve": keys}))
        res = fetch.expect_event("result", 60 + size / (20 * MIB))
        if res["sha256"] != sha:
            raise BenchError("raw pull: the hash of what arrived differs from the source")
        return RawResult(float(res["seconds"]), size)
    finally:
        stop_workers(lab)
        dest.unlink(missing_ok=True)


@dataclass
class MeshResult:
    seconds: float
    size: int
    idle_rss_kib: dict[str, int]
    peak_rss_kib: dict[str, int]
    idle_ping_us: list[float]
    busy_ping_us: list[float]
    ping_failures: int
    idle_chat_ms: list[float]
    busy_chat_ms: list[float]
    chat_lost: int
    refetched: int | None = None
    resume_note: str = ""
    notes: list[str] = field(default_factory=list)
    # CPU seconds during the transfer, by process and thread name (all threads of a name)
    cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.size / self.seconds


def _chat_latencies(sender: Worker, receiver: Worker, prefix: str,
                    seconds: float) -> tuple[list[float], int]:
    """Say CHAT_RATE lines a second for ``seconds`` on sender; per-line latency at receiver."""
    count = max(1, int(seconds * CHAT_RATE))
    ident = f"count-{prefix}"
    receiver.send_cmd("count", id=ident, room="bench", prefix=prefix, expected=count,
                      deadline_s=seconds + 20, idle_s=5, times=True)
    said = sender.call("say_many", seconds + 30, room="bench", prefix=prefix, count=count,
                       rate=CHAT_RATE, report_times=True, report_indices=True)
    got = receiver.expect_event("done", seconds + 30, where=has(id=ident))
    times = {int(k): float(v) for k, v in got.get("times", {}).items()}
    lat = [(times[i] - t) * 1000 for i, t in zip(said["indices"], said["times"], strict=False)
           if i in times]
    return lat, int(said["sent"]) - len(times)


def _start(lab: Lab, name: str, host: int, **extra: object) -> Worker:
    from bench.agent_ctl import meshchat_missing, spawn_agent

    missing = meshchat_missing()
    if missing:
        raise Unavailable(missing)
    worker = spawn_agent(lab.hosts[host], name, tag="files", **extra)  # type: ignore[arg-type]
    worker.expect_event("started", 30)
    return worker


def meshchat(lab: Lab, source: Path, sha: str, size: int, resume: bool = True) -> MeshResult:
    inbox = lab.workdir / "inbox"
    inbox.mkdir(exist_ok=True)
    recv_dir = str(lab.workdir / "data" / "files-receiver")
    os.sync()  # as before the raw runs
    try:
        sender = _start(lab, "sender", 0)
        receiver = _start(lab, "receiver", 1, data_dir=recv_dir, accept_files_into=str(inbox))
        sender.call("host", 20, room="bench")
        receiver.call("join", 20, room="bench")
        sender.call("await_peer", 20, peer="receiver")
        pids = {"sender": sender.popen.pid, "receiver": receiver.popen.pid}
        idle_rss = {k: _rss_kib(p) for k, p in pids.items()}
        idle_ping = sender.call("ping", 60, peer="receiver", rounds=200, warmup=20,
                                rate=PING_RATE)["rtts_us"]
        idle_chat, _ = _chat_latencies(sender, receiver, "idle-", 3.0)

        with RssSampler(list(pids.values())) as rss:
            offer = sender.call("send_file", 30, peer="receiver", path=str(source))
            tid = offer["transfer"]
            receiver.expect_event("file_accepted", 30, where=has(transfer=tid))
            t_accept = time.time()
            cpu_before = {k: _threads_cpu_s(p) for k, p in pids.items()}
            sender.send_cmd("ping_bg", id="ping-busy", peer="receiver", rate=PING_RATE)
            prefix = "busy-"
            receiver.send_cmd("count", id="count-busy", room="bench", prefix=prefix,
                              expected=10_000, deadline_s=600, idle_s=600, times=True)
            sender.send_cmd("say_many", id="say-busy", room="bench", prefix=prefix,
                            count=100_000, rate=CHAT_RATE, report_times=True,
                            report_indices=True)
            done = receiver.expect_event("transfer_done", 120 + size / (5 * MIB),
                                         where=has(transfer=tid))
            seconds = float(done["t"]) - t_accept
            cpu_after = {k: _threads_cpu_s(p) for k, p in pids.items()}
            sender.call("stop_say", 10)
            said = sender.expect_event("done", 30, where=has(id="say-busy"))
            sender.call("stop_ping", 10)
            pings = sender.expect_event("done", 30, where=has(id="ping-busy"))
        peak = {k: rss.peak_kib[p] for k, p in pids.items()}
        if done.get("sha256") != sha or file_sha256(Path(done["path"])) != sha:
            raise BenchError("meshchat: the delivered file's hash differs from the source")
        receiver.call("stop_count", 10, count_id="count-busy", grace_s=1.0)
        got = receiver.expect_event("done", 30, where=has(id="count-busy"))
        got_times = {int(k): float(v) for k, v in got.get("times", {}).items()}
        busy_chat = [(got_times[i] - t) * 1000
                     for i, t in zip(said["indices"], said["times"], strict=False)
                     if i in got_times]
        result = MeshResult(seconds, size, idle_rss, peak, idle_ping, pings["rtts_us"],
                            int(pings["failures"]), idle_chat, busy_chat,
                            int(said["sent"]) - len(got_times))
        result.cpu_s = {k: {name: spent - cpu_before[k].get(name, 0.0)
                            for name, spent in cpu_after[k].items()} for k in pids}
        Path(done["path"]).unlink(missing_ok=True)
        if resume:
            _resume(lab, result, sender, receiver, source, sha, size, recv_dir, inbox)
        return result
    finally:
        stop_workers(lab)


def _served_bytes(sender: Worker) -> int | None:
    stats = sender.call("stats", 10)["stats"]
    for key in ("file_bytes_sent", "transfer_bytes_sent", "file_chunk_bytes_sent"):
        if key in stats:
            return int(stats[key])
    return None


def _resume(lab: Lab, result: MeshResult, sender: Worker, receiver: Worker, source: Path,
            sha: str, size: int, recv_dir: str, inbox: Path) -> None:
    before = _served_bytes(sender)
    if before is None:
        result.resume_note = "the sender counts no served file bytes in node.stats"
        return
    offer = sender.call("send_file", 30, peer="receiver", path=str(source))
    tid = offer["transfer"]
    receiver.expect_event("file_accepted", 30, where=has(transfer=tid))
    deadline = time.monotonic() + 120
    while True:
        ev = receiver.expect_event("transfer_progress", max(1.0, deadline - time.monotonic()),
                                   where=has(transfer=tid))
        if int(ev["done_bytes"]) >= size // 2:
            break
    receiver.kill()
    receiver.wait(10)
    restarted = _start(lab, "receiver", 1, data_dir=recv_dir, accept_files_into=str(inbox))
    done = restarted.expect_event("transfer_done", 120 + size / (5 * MIB),
                                  where=has(transfer=tid))
    if done.get("sha256") != sha:
        raise BenchError("meshchat resume: the delivered file's hash differs from the source")
    after = _served_bytes(sender)
    assert after is not None
    result.refetched = (after - before) - size
    Path(done["path"]).unlink(missing_ok=True)


def summary(res: MeshResult) -> dict[str, float]:
    return {
        "idle_ping_p99_ms": percentile(res.idle_ping_us, 99) / 1000,
        "busy_ping_p99_ms": percentile(res.busy_ping_us, 99) / 1000,
        "idle_chat_p99_ms": percentile(res.idle_chat_ms, 99),
        "busy_chat_p99_ms": percentile(res.busy_chat_ms, 99),
    }
