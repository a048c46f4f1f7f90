"""Host-only room operations as values, and what each does to a room. Pure.

The node turns a user's request (``room.kick("bob")``) into one of these, with names already
resolved to peer ids, and ``apply`` computes the new signed state on the host's ``RoomCore``.
A non-host never applies one: it asks the host, which refuses every request (``wire_op``
names it on the wire so the refusal can say what was refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from . import room as rules
from .protocol.messages import PasswordVerifier, RoomState

__all__ = [
    "BanPeer", "CloseRoom", "Handoff", "KickPeer", "LockRoom", "ModerationOp", "RenameRoom",
    "SetPassword", "UnbanPeer", "UnlockRoom", "apply", "removes_member", "verb",
]


@dataclass(frozen=True, slots=True)
class Handoff:
    WIRE: ClassVar[str] = "handoff"
    VERB: ClassVar[str] = "hand the room over"
    target: bytes


@dataclass(frozen=True, slots=True)
class KickPeer:
    WIRE: ClassVar[str] = "kick"
    VERB: ClassVar[str] = "kick"
    target: bytes
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BanPeer:
    WIRE: ClassVar[str] = "ban"
    VERB: ClassVar[str] = "ban"
    target: bytes
    name: str = ""  # shown in /banned when the peer is not a member
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnbanPeer:
    WIRE: ClassVar[str] = "unban"
    VERB: ClassVar[str] = "unban"
    target: bytes


@dataclass(frozen=True, slots=True)
class LockRoom:
    WIRE: ClassVar[str] = "lock"
    VERB: ClassVar[str] = "lock the room"


@dataclass(frozen=True, slots=True)
class UnlockRoom:
    WIRE: ClassVar[str] = "unlock"
    VERB: ClassVar[str] = "unlock the room"


@dataclass(frozen=True, slots=True)
class CloseRoom:
    WIRE: ClassVar[str] = "close"
    VERB: ClassVar[str] = "close the room"


@dataclass(frozen=True, slots=True)
class RenameRoom:
    WIRE: ClassVar[str] = "rename"
    VERB: ClassVar[str] = "rename the room"
    name: str


@dataclass(frozen=True, slots=True)
class SetPassword:
    WIRE: ClassVar[str] = "password"
    VERB: ClassVar[str] = "set the password"
    verifier: PasswordVerifier | None


ModerationOp = (Handoff | KickPeer | BanPeer | UnbanPeer | LockRoom | UnlockRoom | CloseRoom
                | RenameRoom | SetPassword)

_VERBS = {cls.WIRE: cls.VERB for cls in (Handoff, KickPeer, BanPeer, UnbanPeer, LockRoom,
                                         UnlockRoom, CloseRoom, RenameRoom, SetPassword)}


def verb(wire_op: str) -> str:
    """What the user tried, for "only the host can …" (any string a peer sent is safe here)."""
    return _VERBS.get(wire_op, "do that")


def removes_member(op: ModerationOp, state: RoomState) -> bool:
    """Whether ``op`` takes a member out of the room (the key must rotate)."""
    return isinstance(op, KickPeer | BanPeer) and rules.is_member(state, op.target)


def apply(core: rules.RoomCore, op: ModerationOp, new_epoch: int | None = None
          ) -> rules.SignedState:
    """The new signed state after ``op`` (raises ``NotHost`` unless ``core`` hosts).
    ``new_epoch``: the fresh key's epoch, for ops that rotate the key."""
    match op:
        case Handoff(target=target):
            return core.handoff(target)
        case KickPeer(target=target, reason=reason):
            return core.remove_member(target, rules.KICKED, reason, new_epoch=new_epoch)
        case BanPeer(target=target, name=name, reason=reason):
            if rules.is_member(core.state, target):
                return core.remove_member(target, rules.BANNED, reason, new_epoch=new_epoch)
            return core.ban_absent(target, name, reason)
        case UnbanPeer(target=target):
            return core.unban(target)
        case LockRoom():
            return core.set_locked(True)
        case UnlockRoom():
            return core.set_locked(False)
        case CloseRoom():
            return core.close()
        case RenameRoom(name=name):
            return core.rename(name)
        case SetPassword(verifier=verifier):
            if new_epoch is None:
                raise ValueError("a password change rotates the key: pass new_epoch")
            return core.set_password(verifier, new_epoch)
