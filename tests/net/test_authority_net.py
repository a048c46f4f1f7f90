"""The room's authority (issue 3), end to end: handoff, host quit, failover, partitions,
moderation, passwords and gap filling — one ``meshchat start --no-tui`` per namespace.

Most tests run with ``--fast-timings`` (heartbeat 50 ms, a peer is gone after 1 s, a silent
host is replaced after 0.3 s + an unanswered 0.15 s ping); the graceful-quit test keeps the
default timings, because "at once" is only visible against the real failover delay.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .conftest import LabFactory
from .helpers import (
    DEFAULT,
    FAST,
    ROOM,
    Chat,
    all_trouble_free,
    chat_re,
    deadline_in,
    open_room,
    story,
    wait_same,
)
from .netlab import meshchat_argv


def _host_of(chat: Chat) -> str:
    return chat.room_view()[0]


def _view_of(chat: Chat) -> tuple[str, tuple[str, ...]]:
    return chat.room_view()


def _texts(history: Sequence[str]) -> list[str]:
    return [line.split("> ", 1)[1] for line in history]


def _histories_agree(chats: Sequence[Chat], workdir: Path, texts: Sequence[str],
                     timeout: float = 15.0) -> list[str]:
    """Wait until every member's saved history (``/save chat``) is the same and holds all of
    ``texts``; check that it holds each of them once; that history."""
    end = deadline_in(timeout)
    while True:
        histories = [tuple(c.save_chat(workdir / f"history-{c.name}.txt")) for c in chats]
        have = Counter(_texts(histories[0]))
        missing = [t for t in texts if not have[t]]
        if not missing and all(h == histories[0] for h in histories):
            break
        if time.monotonic() > end:
            report = "\n".join(f"  {c.name}: {len(h)} messages, missing "
                               f"{[t for t in texts if t not in set(_texts(h))][:8]}"
                               for c, h in zip(chats, histories, strict=True))
            stories = "\n".join(f"  {c.name}, what it printed last:\n{story(c)}" for c in chats)
            raise AssertionError(
                f"the histories never became equal and complete:\n{report}\n{stories}")
        time.sleep(0.2)  # pacing between rounds; each round waits for its own answers
    twice = [t for t, n in have.items() if n > 1]
    assert not twice, f"duplicated in the history: {twice[:10]}"
    return list(histories[0])


def _in_sender_order(history: Sequence[str], prefix: str) -> list[str]:
    return [text for text in _texts(history) if text.startswith(prefix)]


def test_handoff_moves_the_host_and_the_room_announcement(lab_factory: LabFactory) -> None:
    lab = lab_factory(4)
    alice, bob, carol = open_room(lab.hosts[:3], ["alice", "bob", "carol"])

    alice.send("/new host bob")
    alice.expect(rf"^\* bob is now the host of {ROOM}$")
    bob.expect(rf"^\* you are now the host of {ROOM} \(was alice\)$")
    carol.expect(rf"^\* bob is now the host of {ROOM} \(was alice\)$")
    assert wait_same([alice, bob, carol], "the host", _host_of, until=bool) == "bob"
    infos = [c.room_info() for c in (alice, bob, carol)]
    assert {(i.host, i.term, i.members) for i in infos} == {
        ("bob", infos[0].term, ("alice", "bob", "carol"))}, infos

    # A fresh node elsewhere on the LAN finds the room announced by bob's machine now.
    result = lab.hosts[3].run(meshchat_argv("rooms", "--json", "--interface", "eth0",
                                            "--timeout", "1.5"), timeout=20)
    rooms = [r for r in json.loads(result.stdout) if r["name"] == ROOM]
    assert len(rooms) == 1, rooms
    assert rooms[0]["host"] == "bob" and rooms[0]["host_fingerprint"].startswith(bob.fp)
    assert rooms[0]["members"] == 3

    # The new host's powers are bob's; alice's are gone; chat goes on.
    alice.send("/kick carol")
    alice.expect(r"^\* error: only the host can kick$")
    bob.send("/user-count")
    bob.expect(rf"^\* 3 users in {ROOM}$")
    carol.say("hello new host")
    alice.wait_line(chat_re("carol", "hello new host"))
    bob.wait_line(chat_re("carol", "hello new host"))
    all_trouble_free(alice, bob, carol)


def test_a_host_that_quits_hands_over_to_the_next_member_at_once(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(4)
    # Default timings: a failover would need host_timeout_s + host_ping_timeout_s of silence.
    failover_s = DEFAULT.host_timeout_s + DEFAULT.host_ping_timeout_s
    alice, bob, carol, dave = open_room(lab.hosts, ["alice", "bob", "carol", "dave"],
                                        fast=False)

    alice.send("/quit")
    quit_at = time.monotonic()
    bob.expect(rf"^\* you are now the host of {ROOM} \(was alice\)$", timeout=failover_s)
    carol.expect(rf"^\* bob is now the host of {ROOM} \(was alice\)$", timeout=failover_s)
    dave.expect(rf"^\* bob is now the host of {ROOM} \(was alice\)$", timeout=failover_s)
    assert time.monotonic() - quit_at < failover_s
    assert alice.wait_exit() == 0
    carol.wait_line(rf"^\* alice left {ROOM}( \(quit\))?$")

    # Ctrl-C on the new host: the next in join order (carol) takes over at once too.
    bob.proc.kill(signal.SIGINT)
    quit_at = time.monotonic()
    carol.expect(rf"^\* you are now the host of {ROOM} \(was bob\)$", timeout=failover_s)
    dave.expect(rf"^\* carol is now the host of {ROOM} \(was bob\)$", timeout=failover_s)
    assert time.monotonic() - quit_at < failover_s
    assert bob.wait_exit() == 0

    dave.say("still chatting")
    carol.wait_line(chat_re("dave", "still chatting"))
    dave.send("/list")
    dave.expect(rf"^\* members of {ROOM} \(2\): carol \(host\), dave \(you\)$")
    all_trouble_free(alice, bob, carol, dave)


def test_kill_9_of_the_host_with_messages_in_flight_loses_nothing(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(4)
    alice, bob, carol, dave = open_room(lab.hosts, ["alice", "bob", "carol", "dave"])
    count, pace_s = 60, 0.02  # 50 messages/s from each of two members
    sent: dict[str, list[str]] = {"bob": [], "carol": []}
    failures: list[BaseException] = []

    def keep_sending(chat: Chat, tag: str) -> None:
        try:
            for i in range(count):
                text = f"{tag}-{i:03d}"
                chat.say(text)
                sent[chat.name].append(text)
                time.sleep(pace_s)  # the senders' pace, not a wait for anything
        except BaseException as exc:
            failures.append(exc)

    senders = [threading.Thread(target=keep_sending, args=(bob, "from-bob")),
               threading.Thread(target=keep_sending, args=(carol, "from-carol"))]
    for thread in senders:
        thread.start()
    try:
        dave.wait_line(chat_re("bob", "from-bob-010"))
        dave.wait_line(chat_re("carol", "from-carol-010"))
        for i in range(3):
            alice.send(f"last words {i}")  # in flight when the host dies
        alice.kill()
    finally:
        for thread in senders:
            thread.join(timeout=60)
    assert not failures, failures

    members = [bob, carol, dave]
    bob.wait_line(rf"^\* you are now the host of {ROOM} \(was alice\)$")
    for chat in (carol, dave):
        chat.wait_line(rf"^\* bob is now the host of {ROOM} \(was alice\)$")
    view = wait_same(members, "the room", _view_of, until=lambda view: len(view[1]) == 3)
    assert view == ("bob", ("bob", "carol", "dave"))
    for chat in members:  # one new host: nobody else ever claimed the room
        claims = [line for line in chat.lines if "is now the host" in line
                  or "you are now the host" in line]
        assert len(claims) == 1, (chat.name, claims)

    everything = sent["bob"] + sent["carol"]
    for chat in members:
        chat.wait_texts(everything, timeout=15)
    dave.say("chat goes on after the failover")
    for chat in (bob, carol):
        chat.wait_line(chat_re("dave", "chat goes on after the failover"))

    history = _histories_agree(members, tmp_path, [*everything, "chat goes on after the failover"])
    assert _in_sender_order(history, "from-bob-") == sent["bob"]
    assert _in_sender_order(history, "from-carol-") == sent["carol"]
    all_trouble_free(bob, carol, dave)


def test_a_partition_heals_into_one_room_with_both_sides_messages(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(4)
    alice, bob, carol, dave = open_room(lab.hosts, ["alice", "bob", "carol", "dave"])
    alice.say("before the split")
    for chat in (bob, carol, dave):
        chat.wait_line(chat_re("alice", "before the split"))

    # Unplug the host: each side goes on with its own host (bob is first in join order).
    lab.hosts[0].link_down()
    bob.wait_line(rf"^\* you are now the host of {ROOM} \(was alice\)$")
    for chat in (carol, dave):
        chat.wait_line(rf"^\* bob is now the host of {ROOM} \(was alice\)$")
    for name in ("bob", "carol", "dave"):
        alice.wait_line(rf"^\* {name} left {ROOM} \(vanished\)$")

    alice.say("alone on side A")
    bob.say("side B says hi")
    carol.say("side B carries on")
    for chat in (bob, carol, dave):
        chat.wait_texts(["side B says hi", "side B carries on"])

    lab.hosts[0].link_up()
    everyone = [alice, bob, carol, dave]
    host, members = wait_same(everyone, "the room after the heal", _view_of, timeout=20,
                              until=lambda view: len(view[1]) == 4)
    assert members == ("alice", "bob", "carol", "dave"), members
    assert host in members

    texts = ["before the split", "alone on side A", "side B says hi", "side B carries on"]
    _histories_agree(everyone, tmp_path, texts)
    dave.say("after the heal")
    for chat in (alice, bob, carol):
        chat.wait_line(chat_re("dave", "after the heal"))
    for chat in everyone:  # a peer that was merely unreachable is not an impostor
        assert not [line for line in chat.lines if "does not hold its key" in line], chat.name
    all_trouble_free(*everyone)


def test_two_unplugged_members_merge_back_into_one_room(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """Two cables pulled at once: three sides (alice+bob, carol alone, dave alone), each with
    its own host and its own chat; after the heal, one room again."""
    lab = lab_factory(4)
    alice, bob, carol, dave = open_room(lab.hosts, ["alice", "bob", "carol", "dave"])
    lab.hosts[2].link_down()
    lab.hosts[3].link_down()
    for chat in (carol, dave):
        chat.wait_line(rf"^\* you are now the host of {ROOM} \(was alice\)$")
    for chat in (alice, bob):
        for name in ("carol", "dave"):
            chat.wait_line(rf"^\* {name} left {ROOM} \(vanished\)$")

    alice.say("side A one")
    bob.say("side A two")
    carol.say("carol on her own")
    dave.say("dave on his own")
    alice.wait_texts(["side A two"])
    bob.wait_texts(["side A one"])

    lab.hosts[2].link_up()
    lab.hosts[3].link_up()
    everyone = [alice, bob, carol, dave]
    _, members = wait_same(everyone, "the room after the heal", _view_of, timeout=20,
                           until=lambda view: len(view[1]) == 4)
    assert members == ("alice", "bob", "carol", "dave"), members
    _histories_agree(everyone, tmp_path,
                     ["side A one", "side A two", "carol on her own", "dave on his own"])
    bob.say("all together again")
    for chat in (alice, carol, dave):
        chat.wait_line(chat_re("bob", "all together again"))
    for chat in everyone:
        assert not [line for line in chat.lines if "no longer a member" in line], chat.name
        assert not [line for line in chat.lines if "does not hold its key" in line], chat.name
    all_trouble_free(*everyone)


def test_kick_ban_and_unban(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    alice, bob, carol = open_room(lab.hosts, ["alice", "bob", "carol"])

    # Only the host moderates.
    bob.send("/kick carol")
    bob.expect(r"^\* error: only the host can kick$")
    bob.send("/ban carol")
    bob.expect(r"^\* error: only the host can ban$")

    # Kick: everyone is told; the kicked member reads nothing sent after it.
    alice.send("/kick bob too many puns")
    alice.expect(rf"^\* bob was kicked from {ROOM} by you: too many puns$")
    bob.expect(rf"^\* you were kicked from {ROOM} by alice: too many puns$")
    carol.expect(rf"^\* bob was kicked from {ROOM} by alice: too many puns$")
    kicked_at = bob.mark()
    alice.say("said after the kick 5d1e")
    carol.wait_line(chat_re("alice", "said after the kick 5d1e"))
    alice.send("/msg bob marker after the kick")
    bob.expect(r"\[private\] <alice → you> marker after the kick$")
    bob.send("/ping alice")
    bob.expect(r"^\* ping alice: ")
    assert not [line for line in bob.lines_since(kicked_at) if "5d1e" in line]
    bob.send("/list")
    bob.expect(r"^\* rooms: ")  # outside the room

    # A kicked member may come back.
    rejoin = alice.mark()
    bob.send(f"/join {ROOM}")
    bob.expect(rf"^\* joined {ROOM} ")
    alice.wait_line(rf"^\* bob joined {ROOM}$", since=rejoin)

    # Ban: out, and refused on the way back in.
    alice.send("/ban bob")
    alice.expect(rf"^\* bob was banned from {ROOM} by you$")
    bob.expect(rf"^\* you were banned from {ROOM} by alice$")
    carol.expect(rf"^\* bob was banned from {ROOM} by alice$")
    bob.send(f"/join {ROOM}")
    bob.expect(rf"^\* error: you are banned from {ROOM}$")

    # ... also under another name: the same machine (same key) as "robert".
    assert bob.quit() == 0
    robert = Chat.start(lab.hosts[1], "robert")
    assert robert.fp == bob.fp
    robert.send(f"/join {ROOM}")
    robert.expect(rf"^\* error: you are banned from {ROOM}$")
    alice.send("/banned")
    alice.expect(rf"^\* banned from {ROOM}: bob \({bob.fp}")
    carol.send("/banned")
    carol.expect(r"^\* error: only the host can list the bans$")

    # Unban by name: robert gets in.
    alice.send("/unban bob")
    alice.expect(rf"^\* bob is no longer banned from {ROOM}$")
    alice.send("/banned")
    alice.expect(rf"^\* nobody is banned from {ROOM}$")
    robert.send(f"/join {ROOM}")
    robert.expect(rf"^\* joined {ROOM} \(host alice; members: ")
    robert.say("back under a new name")
    alice.wait_line(chat_re("robert", "back under a new name"))
    carol.wait_line(chat_re("robert", "back under a new name"))
    all_trouble_free(alice, bob, carol, robert)


def test_passwords_right_and_wrong_and_never_on_the_wire(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    password, wrong = "correct-Horse-7731", "Tr0ub4dor-wrong-0042"
    secret_text = "behind the password qv19"
    with lab.capture() as capture:
        alice = Chat.start(lab.hosts[0], "alice")
        alice.send(f"/host {ROOM} {password}")
        alice.expect(rf"^\* hosting room {ROOM} \(password protected\)$")
        bob = Chat.start(lab.hosts[1], "bob")
        carol = Chat.start(lab.hosts[2], "carol")
        bob.send("/rooms")
        bob.expect(rf"^\* rooms: {ROOM} \(alice, 1 member, password\)$")

        bob.send(f"/join {ROOM}")
        bob.expect(rf"^\* error: {ROOM} needs a password: /join {ROOM} PASSWORD$")
        bob.send(f"/join {ROOM} {wrong}")
        bob.expect(rf"^\* error: wrong password for {ROOM}$")
        bob.send(f"/join {ROOM} {password}")
        bob.expect(rf"^\* joined {ROOM} \(host alice; members: alice, bob\)$")
        carol.send(f"/join {ROOM} {wrong}")
        carol.expect(rf"^\* error: wrong password for {ROOM}$")
        carol.send(f"/join {ROOM} {password}")
        carol.expect(rf"^\* joined {ROOM} \(host alice; members: alice, bob, carol\)$")
        bob.say(secret_text)
        alice.wait_line(chat_re("bob", secret_text))
        carol.wait_line(chat_re("bob", secret_text))
    assert capture.packets > 0
    assert capture.contains(ROOM.encode())  # public: the room's mDNS announcement
    for needle in (password, wrong, secret_text, "qv19"):
        assert not capture.contains(needle.encode()), f"{needle!r} crossed the bridge"
        assert not capture.contains(needle.encode().hex().encode())
    all_trouble_free(alice, bob, carol)


def test_a_stopped_member_gets_its_gap_filled_in_order_without_duplicates(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(3)
    alice, bob, carol = open_room(lab.hosts, ["alice", "bob", "carol"])

    def chat_a_while(first: int, last: int) -> list[str]:
        texts = []
        for i in range(first, last):
            for chat in (alice, bob):
                text = f"{chat.name}-{i:02d}"
                chat.say(text)
                texts.append(text)
        alice.wait_texts([t for t in texts if t.startswith("bob-")])
        bob.wait_texts([t for t in texts if t.startswith("alice-")])
        return texts

    # A short stall, six heartbeats (under the 0.4 s after which a peer counts as evasive):
    # the stall's length is the fault itself, not a wait for something.
    carol.stop()
    stalled = time.monotonic()
    texts = chat_a_while(0, 5)
    time.sleep(max(0.0, FAST.heartbeat_interval_s * 6 - (time.monotonic() - stalled)))
    carol.cont()
    carol.wait_texts(texts)

    # A long one: stopped past the liveness timeout, so the others take her for gone.
    carol.stop()
    texts += chat_a_while(5, 15)
    alice.wait_line(rf"^\* carol left {ROOM} \(vanished\)$")
    texts += chat_a_while(15, 25)
    carol.cont()
    carol.wait_texts(texts, timeout=15)

    shown = carol.chat_lines()
    counts = Counter(c.text for c in shown)
    assert [t for t, n in counts.items() if n > 1] == [], "shown twice"
    for line in shown:  # each with its sender's name
        assert line.text.startswith(f"{line.sender}-"), line

    # Afterwards: one room, the same host everywhere (alice never went away), carol back in.
    everyone = [alice, bob, carol]
    host, members = wait_same(everyone, "the room", _view_of,
                              until=lambda view: len(view[1]) == 3)
    assert members == ("alice", "bob", "carol")
    assert host == "alice", "the host changed although it never stopped"
    history = _histories_agree(everyone, tmp_path, texts)
    assert _in_sender_order(history, "alice-") == [t for t in texts if t.startswith("alice-")]
    assert _in_sender_order(history, "bob-") == [t for t in texts if t.startswith("bob-")]
    carol.say("awake again")
    for chat in (alice, bob):
        chat.wait_line(chat_re("carol", "awake again"))
    all_trouble_free(*everyone)

