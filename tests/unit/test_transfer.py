"""The pure transfer core (issue 7): any order, duplicates, losses and crashes end in the
source or a clear failure, never a wrong file."""

from __future__ import annotations

import hashlib
import sqlite3
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchat.filenames import (
    MAX_NAME_BYTES,
    OfferPlan,
    clean_name,
    clean_relpath,
    free_path,
    inside,
    plan_offer,
)
from meshchat.storage.transfers import TransferRecord, TransferStore
from meshchat.transfer import (
    AskSums,
    Deliver,
    Drop,
    Fail,
    Layout,
    Pull,
    Request,
    RunningSums,
    Serve,
    Stalled,
    Verify,
    Write,
    chunk_digest,
    chunk_matches,
)

from ..threads import at_once


def test_layout_spans_cover_every_byte_once() -> None:
    layout = Layout([10, 0, 7, 3], 4)
    assert layout.chunks == 3 + 2 + 1
    got = [(s.file, s.offset, s.length) for s in map(layout.span, range(layout.chunks))]
    assert got == [(0, 0, 4), (0, 4, 4), (0, 8, 2), (2, 0, 4), (2, 4, 3), (3, 0, 3)]
    assert list(layout.chunks_of(1)) == [] and list(layout.chunks_of(2)) == [3, 4]


def test_serve_refuses_bad_requests() -> None:
    serve = Serve(Layout([100], 10), credit=4, offered_at=0.0, ttl_s=10.0)
    assert serve.on_request(0, 5) == Drop("bad_count")
    assert serve.on_request(8, 3) == Drop("out_of_range")
    assert serve.on_request(2**64 - 1, 1) == Drop("out_of_range")
    assert serve.on_request(-1, 1) == Drop("out_of_range")
    spans = serve.on_request(8, 2)
    assert isinstance(spans, list) and [s.index for s in spans] == [8, 9]
    assert not serve.expired(9.9) and serve.expired(10.0)


class Disk:
    """What the runtime does with the effects, in memory: the receiver's partial files, and
    the whole-file sums taken as the chunks are written (as ``runtime.files`` does)."""

    def __init__(self, sizes: list[int]) -> None:
        self.files = [bytearray(s) for s in sizes]
        self.digests: dict[int, bytes] = {}
        self.running = RunningSums()
        self.read_again = 0  # bytes read back to finish the sums

    def write(self, w: Write) -> None:
        self.files[w.span.file][w.span.offset:w.span.offset + w.span.length] = w.data
        self.digests[w.span.index] = w.digest
        self.running.feed(w.span.file, w.span.offset, w.data)

    def restart(self) -> None:
        """The receiver ran again: what it had hashed in memory is gone."""
        self.running = RunningSums()

    def verify(self, file: int, expected: bytes) -> bool:
        h, offset = self.running.resume(file)
        rest = bytes(self.files[file][offset:])
        self.read_again += len(rest)
        h.update(rest)
        ok = h.digest() == expected
        assert ok == (hashlib.sha256(bytes(self.files[file])).digest() == expected)
        if not ok:
            self.running.forget(file)
        return ok

    def bad_chunks(self, layout: Layout, file: int) -> list[int]:
        out = []
        for i in layout.chunks_of(file):
            s = layout.span(i)
            if chunk_digest(bytes(self.files[file][s.offset:s.offset + s.length])) != \
                    self.digests.get(i):
                out.append(i)
        return out


def source(sizes: list[int], seed: int) -> list[bytes]:
    return [hashlib.shake_256(f"{seed}/{i}".encode()).digest(n) if n else b""
            for i, n in enumerate(sizes)]


def run(pull: Pull, disk: Disk, src: list[bytes], effects: list, ops: st.DataObject | None,
        now: float, max_steps: int = 5000) -> tuple[str, float]:
    """Drive ``pull`` to the end; ``ops`` (Hypothesis) reorders, duplicates and loses."""
    layout = pull.layout
    queue: list[tuple[int, bytes, bytes]] = []
    queued = list(effects)
    for _ in range(max_steps):
        while queued:
            e = queued.pop(0)
            match e:
                case Request(first=first, count=count):
                    for i in range(first, first + count):
                        s = layout.span(i)
                        data = src[s.file][s.offset:s.offset + s.length]
                        queue.append((i, data, chunk_digest(data)))
                case Write() as w:
                    disk.write(w)
                    queued.extend(pull.written(w.span.index, now))
                case AskSums():
                    queued.extend(pull.on_sums([hashlib.sha256(b).digest() for b in src], now))
                case Verify(file=f, sha256=h):
                    ok = disk.verify(f, h)
                    queued.extend(pull.verified(f, ok, disk.bad_chunks(layout, f), now))
                case Deliver():
                    return "done", now
                case Fail(reason=reason):
                    return reason, now
        if queue:
            k = ops.draw(st.integers(0, len(queue) - 1)) if ops else 0
            action = ops.draw(st.sampled_from(["deliver", "deliver", "dup", "lose", "corrupt"])
                              ) if ops else "deliver"
            i, data, digest = queue[k]
            if action != "dup":
                queue.pop(k)
            if action == "lose":
                continue
            if action == "corrupt" and data:
                data = bytes([data[0] ^ 1]) + data[1:]
            queued.extend(pull.on_chunk(i, data, digest, now))
        else:
            now += pull.retry_s
            queued.extend(pull.tick(now))
    raise AssertionError("did not finish")


sizes_st = st.lists(st.integers(0, 40), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(sizes=sizes_st, chunk=st.integers(1, 9), credit=st.integers(1, 6), ops=st.data())
def test_any_order_duplicates_and_losses_give_the_source(sizes: list[int], chunk: int,
                                                          credit: int, ops: st.DataObject
                                                          ) -> None:
    src = source(sizes, 1)
    layout = Layout(sizes, chunk)
    pull = Pull(layout, credit, retry_s=1.0)
    disk = Disk(sizes)
    result, _ = run(pull, disk, src, pull.start(0.0), ops, 0.0)
    assert result == "done"
    assert [bytes(f) for f in disk.files] == src


@settings(max_examples=100, deadline=None)
@given(sizes=sizes_st, chunk=st.integers(1, 9), credit=st.integers(1, 6),
       crash_after=st.integers(0, 60), damage=st.booleans(), ops=st.data())
def test_a_crash_at_any_point_resumes_to_the_source(sizes: list[int], chunk: int, credit: int,
                                                     crash_after: int, damage: bool,
                                                     ops: st.DataObject) -> None:
    src = source(sizes, 2)
    layout = Layout(sizes, chunk)
    pull = Pull(layout, credit, retry_s=1.0)
    disk = Disk(sizes)
    effects = pull.start(0.0)
    # the first run: only the first ``crash_after`` chunks that arrive are kept
    for e in effects:
        if isinstance(e, Request):
            for i in range(e.first, e.first + e.count):
                if crash_after <= 0:
                    break
                s = layout.span(i)
                data = src[s.file][s.offset:s.offset + s.length]
                for w in pull.on_chunk(i, data, chunk_digest(data), 0.0):
                    if isinstance(w, Write):
                        disk.write(w)
                crash_after -= 1
    held = list(disk.digests)
    if damage and held:  # the partial file damaged on disk while the receiver was down
        s = layout.span(held[0])
        if s.length:
            disk.files[s.file][s.offset] ^= 0xFF
    disk.restart()
    again = Pull(layout, credit, held, retry_s=1.0)
    assert again.received == len(held)
    result, _ = run(again, disk, src, again.start(5.0), ops, 5.0)
    assert result == "done"
    assert [bytes(f) for f in disk.files] == src


def test_a_transfer_in_order_is_not_read_again_to_be_verified() -> None:
    sizes = [1000, 0, 333]
    src = source(sizes, 3)
    layout = Layout(sizes, 64)
    pull = Pull(layout, 4, retry_s=1.0)
    disk = Disk(sizes)
    assert run(pull, disk, src, pull.start(0.0), None, 0.0)[0] == "done"
    assert disk.read_again == 0
    assert [bytes(f) for f in disk.files] == src


def test_running_sums_go_on_only_in_order() -> None:
    data = bytes(range(256)) * 40
    sums = RunningSums()
    sums.feed(0, 100, data[100:200])  # before offset 0: nothing to go on from
    assert sums.reached(0) == 0
    sums.feed(0, 0, data[:100])
    sums.feed(0, 200, data[200:300])  # a gap: left where it is
    sums.feed(0, 100, data[100:200])
    sums.feed(0, 0, data[:100])  # again: ignored
    assert sums.reached(0) == 200
    h, offset = sums.resume(0)
    h.update(data[offset:])
    assert h.digest() == hashlib.sha256(data).digest()
    sums.feed(0, 200, data[200:])  # resume gave a copy: feeding goes on unchanged
    assert sums.resume(0)[0].digest() == hashlib.sha256(data).digest()
    sums.forget(0)
    assert sums.reached(0) == 0 and sums.resume(0)[0].digest() == hashlib.sha256().digest()


def test_a_source_that_changed_is_a_clear_failure() -> None:
    src = source([20], 3)
    layout = Layout([20], 8)
    pull = Pull(layout, 4)
    disk = Disk([20])
    effects = pull.start(0.0)
    other = [hashlib.sha256(b"something else").digest()]
    for e in effects:
        assert isinstance(e, Request)
        for i in range(e.first, e.first + e.count):
            s = layout.span(i)
            data = src[0][s.offset:s.offset + s.length]
            for w in pull.on_chunk(i, data, chunk_digest(data), 0.0):
                if isinstance(w, Write):
                    disk.write(w)
                    if AskSums() in pull.written(w.span.index, 0.0):
                        (v,) = pull.on_sums(other, 0.0)
                        assert isinstance(v, Verify)
                        assert pull.verified(0, False, [], 0.0) == [Fail("hash mismatch")]
    assert pull.finished


def test_a_chunk_holds_its_credit_until_it_is_written() -> None:
    """A disk slower than the network: chunks that arrived and wait to be written still
    count against the window, so no more is asked for than fits it."""
    src = source([100], 4)
    layout = Layout([100], 10)
    pull = Pull(layout, 4)
    (first,) = pull.start(0.0)
    assert first == Request(0, 4)
    writes = []
    for i in range(4):
        data = src[0][i * 10:(i + 1) * 10]
        effects = pull.on_chunk(i, data, chunk_digest(data), 0.0)
        assert not [e for e in effects if isinstance(e, Request)]  # nothing written yet
        writes += [e for e in effects if isinstance(e, Write)]
    assert pull.in_flight == 4 and pull.received == 4
    assert pull.written(0, 0.0) == []  # one back: less than half the window, no request
    assert pull.written(1, 0.0) == [Request(4, 2)]
    assert pull.written(1, 0.0) == []  # twice: nothing more
    assert pull.in_flight == 4


def test_hostile_chunks_are_dropped() -> None:
    layout = Layout([100], 10)
    pull = Pull(layout, 2)
    pull.start(0.0)
    assert pull.on_chunk(2**64 - 1, b"x", b"y" * 16, 0.0) == [Drop("out_of_range")]
    assert pull.on_chunk(5, b"x" * 10, chunk_digest(b"x" * 10), 0.0) == [Drop("unasked")]
    bad = pull.on_chunk(0, b"x" * 10, b"\0" * 16, 0.0)
    assert bad[0] == Drop("bad_chunk") and bad[1] == Request(0, 1)
    assert pull.on_chunk(0, b"x" * 9, chunk_digest(b"x" * 9), 0.0)[0] == Drop("bad_chunk")
    assert pull.on_sums([b"\0" * 32], 0.0) == [Drop("unasked_sums")]


def test_a_chunk_is_checked_by_its_crc_or_by_the_legacy_truncated_sha256() -> None:
    """Senders send the CRC-32; the 16-byte truncated SHA-256 of earlier senders is still
    taken, so a transfer resumes across an upgrade. Any other length, or a wrong value of
    either kind, is a bad chunk and is asked for again."""
    data = bytes(range(256)) * 40
    assert chunk_digest(data) == zlib.crc32(data).to_bytes(4, "big")
    legacy = hashlib.sha256(data).digest()[:16]
    assert chunk_matches(data, chunk_digest(data)) and chunk_matches(data, legacy)
    damaged = data[:-1] + b"\x01"
    for digest in (chunk_digest(damaged), hashlib.sha256(damaged).digest()[:16],
                   hashlib.sha256(data).digest(), b"", None):
        assert not chunk_matches(data, digest)
    layout = Layout([len(data)], len(data))
    pull = Pull(layout, 1)
    pull.start(0.0)
    effects = pull.on_chunk(0, data, legacy, 0.0)
    assert any(isinstance(e, Write) and e.digest == legacy for e in effects)
    pull = Pull(layout, 1)
    pull.start(0.0)
    assert pull.on_chunk(0, damaged, chunk_digest(data), 0.0)[0] == Drop("bad_chunk")


def test_a_stall_is_noticed_and_asked_again() -> None:
    pull = Pull(Layout([100], 10), 2, retry_s=1.0, stall_s=3.0)
    assert pull.start(0.0) == [Request(0, 2)]
    assert pull.tick(0.5) == []
    assert pull.tick(1.0) == [Request(0, 2)]
    assert Stalled() in pull.tick(3.0)


# ---------------------------------------------------------------- names

HOSTILE = ["../../etc/passwd", "/etc/passwd", "..", ".", "", "a/b", "a\\b", "CON", "con.txt",
           "nul", "x\x00y", "\x1b[31mred", "a" * 300, "é" * 200 + ".pdf", "LPT1.doc", " . "]


@pytest.mark.parametrize("name", HOSTILE)
def test_clean_name_is_one_safe_component(name: str, tmp_path: Path) -> None:
    out = clean_name(name)
    assert out and "/" not in out and "\\" not in out and out not in (".", "..")
    assert len(out.encode()) <= MAX_NAME_BYTES
    assert all(ord(c) >= 32 and c != "\x7f" for c in out)
    assert out.split(".")[0].upper() not in ("CON", "NUL", "LPT1")
    assert inside(tmp_path, tmp_path / out)


@given(st.text(max_size=400))
def test_any_relpath_stays_inside(text: str) -> None:
    parts = clean_relpath(text)
    base = Path("/srv/down")
    assert inside(base, base.joinpath(*parts))
    assert all(len(p.encode()) <= MAX_NAME_BYTES for p in parts)


def test_clash_gets_a_number(tmp_path: Path) -> None:
    (tmp_path / "talk.pdf").write_text("x")
    assert free_path(tmp_path, "talk.pdf").name == "talk (1).pdf"
    (tmp_path / "talk (1).pdf.part").write_text("x")
    assert free_path(tmp_path, "talk.pdf").name == "talk (2).pdf"
    assert free_path(tmp_path, "README").name == "README"


CAP = 2048

# A single-file offer (one path not under its title as a folder) is one file, named by the
# last part of its path; whatever it carries, it never becomes a folder.
ONE_FILE = [
    ("passwd", "../../etc/passwd", "passwd"),
    ("abs", "/abs", "abs"),
    ("b", "a/../../b", "b"),
    ("x", "C:\\Windows\\System32\\x.dll", "x.dll"),
    ("C:", "C:", "C_"),
    ("evil", "..\\..\\evil.exe", "evil.exe"),
    ("n", "a\x00b/c\x00d", "c_d"),
    ("CON", "CON", "_CON"),
    ("x", "dir/con.txt", "_con.txt"),
    ("..", "..", "file"),
    ("", "", "file"),
    ("t", "/", "t"),
    ("t", "a/b/", "b"),
    ("..", "../x", "x"),  # a title that cannot be a folder: not a tree
    ("report.pdf", "evil.exe", "evil.exe"),  # what is shown is what is written
]


@pytest.mark.parametrize(("title", "path", "name"), ONE_FILE)
def test_a_single_file_offer_is_one_file(title: str, path: str, name: str) -> None:
    assert plan_offer(title, [path], CAP) == OfferPlan(name, (name,), False)


def test_a_single_file_name_at_and_over_the_cap(tmp_path: Path) -> None:
    at = "n" * (MAX_NAME_BYTES - 4) + ".bin"
    plan = plan_offer(at, [at], CAP)
    assert isinstance(plan, OfferPlan) and plan.name == at
    over = plan_offer("x", ["../" + "é" * 300 + ".tar.gz"], CAP)
    assert isinstance(over, OfferPlan) and over.name.endswith(".gz")
    assert len(over.name.encode()) <= MAX_NAME_BYTES
    (tmp_path / at).write_bytes(b"there")  # a name at the cap that clashes still fits
    clash = free_path(tmp_path, at)
    assert clash.name.endswith(" (1).bin") and len((clash.name + ".part").encode()) <= 255


def test_a_folder_offer_is_a_tree_under_its_name() -> None:
    plan = plan_offer("docs", ["docs/a.txt", "docs/sub/b.bin", "docs\\win\\c"], CAP)
    assert plan == OfferPlan("docs", ("docs/a.txt", "docs/sub/b.bin", "docs/win/c"), True)
    assert plan_offer("CON", ["CON/x"], CAP) == OfferPlan("_CON", ("_CON/x",), True)


@pytest.mark.parametrize("paths", [
    ["docs/../../etc/passwd"], ["docs/a/../../../b"], ["docs/.."], ["docs//x"],
    ["docs/./x"], ["docs/a", "docs/"], ["docs/a", "docs/ .. /b"],
])
def test_a_tree_path_that_climbs_or_is_empty_is_refused(paths: list[str]) -> None:
    assert plan_offer("docs", paths, CAP) == "bad_path"


@pytest.mark.parametrize("paths", [
    ["a/x", "b/y"],  # two roots
    ["docs/a", "/abs"], ["docs/a", "other"],  # a file outside the folder
    ["docs/a", "docs/a/b"],  # a file where the next needs a folder
    ["docs/a/b", "docs/a"],  # and the other way round
])
def test_files_that_are_not_one_folder_are_refused(paths: list[str]) -> None:
    assert plan_offer("docs", paths, CAP) == "bad_tree"


def test_duplicate_names_in_one_folder_get_numbers() -> None:
    plan = plan_offer("d", ["d/a.txt", "d/a.txt", "d/a:txt", "d/a_txt", "d/s/a.txt"], CAP)
    assert isinstance(plan, OfferPlan)
    assert plan.paths == ("d/a.txt", "d/a (1).txt", "d/a_txt", "d/a_txt (1)", "d/s/a.txt")
    assert len(set(plan.paths)) == len(plan.paths)


def test_a_tree_path_over_the_cap_is_refused() -> None:
    deep = "d/" + "/".join(["x" * 200] * 11)
    assert plan_offer("d", [deep], CAP) == "long_path"
    assert isinstance(plan_offer("d", ["d/" + "/".join(["x" * 200] * 10)], CAP), OfferPlan)


@given(st.text(max_size=60), st.lists(st.text(max_size=80), min_size=1, max_size=6))
def test_any_offer_stays_inside(title: str, paths: list[str]) -> None:
    plan = plan_offer(title, paths, CAP)
    if isinstance(plan, str):
        return
    base = Path("/srv/down")
    assert len(plan.paths) == len(paths) and len(set(plan.paths)) == len(plan.paths)
    assert "/" not in plan.name and plan.name not in ("", ".", "..")
    for p in plan.paths:
        parts = p.split("/")
        assert parts[0] == plan.name and (len(parts) > 1) == plan.tree
        assert all(c not in ("", ".", "..") and len(c.encode()) <= MAX_NAME_BYTES
                   for c in parts)
        assert inside(base, base.joinpath(*parts))


def test_store_keeps_transfers_and_chunks(tmp_path: Path) -> None:
    store = TransferStore(tmp_path / "t.sqlite")
    rec = TransferRecord(b"t" * 16, "in", b"p" * 32, "bob", "a.bin", [("a.bin", 5)], 4,
                         "active", path=str(tmp_path / "a.bin"), number=1)
    store.save(rec)
    store.add_chunk(rec.tid, 0, b"d" * 16)
    store.close()
    again = TransferStore(tmp_path / "t.sqlite")
    assert again.load() == [rec]
    assert again.chunks(rec.tid) == {0: b"d" * 16}
    again.delete(rec.tid)
    assert again.load() == [] and again.chunks(rec.tid) == {}


@pytest.mark.parametrize("used_first", [False, True])
def test_a_deferred_store_is_opened_once_by_whoever_comes_first(tmp_path: Path,
                                                                used_first: bool) -> None:
    rec = TransferRecord(b"t" * 16, "out", b"p" * 32, "bob", "a.bin", [("a.bin", 5)], 4,
                         "offered", number=1)
    store = TransferStore(tmp_path / "t.sqlite", deferred=True)
    if not used_first:
        store.open()
    store.save(rec)  # used before open(): opens it there and then
    store.open()  # open already: nothing more
    store.close()
    assert TransferStore(tmp_path / "t.sqlite").load() == [rec]


def test_a_deferred_store_opened_from_two_threads_at_once_opens_once(tmp_path: Path) -> None:
    """Node.start opens it in a thread while a frame that arrives early uses it on the loop:
    one connection, no error (two unsynchronised opens once broke a start in the lab)."""
    store = TransferStore(tmp_path / "t.sqlite", deferred=True)
    assert at_once(lambda: store.load()) == []
    store.close()


def test_a_store_that_cannot_open_says_so_on_use(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    store = TransferStore(path, deferred=True)
    with pytest.raises(sqlite3.DatabaseError):
        store.open()
    with pytest.raises(sqlite3.DatabaseError):
        store.load()
