"""meshchat: a chat for the local network with no server.

The public API, the same one the terminal interface and bots use::

    from meshchat import Node

    async with Node(name="alice") as node:
        room = await node.host("lobby")
        await room.say("hello")
"""

from .config import Limits, Timings
from .errors import (
    AmbiguousName,
    CommandError,
    JoinRefused,
    MeshchatError,
    NotHost,
    NotInRoom,
    PeerNotFound,
    ProtocolError,
    RenameTooSoon,
    RoomNotFound,
    Timeout,
)
from .events import (
    BroadcastReceived,
    Event,
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
)
from .node import BanInfo, Node, PeerDetails, Room, RoomDetails

__version__ = "0.1.0"

__all__ = [
    "AmbiguousName",
    "BanInfo",
    "BroadcastReceived",
    "CommandError",
    "Event",
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
    "__version__",
]
