"""The room state machine: pure rules for who hosts a room and what its state may become.

Sans-I/O: no sockets, no clock, no asyncio. Callers pass ``now`` and randomness in, and get
new signed states and decisions out. The node executes them.

Rules (the full argument is in docs/protocol.md):

=================  =============================================================================
input              accepted when
=================  =============================================================================
new state          signed by its ``host``; same room id; the term moves by at most
                   ``Limits.max_term_step`` (the version by ``max_version_step``); and either
                   the signer is the host of our current state and (term, version) grows, or
                   the term is higher and the signer was a member of our current state
                   (handoff target or elected claimer), or the term is equal, the signer is a
                   member and ranks before the current claimer in our member order (two claims
                   of one term: the earlier member wins, while the contest is open or once the
                   current claimer is silent too).
host-only op       only computed by the host itself (``NotHost`` otherwise); a member's request is
                   sent to the host, which refuses it if the requester is not the host.
election           the host is silent for ``host_timeout_s`` and does not answer a ping: the first
                   member in join order that is alive claims term + 1.
partition heal     two hosts of one room id: the one with the lower (term, -rank) steps down —
                   rank is the host's peer id order, so every node decides the same — and merges
                   into the other room: bans become a union, histories merge via gap filling.
                   A host steps down only for a state signed by a host of its room's lineage
                   (``hostwatch``); a stranger's claim changes nothing.
=================  =============================================================================
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from nacl import pwhash
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from .config import Limits
from .errors import NotHost, ProtocolError
from .identity import Identity, PeerId, curve_public_of, same_key, verify
from .protocol.codec import Codec
from .protocol.messages import Ban, Member, PasswordVerifier, RoomState, StepDown

RandomBytes = Callable[[int], bytes]

_LIMITS = Limits()

ROOM_ID_BYTES = 16
KEY_BYTES = SecretBox.KEY_SIZE
JOIN_PROOF_CONTEXT = b"meshchat-join-v1\0"

# Changes a state can record (``RoomState.change``).
CREATED = "created"
JOINED = "joined"
LEFT = "left"
VANISHED = "vanished"
KICKED = "kicked"
BANNED = "banned"
UNBANNED = "unbanned"
HANDOFF = "handoff"
FAILOVER = "failover"
LOCKED = "locked"
UNLOCKED = "unlocked"
CLOSED = "closed"
RENAMED_ROOM = "renamed"
PASSWORD = "password"
MEMBER_RENAMED = "member_renamed"
MERGED = "merged"
REKEY = "rekey"


# ---------------------------------------------------------------- passwords


def make_verifier(
    password: str,
    random_bytes: RandomBytes,
    opslimit: int = pwhash.argon2id.OPSLIMIT_INTERACTIVE,
    memlimit: int = pwhash.argon2id.MEMLIMIT_INTERACTIVE,
) -> PasswordVerifier:
    """Argon2id(password, fresh salt) seeds an Ed25519 key; only the public half is kept."""
    salt = random_bytes(pwhash.argon2id.SALTBYTES)
    key = _password_key(password, salt, opslimit, memlimit)
    return PasswordVerifier(salt, opslimit, memlimit, bytes(key.verify_key))


def _password_key(password: str, salt: bytes, opslimit: int, memlimit: int) -> SigningKey:
    seed = pwhash.argon2id.kdf(32, password.encode("utf-8"), salt, opslimit=opslimit,
                               memlimit=memlimit)
    return SigningKey(seed)


def _proof_message(room_id: bytes, joiner: PeerId, nonce: bytes) -> bytes:
    return JOIN_PROOF_CONTEXT + room_id + joiner + nonce


def password_proof(
    password: str, salt: bytes, opslimit: int, memlimit: int,
    room_id: bytes, joiner: PeerId, nonce: bytes,
) -> bytes:
    """The joiner's answer to a challenge: bound to room, joiner and the host's fresh nonce,
    so neither the password nor a replayable token crosses the wire. Slow (Argon2id)."""
    key = _password_key(password, salt, opslimit, memlimit)
    return key.sign(_proof_message(room_id, joiner, nonce)).signature


def check_proof(
    verifier: PasswordVerifier, room_id: bytes, joiner: PeerId, nonce: bytes, proof: bytes
) -> bool:
    return verify(verifier.public_key, _proof_message(room_id, joiner, nonce), proof)


# ---------------------------------------------------------------- room keys


def new_room_key(random_bytes: RandomBytes) -> tuple[int, bytes]:
    """A fresh (epoch, key). Epochs are random so two partitions never reuse one."""
    epoch = int.from_bytes(random_bytes(4), "big") | 1
    return epoch, random_bytes(KEY_BYTES)


def seal_key(me: Identity, member: PeerId, key: bytes) -> bytes:
    """The room key sealed to one member with Box (host's X25519 secret, member's public)."""
    box = Box(PrivateKey(me.curve_secret), PublicKey(curve_public_of(member)))
    return bytes(box.encrypt(key))


def unseal_key(me: Identity, host: PeerId, sealed: bytes) -> bytes:
    return _open_key(Box(PrivateKey(me.curve_secret), PublicKey(curve_public_of(host))), sealed)


def _open_key(box: Box, sealed: bytes) -> bytes:
    try:
        key = box.decrypt(sealed)
    except (CryptoError, ValueError) as exc:
        raise ProtocolError("room key does not open") from exc
    if len(key) != KEY_BYTES:
        raise ProtocolError("room key has the wrong size")
    return bytes(key)


class KeyBoxes:
    """``seal_key`` and ``unseal_key`` with each peer's Box kept: the X25519 agreement (and
    the Ed25519 → X25519 conversion) is done once per peer, so a host that rekeys a room of M
    seals M keys, not M key agreements. A failover's claimant seals to the whole room at once
    on a LAN that is busy with the same failover. At most ``size`` peers are kept, the least
    recently used going first; the same bytes as ``seal_key`` go on the wire."""

    def __init__(self, me: Identity, size: int) -> None:
        self._secret = PrivateKey(me.curve_secret)
        self._size = max(1, size)
        self._boxes: OrderedDict[PeerId, Box] = OrderedDict()

    def __len__(self) -> int:
        return len(self._boxes)

    def __contains__(self, peer: object) -> bool:
        return peer in self._boxes

    def _box(self, peer: PeerId) -> Box:
        box = self._boxes.get(peer)
        if box is not None:
            self._boxes.move_to_end(peer)
            return box
        box = Box(self._secret, PublicKey(curve_public_of(peer)))
        self._boxes[peer] = box
        while len(self._boxes) > self._size:
            self._boxes.popitem(last=False)
        return box

    def seal(self, member: PeerId, key: bytes) -> bytes:
        return bytes(self._box(member).encrypt(key))

    def unseal(self, host: PeerId, sealed: bytes) -> bytes:
        return _open_key(self._box(host), sealed)

    def warm(self, peers: Iterable[PeerId], at_most: int) -> int:
        """Make the boxes of up to ``at_most`` of ``peers`` not yet kept (ahead of a claim,
        a few at a time); how many it made. A key that is no curve point is skipped."""
        made = 0
        for peer in peers:
            if made >= at_most or len(self._boxes) >= self._size:
                break
            if peer in self._boxes:
                continue
            try:
                self._box(peer)
            except (CryptoError, ValueError, TypeError):
                continue
            made += 1
        return made


# ---------------------------------------------------------------- states


def member_ids(state: RoomState) -> list[PeerId]:
    return [m.peer_id for m in state.members]


def is_member(state: RoomState, peer: PeerId) -> bool:
    return any(m.peer_id == peer for m in state.members)


def find_member(state: RoomState, peer: PeerId) -> Member | None:
    for m in state.members:
        if m.peer_id == peer:
            return m
    return None


def is_banned(state: RoomState, peer: PeerId) -> bool:
    """True if the room bans ``peer``'s key: a ban covers the twin id too (same CURVE key)."""
    return any(same_key(b.peer_id, peer) for b in state.bans)


def newer(a: RoomState, b: RoomState) -> bool:
    """True if ``a`` is later than ``b`` by (term, version)."""
    return (a.term, a.version) > (b.term, b.version)


def rank(host: PeerId) -> bytes:
    """A host's rank among hosts of one term: the smaller peer id ranks higher."""
    return bytes(255 - b for b in host)


def host_priority(state: RoomState) -> tuple[int, bytes]:
    """Partition heal: the host with the higher priority keeps the room.
    Higher term wins; on equal terms the smaller host id wins (inverted bytes compare)."""
    return state.term, rank(state.host)


def outranks(new: RoomState, current: RoomState, max_term_step: int = _LIMITS.max_term_step
             ) -> bool:
    """Partition heal: a host holding ``current`` steps down for ``new`` only if ``new`` has a
    strictly higher (term, rank) and its term is within ``max_term_step`` of ours, so nobody
    can push the room's term towards the codec's maximum by way of a merge."""
    return (host_priority(new) > host_priority(current)
            and new.term - current.term <= max_term_step)


def signer_of(state: RoomState) -> PeerId:
    """Who must have signed ``state``: the host, except a handoff, which the old host signs."""
    if state.change == HANDOFF:
        return state.change_peer
    return state.host


def step_down(codec: Codec, me: Identity, old: RoomState, new: RoomState) -> bytes:
    """Our signed ``StepDown``: we hosted ``old`` and gave the room up to ``new``'s host."""
    return codec.sign_record(me, StepDown(old.room_id, me.peer_id, old.term, new.host,
                                          new.term))


def open_step_down(codec: Codec, blob: bytes) -> StepDown:
    """The ``StepDown`` in ``blob``, signed by its ``old_host``; ``ProtocolError`` if not."""
    return codec.open_signed(blob, StepDown, lambda r: r.old_host)


def follows_step_down(ours: RoomState, new: RoomState, record: StepDown | None) -> bool:
    """Whether a member holding ``ours`` follows ``new`` (another host's state) because its
    own host signed over to it: ``record`` (signature already checked) is by ``ours.host``,
    of this room, made at our host's term or later, and names ``new``'s host at ``new``'s
    term or earlier — or ``new`` is a later term of that room (the winner failed over
    since). A state that merely claims to win is never followed."""
    if record is None:
        return False
    return (record.old_host == ours.host and record.room_id == ours.room_id
            and record.room_id == new.room_id and record.term >= ours.term
            and (new.term > record.new_term
                 or (new.term == record.new_term and new.host == record.new_host)))


def accepts(current: RoomState | None, new: RoomState, host_silent: bool = True, *,
            contest_open: bool = False, max_term_step: int = _LIMITS.max_term_step,
            max_version_step: int = _LIMITS.max_version_step) -> bool:
    """Whether a member holding ``current`` takes ``new`` (already signature-checked against
    ``signer_of(new)``). ``host_silent``: this member has not heard the current host for a
    while; without it an election claim is refused, so a member cannot stage a takeover.
    ``contest_open``: the current host claimed the room so recently that an honest rival claim
    of the same term may still be on its way. No state moves the term by more than
    ``max_term_step`` or the version by more than ``max_version_step``: a term near the
    codec's maximum would end elections for good."""
    if current is None:
        return True
    if new.room_id != current.room_id:
        return False
    if (new.term - current.term > max_term_step
            or new.version - current.version > max_version_step):
        return False
    if new.host == current.host:
        return signer_of(new) == current.host and newer(new, current)
    if not is_member(current, new.host):
        return False
    if new.change == HANDOFF:
        return new.change_peer == current.host and new.term > current.term
    if (new.term == current.term and new.change == FAILOVER and current.change == FAILOVER
            and new.change_peer == current.change_peer):
        # Two claims for the same vanished host: the earlier member in join order wins, but
        # only while the contest is open or once the current claimer is silent too. Later, a
        # member's "same-term claim" is a takeover of a live host.
        order = member_ids(current)
        return ((host_silent or contest_open) and current.host in order
                and order.index(new.host) < order.index(current.host))
    # Any other change of host is an election: only once this member hears the host no more.
    return host_silent and new.term > current.term


def successor(state: RoomState, alive: Callable[[PeerId], bool], exclude: Iterable[PeerId] = ()
              ) -> PeerId | None:
    """The first live member in join order other than the host: who claims a vanished host's
    room (and who a leaving host hands off to)."""
    skip = {state.host, *exclude}
    for m in state.members:
        if m.peer_id not in skip and alive(m.peer_id):
            return m.peer_id
    return None


@dataclass(frozen=True, slots=True)
class SignedState:
    """A state with the exact signed bytes that carry it."""

    state: RoomState
    blob: bytes


class RoomCore:
    """One room as one node holds it: the latest accepted state and the host-side rules.

    Host-only operations raise ``NotHost`` unless this node hosts the room; each returns the new
    signed state (the node publishes it and acts on its ``change``).
    """

    def __init__(self, me: Identity, codec: Codec, current: SignedState) -> None:
        self.me = me
        self.codec = codec
        self.current = current

    # ------------------------------------------------------------ construction

    @classmethod
    def create(
        cls, me: Identity, codec: Codec, name: str, my_name: str, now: float,
        random_bytes: RandomBytes, verifier: PasswordVerifier | None = None,
    ) -> tuple[RoomCore, int, bytes]:
        """A new room hosted by ``me``; returns the core and the first (epoch, key)."""
        epoch, key = new_room_key(random_bytes)
        state = RoomState(
            room_id=random_bytes(ROOM_ID_BYTES), name=name, host=me.peer_id, term=1, version=1,
            members=(Member(me.peer_id, my_name, now),), bans=(), password=verifier,
            locked=False, closed=False, key_epoch=epoch, created_at=now,
            change=CREATED, change_peer=me.peer_id, change_reason="",
        )
        core = cls(me, codec, SignedState(state, codec.sign_record(me, state)))
        return core, epoch, key

    def open_state(self, blob: bytes) -> RoomState:
        """Decode and signature-check a state blob (ProtocolError if bad)."""
        return self.codec.open_signed(blob, RoomState, signer_of)

    def offer(self, blob: bytes, host_silent: bool = True, *, contest_open: bool = False
              ) -> RoomState | None:
        """Take a state from the network if the rules accept it; the previous state if taken."""
        state = self.open_state(blob)
        if state.room_id != self.state.room_id or not accepts(
                self.state, state, host_silent, contest_open=contest_open):
            return None
        return self.adopt(SignedState(state, blob))

    def adopt(self, signed: SignedState) -> RoomState:
        """Make a state already judged acceptable the current one; the previous state."""
        previous = self.state
        self.current = signed
        return previous

    # ------------------------------------------------------------ views

    @property
    def state(self) -> RoomState:
        return self.current.state

    @property
    def blob(self) -> bytes:
        return self.current.blob

    @property
    def is_host(self) -> bool:
        return self.state.host == self.me.peer_id

    # ------------------------------------------------------------ host side

    def _require_host(self, op: str) -> None:
        if not self.is_host:
            raise NotHost(f"only the host can {op}")

    def _commit(self, **changes: object) -> SignedState:
        state = replace(self.state, version=self.state.version + 1, **changes)  # type: ignore[arg-type]
        self.current = SignedState(state, self.codec.sign_record(self.me, state))
        return self.current

    def add_member(self, peer: PeerId, name: str, now: float) -> SignedState:
        self._require_host("admit members")
        if is_member(self.state, peer):
            members = tuple(replace(m, name=name) if m.peer_id == peer else m
                            for m in self.state.members)
        else:
            members = (*self.state.members, Member(peer, name, now))
        return self._commit(members=members, change=JOINED, change_peer=peer, change_reason="")

    def remove_member(self, peer: PeerId, change: str, reason: str = "",
                      new_epoch: int | None = None) -> SignedState:
        """Leave, vanish, kick or ban (``change``); ban also records the ban."""
        self._require_host("kick" if change == KICKED else "ban" if change == BANNED else
                           "remove members")
        members = tuple(m for m in self.state.members if m.peer_id != peer)
        bans = self.state.bans
        if change == BANNED and not is_banned(self.state, peer):
            old = find_member(self.state, peer)
            bans = (*bans, Ban(peer, old.name if old else "", reason))
        epoch = self.state.key_epoch if new_epoch is None else new_epoch
        return self._commit(members=members, bans=bans, key_epoch=epoch, change=change,
                            change_peer=peer, change_reason=reason)

    def ban_absent(self, peer: PeerId, name: str, reason: str) -> SignedState:
        """Ban a peer that is not (or no longer) a member."""
        self._require_host("ban")
        bans = self.state.bans
        if not is_banned(self.state, peer):
            bans = (*bans, Ban(peer, name, reason))
        return self._commit(bans=bans, change=BANNED, change_peer=peer, change_reason=reason)

    def unban(self, peer: PeerId) -> SignedState:
        self._require_host("unban")
        bans = tuple(b for b in self.state.bans if b.peer_id != peer)
        return self._commit(bans=bans, change=UNBANNED, change_peer=peer, change_reason="")

    def set_locked(self, locked: bool) -> SignedState:
        self._require_host("lock" if locked else "unlock")
        return self._commit(locked=locked, change=LOCKED if locked else UNLOCKED,
                            change_peer=self.me.peer_id, change_reason="")

    def close(self) -> SignedState:
        self._require_host("close the room")
        return self._commit(closed=True, change=CLOSED, change_peer=self.me.peer_id,
                            change_reason="")

    def rename(self, name: str) -> SignedState:
        self._require_host("rename the room")
        return self._commit(name=name, change=RENAMED_ROOM, change_peer=self.me.peer_id,
                            change_reason=self.state.name)

    def set_password(self, verifier: PasswordVerifier | None, new_epoch: int) -> SignedState:
        self._require_host("set the password")
        return self._commit(password=verifier, key_epoch=new_epoch, change=PASSWORD,
                            change_peer=self.me.peer_id, change_reason="")

    def rekey(self, new_epoch: int) -> SignedState:
        self._require_host("change the room key")
        return self._commit(key_epoch=new_epoch, change=REKEY, change_peer=self.me.peer_id,
                            change_reason="")

    def member_renamed(self, peer: PeerId, name: str) -> SignedState | None:
        self._require_host("rename members")
        old = find_member(self.state, peer)
        if old is None or old.name == name:
            return None
        members = tuple(replace(m, name=name) if m.peer_id == peer else m
                        for m in self.state.members)
        return self._commit(members=members, change=MEMBER_RENAMED, change_peer=peer,
                            change_reason=old.name)

    def handoff(self, to: PeerId, leaving: bool = False, quitting: bool = False
                ) -> SignedState:
        """Hand the room to member ``to`` (term + 1). ``leaving``: the host also leaves
        (``quitting``: because it quits)."""
        self._require_host("hand off the room")
        if not is_member(self.state, to) or to == self.me.peer_id:
            raise NotHost("the new host must be another member of the room")
        members = self.state.members
        if leaving:
            members = tuple(m for m in members if m.peer_id != self.me.peer_id)
        return self._commit(host=to, term=self.state.term + 1, members=members,
                            change=HANDOFF, change_peer=self.me.peer_id,
                            change_reason=("quit" if quitting else "left") if leaving else "")

    def merge_bans(self, bans: Sequence[Ban]) -> SignedState | None:
        """Partition heal: the union of both sides' bans."""
        self._require_host("merge rooms")
        known = {b.peer_id for b in self.state.bans}
        extra = tuple(b for b in bans if b.peer_id not in known)
        if not extra:
            return None
        return self._commit(bans=(*self.state.bans, *extra), change=MERGED,
                            change_peer=self.me.peer_id, change_reason="")

    # ------------------------------------------------------------ elections

    def claim(self, vanished_host: PeerId, new_epoch: int) -> SignedState:
        """Take over the room of a vanished host: term + 1, the old host removed, new key."""
        if not is_member(self.state, self.me.peer_id):
            raise NotHost("only a member can claim the room")
        members = tuple(m for m in self.state.members if m.peer_id != vanished_host)
        state = replace(
            self.state, host=self.me.peer_id, term=self.state.term + 1,
            version=self.state.version + 1, members=members, key_epoch=new_epoch,
            change=FAILOVER, change_peer=vanished_host, change_reason="vanished",
        )
        self.current = SignedState(state, self.codec.sign_record(self.me, state))
        return self.current
