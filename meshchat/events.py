"""Public events and value types: what ``Node.events()`` yields and what queries return.

All are frozen dataclasses; match on them with ``match event: case Message(...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer as this node knows it. Names are labels; ``fingerprint`` is the identity."""

    name: str
    fingerprint: str
    addresses: tuple[str, ...] = ()
    peer_id: bytes = field(default=b"", repr=False)
    color: str = ""
    away: str | None = None  # the peer's /away text; None: here

    @property
    def label(self) -> str:
        """'name (fingerprint prefix)' — what the UI shows where names may clash."""
        return f"{self.name} ({self.fingerprint[:8]})"


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room found on the network."""

    name: str
    host: str
    members: int
    locked: bool
    has_password: bool = False
    room_id: bytes = field(default=b"", repr=False)
    host_fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """A chat line. ``room`` is the room name, or None for a private message."""

    room: str | None
    sender: PeerInfo
    text: str
    private: bool
    sent_at: float
    seq: int = 0
    recipients: tuple[PeerInfo, ...] = ()
    action: bool = False  # a `/me` line: "* alice waves" (``text`` is "waves")
    auto: bool = False  # private: the sender's automatic away reply (``text`` is its away text)


@dataclass(frozen=True, slots=True)
class PeerJoined:
    room: str
    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """``reason``: 'left', 'quit', 'vanished', 'kicked', 'banned', 'closed'."""

    room: str
    peer: PeerInfo
    reason: str


@dataclass(frozen=True, slots=True)
class HostChanged:
    room: str
    old: PeerInfo | None
    new: PeerInfo
    term: int


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    room: str
    peer: PeerInfo
    by: PeerInfo
    reason: str
    banned: bool


@dataclass(frozen=True, slots=True)
class RoomClosed:
    room: str


@dataclass(frozen=True, slots=True)
class RoomRenamed:
    room: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Renamed:
    peer: PeerInfo
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class AwayChanged:
    """A peer (or this node) went away (``away``: its text) or came back (``away`` None)."""

    peer: PeerInfo
    away: str | None


@dataclass(frozen=True, slots=True)
class PeerDiscovered:
    """A peer appeared on the network (not tied to a room)."""

    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class PeerGone:
    """A peer left the network (``reason``: 'quit' or 'vanished')."""

    peer: PeerInfo
    reason: str


@dataclass(frozen=True, slots=True)
class BroadcastReceived:
    sender: PeerInfo
    text: str
    sent_at: float


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the user that is not a chat message (warnings, key changes, ...)."""

    text: str
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Transfer:
    """A file transfer (issue 7), as it stands. ``id`` is short and local to this node
    (``/accept 3``); ``direction`` is "in" or "out"; ``size`` counts every file's bytes;
    ``state`` is one of offered accepted active interrupted done failed declined cancelled;
    ``path`` is where it is or will be on the receiver; ``error`` is empty unless it failed."""

    id: str
    direction: str
    peer: PeerInfo
    name: str
    size: int
    files: int
    done_bytes: int
    state: str
    sha256: str = ""
    path: Path | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class FileOffered:
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """At most four a second per transfer."""

    transfer: Transfer


@dataclass(frozen=True, slots=True)
class TransferDone:
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """``reason``: declined, cancelled, hash mismatch, no space, source changed, peer gone,
    expired, ..."""

    transfer: Transfer
    reason: str


Event = (
    Message | PeerJoined | PeerLeft | HostChanged | MemberRemoved | RoomClosed | RoomRenamed
    | Renamed | AwayChanged | PeerDiscovered | PeerGone | BroadcastReceived | Notice
    | FileOffered | TransferProgress | TransferDone | TransferFailed
)
