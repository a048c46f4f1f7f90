"""The node's one timer: each heartbeat interval it publishes presence, steps peer liveness
and probes, lets every room's host watch see the time, publishes heads for gap filling, and
flushes the log. A beat that comes much later than due means this node was stalled itself.
"""

from __future__ import annotations

import logging
from collections import Counter

from ..clock import Clock
from ..config import Timings
from ..storage.log import MessageLog
from .chat import RoomChat
from .peers import PeerBook
from .rooms import Rooms
from .session import Sessions
from .wire import TOPIC_PRESENCE, Wire

__all__ = ["Ticker"]

log = logging.getLogger("meshchat.node")

SHARE_KNOWN_EVERY = 20  # every this many beats the heartbeat shares the peers we know
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

    def publish_heartbeat(self, include_known: bool = False) -> None:
        hosted = tuple(jr.hosted() for jr in self._rooms.announced())
        self._wire.publish(TOPIC_PRESENCE, self._peers.heartbeat(hosted, include_known))

    async def run(self) -> None:
        interval = self._timings.heartbeat_interval_s
        last_flush = last_tick = self._clock.monotonic()
        beat = 0
        while True:
            await self._clock.sleep(interval)
            beat += 1
            now = self._clock.monotonic()
            if now - last_tick > max(4 * interval, self._timings.host_timeout_s):
                # We were stalled ourselves: silence meanwhile is ours, not the peers'.
                self._peers.grace(now)
                self._stats["stalls"] += 1
                self._sessions.stalled(now)
            last_tick = now
            try:
                self._tick(beat)
            except Exception:  # a bug must not stop the heartbeat
                log.exception("tick failed")
                self._stats["tick_errors"] += 1
            now = self._clock.monotonic()
            if now - last_flush > LOG_FLUSH_S:
                self._log.flush()
                last_flush = now

    def _tick(self, beat: int) -> None:
        now = self._clock.monotonic()
        self._peers.tick(now)
        if not self._listen_only:
            self.publish_heartbeat(include_known=beat % SHARE_KNOWN_EVERY == 0)
        self._peers.tick_liveness(now)
        timings = self._timings
        gap_every = max(1, round(timings.gap_fill_interval_s / timings.heartbeat_interval_s))
        for jr in list(self._rooms.values()):
            if beat % gap_every == 0:
                self._chat.publish_heads(jr)
            self._sessions.watch_host(jr, now)
