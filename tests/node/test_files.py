"""Issue 7 at node level, on the in-memory fakes: offer, accept, verify, decline, cancel,
folders, resume after a restart, hostile names and frames."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from meshchat import (
    FileError,
    FileOffered,
    Limits,
    Node,
    Timings,
    TransferFailed,
    TransferNotFound,
)
from meshchat.discovery.memory import MemoryDiscovery
from meshchat.protocol.messages import FileChunk, FileGet, FileItem, FileOffer
from meshchat.transport.memory import MemoryTransport

from .conftest import Mesh, Recorder, lose_first, until

LIMITS = Limits(file_chunk_bytes=4096, file_credit_chunks=4)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def add(mesh: Mesh, name: str, data_dir: Path | None = None,
              limits: Limits = LIMITS) -> Node:
    node = Node(name, data_dir=data_dir or mesh.tmp / name, timings=Timings.fast(),
                limits=limits, loopback_only=True, transport=MemoryTransport(mesh.network),
                discovery=MemoryDiscovery(mesh.hub))
    await node.start()
    mesh.nodes.append(node)
    mesh.recorders[name] = Recorder(node)
    return node


async def pair(mesh: Mesh) -> tuple[Node, Node]:
    alice = await add(mesh, "alice")
    bob = await add(mesh, "bob")
    await until(lambda: len(alice.peers()) == 1 and len(bob.peers()) == 1, what="peers")
    return alice, bob


async def test_offer_accept_and_verify(mesh: Mesh, tmp_path: Path) -> None:
    alice, bob = await pair(mesh)
    src = tmp_path / "talk.pdf"
    src.write_bytes(os.urandom(100_000))
    out = await alice.send_file("bob", src)
    assert (out.direction, out.state, out.size, out.files) == ("out", "offered", 100_000, 1)
    ev = await mesh.recorders["bob"].wait(lambda e: isinstance(e, FileOffered))
    assert isinstance(ev, FileOffered)
    offer = ev.transfer
    assert (offer.name, offer.size, offer.peer.name, offer.state) == \
        ("talk.pdf", 100_000, "alice", "offered")
    got = await bob.accept_file(offer.id, into=tmp_path / "in")
    assert got.direction == "in" and got.path == tmp_path / "in" / "talk.pdf"
    done = await bob.wait_transfer(offer.id, timeout=10)
    assert done.state == "done" and done.path is not None
    assert sha(done.path) == sha(src) == done.sha256
    assert not (tmp_path / "in" / "talk.pdf.part").exists()
    sent = await alice.wait_transfer(out.id, timeout=10)
    assert sent.state == "done"
    assert alice.stats["file_bytes_sent"] >= 100_000
    assert [t.state for t in bob.transfers()] == ["done"]


async def test_decline_and_cancel(mesh: Mesh, tmp_path: Path) -> None:
    alice, bob = await pair(mesh)
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 50_000)
    out = await alice.send_file("bob", src)
    await mesh.recorders["bob"].wait(lambda e: isinstance(e, FileOffered))
    await bob.decline_file()
    t = await alice.wait_transfer(out.id, timeout=5)
    assert t.state == "declined"
    ev = await mesh.recorders["alice"].wait(lambda e: isinstance(e, TransferFailed))
    assert isinstance(ev, TransferFailed) and ev.reason == "declined"

    out2 = await alice.send_file("bob", src)
    await mesh.recorders["bob"].wait(
        lambda e: isinstance(e, FileOffered) and e.transfer.id != t.id)
    await alice.cancel_transfer(out2.id)
    offers = [x for x in bob.transfers() if x.state != "declined"]
    await until(lambda: bob.transfers()[-1].state == "cancelled", what="bob sees the cancel")
    assert offers
    with pytest.raises(TransferNotFound):
        await bob.accept_file("99")
    with pytest.raises(FileError):
        await alice.send_file("bob", tmp_path / "missing")


async def test_folder_with_a_symlink(mesh: Mesh, tmp_path: Path) -> None:
    alice, bob = await pair(mesh)
    tree = tmp_path / "docs"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(9000))
    (tree / "empty").write_bytes(b"")
    (tree / "link").symlink_to("/etc/passwd")
    bob.accept_files_from("alice")
    out = await alice.send_file("bob", tree)
    assert out.files == 3
    done = await bob.wait_transfer((await mesh.recorders["bob"].wait(
        lambda e: isinstance(e, FileOffered))).transfer.id, timeout=10)  # type: ignore[attr-defined]
    assert done.state == "done" and done.path == bob.data_dir / "downloads" / "docs"
    assert (done.path / "a.txt").read_text() == "alpha"
    assert (done.path / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()
    assert (done.path / "empty").read_bytes() == b""
    assert not (done.path / "link").exists()


async def test_a_room_send_warns_once_and_leaves_out_a_member_it_cannot_reach(
        mesh: Mesh, tmp_path: Path) -> None:
    """``room.send_file`` to two members: the symlink left out is told once, not once per
    member, and a member the offer cannot reach is left out with a warning while the other
    still gets it."""
    from typing import Any

    from meshchat import Notice, PeerNotFound

    alice, bob = await pair(mesh)
    carol = await add(mesh, "carol")
    room = await alice.host("lobby")
    await bob.join("lobby")
    await carol.join("lobby")
    await until(lambda: len(room.members) == 3, what="three members")
    tree = tmp_path / "docs"
    tree.mkdir()
    (tree / "a.txt").write_text("alpha")
    (tree / "link").symlink_to("/etc/passwd")
    wire = alice._wire
    real = wire.send

    def send(pid: bytes, m: Any) -> bool:  # carol's offer cannot leave
        return False if pid == carol.peer_id and isinstance(m, FileOffer) else real(pid, m)

    wire.send = send  # type: ignore[method-assign,assignment]
    sent = await room.send_file(tree)
    assert [t.peer.name for t in sent] == ["bob"]
    await mesh.recorders["alice"].wait(
        lambda e: isinstance(e, Notice) and "not offered" in e.text)
    notes = [e.text for e in mesh.recorders["alice"].events if isinstance(e, Notice)]
    assert sum("symlink" in n for n in notes) == 1
    assert sum("carol" in n and "not offered" in n for n in notes) == 1
    await mesh.recorders["bob"].wait(lambda e: isinstance(e, FileOffered))
    wire.send = lambda pid, m: False if isinstance(m, FileOffer) else real(pid, m)  # type: ignore[method-assign,assignment]
    with pytest.raises(PeerNotFound):  # no member can be reached: an error, not []
        await room.send_file(tree)


async def test_resume_after_the_receiver_restarts(mesh: Mesh, tmp_path: Path) -> None:
    alice, bob = await pair(mesh)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(2_000_000))  # 489 chunks
    await alice.send_file("bob", src)
    ev = await mesh.recorders["bob"].wait(lambda e: isinstance(e, FileOffered))
    tid = ev.transfer.id  # type: ignore[attr-defined]
    # bob stops taking chunks after a few, as if killed
    await bob.accept_file(tid, into=tmp_path / "in")
    await until(lambda: bob.transfers()[0].done_bytes >= 40_000, what="some chunks")
    await bob.close()
    had = bob.transfers()[0].done_bytes
    sent_before = alice.stats["file_bytes_sent"]
    bob2 = await add(mesh, "bob2", data_dir=mesh.tmp / "bob")
    t = bob2.transfers()[0]
    assert t.state in ("interrupted", "active") and t.done_bytes >= had > 0
    done = await bob2.wait_transfer(tid, timeout=15)
    assert done.state == "done" and done.path is not None and sha(done.path) == sha(src)
    # it did not start from 0: alice served the rest, plus at most a window again
    again = alice.stats["file_bytes_sent"] - sent_before
    assert again <= 2_000_000 - had + 2 * LIMITS.file_credit_chunks * LIMITS.file_chunk_bytes


async def test_resume_after_the_sender_restarts(mesh: Mesh, tmp_path: Path) -> None:
    """kill the sender mid-transfer (closed; its data dir kept) and start it again: the
    receiver's pull goes on with the new sender, which serves only the rest."""
    alice, bob = await pair(mesh)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(2_000_000))
    out = await alice.send_file("bob", src)
    ev = await mesh.recorders["bob"].wait(lambda e: isinstance(e, FileOffered))
    tid = ev.transfer.id  # type: ignore[attr-defined]
    await bob.accept_file(tid, into=tmp_path / "in")
    await until(lambda: bob.transfers()[0].done_bytes >= 40_000, what="some chunks")
    await alice.close()
    had = bob.transfers()[0].done_bytes
    alice2 = await add(mesh, "alice2", data_dir=mesh.tmp / "alice")
    (t,) = alice2.transfers()
    # Interrupted until bob asks again; he may have already (a chunk written after alice
    # went gives its credit back, and the pull asks on at once).
    assert (t.id, t.direction) == (out.id, "out") and t.state in ("interrupted", "active")
    done = await bob.wait_transfer(tid, timeout=15)
    assert done.state == "done" and done.path is not None and sha(done.path) == sha(src)
    assert (await alice2.wait_transfer(out.id, timeout=5)).state == "done"
    # Whichever came first, alice2's offer again (bob answers "accepted") or bob's next
    # request, the pull went on with what bob held.
    assert alice2.stats["file_bytes_sent"] <= \
        2_000_000 - had + 2 * LIMITS.file_credit_chunks * LIMITS.file_chunk_bytes


async def test_an_unanswered_offer_is_offered_again_after_the_sender_restarts(
        mesh: Mesh, tmp_path: Path) -> None:
    alice, bob = await pair(mesh)
    src = tmp_path / "talk.pdf"
    src.write_bytes(os.urandom(50_000))
    out = await alice.send_file("bob", src)
    await mesh.recorders["bob"].wait(lambda e: isinstance(e, FileOffered))
    # alice restarts; bob still holds the offer: he says so once, and nothing is doubled
    await alice.close()
    alice2 = await add(mesh, "alice2", data_dir=mesh.tmp / "alice")
    assert [(t.id, t.state) for t in alice2.transfers()] == [(out.id, "offered")]
    await until(lambda: alice2._files.get(out.id).reoffer_at is None, what="bob answers")
    assert alice2.stats["file_reoffers"] == 1 and len(bob.transfers()) == 1
    # both go down, and bob loses the offer (as if it never reached him): once both are up
    # again it reappears, and is accepted and delivered
    await alice2.close()
    await bob.close()
    (mesh.tmp / "bob" / "transfers.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        (mesh.tmp / "bob" / f"transfers.sqlite{extra}").unlink(missing_ok=True)
    bob2 = await add(mesh, "bob2", data_dir=mesh.tmp / "bob")
    assert bob2.transfers() == []
    alice3 = await add(mesh, "alice3", data_dir=mesh.tmp / "alice")
    ev = await mesh.recorders["bob2"].wait(lambda e: isinstance(e, FileOffered), timeout=10)
    assert isinstance(ev, FileOffered) and ev.transfer.name == "talk.pdf"
    await bob2.accept_file(ev.transfer.id, into=tmp_path / "in")
    done = await bob2.wait_transfer(ev.transfer.id, timeout=10)
    assert done.state == "done" and done.path is not None and sha(done.path) == sha(src)
    assert (await alice3.wait_transfer(out.id, timeout=5)).state == "done"


async def test_open_outgoing_transfers_are_bounded(mesh: Mesh, tmp_path: Path) -> None:
    alice = await add(mesh, "alice", limits=Limits(file_chunk_bytes=4096, max_open_outgoing=2))
    await add(mesh, "bob")
    await until(lambda: len(alice.peers()) == 1, what="peers")
    src = tmp_path / "a.bin"
    src.write_bytes(b"x")
    await alice.send_file("bob", src)
    await alice.send_file("bob", src)
    with pytest.raises(FileError, match="open already"):
        await alice.send_file("bob", src)
    await alice.cancel_transfer("1")
    await alice.send_file("bob", src)


async def test_damaged_partial_file_is_fetched_again(mesh: Mesh, tmp_path: Path) -> None:
    alice, bob = await pair(mesh)
    src = tmp_path / "d.bin"
    src.write_bytes(os.urandom(2_000_000))
    await alice.send_file("bob", src)
    ev = await mesh.recorders["bob"].wait(lambda e: isinstance(e, FileOffered))
    tid = ev.transfer.id  # type: ignore[attr-defined]
    await bob.accept_file(tid, into=tmp_path / "in")
    await until(lambda: bob.transfers()[0].done_bytes >= 20_000, what="some chunks")
    await bob.close()
    part = tmp_path / "in" / "d.bin.part"
    with part.open("r+b") as fh:
        fh.write(b"\0" * 100)
    bob2 = await add(mesh, "bob2", data_dir=mesh.tmp / "bob")
    done = await bob2.wait_transfer(tid, timeout=15)
    assert done.state == "done" and done.path is not None and sha(done.path) == sha(src)
    assert bob2.stats["file_chunks_refetched"] >= 1


async def test_hostile_offers_and_chunks(mesh: Mesh, tmp_path: Path) -> None:
    alice, bob = await pair(mesh)
    pid = bob.peer_id
    wire = alice._wire
    into = tmp_path / "in"
    into.mkdir()
    (into / "passwd").write_text("mine")  # a name that collides with a file already there
    # (ten offers: the burst of Limits.file_offers_*)
    names = ["../../etc/passwd", "/etc/sh\x00a\x1b[2Jdow", "CON", "a/../../b",
             "C:\\x\\y.txt", "d/" + "n" * 300]
    for name in names:
        wire.send(pid, FileOffer(os.urandom(16), name, (FileItem(name, 10),), 4096))
    wire.send(pid, FileOffer(os.urandom(16), "huge", (FileItem("huge", 2**64 - 1),), 4096))
    refused = [os.urandom(16) for _ in range(3)]
    wire.send(pid, FileOffer(refused[0], "x", (FileItem("a/b", 1), FileItem("c", 1)), 4096))
    wire.send(pid, FileOffer(refused[1], "x", (FileItem("x/../../b", 1),), 4096))
    wire.send(pid, FileOffer(refused[2], "x", (FileItem("x/" + "/".join(["y" * 200] * 11), 1),),
                             4096))
    wire.send(pid, FileChunk(os.urandom(16), 2**64 - 1, b"x", b"y" * 16))
    wire.send(pid, FileGet(os.urandom(16), 0, 2**64 - 1))
    await until(lambda: len(bob.transfers()) == len(names), what="the offers kept")
    await until(lambda: bob.stats["dropped_file_bad_offer"] == 1, what="bad offer dropped")
    await until(lambda: (bob.stats["dropped_file_bad_tree"], bob.stats["dropped_file_bad_path"],
                         bob.stats["dropped_file_long_path"]) == (1, 1, 1),
                what="refused offers counted by reason")
    await until(lambda: bob.stats["dropped_unsolicited"] >= 1, what="chunk refused")
    await until(lambda: bob.stats["dropped_file_unknown"] >= 1, what="fget refused")
    assert [t.name for t in bob.transfers()] == \
        ["passwd", "sh_a_[2Jdow", "_CON", "b", "y.txt", "n" * 250]
    for t in bob.transfers():
        assert t.files == 1 and "/" not in t.name and "\x00" not in t.name
        got = await bob.accept_file(t.id, into=into)
        assert got.path is not None and got.path.parent == into
    assert (into / "passwd").read_text() == "mine"
    assert (into / "passwd (1).part").exists()
    assert all(p.parent == into and not p.is_dir() for p in into.iterdir())
    assert not (tmp_path / "etc").exists() and not (tmp_path / "b").exists()


async def test_offer_flood_is_rate_limited(mesh: Mesh) -> None:
    alice, bob = await pair(mesh)
    for i in range(100):
        alice._wire.send(bob.peer_id, FileOffer(os.urandom(16), f"f{i}", (FileItem("f", 1),),
                                                4096))
    await until(lambda: bob.stats["dropped_rate"] > 50, what="flood refused")
    assert len(bob.transfers()) <= Limits().file_offers_burst + 2


async def test_a_lost_offer_is_offered_again_until_the_receiver_has_it(
        mesh: Mesh, tmp_path: Path) -> None:
    """An offer written into a connection that dies is lost with it: the sender offers again
    (``file_reoffer_s``, doubling) until the receiver's "offered" receipt comes back."""
    alice, bob = await pair(mesh)
    lost = lose_first(alice, FileOffer)
    src = tmp_path / "notes.txt"
    src.write_bytes(os.urandom(10_000))
    out = await alice.send_file("bob", src)
    assert lost
    ev = await mesh.recorders["bob"].wait(lambda e: isinstance(e, FileOffered), timeout=5)
    assert isinstance(ev, FileOffered) and ev.transfer.name == "notes.txt"
    files = alice._files
    assert files is not None
    job = files.get(out.id)
    await until(lambda: job.reoffer_at is None, what="the receipt came")
    assert alice.stats["file_reoffers"] == 1
    assert len(bob.transfers()) == 1  # one offer, however often it came
    got = await bob.accept_file(ev.transfer.id, into=tmp_path / "in")
    done = await bob.wait_transfer(got.id, timeout=10)
    assert done.state == "done" and sha(tmp_path / "in" / "notes.txt") == sha(src)


async def test_sums_past_the_backlog_are_finished_from_disk(tmp_path: Path) -> None:
    """The thread that hashes chunks as they pass holds at most its backlog; a chunk it had no
    room for is not hashed there, and the sum is finished from the file instead: still the
    whole file's SHA-256."""
    import threading

    from meshchat.runtime.filedisk import DiskThread, finish_sha256
    from meshchat.transfer import RunningSums

    data = os.urandom(64 * 1024)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    summer, sums, gate = DiskThread(backlog=2), RunningSums(), threading.Event()
    summer._pool.submit(gate.wait)  # the thread is busy: what comes next waits in line
    for offset in range(0, len(data), 8192):
        summer.feed(sums, 0, offset, data[offset:offset + 8192])
    gate.set()
    [(h, offset)] = await summer.resume(sums, [0])
    assert offset == 2 * 8192  # two chunks had room; the rest went unhashed
    assert finish_sha256(path, h, offset) == hashlib.sha256(data).digest()
    summer.close()
    [(h, offset)] = await summer.resume(sums, [0])  # closed: from the start of the file
    assert offset == 0 and finish_sha256(path, h, offset) == hashlib.sha256(data).digest()


async def test_writes_that_end_together_are_handed_back_together(tmp_path: Path) -> None:
    """The disk thread writes each chunk at its offset and hands the ends back to the loop,
    many per wake-up; a write that fails hands back its error, not a traceback."""
    import asyncio
    import threading
    from collections.abc import Callable

    from meshchat.runtime.filedisk import DiskThread
    from meshchat.transfer import RunningSums

    writer, sums, gate = DiskThread(backlog=8), RunningSums(), threading.Event()
    path = tmp_path / "f.part"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    ended: list[tuple[int, BaseException | None]] = []
    wakeups = 0
    hand_back = writer._hand_back

    def counted() -> None:
        nonlocal wakeups
        wakeups += 1
        hand_back()

    writer._hand_back = counted  # type: ignore[method-assign]
    writer._pool.submit(gate.wait)  # the thread is busy: the writes wait in line
    chunks = [os.urandom(4096) for _ in range(6)]

    def record(i: int) -> Callable[[BaseException | None], None]:
        return lambda error: ended.append((i, error))

    for i in reversed(range(6)):  # any order: each lands at its offset
        writer.write(fd, i * 4096, chunks[i], sums, 0, record(i))
    writer.write(-1, 0, b"x", sums, 1, lambda error: ended.append((-1, error)))
    all_written = threading.Event()
    writer._pool.submit(all_written.set)  # runs after the 7 writes, on the same thread
    try:
        gate.set()
        # The loop is held (a blocking wait, not an await) until the thread has ended all
        # 7, so the hand-backs are certain to meet in one wake-up: a loop left free to run
        # between two writes may take each alone, which is right but proves nothing here.
        assert all_written.wait(10), "the disk thread did not get through the writes"
        await until(lambda: len(ended) == 7, what="every write handed back")
        assert sorted(i for i, e in ended if e is None) == list(range(6))
        assert [type(e) for i, e in ended if i == -1] == [OSError]
        assert wakeups == 1
        os.close(fd)
        assert path.read_bytes() == b"".join(chunks)
    finally:
        gate.set()
        writer.close()
    closed: list[BaseException | None] = []
    writer.write(fd, 0, b"x", sums, 0, closed.append)  # after close: refused, on the loop
    await asyncio.sleep(0)
    assert len(closed) == 1 and isinstance(closed[0], OSError)


async def test_a_write_that_ends_as_the_node_closes_is_not_counted(tmp_path: Path) -> None:
    """``close`` waits for the write under way; its end reaches the loop only afterwards,
    when the transfer store is closed too. It is dropped, not counted: a chunk counted then
    would be shown as received and never recorded, and the resume would find less than the
    transfer had said (seen as ``done_bytes`` going back after a restart)."""
    import asyncio
    import threading

    from meshchat.runtime.filedisk import DiskThread
    from meshchat.transfer import RunningSums

    writer, sums = DiskThread(backlog=8), RunningSums()
    fd = os.open(tmp_path / "f.part", os.O_WRONLY | os.O_CREAT, 0o600)
    ended: list[BaseException | None] = []
    try:
        writer.write(fd, 0, b"chunk", sums, 0, ended.append)
        # The loop is held (no await) until the thread has ended the write: its hand-back
        # is queued on the loop, and can run only after ``close``.
        written = threading.Event()
        writer._pool.submit(written.set)
        assert written.wait(10), "the disk thread did not get through the write"
        writer.close()
        assert (tmp_path / "f.part").read_bytes() == b"chunk"  # the data is on disk
        for _ in range(3):
            await asyncio.sleep(0)
        assert ended == []
    finally:
        os.close(fd)
