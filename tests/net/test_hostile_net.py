"""A hostile peer over real sockets (``helpers.Hostile``, ``tests/net/hostile_agent.py``) against
real ``meshchat start`` nodes in other namespaces.

The tests here try the agent itself: a stranger's garbage and a ping at 2^64 - 1 change
nothing; an open room's join made by hand gives the room key and a batch made by hand is shown;
frames are built as told.
The attack cases of issue 6 each add a test of their own on top of them.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgpack

from meshchat.protocol.codec import Codec
from meshchat.protocol.messages import Heads, SeqRange

from .conftest import LabFactory
from .helpers import Hostile, all_trouble_free, chat_re, lit, open_room, wire_json

UINT64_MAX = 2**64 - 1


def test_a_stranger_pings_at_2_64_throws_garbage_and_the_room_still_chats(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, bob = open_room(lab.hosts[:2], ["alice", "bob"])
    evil = Hostile.start(lab.hosts[2])
    assert evil.address == lab.hosts[2].addr

    bob_card = evil.connect(bob, hello=False)
    card = evil.connect(alice)  # by its card server, like --peer; the default target from now
    assert card["name"] == "alice" and card["address"] == lab.hosts[0].addr
    alice_id, bob_id = bytes.fromhex(card["peer_id"]), bytes.fromhex(bob_card["peer_id"])
    # Its SUB works: alice's heartbeat, from the peer the transport authenticated.
    beat = evil.wait_received("Heartbeat", where={"kind": "pub", "from": alice_id})
    assert beat["fields"]["card"]["name"] == "alice"
    assert beat["sender"] == alice_id.hex()
    evil.mute("Heartbeat", "Sealed")

    # A ping at the top of the range is answered like any other.
    mark = evil.mark()
    assert evil.send("Ping", {"nonce": UINT64_MAX})
    pong = evil.wait_received("Pong", since=mark, nonce=UINT64_MAX)
    assert pong["kind"] == "direct" and pong["sender"] == alice_id.hex()

    # Garbage on the same authenticated connection: not frames, bad envelopes, values the
    # codec would never encode, a forged sender.
    for frame in (b"", b"\xc1", os.urandom(1), os.urandom(3000), b"\x91" * 5000 + b"\xc0",
                  msgpack.packb([1, "ping"]), msgpack.packb({"a": 1})):
        assert evil.send_raw(frame)
    assert evil.send_envelope("ping", ["not an int"])
    assert evil.send_envelope("ping", [UINT64_MAX], seq=UINT64_MAX, sent_at=1e300)
    assert evil.send_envelope("ping", [1], sent_at=float("nan"))
    assert evil.send_envelope("no-such-type", [])
    assert evil.send_envelope("ping", [1], version=UINT64_MAX)
    assert evil.send("Ping", {"nonce": 1}, raw=True, seq=-1)
    assert evil.send("Private", {"text": "x" * 100_000, "to": [alice_id]}, raw=True)
    assert evil.send("Private", {"text": "FORGED by a stranger", "to": [alice_id]},
                     sender=bob_id)
    # The control ping after all of it: the node read every frame before it, and answers.
    mark = evil.mark()
    evil.send("Ping", {"nonce": 424242})
    evil.wait_received("Pong", since=mark, nonce=424242)

    # What it publishes reaches alice too (she connected back after its Hello).
    evil.publish("Broadcast", {"text": "a broadcast from mallory"})
    alice.wait_line(lit("a broadcast from mallory"))

    # The room is unharmed: both ways, and a ping.
    alice.say("after the stranger")
    bob.wait_line(chat_re("alice", "after the stranger"))
    bob.say("still here")
    alice.wait_line(chat_re("bob", "still here"))
    bob.send("/ping alice")
    bob.expect(r"^\* ping alice: [\d.]+ ms$")
    assert not [line for chat in (alice, bob) for line in chat.lines if "FORGED" in line]
    assert evil.stats()["received"] > 0
    evil.close()
    all_trouble_free(alice, bob, evil)


def _says(text: str) -> Any:
    """A ``test`` for a Sealed report whose opened inner Chat batch holds ``text``."""

    def test(report: dict[str, Any]) -> bool:
        batch = report.get("inner", {}).get("opened", {}).get("batch", {})
        return any(line["text"] == text for line in batch.get("lines", []))

    return test


def test_a_join_made_by_hand_opens_the_room_key_and_a_batch_made_by_hand_is_shown(
    lab_factory: LabFactory,
) -> None:
    """An open room admits anyone: the agent's join reply, opened key and sealed traffic are
    what the attack tests build on (a removed peer must see none of this)."""
    lab = lab_factory(3)
    alice, bob = open_room(lab.hosts[:2], ["alice", "bob"])
    evil = Hostile.start(lab.hosts[2])
    card = evil.connect(alice)
    beat = evil.wait_received("Heartbeat", where={"from": card["peer_id"]},
                              test=lambda r: bool(r["fields"]["hosted"]))
    room_id = bytes.fromhex(beat["fields"]["hosted"][0]["room_id"])

    mark = evil.mark()
    evil.send("JoinRequest", {"room_id": room_id, "name": "mallory", "request_id": 1,
                              "challenge": b"", "proof": b"", "merge_token": b""})
    accept = evil.wait_received("JoinAccept", since=mark, request_id=1)
    assert [m["name"] for m in accept["opened"]["state"]["members"]] == [
        "alice", "bob", "mallory"]
    key = bytes.fromhex(accept["opened"]["sealed_key"]["key"])
    epoch = accept["fields"]["key_epoch"]
    alice.wait_line(r"^\* mallory(#\w+)? joined lobby$")

    mark = evil.mark()
    alice.say("for the members")
    sealed = evil.wait_received("Sealed", since=mark, where={"from": card["peer_id"]},
                                test=_says("for the members"))
    assert sealed["fields"]["room_id"] == room_id.hex()

    evil.publish_sealed(room_id, epoch, key, "Chat", {"batch": {"signed": {
        "type": "ChatBatch",
        "fields": {"room_id": room_id, "sender": evil.peer_id, "first": 1,
                   "lines": [{"sent_at": time.time(), "text": "a batch made by hand"}]}}}})
    for chat in (alice, bob):
        chat.wait_line(chat_re("mallory", "a batch made by hand"))
    evil.close()
    all_trouble_free(alice, bob, evil)


def test_the_agent_builds_frames_as_told_and_refuses_clearly(lab_factory: LabFactory) -> None:
    """No node needed: what ``encode`` and ``sign`` make decodes as asked, raw values go on the
    wire unchecked, and a bad command is an answer, not a traceback."""
    lab = lab_factory(1)
    evil = Hostile.start(lab.hosts[0])
    codec = Codec()
    seq_range = {"sender": evil.peer_id, "first": 0, "last": UINT64_MAX}
    frame = bytes.fromhex(evil.call("encode", type="heads", fields=wire_json(
        {"heads": [seq_range], "term": 1, "version": 2})))
    env = codec.decode(frame)
    assert env.message == Heads((SeqRange(evil.peer_id, 0, UINT64_MAX),), 1, 2)
    assert env.sender == evil.peer_id

    raw = bytes.fromhex(evil.call("encode", type="Ping", fields=["a string"], raw=True))
    assert msgpack.unpackb(raw)[1:2] + msgpack.unpackb(raw)[5:] == ["ping", ["a string"]]

    blob = bytes.fromhex(evil.call("sign", type="SeqRange", fields=wire_json(seq_range)))
    signed = codec.open_signed(blob, SeqRange, lambda r: r.sender)
    assert signed.last == UINT64_MAX

    assert evil.fails("send", type="NoSuchType").kind == "Refused"
    assert evil.fails("send", type="Ping", fields={"nonce": 1}).kind == "Refused"  # no target
    assert evil.fails("encode", type="Ping", fields={"nonce": -1}).kind == "Refused"
    assert evil.fails("encode", type="Ping", fields={"nonse": 1}).kind == "Refused"
    assert evil.fails("encode", type="SeqRange", fields=[]).kind == "Refused"  # a record
    evil.close()
    evil.assert_no_trouble()
