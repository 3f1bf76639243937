"""Rates and latency quantiles over the last hour, from a ring of per-minute counts.

The counters in `mediaedge.stats` are totals since start (they even survive a
restart); an operator looking at a node wants "how many requests a second now,
and how slow", which a total cannot say. Like Prometheus's `rate()` and
`histogram_quantile()`, this takes the difference of two cumulative snapshots
and divides by the time between them.

`MinuteRing` keeps at most one snapshot a minute for an hour (61 of them, each a
few dozen ints), so its memory is fixed whatever the traffic. Everything here is
pure: the caller passes the snapshots and the time in.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from mediaedge.stats import DURATION_BUCKETS, RESULTS

WINDOW = 3600.0  # seconds the ring covers
STEP = 60.0  # seconds between kept snapshots


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counts at time `t` (seconds, any monotonic-enough clock)."""

    t: float
    results: tuple[int, ...]  # requests per RESULTS entry
    not_found: int  # media answers 404/410
    buckets: tuple[int, ...]  # request durations, non-cumulative, per DURATION_BUCKETS bound then +Inf
    evictions: int


@dataclass(frozen=True)
class Window:
    """What happened between two snapshots, as rates and quantiles."""

    seconds: float
    per_second: dict[str, float]  # "requests", each result, "not_found", "evictions"
    p50: float | None  # seconds; None without requests
    p99: float | None


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The q-quantile of a histogram (non-cumulative `counts`, one per bound then +Inf),
    interpolated linearly inside its bucket as Prometheus's histogram_quantile does;
    a quantile in the +Inf bucket is the highest finite bound. None when empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = 0.0 if i == 0 else float(bounds[i - 1])
            return lower + (float(bounds[i]) - lower) * (rank - seen) / n
        seen += n
    return float(bounds[-1])


def between(older: Snapshot, newer: Snapshot) -> Window:
    """Rates and quantiles from `older` to `newer`. A counter that went down (the
    process restarted and counted again from its saved state) counts as a reset:
    its newer value is all that happened, as Prometheus treats counter resets."""
    seconds = max(newer.t - older.t, 1e-9)

    def delta(a: int, b: int) -> int:
        return b - a if b >= a else b

    results = [delta(a, b) for a, b in zip(older.results, newer.results)]
    buckets = [delta(a, b) for a, b in zip(older.buckets, newer.buckets)]
    per_second = {r: n / seconds for r, n in zip(RESULTS, results)}
    per_second["requests"] = sum(results) / seconds
    per_second["not_found"] = delta(older.not_found, newer.not_found) / seconds
    per_second["evictions"] = delta(older.evictions, newer.evictions) / seconds
    return Window(seconds, per_second, quantile(0.5, DURATION_BUCKETS, buckets),
                  quantile(0.99, DURATION_BUCKETS, buckets))


class MinuteRing:
    """At most one snapshot per `step` seconds, for `window` seconds."""

    def __init__(self, *, window: float = WINDOW, step: float = STEP) -> None:
        self.window = window
        self.step = step
        self._ring: deque[Snapshot] = deque(maxlen=math.ceil(window / step) + 1)

    def observe(self, snap: Snapshot) -> None:
        """Keep `snap` when a step has passed since the last kept one (sample as often as you like)."""
        if not self._ring or snap.t - self._ring[-1].t >= self.step:
            self._ring.append(snap)

    def last_hour(self, now: Snapshot) -> Window | None:
        """From the oldest kept snapshot within the window up to `now`; None before any."""
        older = [s for s in self._ring if now.t - s.t <= self.window + self.step / 2 and s.t < now.t]
        return between(older[0], now) if older else None

    def per_minute(self, now: Snapshot) -> list[tuple[float, Window]]:
        """(end time, window) for each step in the ring, the last one ending at `now`, oldest first."""
        points = [s for s in self._ring if now.t - s.t <= self.window + self.step / 2 and s.t < now.t] + [now]
        return [(b.t, between(a, b)) for a, b in zip(points, points[1:])]
