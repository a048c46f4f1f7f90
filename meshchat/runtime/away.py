"""``/away``: this node's away text, and the automatic private reply that carries it.

A private message to an away node gets the away text back as a private message marked
``auto``. At most one goes to each sender per ``Timings.away_reply_interval_s`` (``AwayReplies``,
a table of at most ``Limits.max_away_replies`` senders), and none ever answers a message that is
itself marked ``auto``: two away nodes cannot keep each other talking.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from ..clock import Clock
from ..commands import clean_away
from ..config import Limits, Timings
from ..protocol.messages import Private
from .local import LocalPeer
from .wire import Wire

__all__ = ["AwayReplies", "AwayResponder"]


class AwayReplies:
    """Who got the away text when: the rule, with ``now`` passed in (no clock of its own)."""

    def __init__(self, interval_s: float, max_entries: int) -> None:
        self._interval_s = interval_s
        self._max_entries = max(1, max_entries)
        self._sent: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sent)

    def due(self, sender: bytes, auto: bool, now: float) -> bool:
        """Whether a private message from ``sender`` (``auto``: itself an automatic reply) is
        answered now; if so, it is written down."""
        if auto:
            return False
        last = self._sent.get(sender)
        if last is not None and now - last < self._interval_s:
            return False
        self._sent[sender] = now
        self._sent.move_to_end(sender)
        while len(self._sent) > self._max_entries:
            self._sent.popitem(last=False)  # the longest ago first
        return True

    def clear(self) -> None:
        """A new away text (or back): everyone may be told again."""
        self._sent.clear()


class AwayResponder:
    """Sets this node's away text and answers private messages with it."""

    def __init__(self, me: LocalPeer, wire: Wire, clock: Clock, limits: Limits,
                 timings: Timings, stats: Counter[str]) -> None:
        self._me = me
        self._wire = wire
        self._clock = clock
        self._limits = limits
        self._stats = stats
        self._replies = AwayReplies(timings.away_reply_interval_s, limits.max_away_replies)

    def set(self, text: str | None) -> bool:
        """Take the away text ``text`` (None or blank: back), cleaned; whether it changed."""
        away = clean_away(text, self._limits.max_away_chars)
        if away == self._me.away:
            return False
        self._me.away = away
        self._replies.clear()
        return True

    def on_private(self, sender: bytes, m: Private) -> str:
        """A private message came from ``sender``: answer it if we are away and it is due.
        Returns the text to show (an automatic reply's text as an away text: cleaned, bounded).
        """
        away = self._me.away
        if (away is not None and self._replies.due(sender, m.auto, self._clock.monotonic())
                and self._wire.send(sender, Private(away, (sender,), auto=True))):
            self._stats["away_replies"] += 1
        if m.auto:
            return clean_away(m.text, self._limits.max_away_chars) or ""
        return m.text
