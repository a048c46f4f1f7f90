"""Issue 8 in the namespace lab: each example bot, run as users run it (``meshchat bot
examples/X.py --room lobby``), against real ``meshchat start`` members in line mode; and a bot
that keeps answering after its room's host is killed (``kill -9``) mid-conversation."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .conftest import LabFactory
from .helpers import ROOM, Chat, chat_re, lit, open_room
from .netlab import REPO_ROOT, Host, Proc

EXAMPLES = REPO_ROOT / "examples"


def start_bot(host: Host, example: str, name: str, env: dict[str, str] | None = None) -> Proc:
    proc = host.spawn_meshchat("bot", str(EXAMPLES / example), "--room", ROOM, "--name", name,
                               "--interface", host.ifname, "--fast-timings", env=env)
    proc.expect(rf"^\* {lit(name)} joined {lit(ROOM)}$", timeout=20)
    return proc


def wait_said(chat: Chat, sender: str, pattern: str, timeout: float = 10.0) -> str:
    """Wait for ``sender``'s room line whose text matches the regex ``pattern``."""
    line = chat.wait_line(chat_re(sender, "").removesuffix("$") + pattern + "$", timeout=timeout)
    return line.group(0)


def test_every_example_bot_answers_real_members(lab_factory: LabFactory,
                                                tmp_path: Path) -> None:
    lab = lab_factory(6)
    alice, bob = open_room(lab.hosts[:2], ["alice", "bob"])
    logs = tmp_path / "chatlogs"
    bots = [start_bot(lab.hosts[2], "echo_bot.py", "echo"),
            start_bot(lab.hosts[3], "dice_bot.py", "dice"),
            start_bot(lab.hosts[4], "logger_bot.py", "logger",
                      env={"MESHCHAT_LOG_DIR": str(logs)}),
            start_bot(lab.hosts[5], "poll_bot.py", "poll")]
    for name in ("echo", "dice", "logger", "poll"):
        alice.wait_line(rf"^\* {lit(name)} joined {lit(ROOM)}$")

    bob.say("!echo hallo welt")
    wait_said(alice, "echo", r"hallo welt")
    bob.say("!roll 2d6")
    wait_said(alice, "dice", r"bob rolled 2d6: [1-6] \+ [1-6] = \d+")
    bob.say("!roll lots")
    wait_said(bob, "dice", r"usage: !roll NdM.*")
    alice.say("!poll Pizza? | ja | nein")
    wait_said(bob, "poll", r"poll: Pizza\? — 1\) ja 2\) nein — vote with !vote N")
    bob.say("!vote 1")
    wait_said(alice, "poll", r"bob voted 1; 1\) ja: 1; 2\) nein: 0")
    bob.say("!vote zwei")  # not a number: the usage line, from the signature
    wait_said(bob, "poll", r"choice must be a whole number, not 'zwei'\. usage: !vote <choice>.*")
    alice.say("!close")
    wait_said(bob, "poll", r"poll closed: Pizza\? — 1\) ja: 1; 2\) nein: 0")
    bob.say("!help")
    wait_said(alice, "poll", r"commands: !close !poll !vote — !help NAME for one")

    # The logger wrote what was said as JSON lines, one file per room and day.
    deadline = time.monotonic() + 10
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        files = list((logs / ROOM).glob("*.jsonl")) if (logs / ROOM).exists() else []
        rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        if any(r["text"] == "!close" for r in rows):
            break
        time.sleep(0.1)
    said = [(r["sender"], r["text"]) for r in rows]
    assert ("bob", "!echo hallo welt") in said and ("alice", "!close") in said, said
    assert ("echo", "hallo welt") in said  # other bots' lines too, never its own
    assert all(r["sender"] != "logger" for r in rows)
    for proc in bots:
        assert proc.returncode is None, proc.describe("a bot died")


def test_a_bot_answers_after_its_host_is_killed(lab_factory: LabFactory) -> None:
    lab = lab_factory(4)
    alice, bob, carol = open_room(lab.hosts[:3], ["alice", "bob", "carol"])
    dice = start_bot(lab.hosts[3], "dice_bot.py", "dice")
    alice.wait_line(rf"^\* dice joined {lit(ROOM)}$")
    bob.say("!roll 1d6")
    wait_said(carol, "dice", r"bob rolled 1d6: [1-6]")
    alice.kill()  # kill -9 of the host, mid-conversation
    bob.wait_line(rf"^\* (you are now the host of {lit(ROOM)}|\S+ is now the host of "
                  rf"{lit(ROOM)}) \(was alice\)$", timeout=15)
    carol.say("!roll 3d4")
    wait_said(bob, "dice", r"carol rolled 3d4: [1-4] \+ [1-4] \+ [1-4] = \d+", timeout=15)
    assert dice.returncode is None, dice.describe("the bot died")
    # Ctrl-C / SIGTERM: a clean stop (exit 0), and the room hears it leave.
    dice.kill(15)
    assert dice.wait(10) == 0, dice.describe("the bot did not stop cleanly")
    bob.wait_line(rf"^\* dice (left|quit) {lit(ROOM)}|^\* dice left {lit(ROOM)} \(quit\)$")


def test_the_drop_bot_takes_a_members_file_and_announces_it(lab_factory: LabFactory,
                                                            tmp_path: Path) -> None:
    lab = lab_factory(3)
    alice, bob = open_room(lab.hosts[:2], ["alice", "bob"])
    drop_dir = tmp_path / "dropbox"
    drop = start_bot(lab.hosts[2], "drop_bot.py", "drop", env={"MESHCHAT_DROP_DIR": str(drop_dir)})
    alice.wait_line(rf"^\* drop joined {lit(ROOM)}$")
    src = tmp_path / "notes.txt"
    src.write_bytes(b"meeting notes\n" * 5000)
    bob.send(f"/send file drop {src}")
    wait_said(alice, "drop", r"bob dropped notes\.txt \(70,000 bytes, sha256 [0-9a-f]{12}…\)",
              timeout=20)
    assert (drop_dir / "notes.txt").read_bytes() == src.read_bytes()
    assert drop.returncode is None, drop.describe("the bot died")
