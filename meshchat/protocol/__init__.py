"""The meshchat wire protocol: messages (``messages``) and their strict codec (``codec``).

Every frame holds one **envelope**, a msgpack array (details and field rules: docs/wire.md)::

    [version, type_tag, sender, seq, sent_at, body]     body = [field values in field order]

``version`` is ``PROTOCOL_VERSION``; ``sender`` the 32-byte peer id; ``seq`` counts per sender
and stream; ``sent_at`` is the sender's Unix time. Nested records are arrays, ``X | None`` is
nil or X. Extra trailing values are ignored (newer peers may add fields); missing ones drop the
frame, except fields added later with a default (``away``, ``auto``), which take it. PUB
frames are two ZeroMQ parts, ``[topic, envelope]``; direct frames go from the sender's dialer
(one ROUTER for all its peers; "DEALER" in the table below, as the wire is the same) to our
ROUTER, which sees ``[routing id, envelope]``; the routing id is libzmq's, the frame is
attributed by the CURVE key that authenticated its connection.

Topics: ``P`` presence, ``B`` broadcast, ``b"R" + room_id`` room traffic.

Messages
========

======  ===============  ==============  =============  =========================================
tag     class            direction       socket/topic   fields — purpose
======  ===============  ==============  =============  =========================================
hb      Heartbeat        node → all      PUB ``P``      card, started_at, color, hosted, known,
                                                        away — I am alive; rooms I host; peers I
                                                        know; my /away text (nil: here)
bye     Bye              node → all      PUB ``P``      reason — I am leaving the network
bc      Broadcast        node → all      PUB ``B``      text — a network-wide line (/broadcast)
hello   Hello            node → peer     DEALER→ROUTER  card, started_at, color, away — first
                                                        contact
peers   Peers            node → peer     DEALER→ROUTER  peers — introductions (mesh sharing)
look    Look             node → peer     DEALER→ROUTER  — what do you host? (a looking-only
                                                        node); answered with our Hello
ping    Ping             node → peer     DEALER→ROUTER  nonce — liveness probe, /ping
pong    Pong             peer → node     DEALER→ROUTER  nonce — the answer, nonce echoed
pm      Private          node → peer     DEALER→ROUTER  text, to, auto — /msg; ``to`` lists every
                                                        recipient of a group message; ``auto``:
                                                        an away node's automatic reply
join    JoinRequest      joiner → host   DEALER→ROUTER  room_id, name, request_id, challenge,
                                                        proof, merge_token — ask to join
jchal   JoinChallenge    host → joiner   DEALER→ROUTER  room_id, request_id, salt, nonce,
                                                        opslimit, memlimit — prove the password
jok     JoinAccept       host → joiner   DEALER→ROUTER  room_id, request_id, state, sealed_key,
                                                        key_epoch, history, heads — welcome:
                                                        signed state, room key, recent history
jno     JoinRefusal      host → joiner   DEALER→ROUTER  room_id, request_id, reason, detail
leave   Leave            member → host   DEALER→ROUTER  room_id — I leave the room
hcmd    HostCommand      member → host   DEALER→ROUTER  room_id, request_id, op, args — kick,
                                                        ban, lock, ... (the host checks rights)
hres    CommandResult    host → member   DEALER→ROUTER  room_id, request_id, ok, error, detail
key     KeyUpdate        host → member   DEALER→ROUTER  room_id, epoch, sealed_key — new room key
hreq    HistoryRequest   member → peer   DEALER→ROUTER  room_id, ranges — fill gaps
hrep    HistoryReply     peer → member   DEALER→ROUTER  room_id, records, void — signed batches
sreq    StateRequest     member → host   DEALER→ROUTER  room_id — send me the current state
spush   StatePush        host → member   DEALER→ROUTER  room_id, state — signed RoomState
foffer  FileOffer        sender → peer   DEALER→ROUTER  transfer_id, title, files, chunk_bytes
fstate  FileState        either side     DEALER→ROUTER  transfer_id, state, reason
fget    FileGet          receiver → snd  DEALER→ROUTER  transfer_id, first, count — pull chunks
fchunk  FileChunk        sender → rcv    DEALER→ROUTER  transfer_id, index, data, digest
fsumq   FileSumRequest   receiver → snd  DEALER→ROUTER  transfer_id — whole-file hashes, please
fsums   FileSums         sender → rcv    DEALER→ROUTER  transfer_id, sums — SHA-256 per file
sealed  Sealed           member → room   PUB ``R``+id   room_id, epoch, box — SecretBox with the
                                                        room key; plaintext = an envelope below
chat    Chat             member → room   in Sealed      batch — a signed ChatBatch
state   StateAnnounce    host → room     in Sealed      state — the signed RoomState
heads   Heads            member → room   in Sealed      heads, term, version — room heartbeat
======  ===============  ==============  =============  =========================================

Direct types are ``messages.DIRECT_TYPES``; pass the matching tuple (``PRESENCE_TYPES``,
``BROADCAST_TYPES``, ``ROOM_OUTER_TYPES``, ``ROOM_INNER_TYPES``) as ``allowed`` to
``Codec.decode`` so a message never arrives on a socket or topic it does not belong to.

Records (encoded with ``Codec.encode_record``; nested or inside signed blobs)
============================================================================

=================  ============================================================================
record             fields — role
=================  ============================================================================
PeerCard           peer_id, name, addresses, router_port, pub_port, card_port — how to reach
HostedRoom         room_id, name, members, locked, has_password, term — a heartbeat's room line
SeqRange           sender, first, last — one author's messages first..last
ChatBatch          room_id, sender, first, lines (sent_at, text), after — signed by ``sender``
ChatLine           sent_at, text
Member             peer_id, name, joined_at
Ban                peer_id, name, reason
PasswordVerifier   salt, opslimit, memlimit, public_key — Argon2id-derived public key
RoomState          room_id, name, host, term, version, members, bans, password, locked, closed,
                   key_epoch, created_at, change, change_peer, change_reason — signed by ``host``
=================  ============================================================================

A **signed blob** (``Codec.sign_record``) is the msgpack array ``[record_bytes, signature]``;
the Ed25519 signature covers ``b"meshchat-sig\\0" + class name + b"\\0" + record_bytes``.
"""

from .codec import Codec, Envelope, UnknownType
from .messages import (
    ALL_TYPES,
    BROADCAST_TYPES,
    DIRECT_TYPES,
    PRESENCE_TYPES,
    RECORD_TYPES,
    ROOM_INNER_TYPES,
    ROOM_OUTER_TYPES,
    Ban,
    Broadcast,
    Bye,
    Chat,
    ChatBatch,
    ChatLine,
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
    Member,
    PasswordVerifier,
    PeerCard,
    Peers,
    Ping,
    Pong,
    Private,
    RoomState,
    Sealed,
    SeqRange,
    StateAnnounce,
    StatePush,
    StateRequest,
    WireMessage,
)

__all__ = [
    "ALL_TYPES",
    "BROADCAST_TYPES",
    "DIRECT_TYPES",
    "PRESENCE_TYPES",
    "RECORD_TYPES",
    "ROOM_INNER_TYPES",
    "ROOM_OUTER_TYPES",
    "Ban",
    "Broadcast",
    "Bye",
    "Chat",
    "ChatBatch",
    "ChatLine",
    "Codec",
    "CommandResult",
    "Envelope",
    "FileChunk",
    "FileGet",
    "FileItem",
    "FileOffer",
    "FileState",
    "FileSumRequest",
    "FileSums",
    "Heads",
    "Heartbeat",
    "Hello",
    "HistoryReply",
    "HistoryRequest",
    "HostCommand",
    "HostedRoom",
    "JoinAccept",
    "JoinChallenge",
    "JoinRefusal",
    "JoinRequest",
    "KeyUpdate",
    "Leave",
    "Look",
    "Member",
    "PasswordVerifier",
    "PeerCard",
    "Peers",
    "Ping",
    "Pong",
    "Private",
    "RoomState",
    "Sealed",
    "SeqRange",
    "StateAnnounce",
    "StatePush",
    "StateRequest",
    "UnknownType",
    "WireMessage",
]
