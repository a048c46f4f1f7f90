"""Storage (L2): what a node keeps in its data dir.

- ``keystore``: the data dir and ``identity.key`` (the Ed25519 seed, 0600).
- ``settings``: name, colour, last rename (``settings.json``).
- ``peers``: peers met so far, trust on first use for names (``peers.json``).
- ``log``: chat records, room states and private messages (SQLite).

Every file is written atomically and readable only by the user; damaged settings or peer files
are moved aside with a warning, a damaged identity key stops the node and is left untouched.
"""

from __future__ import annotations

from meshchat.storage.keystore import default_data_dir, load_or_create_identity
from meshchat.storage.log import LogRow, MessageLog, PrivateRow, RoomRecord, default_line
from meshchat.storage.peers import KnownPeer, KnownPeers, SeenName
from meshchat.storage.settings import DEFAULT_COLOR, Settings, SettingsStore

__all__ = [
    "DEFAULT_COLOR",
    "KnownPeer",
    "KnownPeers",
    "LogRow",
    "MessageLog",
    "PrivateRow",
    "RoomRecord",
    "SeenName",
    "Settings",
    "SettingsStore",
    "default_data_dir",
    "default_line",
    "load_or_create_identity",
]
