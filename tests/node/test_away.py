"""Issue 11, ``/away`` at node level (in-memory transport): the away text travels in the
node's own heartbeat and Hello, shows in ``PeerInfo.away``, and a private message to an away
node gets it back, once per sender per interval, never in answer to an automatic reply."""

from __future__ import annotations

import dataclasses
import time

import pytest

from meshchat import AwayChanged, MeshchatError, Message, Node, Timings
from meshchat.protocol.messages import Heartbeat, Private
from meshchat.runtime.away import AwayReplies
from meshchat.runtime.wire import TOPIC_PRESENCE

from .conftest import Mesh, until
from .test_peers_hostile import hostile, ping_ms


def _away_of(node: Node, name: str) -> str | None:
    return next(p.away for p in node.peers() if p.name == name)


async def _pair(mesh: Mesh, timings: Timings | None = None) -> tuple[Node, Node]:
    alice = await mesh.add("alice", timings=timings)
    bob = await mesh.add("bob", timings=timings)
    await until(lambda: len(alice.peers()) == 1 and len(bob.peers()) == 1, what="a mesh")
    return alice, bob


def _autos(mesh: Mesh, name: str) -> list[Message]:
    return [e for e in mesh.recorders[name].events
            if isinstance(e, Message) and e.private and e.auto]


async def test_away_text_reaches_the_other_peer_and_back_clears_it(mesh: Mesh) -> None:
    alice, bob = await _pair(mesh)
    assert alice.away is None and alice.me.away is None and _away_of(bob, "alice") is None

    alice.set_away("  at   lunch\n")
    assert alice.away == "at lunch" and alice.me.away == "at lunch"
    mine = await mesh.recorders["alice"].wait(lambda e: isinstance(e, AwayChanged))
    assert isinstance(mine, AwayChanged) and mine.peer.name == "alice"
    ev = await mesh.recorders["bob"].wait(lambda e: isinstance(e, AwayChanged))
    assert isinstance(ev, AwayChanged) and ev.peer.name == "alice" and ev.away == "at lunch"
    assert ev.peer.away == "at lunch"
    assert _away_of(bob, "alice") == "at lunch"
    assert bob.peer_details("alice").peer.away == "at lunch"
    assert bob.resolve("alice").away == "at lunch"

    alice.set_away("at lunch")  # the same again: nothing to tell
    alice.set_away(None)
    back = await mesh.recorders["bob"].wait(
        lambda e: isinstance(e, AwayChanged) and e.away is None)
    assert isinstance(back, AwayChanged) and back.peer.away is None
    assert _away_of(bob, "alice") is None
    assert len([e for e in mesh.recorders["bob"].events if isinstance(e, AwayChanged)]) == 2
    alice.set_away("   ")  # blank is back too
    assert alice.away is None


async def test_a_late_joiner_learns_the_away_text_from_the_first_contact(mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    alice.set_away("in a meeting")
    bob = await mesh.add("bob")
    await until(lambda: any(p.name == "alice" and p.away == "in a meeting"
                            for p in bob.peers()), what="bob sees alice away")


async def test_set_away_refuses_a_text_past_the_limit(mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    with pytest.raises(MeshchatError, match="at most 200"):
        alice.set_away("x" * 201)
    assert alice.away is None
    alice.set_away("y" * 200)
    assert alice.away == "y" * 200
    alice.set_away("a    " * 50)  # 250 typed, 99 once the runs of spaces are one
    assert alice.away == " ".join(["a"] * 50)


async def test_a_private_message_to_an_away_peer_gets_one_auto_reply_per_interval(
        mesh: Mesh) -> None:
    alice, bob = await _pair(mesh)
    alice.set_away("lunch")
    await until(lambda: _away_of(bob, "alice") == "lunch")

    await bob.msg("alice", "are you there?")
    reply = await mesh.recorders["bob"].wait(
        lambda e: isinstance(e, Message) and e.private and e.auto)
    assert isinstance(reply, Message)
    assert reply.sender.name == "alice" and reply.text == "lunch"
    assert [p.name for p in reply.recipients] == ["bob"]

    await bob.msg("alice", "hello?")
    await mesh.recorders["alice"].wait(lambda e: isinstance(e, Message) and e.text == "hello?")
    await bob.ping("alice")  # anything alice sent before the pong has arrived by now
    assert len(_autos(mesh, "bob")) == 1 and alice.stats["away_replies"] == 1

    alice.set_away(None)
    await bob.msg("alice", "now?")
    await mesh.recorders["alice"].wait(lambda e: isinstance(e, Message) and e.text == "now?")
    await bob.ping("alice")
    assert len(_autos(mesh, "bob")) == 1  # back: no reply


async def test_two_away_nodes_do_not_answer_each_others_auto_replies(mesh: Mesh) -> None:
    # No rate limit at all: only the auto flag stops the loop.
    timings = dataclasses.replace(Timings.fast(), away_reply_interval_s=0.0)
    alice, bob = await _pair(mesh, timings)
    alice.set_away("alice is out")
    bob.set_away("bob is out")
    await until(lambda: _away_of(alice, "bob") == "bob is out"
                and _away_of(bob, "alice") == "alice is out")

    await bob.msg("alice", "hi")
    await mesh.recorders["bob"].wait(lambda e: isinstance(e, Message) and e.auto)
    # A loop would put frames on both direct channels before these round trips come back.
    for _ in range(3):
        await bob.ping("alice")
        await alice.ping("bob")
    assert [m.text for m in _autos(mesh, "bob")] == ["alice is out"]
    assert _autos(mesh, "alice") == []
    assert alice.stats["away_replies"] == 1 and bob.stats["away_replies"] == 0

    await bob.msg("alice", "hi again")  # no interval: a real message is answered each time
    await until(lambda: len(_autos(mesh, "bob")) == 2, what="a second auto-reply")


async def test_hostile_away_values_are_cleaned_or_dropped_and_counted(mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    evil = await hostile(mesh, alice)
    rec = mesh.recorders["alice"]

    evil.publish(TOPIC_PRESENCE, Heartbeat(evil.card(), time.time(), "", (), (),
                                           "\x1b[2J\x07gone\r\nfishing\x00\u202e"))
    ev = await rec.wait(lambda e: isinstance(e, AwayChanged))
    # No escape, bell, newline, NUL or bidi override is left: "[2J" alone is harmless text.
    assert isinstance(ev, AwayChanged) and ev.away == "[2J gone fishing"
    assert alice._peers.info(evil.peer_id).away == "[2J gone fishing"

    before = alice.stats["dropped_malformed"]
    big = evil.raw_envelope("hb", [[evil.peer_id, evil.name, [evil.address], evil.router_port,
                                    evil.pub_port, 0], time.time(), "", [], [], "x" * 10_000])
    evil.publish_raw(TOPIC_PRESENCE, big)
    wrong = evil.raw_envelope("hb", [[evil.peer_id, evil.name, [evil.address], evil.router_port,
                                      evil.pub_port, 0], time.time(), "", [], [], 12])
    evil.publish_raw(TOPIC_PRESENCE, wrong)
    await until(lambda: alice.stats["dropped_malformed"] >= before + 2,
                what="both frames dropped and counted")
    assert alice._peers.info(evil.peer_id).away == "[2J gone fishing"  # unchanged
    assert await ping_ms(evil, alice, 1) < 1000  # the node goes on

    # A hostile "auto" reply is shown as an away text: one line, bounded.
    evil.send(alice.peer_id, Private("z" * 3990 + "\n\x1b[31m", (alice.peer_id,), auto=True))
    auto = await rec.wait(lambda e: isinstance(e, Message) and e.auto)
    assert isinstance(auto, Message) and auto.text == "z" * 200


def test_away_replies_table_rule_and_bound() -> None:
    table = AwayReplies(interval_s=60.0, max_entries=3)
    assert table.due(b"a", False, 0.0)
    assert not table.due(b"a", False, 59.9)
    assert table.due(b"a", False, 60.0)
    assert not table.due(b"b", True, 0.0)  # never an answer to an automatic reply
    assert len(table) == 1
    for i in range(10):
        assert table.due(bytes([i]), False, 100.0 + i)
    assert len(table) == 3  # bounded: the longest ago go first
    table.clear()
    assert len(table) == 0 and table.due(bytes([9]), False, 109.5)
