"""Which node events a session holds back while it joins a room, or hides as already shown."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from meshchat import (
    AwayChanged,
    BroadcastReceived,
    Event,
    HostChanged,
    MemberRemoved,
    Message,
    Notice,
    PeerDiscovered,
    PeerGone,
    PeerJoined,
    PeerLeft,
    Renamed,
    RoomClosed,
    RoomRenamed,
)

_OWN_LINE_MEMORY_S = 5.0
_HELD_EVENTS_MAX = 1000
"""Room messages held while a join is under way; beyond this they are shown at once."""


class EventGate:
    """What the controller already showed: its own confirmations, and the backlog of a join.

    Actions of this node are confirmed by the controller itself, so the node's events for them
    are hidden; so are messages the backlog showed (by room, sender fingerprint and sequence
    number). While a join is under way, that room's messages are held until its backlog is out.
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._history_seen: set[tuple[str, str, int]] = set()
        self._joining: str | None = None
        self._held: list[Event] = []
        self._own_changes: set[tuple[str, ...]] = set()
        self._own_lines: dict[str, float] = {}

    def said(self, text: str) -> None:
        """The controller showed the system line ``text``: a Notice with it soon after is hidden."""
        self._own_lines[text] = self._now()

    @contextlib.contextmanager
    def own_change(self, key: tuple[str, ...]) -> Iterator[None]:
        """Around an action of ours (``("closed", room)``, ``("renamed", old, new)``): its one
        event is hidden, unless the action fails."""
        self._own_changes.add(key)
        try:
            yield
        except BaseException:
            self._own_changes.discard(key)
            raise

    def joining(self, room: str) -> None:
        """A join of ``room`` starts: hold its messages until ``release``."""
        self._joining = room

    def hold(self, ev: Event) -> bool:
        """Keep a message of the room being joined until its backlog has been shown."""
        if self._joining is None or len(self._held) >= _HELD_EVENTS_MAX:
            return False
        if isinstance(ev, Message) and ev.room == self._joining and not ev.private:
            self._held.append(ev)
            return True
        return False

    def release(self) -> list[Event]:
        """The join is over: the events held, in order."""
        held, self._held, self._joining = self._held, [], None
        return held

    def backlog_shown(self, messages: Iterable[Message]) -> None:
        """These earlier messages were shown (replacing any backlog before)."""
        self._history_seen = {(m.room, m.sender.fingerprint, m.seq)
                              for m in messages if m.room is not None and m.seq > 0}

    def hidden(self, ev: Event, me: str) -> bool:
        """Whether ``ev`` repeats what was shown already (``me``: this node's fingerprint)."""
        match ev:
            case Message(sender=sender, room=room, seq=seq):
                if sender.fingerprint == me:
                    return True
                return room is not None and seq > 0 \
                    and (room, sender.fingerprint, seq) in self._history_seen
            case BroadcastReceived(sender=peer) | Renamed(peer=peer) | AwayChanged(peer=peer):
                return peer.fingerprint == me
            case PeerJoined(peer=peer) | PeerLeft(peer=peer):
                return peer.fingerprint == me
            case PeerDiscovered(peer=peer) | PeerGone(peer=peer):
                return peer.fingerprint == me
            case HostChanged(old=old):
                return old is not None and old.fingerprint == me
            case MemberRemoved(by=by):
                return by.fingerprint == me
            case RoomClosed(room=room):
                return self._take_own(("closed", room))
            case RoomRenamed(old=old_name, new=new_name):
                return self._take_own(("renamed", old_name, new_name))
            case Notice(text=text):
                said = self._own_lines.get(text)
                return said is not None and self._now() - said < _OWN_LINE_MEMORY_S
        return False

    def _take_own(self, key: tuple[str, ...]) -> bool:
        if key in self._own_changes:
            self._own_changes.discard(key)
            return True
        return False
