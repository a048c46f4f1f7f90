"""Wire messages: one frozen dataclass per type. The table is in ``meshchat.protocol``'s docstring.

Field types are restricted to what the codec validates: ``int``, ``float``, ``bool``, ``str``,
``bytes``, ``X | None``, ``tuple[X, ...]`` and nested record dataclasses (``PeerCard``, ...).
A field added to a message later has a default and comes last: a frame from an older peer,
without it, decodes with the default (and an older peer ignores the extra trailing value).
Every message is carried in an envelope (see ``codec``) that adds protocol version, type tag,
sender peer id, per-stream sequence number and sender time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

# ---------------------------------------------------------------- nested records


@dataclass(frozen=True, slots=True)
class PeerCard:
    """How to reach a peer: what discovery announces and what peers introduce to each other."""

    peer_id: bytes
    name: str
    addresses: tuple[str, ...]
    router_port: int
    pub_port: int
    card_port: int


@dataclass(frozen=True, slots=True)
class HostedRoom:
    """A room this node hosts, as listed in its heartbeat (metadata only, no secrets)."""

    room_id: bytes
    name: str
    members: int
    locked: bool
    has_password: bool
    term: int


@dataclass(frozen=True, slots=True)
class SeqRange:
    """Messages ``first..last`` (inclusive) of one sender in one room."""

    sender: bytes
    first: int
    last: int


# ---------------------------------------------------------------- base


@dataclass(frozen=True, slots=True)
class WireMessage:
    """Base of all wire messages; ``TYPE`` is the tag on the wire."""

    TYPE: ClassVar[str] = ""


# ---------------------------------------------------------------- presence (PUB topic "P")


@dataclass(frozen=True, slots=True)
class Heartbeat(WireMessage):
    TYPE: ClassVar[str] = "hb"
    card: PeerCard
    started_at: float
    color: str
    hosted: tuple[HostedRoom, ...]
    known: tuple[PeerCard, ...]
    away: str | None = None  # /away TEXT (issue 11); None: here


@dataclass(frozen=True, slots=True)
class Bye(WireMessage):
    TYPE: ClassVar[str] = "bye"
    reason: str


@dataclass(frozen=True, slots=True)
class Broadcast(WireMessage):
    """A network-wide line (``/broadcast``): PUB topic "B"."""

    TYPE: ClassVar[str] = "bc"
    text: str


# ---------------------------------------------------------------- direct (dialer -> ROUTER)


@dataclass(frozen=True, slots=True)
class Hello(WireMessage):
    TYPE: ClassVar[str] = "hello"
    card: PeerCard
    started_at: float
    color: str
    away: str | None = None  # as in Heartbeat
    # The rooms the sender hosts, as in its heartbeat: a peer that just met a host learns its
    # rooms at once, not at the host's next presence refresh (which a large LAN stretches).
    hosted: tuple[HostedRoom, ...] = ()


@dataclass(frozen=True, slots=True)
class Peers(WireMessage):
    """Introductions: the peers the sender knows."""

    TYPE: ClassVar[str] = "peers"
    peers: tuple[PeerCard, ...]


@dataclass(frozen=True, slots=True)
class Look(WireMessage):
    """What do you host? Sent by a node that only looks (``meshchat rooms``): it announces
    nothing and no peer dials its SUB, so the answer comes back direct, as our Hello."""

    TYPE: ClassVar[str] = "look"


@dataclass(frozen=True, slots=True)
class Ping(WireMessage):
    TYPE: ClassVar[str] = "ping"
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong(WireMessage):
    TYPE: ClassVar[str] = "pong"
    nonce: int


@dataclass(frozen=True, slots=True)
class Private(WireMessage):
    """A private message; ``to`` names every recipient so a group message shows as one.
    ``auto``: an automatic reply (the away text), which is never answered automatically."""

    TYPE: ClassVar[str] = "pm"
    text: str
    to: tuple[bytes, ...]
    auto: bool = False


@dataclass(frozen=True, slots=True)
class JoinRequest(WireMessage):
    """Ask the host to join. ``proof`` answers ``challenge`` when the room has a password."""

    TYPE: ClassVar[str] = "join"
    room_id: bytes
    name: str
    request_id: int
    challenge: bytes
    proof: bytes
    merge_token: bytes


@dataclass(frozen=True, slots=True)
class JoinChallenge(WireMessage):
    """The room has a password: prove it (Argon2id with ``salt``, then sign ``nonce``)."""

    TYPE: ClassVar[str] = "jchal"
    room_id: bytes
    request_id: int
    salt: bytes
    nonce: bytes
    opslimit: int
    memlimit: int


@dataclass(frozen=True, slots=True)
class JoinAccept(WireMessage):
    TYPE: ClassVar[str] = "jok"
    room_id: bytes
    request_id: int
    state: bytes
    sealed_key: bytes
    key_epoch: int
    history: tuple[bytes, ...]
    heads: tuple[SeqRange, ...]


@dataclass(frozen=True, slots=True)
class JoinRefusal(WireMessage):
    TYPE: ClassVar[str] = "jno"
    room_id: bytes
    request_id: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Leave(WireMessage):
    """Member → host: I leave the room."""

    TYPE: ClassVar[str] = "leave"
    room_id: bytes
    reason: str  # 'left' or 'quit'


@dataclass(frozen=True, slots=True)
class HostCommand(WireMessage):
    """Member → host: a host-only operation (kick, ban, unban, lock, unlock, close, ...)."""

    TYPE: ClassVar[str] = "hcmd"
    room_id: bytes
    request_id: int
    op: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandResult(WireMessage):
    TYPE: ClassVar[str] = "hres"
    room_id: bytes
    request_id: int
    ok: bool
    error: str
    detail: str


@dataclass(frozen=True, slots=True)
class KeyUpdate(WireMessage):
    """Host → member: the room key of ``epoch``, sealed to the member with ``Box``."""

    TYPE: ClassVar[str] = "key"
    room_id: bytes
    epoch: int
    sealed_key: bytes


@dataclass(frozen=True, slots=True)
class HistoryRequest(WireMessage):
    TYPE: ClassVar[str] = "hreq"
    room_id: bytes
    ranges: tuple[SeqRange, ...]


@dataclass(frozen=True, slots=True)
class HistoryReply(WireMessage):
    """Signed chat batches (see ``ChatBatch``), each verifiable by its author's key; and,
    from the author only, ranges of its own numbers it never used (skipped after a crash)."""

    TYPE: ClassVar[str] = "hrep"
    room_id: bytes
    records: tuple[bytes, ...]
    void: tuple[SeqRange, ...]


@dataclass(frozen=True, slots=True)
class StateRequest(WireMessage):
    TYPE: ClassVar[str] = "sreq"
    room_id: bytes


@dataclass(frozen=True, slots=True)
class StatePush(WireMessage):
    """A signed room state sent directly (reply to ``StateRequest``, or to a removed member)."""

    TYPE: ClassVar[str] = "spush"
    room_id: bytes
    state: bytes
    # A signed ``StepDown`` of the sender, when it stopped hosting the room and stayed (a
    # merge after a partition, a handoff): what its members follow to the state's host.
    step_down: bytes = b""


# ---------------------------------------------------------------- files (direct, issue 7)


@dataclass(frozen=True, slots=True)
class FileItem:
    """One file of an offer: its path relative to what was sent (a label from the sender,
    cleaned by the receiver) and its size in bytes."""

    path: str
    size: int


@dataclass(frozen=True, slots=True)
class FileOffer(WireMessage):
    """Sender → receiver: may I send you this? ``files`` laid end to end in chunks."""

    TYPE: ClassVar[str] = "foffer"
    transfer_id: bytes
    title: str  # what to call it (a file's or a folder's name); not "name": longer
    files: tuple[FileItem, ...]
    chunk_bytes: int


@dataclass(frozen=True, slots=True)
class FileState(WireMessage):
    """Either side: the transfer is now ``state`` (accepted, declined, cancelled, done,
    failed), with ``reason``; "offered" answers an offer sent again that is still open."""

    TYPE: ClassVar[str] = "fstate"
    transfer_id: bytes
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileGet(WireMessage):
    """Receiver → sender: chunks ``first .. first + count - 1`` (the credit window)."""

    TYPE: ClassVar[str] = "fget"
    transfer_id: bytes
    first: int
    count: int


@dataclass(frozen=True, slots=True)
class FileChunk(WireMessage):
    """Sender → receiver: one chunk and its digest (``transfer.chunk_digest``)."""

    TYPE: ClassVar[str] = "fchunk"
    transfer_id: bytes
    index: int
    data: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class FileSumRequest(WireMessage):
    """Receiver → sender: every chunk is in; the whole-file hashes, please."""

    TYPE: ClassVar[str] = "fsumq"
    transfer_id: bytes


@dataclass(frozen=True, slots=True)
class FileSums(WireMessage):
    """Sender → receiver: the SHA-256 of each file of the offer, in order."""

    TYPE: ClassVar[str] = "fsums"
    transfer_id: bytes
    sums: tuple[bytes, ...]


# ---------------------------------------------------------------- room (PUB topic "R" + room id)


@dataclass(frozen=True, slots=True)
class Sealed(WireMessage):
    """A room payload encrypted with the room key of ``epoch`` (SecretBox).

    The plaintext is an encoded ``RoomPayload`` envelope from the same sender.
    """

    TYPE: ClassVar[str] = "sealed"
    room_id: bytes
    epoch: int
    box: bytes


@dataclass(frozen=True, slots=True)
class Chat(WireMessage):
    """Chat lines; ``batch`` is a signed ``ChatBatch`` so it can be relayed as history."""

    TYPE: ClassVar[str] = "chat"
    batch: bytes


@dataclass(frozen=True, slots=True)
class StateAnnounce(WireMessage):
    """The host's signed room state, published to the room."""

    TYPE: ClassVar[str] = "state"
    state: bytes


@dataclass(frozen=True, slots=True)
class Heads(WireMessage):
    """Room heartbeat: the highest contiguous sequence number the sender holds per author
    (``SeqRange.last``; ``first`` unused), its next own seq, and the (term, version) of the
    state it holds, so members notice lost messages and stale states."""

    TYPE: ClassVar[str] = "heads"
    heads: tuple[SeqRange, ...]
    term: int
    version: int


# ---------------------------------------------------------------- signed records


@dataclass(frozen=True, slots=True)
class ChatLine:
    sent_at: float
    text: str


@dataclass(frozen=True, slots=True)
class ChatBatch:
    """Consecutive chat lines of one author in one room, signed once by the author: line ``i``
    has the number ``first + i``. Interactive chat sends batches of one; a burst of lines said
    in one turn of the event loop goes out as one batch (one signature, one frame). Relayed
    history is whole batches, so what anybody said cannot be forged or altered by a relay.

    ``after``: what the author had been shown when it sent the batch, per other author the
    highest number (``SeqRange.last``; ``first`` unused) shown to it since its previous batch.
    A receiver shows the batch after those lines (``meshchat.causal``): a reply never shows
    above what it answers. Added later: an older peer's batch has none."""

    room_id: bytes
    sender: bytes
    first: int
    lines: tuple[ChatLine, ...]
    after: tuple[SeqRange, ...] = ()


@dataclass(frozen=True, slots=True)
class Member:
    peer_id: bytes
    name: str
    joined_at: float


@dataclass(frozen=True, slots=True)
class Ban:
    peer_id: bytes
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class PasswordVerifier:
    """Argon2id(password, salt) seeds an Ed25519 key; only its public half is kept."""

    salt: bytes
    opslimit: int
    memlimit: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class RoomState:
    """The authoritative room state, signed by ``host``. Newer = higher (term, version)."""

    room_id: bytes
    name: str
    host: bytes
    term: int
    version: int
    members: tuple[Member, ...]
    bans: tuple[Ban, ...]
    password: PasswordVerifier | None
    locked: bool
    closed: bool
    key_epoch: int
    created_at: float
    change: str
    change_peer: bytes
    change_reason: str


@dataclass(frozen=True, slots=True)
class StepDown:
    """``old_host``, host of ``room_id`` at ``term``, gave the room up to ``new_host`` at
    ``new_term`` and stayed (it merged into the other side of a healed partition, or handed
    off): signed by ``old_host``. Its members follow this, never a state that merely claims
    to win (issue 10)."""

    room_id: bytes
    old_host: bytes
    term: int
    new_host: bytes
    new_term: int


DIRECT_TYPES: tuple[type[WireMessage], ...] = (
    Hello, Peers, Look, Ping, Pong, Private, JoinRequest, JoinChallenge, JoinAccept, JoinRefusal,
    Leave, HostCommand, CommandResult, KeyUpdate, HistoryRequest, HistoryReply, StateRequest,
    StatePush, FileOffer, FileState, FileGet, FileChunk, FileSumRequest, FileSums,
)
PRESENCE_TYPES: tuple[type[WireMessage], ...] = (Heartbeat, Bye)
BROADCAST_TYPES: tuple[type[WireMessage], ...] = (Broadcast,)
ROOM_OUTER_TYPES: tuple[type[WireMessage], ...] = (Sealed,)
ROOM_INNER_TYPES: tuple[type[WireMessage], ...] = (Chat, StateAnnounce, Heads)
ALL_TYPES: tuple[type[WireMessage], ...] = (
    DIRECT_TYPES + PRESENCE_TYPES + BROADCAST_TYPES + ROOM_OUTER_TYPES + ROOM_INNER_TYPES
)
RECORD_TYPES: tuple[type, ...] = (
    PeerCard, HostedRoom, SeqRange, ChatLine, ChatBatch, Member, Ban, PasswordVerifier,
    RoomState, FileItem, StepDown,
)
