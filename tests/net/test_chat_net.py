"""Three machines chat with no server (issue 2), end to end through line mode.

One ``python -m meshchat start --no-tui`` per network namespace of a lab (``netlab.Lab``),
driven through stdin and stdout exactly as a user or a script would. Each test checks what the
other members print, not only the sender's own echo.
"""

from __future__ import annotations

import re
import time

from .conftest import LabFactory
from .helpers import (
    CLOCK,
    FAST,
    ROOM,
    Chat,
    all_trouble_free,
    chat_re,
    lit,
    open_room,
    split_members,
)
from .netlab import scaled


def _seconds_of_day(clock: str) -> int:
    h, m, s = (int(x) for x in clock.split(":"))
    return h * 3600 + m * 60 + s


def _assert_recent(clock: str, slack_s: int = 10) -> None:
    """An ``HH:MM:SS`` stamp within ``slack_s`` of the local time (across midnight too)."""
    now = _seconds_of_day(time.strftime("%H:%M:%S"))
    diff = abs(now - _seconds_of_day(clock)) % 86400
    assert min(diff, 86400 - diff) <= slack_s, f"{clock} is not the current time"


def _only_line_between(chat: Chat, command: str) -> list[str]:
    """Run ``command``, then ``/version`` as a marker; the lines printed in between."""
    mark = chat.mark()
    chat.send(command)
    chat.send("/version")
    chat.expect(r"^\* meshchat \S+ \(protocol \d+, Python ")
    return [line for line in chat.lines_since(mark) if not line.startswith("* meshchat ")]


def test_three_hosts_find_the_room_join_chat_and_leave(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    h0, h1, h2 = lab.hosts

    # 1. alice asks for lobby; nobody has it, so she hosts it and says so.
    alice = Chat.start(h0, "alice", "--room", ROOM, discovery_timeout=None)
    alice.expect(rf"^\* no room {ROOM} on the network: hosting it$", 10)
    alice.expect(rf"^\* hosting room {ROOM}$")

    # 2. bob lists what he finds in the 2 s start-up look; carol asks for lobby and joins it.
    started = time.monotonic()
    bob = Chat.start(h1, "bob", discovery_timeout=2.0, wait=False)
    carol = Chat.start(h2, "carol", "--room", ROOM, discovery_timeout=2.0, wait=False)
    bob.started()
    bob.expect(rf"^\* rooms: {ROOM} \(alice, [12] members?\)$", 10)
    # The 2 s look plus interpreter start-up; generous, as a loaded machine starts slowly.
    assert time.monotonic() - started < scaled(2.0 + 8.0)
    bob.send(f"/join {ROOM}")
    bob.expect(rf"^\* joined {ROOM} \(host alice; members: alice, .*bob")
    carol.started()
    carol.expect(rf"^\* joined {ROOM} \(host alice; members: alice, .*carol")
    alice.wait_line(rf"^\* bob joined {ROOM}$")
    alice.wait_line(rf"^\* carol joined {ROOM}$")
    bob_first = any(re.search(r"members: .*bob", line) for line in carol.lines)
    first, second = (bob, carol) if bob_first else (carol, bob)
    first.wait_line(rf"^\* {second.name} joined {ROOM}$")

    # 3. A line from any member reaches every member with the sender's name and the time.
    members = (alice, bob, carol)
    for sender in members:
        text = f"hello from {sender.name} 7f3a"
        sender.say(text)
        for other in members:
            _assert_recent(other.wait_line(chat_re(sender.name, text))["time"])

    # /msg carol: carol only. bob gets the room marker sent after it, and not the message.
    alice.send("/msg carol for carol only 91c2")
    alice.expect(rf"^{CLOCK} \[private\] <alice → carol> for carol only 91c2$")
    carol.expect(rf"^{CLOCK} \[private\] <alice → you> for carol only 91c2$")
    bob_mark = bob.mark()
    alice.say("marker after the first private message")
    bob.wait_line(chat_re("alice", "marker after the first private message"), since=bob_mark)
    carol.wait_line(chat_re("alice", "marker after the first private message"))

    # /msg bob,carol: both, privately, each told who else got it.
    alice.send("/msg bob,carol for bob and carol 4be1")
    alice.expect(rf"^{CLOCK} \[private\] <alice → bob,carol> for bob and carol 4be1$")
    bob.expect(rf"^{CLOCK} \[private\] <alice → you,carol> for bob and carol 4be1$")
    carol.expect(rf"^{CLOCK} \[private\] <alice → bob,you> for bob and carol 4be1$")

    # /ping: the round trip in milliseconds, to a peer and to the room (its host).
    bob.send("/ping alice")
    rtt = float(bob.expect(r"^\* ping alice: ([\d.]+) ms$")[1])
    assert 0.0 < rtt < 1000.0
    carol.send(f"/ping {ROOM}")
    carol.expect(rf"^\* ping {ROOM} \(host alice\): [\d.]+ ms$")

    # /list in a room: the members; /help: the commands.
    bob.send("/list")
    listed = split_members(bob.expect(rf"^\* members of {ROOM} \(3\): (.*)$")[1])
    assert sorted(listed) == ["alice (host)", "bob (you)", "carol"]
    bob.send("/help")
    bob.expect(r"/msg NAME")

    # /leave: shown to the others; outside a room /list lists the rooms.
    bob.send("/leave")
    bob.expect(rf"^\* you left {ROOM}$")
    alice.expect(rf"^\* bob left {ROOM}$")
    carol.expect(rf"^\* bob left {ROOM}$")
    bob.send("/list")  # the count comes with alice's next heartbeat: 3 until then
    bob.expect(rf"^\* rooms: {ROOM} \(alice, [23] members\)$")

    # /quit: carol says bye and exits 0; the others see her leave the room and the network.
    assert carol.quit() == 0
    alice.expect(rf"^\* carol left {ROOM}( \(quit\))?$")
    alice.wait_line(r"^\* carol left the network$")
    bob.wait_line(r"^\* carol left the network$")

    # bob never got the private message meant for carol alone, not even late.
    bob.send("/ping alice")
    bob.expect(r"^\* ping alice: ")
    assert not any("for carol only" in line for line in bob.lines), bob.lines
    assert not any("for carol only" in line for line in alice.lines if "[private]" not in line)
    all_trouble_free(alice, bob, carol)


def test_mistakes_get_one_clear_error_line_and_no_traceback(lab_factory: LabFactory) -> None:
    lab = lab_factory(2)
    alice, bob = open_room(lab.hosts, ["alice", "bob"])
    bob.send("/leave")
    bob.expect(rf"^\* you left {ROOM}$")

    cases = [
        ("/frobnicate now", [r"^\* error: unknown command /frobnicate — /help lists them$"]),
        ("/msg nobody hi there", [r"^\* error: no peer called 'nobody'"]),
        ("/ping nobody", [r"^\* error: no peer called 'nobody'"]),
        ("/join nowhere", [r"^\* joining nowhere…$",
                           r"^\* error: no room nowhere on the network \(/rooms lists them\)$"]),
        ("hello, is anyone here", [r"^\* error: you are not in a room"]),
        ("/msg", [r"^\* error: .*usage: /msg NAME"]),
        ("/kick alice", [r"^\* error: you are not in a room"]),
    ]
    for command, expected in cases:
        shown = _only_line_between(bob, command)
        assert len(shown) == len(expected), (command, shown)
        for line, pattern in zip(shown, expected, strict=True):
            assert re.search(pattern, line), (command, line, pattern)

    # Inside a room, a host-only command from a member: one line too.
    bob.send(f"/join {ROOM}")
    bob.expect(rf"^\* joined {ROOM} ")
    shown = _only_line_between(bob, "/kick alice")
    assert shown == ["* error: only the host can kick"], shown

    # Still alive and chatting; nothing on stderr.
    bob.say("still here after all that")
    alice.wait_line(chat_re("bob", "still here after all that"))
    assert bob.proc.returncode is None
    assert bob.proc.err_lines == [], bob.proc.err_lines
    all_trouble_free(alice, bob)


def test_two_peers_with_the_same_name_both_work_and_are_told_apart(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, bob1, bob2 = open_room(lab.hosts, ["alice", "bob", "bob"])
    assert bob1.fp != bob2.fp
    tag1, tag2 = f"bob#{bob1.fp[:4]}", f"bob#{bob2.fp[:4]}"

    bob1.say("first bob speaking")
    bob2.say("second bob speaking")
    alice.wait_line(chat_re(tag1, "first bob speaking"))
    alice.wait_line(chat_re(tag2, "second bob speaking"))
    bob2.wait_line(chat_re(tag1, "first bob speaking"))
    bob1.wait_line(chat_re(tag2, "second bob speaking"))

    alice.send("/list")
    listed = split_members(alice.expect(rf"^\* members of {ROOM} \(3\): (.*)$")[1])
    assert sorted(listed) == sorted(["alice (host, you)", tag1, tag2])

    # A bare name is ambiguous: one clear line naming both fingerprints.
    alice.send("/msg bob hello?")
    err = alice.expect(r"^\* error: (.*)$")[1]
    assert "ambiguous" in err and bob1.fp in err and bob2.fp in err, err

    # name#fp4 (as shown) and a fingerprint prefix each pick one of them.
    alice.send(f"/msg {tag2} only for the second bob")
    bob2.expect(rf"^{CLOCK} \[private\] <alice → you> only for the second bob$")
    alice.send(f"/msg {bob1.fp} only for the first bob")
    bob1.expect(rf"^{CLOCK} \[private\] <alice → you> only for the first bob$")
    mark1, mark2 = bob1.mark(), bob2.mark()
    alice.say("marker after the private messages")
    bob1.expect_no("only for the second bob", within=5,
                   until=chat_re("alice", "marker after the private messages"))
    bob2.expect_no("only for the first bob", within=5,
                   until=chat_re("alice", "marker after the private messages"))
    assert "only for the second bob" not in " ".join(bob1.lines_since(mark1))
    assert "only for the first bob" not in " ".join(bob2.lines_since(mark2))

    # Each bob can ping the other by the shown form.
    bob1.send(f"/ping {tag2}")
    bob1.expect(rf"^\* ping {lit(tag2)}: [\d.]+ ms$")
    all_trouble_free(alice, bob1, bob2)


def test_a_member_killed_with_kill_9_is_shown_gone_within_the_liveness_timeout(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, bob, carol = open_room(lab.hosts, ["alice", "bob", "carol"])
    carol.say("carol was here")
    alice.wait_line(chat_re("carol", "carol was here"))
    bob.wait_line(chat_re("carol", "carol was here"))

    carol.kill()
    killed = time.monotonic()
    # Gone = no heartbeat for peer_expired_s; the host then drops her from the room.
    limit = FAST.peer_expired_s + FAST.heartbeat_interval_s * 2 + 1.0
    alice.expect(rf"^\* carol left {ROOM} \(vanished\)$", timeout=limit)
    bob.expect(rf"^\* carol left {ROOM} \(vanished\)$", timeout=limit)
    seen_after = time.monotonic() - killed
    alice.wait_line(r"^\* carol vanished from the network$", timeout=limit)
    bob.wait_line(r"^\* carol vanished from the network$", timeout=limit)
    assert seen_after < limit * 1.5

    # Nothing hangs: chat goes on, /list shows two, and both quit cleanly.
    bob.say("carol is gone")
    alice.wait_line(chat_re("bob", "carol is gone"))
    alice.send("/list")
    alice.expect(rf"^\* members of {ROOM} \(2\): alice \(host, you\), bob$")
    bob.send("/msg carol are you there")
    bob.expect(r"^\* error: ")
    assert bob.quit() == 0
    assert alice.quit() == 0
    all_trouble_free(alice, bob)


def test_the_bridge_never_carries_a_chat_or_private_text(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    secrets = ["room line zq8v1 the cake is a lie", "private line kx42 meet at noon",
               "group private line pw77 bring snacks", "reply line mm03 from carol"]
    with lab.capture() as capture:
        alice, bob, carol = open_room(lab.hosts, ["alice", "bob", "carol"])
        alice.say(secrets[0])
        alice.send(f"/msg bob {secrets[1]}")
        alice.send(f"/msg bob,carol {secrets[2]}")
        carol.say(secrets[3])
        for chat in (bob, carol):
            chat.wait_texts([secrets[0], secrets[2], secrets[3]])
        bob.wait_texts([secrets[1]])
        alice.wait_texts([secrets[3]])
    assert capture.packets > 0
    # The capture holds meshchat's traffic: the room name is public (mDNS), the texts are not.
    assert capture.contains(ROOM.encode())
    for text in secrets:
        for needle in (text, text.split()[2]):  # the whole line and its unique marker word
            assert not capture.contains(needle.encode()), f"{needle!r} crossed the bridge"
    all_trouble_free(alice, bob, carol)
