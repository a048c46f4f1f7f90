"""File transfer, the node's part (issue 7): offers, the pull, the disk, the store.

The decisions are the pure core's (``meshchat.transfer``: ``Pull`` on the receiver, ``Serve``
on the sender); this part carries out their effects: frames through ``Wire`` over the CURVE
direct channel, chunks written with ``pwrite`` into ``NAME.part`` beside the destination and
read with ``pread`` on the sender (one chunk in memory at a time), whole-file hashes taken
from the chunks as they pass in order and finished in a thread, and every transfer's state in
SQLite (``storage.transfers``) so both sides resume after a restart. Whatever a peer sends
that does not fit a transfer with it is dropped and counted (``dropped_file_<reason>``).
What touches the file system is in ``runtime.filedisk``; the bounded table of jobs is
``runtime.filejobs``; the receiver's effects and a job's end are ``runtime.filepull``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..clock import Clock
from ..config import Limits, Timings
from ..errors import FileError, PeerNotFound, Timeout, TransferNotFound
from ..events import (
    Event,
    FileOffered,
    Notice,
    Transfer,
    TransferProgress,
)
from ..filenames import REFUSALS, clean_name, free_path, plan_offer
from ..protocol.messages import (
    FileChunk,
    FileGet,
    FileItem,
    FileOffer,
    FileState,
    FileSumRequest,
    FileSums,
    WireMessage,
)
from ..storage.transfers import TransferRecord, TransferStore
from ..transfer import (
    Drop,
    Layout,
    Pull,
    Serve,
    chunk_digest,
)
from . import filedisk as disk
from .filejobs import Job, JobTable
from .filepull import JobRunner
from .peers import PeerBook
from .tasks import Tasks
from .wire import Wire

__all__ = ["Files"]

log = logging.getLogger("meshchat.files")

_ANSWERS = {"accepted", "declined", "cancelled", "done", "failed"}


class Files:
    def __init__(self, data_dir: Path, wire: Wire, peers: PeerBook,
                 emit: Callable[[Event], None], tasks: Tasks, clock: Clock, limits: Limits,
                 timings: Timings, stats: Counter[str], random_bytes: Callable[[int], bytes],
                 store: TransferStore | None = None) -> None:
        self._data_dir = data_dir
        self._wire = wire
        self._peers = peers
        self._emit = emit
        self._tasks = tasks
        self._clock = clock
        self._limits = limits
        self._timings = timings
        self._stats = stats
        self._random = random_bytes
        # Opened in a thread started by Node.start (its schema and WAL setup sync to disk:
        # never on the loop, and the node announces itself meanwhile); the stored transfers
        # are loaded on first use (``load``: Node.start ends with it).
        self._store = store or TransferStore(data_dir / "transfers.sqlite")
        self._loaded = False
        self._jobs = JobTable(self._store, limits, stats)
        self._disk = disk.DiskThread(4 * limits.file_credit_chunks)
        self._run = JobRunner(wire, peers, emit, tasks, clock, limits, stats, self._store,
                              self._disk)
        self.accept_from: set[str] = set()  # names (lower case) whose offers need no /accept
        self.accept_all = False
        self.default_dir = data_dir / "downloads"
        wire.also_solicited = self._solicited

    def load(self) -> None:
        """The transfers stored by earlier runs (once; waits for the store to open)."""
        if self._loaded:
            return
        records = self._store.load()  # raises, and is tried again, if the store cannot open
        self._loaded = True
        for rec in records:
            self._load(rec)

    # ---------------------------------------------------------------- lifecycle

    def _load(self, rec: TransferRecord) -> None:
        try:
            layout = Layout([s for _, s in rec.files], rec.chunk_bytes)
        except ValueError:
            return
        job = Job(rec, layout)
        self._jobs.add(job)
        if rec.direction == "out":
            job.serve = Serve(layout, self._limits.file_credit_chunks, rec.created,
                              self._timings.file_offer_ttl_s)
            if not job.final:
                # The receiver may never have had the offer (we died before it left), or
                # have lost it, or be waiting for us: offer again until it answers.
                job.reoffer_at = 0.0
                if rec.state in ("accepted", "active"):
                    rec.state = "interrupted"  # until the receiver asks again
        elif rec.state in ("accepted", "active", "interrupted"):
            have = self._store.chunks(rec.tid)
            job.pull = self._new_pull(layout, have)
            job.done_bytes = job.pull.received_bytes
            rec.state = "interrupted"
            try:
                job.fds = disk.open_parts(job.rec)
            except OSError as exc:
                self._run.finish(job, "failed", f"cannot write: {exc.strerror}", notify=True)
                return
            job.last_progress_at = 0.0

    def _new_pull(self, layout: Layout, have: dict[int, bytes] | list[int]) -> Pull:
        return Pull(layout, self._limits.file_credit_chunks, list(have),
                    retry_s=self._timings.file_retry_s, stall_s=self._timings.file_stall_s)

    async def run(self) -> None:
        """The timer: lost chunks asked again, stalls noticed, offers expired, rows saved."""
        self.load()
        now = self._clock.monotonic()
        for job in self._jobs:
            if job.pull is not None and not job.final:
                self._run.apply(job, job.pull.start(now))
        while not self._tasks.closed:
            await self._clock.sleep(self._timings.file_tick_s)
            self.tick()

    def tick(self) -> None:
        now = self._clock.monotonic()
        wall = self._clock.time()
        for job in self._jobs:
            if job.final:
                continue
            if job.pull is not None:
                self._run.apply(job, job.pull.tick(now))
            elif job.serve is not None and job.rec.state == "offered" and \
                    job.serve.expired(wall):
                self._run.finish(job, "failed", "expired", notify=True)
            elif job.reoffer_at is not None:
                self._reoffer(job, now)
        self._store.flush()

    def _reoffer(self, job: Job, now: float) -> None:
        """Offer again (a fresh offer that may have been lost, or any open one after our
        restart) while the receiver is heard and has not answered; the first time it is
        heard again, at once."""
        if not self._peers.is_alive(job.rec.peer):
            job.reoffer_at, job.reoffers = 0.0, 0
            return
        if job.reoffer_at is None or now < job.reoffer_at:
            return
        job.reoffers += 1
        t = self._timings
        job.reoffer_at = now + min(t.file_reoffer_max_s,
                                   t.file_reoffer_s * 2 ** min(job.reoffers - 1, 16))
        self._stats["file_reoffers"] += 1
        self._wire.send(job.rec.peer, self._offer(job.rec))

    def _answered(self, job: Job) -> None:
        job.reoffer_at = None

    def close(self) -> None:
        self._disk.close()
        for job in self._jobs:
            self._run.close_fds(job)
            for fut in job.waiters:
                if not fut.done():
                    fut.cancel()
        with contextlib.suppress(Exception):
            self._store.close()

    # ---------------------------------------------------------------- public operations

    def transfers(self) -> list[Transfer]:
        self.load()
        return [self._run.public(j) for j in self._jobs]

    def get(self, tid_or_number: str) -> Job:
        self.load()
        return self._jobs.find(tid_or_number)

    def latest_offer(self) -> Job:
        self.load()
        return self._jobs.latest_offer()

    async def send(self, pid: bytes, path: str | os.PathLike[str], *, warn: bool = True
                   ) -> Transfer:
        """Offer ``path`` to ``pid``; ``warn``: tell the user of the symlinks left out (a
        room send tells it once, not once per member)."""
        self.load()
        source = disk.expand(path)
        items, paths, skipped = await asyncio.to_thread(disk.scan, source)
        if sum(s for _, s in items) > self._limits.max_transfer_bytes or \
                len(items) > self._limits.max_offer_files:
            raise FileError(f"{source} is too large to offer")
        if self._jobs.open_outgoing() >= self._limits.max_open_outgoing:
            raise FileError(f"{self._limits.max_open_outgoing} transfers are open already: "
                            "cancel one or wait")
        for name in skipped if warn else ():
            self._emit(Notice(f"{name}: a symlink, not sent", "warning"))
        tid = self._random(16)
        rec = TransferRecord(
            tid, "out", pid, self._peers.info(pid).name, source.name or str(source), items,
            self._limits.file_chunk_bytes, "offered", source=str(source),
            mtime_ns=disk.signature(paths), created=self._clock.time(),
            number=self._jobs.next_number())
        layout = Layout([s for _, s in items], rec.chunk_bytes)
        job = Job(rec, layout, serve=Serve(layout, self._limits.file_credit_chunks,
                                            rec.created, self._timings.file_offer_ttl_s))
        if not self._wire.send(pid, self._offer(rec)):
            raise PeerNotFound(f"{self._peers.info(pid).label} cannot be reached")
        self._peers.pin(pid)
        self._jobs.add(job)
        # Until the receiver says it has the offer (its "offered" receipt), offer again: a
        # frame written into a connection that dies is lost with it.
        job.reoffer_at = self._clock.monotonic() + self._timings.file_reoffer_s
        job.reoffers = 1
        self._run.save(job)
        self._jobs.bound()
        return self._run.public(job)

    @staticmethod
    def _offer(rec: TransferRecord) -> FileOffer:
        return FileOffer(rec.tid, rec.name, tuple(FileItem(p, s) for p, s in rec.files),
                         rec.chunk_bytes)

    async def accept(self, number: str | None, into: str | os.PathLike[str] | None
                     ) -> Transfer:
        job = self.latest_offer() if number is None else self.get(number)
        rec = job.rec
        if rec.direction != "in" or rec.state != "offered":
            raise FileError(f"transfer {rec.number} is not an open offer ({rec.state})")
        folder = disk.expand(into) if into is not None else self.default_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(folder).free
        except OSError as exc:
            raise FileError(f"cannot write into {folder}: {exc.strerror}") from exc
        if free < job.layout.size:
            self._run.finish(job, "failed", "no space", notify=True)
            raise FileError(f"no space in {folder}: {disk.size_text(job.layout.size)} needed, "
                            f"{disk.size_text(free)} free")
        dest = free_path(folder, clean_name(rec.name))
        rec.path = str(dest)
        try:
            job.fds = disk.open_parts(job.rec)
        except OSError as exc:
            self._run.finish(job, "failed", f"cannot write: {exc.strerror}", notify=True)
            raise FileError(f"cannot write into {folder}: {exc.strerror}") from exc
        rec.state = "accepted"
        job.pull = self._new_pull(job.layout, [])
        self._run.save(job)
        self._wire.send(rec.peer, FileState(rec.tid, "accepted", ""))
        self._run.apply(job, job.pull.start(self._clock.monotonic()))
        return self._run.public(job)

    async def decline(self, number: str | None) -> Transfer:
        job = self.latest_offer() if number is None else self.get(number)
        if job.rec.direction != "in" or job.rec.state != "offered":
            raise FileError(f"transfer {job.rec.number} is not an open offer")
        self._run.finish(job, "declined", "declined", notify=True)
        return self._run.public(job)

    async def cancel(self, number: str) -> Transfer:
        job = self.get(number)
        if not job.final:
            self._run.finish(job, "cancelled", "cancelled", notify=True)
        return self._run.public(job)

    async def wait(self, number: str, timeout: float | None) -> Transfer:
        job = self.get(number)
        if job.final:
            return self._run.public(job)
        fut: asyncio.Future[Transfer] = asyncio.get_running_loop().create_future()
        job.waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError as exc:
            raise Timeout(f"transfer {number} is not finished") from exc
        finally:
            with contextlib.suppress(ValueError):
                job.waiters.remove(fut)

    # ---------------------------------------------------------------- frames in

    def _solicited(self, peer: bytes, m: WireMessage) -> bool:
        self.load()
        if isinstance(m, FileChunk | FileSums):
            job = self._jobs.by_id(m.transfer_id)
            return job is not None and job.rec.peer == peer and job.rec.direction == "in" \
                and job.pull is not None
        return False

    def on_frame(self, peer: bytes, m: WireMessage) -> None:
        self.load()
        match m:
            case FileChunk():
                self._on_chunk(peer, m)
            case FileGet():
                self._on_get(peer, m)
            case FileOffer():
                self._on_offer(peer, m)
            case FileState():
                self._on_state(peer, m)
            case FileSumRequest():
                self._on_sum_request(peer, m)
            case FileSums():
                self._on_sums(peer, m)

    def _mine(self, peer: bytes, tid: bytes, direction: str) -> Job | None:
        job = self._jobs.by_id(tid)
        if job is None or job.rec.peer != peer or job.rec.direction != direction:
            self._stats["dropped_file_unknown"] += 1
            return None
        return job

    def _on_offer(self, peer: bytes, m: FileOffer) -> None:
        job = self._jobs.by_id(m.transfer_id)
        if job is not None:
            if job.rec.peer == peer and job.rec.direction == "in":
                # the sender restarted and offers again: say where we are ("offered": we
                # have it, not answered yet)
                state = job.rec.state if job.final or job.rec.state == "offered" \
                    else "accepted"
                self._wire.send(peer, FileState(m.transfer_id, state, job.rec.error))
            return
        limits = self._limits
        sizes = [f.size for f in m.files]
        if not m.files or len(m.files) > limits.max_offer_files or \
                sum(sizes) > limits.max_transfer_bytes or \
                not 1024 <= m.chunk_bytes <= limits.max_frame_bytes - 4096 or \
                len(m.transfer_id) != 16:
            self._stats["dropped_file_bad_offer"] += 1
            return
        plan = plan_offer(m.title, [f.path for f in m.files], limits.max_offer_path_bytes)
        if isinstance(plan, str):
            # refused, not trimmed into something else: counted, and the sender is told
            self._stats["dropped_file_" + plan] += 1
            self._wire.send(peer, FileState(m.transfer_id, "failed",
                                            f"refused: {REFUSALS[plan]}"))
            return
        items = list(zip(plan.paths, sizes, strict=True))
        rec = TransferRecord(m.transfer_id, "in", peer, self._peers.info(peer).name,
                             plan.name, items, m.chunk_bytes, "offered",
                             created=self._clock.time(), number=self._jobs.next_number())
        job = Job(rec, Layout(sizes, m.chunk_bytes))
        self._jobs.add(job)
        self._run.save(job)
        self._jobs.bound()
        self._wire.send(peer, FileState(m.transfer_id, "offered", ""))  # a receipt: we have it
        self._emit(FileOffered(self._run.public(job)))
        name = self._peers.info(peer).name.lower()
        if self.accept_all or name in self.accept_from:
            self._tasks.spawn(self._auto_accept(str(rec.number)), name="meshchat-accept")

    async def _auto_accept(self, number: str) -> None:
        with contextlib.suppress(FileError, TransferNotFound):
            await self.accept(number, None)

    def _on_state(self, peer: bytes, m: FileState) -> None:
        job = self._jobs.by_id(m.transfer_id)
        offered = m.state == "offered" and job is not None and job.rec.direction == "out"
        if job is None or job.rec.peer != peer or not (m.state in _ANSWERS or offered):
            self._stats["dropped_file_unknown"] += 1
            return
        if job.rec.direction == "out":
            self._answered(job)
        if job.final or m.state == "offered":
            return
        if m.state == "accepted":
            if job.rec.direction == "out" and job.rec.state == "offered":
                job.rec.state = "accepted"
                self._run.save(job)
                self._emit(TransferProgress(self._run.public(job)))
            return
        reason = m.state if m.state in ("declined", "cancelled") else \
            (m.reason[:200] or m.state)
        self._run.finish(job, m.state, "" if m.state == "done" else reason, notify=False)

    def _on_get(self, peer: bytes, m: FileGet) -> None:
        job = self._mine(peer, m.transfer_id, "out")
        if job is None or job.serve is None:
            return
        self._answered(job)
        if job.final:
            self._wire.send(peer, FileState(job.rec.tid, job.rec.state, job.rec.error))
            return
        spans = job.serve.on_request(m.first, m.count)
        if isinstance(spans, Drop):
            self._stats["dropped_file_" + spans.reason] += 1
            return
        now = self._clock.monotonic()
        if now - job.checked_at >= 1.0:
            job.checked_at = now
            if not disk.source_unchanged(job.rec):
                self._run.finish(job, "failed", "source changed", notify=True)
                return
        if job.rec.state != "active":
            job.rec.state = "active"
            self._run.save(job)
        try:
            for span in spans:
                fd = self._run.source_fd(job, span.file)
                data = os.pread(fd, span.length, span.offset)
                if len(data) != span.length:
                    self._run.finish(job, "failed", "source changed", notify=True)
                    return
                self._disk.feed(job.running, span.file, span.offset, data)
                self._wire.send(peer, FileChunk(job.rec.tid, span.index, data,
                                                chunk_digest(data)))
                self._stats["file_bytes_sent"] += span.length
                job.done_bytes = min(job.layout.size, job.done_bytes + span.length)
        except OSError as exc:
            self._run.finish(job, "failed", f"cannot read: {exc.strerror}", notify=True)
            return
        self._run.progress(job, now)

    def _on_sum_request(self, peer: bytes, m: FileSumRequest) -> None:
        job = self._mine(peer, m.transfer_id, "out")
        if job is None or job.final:
            return
        self._answered(job)
        if job.sums is not None:
            self._wire.send(peer, FileSums(job.rec.tid, job.sums))
        elif not job.hashing:
            job.hashing = True
            self._tasks.spawn(self._hash_source(job), name="meshchat-hash")

    async def _hash_source(self, job: Job) -> None:
        # What was sent in order is hashed already; the rest is read here.
        try:
            starts = await self._disk.resume(job.running, range(len(job.layout.sizes)))
            sums = await asyncio.to_thread(
                lambda: tuple(disk.finish_sha256(p, h, offset) for p, (h, offset)
                              in zip(disk.source_paths(job.rec), starts, strict=True)))
        except OSError as exc:
            self._run.finish(job, "failed", f"cannot read: {exc.strerror}", notify=True)
            return
        finally:
            job.hashing = False
        if not disk.source_unchanged(job.rec):
            self._run.finish(job, "failed", "source changed", notify=True)
            return
        job.sums = sums
        job.rec.sha256 = sums[0].hex() if len(sums) == 1 else ""
        if not job.final:
            self._wire.send(job.rec.peer, FileSums(job.rec.tid, sums))

    def _on_chunk(self, peer: bytes, m: FileChunk) -> None:
        job = self._mine(peer, m.transfer_id, "in")
        if job is None or job.pull is None or job.final:
            return
        self._run.apply(job, job.pull.on_chunk(m.index, m.data, m.digest,
                                           self._clock.monotonic()))

    def _on_sums(self, peer: bytes, m: FileSums) -> None:
        job = self._mine(peer, m.transfer_id, "in")
        if job is None or job.pull is None or job.final:
            return
        self._run.apply(job, job.pull.on_sums(m.sums, self._clock.monotonic()))
