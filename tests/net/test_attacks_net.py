"""The eleven attack cases of issue 6, each tried over real sockets in the namespace lab.

A hostile peer (``tests/net/hostile_agent.py`` through ``helpers.Hostile``: its own key, the
wire format spoken perfectly, any value in any field) attacks real ``meshchat start`` processes
(``Chat``, line mode) and API agents (``Agent``, whose ``stats`` are the node's counters). Each
test tries the attack the way the issue describes it, then checks that nothing changed for the
honest nodes: the host, the term, the members, chat still flowing both ways, and nothing the
attacker could read (the agent reports every frame it got and opens what is sealed to it).
Where the victim is an ``Agent`` the drop must also be counted.

Negative checks wait for a marker instead of sleeping: ``Hostile.sync`` is a Ping/Pong over the
same connection the attack used (the target has read everything before it), a broadcast
published after heartbeats is shown only once they were read, and a chat line seen by the
other member shows that room traffic went round.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import time
from typing import Any

import pytest
from nacl.signing import SigningKey

from meshchat import Limits

from .conftest import LabFactory
from .helpers import (
    ROOM,
    Agent,
    Chat,
    Hostile,
    all_trouble_free,
    chat_re,
    lit,
    open_fds,
    rss_kb,
)
from .netlab import ExpectError, Host, Lab

UINT64_MAX = 2**64 - 1
FLOW_S = 4.0  # a chat line crosses the lab in milliseconds: a room that cannot do it is broken


# ------------------------------------------------------------------------------ set-ups


def agent_hosts(lab: Lab, *, password: str | None = None, members: int = 1
                ) -> tuple[Agent, bytes, list[Chat]]:
    """alice (an API agent, for her counters) hosts ``lobby``; bob (and carol) join in line
    mode. (alice, room id, [bob, ...])."""
    alice = Agent.start(lab.hosts[0], "alice")
    room = alice.call("host", room=ROOM, password=password)
    chats = []
    for host, name in zip(lab.hosts[1:1 + members], ["bob", "carol"], strict=False):
        chat = Chat.start(host, name)
        chat.send(f"/join {ROOM}" + (f" {password}" if password else ""))
        chat.expect(rf"^\* joined {ROOM} \(host alice; members: ")
        alice.wait_event(type="PeerJoined", room=ROOM, peer={"name": name})
        chats.append(chat)
    return alice, bytes.fromhex(room["room_id"]), chats


def agent_joins(lab: Lab) -> tuple[Chat, Agent, bytes]:
    """alice hosts ``lobby`` in line mode, bob (an API agent, for his counters) joins.
    (alice, bob, room id)."""
    alice = Chat.start(lab.hosts[0], "alice", "--host", ROOM)
    alice.expect(rf"^\* hosting room {ROOM}$")
    bob = Agent.start(lab.hosts[1], "bob")
    room = bob.call("join", room=ROOM)
    alice.wait_line(r"^\* bob(#\w+)? joined lobby$")
    return alice, bob, bytes.fromhex(room["room_id"])


def evil_joins(evil: Hostile, room_id: bytes, host: bytes, name: str = "mallory"
               ) -> tuple[bytes, int]:
    """The hostile peer joins an open room by hand: (the room key it opened, its epoch)."""
    accept = evil.join_room(room_id, name, to=host)
    assert accept["type"] == "JoinAccept", accept
    return bytes.fromhex(accept["opened"]["sealed_key"]["key"]), accept["fields"]["key_epoch"]


def mallory_in_the_room(lab: Lab) -> tuple[Agent, Chat, bytes, Hostile, bytes, bytes, int]:
    """alice (agent) hosts, bob (line mode) joins, and the hostile peer joins by hand:
    (alice, bob, room id, mallory, alice's id, bob's id, the room key's epoch)."""
    alice, room_id, [bob] = agent_hosts(lab)
    evil = Hostile.start(lab.hosts[2])
    bob_id = bytes.fromhex(evil.connect(bob)["peer_id"])
    alice_id = bytes.fromhex(evil.connect(alice)["peer_id"])
    # Alive as a member is (fast timings: gone after a second of silence), until the test
    # says otherwise: else the host may drop it as vanished, and rotate the key, before the
    # test has looked at what a member reads.
    evil.heartbeat(every=0.2)
    # The host's publications reach it once the host has learnt its card and dialled it: a
    # member that joins before that misses what is said meanwhile until it fills the gap,
    # which this peer never does.
    evil.wait_published_by(alice_id)
    _, epoch = evil_joins(evil, room_id, alice_id)
    alice.wait_event(type="PeerJoined", room=ROOM, peer={"name": "mallory"})
    return alice, bob, room_id, evil, alice_id, bob_id, epoch


def chat_flows(agent: Agent, chat: Chat, tag: str, agent_is: str = "alice") -> list[str]:
    """A line each way between an agent and a line-mode member; the texts."""
    there, back = f"{tag}: from {agent_is}", f"{tag}: from {chat.name}"
    mark = agent.mark()
    agent.call("say", text=there, timeout=FLOW_S)
    chat.wait_line(chat_re(agent_is, there), timeout=FLOW_S)
    chat.say(back, timeout=FLOW_S)
    agent.wait_event(mark, type="Message", text=back, timeout=FLOW_S)
    return [there, back]


def chats_flow(a: Chat, b: Chat, tag: str) -> list[str]:
    there, back = f"{tag}: from {a.name}", f"{tag}: from {b.name}"
    a.say(there, timeout=FLOW_S)
    b.wait_line(chat_re(a.name, there), timeout=FLOW_S)
    b.say(back, timeout=FLOW_S)
    a.wait_line(chat_re(b.name, back), timeout=FLOW_S)
    return [there, back]


def agent_room(agent: Agent) -> tuple[str, int, list[str]]:
    """(host name, term, member names) of the agent's current room."""
    room = agent.call("room")
    return room["host"]["name"], room["term"], [m["name"] for m in room["members"]]


def fast_pings_ms(chat: Chat, who: str, n: int = 5) -> list[float]:
    """``n`` pings in a row; every one answered. Their round trips (ms)."""
    return [chat.ping_ms(who) for _ in range(n)]


def assert_fast(pings_ms: list[float], limit_ms: float = 50.0) -> None:
    """The median under ``limit_ms`` (two shared cores: one outlier is not a freeze) and none
    anywhere near a stall."""
    assert statistics.median(pings_ms) < limit_ms, pings_ms
    assert max(pings_ms) < 10 * limit_ms, pings_ms


def nothing_secret(evil: Hostile, since: int, told: int = 0) -> list[tuple[str, str, str]]:
    """What the hostile peer got since ``since`` that would hand it the room: a join, a key,
    history, or a state newer than version ``told`` (the state that removed it, which it is
    told, perhaps more than once) — as (type, sender, what) for a readable failure."""
    out = []
    for r in evil.received(since=since):
        if r["type"] not in ("JoinAccept", "KeyUpdate", "StatePush", "HistoryReply"):
            continue
        state = (r.get("opened") or {}).get("state") or {}
        if r["type"] == "StatePush" and told and state.get("version", told + 1) <= told:
            continue
        out.append((r["type"], r["sender"][:8], str(r.get("opened"))[:300]))
    return out


def bans_me(report: dict[str, Any]) -> bool:
    """A StatePush report whose state records our ban (not an older push arriving late)."""
    state = (report.get("opened") or {}).get("state") or {}
    return bool(state.get("change") == "banned")


def until_subscribed(evil: Hostile, shown: Any, tag: str) -> None:
    """Broadcast ``tag #n`` until ``shown(text)`` finds one: the target's SUB is connected
    to our PUB, so what we publish from now on reaches it, in order."""
    deadline = time.monotonic() + 10
    for n in itertools.count():
        text = f"{tag} #{n}"
        evil.publish("Broadcast", {"text": text})
        try:
            shown(text, 0.3)
            return
        except ExpectError:
            if time.monotonic() > deadline:
                raise


def agent_shows(agent: Agent) -> Any:
    return lambda text, timeout: agent.wait_event(type="BroadcastReceived", text=text,
                                                  timeout=timeout)


def chat_shows(chat: Chat) -> Any:
    return lambda text, timeout: chat.wait_line(lit(text) + "$", timeout=timeout)


def strip_types(value: Any) -> Any:
    """A record as the agent reported it (``jsonable``) → fields the agent takes back."""
    if isinstance(value, dict):
        return {k: strip_types(v) for k, v in value.items() if k != "type"}
    if isinstance(value, list):
        return [strip_types(v) for v in value]
    return value


def member(peer_id: bytes, name: str) -> dict[str, Any]:
    return {"peer_id": peer_id, "name": name, "joined_at": time.time()}


def made_up_state(room_id: bytes, host: bytes, members: list[dict[str, Any]], *,
                  term: int, version: int = 1, change: str = "joined",
                  change_peer: bytes | None = None, key_epoch: int = 7) -> dict[str, Any]:
    """A RoomState the hostile peer signs itself (``{"signed": ...}``)."""
    return {"signed": {"type": "RoomState", "fields": {
        "room_id": room_id, "name": ROOM, "host": host, "term": term, "version": version,
        "members": members, "bans": [], "password": None, "locked": False, "closed": False,
        "key_epoch": key_epoch, "created_at": time.time(), "change": change,
        "change_peer": change_peer or host, "change_reason": ""}}}


def batch(room_id: bytes, sender: bytes, first: int, *texts: str,
          sent_at: float | None = None) -> dict[str, Any]:
    """A ChatBatch signed by the hostile peer (``{"signed": ...}``)."""
    at = time.time() if sent_at is None else sent_at
    return {"signed": {"type": "ChatBatch", "fields": {
        "room_id": room_id, "sender": sender, "first": first,
        "lines": [{"sent_at": at, "text": t} for t in texts]}}}


def card_of(peer_id: bytes, host: Host, router_port: int, pub_port: int,
            name: str) -> dict[str, Any]:
    return {"peer_id": peer_id, "name": name, "addresses": [host.addr],
            "router_port": router_port, "pub_port": pub_port, "card_port": 0}


# ------------------------------------------------------------------------------ case 1


def test_case_1_a_strangers_heartbeat_claiming_our_room_changes_nothing(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, room_id, [bob] = agent_hosts(lab)
    evil = Hostile.start(lab.hosts[2])
    bob_id = bytes.fromhex(evil.connect(bob)["peer_id"])
    alice_id = bytes.fromhex(evil.connect(alice)["peer_id"])
    until_subscribed(evil, agent_shows(alice), "alice hears mallory")
    until_subscribed(evil, chat_shows(bob), "bob hears mallory")
    start = evil.mark()

    # A stranger's heartbeat: "I host lobby (its very room id), term 99".
    evil.heartbeat(every=0.05, fields={"hosted": [
        {"room_id": room_id, "name": ROOM, "members": 3, "locked": False,
         "has_password": False, "term": 99}]})
    # Heartbeats and broadcasts share our PUB: once the broadcast is shown, the beats were read.
    evil.publish("Broadcast", {"text": "marker one"})
    alice.wait_event(type="BroadcastReceived", text="marker one")
    bob.wait_line(lit("marker one"))
    evil.sync(to=alice_id)

    # If alice stepped down for it (asked to merge into the stranger's room), the stranger
    # plays along to the end: a JoinAccept with a state it signed, naming itself the host.
    merges = evil.received("JoinRequest", since=start)
    for request in merges:
        evil.send("JoinAccept", {
            "room_id": room_id, "request_id": request["fields"]["request_id"],
            "state": made_up_state(room_id, evil.peer_id, [
                member(alice_id, "alice"), member(bob_id, "bob"),
                member(evil.peer_id, "mallory")], term=99),
            "sealed_key": {"sealed_key": {"key": os.urandom(32).hex(), "to": alice_id.hex()}},
            "key_epoch": 7, "history": [], "heads": []}, to=alice_id)
    evil.publish("Broadcast", {"text": "marker two"})
    alice.wait_event(type="BroadcastReceived", text="marker two")
    evil.sync(to=alice_id)

    texts = chat_flows(alice, bob, "after the claim")
    assert agent_room(alice) == ("alice", 1, ["alice", "bob"])
    view = bob.room_info()
    assert (view.host, view.term, view.members) == ("alice", 1, ("alice", "bob"))
    assert not nothing_secret(evil, start)
    assert not set(evil.readable(start)) & set(texts)
    assert not merges, f"alice asked a stranger to merge her room into its own: {merges[0]}"
    evil.heartbeat(every=0)
    all_trouble_free(alice, bob, evil)


# ------------------------------------------------------------------------------ case 2


def test_case_2_a_forged_handoff_token_opens_no_locked_password_room(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, room_id, [bob] = agent_hosts(lab, password="hunter2")
    alice.call("lock")
    evil = Hostile.start(lab.hosts[2])
    bob_id = bytes.fromhex(evil.connect(bob, hello=False)["peer_id"])
    alice_id = bytes.fromhex(evil.connect(alice)["peer_id"])
    before = alice.stats()
    start = evil.mark()

    # The joiner signs a "handoff" itself: bob is the host now, and mallory a member.
    token = made_up_state(room_id, bob_id, [member(alice_id, "alice"), member(bob_id, "bob"),
                                            member(evil.peer_id, "mallory")],
                          term=2, version=9, change="handoff", change_peer=evil.peer_id)
    reply = evil.join_room(room_id, merge_token=token)
    assert reply["type"] == "JoinRefusal" and reply["fields"]["reason"] == "locked", reply
    # Unlocked, the same token meets the password: a made-up proof gets no further.
    alice.call("unlock")
    reply = evil.join_room(room_id, merge_token=token)
    assert reply["type"] == "JoinChallenge", reply
    evil.send("JoinRequest", {"room_id": room_id, "name": "mallory", "request_id": 4242,
                              "challenge": bytes.fromhex(reply["fields"]["nonce"]),
                              "proof": b"\x01" * 64, "merge_token": token})
    evil.wait_received("JoinRefusal", since=start, request_id=4242, reason="password")
    evil.sync(to=alice_id)

    after = alice.stats()
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert grew.get("dropped_join_locked", 0) >= 1, grew
    assert grew.get("dropped_join_password", 0) >= 1, grew
    assert sum(v for k, v in grew.items() if k.startswith("dropped_merge_")) >= 2, grew
    assert agent_room(alice) == ("alice", 1, ["alice", "bob"])
    texts = chat_flows(alice, bob, "after the forged handoff")
    assert not nothing_secret(evil, start)
    assert not set(evil.readable(start)) & set(texts)
    all_trouble_free(alice, bob, evil)


# ------------------------------------------------------------------------------ case 3


def test_case_3_a_banned_peer_asking_for_state_gets_no_key_and_reads_nothing(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, bob, room_id, evil, alice_id, bob_id, _ = mallory_in_the_room(lab)
    # While a member it reads the room (the agent opens what it was given).
    mark = evil.mark()
    alice.call("say", text="for the members")
    evil.wait_received("Sealed", since=mark, test=lambda r: "for the members" in
                       evil_texts(r))

    mark = evil.mark()
    alice.call("ban", peer="mallory", reason="spam")
    assert agent_room(alice) == ("alice", 1, ["alice", "bob"])
    bob.wait_line(r"mallory.*banned|banned.*mallory")
    # It is told once that it is out (the state that bans it); after that, nothing.
    notice = evil.wait_received("StatePush", since=mark, where={"from": alice_id},
                                test=bans_me)
    told = notice["opened"]["state"]["version"]
    before = alice.stats()
    # Bans may reach the transport (ZAP refuses the key, frames from it are dropped): then
    # no Pong comes back either, and that is fine.
    with contextlib.suppress(ExpectError):
        evil.sync(to=alice_id, timeout=2.0)
    start = evil.mark()

    for _ in range(3):
        evil.send("StateRequest", {"room_id": room_id}, to=alice_id)
    again = None
    with contextlib.suppress(ExpectError):
        again = evil.join_room(room_id, "mallory", to=alice_id, timeout=2.0)
    answered = True
    try:
        evil.sync(to=alice_id, timeout=2.0)
    except ExpectError:
        answered = False

    assert not nothing_secret(evil, start, told), nothing_secret(evil, start, told)
    assert again is None or again["type"] == "JoinRefusal", again
    if answered:  # the frames reached the node: each refusal counted
        after = alice.stats()
        assert after.get("dropped_not_member", 0) - before.get("dropped_not_member", 0) >= 3
        assert after.get("dropped_join_banned", 0) - before.get("dropped_join_banned", 0) >= 1
    texts = chat_flows(alice, bob, "after the ban")
    # Every member that holds the banning state denies the key too: bob may not answer.
    with contextlib.suppress(ExpectError):
        evil.sync(to=bob_id, timeout=2.0)
    assert not set(evil.readable(start)) & set(texts), evil.readable(start)
    assert agent_room(alice) == ("alice", 1, ["alice", "bob"])
    all_trouble_free(alice, bob, evil)


def evil_texts(report: dict[str, Any]) -> list[str]:
    lines = report.get("inner", {}).get("opened", {}).get("batch", {}).get("lines", [])
    return [line["text"] for line in lines]


# ------------------------------------------------------------------------------ case 4


def test_case_4_numbers_near_2_64_from_a_member_freeze_nobody(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    alice, bob, room_id, evil, alice_id, _, epoch = mallory_in_the_room(lab)
    bob.wait_line(r"^\* mallory(#\w+)? joined lobby$")

    # Heads near 2^64 for itself and for alice, and chat batches numbered near 2^64.
    evil.publish_sealed(room_id, epoch, type="Heads", fields={
        "heads": [{"sender": evil.peer_id, "first": 0, "last": UINT64_MAX - 1},
                  {"sender": alice_id, "first": 0, "last": UINT64_MAX - 1}],
        "term": 1, "version": 1})
    evil.publish_sealed(room_id, epoch, type="Chat", fields={
        "batch": batch(room_id, evil.peer_id, UINT64_MAX - 3, "near the top")})
    evil.publish_sealed(room_id, epoch, type="Chat", fields={
        "batch": batch(room_id, evil.peer_id, 2**63, "in the middle")})

    chat_flows(alice, bob, "after the big numbers")
    assert_fast(fast_pings_ms(bob, "alice"))
    started = time.monotonic()
    assert alice.call("ping", peer="bob") < 0.05
    assert time.monotonic() - started < 1.0
    evil.sync(to=alice_id, timeout=1.0)
    assert agent_room(alice) == ("alice", 1, ["alice", "bob", "mallory"])
    all_trouble_free(alice, bob, evil)


# ------------------------------------------------------------------------------ case 5


def test_case_5_a_strangers_unsolicited_history_reply_is_not_stored_or_shown(
    lab_factory: LabFactory, tmp_path: Any,
) -> None:
    lab = lab_factory(3)
    alice, room_id, [bob] = agent_hosts(lab)
    evil = Hostile.start(lab.hosts[2])
    bob_id = bytes.fromhex(evil.connect(bob)["peer_id"])
    alice_id = bytes.fromhex(evil.connect(alice)["peer_id"])
    assert evil.hosted_room(alice_id, ROOM)["room_id"] == room_id
    before = alice.stats()

    # Its own lines, signed by itself, and a "line of alice" it signed too.
    records = [batch(room_id, evil.peer_id, 1, "INJECTED by a stranger"),
               batch(room_id, alice_id, 1, "INJECTED as alice")]
    for to in (alice_id, bob_id):
        evil.send("HistoryReply", {"room_id": room_id, "records": records,
                                   "void": [{"sender": evil.peer_id, "first": 2,
                                             "last": 1000}]}, to=to)
        evil.sync(to=to)

    after = alice.stats()
    assert after.get("dropped_unsolicited", 0) - before.get("dropped_unsolicited", 0) >= 1
    texts = chat_flows(alice, bob, "after the injection")
    assert [m["text"] for m in alice.call("history")] == texts
    saved = bob.save_chat(tmp_path / "bob.txt")
    assert not [line for line in saved if "INJECTED" in line], saved
    assert not [line for line in bob.lines if "INJECTED" in line]
    all_trouble_free(alice, bob, evil)


def test_case_5_void_ranges_and_unknown_epochs_do_not_grow_the_node(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, bob, room_id, evil, alice_id, _, epoch = mallory_in_the_room(lab)
    chat_flows(alice, bob, "warm up")
    until_subscribed(evil, agent_shows(alice), "alice hears mallory")
    rss_before = rss_kb(alice)

    # A line numbered 10: alice asks the hostile member for 1..9, and its replies say "void"
    # for 1,500 ranges of 1,025 numbers of its own far above (in two frames).
    mark = evil.mark()
    evil.publish_sealed(room_id, epoch, type="Chat", fields={
        "batch": batch(room_id, evil.peer_id, 10, "number ten")})
    evil.wait_received("HistoryRequest", since=mark, where={"from": alice_id.hex()})
    base = 10**6
    for part in range(2):
        void = [{"sender": evil.peer_id, "first": base + (part * 750 + k) * 2000,
                 "last": base + (part * 750 + k) * 2000 + 1024} for k in range(750)]
        evil.send("HistoryReply", {"room_id": room_id, "records": [], "void": void},
                  to=alice_id)
    evil.sync(to=alice_id)
    # And thousands of sealed frames under epochs nobody knows.
    evil.publish_junk(room_id, 3000, size=1000)
    evil.publish("Broadcast", {"text": "after the junk"})  # same PUB: read after the junk
    alice.wait_event(type="BroadcastReceived", text="after the junk")

    grown_mib = (rss_kb(alice) - rss_before) / 1024
    assert grown_mib < 40, f"alice grew by {grown_mib:.0f} MiB"
    chat_flows(alice, bob, "after the growth attempt")
    assert_fast(fast_pings_ms(bob, "alice"))
    assert alice.stats().get("dropped_no_key", 0) >= 1
    all_trouble_free(alice, bob, evil)


def test_a_member_flooding_chat_lines_is_taken_at_the_line_rate_and_the_room_stays_fast(
    lab_factory: LabFactory,
) -> None:
    """Rate limits: a member's frames were limited, not its lines, and a frame holds 256 of
    them. The hostile member publishes 48 full batches (12,288 lines) as fast as it can:
    alice takes at most ``chat_lines_burst`` plus ``chat_lines_per_s`` a second of them,
    counts the rest, and still chats and answers pings at once."""
    limits = Limits()
    lab = lab_factory(3)
    alice, bob, room_id, evil, _, _, epoch = mallory_in_the_room(lab)
    until_subscribed(evil, agent_shows(alice), "alice hears mallory")
    started = time.monotonic()
    for k in range(48):
        evil.publish_sealed(room_id, epoch, type="Chat", fields={"batch": batch(
            room_id, evil.peer_id, 1 + 256 * k, *(f"flood {256 * k + i}" for i in range(256)))})
    evil.publish("Broadcast", {"text": "after the flood"})  # same PUB: read after the flood
    alice.wait_event(type="BroadcastReceived", text="after the flood", timeout=30)
    took_s = time.monotonic() - started

    held = [m for m in alice.call("history", timeout=30) if m["sender"]["name"] == "mallory"]
    assert len(held) <= limits.chat_lines_burst + limits.chat_lines_per_s * took_s + 256, \
        (len(held), took_s)
    assert alice.stats().get("dropped_line_rate", 0) >= 1
    chat_flows(alice, bob, "after the line flood")
    assert_fast(fast_pings_ms(bob, "alice"))
    all_trouble_free(alice, bob, evil)


# ------------------------------------------------------------------------------ case 6


def random_cards(n: int, host: Host) -> list[dict[str, Any]]:
    """``n`` peer cards of made-up peers at addresses of the lab's subnet where nobody is."""
    net = host.addr.rsplit(".", 1)[0]
    return [{"peer_id": bytes(SigningKey.generate().verify_key), "name": f"fake{i}",
             "addresses": [f"{net}.{200 + i % 50}"], "router_port": 20000 + i,
             "pub_port": 30000 + i, "card_port": 0} for i in range(n)]


def test_case_6_a_flood_of_fake_peer_cards_opens_no_sockets_without_bound(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, _, [bob] = agent_hosts(lab)
    evil = Hostile.start(lab.hosts[2])
    alice_id = bytes.fromhex(evil.connect(alice)["peer_id"])
    evil.sync(to=alice_id)
    fds_before = open_fds(alice)

    for _ in range(5):
        evil.send("Peers", {"peers": random_cards(1000, lab.hosts[2])}, to=alice_id)
    evil.sync(to=alice_id, timeout=10.0)
    evil.hello(to=alice_id)
    evil.send("Peers", {"peers": random_cards(1000, lab.hosts[2])}, to=alice_id)
    evil.sync(to=alice_id, timeout=10.0)

    grew = open_fds(alice) - fds_before
    assert grew <= 200, f"alice opened {grew} file descriptors for made-up peers"
    assert_fast(fast_pings_ms(bob, "alice"))
    chat_flows(alice, bob, "after the cards")
    assert len(alice.call("peers")) <= 300
    all_trouble_free(alice, bob, evil)


# ------------------------------------------------------------------------------ case 7


def test_case_7_a_twin_id_is_refused_and_does_not_slip_past_a_ban(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, bob, room_id, evil, alice_id, bob_id, _ = mallory_in_the_room(lab)
    me = evil.peer_id
    twin_card = card_of(me[:31] + bytes([me[31] ^ 0x80]), lab.hosts[2], evil.router_port,
                        evil.pub_port, "mallory2")

    # The ban is by key: mallory's. It is told so once (the state that bans it); after
    # that, nothing.
    mark = evil.mark()
    alice.call("ban", peer="mallory", reason="spam")
    assert agent_room(alice) == ("alice", 1, ["alice", "bob"])
    notice = evil.wait_received("StatePush", since=mark, where={"from": alice_id},
                                test=bans_me)
    told = notice["opened"]["state"]["version"]
    start = evil.mark()

    # The same CURVE key comes back as its twin id: introduced by itself (and to bob), then
    # saying Hello and asking to join as the twin, with a twin's real signature on a line.
    for to in (alice_id, bob_id):
        evil.send("Peers", {"peers": [twin_card]}, to=to)
    twin = evil.twin()
    assert twin == twin_card["peer_id"]
    for to in (alice_id, bob_id):
        evil.hello(to=to)
    reply = None
    with contextlib.suppress(ExpectError):
        reply = evil.join_room(room_id, "mallory2", to=alice_id, timeout=3.0)
    if reply is not None and reply["type"] == "JoinAccept":
        epoch = reply["fields"]["key_epoch"]
        evil.publish_sealed(room_id, epoch, type="Chat", fields={
            "batch": batch(room_id, twin, 1, "the twin speaks")})

    texts = chat_flows(alice, bob, "after the twin")
    assert reply is None or reply["type"] == "JoinRefusal", f"the twin of a banned key: {reply}"
    peers = {p["peer_id"] for p in alice.call("peers")}
    assert twin.hex() not in peers, "alice took the twin id as a peer of its own"
    assert agent_room(alice) == ("alice", 1, ["alice", "bob"])
    assert not nothing_secret(evil, start, told)
    assert not set(evil.readable(start)) & set(texts)
    assert not [line for line in bob.lines if "the twin speaks" in line or "mallory2" in line]
    all_trouble_free(alice, bob, evil)


# ------------------------------------------------------------------------------ case 8


def test_case_8_a_private_message_from_the_year_1e300_does_not_stop_line_mode(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice = Chat.start(lab.hosts[0], "alice", "--host", ROOM)
    alice.expect(rf"^\* hosting room {ROOM}$")
    bob = Chat.start(lab.hosts[1], "bob")
    bob.send(f"/join {ROOM}")
    bob.expect(rf"^\* joined {ROOM} ")
    evil = Hostile.start(lab.hosts[2])
    bob_id = bytes.fromhex(evil.connect(bob)["peer_id"])

    for sent_at in (1e300, -1e300, 1.7e308, 0.0):
        evil.send("Private", {"text": f"bad time {sent_at!r}", "to": [bob_id]},
                  sent_at=sent_at)
    evil.send("Private", {"text": "after the bad times", "to": [bob_id]})
    bob.wait_line(r"\[private\] <mallory(#\w+)? → you> after the bad times$")
    alice.send("/msg bob the next normal message")
    bob.wait_line(r"\[private\] <alice → you> the next normal message$")
    chats_flow(alice, bob, "room chat after the bad times")
    evil.sync(to=bob_id)
    all_trouble_free(alice, bob, evil)


# ------------------------------------------------------------------------------ case 9


def test_case_9_two_hosts_of_lobby_are_two_choices_and_lobby_fp_picks_one(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice = Chat.start(lab.hosts[0], "alice", "--host", ROOM)
    alice.expect(rf"^\* hosting room {ROOM}$")
    bob = Chat.start(lab.hosts[1], "bob")
    evil = Hostile.start(lab.hosts[2])
    evil.connect(bob)
    until_subscribed(evil, chat_shows(bob), "bob hears mallory")
    # The other lobby: another room id, claiming the highest term there is.
    evil.heartbeat(every=0.05, fields={"hosted": [
        {"room_id": os.urandom(16), "name": ROOM, "members": 9, "locked": False,
         "has_password": False, "term": UINT64_MAX}]})
    evil.publish("Broadcast", {"text": "the other lobby is up"})
    bob.wait_line(lit("the other lobby is up"))
    deadline = time.monotonic() + 10
    while True:  # until bob has seen both listings (mDNS for alice's)
        bob.send("/rooms")
        line = bob.expect(r"^\* (rooms: |no rooms)").string
        if line.count(f"{ROOM} (") >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # pacing between probes; each probe waits for its answer
    assert alice.fp[:8] in line and evil.fp[:8] in line, line

    bob.send(f"/join {ROOM}")
    error = bob.expect(r"^\* error: ").string
    assert f"{ROOM}#{alice.fp[:8]}" in error and f"{ROOM}#{evil.fp[:8]}" in error, error
    bob.send(f"/join {ROOM}#{alice.fp[:4]}")
    bob.expect(rf"^\* joined {ROOM} \(host alice; members: alice, bob\)")
    chats_flow(alice, bob, "in the real lobby")
    evil.heartbeat(every=0)
    all_trouble_free(alice, bob, evil)


def test_case_9_a_hostile_host_asking_for_a_huge_argon2_memlimit_is_refused_quickly(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(2)
    bob = Chat.start(lab.hosts[0], "bob")
    evil = Hostile.start(lab.hosts[1])
    bob_id = bytes.fromhex(evil.connect(bob)["peer_id"])
    room_id = os.urandom(16)
    evil.heartbeat(every=0.05, fields={"hosted": [
        {"room_id": room_id, "name": "vault", "members": 2, "locked": False,
         "has_password": True, "term": 1}]})
    mark = evil.mark()
    rss_before = rss_kb(bob)

    bob.send("/join vault opensesame")
    request = evil.wait_received("JoinRequest", since=mark, where={"from": bob_id.hex()})
    asked = time.monotonic()
    evil.send("JoinChallenge", {
        "room_id": room_id, "request_id": request["fields"]["request_id"],
        "salt": os.urandom(16), "nonce": os.urandom(32), "opslimit": 3,
        "memlimit": 4 << 40}, to=bob_id)  # 4 TiB
    bob.expect(r"^\* error: ", timeout=5.0)
    refused_in = time.monotonic() - asked
    assert refused_in < 1.0, f"refused only after {refused_in:.2f}s"
    assert (rss_kb(bob) - rss_before) / 1024 < 64
    evil.sync(to=bob_id)
    evil.heartbeat(every=0)
    all_trouble_free(bob, evil)


# ------------------------------------------------------------------------------ case 10


def test_case_10_a_key_update_from_a_member_that_is_not_the_host_is_ignored(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, bob, room_id = agent_joins(lab)
    evil = Hostile.start(lab.hosts[2])
    alice_id = bytes.fromhex(evil.connect(alice)["peer_id"])
    bob_id = bytes.fromhex(evil.connect(bob)["peer_id"])
    _, epoch = evil_joins(evil, room_id, alice_id)
    bob.wait_event(type="PeerJoined", room=ROOM, peer={"name": "mallory"})
    before = bob.stats()

    # A key for the current epoch (it would cut bob off) and one for an epoch of its own.
    for e in (epoch, 4242):
        evil.send("KeyUpdate", {"room_id": room_id, "epoch": e, "sealed_key": {
            "sealed_key": {"key": os.urandom(32).hex(), "to": bob_id.hex()}}}, to=bob_id)
    evil.sync(to=bob_id)

    after = bob.stats()
    assert after.get("dropped_not_host", 0) - before.get("dropped_not_host", 0) >= 2
    chat_flows(bob, alice, "after the fake keys", agent_is="bob")
    mark = bob.mark()
    alice.say("alice still reaches bob")
    bob.wait_event(mark, type="Message", text="alice still reaches bob")
    all_trouble_free(alice, bob, evil)


def test_case_10_unsolicited_pongs_do_not_clear_suspicion_of_a_silent_host(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, bob, room_id = agent_joins(lab)
    evil = Hostile.start(lab.hosts[2])
    alice_id = bytes.fromhex(evil.connect(alice)["peer_id"])
    bob_id = bytes.fromhex(evil.connect(bob)["peer_id"])
    evil_joins(evil, room_id, alice_id)
    bob.wait_event(type="PeerJoined", room=ROOM, peer={"name": "mallory"})
    before = bob.stats()

    # The host goes silent. Its ping nonces are small numbers: a member answers them all,
    # over and over, while bob pings the host and waits.
    mark = bob.mark()
    alice.stop()
    deadline = time.monotonic() + 8
    sent = 0
    while not [e for e in bob.events(mark) if e["type"] == "HostChanged"]:
        assert time.monotonic() < deadline, "bob never replaced the silent host"
        sent += evil.send_many("Pong", [{"nonce": n} for n in range(1, 400)], to=bob_id)
    ev = bob.wait_event(mark, type="HostChanged")
    assert ev["new"]["name"] == "bob" and ev["term"] == 2, ev
    after = bob.stats()
    assert after.get("dropped_unsolicited", 0) - before.get("dropped_unsolicited", 0) >= 300
    assert agent_room(bob)[:2] == ("bob", 2)
    alice.cont()
    all_trouble_free(bob, evil)


def test_case_10_a_claim_with_term_2_64_minus_1_from_a_member_changes_nothing(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(3)
    alice, bob, room_id = agent_joins(lab)
    evil = Hostile.start(lab.hosts[2])
    alice_id = bytes.fromhex(evil.connect(alice)["peer_id"])
    bob_id = bytes.fromhex(evil.connect(bob)["peer_id"])
    accept = evil.join_room(room_id, to=alice_id)
    epoch = accept["fields"]["key_epoch"]
    bob.wait_event(type="PeerJoined", room=ROOM, peer={"name": "mallory"})
    before = bob.stats()

    # The state it was given, claimed: itself host, alice "vanished", term 2^64 - 1.
    fields = strip_types(accept["opened"]["state"])
    fields.update(host=evil.peer_id.hex(), term=UINT64_MAX, version=UINT64_MAX,
                  change="failover", change_peer=alice_id.hex(), change_reason="vanished",
                  members=[m for m in fields["members"] if m["peer_id"] != alice_id.hex()])
    claim = {"signed": {"type": "RoomState", "fields": fields}}
    evil.publish_sealed(room_id, epoch, type="StateAnnounce", fields={"state": claim})
    for to in (alice_id, bob_id):
        evil.send("StatePush", {"room_id": room_id, "state": claim}, to=to)
        evil.sync(to=to)

    texts = chat_flows(bob, alice, "after the claim", agent_is="bob")
    assert agent_room(bob) == ("alice", 1, ["alice", "bob", "mallory"])
    view = alice.room_info()
    assert (view.host, view.term) == ("alice", 1), view
    after = bob.stats()
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert sum(v for k, v in grew.items() if k.startswith(("dropped_", "rejected_"))) >= 1, grew
    assert texts
    all_trouble_free(alice, bob, evil)


# ------------------------------------------------------------------------------ case 11


@pytest.mark.parametrize(("said", "shown"), [(5, 5), (150, 150), (300, 200)])
def test_case_11_a_late_joiner_sees_the_backlog_marked_as_earlier_messages(
    lab_factory: LabFactory, said: int, shown: int,
) -> None:
    lab = lab_factory(2)
    alice = Chat.start(lab.hosts[0], "alice", "--host", ROOM)
    alice.expect(rf"^\* hosting room {ROOM}$")
    for i in range(said):
        alice.send(f"earlier line {i}")
    alice.wait_line(chat_re("alice", f"earlier line {said - 1}"))
    bob = Chat.start(lab.hosts[1], "bob")
    mark = bob.mark()
    bob.send(f"/join {ROOM}")
    bob.expect(rf"^\* joined {ROOM} ")
    separator = bob.wait_line(r"^\* ── (\d+) earlier messages?\b", since=mark, timeout=3.0)
    assert int(separator[1]) == shown, separator[0]
    wanted = [f"earlier line {i}" for i in range(said - shown, said)]
    bob.wait_texts(wanted, since=mark)
    alice.say("a live line after the join")
    bob.wait_line(chat_re("alice", "a live line after the join"))
    shown_texts = bob.texts(since=mark)
    assert shown_texts == [*wanted, "a live line after the join"], shown_texts[:5]
    all_trouble_free(alice, bob)
