"""The Python API across machines (issue 2): agents on ``meshchat.Node`` in three namespaces,
and the example bot ``examples/echo_bot.py`` in a room with line-mode users.

The agents are ``tests/net/api_agent.py`` (``helpers.Agent``): each command maps to one call
of the public API, answered with its value as JSON; each agent prints its own
``node.events()``.
"""

from __future__ import annotations

import signal
import time

from meshchat import JoinRefused, MeshchatError, NotHost, NotInRoom, PeerNotFound, RoomNotFound

from .conftest import LabFactory
from .helpers import (
    CLOCK,
    ROOM,
    Agent,
    Chat,
    all_trouble_free,
    chat_re,
)
from .netlab import REPO_ROOT

ECHO_BOT = REPO_ROOT / "examples" / "echo_bot.py"

def test_the_python_api_across_three_machines(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    alice, bob, carol = (Agent.start(h, n) for h, n in zip(lab.hosts, ["alice", "bob", "carol"],
                                                            strict=True))

    # host / rooms / join
    room = alice.call("host", room=ROOM)
    assert (room["name"], room["host"]["name"], room["host"]["fingerprint"]) == (
        ROOM, "alice", alice.fp)
    assert room["is_host"] is True and room["members"][0]["peer_id"] == alice.peer_id.hex()
    started = time.monotonic()
    infos = bob.call("rooms", seconds=2.0)
    assert time.monotonic() - started < 2.0 + 1.0
    assert [(i["name"], i["host"], i["members"], i["locked"]) for i in infos] == [
        (ROOM, "alice", 1, False)]
    assert bob.call("join", room=ROOM)["host"]["name"] == "alice"
    assert bob.member_names() == ["alice", "bob"]
    carol.call("join", room=ROOM)
    assert carol.member_names() == ["alice", "bob", "carol"]
    alice.wait_event(type="PeerJoined", room=ROOM, peer={"name": "bob", "fingerprint": bob.fp})
    alice.wait_event(type="PeerJoined", room=ROOM, peer={"name": "carol"})
    bob.wait_event(type="PeerJoined", room=ROOM, peer={"name": "carol"})

    # peers(): every other node, with its fingerprint and address
    peers = {p["name"]: p for p in alice.call("peers")}
    assert set(peers) >= {"bob", "carol"}
    assert peers["bob"]["fingerprint"] == bob.fp
    assert lab.hosts[1].addr in peers["bob"]["addresses"]

    # say(): a Message event on every other member
    mark = {a.name: a.mark() for a in (alice, bob, carol)}
    bob.call("say", text="hello from the api")
    for agent in (alice, carol):
        ev = agent.wait_event(mark[agent.name], type="Message", text="hello from the api")
        assert ev["room"] == ROOM and ev["private"] is False
        assert ev["sender"]["name"] == "bob" and ev["sender"]["fingerprint"] == bob.fp
        assert abs(ev["sent_at"] - time.time()) < 10

    # msg(): to one peer by name, to several by a list; the others get nothing
    alice.call("msg", to="carol", text="psst, carol only")
    ev = carol.wait_event(type="Message", text="psst, carol only")
    assert ev["private"] is True and ev["room"] is None and ev["sender"]["name"] == "alice"
    alice.call("msg", to=[bob.fp[:6], "carol"], text="to both of you")
    for agent in (bob, carol):
        ev = agent.wait_event(type="Message", text="to both of you")
        assert ev["private"] is True
        assert sorted(p["name"] for p in ev["recipients"]) == ["bob", "carol"]
    alice.call("say", text="marker after the private lines")
    bob.wait_event(type="Message", text="marker after the private lines")

    # ping(): seconds
    rtt = bob.call("ping", peer="alice")
    assert isinstance(rtt, float) and 0.0 < rtt < 1.0

    # events(): each call is a stream of its own, from then on
    second = bob.call("open_stream")
    assert second == 1
    mark_bob = bob.mark()
    alice.call("say", text="for every stream")
    for stream in (0, second):
        bob.wait_event(mark_bob, stream=stream, type="Message", text="for every stream")
    first_of_second = next(e for e in bob.events(stream=second) if e["type"] == "Message")
    assert first_of_second["text"] == "for every stream"

    # history(): the same on every member, in order. A member's history holds a line by
    # the time the line's Message event is out there (its own from say() on): wait for each
    # member's event of every line, or one may be read before the line reached it (carol's
    # of alice's last two were never waited for above).
    said = ["hello from the api", "marker after the private lines", "for every stream"]
    for agent in (alice, bob, carol):
        for text in said:
            agent.wait_event(type="Message", room=ROOM, text=text)
    histories = [[(m["sender"]["name"], m["text"], m["private"]) for m in a.call("history")]
                 for a in (alice, bob, carol)]
    assert histories[0] == histories[1] == histories[2]
    assert [h[1] for h in histories[0]] == said
    assert all(private is False for _, _, private in histories[0])

    # errors: one tree under MeshchatError
    assert bob.fails("join", room="nowhere").kind == "RoomNotFound"
    assert bob.fails("msg", to="nobody", text="hi").kind == "PeerNotFound"
    assert bob.fails("ping", peer="nobody").kind == "PeerNotFound"
    assert bob.fails("kick", peer="carol").kind == "NotHost"
    for error in (RoomNotFound, PeerNotFound, NotHost, JoinRefused, NotInRoom):
        assert issubclass(error, MeshchatError)

    # leave(): PeerLeft for the others; members updated
    mark = {a.name: a.mark() for a in (alice, bob)}
    carol.call("leave")
    for agent in (alice, bob):
        agent.wait_event(mark[agent.name], type="PeerLeft", room=ROOM, peer={"name": "carol"},
                         reason="left")
    assert alice.member_names() == ["alice", "bob"]
    assert carol.fails("say", text="after leaving").kind == "NotInRoom"

    # A locked room refuses a join with a reason.
    alice.call("lock")
    refused = carol.fails("join", room=ROOM)
    assert refused.kind == "JoinRefused" and "locked" in refused.message
    assert refused.reason == "locked"

    # The private line never reached bob; close: the others see carol go.
    assert "psst, carol only" not in " ".join(bob.lines)
    mark_bob = bob.mark()
    carol.close()
    bob.wait_event(mark_bob, type="PeerGone", peer={"name": "carol"}, reason="quit")
    alice.close()
    bob.close()
    all_trouble_free(alice, bob, carol)


def test_the_echo_bot_answers_in_the_room_and_in_private(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    # The bot runs with the default timings; so do the others here.
    alice = Chat.start(lab.hosts[0], "alice", "--host", ROOM, fast=False)
    alice.expect(rf"^\* hosting room {ROOM}$")
    bot = lab.hosts[1].spawn_meshchat("bot", str(ECHO_BOT), "--room", ROOM, "--name", "echo",
                                      "--interface", "eth0")
    bot.expect(rf"^\* echo joined {ROOM}$", timeout=15)
    alice.wait_line(rf"^\* echo joined {ROOM}$")
    bob = Chat.start(lab.hosts[2], "bob", fast=False)
    bob.send(f"/join {ROOM}")
    bob.expect(rf"^\* joined {ROOM} \(host alice; members: alice, echo, bob\)$")

    alice.say("!echo hello bot")
    alice.wait_line(chat_re("echo", "hello bot"))
    bob.wait_line(chat_re("echo", "hello bot"))
    bob.say("not for the bot")
    bob.say("!echo second")
    alice.expect_no(r"<echo> not for the bot", within=10, until=chat_re("echo", "second"))

    alice.send("/msg echo !echo just between us")
    alice.expect(rf"^{CLOCK} \[private\] <echo → you> just between us$")
    alice.say("marker for bob")
    bob.expect_no("just between us", within=5, until=chat_re("alice", "marker for bob"))

    bot.kill(signal.SIGTERM)
    assert bot.wait(10) == 0
    alice.wait_line(rf"^\* echo left {ROOM} \(quit\)$", timeout=5)  # stopped: it quit
    assert "just between us" not in " ".join(bob.lines)
    assert not [line for line in bot.err_lines if "Traceback" in line], bot.err_lines
    all_trouble_free(alice, bob)
