"""The transport seam: what the node needs from the network, independent of ZeroMQ.

A transport publishes to every peer it connected to with ``subscribe`` and takes publications
from those peers only; it sends direct messages to every peer it connected to, and receives
them from anyone (named by key). Every frame it hands up is tagged with the
peer it *authenticatedly* came from (CURVE + ZAP in the ZeroMQ implementation), never with a
claim read from the payload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..identity import Identity
from ..ratelimit import TokenBuckets


@dataclass(frozen=True, slots=True)
class Incoming:
    """One frame from a peer. ``kind`` 'pub' came on that peer's PUB (``topic`` set);
    'direct' came over the direct (ROUTER) channel. A direct frame from a CURVE key the transport
    cannot name yet has an empty ``peer_id`` and that key in ``curve_key``: the receiver must
    check that the envelope's sender owns it (``identity.curve_public_of``)."""

    kind: Literal["pub", "direct"]
    peer_id: bytes
    payload: bytes
    topic: bytes = b""
    peer_address: str = ""
    curve_key: bytes = b""  # set (and peer_id empty) for a direct frame from a key not yet known


@dataclass(slots=True)
class TransportStats:
    """Counters; dropped_* count frames refused at the edge."""

    received: int = 0
    sent: int = 0
    dropped_oversize: int = 0
    dropped_unauthenticated: int = 0
    handshake_failures: int = 0
    zap_denied: int = 0
    send_failures: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class FloodGuard:
    """A token bucket of frames per peer, checked before a frame is even decoded: one peer
    that floods costs the loop a counter per frame, not a decode. Honest peers stay far below
    it (chat goes out in batches; heartbeats are a few a second). At most ``max_peers``
    buckets; the least recently used goes first."""

    __slots__ = ("_buckets", "_burst", "_clock", "_rate")

    def __init__(self, rate_per_s: float, burst: int, max_peers: int,
                 clock: Callable[[], float]) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: TokenBuckets[bytes] = TokenBuckets(max_peers)

    def admit(self, key: bytes) -> bool:
        return self._buckets.take(key, self._rate, self._burst, self._clock())

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class LocalPorts:
    router_port: int
    pub_port: int


Receiver = Callable[[Incoming], Awaitable[None] | None]
PeerHandler = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class LinkEvents:
    """Where a transport reports trouble with the link to a peer (each optional):
    a handshake that failed because the peer does not hold its key (``on_handshake_failure``),
    one its ZAP refused because it denies our key (``on_refused``), a connection that closed
    or timed out (``on_disconnect``), and one that came back after that (``on_reconnect``).

    ``on_subscriber``: our publications reach a peer (again): a new connection or one back
    after a drop. What we published before it was up did not reach that peer, and
    PUB/SUB never tells it so: the node answers with its heads, so the peer can ask for what
    it missed. (Our link *to* a peer coming back says nothing about the peer's link to us:
    each side redials on its own clock, up to ``reconnect_ivl_max`` apart.)"""

    on_handshake_failure: PeerHandler | None = None
    on_refused: PeerHandler | None = None
    on_disconnect: PeerHandler | None = None
    on_reconnect: PeerHandler | None = None
    on_subscriber: PeerHandler | None = None


class Transport(Protocol):
    stats: TransportStats

    async def start(
        self, identity: Identity, bind_addresses: list[str], receiver: Receiver
    ) -> LocalPorts:
        """Bind (on every address in ``bind_addresses``; '*' for all) and start receiving.

        ``receiver`` is called for every authenticated incoming frame, in order per peer.
        """
        ...

    async def close(self, linger_s: float = 0.3) -> None:
        """Stop; queued outgoing frames get ``linger_s`` to leave. Idempotent."""
        ...

    def connect_peer(self, peer_id: bytes, address: str, router_port: int, pub_port: int,
                     *, subscribe: bool = True) -> None:
        """Open (or re-point) the direct link to a peer and, with ``subscribe``, the link our
        publications go to it by (its publications are taken from then on), pinning its CURVE
        key from its id.

        ``subscribe=False`` opens only the direct link (a peer not proven yet); a later call with
        ``subscribe=True`` to the same place adds the other. The twin id of a connected peer
        (``identity.canonical_id``) is refused: one CURVE key, one peer id at a time."""
        ...

    def disconnect_peer(self, peer_id: bytes) -> None:
        """Close the links to a peer (no error if unknown)."""
        ...

    def is_connected(self, peer_id: bytes) -> bool: ...

    def redial(self, peer_id: bytes) -> bool:
        """Dial a connected peer afresh if our direct link to it is not up now: someone waits
        for it (a join), so no backoff and no handshake that has hung. True if it redialled."""
        ...

    def refresh(self, peer_id: bytes) -> bool:
        """The peer is heard again after a silence that made us give it up (a cut, a cable):
        replace the connections to it that stayed up through the silence, which may sit in
        TCP's retransmission backoff for seconds after the heal. True if any was replaced."""
        ...

    def subscribe(self, topic: bytes) -> None:
        """Receive ``topic`` (prefix match) from every peer, present and future."""
        ...

    def unsubscribe(self, topic: bytes) -> None: ...

    def publish(self, topic: bytes, payload: bytes) -> None:
        """Send to every subscriber of ``topic``; never blocks (drops at the high-water mark)."""
        ...

    def send(self, peer_id: bytes, payload: bytes) -> bool:
        """Send directly to a peer, in order; False if there is no channel to it (never
        blocks). The channel may be a connection either side dialled (ZeroMQ: one per pair)."""
        ...

    def set_link_events(self, events: LinkEvents) -> None:
        """Report link trouble to ``events``; a handler given to the constructor stays."""
        ...

    def deny(self, peer_id: bytes) -> None:
        """Refuse this peer's CURVE key (so its twin too) at the handshake from now on, close
        our links to it and drop what it sends on live connections; a live subscription to
        our PUB cannot be cut (libzmq), which room-key rotation covers."""
        ...

    def allow(self, peer_id: bytes) -> None: ...
