"""Issue 7 across namespaces: file transfer over the CURVE direct channel, resumable and
verified. Agents on the public API (``tests/net/api_agent.py``)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from .conftest import LabFactory
from .helpers import Agent
from .netlab import scaled

MIB = 1024 * 1024


def make_file(path: Path, size: int, marker: bytes = b"") -> str:
    """A file of random bytes (``marker`` repeated at the front of every MiB); its SHA-256."""
    h = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            block = (marker + os.urandom(MIB - len(marker)))[:min(MIB, left)]
            fh.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def sha_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


def meet(*agents: Agent) -> None:
    deadline = time.monotonic() + scaled(15)
    for a in agents:
        want = {b.name for b in agents if b is not a}
        while want - {p["name"] for p in a.call("peers")}:
            assert time.monotonic() < deadline, f"{a.name} does not see {want}"
            time.sleep(0.05)


def test_300_mib_verified_and_a_third_member_gets_nothing(lab_factory: LabFactory,
                                                          tmp_path: Path) -> None:
    lab = lab_factory(3)
    alice, bob, carol = (Agent.start(h, n) for h, n in zip(lab.hosts, ["alice", "bob", "carol"],
                                                            strict=True))
    meet(alice, bob, carol)
    src = tmp_path / "big.bin"
    digest = make_file(src, 300 * MIB)
    out = alice.call("send_file", to="bob", path=str(src))
    offer = bob.wait_event(type="FileOffered")["transfer"]
    assert offer["size"] == 300 * MIB and offer["name"] == "big.bin"
    started = time.monotonic()
    bob.call("accept_file", tid=offer["id"], into=str(tmp_path / "in"))
    done = bob.call("wait_transfer", scaled(120), tid=offer["id"], seconds=scaled(120))
    elapsed = time.monotonic() - started
    print(f"300 MiB namespace to namespace: {elapsed:.2f} s "
          f"({300 / elapsed:.0f} MiB/s, written and verified)")
    assert done["state"] == "done", done
    assert done["sha256"] == digest and sha_of(done["path"]) == digest
    assert not os.path.exists(done["path"] + ".part")
    assert alice.call("wait_transfer", tid=out["id"], seconds=10)["state"] == "done"
    assert alice.stats()["file_bytes_sent"] < 300 * MIB + 16 * 128 * 1024
    assert not any(e["type"] == "FileOffered" for e in carol.events())
    assert carol.call("transfers") == []

    # the same channel, watched on the bridge: the file's bytes never appear in clear
    small = tmp_path / "secret.txt"
    marker = b"MESHCHAT-MARKER-7f3a9c"
    make_file(small, 2 * MIB, marker)
    with lab.capture() as capture:
        alice.call("send_file", to="bob", path=str(small))
        offer = bob.wait_event(type="FileOffered", transfer={"name": "secret.txt"})["transfer"]
        bob.call("accept_file", tid=offer["id"], into=str(tmp_path / "in"))
        assert bob.call("wait_transfer", tid=offer["id"], seconds=scaled(30))["state"] == "done"
    assert capture.packets > 0 and len(capture.data) > MIB  # most of the file crossed it
    assert not capture.contains(marker), "the file's marker crossed the bridge in clear"


def test_kill_9_receiver_at_40_percent_resumes(lab_factory: LabFactory, tmp_path: Path) -> None:
    lab = lab_factory(2)
    alice, bob = Agent.start(lab.hosts[0], "alice"), Agent.start(lab.hosts[1], "bob")
    meet(alice, bob)
    size = 200 * MIB
    src = tmp_path / "resume.bin"
    digest = make_file(src, size)
    alice.call("send_file", to="bob", path=str(src))
    offer = bob.wait_event(type="FileOffered")["transfer"]
    bob.call("accept_file", tid=offer["id"], into=str(tmp_path / "in"))
    deadline = time.monotonic() + scaled(60)
    while True:
        (t,) = bob.call("transfers")
        if t["done_bytes"] >= 0.4 * size:
            break
        assert t["state"] != "done", "finished before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    bob.proc.kill()
    bob.proc.popen.wait(10)
    sent_before = alice.stats()["file_bytes_sent"]
    bob = Agent.start(lab.hosts[1], "bob")
    (t,) = bob.call("transfers")
    assert t["state"] in ("interrupted", "active") and t["done_bytes"] >= 0.3 * size, t
    had = t["done_bytes"]
    done = bob.call("wait_transfer", scaled(90), tid=offer["id"], seconds=scaled(90))
    assert done["state"] == "done" and sha_of(done["path"]) == digest
    again = alice.stats()["file_bytes_sent"] - sent_before
    print(f"resume after kill -9 at {had / size:.0%}: {again / MIB:.1f} MiB fetched after "
          f"the restart (the rest was {(size - had) / MIB:.1f} MiB)")
    assert again < size - 0.3 * size  # it did not start from 0
