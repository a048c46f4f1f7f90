"""This node as a peer: its identity, its name and colour (kept in the settings file), its away
text (``/away``; not kept: a restart is back), and the addresses and ports others reach it at."""

from __future__ import annotations

from pathlib import Path

from ..commands import validate_name
from ..errors import MeshchatError, RenameTooSoon
from ..events import PeerInfo
from ..identity import Identity
from ..protocol.messages import Hello, HostedRoom, PeerCard
from ..storage.keystore import load_or_create_identity
from ..storage.settings import Settings, SettingsStore

__all__ = ["LocalPeer"]


def checked_name(name: str) -> str:
    name = name.strip()
    problem = validate_name(name)
    if problem is not None:
        raise MeshchatError(f"bad name {name!r}: {problem}")
    return name


class LocalPeer:
    """Who this node is. Addresses and ports are set once the sockets are bound."""

    def __init__(self, identity: Identity, store: SettingsStore, settings: Settings) -> None:
        self.identity = identity
        self.peer_id = identity.peer_id
        self.fingerprint = identity.fingerprint
        self._store = store
        self._settings = settings
        self.name = settings.name or ""
        self.color = settings.color or ""
        self.away: str | None = None
        self.addresses: tuple[str, ...] = ()
        self.started_at = 0.0
        self.router_port = 0
        self.pub_port = 0
        self.card_port = 0
        self._info: PeerInfo | None = None
        self._unsaved = False

    @classmethod
    def load(cls, data_dir: Path, name: str | None, color: str | None, *,
             defer_save: bool = False) -> LocalPeer:
        """The identity and settings kept in ``data_dir`` (made on first start), with the
        ``name`` and ``color`` asked for (saved if new; with ``defer_save`` only once
        ``save_settings`` is called)."""
        identity = load_or_create_identity(data_dir)
        store = SettingsStore(data_dir)
        settings = store.load()
        name = name or settings.name
        if not name:
            raise MeshchatError("no name: pass name=... (the CLI asks for one on first start)")
        name = checked_name(name)
        changed = False
        if name != settings.name:
            settings.name = name
            changed = True
        if color:
            settings.color = color
            changed = True
        me = cls(identity, store, settings)
        me._unsaved = changed
        if not defer_save:
            me.save_settings()
        return me

    def save_settings(self) -> None:
        """Write the settings if ``load`` changed them and they were not written yet."""
        if self._unsaved:
            self._store.save(self._settings)
            self._unsaved = False

    def card(self) -> PeerCard:
        return PeerCard(self.peer_id, self.name, self.addresses, self.router_port,
                        self.pub_port, self.card_port)

    def hello(self, hosted: tuple[HostedRoom, ...] = ()) -> Hello:
        return Hello(self.card(), self.started_at, self.color, self.away, hosted)

    @property
    def info(self) -> PeerInfo:
        info = self._info
        if info is None or info.name != self.name or info.color != self.color or \
                info.addresses != self.addresses or info.away != self.away:
            info = self._info = PeerInfo(self.name, self.fingerprint, self.addresses,
                                         self.peer_id, self.color, self.away)
        return info

    @property
    def former_names(self) -> list[str]:
        return [n for n, _ in self._settings.former_names]

    def rename(self, new_name: str, now: float, interval_s: float) -> str | None:
        """Take ``new_name`` (once per ``interval_s``); the old name, or None if unchanged."""
        new_name = checked_name(new_name)
        if new_name == self.name:
            return None
        last = self._settings.renamed_at
        if last is not None and now < last + interval_s:
            raise RenameTooSoon(last + interval_s)
        old = self.name
        self._settings.former_names.append((old, now))
        self._settings.name = new_name
        self._settings.renamed_at = now
        self._store.save(self._settings)
        self._unsaved = False
        self.name = new_name
        return old

    def set_color(self, color: str) -> None:
        self.color = color
        self._settings.color = color
        self._store.save(self._settings)
        self._unsaved = False
