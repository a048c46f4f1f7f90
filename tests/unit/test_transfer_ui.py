"""Issue 7 in the interface: the file commands parse, and line mode prints the offer and a
line at every 10%."""

from __future__ import annotations

from meshchat import FileOffered, PeerInfo, Transfer, TransferDone, TransferProgress
from meshchat import commands as c
from meshchat.tui.transfers import TransferLines, human_size

ALICE = PeerInfo("alice", "f" * 64)


def t(done: int, state: str = "active", size: int = 12_897_485) -> Transfer:
    return Transfer("3", "in", ALICE, "talk.pdf", size, 1, done, state)


def test_commands_parse() -> None:
    assert c.parse("/accept") == c.Accept()
    assert c.parse("/accept 3") == c.Accept("3")
    assert c.parse("/accept 3 ~/in box") == c.Accept("3", "~/in box")
    assert c.parse("/accept ~/in") == c.Accept(None, "~/in")
    assert c.parse("/decline") == c.Decline()
    assert c.parse("/decline 4") == c.Decline("4")
    assert c.parse("/cancel 2") == c.Cancel("2")
    assert c.parse("/files") == c.Files()
    assert c.parse("/send file lobby ~/a b.pdf") == c.SendFile("lobby", "~/a b.pdf")


def test_offer_line_and_a_progress_line_every_ten_percent() -> None:
    clock = iter(float(i) for i in range(1000))
    lines = TransferLines(now=lambda: next(clock))
    assert lines.line(FileOffered(t(0, "offered"))) == \
        "alice offers talk.pdf (12.3 MiB) — /accept 3 or /decline 3"
    size = 12_897_485
    shown = [lines.line(TransferProgress(t(size * k // 40))) for k in range(41)]
    progress = [s for s in shown if s is not None]
    assert [p.split(": ")[1].split("%")[0] for p in progress] == \
        [str(10 * k) for k in range(1, 10)]
    done = lines.line(TransferDone(t(size, "done")))
    assert done is not None and "done" in done
    assert human_size(1023) == "1023 B" and human_size(1536) == "1.5 KiB"


def test_files_lists_under_a_header() -> None:
    from meshchat.tui.transfers import listing

    assert listing([]) == ["no file transfers"]
    header, row = listing([t(1024 * 1024, size=2 * 1024 * 1024)])
    assert header.split() == ["id", "dir", "peer", "name", "size", "state", "done"]
    assert row.split()[:4] == ["3", "in", "alice", "talk.pdf"]
    assert row.endswith("50%")
