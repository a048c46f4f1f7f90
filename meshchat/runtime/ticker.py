"""The node's one timer: each heartbeat interval it steps peer liveness and probes, lets
every room's host watch see the time, publishes what the idle schedule (``meshchat.beats``)
says is due — presence on change or refresh, a hosted room's beat, heads on change or
refresh — and flushes the log. A beat that comes much later than due means this node was
stalled itself.
"""

from __future__ import annotations

import logging
from collections import Counter

from ..beats import BeatPlan
from ..clock import Clock
from ..config import Timings
from ..room import is_member
from ..storage.log import MessageLog
from .chat import RoomChat
from .peers import PeerBook
from .rooms import Rooms
from .session import Sessions
from .wire import TOPIC_PRESENCE, Wire

__all__ = ["Ticker"]

log = logging.getLogger("meshchat.node")

LOG_FLUSH_S = 0.2


class Ticker:
    def __init__(self, wire: Wire, peers: PeerBook, rooms: Rooms, sessions: Sessions,
                 chat: RoomChat, log: MessageLog, clock: Clock, timings: Timings,
                 stats: Counter[str], *, listen_only: bool) -> None:
        self._wire = wire
        self._peers = peers
        self._rooms = rooms
        self._sessions = sessions
        self._chat = chat
        self._log = log
        self._clock = clock
        self._timings = timings
        self._stats = stats
        self._listen_only = listen_only
        self.plan = BeatPlan(timings)

    def publish_heartbeat(self, include_known: bool = False) -> None:
        """Our presence, now (a rename, a new colour, the start)."""
        hosted = self._rooms.hosted_listing()
        heartbeat = self._peers.heartbeat(hosted, include_known)
        self.plan.sent(self._clock.monotonic(), heartbeat)
        self._wire.publish(TOPIC_PRESENCE, heartbeat)

    def nudge(self) -> None:
        """Publish presence soon: a new peer, or a connection that came back. Only the rooms
        we host make that worth it (a newcomer's Hello exchange already gave it our card):
        so a node joining a LAN of N costs each host two frames to all, not N² frames."""
        if self._rooms.announced():
            self.plan.nudge(self._clock.monotonic())

    def subscriber_back(self, pid: bytes) -> None:
        """``pid``'s subscription to our PUB came up (again): in each room it is in, our
        heads go out in full soon, so it can ask for what it missed while it was down."""
        now = self._clock.monotonic()
        for jr in self._rooms.values():
            if is_member(jr.state, pid):
                self.plan.heads_soon(jr.room_id, now)
                self._stats["heads_for_subscriber"] += 1

    async def run(self) -> None:
        interval = self._timings.heartbeat_interval_s
        last_flush = last_tick = self._clock.monotonic()
        while True:
            await self._clock.sleep(interval)
            now = self._clock.monotonic()
            if now - last_tick > max(4 * interval, self._timings.host_timeout_s):
                # We were stalled ourselves: silence meanwhile is ours, not the peers'.
                self._peers.grace(now)
                self._stats["stalls"] += 1
                self._sessions.stalled(now)
            last_tick = now
            try:
                self._tick()
            except Exception:  # a bug must not stop the heartbeat
                log.exception("tick failed")
                self._stats["tick_errors"] += 1
            now = self._clock.monotonic()
            if now - last_flush > LOG_FLUSH_S:
                self._log.flush()
                last_flush = now

    def _tick(self) -> None:
        now = self._clock.monotonic()
        self._peers.tick(now)
        rooms = list(self._rooms.values())
        hosted = self._rooms.hosted_listing()
        presence = self._peers.heartbeat(hosted)
        known = self._peers.shareable()
        beat = self.plan.step(now, presence, known, {
            jr.room_id: (jr.core.is_host, jr.heads_key(), len(jr.state.members))
            for jr in rooms})
        if beat.presence and not self._listen_only:
            if beat.introductions:
                presence = self._peers.heartbeat(hosted, include_known=True)
            self._wire.publish(TOPIC_PRESENCE, presence)
            self._stats["presence_sent"] += 1
        self._peers.tick_liveness(now, self.plan.quiet_s(len(self._peers)))
        for jr in rooms:
            if jr.room_id in beat.heads:
                self._chat.publish_heads(jr, full=jr.room_id in beat.full)
            self._chat.ask_overdue(jr, self._peers.is_alive)
            self._chat.show_due(jr)
            self._sessions.watch_host(jr, now)
            self._sessions.want_key(jr, now)
