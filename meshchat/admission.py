"""Admission: who gets into a room, decided by a pure core. Sans-I/O.

The host's side is ``Admission.decide``: the node hands it a ``JoinRequest`` with what it
knows — the room's current signed state, the room's ``Lineage``, the requester's peer id and
address, ``now`` (monotonic) — and runs the ``Decision`` it gets back: send a JoinChallenge,
send a JoinRefusal, or admit. The rules, in order:

1. **Per address**: every JoinRequest from one address draws from a token bucket
   (``Limits.joins_per_address_*``), whatever key it comes with; the gate already limits
   each key. Refused as ``rate``.
2. The room must be here (``not_found``) and hosted by us (``moved``, naming the host).
3. **A merge token** (the other side's signed state, after a partition) lets a peer in without
   the password or the lock only if its *signer* is a peer this room's own signed lineage
   lists (ever a member or host here, never kicked or banned, not banned now), the token is of
   this room, was not signed for a state we host, lists the requester as a member, and the
   requester is neither banned nor was kicked. Any other token counts as none: rule 4 applies.
4. Bans, a closed room, the lock (a current member, or one dropped as vanished, is not new).
5. **The password**: a challenge (one pending per (room, peer), in a table of at most
   ``Limits.max_join_challenges``, the oldest evicted, each expiring after
   ``join_challenge_ttl_s``), then a proof; at most ``join_attempts_per_minute`` proofs per
   (room, peer).
6. Admit.

The joiner's side has two rules: ``challenge_refusal`` bounds the Argon2id cost a host may
dictate (``Limits.max_pwhash_*``: pwhash MODERATE, 256 MiB) before any hashing starts, and
``moved_target`` follows a "moved" answer only to a host a signed state of the room names.
``choose`` picks a listing for ``/join NAME``: a name two hosts announce is two choices, told
apart as ``NAME#<fingerprint prefix>``, never picked silently.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import NamedTuple

from nacl import pwhash

from . import room as rules
from .config import Limits
from .errors import ProtocolError
from .identity import PeerId, fingerprint_of, short_fingerprint
from .protocol.codec import Codec
from .protocol.messages import JoinChallenge, JoinRequest, RoomState
from .ratelimit import TokenBuckets

__all__ = [
    "Admission",
    "Admit",
    "Ambiguous",
    "Challenge",
    "Decision",
    "Lineage",
    "Offer",
    "Refuse",
    "challenge_refusal",
    "choose",
    "moved_detail",
    "moved_target",
]

FINGERPRINT_PREFIX_MIN = 4  # `/join lobby#3smw`: at least this many characters


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Lineage:
    """What this room's own signed states say about peers (the node keeps the sets)."""

    ever_members: AbstractSet[PeerId]  # every peer a state we took listed as member or host
    removed: AbstractSet[PeerId]  # kicked or banned at some point (a rejoin clears a kick)
    dropped_silent: AbstractSet[PeerId]  # removed as vanished: back, not new


@dataclass(frozen=True, slots=True)
class Admit:
    name: str
    full_history: bool  # no heads: the joiner fetches what it lacks (a rejoin or a merge)
    merged_from: RoomState | None = None  # the other side's host merges in: union its bans
    token_refused: str = ""  # a merge token came and was not taken: why


@dataclass(frozen=True, slots=True)
class Challenge:
    salt: bytes
    nonce: bytes
    opslimit: int
    memlimit: int
    token_refused: str = ""


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str
    detail: str = ""
    token_refused: str = ""


Decision = Admit | Challenge | Refuse


@dataclass(slots=True)
class _Pending:
    nonce: bytes
    salt: bytes
    issued_at: float


class Admission:
    """The host's join decisions and the bounded tables behind them (challenges, attempts)."""

    def __init__(self, limits: Limits, codec: Codec, me: PeerId,
                 random_bytes: Callable[[int], bytes]) -> None:
        self._limits = limits
        self._codec = codec
        self._me = me
        self._random_bytes = random_bytes
        self._challenges: OrderedDict[tuple[bytes, PeerId], _Pending] = OrderedDict()
        self._proofs: OrderedDict[tuple[bytes, PeerId], deque[float]] = OrderedDict()
        self._addresses: TokenBuckets[str] = TokenBuckets(limits.max_admission_entries)

    def decide(self, room: rules.SignedState | None, lineage: Lineage | None,
               req: JoinRequest, peer: PeerId, address: str, now: float) -> Decision:
        if not self._address_ok(address, now):
            return Refuse("rate", "too many join attempts from your address; wait a little")
        if room is None or lineage is None:
            return Refuse("not_found", "no such room here")
        state = room.state
        if state.host != self._me:
            return Refuse("moved", moved_detail(room, self._limits))
        token_refused = ""
        if req.merge_token:
            token_refused, other = self._merge_token(req.merge_token, state, lineage, peer)
            if other is not None:
                return Admit(_name(req, self._limits), full_history=True,
                             merged_from=other if other.host == peer else None)
        decision = self._normal(state, lineage, req, peer, now)
        if token_refused:
            match decision:
                case Admit():
                    decision = Admit(decision.name, decision.full_history,
                                     token_refused=token_refused)
                case Challenge():
                    decision = Challenge(decision.salt, decision.nonce, decision.opslimit,
                                         decision.memlimit, token_refused)
                case Refuse():
                    decision = Refuse(decision.reason, decision.detail, token_refused)
        return decision

    def _merge_token(self, blob: bytes, state: RoomState, lineage: Lineage, peer: PeerId
                     ) -> tuple[str, RoomState | None]:
        """("", the token's state) if the token vouches for ``peer``; else (why not, None)."""
        try:
            other = self._codec.open_signed(blob, RoomState, rules.signer_of)
        except ProtocolError:
            return "bad_token", None
        signer = rules.signer_of(other)
        if other.room_id != state.room_id:
            return "other_room", None
        if other.host == self._me:
            return "own_state", None  # our own old state: a replay, not the other side
        if not rules.is_member(other, peer):
            return "not_in_token", None
        if rules.is_banned(state, peer) or peer in lineage.removed:
            return "removed_joiner", None
        if signer not in lineage.ever_members:
            return "stranger_signer", None
        if signer in lineage.removed or rules.is_banned(state, signer):
            return "removed_signer", None
        return "", other

    def _normal(self, state: RoomState, lineage: Lineage, req: JoinRequest, peer: PeerId,
                now: float) -> Decision:
        if rules.is_banned(state, peer):
            return Refuse("banned", "you are banned from this room")
        if state.closed:
            return Refuse("closed", "the room is closed")
        back = rules.is_member(state, peer) or peer in lineage.dropped_silent
        if state.locked and not back:
            return Refuse("locked", "the room is locked")
        verifier = state.password
        if verifier is not None and not back:
            key = (state.room_id, peer)
            pending = self._pending(key, verifier.salt, now)
            if not req.proof or pending is None or pending.nonce != req.challenge:
                nonce = self._random_bytes(24)
                self._challenges[key] = _Pending(nonce, verifier.salt, now)
                self._challenges.move_to_end(key)
                while len(self._challenges) > self._limits.max_join_challenges:
                    self._challenges.popitem(last=False)
                return Challenge(verifier.salt, nonce, verifier.opslimit, verifier.memlimit)
            del self._challenges[key]
            if not self._proof_ok(key, now):
                return Refuse("rate", "too many attempts; wait a minute")
            if not rules.check_proof(verifier, state.room_id, peer, pending.nonce, req.proof):
                return Refuse("password", "wrong password")
        return Admit(_name(req, self._limits), full_history=peer in lineage.dropped_silent)

    def _pending(self, key: tuple[bytes, PeerId], salt: bytes, now: float) -> _Pending | None:
        pending = self._challenges.get(key)
        if pending is None:
            return None
        if now - pending.issued_at > self._limits.join_challenge_ttl_s or pending.salt != salt:
            del self._challenges[key]  # expired, or the password changed meanwhile
            return None
        return pending

    def _proof_ok(self, key: tuple[bytes, PeerId], now: float) -> bool:
        window = self._proofs.get(key)
        if window is None:
            window = self._proofs[key] = deque()
            while len(self._proofs) > self._limits.max_admission_entries:
                self._proofs.popitem(last=False)
        else:
            self._proofs.move_to_end(key)
        while window and now - window[0] > 60.0:
            window.popleft()
        if len(window) >= self._limits.join_attempts_per_minute:
            return False
        window.append(now)
        return True

    def _address_ok(self, address: str, now: float) -> bool:
        limits = self._limits
        return self._addresses.take(address, limits.joins_per_address_per_s,
                                    limits.joins_per_address_burst, now)

    @property
    def pending_challenges(self) -> int:
        return len(self._challenges)

    @property
    def tracked(self) -> int:
        """Entries in the attempt tables (per address and per (room, peer))."""
        return len(self._addresses) + len(self._proofs)


def _name(req: JoinRequest, limits: Limits) -> str:
    return req.name.strip()[: limits.max_name_chars] or "?"


# ---------------------------------------------------------------- the joiner's side


def challenge_refusal(challenge: JoinChallenge, limits: Limits) -> Refuse | None:
    """None if the Argon2id work a host asks of us is within bounds; else why not."""
    a = pwhash.argon2id
    if challenge.opslimit > limits.max_pwhash_opslimit or \
            challenge.memlimit > limits.max_pwhash_memlimit:
        return Refuse("cost", f"the host asks for a password hash of {challenge.memlimit >> 20}"
                              f" MiB x {challenge.opslimit}; at most "
                              f"{limits.max_pwhash_memlimit >> 20} MiB x "
                              f"{limits.max_pwhash_opslimit} is allowed")
    if challenge.opslimit < a.OPSLIMIT_MIN or challenge.memlimit < a.MEMLIMIT_MIN or \
            len(challenge.salt) != a.SALTBYTES:
        return Refuse("protocol", "the host sent password parameters Argon2id cannot use")
    return None


def moved_detail(room: rules.SignedState, limits: Limits) -> str:
    """A "moved" refusal's detail: the host's id, and the signed state naming it if it fits."""
    head = room.state.host.hex()
    blob = base64.b64encode(room.blob).decode("ascii")
    if len(head) + 1 + len(blob) <= limits.max_text_chars:
        return f"{head} {blob}"
    return head


def moved_target(detail: str, room_id: bytes, answered_by: PeerId, held: RoomState | None,
                 codec: Codec) -> PeerId | None:
    """The host a "moved" answer from ``answered_by`` may send us to, or None.

    Followed only to a host that a signed state of the room names: with a state of our own
    (``held``: a rejoin, a merge), the target must be its host or one of its members; else the
    answer must carry a state of this room, signed, whose host is the target and in which the
    answering peer is a member or the one who handed the room over."""
    head, _, rest = detail.partition(" ")
    if len(head) != 64:
        return None
    try:
        target = bytes.fromhex(head)
    except ValueError:
        return None
    if target == answered_by:
        return None
    if held is not None:
        if held.room_id == room_id and (held.host == target or rules.is_member(held, target)):
            return target
        return None
    try:
        blob = base64.b64decode(rest, validate=True)
        state = codec.open_signed(blob, RoomState, rules.signer_of)
    except (binascii.Error, ValueError, ProtocolError):
        return None
    if state.room_id != room_id or state.host != target:
        return None
    if rules.is_member(state, answered_by) or rules.signer_of(state) == answered_by:
        return target
    return None


# ---------------------------------------------------------------- /join NAME


class Offer(NamedTuple):
    """One listing of a room, as ``choose`` sees it."""

    name: str
    room_id: bytes
    host: PeerId
    term: int
    members: int


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """Several hosts announce the name. ``transient``: they announce the same room id — a
    handoff in flight, which settles once the old host stops listing it."""

    candidates: tuple[str, ...]
    transient: bool


def label(offer: Offer) -> str:
    return f"{offer.name}#{short_fingerprint(offer.host)}"


def choose(query: str, offers: Sequence[Offer]) -> int | Ambiguous | None:
    """Which listing ``/join query`` means: its index, ``Ambiguous``, or None (not listed).

    ``query`` is a room name, or a name, ``#`` and at least four characters of the host's
    fingerprint. Listings of one room id by one host are one choice; one host listing two
    rooms of that name is one choice too (its highest term)."""
    wanted = query.strip().casefold()
    hits = [i for i, o in enumerate(offers) if o.name.strip().casefold() == wanted]
    if not hits and "#" in wanted:
        name, _, prefix = wanted.rpartition("#")
        if len(prefix) >= FINGERPRINT_PREFIX_MIN:
            hits = [i for i, o in enumerate(offers)
                    if o.name.strip().casefold() == name.strip()
                    and fingerprint_of(o.host).startswith(prefix)]
    if not hits:
        return None
    by_host: dict[PeerId, int] = {}
    for i in hits:
        best = by_host.get(offers[i].host)
        if best is None or (offers[i].term, offers[i].members) > (offers[best].term,
                                                                  offers[best].members):
            by_host[offers[i].host] = i
    if len(by_host) == 1:
        return next(iter(by_host.values()))
    chosen = [offers[i] for i in by_host.values()]
    return Ambiguous(tuple(sorted(label(o) for o in chosen)),
                     transient=len({o.room_id for o in chosen}) == 1)
