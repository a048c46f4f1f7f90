"""Everything the network sends, in one place: decoded and attributed at the edge
(``Wire.open``), let through the one gate (``Gatekeeper.admit``), then handed by type to the
part that owns it. Bad input is dropped and counted in the shared ``stats``; nothing a peer
sends raises out of here.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from nacl.exceptions import CryptoError

from ..clock import Clock
from ..errors import MeshchatError, ProtocolError
from ..events import BroadcastReceived, Event, Message
from ..identity import fingerprint_of
from ..protocol.codec import Envelope
from ..protocol.messages import (
    Broadcast,
    Bye,
    CommandResult,
    FileChunk,
    FileGet,
    FileOffer,
    FileState,
    FileSumRequest,
    FileSums,
    Heartbeat,
    Hello,
    HistoryReply,
    HistoryRequest,
    HostCommand,
    HostedRoom,
    JoinAccept,
    JoinChallenge,
    JoinRefusal,
    JoinRequest,
    KeyUpdate,
    Leave,
    Look,
    Peers,
    Ping,
    Pong,
    Private,
    Sealed,
    StatePush,
    StateRequest,
    WireMessage,
)
from ..transport.base import Incoming
from .chat import RoomChat
from .directory import Directory
from .peers import PeerBook
from .rooms import Rooms
from .session import Sessions
from .tasks import Tasks
from .wire import Frame, Gatekeeper, Wire, room_topic

__all__ = ["Inbound"]

log = logging.getLogger("meshchat.node")


class Inbound:
    """The transport's frame handler: route each admitted frame to its owner."""

    def __init__(self, me: bytes, wire: Wire, gate: Gatekeeper, peers: PeerBook,
                 directory: Directory, rooms: Rooms, sessions: Sessions, chat: RoomChat,
                 emit: Callable[[Event], None], tasks: Tasks, clock: Clock,
                 stats: Counter[str],
                 files: Callable[[bytes, WireMessage], None] | None = None,
                 away: Callable[[bytes, Private], str] | None = None) -> None:
        self._me = me
        self._wire = wire
        self._gate = gate
        self._peers = peers
        self._directory = directory
        self._rooms = rooms
        self._sessions = sessions
        self._chat = chat
        self._emit = emit
        self._tasks = tasks
        self._clock = clock
        self._stats = stats
        self._files = files
        self._away = away  # answers a private message while away; the text to show

    def on_incoming(self, inc: Incoming) -> None:
        if self._tasks.closed:
            return
        try:
            self._dispatch(inc)
        except (ProtocolError, KeyError, ValueError, TypeError, CryptoError) as exc:
            self._stats["dropped_" + type(exc).__name__] += 1
            log.debug("dropped a frame from %s: %s", fingerprint_of(inc.peer_id), exc)
        except MeshchatError as exc:
            self._stats["dropped_error"] += 1
            log.debug("frame from %s refused: %s", fingerprint_of(inc.peer_id), exc)

    def _dispatch(self, inc: Incoming) -> None:
        now = self._clock.time()
        frame = self._wire.open(inc, self._gate.charge)
        if frame is None:
            return
        peer, env, charged = frame.peer, frame.env, frame.charged
        if frame.socket == "direct":
            self._peers.heard(peer)
            if self._gate.admit(peer, env.message, "direct", charged=charged):
                self._on_direct(peer, env, frame.address, now)
        elif frame.socket == "presence":
            if not self._gate.admit(peer, env.message, "presence", charged=charged):
                return
            match env.message:
                case Heartbeat() as hb:
                    self._on_heartbeat(peer, hb)
                case Bye(reason=reason):
                    self._peers.gone(peer, "quit" if reason in ("quit", "") else reason)
        elif frame.socket == "broadcast":
            if not self._gate.admit(peer, env.message, "broadcast", charged=charged):
                return
            self._peers.heard(peer)
            if isinstance(env.message, Broadcast):
                self._emit(BroadcastReceived(self._peers.info(peer), env.message.text,
                                             env.sent_at))
        else:
            self._on_room(frame)

    def _on_room(self, frame: Frame) -> None:
        peer = frame.peer
        self._peers.heard(peer)
        sealed = frame.env.message
        if not isinstance(sealed, Sealed) or room_topic(sealed.room_id) != frame.topic:
            self._stats["dropped_topic"] += 1
            return
        jr = self._rooms.get(sealed.room_id)
        if jr is None:
            return
        if not self._gate.admit(peer, sealed, "room", jr, charged=frame.charged):
            self._sessions.refused_sealed(jr, peer)
            return
        self._sessions.open_sealed(jr, peer, sealed)

    def _on_heartbeat(self, peer: bytes, hb: Heartbeat) -> None:
        if hb.card.peer_id != peer:
            self._stats["dropped_spoofed"] += 1
            return
        self._peers.learn(hb.card, source="heartbeat", color=hb.color, started_at=hb.started_at)
        self._peers.away_from(peer, hb.away)
        self._peers.heard(peer)
        self._hosted_by(peer, hb.hosted)
        self._peers.offer(hb.known, peer)

    def _hosted_by(self, peer: bytes, hosted: tuple[HostedRoom, ...]) -> None:
        """``peer``'s own presence (a heartbeat or its Hello) lists the rooms it hosts."""
        self._sessions.host_heartbeat(peer, hosted)
        known = self._peers.get(peer)
        self._directory.from_heartbeat(peer, known.card if known is not None else None, hosted)

    def _on_direct(self, peer: bytes, env: Envelope, address: str, now: float) -> None:
        m = env.message
        sessions = self._sessions
        match m:
            case Hello():
                self._peers.on_hello(peer, m, address)
                self._peers.away_from(peer, m.away)
                self._hosted_by(peer, m.hosted)
            case Peers():
                self._peers.on_peers(peer, m, address)
            case Look():
                self._peers.on_look(peer)
            case Ping():
                self._wire.send(peer, Pong(m.nonce))
            case Pong():
                self._wire.take_pong(m)
                sessions.pong(peer, m.nonce)
            case Private():
                if self._me not in m.to:
                    self._stats["dropped_misdirected"] += 1
                    return
                self._peers.pin(peer)
                info = self._peers.info
                text = m.text if self._away is None else self._away(peer, m)
                self._emit(Message(None, info(peer), text, True, env.sent_at, 0,
                                   tuple(info(p) for p in m.to), auto=m.auto))
            case JoinRequest():
                sessions.on_join_request(peer, m, now, address)
            case JoinChallenge() | JoinAccept() | JoinRefusal() | CommandResult():
                self._wire.take_reply(m)
            case Leave():
                sessions.on_leave(peer, m)
            case HostCommand():
                sessions.on_host_command(peer, m)
            case KeyUpdate():
                sessions.on_key_update(peer, m)
            case HistoryRequest():
                self._chat.on_history_request(peer, m)
            case HistoryReply():
                self._chat.on_history_reply(peer, m)
            case StateRequest():
                sessions.on_state_request(peer, m)
            case StatePush():
                sessions.on_state_blob(m.room_id, m.state, peer, direct=True,
                                       step_down=m.step_down)
            case FileOffer() | FileState() | FileGet() | FileChunk() | FileSumRequest() | \
                    FileSums() if self._files is not None:
                self._files(peer, m)
            case _:
                self._stats["dropped_unexpected"] += 1
