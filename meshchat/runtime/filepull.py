"""File transfer's job effects (issue 7): what the receiver's pure ``Pull`` asks for, done.

``Files`` (``runtime.files``) takes frames and the user's operations and turns them into the
pure core's calls; this part carries out the effects that come back: frames to the peer,
chunks to the disk thread and their credit back to the ``Pull`` once written, the whole-file
check in a thread, the move into place, and a job's end (its state stored, the peer told,
the event emitted, its waiters woken).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..clock import Clock
from ..config import Limits
from ..events import Event, Transfer, TransferDone, TransferFailed, TransferProgress
from ..protocol.messages import FileGet, FileState, FileSumRequest
from ..storage.transfers import TransferStore
from ..transfer import (
    AskSums,
    Deliver,
    Drop,
    Effect,
    Fail,
    Request,
    Resumed,
    Span,
    Stalled,
    Verify,
    Write,
)
from . import filedisk as disk
from .filejobs import Job
from .peers import PeerBook
from .tasks import Tasks
from .wire import Wire

__all__ = ["JobRunner"]

log = logging.getLogger("meshchat.files")


class JobRunner:
    def __init__(self, wire: Wire, peers: PeerBook, emit: Callable[[Event], None],
                 tasks: Tasks, clock: Clock, limits: Limits, stats: Counter[str],
                 store: TransferStore, disk_thread: disk.DiskThread) -> None:
        self._wire = wire
        self._peers = peers
        self._emit = emit
        self._tasks = tasks
        self._clock = clock
        self._limits = limits
        self._stats = stats
        self._store = store
        self._disk = disk_thread

    # ---------------------------------------------------------------- effects (receiver)

    def apply(self, job: Job, effects: list[Effect]) -> None:
        rec = job.rec
        for e in effects:
            match e:
                case Request(first=first, count=count):
                    self._wire.send(rec.peer, FileGet(rec.tid, first, count))
                case Write(span=span, data=data, digest=digest):
                    job.writing += 1
                    self._disk.write(job.fds[span.file], span.offset, data, job.running,
                                     span.file, functools.partial(self._written, job, span,
                                                                  digest))
                case AskSums():
                    self._store.flush()
                    self._wire.send(rec.peer, FileSumRequest(rec.tid))
                case Verify(file=f, sha256=expected):
                    self._tasks.spawn(self._verify(job, f, expected), name="meshchat-verify")
                case Deliver():
                    self._tasks.spawn(self._deliver(job), name="meshchat-deliver")
                case Fail(reason=reason):
                    self.finish(job, "failed", reason, notify=True)
                    return
                case Stalled():
                    rec.state = "interrupted"
                    self.save(job)
                    self._emit(TransferProgress(self.public(job)))
                case Resumed():
                    rec.state = "active"
                    self.save(job)
                case Drop(reason=reason):
                    self._stats["dropped_file_" + reason] += 1

    def _written(self, job: Job, span: Span, digest: bytes, exc: BaseException | None
                 ) -> None:
        """A chunk's write ended (on the disk thread): record it, give its credit back."""
        job.writing -= 1
        if job.final or job.pull is None:
            return
        if exc is not None:
            reason = "no space" if isinstance(exc, OSError) and exc.errno == errno.ENOSPC \
                else f"cannot write: {getattr(exc, 'strerror', None) or exc}"
            self.finish(job, "failed", reason, notify=True)
            return
        rec = job.rec
        self._store.add_chunk(rec.tid, span.index, digest)
        job.pending_rows += 1
        if job.pending_rows >= max(1, self._limits.file_credit_chunks // 2):
            job.pending_rows = 0
            self._store.flush()
        if rec.state != "active":
            rec.state = "active"
            self.save(job)
        job.done_bytes = job.pull.received_bytes
        now = self._clock.monotonic()
        self.progress(job, now)
        self.apply(job, job.pull.written(span.index, now))

    async def _verify(self, job: Job, file: int, expected: bytes) -> None:
        part = disk.part_paths(job.rec)[file]
        stored = self._store.chunks(job.rec.tid)
        layout = job.layout
        # What was written in order is hashed already.
        [(h, offset)] = await self._disk.resume(job.running, [file])

        try:
            ok, bad = await asyncio.to_thread(disk.check_file, part, h, offset, expected,
                                              layout, file, stored)
        except OSError as exc:
            self.finish(job, "failed", f"cannot read: {exc.strerror}", notify=True)
            return
        if job.final or job.pull is None:
            return
        if ok and len(layout.sizes) == 1:
            job.rec.sha256 = expected.hex()
        if not ok:
            self._disk.forget(job.running, file)  # its bad chunks come again, out of order
        if bad:
            self._store.drop_chunks(job.rec.tid, bad)
            self._stats["file_chunks_refetched"] += len(bad)
        self.apply(job, job.pull.verified(file, ok, bad, self._clock.monotonic()))

    async def _deliver(self, job: Job) -> None:
        """The checked files moved into place (in a thread: the renames and the folder's
        fsync), then "done" to both sides."""
        self.close_fds(job)
        rec = job.rec
        try:
            final = await asyncio.to_thread(disk.place, rec)
        except OSError as exc:
            self.finish(job, "failed", f"cannot write: {exc.strerror}", notify=True)
            return
        rec.path = str(final)
        job.done_bytes = job.layout.size
        if job.final:  # cancelled while it moved: it is in place all the same
            self.save(job)
            return
        self.finish(job, "done", "", notify=True)

    # ---------------------------------------------------------------- helpers

    def finish(self, job: Job, state: str, reason: str, *, notify: bool) -> None:
        rec = job.rec
        if job.final:
            return
        rec.state = state
        rec.error = "" if state == "done" else reason
        if job.pull is not None:
            job.pull.cancel()
        self.close_fds(job)
        if notify:
            self._wire.send(rec.peer, FileState(rec.tid, state, rec.error))
        if rec.direction == "in" and state != "done" and rec.path:
            disk.remove_parts(rec)
        if rec.direction == "in":
            self._store.drop_chunks(rec.tid)
        self.save(job)
        t = self.public(job)
        self._emit(TransferDone(t) if state == "done" else TransferFailed(t, rec.error))
        for fut in job.waiters:
            if not fut.done():
                fut.set_result(t)

    def progress(self, job: Job, now: float) -> None:
        if now - job.last_progress_at >= 0.25:
            job.last_progress_at = now
            self._emit(TransferProgress(self.public(job)))

    def public(self, job: Job) -> Transfer:
        rec = job.rec
        return Transfer(str(rec.number), rec.direction, self._peers.info(rec.peer, rec.peer_name),
                        rec.name, job.layout.size, len(rec.files), job.done_bytes, rec.state,
                        rec.sha256, Path(rec.path) if rec.path else None, rec.error)

    def save(self, job: Job) -> None:
        try:
            self._store.save(job.rec)
        except Exception as exc:  # a full disk must not stop the node
            log.warning("cannot save transfer %s: %s", job.rec.number, exc)

    def close_fds(self, job: Job) -> None:
        fds = list(job.fds.values())
        job.fds.clear()
        if job.writing:
            self._disk.close_fds(fds)  # after the writes queued for them
        else:
            disk.close_all(fds)

    def source_fd(self, job: Job, file: int) -> int:
        fd = job.fds.get(file)
        if fd is None:
            fd = job.fds[file] = os.open(disk.source_paths(job.rec)[file], os.O_RDONLY)
        return fd
