"""Issue 6, cases 2 and 9 and the join rate limits, attacked by a hostile peer in memory.

Each attack is sent over the in-memory transport by a ``HostilePeer`` with its own keys; each
test checks that it was dropped, that a ``dropped_*`` counter moved, that nothing else changed
(state, history, key, membership), and that the node still answers a ping promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from meshchat import AmbiguousName, JoinRefused, Node, Timings
from meshchat import room as rules
from meshchat.discovery.memory import MemoryDiscovery
from meshchat.identity import fingerprint_of
from meshchat.protocol.messages import (
    Heartbeat,
    HistoryReply,
    HostedRoom,
    JoinAccept,
    JoinChallenge,
    JoinRefusal,
    JoinRequest,
    KeyUpdate,
    Member,
    Ping,
    Pong,
    RoomState,
    StatePush,
    WireMessage,
)
from meshchat.transport.base import Incoming
from meshchat.transport.memory import MemoryTransport

from ..hostile import HostilePeer
from .conftest import Mesh, until


class AddressedTransport(MemoryTransport):
    """Direct frames tagged with the sender's own LAN address, as ZeroMQ's Peer-Address does
    (the plain in-memory transport tags every frame "mem")."""

    lan_address = "mem"

    def _arrive(self, incoming: Incoming) -> None:
        if incoming.kind == "direct":
            senders = self.network._alive(incoming.peer_id)
            address = getattr(senders[0], "lan_address", "mem") if senders else "mem"
            incoming = dataclasses.replace(incoming, peer_address=address)
        super()._arrive(incoming)


class Lab:
    def __init__(self, mesh: Mesh, tmp: Path) -> None:
        self.mesh = mesh
        self.tmp = tmp
        self.evils: list[HostilePeer] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def victim(self, name: str = "alice") -> Node:
        """A node whose transport sees each sender's address (for per-address limits)."""
        node = Node(name, data_dir=self.tmp / "victim" / name, timings=Timings.fast(),
                    loopback_only=True, transport=AddressedTransport(self.mesh.network),
                    discovery=MemoryDiscovery(self.mesh.hub))
        await node.start()
        self.mesh.nodes.append(node)
        return node

    async def evil(self, name: str = "mallory", address: str = "10.6.6.6") -> HostilePeer:
        transport = AddressedTransport(self.mesh.network)
        transport.lan_address = address
        peer = HostilePeer(transport, name=name)
        await peer.start()
        self.evils.append(peer)
        return peer

    def every(self, seconds: float, action: Callable[[], None]) -> None:
        async def loop() -> None:
            while True:
                action()
                await asyncio.sleep(seconds)

        self.tasks.append(asyncio.create_task(loop()))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for evil in self.evils:
            await evil.close()


@pytest.fixture
async def lab(mesh: Mesh, tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(mesh, tmp_path)
    try:
        yield lab
    finally:
        await lab.close()


def snapshot(node: Node, room_id: bytes) -> tuple[object, ...]:
    """What an attack must not change: the signed state, the keys, the history."""
    jr = node._rooms[room_id]
    return (jr.core.blob, dict(jr.keys), [(r.sender, r.seq) for r in node._log.all(room_id)])


async def answers_ping_promptly(node: Node, evil: HostilePeer) -> None:
    nonce = int(time.monotonic() * 1e6)
    started = time.monotonic()
    evil.send(node.peer_id, Ping(nonce))
    await evil.wait_for(Pong, lambda m: m.nonce == nonce, timeout=1.0)
    assert time.monotonic() - started < 0.1


def connect(evil: HostilePeer, node: Node) -> None:
    evil.connect(node.peer_id, node._me.router_port, node._me.pub_port)


async def ask_to_join(evil: HostilePeer, node: Node, req: JoinRequest) -> WireMessage:
    connect(evil, node)
    evil.send(node.peer_id, req)
    return await evil.wait_for(WireMessage, lambda m: isinstance(
        m, JoinAccept | JoinChallenge | JoinRefusal) and m.request_id == req.request_id)


def forged_handoff(evil: HostilePeer, state: RoomState, host: bytes) -> bytes:
    """Case 2's token: a "handoff" the joiner signed itself, naming a real member as host."""
    fake = dataclasses.replace(
        state, host=host, term=state.term + 1, version=state.version + 1, locked=False,
        password=None, members=(*state.members, Member(evil.peer_id, evil.name, 1.0)),
        change=rules.HANDOFF, change_peer=evil.peer_id)
    return evil.sign(fake)


def got_nothing_secret(evil: HostilePeer) -> bool:
    return not (evil.messages(JoinAccept) or evil.messages(KeyUpdate)
                or evil.messages(HistoryReply) or evil.messages(StatePush))


# ---------------------------------------------------------------- case 2: merge bypass


async def test_a_forged_handoff_token_opens_no_locked_password_room(mesh: Mesh, lab: Lab
                                                                    ) -> None:
    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    room = await alice.host("lobby")
    await bob.join("lobby")
    await room.say("before the lock")
    await room.set_password("hunter2")
    await room.lock()
    rid = room.room_id
    await until(lambda: len(alice._log.all(rid)) == 1)
    before = snapshot(alice, rid)

    evil = await lab.evil()
    token = forged_handoff(evil, alice._rooms[rid].state, bob.peer_id)
    reply = await ask_to_join(evil, alice, JoinRequest(rid, "mallory", 1, b"", b"", token))

    assert isinstance(reply, JoinRefusal) and reply.reason == "locked"
    assert alice.stats["dropped_merge_stranger_signer"] == 1
    assert alice.stats["dropped_join_locked"] == 1
    assert snapshot(alice, rid) == before
    assert [m.name for m in room.members] == ["alice", "bob"]
    assert got_nothing_secret(evil)
    await answers_ping_promptly(alice, evil)


async def test_the_same_token_on_an_unlocked_password_room_meets_the_password(
        mesh: Mesh, lab: Lab) -> None:
    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    room = await alice.host("lobby")
    await bob.join("lobby")
    await room.set_password("hunter2")
    rid = room.room_id
    before = snapshot(alice, rid)
    evil = await lab.evil()
    token = forged_handoff(evil, alice._rooms[rid].state, bob.peer_id)
    reply = await ask_to_join(evil, alice, JoinRequest(rid, "mallory", 1, b"", b"", token))
    assert isinstance(reply, JoinChallenge)
    # A made-up proof for the challenge, with the token again: still no way in.
    reply = await ask_to_join(evil, alice, JoinRequest(rid, "mallory", 2, reply.nonce,
                                                        b"\x01" * 64, token))
    assert isinstance(reply, JoinRefusal) and reply.reason == "password"
    assert alice.stats["dropped_merge_stranger_signer"] == 2
    assert alice.stats["dropped_join_password"] == 1
    assert snapshot(alice, rid) == before and got_nothing_secret(evil)
    await answers_ping_promptly(alice, evil)


async def test_a_kicked_member_vouches_for_nobody_and_cannot_merge_back(mesh: Mesh, lab: Lab
                                                                         ) -> None:
    alice = await mesh.add("alice")
    room = await alice.host("lobby")
    rid = room.room_id
    evil = await lab.evil()
    evil.introduce(alice)
    await until(lambda: evil.peer_id in alice._peers, what="alice knows mallory")
    accept = await ask_to_join(evil, alice, JoinRequest(rid, "mallory", 1, b"", b"", b""))
    assert isinstance(accept, JoinAccept)
    await until(lambda: len(room.members) == 2)
    await room.kick("mallory", "rude")
    await room.set_password("hunter2")
    await room.lock()
    before = snapshot(alice, rid)
    held = evil.codec.open_signed(accept.state, RoomState, rules.signer_of)

    # A friend of the kicked member, with a state the kicked member signed.
    friend = await lab.evil("trudy")
    token = evil.sign(dataclasses.replace(
        held, host=evil.peer_id, term=held.term + 3, version=held.version + 9,
        members=(*held.members, Member(friend.peer_id, "trudy", 2.0)),
        change=rules.JOINED, change_peer=friend.peer_id))
    reply = await ask_to_join(friend, alice, JoinRequest(rid, "trudy", 1, b"", b"", token))
    assert isinstance(reply, JoinRefusal) and reply.reason == "locked"
    assert alice.stats["dropped_merge_removed_signer"] == 1

    # The kicked member itself, with the genuine state alice signed when it joined.
    n_keys = len(evil.messages(KeyUpdate))
    reply = await ask_to_join(evil, alice, JoinRequest(rid, "mallory", 2, b"", b"",
                                                        accept.state))
    assert isinstance(reply, JoinRefusal) and reply.reason == "locked"
    assert alice.stats["dropped_merge_own_state"] == 1
    assert snapshot(alice, rid) == before
    assert [m.name for m in room.members] == ["alice"]
    assert len(evil.messages(KeyUpdate)) == n_keys and got_nothing_secret(friend)
    await answers_ping_promptly(alice, evil)


# ---------------------------------------------------------------- case 9: hijacked joins


def host_listing(lab: Lab, evil: HostilePeer, *rooms: HostedRoom) -> None:
    """The hostile peer announces rooms in its heartbeat, as any host does."""
    lab.every(0.05, lambda: evil.publish(b"P", Heartbeat(evil.card(), 1.0, "", rooms, ())))


def answer_joins(lab: Lab, evil: HostilePeer, reply: Callable[[JoinRequest], WireMessage]
                 ) -> None:
    """Answer every JoinRequest the hostile peer receives with ``reply(request)``."""
    async def loop() -> None:
        done = 0
        while True:
            await until(lambda seen=done: len(evil.received) > seen, timeout=60, what="a frame")
            for inc, env in evil.received[done:]:
                if isinstance(env.message, JoinRequest):
                    evil.send(inc.peer_id, reply(env.message))
            done = len(evil.received)

    lab.tasks.append(asyncio.create_task(loop()))


async def test_a_host_cannot_dictate_a_huge_password_hash(mesh: Mesh, lab: Lab,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    bob = await mesh.add("bob")
    evil = await lab.evil()
    evil.introduce(bob)
    rid = b"t" * 16
    host_listing(lab, evil, HostedRoom(rid, "trap", 1, False, True, 1))
    answer_joins(lab, evil, lambda r: JoinChallenge(r.room_id, r.request_id, b"s" * 16,
                                                     b"n" * 24, 4, 4 << 40))  # 4 TiB

    def no_hashing(*args: object) -> bytes:
        raise AssertionError("the joiner started an Argon2 hash")

    monkeypatch.setattr(rules, "password_proof", no_hashing)
    started = time.monotonic()
    with pytest.raises(JoinRefused) as refused:
        await bob.join("trap", "secret")
    assert refused.value.reason == "cost" and "256 MiB" in refused.value.detail
    assert time.monotonic() - started < 1.0
    assert bob.stats["dropped_join_cost"] == 1
    assert rid not in bob._rooms and not bob.joined_rooms()


async def test_moved_to_a_host_no_signed_state_names_is_not_followed(mesh: Mesh, lab: Lab
                                                                      ) -> None:
    bob = await mesh.add("bob")
    evil = await lab.evil()
    accomplice = await lab.evil("eve")
    evil.introduce(bob)
    accomplice.introduce(bob)
    await until(lambda: accomplice.peer_id in bob._peers)
    rid = b"m" * 16
    host_listing(lab, evil, HostedRoom(rid, "lobby", 1, False, False, 1))
    answer_joins(lab, evil, lambda r: JoinRefusal(r.room_id, r.request_id, "moved",
                                                   accomplice.peer_id.hex()))
    answer_joins(lab, accomplice, lambda r: JoinAccept(r.room_id, r.request_id, b"", b"", 1,
                                                        (), ()))
    with pytest.raises(JoinRefused) as refused:
        await bob.join("lobby")
    assert refused.value.reason == "moved"
    assert bob.stats["dropped_moved_unsigned"] == 1
    assert not accomplice.messages(JoinRequest) and not bob.joined_rooms()


async def test_two_hosts_announcing_one_name_are_two_choices(mesh: Mesh, lab: Lab) -> None:
    alice = await mesh.add("alice")
    carol = await mesh.add("carol")
    real = await alice.host("lobby")
    evil = await lab.evil()
    evil.introduce(carol)
    host_listing(lab, evil, HostedRoom(b"f" * 16, "lobby", 40, False, False, 99))
    await until(lambda: len(carol._directory.listings) == 2, what="carol sees both listings")

    with pytest.raises(AmbiguousName) as ambiguous:
        await carol.join("lobby")
    assert set(ambiguous.value.candidates) == {f"lobby#{alice.fingerprint[:8]}",
                                               f"lobby#{fingerprint_of(evil.peer_id)[:8]}"}
    assert not evil.messages(JoinRequest) and not carol.joined_rooms()

    room = await carol.join(f"lobby#{alice.fingerprint[:4]}")
    assert room.host.name == "alice" and room.room_id == real.room_id
    assert not evil.messages(JoinRequest)


async def test_a_copycat_listing_of_the_same_room_id_is_not_followed(mesh: Mesh, lab: Lab
                                                                      ) -> None:
    alice = await mesh.add("alice")
    carol = await mesh.add("carol")
    real = await alice.host("lobby")
    evil = await lab.evil()
    evil.introduce(carol)
    # The real room's id, copied from alice's announcement, with a higher term.
    host_listing(lab, evil, HostedRoom(real.room_id, "lobby", 40, False, False, 99))
    await until(lambda: len(carol._directory.listings) == 2, what="carol sees both listings")
    with pytest.raises(AmbiguousName):
        await carol.join("lobby")
    room = await carol.join(f"lobby#{alice.fingerprint[:5]}")
    assert room.host.name == "alice" and room.room_id == real.room_id
    # (Alice herself may try to merge into the copycat's higher term: that is case 1, the
    # stranger takeover, refused elsewhere. Carol never asked it.)
    assert not [env for inc, env in evil.received
                if isinstance(env.message, JoinRequest) and inc.peer_id == carol.peer_id]


async def test_a_fresh_handoff_is_not_an_ambiguity(mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    carol = await mesh.add("carol")
    room = await alice.host("lobby")
    await bob.join("lobby")
    await until(lambda: len(carol._directory.listings) == 1)
    await room.handoff("bob")
    joined = await carol.join("lobby")
    assert joined.host.name == "bob"
    await until(lambda: [m.name for m in joined.members] == ["alice", "bob", "carol"])


async def test_a_stale_listing_is_followed_to_the_new_host_by_its_signed_state(
        mesh: Mesh) -> None:
    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    carol = await mesh.add("carol")
    room = await alice.host("lobby")
    await bob.join("lobby")
    await until(lambda: len(carol._directory.listings) == 1)
    listing = next(iter(carol._directory.listings.values()))
    await room.handoff("bob")
    await until(lambda: not alice._rooms[room.room_id].core.is_host)
    joined = carol._room_handle(await carol._joining.join(listing, None))  # answered "moved"
    assert joined.host.name == "bob" and alice.stats["dropped_join_moved"] == 1
    assert carol.stats["dropped_moved_unsigned"] == 0


# ---------------------------------------------------------------- join rate limits


async def test_a_join_flood_from_one_peer_is_refused_and_others_get_in(mesh: Mesh, lab: Lab
                                                                       ) -> None:
    alice = await lab.victim()
    room = await alice.host("lobby", password="hunter2")
    rid = room.room_id
    before = snapshot(alice, rid)
    evil = await lab.evil()
    connect(evil, alice)
    for i in range(200):
        evil.send(alice.peer_id, JoinRequest(rid, "mallory", i, b"x" * 24, b"y" * 64, b""))
    await until(lambda: alice.stats["dropped_rate"] + len(evil.received) >= 200,
                what="the flood handled")
    assert alice.stats["dropped_rate"] >= 150  # the gate's per-peer join bucket
    assert snapshot(alice, rid) == before and got_nothing_secret(evil)
    assert alice._sessions.admission.pending_challenges <= alice.limits.max_join_challenges
    await answers_ping_promptly(alice, evil)

    bob = await mesh.add("bob")  # another address ("mem")
    started = time.monotonic()
    await bob.join("lobby", "hunter2")
    assert time.monotonic() - started < 2.0
    await until(lambda: [m.name for m in room.members] == ["alice", "bob"])


async def test_a_join_flood_from_many_keys_on_one_address_is_refused(mesh: Mesh, lab: Lab
                                                                     ) -> None:
    alice = await lab.victim()
    room = await alice.host("lobby", password="hunter2")
    rid = room.room_id
    before = snapshot(alice, rid)
    evils = [await lab.evil(f"m{i}", address="10.6.6.6") for i in range(60)]
    for i, evil in enumerate(evils):
        connect(evil, alice)
        evil.send(alice.peer_id, JoinRequest(rid, evil.name, i, b"", b"", b""))
    await until(lambda: sum(len(e.received) for e in evils) >= 60, what="every key answered")
    refusals = [m for e in evils for m in e.messages(JoinRefusal)]
    assert len(refusals) >= 60 - alice.limits.joins_per_address_burst - 5
    assert {r.reason for r in refusals} == {"rate"}
    assert alice.stats["dropped_join_rate"] == len(refusals)
    assert snapshot(alice, rid) == before
    assert not any(e.messages(JoinAccept) or e.messages(KeyUpdate) for e in evils)
    await answers_ping_promptly(alice, evils[0])

    bob = await mesh.add("bob")  # another address ("mem")
    started = time.monotonic()
    await bob.join("lobby", "hunter2")
    assert time.monotonic() - started < 2.0
    await until(lambda: [m.name for m in room.members] == ["alice", "bob"])
    with contextlib.suppress(Exception):
        await bob.close()
