"""meshchat: a chat for the local network with no server.

The public API, the same one the terminal interface and bots use::

    from meshchat import Node

    async with Node(name="alice") as node:
        room = await node.host("lobby")
        await room.say("hello")
"""

from pathlib import Path

from .bot import Bot, Context
from .config import PROTOCOL_VERSION, Limits, Timings
from .errors import (
    AmbiguousName,
    CommandError,
    ConfigError,
    FileError,
    JoinRefused,
    MeshchatError,
    NotHost,
    NotInRoom,
    PeerNotFound,
    ProtocolError,
    RenameTooSoon,
    RoomNotFound,
    Timeout,
    TransferNotFound,
)
from .events import (
    AwayChanged,
    BroadcastReceived,
    Event,
    FileOffered,
    HostChanged,
    MemberRemoved,
    Message,
    Notice,
    PeerDiscovered,
    PeerGone,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    Renamed,
    RoomClosed,
    RoomInfo,
    RoomRenamed,
    Transfer,
    TransferDone,
    TransferFailed,
    TransferProgress,
)
from .node import BanInfo, Node, PeerDetails, Room, RoomDetails

__version__ = "0.1.0"


def default_data_dir() -> Path:
    """Where a ``Node`` keeps its files when given no ``data_dir``: ``click.get_app_dir``."""
    from .storage.keystore import default_data_dir as storage_default

    return storage_default()


def log_dir(data_dir: Path | None = None) -> Path:
    """``logs/`` in ``data_dir`` (default: ``default_data_dir()``), created private (0700) when
    missing; ``MeshchatError`` when it cannot be."""
    from .storage.keystore import ensure_private_dir

    logs = (data_dir if data_dir is not None else default_data_dir()) / "logs"
    ensure_private_dir(logs)
    return logs


__all__ = [
    "PROTOCOL_VERSION",
    "AmbiguousName",
    "AwayChanged",
    "BanInfo",
    "Bot",
    "BroadcastReceived",
    "CommandError",
    "ConfigError",
    "Context",
    "Event",
    "FileError",
    "FileOffered",
    "HostChanged",
    "JoinRefused",
    "Limits",
    "MemberRemoved",
    "MeshchatError",
    "Message",
    "Node",
    "NotHost",
    "NotInRoom",
    "Notice",
    "PeerDetails",
    "PeerDiscovered",
    "PeerGone",
    "PeerInfo",
    "PeerJoined",
    "PeerLeft",
    "PeerNotFound",
    "ProtocolError",
    "RenameTooSoon",
    "Renamed",
    "Room",
    "RoomClosed",
    "RoomDetails",
    "RoomInfo",
    "RoomNotFound",
    "RoomRenamed",
    "Timeout",
    "Timings",
    "Transfer",
    "TransferDone",
    "TransferFailed",
    "TransferNotFound",
    "TransferProgress",
    "__version__",
    "default_data_dir",
    "log_dir",
]
