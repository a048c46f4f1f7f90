"""Who may send what: the one authority table, enforced in one place. Pure.

Every frame the node takes has been authenticated by the transport (CURVE + ZAP: the peer at
the other end holds the key of the peer id it is attributed to) and decoded strictly by the
codec. What is left is *authority*: may this peer, in its relation to us and to the room the
message is about, send this type at all? The node works out the peer's ``Role`` set from its
own state and asks ``check``; a ``Refusal`` names the reason, which the node counts as
``dropped_<reason>``, and the frame changes nothing.

``TABLE`` below is the table; docs/protocol.md prints it for people, and
tests/unit/test_authority.py keeps the two identical. Rate limits ride on the same gate: each
type draws from a per-peer token bucket of its group (``rate_group``), sized by ``Limits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Flag, auto

from .config import Limits
from .protocol.messages import (
    Broadcast,
    Bye,
    Chat,
    CommandResult,
    FileChunk,
    FileGet,
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
    JoinAccept,
    JoinChallenge,
    JoinRefusal,
    JoinRequest,
    KeyUpdate,
    Leave,
    Look,
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
from .ratelimit import TokenBuckets

__all__ = ["TABLE", "Gate", "Refusal", "Role", "Rule", "check", "rate_group", "rule_for"]


class Role(Flag):
    """What a peer is to us, for one message: each bit is a fact the node checked."""

    NONE = 0
    ANYONE = auto()  # authenticated by the transport: every peer has this
    KNOWN = auto()  # we hold its card (it said hello, or discovery found it)
    MEMBER = auto()  # a member of the room's current state
    HOST = auto()  # the host of the room's current state
    FORMER = auto()  # was a member here and was never kicked or banned
    MERGING = auto()  # a peer a host of this room's lineage vouched for in a merge
    ASKED = auto()  # a request of ours that this message answers went to this peer


@dataclass(frozen=True, slots=True)
class Rule:
    socket: str  # "presence", "broadcast", "direct", "room" (sealed) or "inner" (in sealed)
    senders: Role  # any one of these roles suffices
    who: str  # the table's words


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a frame was dropped: counted as ``dropped_<reason>``."""

    reason: str


A, K, M, H = Role.ANYONE, Role.KNOWN, Role.MEMBER, Role.HOST

TABLE: dict[type[WireMessage], Rule] = {
    Heartbeat: Rule("presence", A, "anyone"),
    Bye: Rule("presence", A, "anyone"),
    Broadcast: Rule("broadcast", A, "anyone"),
    Hello: Rule("direct", A, "anyone"),
    Peers: Rule("direct", K, "a peer we know"),
    Look: Rule("direct", A, "anyone"),
    Ping: Rule("direct", A, "anyone"),
    Pong: Rule("direct", Role.ASKED, "the peer our ping went to"),
    Private: Rule("direct", A, "anyone"),
    JoinRequest: Rule("direct", A, "anyone"),
    JoinChallenge: Rule("direct", Role.ASKED, "the peer our join went to"),
    JoinAccept: Rule("direct", Role.ASKED, "the peer our join went to"),
    JoinRefusal: Rule("direct", Role.ASKED, "the peer our join went to"),
    Leave: Rule("direct", M, "a member"),
    HostCommand: Rule("direct", M, "a member"),
    CommandResult: Rule("direct", Role.ASKED, "the peer our command went to"),
    KeyUpdate: Rule("direct", H, "the host"),
    HistoryRequest: Rule("direct", M | Role.MERGING, "a member (or a merging peer)"),
    HistoryReply: Rule("direct", Role.ASKED, "the peer our history request went to"),
    StateRequest: Rule("direct", M | Role.FORMER, "a member or former member"),
    StatePush: Rule("direct", H | Role.ASKED,
                    "the host, or the peer our state request went to"),
    FileOffer: Rule("direct", A, "anyone"),
    FileState: Rule("direct", A, "anyone"),
    FileGet: Rule("direct", A, "anyone"),
    FileChunk: Rule("direct", Role.ASKED, "the peer our fget went to"),
    FileSumRequest: Rule("direct", A, "anyone"),
    FileSums: Rule("direct", Role.ASKED, "the peer our fsumq went to"),
    Sealed: Rule("room", M, "a member"),
    Chat: Rule("inner", M, "a member"),
    StateAnnounce: Rule("inner", H | M, "the host or a member (a claim)"),
    Heads: Rule("inner", M, "a member"),
}

_NOT_FROM = {
    Role.ASKED: "unsolicited",
    Role.HOST: "not_host",
    Role.MEMBER: "not_member",
    Role.KNOWN: "unknown_peer",
}


def rule_for(cls: type[WireMessage]) -> Rule | None:
    return TABLE.get(cls)


def check(message: WireMessage, socket: str, roles: Role) -> Refusal | None:
    """None if a peer with ``roles`` may send ``message`` on ``socket``; else why not."""
    rule = TABLE.get(type(message))
    if rule is None:
        return Refusal("unexpected")
    if rule.socket != socket:
        return Refusal("wrong_socket")
    if rule.senders & roles:
        return None
    for role, reason in _NOT_FROM.items():
        if role in rule.senders:
            return Refusal(reason)
    return Refusal("not_allowed")


# ---------------------------------------------------------------- rate limits

ASKED_GROUP = "asked"  # answers to our own open requests: no bucket (``Gate.take``)

_GROUPS: dict[type[WireMessage], str] = {
    Heartbeat: "presence", Bye: "presence", Broadcast: "broadcast",
    Hello: "introduction", Peers: "introduction", Look: "introduction",
    # A pong is let in only as the answer to a ping of ours still open (the table's ASKED),
    # so our own pinging bounds it: it draws on no budget ("asked"). On "direct" (500/s), a
    # /ping run back to back lost one pong in about 2,000, each a 3 s timeout.
    Ping: "ping", Pong: ASKED_GROUP, Private: "private", JoinRequest: "join",
    HistoryRequest: "history", StateRequest: "state",
    Sealed: "room",
    FileOffer: "file_offer",
    FileState: "file", FileGet: "file", FileChunk: "file", FileSumRequest: "file",
    FileSums: "file",
}


def rate_group(cls: type[WireMessage]) -> str:
    """The bucket a message type draws from (everything not named shares "direct")."""
    return _GROUPS.get(cls, "direct")


def _rates(limits: Limits) -> dict[str, tuple[float, float]]:
    return {
        "presence": (limits.presence_per_s, limits.presence_burst),
        "broadcast": (limits.broadcasts_per_s, limits.broadcasts_burst),
        "introduction": (limits.introductions_per_s, limits.introductions_burst),
        "ping": (limits.pings_per_s, limits.pings_burst),
        "private": (limits.private_per_s, limits.private_burst),
        "join": (limits.joins_per_s, limits.joins_burst),
        "history": (limits.history_requests_per_s, limits.history_requests_burst),
        "state": (limits.state_requests_per_s, limits.state_requests_burst),
        "room": (limits.room_frames_per_s, limits.room_frames_burst),
        "direct": (limits.direct_frames_per_s, limits.direct_frames_burst),
        "file_offer": (limits.file_offers_per_s, limits.file_offers_burst),
        "file": (limits.file_frames_per_s, limits.file_frames_burst),
    }


class Gate:
    """The authority table plus a token bucket per (peer, group): one call per frame.

    Buckets live in a table of at most ``Limits.max_rate_entries``; the least recently used
    goes first, so a flood of fresh keys cannot grow memory."""

    def __init__(self, limits: Limits) -> None:
        self._rates = _rates(limits)
        self._buckets: TokenBuckets[tuple[bytes, str]] = TokenBuckets(limits.max_rate_entries)

    def admit(self, peer: bytes, message: WireMessage, socket: str, roles: Role, now: float,
              charged: bool = False) -> Refusal | None:
        """The table's verdict, then the rate: ``charged`` when ``charge`` already drew the
        token before the frame was decoded; a payload inside a ``Sealed`` ("inner") rides on
        the token its envelope drew."""
        refusal = check(message, socket, roles)
        if refusal is not None:
            return refusal
        if not charged and socket != "inner" and not self.take(peer, rate_group(type(message)),
                                                               now):
            return Refusal("rate")
        return None

    def charge(self, peer: bytes, cls: type[WireMessage], now: float) -> bool:
        """Draw the token for a frame of ``cls`` before decoding it; False: over the rate."""
        return self.take(peer, rate_group(cls), now)

    def take(self, peer: bytes, group: str, now: float, cost: float = 1.0) -> bool:
        """Draw ``cost`` tokens from the peer's bucket for ``group``; False if empty. The
        "asked" group has no bucket: what only answers our own requests is bounded by them
        (and, like every frame, by the transport's per-peer ``FloodGuard``)."""
        if group == ASKED_GROUP:
            return True
        rate, burst = self._rates[group]
        return self._buckets.take((peer, group), rate, burst, now, cost)

    def __len__(self) -> int:
        return len(self._buckets)
