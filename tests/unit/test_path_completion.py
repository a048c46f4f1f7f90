"""Path completion for ``/send file NAME PATH`` is bounded and never runs on the event loop:
``commands.complete_path`` caps what it reads, and the terminal interface calls it in a thread
(``tui.app.PathScanner``) that a hung directory cannot turn into a frozen screen."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from meshchat import commands as c
from meshchat.tui.app import MeshCompleter, PathScanner
from meshchat.tui.session import StartOptions
from tests.unit.uifake import FakeNode, until


def _files(folder: Path, n: int, stem: str = "f") -> None:
    for i in range(n):
        (folder / f"{stem}{i:04d}").write_text("")


def test_a_huge_directory_offers_at_most_the_candidate_cap(tmp_path: Path) -> None:
    _files(tmp_path, c.completion.MAX_PATH_CANDIDATES + 50)
    assert len(c.complete_path(f"{tmp_path}/")) == c.completion.MAX_PATH_CANDIDATES


def test_reading_stops_after_max_scanned_entries_matching_or_not(tmp_path: Path) -> None:
    _files(tmp_path, 300)
    assert len(c.complete_path(f"{tmp_path}/", max_scanned=40)) == 40
    assert c.complete_path(f"{tmp_path}/zz", max_scanned=40) == []  # no match: still 40 read


def test_reading_stops_when_the_time_budget_is_spent(tmp_path: Path) -> None:
    _files(tmp_path, 1000)
    ticks = iter(range(10**6))  # each look at the clock is one second later

    def clock() -> float:
        return float(next(ticks))

    found = c.complete_path(f"{tmp_path}/", budget_s=0.5, clock=clock)
    assert len(found) < 256  # the first look after the start already is past the budget


def test_wants_path_says_where_completion_reads_the_disk() -> None:
    assert c.wants_path("/send file bob ")
    assert c.wants_path("/send file bob ./no")
    assert not c.wants_path("/send file bob")
    assert not c.wants_path("/send file ")
    assert not c.wants_path("hello /send file bob x")
    assert not c.wants_path("/msg bob ")


class _Stuck:
    """A scan that hangs (a dead network mount) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []

    def __call__(self, prefix: str) -> list[str]:
        self.calls.append(prefix)
        self.release.wait(10)
        return [prefix + "late"]


async def test_a_stuck_scan_times_out_and_starts_no_second_thread() -> None:
    stuck = _Stuck()
    scanner = PathScanner(stuck, timeout_s=0.05)
    try:
        started = time.monotonic()
        assert await scanner("x") == []
        assert time.monotonic() - started < 1.0
        assert scanner.busy
        assert await scanner("y") == []  # still stuck: no second thread
        assert stuck.calls == ["x"]
    finally:
        stuck.release.set()
    await until(lambda: not scanner.busy)
    stuck.release.set()
    assert await scanner("z") == ["zlate"]


async def test_a_second_call_for_the_same_prefix_waits_for_the_running_scan() -> None:
    stuck = _Stuck()
    scanner = PathScanner(stuck, timeout_s=5.0)
    first = asyncio.create_task(scanner("ab"))
    await until(lambda: stuck.calls == ["ab"])
    second = asyncio.create_task(scanner("ab"))
    other = asyncio.create_task(scanner("cd"))  # another prefix: after "ab", in its thread
    await asyncio.sleep(0)
    assert stuck.calls == ["ab"]  # no second thread while the first runs
    stuck.release.set()
    assert await first == ["ablate"] and await second == ["ablate"]
    assert await other == ["cdlate"]
    assert stuck.calls == ["ab", "cd"]


async def test_a_failing_scan_offers_nothing() -> None:
    def broken(prefix: str) -> list[str]:
        raise PermissionError(prefix)

    scanner = PathScanner(broken)
    assert await scanner("x") == []
    assert not scanner.busy


async def test_the_completer_reads_paths_only_off_the_loop(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    (tmp_path / "photo.jpg").write_text("x")
    (tmp_path / "Photos").mkdir()
    monkeypatch.chdir(tmp_path)
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def scan(prefix: str) -> list[str]:
        threads.append(threading.get_ident())
        return c.complete_path(prefix)

    completer = MeshCompleter(lambda before: ["bob"], PathScanner(scan))
    doc = Document("/send file bob ph")
    event = CompleteEvent(completion_requested=True)
    assert list(completer.get_completions(doc, event)) == []  # never on the calling thread
    found = [x.text async for x in completer.get_completions_async(doc, event)]
    assert found == ["photo.jpg", "Photos/"]
    assert threads and loop_thread not in threads
    names = [x.text async for x in completer.get_completions_async(
        Document("/msg b"), event)]
    assert names == ["bob"]


async def test_tab_completes_a_path_in_the_app_and_keys_echo_while_a_scan_hangs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from meshchat.tui.app import ChatApp

    (tmp_path / "notes-2024.txt").write_text("x")
    (tmp_path / "photo.jpg").write_text("x")
    (tmp_path / "Photos").mkdir()
    monkeypatch.chdir(tmp_path)
    with create_pipe_input() as pipe:
        app = ChatApp(FakeNode(), input=pipe, output=DummyOutput(), sink=lambda line: None)
        task = asyncio.create_task(app.run(StartOptions()))
        stuck = _Stuck()
        try:
            buffer = app.session.default_buffer
            await until(lambda: app.session.app.is_running)
            pipe.send_text("/send file bob note\t")
            await until(lambda: buffer.text == "/send file bob notes-2024.txt")
            buffer.reset()
            pipe.send_text("/send file bob ph\t")  # two: the menu, and Tab walks it
            await until(lambda: buffer.complete_state is not None
                        and len(buffer.complete_state.completions) == 2)
            pipe.send_text("\t")
            await until(lambda: buffer.text == "/send file bob photo.jpg")
            pipe.send_text("\t")
            await until(lambda: buffer.text == "/send file bob Photos/")

            buffer.reset()
            mesh = app.session.completer
            assert isinstance(mesh, MeshCompleter)
            mesh.paths = PathScanner(stuck, timeout_s=5.0)
            pipe.send_text("/send file bob x\t")
            await until(lambda: stuck.calls != [])
            started = time.monotonic()
            pipe.send_text("yz")  # typed while the scan hangs: shown at once
            await until(lambda: buffer.text.endswith("xyz"), timeout_s=1.0)
            assert time.monotonic() - started < 1.0
        finally:
            stuck.release.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
