"""The error tree of meshchat.

::

    MeshchatError                  everything meshchat raises on purpose
    ├── RoomNotFound               no room of that name on the network
    ├── JoinRefused                no way in (.reason: banned, locked, password, rate, moved,
    │                              cost — the host asked for too costly a password hash, ...)
    ├── PeerNotFound               no known peer matches the name or fingerprint
    ├── AmbiguousName              several peers match, or several hosts announce a room name
    │                              (.candidates: 'name (fingerprint)', or 'room#fingerprint')
    ├── Timeout                    an operation's deadline passed
    ├── NotHost                    a host-only operation asked of a non-host
    ├── RenameTooSoon              /rename before the 7 days are over (.allowed_at)
    ├── NotInRoom                  a room operation after leaving or closing the room
    ├── CommandError               a slash command that cannot be parsed (.usage)
    ├── TransferNotFound           no file transfer with that id
    ├── FileError                  a path to send that is missing or unreadable, or no
    │                              space to receive into
    ├── ProtocolError              bad bytes from the network (never leaves the node)
    └── ConfigError                a start-up setting that cannot work (also a ValueError)
"""

from __future__ import annotations

from collections.abc import Sequence


class MeshchatError(Exception):
    """Base of every error meshchat raises on purpose."""


class RoomNotFound(MeshchatError):
    """No room of that name was found on the network."""


class JoinRefused(MeshchatError):
    """The room's host refused the join; ``reason`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"join refused: {reason}" + (f" ({detail})" if detail else ""))


class PeerNotFound(MeshchatError):
    """No known peer matches the given name or fingerprint prefix."""


class AmbiguousName(MeshchatError):
    """Several peers match (``candidates``: 'name (fingerprint)' each), or several hosts
    announce one room name (``candidates``: 'room#fingerprint' each, which ``join`` takes)."""

    def __init__(self, query: str, candidates: Sequence[str]) -> None:
        self.query = query
        self.candidates = tuple(candidates)
        super().__init__(f"{query!r} is ambiguous: {', '.join(self.candidates)}")


class Timeout(MeshchatError):
    """An operation's deadline passed."""


class NotHost(MeshchatError):
    """A host-only operation was asked of a member that is not the host."""


class RenameTooSoon(MeshchatError):
    """A rename was asked before the waiting period ended; ``allowed_at`` is a Unix time."""

    def __init__(self, allowed_at: float) -> None:
        import datetime as _dt

        self.allowed_at = allowed_at
        when = _dt.datetime.fromtimestamp(allowed_at).strftime("%Y-%m-%d %H:%M")
        super().__init__(f"you can rename again from {when}")


class NotInRoom(MeshchatError):
    """The room was left or closed; operations on it are no longer possible."""


class CommandError(MeshchatError):
    """A slash command could not be parsed; the message includes the usage."""


class ProtocolError(MeshchatError):
    """Bytes from the network that do not decode to a valid message."""


class TransferNotFound(MeshchatError):
    """No file transfer has that id."""


class FileError(MeshchatError):
    """A path that is missing or unreadable, a folder that cannot be written, no space."""


class ConfigError(MeshchatError, ValueError):
    """A start-up setting that cannot work: an interface that is missing or has no IPv4
    address. ``meshchat start`` shows it as one line and exits with status 2."""
