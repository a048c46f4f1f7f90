"""Issue 6: every row of the authority table, tried from a wrong sender and from a right one.

The cases are generated from ``meshchat.authority.TABLE``: ``RECIPES`` says how to build each
row's message, which senders the row refuses and which one it admits, and
``test_every_row_has_a_recipe`` fails as soon as a row is added without one.

Each case is one node under test (``bob``) in a room hosted by a scripted hostile host
(``hal``, which signs what the test tells it to), with hostile peers around it that each have
their own keys and speak over the in-memory transport:

- ``mallory``: a plain member of the room;
- ``fred``: a former member in good standing (he left);
- ``kim``: banned from the room;
- ``eve``: a stranger bob knows (she said hello), never a member;
- ``ghost``: a peer bob never heard of.

A wrong sender's frame (and every row's frame on the wrong socket, which the codec already
refuses for that socket) must be dropped, counted
in a ``dropped_*`` counter, emit no event and change nothing (state, keys, history, host,
peers, transfers). A right sender's frame must get through the gate, and where it has a
visible effect, have it. Everything runs on a FakeClock.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from meshchat import Node
from meshchat import room as rules
from meshchat.authority import TABLE, Role
from meshchat.events import BroadcastReceived, Message
from meshchat.protocol.messages import (
    Broadcast,
    Bye,
    Chat,
    CommandResult,
    FileChunk,
    FileGet,
    FileItem,
    FileOffer,
    FileState,
    FileSumRequest,
    FileSums,
    Heads,
    Heartbeat,
    Hello,
    HistoryReply,
    HistoryRequest,
    HostCommand,
    HostedRoom,
    JoinAccept,
    JoinChallenge,
    JoinRefusal,
    JoinRequest,
    KeyUpdate,
    Leave,
    Look,
    PeerCard,
    Peers,
    Ping,
    Pong,
    Private,
    Sealed,
    StateAnnounce,
    StatePush,
    StateRequest,
    WireMessage,
)
from meshchat.transport.memory import MemoryTransport

from ..hostile import HostilePeer
from .conftest import Mesh
from .elections import FakeMesh

BEAT_EVERY = 5  # steps of 10 fake ms: one heartbeat per peer per 50 ms, within the rate


class Peer(HostilePeer):
    """A hostile peer that keeps itself alive (heartbeat, pongs) when the test steps time."""

    key = b""
    epoch = 0
    hosted: tuple[HostedRoom, ...] = ()
    _scanned = 0

    def beat(self) -> None:
        self.publish(b"P", Heartbeat(self.card(), 0.0, "", self.hosted, ()))

    def answer_pings(self) -> None:
        for _, env in self.received[self._scanned:]:
            if isinstance(env.message, Ping):
                self.send(env.sender, Pong(env.message.nonce))
        self._scanned = len(self.received)


@dataclass
class World:
    fake: FakeMesh
    bob: Node
    room_id: bytes
    core: rules.RoomCore  # hal's room, as hal holds it
    peers: dict[str, Peer]
    gate_log: list[tuple[bytes, WireMessage, bool]]  # what the gate decided, in order

    def __getitem__(self, name: str) -> Peer:
        return self.peers[name]

    @property
    def hal(self) -> Peer:
        return self.peers["hal"]

    def snapshot(self) -> tuple[object, ...]:
        jr = self.bob._rooms[self.room_id]
        return (jr.core.blob, tuple(sorted(jr.keys)), len(self.bob._chat.history(
            self.room_id, "")), tuple(sorted(p.fingerprint for p in self.bob.peers())),
            tuple(sorted(j.rec.tid for j in self.bob._files._jobs)), jr.state.host)

    def drops(self) -> int:
        node = sum(v for k, v in self.bob.stats.items()
                   if (k.startswith("dropped_") and k != "dropped_rate")
                   or k == "rejected_claims")
        transport = self.fake.mesh.transports["bob"].stats.extra
        return node + sum(v for k, v in transport.items() if k.startswith("dropped_"))

    def events(self) -> int:
        return len(self.fake.mesh.recorders["bob"].events)

    def verdicts(self, sender: Peer, m: WireMessage, since: int) -> list[bool]:
        """The gate's verdicts on ``m`` from ``sender`` since entry ``since`` of its log."""
        return [ok for p, seen, ok in self.gate_log[since:]
                if p == sender.peer_id and seen == m]


async def make_world(mesh: Mesh) -> World:
    fake = FakeMesh(mesh)
    bob = await fake.add("bob")
    peers = {name: Peer(MemoryTransport(mesh.network), name=name)
             for name in ("hal", "mallory", "fred", "kim", "eve", "ghost")}
    for p in peers.values():
        await p.start()
    hal = peers["hal"]
    core, epoch, key = rules.RoomCore.create(hal.identity, hal.codec, "den", "hal", 0.0,
                                             os.urandom)
    room_id = core.state.room_id
    for name in ("mallory", "fred", "kim"):
        core.add_member(peers[name].peer_id, name, 0.0)
    for p in peers.values():
        p.key, p.epoch = key, epoch
    hal.hosted = (HostedRoom(room_id, "den", 4, False, False, core.state.term),)
    steps = [0]

    def tick() -> None:
        steps[0] += 1
        for name, p in peers.items():
            if name == "ghost":
                continue  # ghost stays unknown: it never speaks unasked
            if p is hal:
                p.answer_pings()  # the others answer no ping: the Pong row answers its own
            if steps[0] % BEAT_EVERY == 1:
                p.beat()
        for _, env in hal.received[answered[0]:]:
            m = env.message
            if isinstance(m, JoinRequest) and env.sender == bob.peer_id:
                core.add_member(bob.peer_id, m.name, 1.0)
                hal.send(bob.peer_id, JoinAccept(
                    room_id, m.request_id, core.blob,
                    rules.seal_key(hal.identity, bob.peer_id, key), epoch, (), ()))
        answered[0] = len(hal.received)

    answered = [0]
    fake.on_step.append(tick)
    for name, p in peers.items():
        if name != "ghost":
            p.introduce(bob)
    # ghost has a link to bob but never says hello: bob does not know it
    peers["ghost"].connect(bob.peer_id, bob._me.router_port, bob._me.pub_port)
    await fake.advance_until(lambda: all(p.peer_id in bob._peers for n, p in peers.items()
                                         if n != "ghost"), what="bob knows the peers")
    room = await fake.run(bob.join("den"))
    assert room.host.name == "hal"
    # fred leaves, kim is banned: a new key that only bob and mallory get
    new_epoch, new_key = rules.new_room_key(os.urandom)
    core.remove_member(peers["fred"].peer_id, rules.LEFT)
    core.remove_member(peers["kim"].peer_id, rules.BANNED, "spam", new_epoch=new_epoch)
    peers["mallory"].key, peers["mallory"].epoch = new_key, new_epoch
    hal.key, hal.epoch = new_key, new_epoch
    hal.send(bob.peer_id, KeyUpdate(room_id, new_epoch,
                                    rules.seal_key(hal.identity, bob.peer_id, new_key)))
    hal.send(bob.peer_id, StatePush(room_id, core.blob))
    jr = bob._rooms[room_id]
    await fake.advance_until(lambda: jr.state.version == core.state.version
                             and new_epoch in jr.keys, what="bob has the state and the key")
    assert [m.name for m in room.members] == ["hal", "mallory", "bob"]
    await fake.advance(0.1)

    gate_log: list[tuple[bytes, WireMessage, bool]] = []
    gatekeeper = bob._inbound._gate
    admit = gatekeeper.admit

    def spy(peer: bytes, m: WireMessage, socket: str, room: Any = None,
            charged: bool = False) -> bool:
        ok = admit(peer, m, socket, room, charged)
        gate_log.append((peer, m, ok))
        return ok

    gatekeeper.admit = spy  # type: ignore[method-assign]
    return World(fake, bob, room_id, core, peers, gate_log)


@pytest.fixture
async def world(mesh: Mesh) -> AsyncIterator[World]:
    w = await make_world(mesh)
    try:
        yield w
    finally:
        for p in w.peers.values():
            await p.close()


# ---------------------------------------------------------------- the recipes

Make = Callable[[World, Peer], WireMessage]
Prepare = Callable[[World], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Recipe:
    make: Make  # the row's message, as ``sender`` would send it (``CTX``: from ``prepare``)
    right: str  # a sender the row admits
    # Senders the row refuses. "name/variant" (mallory/relay, mallory/claim): the gate
    # admits the sender, and the row's check after it (author, claim rules) refuses.
    wrong: tuple[str, ...] = ()
    prepare: Prepare | None = None  # run first: makes ``right`` the peer bob asked
    effect: Callable[[World, Peer], bool] | None = None  # what an accepted frame does


CTX: dict[str, Any] = {}


def card_of_nobody() -> PeerCard:
    return PeerCard(os.urandom(32), "nobody", ("mem",), 1, 2, 0)


def forged_state(w: World, sender: Peer) -> bytes:
    """A state of the room that makes ``sender`` host, signed by ``sender``."""
    s = w.core.state
    forged = replace(s, host=sender.peer_id, term=s.term + 1, version=s.version + 1,
                     change=rules.FAILOVER, change_peer=s.host, change_reason="vanished")
    return sender.sign(forged)


def state_by(w: World, sender: Peer) -> bytes:
    if sender is w.hal:
        return w.core.rename("den2").blob
    return forged_state(w, sender)


def renamed(w: World, _: Peer) -> bool:
    return w.bob._rooms[w.room_id].state.name == "den2"


def got(cls: type[WireMessage]) -> Callable[[World, Peer], bool]:
    return lambda w, sender: bool(sender.messages(cls))


def event(kind: type) -> Callable[[World, Peer], bool]:
    return lambda w, sender: any(isinstance(e, kind) and e.sender.peer_id == sender.peer_id
                                 for e in w.fake.mesh.recorders["bob"].events)


async def bob_pings_eve(w: World) -> dict[str, Any]:
    nonce = 7_000_001
    w.bob._wire.send_ping(w["eve"].peer_id, nonce)
    return {"nonce": nonce}


def bob_asks_eve(question: Callable[[World, int], WireMessage]) -> Prepare:
    async def prepare(w: World) -> dict[str, Any]:
        rid = w.bob._wire.next_request_id()
        task = asyncio.ensure_future(w.bob._wire.request_once(
            w["eve"].peer_id, question(w, rid), rid, 30.0))
        await w.fake.advance_until(lambda: bool(w["eve"].messages(type(question(w, rid)))),
                                   what="bob's request reached eve")
        return {"rid": rid, "task": task}
    return prepare


def join_request(w: World, rid: int) -> WireMessage:
    return JoinRequest(w.room_id, "bob", rid, b"", b"", b"")


def host_command(w: World, rid: int) -> WireMessage:
    return HostCommand(w.room_id, rid, "kick", ("x",))


def answered(w: World, _: Peer) -> bool:
    task = CTX["task"]
    return bool(task.done() and not task.cancelled() and task.exception() is None)


async def bob_asks_mallory_for_history(w: World) -> dict[str, Any]:
    mallory = w["mallory"]
    mallory.publish_sealed(w.room_id, mallory.epoch, mallory.key,
                           Chat(mallory.batch(w.room_id, 5, ["five"])))
    await w.fake.advance_until(lambda: any(
        env.sender == w.bob.peer_id for _, env in mallory.received
        if isinstance(env.message, HistoryRequest)), what="bob asks mallory for 1..4")
    return {}


def history_reply(w: World, sender: Peer) -> WireMessage:
    return HistoryReply(w.room_id, (sender.batch(w.room_id, 1, ["one", "two", "three",
                                                                 "four"]),), ())


def has_lines(*texts: str) -> Callable[[World, Peer], bool]:
    return lambda w, _: set(texts) <= {m.text for m in w.bob._chat.history(w.room_id, "")}


TID = bytes(range(16))


async def eve_offers_a_file(w: World) -> dict[str, Any]:
    eve = w["eve"]
    eve.send(w.bob.peer_id, FileOffer(TID, "f", (FileItem("f", 4),), 4096))
    await w.fake.advance_until(lambda: TID in w.bob._files._jobs, what="the offer")
    await w.fake.run(w.bob.accept_file(None))
    await w.fake.advance_until(lambda: bool(eve.messages(FileGet) or
                                            eve.messages(FileSumRequest)), what="bob pulls")
    return {}


def sealed_heads(w: World, sender: Peer) -> WireMessage:
    """A room frame from ``sender``, sealed with the newest key it holds (eve: a guess)."""
    key = sender.key if sender.name in ("mallory", "fred", "hal") else os.urandom(32)
    epoch = sender.epoch
    return sender.sealed(w.room_id, epoch, key, Heads((), 1, 1))


def heads(w: World, sender: Peer) -> WireMessage:
    s = w.bob._rooms[w.room_id].state
    return Heads((), s.term, s.version)


def chat(w: World, sender: Peer) -> WireMessage:
    if CTX.get("relay"):
        # a member relays hal's line as live chat: the author is not the sender
        return Chat(sender.batch(w.room_id, 1, ["relayed"], author=w.hal.identity))
    return Chat(sender.batch(w.room_id, 1, ["live line"]))


def key_update(w: World, sender: Peer) -> WireMessage:
    return KeyUpdate(w.room_id, 4242, rules.seal_key(sender.identity, w.bob.peer_id,
                                                     b"k" * 32))


NONMEMBERS = ("eve", "fred", "kim")

RECIPES: dict[type[WireMessage], Recipe] = {
    Heartbeat: Recipe(lambda w, s: Heartbeat(s.card(), 1.5, "#123456", (), ()), "eve"),
    Bye: Recipe(lambda w, s: Bye("quit"), "eve"),
    Broadcast: Recipe(lambda w, s: Broadcast("hello all"), "eve",
                      effect=lambda w, s: any(isinstance(e, BroadcastReceived)
                                              for e in w.fake.mesh.recorders["bob"].events)),
    Hello: Recipe(lambda w, s: Hello(s.card(), 0.0, ""), "ghost",
                  effect=lambda w, s: s.peer_id in w.bob._peers),
    Peers: Recipe(lambda w, s: Peers((card_of_nobody(),)), "eve", wrong=("ghost",)),
    Ping: Recipe(lambda w, s: Ping(99), "eve", effect=got(Pong)),
    Look: Recipe(lambda w, s: Look(), "ghost", effect=got(Hello)),
    Pong: Recipe(lambda w, s: Pong(CTX["nonce"]), "eve", wrong=("mallory", "ghost"),
                 prepare=bob_pings_eve),
    Private: Recipe(lambda w, s: Private("psst", (w.bob.peer_id,)), "eve",
                    effect=event(Message)),
    JoinRequest: Recipe(lambda w, s: JoinRequest(w.room_id, s.name, 5, b"", b"", b""), "eve",
                        effect=got(JoinRefusal)),
    JoinChallenge: Recipe(
        lambda w, s: JoinChallenge(w.room_id, CTX["rid"], b"s" * 16, b"n" * 24, 2, 8192),
        "eve", wrong=("mallory", "hal"), prepare=bob_asks_eve(join_request), effect=answered),
    JoinAccept: Recipe(
        lambda w, s: JoinAccept(w.room_id, CTX["rid"], b"x", b"y", 1, (), ()),
        "eve", wrong=("mallory", "hal"), prepare=bob_asks_eve(join_request), effect=answered),
    JoinRefusal: Recipe(
        lambda w, s: JoinRefusal(w.room_id, CTX["rid"], "locked", ""),
        "eve", wrong=("mallory", "hal"), prepare=bob_asks_eve(join_request), effect=answered),
    Leave: Recipe(lambda w, s: Leave(w.room_id, "left"), "mallory", wrong=NONMEMBERS),
    HostCommand: Recipe(lambda w, s: HostCommand(w.room_id, 3, "kick", ("hal",)), "mallory",
                        wrong=NONMEMBERS, effect=got(CommandResult)),
    CommandResult: Recipe(
        lambda w, s: CommandResult(w.room_id, CTX["rid"], True, "", ""),
        "eve", wrong=("mallory", "hal"), prepare=bob_asks_eve(host_command), effect=answered),
    KeyUpdate: Recipe(key_update, "hal", wrong=("mallory", "eve", "fred"),
                      effect=lambda w, s: 4242 in w.bob._rooms[w.room_id].keys),
    HistoryRequest: Recipe(lambda w, s: HistoryRequest(w.room_id, ()), "mallory",
                           wrong=NONMEMBERS),
    HistoryReply: Recipe(history_reply, "mallory", wrong=("eve", "fred", "hal"),
                         prepare=bob_asks_mallory_for_history,
                         effect=has_lines("one", "four")),
    StateRequest: Recipe(lambda w, s: StateRequest(w.room_id), "fred", wrong=("eve", "kim"),
                         effect=got(StatePush)),
    StatePush: Recipe(lambda w, s: StatePush(w.room_id, state_by(w, s)), "hal",
                      wrong=("mallory", "eve", "fred"), effect=renamed),
    FileOffer: Recipe(lambda w, s: FileOffer(os.urandom(16), "g", (FileItem("g", 1),), 4096),
                      "eve", effect=lambda w, s: len(w.bob._files._jobs) == 1),
    FileState: Recipe(lambda w, s: FileState(os.urandom(16), "declined", ""), "eve"),
    FileGet: Recipe(lambda w, s: FileGet(os.urandom(16), 0, 1), "eve"),
    FileChunk: Recipe(lambda w, s: FileChunk(TID, 0, b"abcd", hashlib.sha256(b"abcd")
                                             .digest()[:16]),
                      "eve", wrong=("mallory", "ghost"), prepare=eve_offers_a_file),
    FileSumRequest: Recipe(lambda w, s: FileSumRequest(os.urandom(16)), "eve"),
    FileSums: Recipe(lambda w, s: FileSums(TID, (b"\0" * 16,)), "eve",
                     wrong=("mallory", "ghost"), prepare=eve_offers_a_file),
    Sealed: Recipe(sealed_heads, "mallory", wrong=("eve", "fred")),
    Chat: Recipe(chat, "mallory", wrong=("eve", "fred", "mallory/relay"),
                 effect=has_lines("live line")),
    StateAnnounce: Recipe(lambda w, s: StateAnnounce(state_by(w, s)), "hal",
                          wrong=("eve", "fred", "mallory/claim"), effect=renamed),
    Heads: Recipe(heads, "mallory", wrong=("eve", "fred")),
}


def test_every_row_has_a_recipe() -> None:
    """A row added to the table without a recipe here fails this test (and vice versa)."""
    assert set(RECIPES) == set(TABLE)
    for cls, rule in TABLE.items():
        # a row that does not admit anyone must name a sender it refuses
        assert Role.ANYONE in rule.senders or RECIPES[cls].wrong, cls.__name__


# ---------------------------------------------------------------- delivery


WRONG_SOCKET = {"direct": "presence", "presence": "direct", "broadcast": "direct",
                "room": "direct", "inner": "direct"}


def deliver(w: World, sender: Peer, m: WireMessage, socket: str) -> None:
    match socket:
        case "direct":
            sender.send(w.bob.peer_id, m)
        case "presence":
            sender.publish(b"P", m)
        case "broadcast":
            sender.publish(b"B", m)
        case "room":
            sender.publish(b"R" + w.room_id, m)
        case "inner":
            key = sender.key if sender.name in ("mallory", "fred", "hal") else os.urandom(32)
            sender.publish_sealed(w.room_id, sender.epoch, key, m)


async def refused(w: World, sender: Peer, m: WireMessage, socket: str, what: str,
                  past_the_gate: bool = False) -> list[bool]:
    """``m`` from ``sender`` on ``socket`` is dropped, counted, and changes nothing
    (``past_the_gate``: the gate admits the sender; what is checked after it refuses)."""
    before, drops, events, since = w.snapshot(), w.drops(), w.events(), len(w.gate_log)
    deliver(w, sender, m, socket)
    await w.fake.advance_until(lambda: w.drops() > drops, limit_s=1.0,
                               what=f"{what}: dropped and counted")
    await w.fake.advance(0.05)
    verdicts = w.verdicts(sender, m, since)
    if past_the_gate:
        assert verdicts == [True], f"{what}: meant to pass the gate and fail the next check"
    else:
        assert True not in verdicts, f"{what}: the gate let it through"
    return verdicts
    assert w.snapshot() == before, f"{what}: something changed"
    new = w.fake.mesh.recorders["bob"].events[events:]
    assert not new, f"{what}: events {new}"


@pytest.mark.parametrize("cls", list(TABLE), ids=lambda c: c.__name__)
async def test_a_row_refuses_wrong_senders_and_admits_the_right_one(
        world: World, cls: type[WireMessage]) -> None:
    w, recipe, rule = world, RECIPES[cls], TABLE[cls]
    CTX.clear()
    if recipe.prepare is not None:
        CTX.update(await recipe.prepare(w))
    # on the wrong socket, from a member
    await refused(w, w["mallory"], recipe.make(w, w["mallory"]), WRONG_SOCKET[rule.socket],
                  f"{cls.__name__} on the wrong socket")
    for name in recipe.wrong:
        sender_name, _, variant = name.partition("/")
        CTX["relay"] = variant == "relay"
        sender = w[sender_name]
        verdicts = await refused(w, sender, recipe.make(w, sender), rule.socket,
                                 f"{cls.__name__} from {name}", past_the_gate=bool(variant))
        if rule.socket != "inner" and sender_name != "kim" and not variant:
            # it reached the gate and the gate said no (kim's frames stop at the transport:
            # the ban; an inner frame stops at its Sealed envelope)
            assert verdicts == [False], f"{cls.__name__} from {name}: not the gate's refusal"
    CTX["relay"] = False
    right = w[recipe.right]
    m, since = recipe.make(w, right), len(w.gate_log)
    deliver(w, right, m, rule.socket)
    await w.fake.advance_until(lambda: True in w.verdicts(right, m, since), limit_s=1.0,
                               what=f"{cls.__name__} from {recipe.right} admitted")
    if recipe.effect is not None:
        await w.fake.advance_until(lambda: recipe.effect(w, right),  # type: ignore[misc]
                                   limit_s=1.0, what=f"{cls.__name__}: its effect")
    task = CTX.get("task")
    if task is not None:
        task.cancel()
