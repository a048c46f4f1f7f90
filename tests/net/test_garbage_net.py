"""Garbage thrown at every port of a node (issue 2, "Bad input and faults").

A room host (alice) and a member (bob) run ``meshchat start --no-tui``; an attacker on a third
machine reads their ports (``/info``) and throws at each port — ZeroMQ ROUTER, PUB and the
card server — random bytes, truncated and oversize frames over plain TCP, and raw ZeroMQ
sockets without CURVE, with a wrong server key, claiming another peer's routing id, and with a
correct handshake carrying every kind of bad frame (not msgpack, truncated, nested too deep,
maps and ext types, unknown types, wrong bodies, spoofed senders, oversize).

Then: both nodes are alive, print no traceback, chat and ping as before, a newcomer joins,
and nothing forged was shown. The attacker ends its correct connection with one valid
private message and a ping: seeing those shows its bad frames really reached the node.
"""

from __future__ import annotations

from .conftest import LabFactory
from .helpers import (
    CLOCK,
    ROOM,
    Chat,
    all_trouble_free,
    chat_re,
    open_room,
)

ATTACKER = r'''
import os, random, socket, struct, sys, time
import msgpack, zmq
from meshchat.discovery.static import decode_card
from meshchat.identity import Identity, curve_public_of
from meshchat.protocol.codec import Codec, Envelope
from meshchat.protocol.messages import Ping, Pong, Private

mode = sys.argv[1]
random.seed(7)
targets = []
for spec in sys.argv[2:]:
    name, addr, router, pub, card = spec.split(":")
    targets.append((name, addr, int(router), int(pub), int(card)))

def log(*parts):
    print(*parts, flush=True)

def card_of(addr, port):
    with socket.create_connection((addr, port), timeout=5) as s:
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return decode_card(data[4:4 + struct.unpack(">I", data[:4])[0]])

def greeting(mechanism, as_server=0):
    return (b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + mechanism.ljust(20, b"\0")
            + bytes([as_server]) + bytes(31))

TCP_JUNK = [
    lambda: os.urandom(64 * 1024),
    lambda: b"",
    lambda: b"\xff" + bytes(5),                                  # a truncated greeting
    lambda: greeting(b"CURVE") + os.urandom(4096),               # greeting, then noise
    lambda: greeting(b"NULL") + os.urandom(300),
    lambda: greeting(b"PLAIN") + b"\x04\x26\x05HELLO" + os.urandom(64),
    lambda: greeting(b"CURVE")[:40],
    lambda: b"\x01\x00" + b"\xff" * 70000,                       # a huge "frame"
    lambda: struct.pack(">I", 0xFFFFFFFF) + os.urandom(128),     # a huge length prefix
    lambda: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    lambda: bytes(200000),
]

def tcp_attack(addr, port, idle):
    for make in TCP_JUNK:
        try:
            with socket.create_connection((addr, port), timeout=3) as s:
                s.settimeout(0.3)  # a server that reads nothing (the card port) fills up
                s.sendall(make())
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    for _ in range(40):   # a burst of connections that say nothing and go
        try:
            socket.create_connection((addr, port), timeout=3).close()
        except OSError:
            pass
    for _ in range(3):    # and a few that stay open, silent, until the end
        try:
            idle.append(socket.create_connection((addr, port), timeout=3))
        except OSError:
            pass

ctx = zmq.Context()
open_sockets = []

def zsock(kind, endpoint, server_key=None, keys=None, routing_id=None):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 100000)
    s.setsockopt(zmq.SNDTIMEO, 2000)
    if server_key is not None:
        public, secret = keys or zmq.curve_keypair()
        s.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        s.setsockopt(zmq.CURVE_PUBLICKEY, public)
        s.setsockopt(zmq.CURVE_SECRETKEY, secret)
    if routing_id is not None:
        s.setsockopt(zmq.ROUTING_ID, routing_id)
    s.connect(endpoint)
    open_sockets.append(s)
    return s

def send_all(s, frames):
    for frame in frames:
        try:
            if isinstance(frame, list):
                s.send_multipart(frame)
            else:
                s.send(frame)
        except zmq.ZMQError:
            pass

def bad_frames(me, victim, other):
    codec = Codec()
    def env(message, sender=me.peer_id, seq=1):
        return codec.encode(Envelope(sender, seq, time.time(), message))
    good = env(Ping(1))
    frames = [os.urandom(n) for n in (0, 1, 7, 100, 4096, 65536)]
    frames += [good[:-1], good[:3], good + b"\x00", b"\xc1", b"\x91" * 100000 + b"\xc0"]
    frames += [msgpack.packb(x) for x in (
        42, "hello", None, [], {"a": 1}, [1], [1, "pm"],
        [1, "no-such-type", me.peer_id, 1, 1.0, []],
        [2, "ping", me.peer_id, 1, 1.0, [1]],                       # wrong version
        [1, "ping", me.peer_id, 1, 1.0, ["not an int"]],
        [1, "ping", me.peer_id[:5], 1, 1.0, [1]],                  # short sender
        [1, "ping", me.peer_id, -1, 1.0, [1]],
        [1, "ping", me.peer_id, 1, float("nan"), [1]],
        [1, "pm", me.peer_id, 1, 1.0, ["x" * 5000, [victim]]],     # text too long
        [1, "pm", me.peer_id, 1, 1.0, ["hi", [victim] * 5000]],    # too many recipients
        [1, "hb", me.peer_id, 1, 1.0, [[me.peer_id, "x", [], 1, 2, 3], 1.0, "", [], []]],
        [1, "join", me.peer_id, 1, 1.0, [os.urandom(16), "x", 1, b"", b"", b""]],
        [1, "hreq", me.peer_id, 1, 1.0, [os.urandom(16), [[victim, 1, 2 ** 40]]]],
        [1, "sreq", me.peer_id, 1, 1.0, [os.urandom(16)]],
        [1, "leave", me.peer_id, 1, 1.0, [os.urandom(16)]],
    )]
    frames.append(msgpack.packb(msgpack.ExtType(5, b"abc")))
    frames.append(msgpack.packb([1, "ping", me.peer_id, 1, msgpack.Timestamp(1, 0), [1]]))
    frames.append([good, good, os.urandom(10)])                      # extra parts
    # Well formed, but the sender is someone else: must be dropped as spoofed.
    frames.append(env(Private("FORGED-spoofed-sender", (victim,)), sender=other))
    frames += [os.urandom(random.randrange(1, 2000)) for _ in range(2000)]  # a flood
    return frames

def impostor(name, addr, router, card_port, other_name, other):
    """A DEALER with a valid CURVE handshake under its own key that claims ``other``'s
    routing id, with a forged private message from ``other`` ."""
    victim = card_of(addr, card_port).peer_id
    s = zsock(zmq.DEALER, f"tcp://{addr}:{router}", curve_public_of(victim),
              routing_id=other)
    send_all(s, [Codec().encode(Envelope(other, 1, time.time(),
                                         Private("FORGED-routing-id", (victim,))))])
    log("claimed", other_name, "at", name)

me = Identity.generate()
idle = []
if mode == "impostor":
    (name, addr, router, pub, card_port), (other_name, other_addr, _, _, other_card) = targets
    impostor(name, addr, router, card_port, other_name, card_of(other_addr, other_card).peer_id)
    sys.stdin.read()
    for s in open_sockets:
        s.close(0)
    ctx.term()
    log("bye")
    sys.exit(0)
for name, addr, router, pub, card_port in targets:
    card = card_of(addr, card_port)
    victim = card.peer_id
    server_key = curve_public_of(victim)
    others = [t for t in targets if t[0] != name]
    other = card_of(others[0][1], others[0][4]).peer_id if others else os.urandom(32)
    for port in (router, pub, card_port):
        tcp_attack(addr, port, idle)
    log("tcp", name)
    for port in (router, pub, card_port):
        ep = f"tcp://{addr}:{port}"
        send_all(zsock(zmq.DEALER, ep), [b"plain, no CURVE"] * 10)         # NULL mechanism
        send_all(zsock(zmq.DEALER, ep, os.urandom(32)), [b"wrong key"] * 10)
        send_all(zsock(zmq.DEALER, ep, server_key), [b"unknown client"] * 10)
        sub = zsock(zmq.SUB, ep, os.urandom(32))
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub = zsock(zmq.SUB, ep)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
    router_ep = f"tcp://{addr}:{router}"
    # A routing id that is no peer's, with a frame claiming to come from the other peer.
    stranger = zsock(zmq.DEALER, router_ep, server_key, routing_id=os.urandom(32))
    send_all(stranger, [Codec().encode(Envelope(other, 1, time.time(),
                                                Private("FORGED-stranger", (victim,))))])
    # Correct handshake as ourselves, then everything bad; oversize on its own connection
    # (libzmq drops a connection that sends one).
    # (Another identity for it: two connections under one routing id would take replies
    # from each other.)
    other_me = Identity.generate()
    big = zsock(zmq.DEALER, router_ep, server_key, (other_me.curve_public, other_me.curve_secret),
                routing_id=other_me.peer_id)
    send_all(big, [os.urandom(300 * 1024), bytes(2 * 1024 * 1024)])
    keys = (me.curve_public, me.curve_secret)
    dealer = zsock(zmq.DEALER, router_ep, server_key, keys, routing_id=me.peer_id)
    send_all(dealer, bad_frames(me, victim, other))
    codec = Codec()
    dealer.send(codec.encode(Envelope(me.peer_id, 2, time.time(),
                                      Private(f"control-{name}-ok", (victim,)))))
    dealer.send(codec.encode(Envelope(me.peer_id, 3, time.time(), Ping(424242))))
    log("sent", name)
    poller = zmq.Poller()
    poller.register(dealer, zmq.POLLIN)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not poller.poll(200):
            continue
        reply = codec.decode(dealer.recv())
        if isinstance(reply.message, Pong) and reply.message.nonce == 424242:
            log("pong", name)
            break
    else:
        log("no pong", name)
log("done")
sys.stdin.read()  # keep the idle connections and sockets open until told to go
for s in idle:
    s.close()
for s in open_sockets:
    s.close(0)
ctx.term()
log("bye")
'''


def _target(chat: Chat) -> str:
    """``name:addr:router:pub:card`` of a node, from its own ``/info NAME``."""
    ports = chat.ports(chat.name)
    assert ports["card"] == chat.card_port
    return f"{chat.name}:{chat.host.addr}:{ports['router']}:{ports['pub']}:{ports['card']}"


def test_garbage_at_every_port_breaks_nothing(lab_factory: LabFactory) -> None:
    lab = lab_factory(4)
    alice, bob = open_room(lab.hosts[:2], ["alice", "bob"])
    alice.say("before the storm")
    bob.wait_line(chat_re("alice", "before the storm"))
    specs = [_target(alice), _target(bob)]

    attacker = lab.hosts[2].spawn_python(ATTACKER, "garbage", *specs)
    for chat in (alice, bob):
        attacker.expect(rf"^tcp {chat.name}$", timeout=30)
        attacker.expect(rf"^sent {chat.name}$", timeout=30)
        # The valid private message after all the garbage on the same connection: the node
        # read everything before it.
        chat.wait_line(rf"^{CLOCK} \[private\] <[^>]*→ you> control-{chat.name}-ok$", timeout=30)
        attacker.expect(rf"^pong {chat.name}$", timeout=20)
    attacker.expect(r"^done$", timeout=10)

    # Both alive and well, with the attacker's connections still open.
    for chat in (alice, bob):
        assert chat.proc.returncode is None
    bob.say("after the storm, from bob")
    alice.wait_line(chat_re("bob", "after the storm, from bob"))
    alice.say("after the storm, from alice")
    bob.wait_line(chat_re("alice", "after the storm, from alice"))
    bob.send("/ping alice")
    bob.expect(r"^\* ping alice: [\d.]+ ms$")
    alice.send("/msg bob private after the storm")
    bob.expect(rf"^{CLOCK} \[private\] <alice → you> private after the storm$")

    # A newcomer can still find and join the room.
    carol = Chat.start(lab.hosts[3], "carol")
    carol.send(f"/join {ROOM}")
    carol.expect(rf"^\* joined {ROOM} \(host alice; members: alice, bob, carol\)$")
    carol.say("hello after the storm")
    for chat in (alice, bob):
        chat.wait_line(chat_re("carol", "hello after the storm"))

    attacker.close_stdin()
    attacker.expect(r"^bye$", timeout=10)
    assert attacker.wait(10) == 0
    alice.say("after the attacker left")
    for chat in (bob, carol):
        chat.wait_line(chat_re("alice", "after the attacker left"))

    for chat in (alice, bob, carol):
        forged = [line for line in chat.lines if "FORGED" in line]
        assert not forged, (chat.name, forged)
    all_trouble_free(alice, bob, carol)
    assert not [line for line in attacker.err_lines if "Traceback" in line], attacker.err_lines


def test_a_stranger_claiming_a_members_routing_id_cuts_nothing(lab_factory: LabFactory) -> None:
    """A ROUTER routing id is only a claim: a stranger with a CURVE key of its own that
    connects to alice under bob's peer id must not cut bob's direct channel to alice (pings,
    private messages, leaving) nor get its forged frame shown."""
    lab = lab_factory(3)
    alice, bob = open_room(lab.hosts[:2], ["alice", "bob"])
    bob.send("/ping alice")
    bob.expect(r"^\* ping alice: [\d.]+ ms$")

    attacker = lab.hosts[2].spawn_python(ATTACKER, "impostor", _target(alice), _target(bob))
    attacker.expect(r"^claimed bob at alice$", timeout=20)
    alice.send("/ping bob")  # a round trip on alice's side: the claim has been seen
    alice.expect(r"^\* ping bob: [\d.]+ ms$")

    bob.send("/ping alice")
    bob.expect(r"^\* ping alice: [\d.]+ ms$")
    bob.send("/msg alice still me, the real bob")
    alice.expect(rf"^{CLOCK} \[private\] <bob → you> still me, the real bob$")
    bob.send("/leave")
    bob.expect(rf"^\* you left {ROOM}$")
    alice.expect(rf"^\* bob left {ROOM}$")

    attacker.close_stdin()
    attacker.expect(r"^bye$", timeout=10)
    assert not [line for line in alice.lines if "FORGED" in line]
    all_trouble_free(alice, bob)
