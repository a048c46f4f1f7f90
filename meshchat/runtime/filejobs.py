"""File transfer's table of jobs (issue 7): each transfer either way, by id and by number.

A job is a stored ``TransferRecord`` with what only this run knows (the pure core's ``Pull``
or ``Serve``, open files, waiters). The table is bounded by ``Limits``: at most
``max_file_offers`` open incoming offers (the oldest are forgotten, counted
``dropped_file_offer_evicted``) and ``max_transfers`` in all (finished ones go first).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..config import Limits
from ..errors import TransferNotFound
from ..events import Transfer
from ..storage.transfers import TransferRecord, TransferStore
from ..transfer import FINAL_STATES, Layout, Pull, RunningSums, Serve

__all__ = ["Job", "JobTable"]


@dataclass(slots=True)
class Job:
    """One transfer, either way."""

    rec: TransferRecord
    layout: Layout
    pull: Pull | None = None  # incoming, once accepted
    serve: Serve | None = None  # outgoing
    fds: dict[int, int] = field(default_factory=dict)
    done_bytes: int = 0
    last_progress_at: float = 0.0
    sums: tuple[bytes, ...] | None = None
    hashing: bool = False
    running: RunningSums = field(default_factory=RunningSums)  # whole-file sums so far
    writing: int = 0  # chunks handed to the disk thread, not yet written
    waiters: list[asyncio.Future[Transfer]] = field(default_factory=list)
    checked_at: float = 0.0  # the sender last checked that its source is unchanged
    pending_rows: int = 0
    # outgoing: when to offer again, until the receiver answers (None: it has)
    reoffer_at: float | None = None
    reoffers: int = 0

    @property
    def final(self) -> bool:
        return self.rec.state in FINAL_STATES


class JobTable:
    def __init__(self, store: TransferStore, limits: Limits, stats: Counter[str]) -> None:
        self._store = store
        self._limits = limits
        self._stats = stats
        self._jobs: dict[bytes, Job] = {}
        self._by_number: dict[str, bytes] = {}
        self._number = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, tid: bytes) -> bool:
        return tid in self._jobs

    def __iter__(self) -> Iterator[Job]:
        """Every job, oldest first (a copy: the table may change meanwhile)."""
        return iter(sorted(self._jobs.values(), key=lambda j: j.rec.number))

    def by_id(self, tid: bytes) -> Job | None:
        return self._jobs.get(tid)

    def next_number(self) -> int:
        """The number the user calls the next new transfer by."""
        self._number += 1
        return self._number

    def add(self, job: Job) -> None:
        self._number = max(self._number, job.rec.number)
        self._jobs[job.rec.tid] = job
        self._by_number[str(job.rec.number)] = job.rec.tid

    def find(self, tid_or_number: str) -> Job:
        tid = self._by_number.get(str(tid_or_number).strip().lstrip("#"))
        job = self._jobs.get(tid) if tid is not None else None
        if job is None:
            raise TransferNotFound(f"no transfer {tid_or_number!r}")
        return job

    def latest_offer(self) -> Job:
        offers = self._open_offers()
        if not offers:
            raise TransferNotFound("no open offer")
        return max(offers, key=lambda j: j.rec.number)

    def open_outgoing(self) -> int:
        return sum(1 for j in self._jobs.values() if j.rec.direction == "out" and not j.final)

    def bound(self) -> None:
        """Back within ``max_file_offers`` open offers and ``max_transfers`` jobs."""
        offers = sorted(self._open_offers(), key=lambda j: j.rec.number)
        for job in offers[:-self._limits.max_file_offers]:
            self.forget(job)
            self._stats["dropped_file_offer_evicted"] += 1
        if len(self._jobs) > self._limits.max_transfers:
            finished = sorted((j for j in self._jobs.values() if j.final),
                              key=lambda j: j.rec.number)
            for job in finished[:len(self._jobs) - self._limits.max_transfers]:
                self.forget(job)

    def forget(self, job: Job) -> None:
        self._jobs.pop(job.rec.tid, None)
        self._by_number.pop(str(job.rec.number), None)
        with contextlib.suppress(Exception):
            self._store.delete(job.rec.tid)

    def _open_offers(self) -> list[Job]:
        return [j for j in self._jobs.values()
                if j.rec.direction == "in" and j.rec.state == "offered"]
