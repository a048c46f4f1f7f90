"""mDNS discovery, the card server and static peers, on loopback in this test's own namespace.

Run inside a private network namespace (``make test``, or as root)::

    unshare -n sh -c 'ip link set lo up && ip link set lo multicast on &&
        ip route add 224.0.0.0/4 dev lo && python -m pytest tests/net/test_discovery.py -q'

The ``loopback_multicast`` fixture makes sure of that setup itself (tests/conftest.py refuses to
run these tests outside an isolated namespace, so nothing here touches a real interface).

Each mDNS node binds its own loopback address (127.0.0.1, 127.0.0.2, ...): zeroconf answers a QU
query by unicast to the asker's address and port 5353, and with two nodes on one address the
kernel hands that datagram to either node's socket (SO_REUSEPORT), so the asker may miss it —
on a real LAN every host has its own address, which is what these tests mimic.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

import ifaddr
import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from meshchat.config import NODE_SERVICE_TYPE, PROTOCOL_VERSION, ROOM_SERVICE_TYPE, Limits
from meshchat.discovery.base import Discovery, DiscoveryHandlers, RoomAnnouncement
from meshchat.discovery.mdns import (
    IncompatibleVersion,
    MdnsDiscovery,
    node_instance_name,
    node_txt,
    parse_node,
    parse_room,
    room_instance_name,
    room_txt,
)
from meshchat.discovery.memory import MemoryDiscovery, MemoryDiscoveryHub
from meshchat.discovery.static import (
    MAX_CARD_BYTES,
    CardServer,
    CombinedDiscovery,
    StaticDiscovery,
    decode_card,
    encode_card,
    fetch_card,
    parse_peer_address,
)
from meshchat.errors import PeerNotFound, ProtocolError, Timeout
from meshchat.identity import Identity
from meshchat.protocol.messages import PeerCard

from ..conftest import ISOLATED

DEADLINE_S = 5.0
LATENCY_RUNS = 10
LATENCY_TARGET_S = 0.050


# ---------------------------------------------------------------- setup


def _only_loopback() -> bool:
    return [a.name for a in ifaddr.get_adapters()] == ["lo"]


@pytest.fixture(scope="module", autouse=True)
def loopback_multicast() -> None:
    """lo up, multicast on, 224.0.0.0/4 routed to it: only ever in our own namespace."""
    if not (ISOLATED and _only_loopback()):
        pytest.fail("needs a private network namespace with only `lo` (see module docstring)")
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "set", "lo", "multicast", "on"],
        ["ip", "route", "replace", "224.0.0.0/4", "dev", "lo"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(argv)}: {done.stderr.strip()}")


def card_for(identity: Identity, name: str, address: str, base_port: int) -> PeerCard:
    return PeerCard(identity.peer_id, name, (address,), base_port, base_port + 1, base_port + 2)


@dataclass
class Recorder:
    """DiscoveryHandlers that record every call with its time; waits have deadlines."""

    events: list[tuple[float, str, object]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def handlers(self) -> DiscoveryHandlers:
        return DiscoveryHandlers(
            on_peer=lambda c: self._add("peer", c),
            on_peer_removed=lambda pid: self._add("peer_removed", pid),
            on_room=lambda r: self._add("room", r),
            on_room_removed=lambda rid, host: self._add("room_removed", (rid, host)),
        )

    def _add(self, kind: str, value: object) -> None:
        self.events.append((time.perf_counter(), kind, value))
        self.changed.set()

    def of(self, kind: str) -> list[object]:
        return [value for _, k, value in self.events if k == kind]

    async def wait(
        self, kind: str, match: Callable[[object], bool], within_s: float = DEADLINE_S
    ) -> tuple[float, object]:
        deadline = time.monotonic() + within_s
        while True:
            for when, k, value in self.events:
                if k == kind and match(value):
                    return when, value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} event matching within {within_s} s: {self.events}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@dataclass
class MdnsNode:
    identity: Identity
    card: PeerCard
    discovery: MdnsDiscovery
    seen: Recorder

    async def start(self) -> MdnsNode:
        await self.discovery.start(self.card, self.seen.handlers())
        return self


def mdns_node(name: str, address: str, base_port: int = 7000) -> MdnsNode:
    identity = Identity.generate()
    return MdnsNode(
        identity,
        card_for(identity, name, address, base_port),
        MdnsDiscovery([address]),
        Recorder(),
    )


@pytest.fixture
async def nodes() -> AsyncIterator[list[MdnsNode]]:
    made: list[MdnsNode] = []
    yield made
    for node in made:
        await node.discovery.close()


def equals(expected: object) -> Callable[[object], bool]:
    return lambda value: value == expected


def is_peer(peer_id: bytes) -> Callable[[object], bool]:
    return lambda value: isinstance(value, PeerCard) and value.peer_id == peer_id


def lobby_of(host: PeerCard, **changes: object) -> RoomAnnouncement:
    room = RoomAnnouncement(b"\x01" * 16, "lobby", host, 1, False, False, 1)
    return replace(room, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------- records (no network)


def as_props(txt: dict[str, str]) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in txt.items()}


def test_node_record_round_trip() -> None:
    card = card_for(Identity.generate(), "zoë", "10.0.0.1", 4000)
    assert parse_node(as_props(node_txt(card, 3)), 4000, ["10.0.0.1"], Limits()) == card


def test_room_record_round_trip() -> None:
    host = card_for(Identity.generate(), "alice", "10.0.0.1", 4000)
    room = lobby_of(host, members=7, locked=True, has_password=True, term=12)
    assert parse_room(as_props(room_txt(room, 0)), 4000, ["10.0.0.1"], Limits()) == room


@pytest.mark.parametrize(
    "change",
    [
        {"id": "zz"},
        {"id": "00" * 32},  # not a usable key
        {"id": "ab" * 31},
        {"n": ""},
        {"n": "x" * 33},
        {"p": "-1"},
        {"p": "70000"},
        {"p": "0"},
        {"c": "1e3"},
        {"c": "٣"},  # a digit, but not ASCII
        {"n": None},
    ],
)
def test_malformed_node_records_are_refused(change: dict[str, str | None]) -> None:
    card = card_for(Identity.generate(), "alice", "10.0.0.1", 4000)
    props = as_props(node_txt(card, 0))
    for key, value in change.items():
        if value is None:
            del props[key.encode()]
        else:
            props[key.encode()] = value.encode()
    with pytest.raises(ValueError):
        parse_node(props, 4000, ["10.0.0.1"], Limits())


def test_bad_utf8_port_or_addresses_are_refused() -> None:
    card = card_for(Identity.generate(), "alice", "10.0.0.1", 4000)
    props = as_props(node_txt(card, 0))
    with pytest.raises(ValueError):
        parse_node(props, None, ["10.0.0.1"], Limits())
    with pytest.raises(ValueError):
        parse_node(props, 4000, [], Limits())
    with pytest.raises(ValueError):
        parse_node({**props, b"n": b"\xff\xfe"}, 4000, ["10.0.0.1"], Limits())


def test_other_protocol_versions_are_told_apart() -> None:
    card = card_for(Identity.generate(), "alice", "10.0.0.1", 4000)
    props = {**as_props(node_txt(card, 0)), b"v": str(PROTOCOL_VERSION + 1).encode()}
    with pytest.raises(IncompatibleVersion):
        parse_node(props, 4000, ["10.0.0.1"], Limits())


def test_instance_names_fit_a_label_and_carry_the_fingerprint() -> None:
    identity = Identity.generate()
    for name in ("alice", "a.b\\c\x00d", "ü" * 40, "   "):
        card = card_for(identity, name, "10.0.0.1", 4000)
        full = node_instance_name(card)
        label = full[: -len(NODE_SERVICE_TYPE) - 1]
        assert len(label.encode()) <= 63 and "." not in label
        assert label.endswith(f"[{identity.fingerprint}]")
        AsyncServiceInfo(NODE_SERVICE_TYPE, full)  # zeroconf accepts it
    host = card_for(identity, "alice", "10.0.0.1", 4000)
    other_host = replace(host, peer_id=Identity.generate().peer_id)
    names = {room_instance_name(lobby_of(h, name="x" * 48)) for h in (host, other_host)}
    assert len(names) == 2 and all(n.endswith(ROOM_SERVICE_TYPE) for n in names)


# ---------------------------------------------------------------- mDNS on loopback


async def test_nodes_find_each_other_and_not_themselves(nodes: list[MdnsNode]) -> None:
    a = await mdns_node("alice", "127.0.0.1").start()
    nodes.append(a)
    b = await mdns_node("bob", "127.0.0.2").start()
    nodes.append(b)
    _, seen_by_a = await a.seen.wait("peer", is_peer(b.card.peer_id))
    _, seen_by_b = await b.seen.wait("peer", is_peer(a.card.peer_id))
    assert seen_by_a == b.card
    assert seen_by_b == a.card
    assert all(c.peer_id != a.card.peer_id for c in a.seen.of("peer"))  # type: ignore[attr-defined]


async def test_rooms_are_announced_updated_and_withdrawn(nodes: list[MdnsNode]) -> None:
    a = await mdns_node("alice", "127.0.0.1").start()
    b = await mdns_node("bob", "127.0.0.2").start()
    nodes += [a, b]
    lobby = lobby_of(a.card)
    await a.discovery.announce_room(lobby)
    await b.seen.wait("room", equals(lobby))

    for members in range(2, 6):  # quick successive updates each arrive
        await a.discovery.announce_room(replace(lobby, members=members))
        await b.seen.wait("room", equals(replace(lobby, members=members)))
    handed = replace(lobby, members=5, locked=True, has_password=True, term=2)
    await a.discovery.announce_room(handed)
    await b.seen.wait("room", equals(handed))

    await a.discovery.withdraw_room(lobby.room_id)
    await b.seen.wait("room_removed", equals((lobby.room_id, a.card.peer_id)))
    assert a.seen.of("room") == []  # its own room is not reported back
    assert b.seen.of("peer_removed") == []


async def test_handoff_moves_the_room_announcement(nodes: list[MdnsNode]) -> None:
    a = await mdns_node("alice", "127.0.0.1").start()
    b = await mdns_node("bob", "127.0.0.2").start()
    c = await mdns_node("carol", "127.0.0.3").start()
    nodes += [a, b, c]
    lobby = lobby_of(a.card)
    await a.discovery.announce_room(lobby)
    await c.seen.wait("room", equals(lobby))
    moved = replace(lobby, host=b.card, term=2, members=2)
    await b.discovery.announce_room(moved)
    await a.discovery.withdraw_room(lobby.room_id)
    await c.seen.wait("room", equals(moved))
    await c.seen.wait("room_removed", equals((lobby.room_id, a.card.peer_id)))


async def test_rename_is_an_update_not_a_departure(nodes: list[MdnsNode]) -> None:
    a = await mdns_node("alice", "127.0.0.1").start()
    b = await mdns_node("bob", "127.0.0.2").start()
    nodes += [a, b]
    await b.seen.wait("peer", is_peer(a.card.peer_id))
    renamed = replace(a.card, name="alicia", pub_port=9999)
    await a.discovery.update_node(renamed)
    await b.seen.wait("peer", equals(renamed))
    moved_port = replace(renamed, card_port=4242)
    await a.discovery.update_node(moved_port)
    await b.seen.wait("peer", equals(moved_port))
    # the old name's goodbye went out before the last update: no removal was reported
    assert b.seen.of("peer_removed") == []


async def test_close_says_goodbye_for_node_and_rooms(nodes: list[MdnsNode]) -> None:
    a = await mdns_node("alice", "127.0.0.1").start()
    b = await mdns_node("bob", "127.0.0.2").start()
    nodes.append(b)
    lobby = lobby_of(a.card)
    await a.discovery.announce_room(lobby)
    await b.seen.wait("room", equals(lobby))
    started = time.monotonic()
    await a.discovery.close()
    await a.discovery.close()  # idempotent
    assert time.monotonic() - started < 2.0
    await b.seen.wait("room_removed", equals((lobby.room_id, a.card.peer_id)))
    await b.seen.wait("peer_removed", equals(a.card.peer_id))
    await a.discovery.announce_room(lobby)  # after close: ignored, no error
    await a.discovery.update_node(replace(a.card, name="x"))


async def test_malformed_records_are_counted_not_reported(nodes: list[MdnsNode]) -> None:
    b = await mdns_node("bob", "127.0.0.2").start()
    nodes.append(b)
    rogue = AsyncZeroconf(interfaces=["127.0.0.9"], ip_version=IPVersion.V4Only)
    try:
        bad = AsyncServiceInfo(
            NODE_SERVICE_TYPE,
            f"mallory [x].{NODE_SERVICE_TYPE}",
            port=1234,
            properties={"v": str(PROTOCOL_VERSION), "id": "nothex", "n": "m"},
            server="rogue.local.",
            parsed_addresses=["127.0.0.9"],
        )
        future = AsyncServiceInfo(
            ROOM_SERVICE_TYPE,
            f"future [y].{ROOM_SERVICE_TYPE}",
            port=1234,
            properties={"v": "999"},
            server="rogue.local.",
            parsed_addresses=["127.0.0.9"],
        )
        await rogue.async_register_service(bad, cooperating_responders=True)
        await rogue.async_register_service(future, cooperating_responders=True)
        deadline = time.monotonic() + DEADLINE_S
        while not (b.discovery.dropped["malformed"] and b.discovery.dropped["version"]):
            assert time.monotonic() < deadline, b.discovery.dropped
            await asyncio.sleep(0.005)
    finally:
        await rogue.async_close()
    assert b.seen.events == []


async def test_services_without_addresses_are_counted_unresolved() -> None:
    b = mdns_node("bob", "127.0.0.2")
    b.discovery = MdnsDiscovery(["127.0.0.2"], resolve_timeout_s=0.3)
    await b.start()
    rogue = AsyncZeroconf(interfaces=["127.0.0.9"], ip_version=IPVersion.V4Only)
    try:
        card = card_for(Identity.generate(), "ghost", "127.0.0.9", 4000)
        await rogue.async_register_service(
            AsyncServiceInfo(
                NODE_SERVICE_TYPE,
                node_instance_name(card),
                port=4000,
                properties=node_txt(card, 0),
                server="ghost.local.",
            ),
            cooperating_responders=True,
        )
        deadline = time.monotonic() + DEADLINE_S
        while not b.discovery.dropped["unresolved"]:
            assert time.monotonic() < deadline, b.discovery.dropped
            await asyncio.sleep(0.01)
    finally:
        await rogue.async_close()
        await b.discovery.close()
    assert b.seen.of("peer") == []


async def test_a_flood_of_names_fills_bounded_tables(nodes: list[MdnsNode]) -> None:
    """One rogue announces 12 valid nodes and 6 that need a lookup (no address records):
    bob tracks at most ``max_mdns_names`` names and asks for at most ``max_mdns_resolving``
    records at once; the rest are dropped and counted, and the node hears of 5 peers only."""
    b = mdns_node("bob", "127.0.0.2")
    b.discovery = MdnsDiscovery(["127.0.0.2"], resolve_timeout_s=5.0,
                                limits=Limits(max_mdns_names=5, max_mdns_resolving=2))
    nodes.append(await b.start())
    rogue = AsyncZeroconf(interfaces=["127.0.0.9"], ip_version=IPVersion.V4Only)
    try:
        for i in range(12):
            card = card_for(Identity.generate(), f"fake{i}", "127.0.0.9", 4000 + i)
            await rogue.async_register_service(
                AsyncServiceInfo(NODE_SERVICE_TYPE, node_instance_name(card), port=4000 + i,
                                 properties=node_txt(card, 0), server=f"fake{i}.local.",
                                 parsed_addresses=["127.0.0.9"]),
                cooperating_responders=True)
        for i in range(6):
            card = card_for(Identity.generate(), f"ghost{i}", "127.0.0.9", 5000 + i)
            await rogue.async_register_service(
                AsyncServiceInfo(NODE_SERVICE_TYPE, node_instance_name(card), port=5000 + i,
                                 properties=node_txt(card, 0), server=f"ghost{i}.local."),
                cooperating_responders=True)
        deadline = time.monotonic() + DEADLINE_S
        while not (b.discovery.dropped["too_many_names"] >= 7
                   and b.discovery.dropped["resolving_busy"] >= 1):
            assert time.monotonic() < deadline, b.discovery.dropped
            await asyncio.sleep(0.01)
        assert len(b.discovery._resolving) <= 2
    finally:
        await rogue.async_close()
    assert len({c.peer_id for c in b.seen.of("peer")}) == 5  # type: ignore[attr-defined]


async def test_handler_errors_do_not_break_discovery(nodes: list[MdnsNode]) -> None:
    a = await mdns_node("alice", "127.0.0.1").start()
    nodes.append(a)
    identity = Identity.generate()
    calls: list[PeerCard] = []

    def explode(card: PeerCard) -> None:
        calls.append(card)
        raise RuntimeError("node bug")

    b_card = card_for(identity, "bob", "127.0.0.2", 7100)
    b = MdnsDiscovery(["127.0.0.2"])
    seen = Recorder()
    handlers = replace(seen.handlers(), on_peer=explode)
    await b.start(b_card, handlers)
    try:
        await a.discovery.announce_room(lobby_of(a.card))
        await seen.wait("room", lambda r: True)  # still working after the failing on_peer
        assert [c.peer_id for c in calls] == [a.card.peer_id]
    finally:
        await b.close()


async def measure_discovery_latency(runs: int = LATENCY_RUNS) -> tuple[list[float], list[float]]:
    """Seconds from a node's ``start()`` until (running node hears it, it hears the running node).

    Alice runs; ``runs`` times a new node starts on another address, both directions are timed,
    and it closes again (alice hears the goodbye before the next run).
    """
    alice = await mdns_node("alice", "127.0.0.1").start()
    heard_by_alice: list[float] = []
    heard_alice: list[float] = []
    try:
        for i in range(runs):
            newcomer = mdns_node(f"n{i}", "127.0.0.2", 7100 + 10 * i)
            begun = time.perf_counter()
            await newcomer.start()
            try:
                when_a, _ = await alice.seen.wait("peer", is_peer(newcomer.card.peer_id))
                when_n, _ = await newcomer.seen.wait("peer", is_peer(alice.card.peer_id))
            finally:
                await newcomer.discovery.close()
            heard_by_alice.append(when_a - begun)
            heard_alice.append(when_n - begun)
            await alice.seen.wait("peer_removed", equals(newcomer.card.peer_id))
    finally:
        await alice.discovery.close()
    return heard_by_alice, heard_alice


async def test_discovery_latency() -> None:
    heard_by_running, heard_running = await measure_discovery_latency()

    def ms(values: list[float]) -> str:
        return ", ".join(f"{v * 1000:.1f}" for v in values)

    p50_in = statistics.median(heard_by_running)
    p50_out = statistics.median(heard_running)
    print(
        f"\ndiscovery latency from start(), {LATENCY_RUNS} runs:"
        f"\n  running node hears the newcomer: p50 {p50_in * 1000:.1f} ms"
        f" [{ms(heard_by_running)}]"
        f"\n  newcomer hears the running node: p50 {p50_out * 1000:.1f} ms"
        f" [{ms(heard_running)}]"
    )
    assert p50_in <= LATENCY_TARGET_S
    assert p50_out <= LATENCY_TARGET_S


# ---------------------------------------------------------------- the card server


@pytest.fixture
async def served() -> AsyncIterator[tuple[Identity, CardServer, list[PeerCard]]]:
    identity = Identity.generate()
    current = [card_for(identity, "alice", "127.0.0.1", 7000)]
    server = CardServer(identity, lambda: current[0], max_connections=8, send_timeout_s=0.5)
    port = await server.start(["127.0.0.1"])
    current[0] = replace(current[0], card_port=port)
    yield identity, server, current
    await server.close()


async def test_fetch_card_returns_the_current_signed_card(
    served: tuple[Identity, CardServer, list[PeerCard]],
) -> None:
    _, server, current = served
    assert await fetch_card("127.0.0.1", server.port, 1.0) == current[0]
    current[0] = replace(current[0], name="alicia")
    assert await fetch_card("127.0.0.1", server.port, 1.0) == current[0]


def test_card_frames_are_self_signed() -> None:
    identity = Identity.generate()
    card = card_for(identity, "alice", "127.0.0.1", 7000)
    frame = encode_card(identity, card)
    assert decode_card(frame[4:]) == card
    forged = frame.replace(b"alice", b"mallo")
    with pytest.raises(ProtocolError, match="signature"):
        decode_card(forged[4:])
    with pytest.raises(ValueError):
        encode_card(Identity.generate(), card)  # only one's own card
    for junk in (b"", b"\xc1", b"\x93\x01\x02\x03", b"\x98" + b"\xc0" * 8):
        with pytest.raises(ProtocolError):
            decode_card(junk)


async def raw_server(reply: Callable[[asyncio.StreamWriter], object]) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        result = reply(writer)
        if asyncio.iscoroutine(result):
            await result
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def test_fetch_card_failures_are_clear() -> None:
    with pytest.raises(PeerNotFound, match=r"cannot reach 127\.0\.0\.1:1"):
        await fetch_card("127.0.0.1", 1, 1.0)

    stalled = asyncio.Event()
    silent = await raw_server(lambda w: stalled.wait())
    garbage = await raw_server(lambda w: w.write(b"\x00\x00\x00\x05hello"))
    huge = await raw_server(lambda w: w.write((MAX_CARD_BYTES + 1).to_bytes(4, "big")))
    short = await raw_server(lambda w: w.write(b"\x00\x00\x01\x00abc"))
    identity = Identity.generate()
    forged_frame = encode_card(identity, card_for(identity, "alice", "127.0.0.1", 1))
    forged = await raw_server(lambda w: w.write(forged_frame.replace(b"alice", b"mallo")))
    try:
        started = time.monotonic()
        with pytest.raises(Timeout, match=r"within 0\.2 s"):
            await fetch_card("127.0.0.1", port_of(silent), 0.2)
        assert time.monotonic() - started < 1.0
        with pytest.raises(PeerNotFound, match="invalid card"):
            await fetch_card("127.0.0.1", port_of(garbage), 1.0)
        with pytest.raises(PeerNotFound, match="not a meshchat card server"):
            await fetch_card("127.0.0.1", port_of(huge), 1.0)
        with pytest.raises(PeerNotFound, match="closed the connection"):
            await fetch_card("127.0.0.1", port_of(short), 1.0)
        with pytest.raises(PeerNotFound, match="bad signature"):
            await fetch_card("127.0.0.1", port_of(forged), 1.0)
    finally:
        stalled.set()
        for server in (silent, garbage, huge, short, forged):
            server.close()


async def test_card_server_shrugs_off_garbage_and_slow_clients(
    served: tuple[Identity, CardServer, list[PeerCard]],
) -> None:
    _, server, current = served
    writers: list[asyncio.StreamWriter] = []
    try:
        for i in range(40):  # more than max_connections, all at once
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            if i % 2:
                writer.write(bytes(range(256)) * 64)  # garbage it never reads
            writers.append(writer)  # and nobody reads the card
        assert await fetch_card("127.0.0.1", server.port, 2.0) == current[0]
        deadline = time.monotonic() + DEADLINE_S
        while server.served + server.refused < 41:
            assert time.monotonic() < deadline, (server.served, server.refused)
            await asyncio.sleep(0.01)
    finally:
        for writer in writers:
            writer.transport.abort()
    assert await fetch_card("127.0.0.1", server.port, 1.0) == current[0]


async def test_card_server_binds_every_address_on_one_port() -> None:
    identity = Identity.generate()
    card = card_for(identity, "alice", "127.0.0.1", 7000)
    server = CardServer(identity, lambda: card)
    port = await server.start(["127.0.0.1", "127.0.0.2", "127.0.0.1"])
    try:
        for host in ("127.0.0.1", "127.0.0.2"):
            assert await fetch_card(host, port, 1.0) == card
        with pytest.raises(RuntimeError):
            await server.start(["127.0.0.1"])
    finally:
        await server.close()
        await server.close()
    with pytest.raises(PeerNotFound):
        await fetch_card("127.0.0.1", port, 1.0)
    wildcard = CardServer(identity, lambda: card)
    port = await wildcard.start(["*"])
    try:
        assert await fetch_card("127.0.0.3", port, 1.0) == card
    finally:
        await wildcard.close()


# ---------------------------------------------------------------- static peers


def test_peer_addresses_parse() -> None:
    assert parse_peer_address("10.0.0.5:7000") == ("10.0.0.5", 7000)
    assert parse_peer_address(" host.lan:1 ") == ("host.lan", 1)
    assert parse_peer_address("[::1]:80") == ("::1", 80)
    for bad in ("10.0.0.5", ":7000", "h:0", "h:70000", "h:x", "h:-1"):
        with pytest.raises(ValueError, match="--peer"):
            parse_peer_address(bad)


async def test_static_discovery_retries_until_the_peer_answers() -> None:
    peer_identity = Identity.generate()
    me = Identity.generate()
    # find a free port, then leave it closed for a while: the first fetches are refused
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = port_of(probe)
    probe.close()
    await probe.wait_closed()
    peer_card = PeerCard(peer_identity.peer_id, "bob", ("10.9.9.9", "127.0.0.1"), 1, 2, port)
    seen = Recorder()
    static = StaticDiscovery(
        [f"127.0.0.1:{port}"], me, timeout_s=0.5, retry_initial_s=0.02, retry_max_s=0.1
    )
    await static.start(card_for(me, "me", "127.0.0.1", 5000), seen.handlers())
    server = CardServer(peer_identity, lambda: peer_card)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while static.failures < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await server.start(["127.0.0.1"], port)
        _, card = await seen.wait("peer", is_peer(peer_identity.peer_id))
        # the address it answered on comes first
        assert card == replace(peer_card, addresses=("127.0.0.1", "10.9.9.9"))
    finally:
        await static.close()
        await static.close()
        await server.close()


async def test_static_discovery_skips_this_node() -> None:
    me = Identity.generate()
    my_card = card_for(me, "me", "127.0.0.1", 5000)
    server = CardServer(me, lambda: my_card)
    port = await server.start(["127.0.0.1"])
    seen = Recorder()
    static = StaticDiscovery([f"127.0.0.1:{port}"], me)
    await static.start(my_card, seen.handlers())
    try:
        deadline = time.monotonic() + DEADLINE_S
        while server.served < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        task = static._tasks[0]
        await asyncio.wait_for(task, DEADLINE_S)  # it stopped following itself
        assert seen.events == []
    finally:
        await static.close()
        await server.close()


class Broken:
    """A discovery whose every call fails."""

    async def start(self, me: PeerCard, handlers: DiscoveryHandlers) -> None:
        raise OSError("no multicast here")

    async def close(self) -> None:
        raise AssertionError("never started, never closed")

    async def announce_room(self, room: RoomAnnouncement) -> None:
        raise AssertionError

    async def withdraw_room(self, room_id: bytes) -> None:
        raise AssertionError

    async def update_node(self, me: PeerCard) -> None:
        raise AssertionError


async def test_combined_discovery_fans_out_and_survives_a_broken_part() -> None:
    hub = MemoryDiscoveryHub()
    identity, other = Identity.generate(), Identity.generate()
    mine = card_for(identity, "me", "mem", 1)
    theirs = card_for(other, "them", "mem", 2)
    seen_mine, seen_theirs = Recorder(), Recorder()
    parts: list[Discovery] = [Broken(), MemoryDiscovery(hub)]
    combined = CombinedDiscovery(*parts)
    await combined.start(mine, seen_mine.handlers())
    watcher = MemoryDiscovery(hub)
    await watcher.start(theirs, seen_theirs.handlers())
    await seen_mine.wait("peer", equals(theirs))
    lobby = lobby_of(mine)
    await combined.announce_room(lobby)
    await seen_theirs.wait("room", equals(lobby))
    await combined.update_node(replace(mine, name="me2"))
    await seen_theirs.wait("peer", equals(replace(mine, name="me2")))
    await combined.withdraw_room(lobby.room_id)
    await seen_theirs.wait("room_removed", equals((lobby.room_id, mine.peer_id)))
    await combined.close()
    await seen_theirs.wait("peer_removed", equals(mine.peer_id))
    await watcher.close()

    with pytest.raises(OSError, match="no multicast"):
        await CombinedDiscovery(Broken()).start(mine, seen_mine.handlers())
