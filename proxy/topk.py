"""Heavy hitters in bounded memory: the space-saving algorithm.

Metwally, Agrawal and El Abbadi, "Efficient Computation of Frequent and Top-k
Elements in Data Streams" (ICDT 2005). Keep at most `capacity` counters. A
monitored item's counter is incremented; an unmonitored item takes over the
counter with the smallest count m, starting at m + 1 and remembering m as its
possible overestimation. Every item whose true count exceeds N / capacity
(N = items seen) is guaranteed to be monitored, and a reported count is never
below the true one nor above it by more than the recorded error.

The counters are kept in the paper's "stream summary": buckets of items that
share a count, so both cases above are O(1). The rejected alternative, a plain
dict of every missed path, grows without bound under a scan of unique URLs --
exactly the traffic an attacker controls.
"""
from __future__ import annotations

from collections.abc import Iterable


class SpaceSaving:
    """Approximate top-k counter for a stream of strings."""

    __slots__ = ("capacity", "_counts", "_errors", "_buckets", "_min")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._counts: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        # count -> items with that count; a dict used as an ordered set so the
        # oldest item of the minimum bucket is the one replaced.
        self._buckets: dict[int, dict[str, None]] = {}
        self._min = 0

    def __len__(self) -> int:
        return len(self._counts)

    def __contains__(self, item: object) -> bool:
        return item in self._counts

    def add(self, item: str) -> None:
        count = self._counts.get(item)
        if count is not None:
            self._move(item, count, count + 1)
        elif len(self._counts) < self.capacity:
            self._counts[item] = 1
            self._errors[item] = 0
            self._buckets.setdefault(1, {})[item] = None
            self._min = 1
        else:
            self._replace_min(item)

    def top(self, n: int) -> list[tuple[str, int]]:
        """The n items with the largest counts, largest first (ties: older first)."""
        ranked = sorted(self._counts.items(), key=lambda kv: -kv[1])
        return ranked[:n]

    def error(self, item: str) -> int:
        """How much `item`'s count may overestimate its true count."""
        return self._errors.get(item, 0)

    def items(self) -> list[tuple[str, int, int]]:
        """Every monitored (item, count, error), for persistence."""
        return [(k, c, self._errors[k]) for k, c in self._counts.items()]

    @classmethod
    def from_items(cls, capacity: int, items: Iterable[tuple[str, int, int]]) -> SpaceSaving:
        """Rebuild a summary from `items()`; keeps the largest if over capacity."""
        summary = cls(capacity)
        rows = list(items)
        if len(rows) > capacity:  # keep the largest, in their original order
            largest = sorted(range(len(rows)), key=lambda i: -rows[i][1])[:capacity]
            rows = [rows[i] for i in sorted(largest)]
        for item, count, error in rows:
            if count < 1 or item in summary._counts:
                continue
            summary._counts[item] = count
            summary._errors[item] = min(max(error, 0), count - 1)
            summary._buckets.setdefault(count, {})[item] = None
        summary._min = min(summary._buckets, default=0)
        return summary

    def _move(self, item: str, old: int, new: int) -> None:
        bucket = self._buckets[old]
        del bucket[item]
        if not bucket:
            del self._buckets[old]
            if self._min == old:
                self._min = new  # the item was alone at the minimum
        self._buckets.setdefault(new, {})[item] = None
        self._counts[item] = new

    def _replace_min(self, item: str) -> None:
        floor = self._min
        bucket = self._buckets[floor]
        victim = next(iter(bucket))
        del bucket[victim], self._counts[victim], self._errors[victim]
        if not bucket:
            del self._buckets[floor]
            self._min = floor + 1
        self._counts[item] = floor + 1
        self._errors[item] = floor
        self._buckets.setdefault(floor + 1, {})[item] = None
