"""Test helper: run one call from many threads released at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(call: Callable[[], object], threads: int = 8) -> list[BaseException]:
    """``call`` in ``threads`` threads that start it together (a barrier); what each raised."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            call()
        except BaseException as exc:  # handed back to the test
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors
