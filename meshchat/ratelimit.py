"""Token buckets keyed by anything, in a bounded table. Pure: the caller passes ``now``.

One mechanism for every per-peer or per-address limit (the authority gate, the transport's
flood guard, joins per address, introduced cards per introducer). The table holds at most
``max_entries`` buckets; the least recently used goes first, so a flood of fresh keys cannot
grow memory (an evicted key starts again from a full burst).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["TokenBuckets"]

K = TypeVar("K", bound=Hashable)


class TokenBuckets(Generic[K]):
    __slots__ = ("_buckets", "_max")

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._buckets: OrderedDict[K, list[float]] = OrderedDict()

    def take(self, key: K, rate_per_s: float, burst: float, now: float, cost: float = 1.0
             ) -> bool:
        """Refill ``key``'s bucket to ``now`` (at most ``burst``) and draw ``cost`` tokens;
        False, drawing nothing, if it holds fewer."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(burst), now]
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(float(burst), bucket[0] + max(0.0, now - bucket[1]) * rate_per_s)
            bucket[1] = now
        if bucket[0] < cost:
            return False
        bucket[0] -= cost
        return True

    def wait_s(self, key: K, rate_per_s: float, burst: float, now: float, cost: float = 1.0
               ) -> float:
        """Seconds from ``now`` until ``key``'s bucket holds ``cost`` tokens (0: it does);
        draws nothing. ``cost`` above ``burst`` is never there: it waits for the burst."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(float(burst), bucket[0] + max(0.0, now - bucket[1]) * rate_per_s)
        need = min(float(cost), float(burst)) - tokens
        return 0.0 if need <= 0 or rate_per_s <= 0 else need / rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)
