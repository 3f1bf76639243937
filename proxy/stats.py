"""In-process counters behind /stats, /metrics, the dashboard and `mediaedge stats`.

Rule 1: `record()` is the hot path. It runs once per media request on the
asyncio loop thread and does nothing but dict lookups and int additions: no
lock (one thread writes), no I/O, no allocation beyond what the top-k summary
needs on a miss. Everything else -- ratios, per-prefix views, JSON -- is
computed when somebody asks (`snapshot()`, `history()`, `state()`).

Rule 2: the numbers reconcile. `requests == hits + stale + misses + passes +
errors` holds by construction (requests is the sum, never a separate counter);
`hit_ratio = (hits + stale) / requests` and `byte_hit_ratio = bytes_served.cache
/ sum(bytes_served)`, both 0 when the denominator is 0 (contract section 5).
Bytes of responses with no source (a 304, an error page) are in neither.

Counters survive a restart through a small JSON file (`save()` / `restore()`):
written atomically (temp file + rename), read back tolerantly -- a missing or
damaged file means "start from zero", never a failed start.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, UTC
from typing import Any, Protocol

from mediaedge.topk import SpaceSaving

log = logging.getLogger(__name__)

RESULTS = ("hit", "stale", "miss", "pass", "error")
SOURCES = ("cache", "upstream", "db")
ORIGINS = ("upstream", "db")
OUTCOMES = ("ok", "notmodified", "notfound", "error")  # notmodified: a revalidation renewed the entry
# Shown (as 0) before the first event so dashboards and graphs have every line.
INVALIDATION_TYPES = ("publish", "delete", "purge", "soft-purge", "abort")
# Why a private-media request was refused (docs/private-media.md); each is also an error.
DENIED_REASONS = ("signature", "expired", "auth")

# The /stats field for each result (contract section 5).
RESULT_FIELDS = {"hit": "hits", "stale": "stale", "miss": "misses", "pass": "passes", "error": "errors"}

# Upper bounds, in seconds, of the request-duration histogram. A hit from the
# page cache takes well under a millisecond; a miss on a large object through
# a slow origin takes seconds; --upstream-timeout defaults to 10 s.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

STATE_VERSION = 1

_RESULT_SET = frozenset(RESULTS)
_SOURCE_SET = frozenset(SOURCES)


def hit_ratio(results: Mapping[str, int]) -> float:
    """(hits + stale) / requests, 0 when there were none."""
    requests = sum(results.values())
    return (results["hit"] + results["stale"]) / requests if requests else 0.0


def byte_hit_ratio(served: Mapping[str, int]) -> float:
    """Bytes served from cache / all media body bytes served, 0 when none."""
    total = sum(served.values())
    return served["cache"] / total if total else 0.0


def iso8601(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


class _Counts:
    """Requests by result and body bytes by source, for the node or one prefix."""

    __slots__ = ("results", "served")

    def __init__(self) -> None:
        self.results = dict.fromkeys(RESULTS, 0)
        self.served = dict.fromkeys(SOURCES, 0)

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {"requests": sum(self.results.values())}
        view.update((RESULT_FIELDS[r], n) for r, n in self.results.items())
        view["hit_ratio"] = hit_ratio(self.results)
        view["byte_hit_ratio"] = byte_hit_ratio(self.served)
        view["bytes"] = sum(self.served.values())
        view["bytes_served"] = dict(self.served)
        return view

    def state(self) -> dict[str, Any]:
        return {"results": dict(self.results), "served": dict(self.served)}

    @classmethod
    def from_state(cls, data: Any) -> _Counts:
        counts = cls()
        counts.results = _counters(data["results"], RESULTS)
        counts.served = _counters(data["served"], SOURCES)
        return counts


class StatsSink(Protocol):
    """What the data plane counts into: the engine, the invalidator and the shell take
    this, not `Stats`, so a node with counting off (or a test) can pass its own."""

    def record(self, *, result: str, source: str | None, body_bytes: int, duration: float, path: str,
               status: int = 0) -> None: ...

    def origin_fetch(self, origin: str, outcome: str) -> None: ...

    def coalesced(self) -> None: ...

    def revalidated(self) -> None: ...

    def denied(self, reason: str) -> None: ...

    def disk_error(self) -> None: ...

    def invalidation(self, type_: str, count: int = 1) -> None: ...


class Stats:
    """The node's reporting counters. See the module docstring for the rules."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        prefixes: tuple[str, ...] = ("/media/",),
        top_k: int = 20,
        history_seconds: int = 3600,
        sample_every: float = 5.0,
    ) -> None:
        self._clock = clock
        self.top_k = top_k
        self.history_seconds = history_seconds
        self.sample_every = sample_every
        self._since = clock()
        self._totals = _Counts()
        # Longest prefix first, so the first match is the longest match.
        self._prefix_names = tuple(sorted(dict.fromkeys(prefixes), key=len, reverse=True))
        self._prefixes = {p: _Counts() for p in self._prefix_names}
        self._origin = {o: dict.fromkeys(OUTCOMES, 0) for o in ORIGINS}
        self._coalesced = 0
        self._revalidated = 0
        self._disk_errors = 0  # not persisted: a count of this run's disk trouble
        self._not_found = 0  # media answers 404/410, whatever their result; not persisted
        self._invalidations = dict.fromkeys(INVALIDATION_TYPES, 0)
        self._denied = dict.fromkeys(DENIED_REASONS, 0)
        # Per result: non-cumulative counts, one per bucket plus +Inf; and the sum.
        self._durations = {r: [0] * (len(DURATION_BUCKETS) + 1) for r in RESULTS}
        self._duration_sums = dict.fromkeys(RESULTS, 0.0)
        # 4k counters: with a skewed miss stream the true top k are found;
        # see proxy/topk.py for the guarantee.
        self._missed = SpaceSaving(max(4 * top_k, 1))
        self._history: deque[dict[str, Any]] = deque(maxlen=math.ceil(history_seconds / sample_every) + 1)
        self._last_sample = self._sample_base()
        self.workers = 1  # serving processes these counters are the total of (mediaedge.workers)

    # -- the hot path ---------------------------------------------------------

    def record(self, *, result: str, source: str | None, body_bytes: int, duration: float, path: str,
               status: int = 0) -> None:
        """One media request finished. `path` is its canonical target (path?query);
        `status` its answer's status, so 404s can be told apart from misses."""
        if result not in _RESULT_SET or (source is not None and source not in _SOURCE_SET):
            raise ValueError(f"unknown result {result!r} or source {source!r}")
        if status == 404 or status == 410:
            self._not_found += 1
        totals = self._totals
        totals.results[result] += 1
        if source is not None:
            totals.served[source] += body_bytes
        for prefix in self._prefix_names:
            if path.startswith(prefix):
                counts = self._prefixes[prefix]
                counts.results[result] += 1
                if source is not None:
                    counts.served[source] += body_bytes
                break
        self._durations[result][bisect_left(DURATION_BUCKETS, duration)] += 1
        self._duration_sums[result] += duration
        if result == "miss":
            self._missed.add(path)

    def origin_fetch(self, origin: str, outcome: str) -> None:
        """One fetch from `origin` (upstream|db) ended with `outcome` (ok|notfound|error)."""
        try:
            self._origin[origin][outcome] += 1
        except KeyError:
            raise ValueError(f"unknown origin {origin!r} or outcome {outcome!r}") from None

    def coalesced(self) -> None:
        """A request joined an origin fetch already running for its key."""
        self._coalesced += 1

    def revalidated(self) -> None:
        """A response served from cache after a 304 revalidation (also recorded as a hit)."""
        self._revalidated += 1

    def denied(self, reason: str) -> None:
        """A refusal by a signed-URL or auth check; its request is recorded as an error too."""
        if reason in self._denied:
            self._denied[reason] += 1

    def disk_error(self) -> None:
        """The cache disk failed a write (full, read-only): a response passed through unstored."""
        self._disk_errors += 1

    def invalidation(self, type_: str, count: int = 1) -> None:
        """`count` invalidation events of `type_` (publish, delete, purge, soft-purge, abort...)."""
        self._invalidations[type_] = self._invalidations.get(type_, 0) + count

    # -- reading --------------------------------------------------------------

    @property
    def since(self) -> float:
        return self._since

    def snapshot(self, *, entries: int, cache_bytes: int, cache_size: int, invalidation_seq: int | None = None) -> dict[str, Any]:
        """The /stats document: contract section 5, then extra keys."""
        totals = self._totals.view()
        del totals["bytes"], totals["bytes_served"]
        return {
            **totals,
            "origin_fetches": {o: sum(outcomes.values()) for o, outcomes in self._origin.items()},
            "coalesced": self._coalesced,
            "revalidated": self._revalidated,
            "bytes_served": dict(self._totals.served),
            "entries": entries,
            "cache_bytes": cache_bytes,
            "invalidations": sum(self._invalidations.values()),
            "since": iso8601(self._since),
            "denied": sum(self._denied.values()),
            # How many serving processes answered (--workers: the supervisor sets the count).
            "workers": self.workers,
            # extras
            "denied_by_reason": dict(self._denied),
            "cache_size": cache_size,
            "invalidation_seq": invalidation_seq,
            "prefixes": {p: self._prefixes[p].view() for p in sorted(self._prefixes)},
            "top_missed": self.top_missed(),
            "origin_fetch_outcomes": {o: dict(outcomes) for o, outcomes in self._origin.items()},
            "invalidations_by_type": dict(self._invalidations),
            "disk_errors": self._disk_errors,
            "not_found": self._not_found,
        }

    def top_missed(self, n: int | None = None) -> list[dict[str, Any]]:
        """The most missed paths since start, most first. Counts may overestimate
        by the space-saving error; exact while fewer than 4k paths were missed."""
        return [{"path": p, "count": c} for p, c in self._missed.top(self.top_k if n is None else n)]

    def duration_histogram(self) -> dict[str, tuple[list[tuple[float, int]], int, float]]:
        """Per result: ([(upper bound, cumulative count)...] ending with +Inf, count, sum)."""
        out = {}
        for result, counts in self._durations.items():
            cumulative, running = [], 0
            for bound, n in zip((*DURATION_BUCKETS, math.inf), counts):
                running += n
                cumulative.append((bound, running))
            out[result] = (cumulative, running, self._duration_sums[result])
        return out

    # -- history (the dashboard's chart) --------------------------------------

    def sample(self) -> None:
        """Append a point: ratios over the interval since the previous sample
        (None when it had no requests / no bytes), the interval's counts they
        come from (so a reader can merge points exactly), and the cumulative ratios."""
        now = self._clock()
        base = self._sample_base()
        requests, good, cache, served = (b - a for a, b in zip(self._last_sample, base))
        self._last_sample = base
        self._history.append({
            "t": now,
            "hit_ratio": good / requests if requests > 0 else None,
            "byte_hit_ratio": cache / served if served > 0 else None,
            "requests": requests,
            "hits": good,
            "bytes": served,
            "bytes_cache": cache,
            "hit_ratio_total": hit_ratio(self._totals.results),
            "byte_hit_ratio_total": byte_hit_ratio(self._totals.served),
        })

    def history(self) -> list[dict[str, Any]]:
        """The points of the last `history_seconds`, oldest first."""
        oldest = self._clock() - self.history_seconds
        return [dict(p) for p in self._history if p["t"] >= oldest]

    def cumulative(self) -> tuple[dict[str, int], int, list[int]]:
        """Counts since start for rates over a window (mediaedge.rates): requests by
        result, 404/410 answers, and the request-duration histogram summed over results
        (one non-cumulative count per DURATION_BUCKETS bound, then +Inf)."""
        buckets = [sum(column) for column in zip(*self._durations.values())]
        return dict(self._totals.results), self._not_found, buckets

    def _sample_base(self) -> tuple[int, int, int, int]:
        results, served = self._totals.results, self._totals.served
        return (sum(results.values()), results["hit"] + results["stale"], served["cache"], sum(served.values()))

    # -- persistence ------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything needed to resume the counters, as plain JSON values.
        Take it on the loop thread; write it anywhere (`write_state`)."""
        return {
            "version": STATE_VERSION,
            "saved_at": self._clock(),
            "since": self._since,
            "totals": self._totals.state(),
            "prefixes": {p: c.state() for p, c in self._prefixes.items()},
            "origin_fetches": {o: dict(v) for o, v in self._origin.items()},
            "coalesced": self._coalesced,
            "revalidated": self._revalidated,
            "invalidations": dict(self._invalidations),
            "denied": dict(self._denied),
            "durations": {r: {"counts": list(c), "sum": self._duration_sums[r]} for r, c in self._durations.items()},
            "top_missed": self._missed.items(),
            "history": list(self._history),
        }

    def save(self, path: str) -> None:
        """Write `state()` to `path` atomically. Does file I/O: from the loop, prefer
        `data = stats.state()` there and `asyncio.to_thread(write_state, path, data)`."""
        write_state(path, self.state())

    def restore(self, path: str) -> bool:
        """Resume the counters saved in `path`. A missing or damaged file leaves
        the counters as they are (logged); returns whether anything was restored."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            self._apply_state(data)
        except FileNotFoundError:
            return False
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("stats file %s ignored (%s: %s); counters start from zero", path, type(e).__name__, e)
            return False
        return True

    @classmethod
    def from_state(cls, data: Mapping[str, Any], *, disk_errors: int = 0, not_found: int = 0,
                   **kwargs: Any) -> Stats:
        """Counters resumed from `state()` (e.g. `merge_states` of every worker), plus the
        two this-run-only counts that `state()` leaves out. Raises on a damaged state."""
        stats = cls(**kwargs)
        stats._apply_state(data)
        stats._disk_errors, stats._not_found = disk_errors, not_found
        return stats

    @classmethod
    def load(cls, path: str, **kwargs: Any) -> Stats:
        stats = cls(**kwargs)
        stats.restore(path)
        return stats

    def _apply_state(self, data: Any) -> None:
        # Parse everything first, then assign: a damaged file changes nothing.
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
        since = _number(data["since"])
        totals = _Counts.from_state(data["totals"])
        saved_prefixes = data.get("prefixes", {})
        prefixes = {p: _Counts.from_state(saved_prefixes[p]) if p in saved_prefixes else _Counts() for p in self._prefix_names}
        origin = {o: _counters(data["origin_fetches"].get(o, {}), OUTCOMES) for o in ORIGINS}
        coalesced = _count(data.get("coalesced", 0))
        revalidated = _count(data.get("revalidated", 0))
        invalidations = dict.fromkeys(INVALIDATION_TYPES, 0)
        invalidations.update((str(k), _count(v)) for k, v in data.get("invalidations", {}).items())
        denied = dict.fromkeys(DENIED_REASONS, 0)
        denied.update((str(k), _count(v)) for k, v in data.get("denied", {}).items() if k in denied)
        durations, sums = {}, {}
        for r in RESULTS:
            saved = data["durations"][r]
            counts = [_count(n) for n in saved["counts"]]
            if len(counts) != len(DURATION_BUCKETS) + 1:
                raise ValueError("duration buckets changed")
            durations[r], sums[r] = counts, _number(saved["sum"])
        missed = SpaceSaving.from_items(self._missed.capacity, _missed_items(data.get("top_missed", [])))
        history = [_history_point(p) for p in data.get("history", [])]

        self._since, self._totals, self._prefixes, self._origin = since, totals, prefixes, origin
        self._coalesced, self._invalidations, self._denied = coalesced, invalidations, denied
        self._revalidated = revalidated
        self._durations, self._duration_sums, self._missed = durations, sums, missed
        self._history.clear()
        self._history.extend(history)
        self._last_sample = self._sample_base()


def merge_states(states: list[Mapping[str, Any]], *, sample_every: float = 5.0) -> dict[str, Any]:
    """The `Stats.state()` of several processes (--workers) as one: every counter and
    histogram bucket summed, `since` the earliest, the missed-path summaries merged
    (space-saving summaries add: counts and errors), history points of the same
    sampling slot summed. Pure: the supervisor's /stats and /metrics are built on it."""
    if not states:
        return Stats().state()

    def add(into: dict[str, Any], more: Mapping[str, Any]) -> None:
        for key, value in more.items():
            if isinstance(value, dict):
                add(into.setdefault(key, {}), value)
            elif isinstance(value, list) and key == "counts":
                into[key] = [a + b for a, b in zip(into.get(key) or [0] * len(value), value)]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                into[key] = into.get(key, 0) + value

    summed: dict[str, Any] = {}
    for key in ("totals", "prefixes", "origin_fetches", "invalidations", "denied", "durations"):
        part: dict[str, Any] = {}
        for state in states:
            add(part, state.get(key, {}))
        summed[key] = part
    missed: dict[str, list[int]] = {}
    for state in states:
        for path, count, error in state.get("top_missed", []):
            entry = missed.setdefault(path, [0, 0])
            entry[0] += count
            entry[1] += error
    slots: dict[int, dict[str, Any]] = {}
    for state in states:
        for point in state.get("history", []):
            slot = slots.setdefault(round(point["t"] / sample_every), {
                "t": point["t"], "requests": 0, "hits": 0, "bytes": 0, "bytes_cache": 0,
                "hit_ratio_total": point.get("hit_ratio_total"),
                "byte_hit_ratio_total": point.get("byte_hit_ratio_total")})
            slot["t"] = max(slot["t"], point["t"])
            for key in ("requests", "hits", "bytes", "bytes_cache"):
                slot[key] += point.get(key, 0)
    history = []
    for _, point in sorted(slots.items()):
        point["hit_ratio"] = point["hits"] / point["requests"] if point["requests"] else None
        point["byte_hit_ratio"] = point["bytes_cache"] / point["bytes"] if point["bytes"] else None
        history.append(point)
    return {
        "version": STATE_VERSION,
        "saved_at": max(_number(s.get("saved_at", 0)) for s in states),
        "since": min(_number(s["since"]) for s in states),
        **summed,
        "coalesced": sum(_count(s.get("coalesced", 0)) for s in states),
        "revalidated": sum(_count(s.get("revalidated", 0)) for s in states),
        "top_missed": sorted(([p, c, e] for p, (c, e) in missed.items()), key=lambda i: -i[1]),
        "history": history,
    }


def write_state(path: str, data: Mapping[str, Any]) -> None:
    """Write JSON to `path` atomically: a temp file in the same directory,
    fsynced, then renamed over the old one, so a crash leaves old or new."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stats-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- validation of a saved state (each raises ValueError/TypeError/KeyError) --

def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"bad counter {value!r}")
    return value


def _number(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"bad number {value!r}")
    return float(value)


def _counters(data: Any, keys: Iterable[str]) -> dict[str, int]:
    return {k: _count(data.get(k, 0)) for k in keys}


def _missed_items(data: Any) -> list[tuple[str, int, int]]:
    items = []
    for item, count, error in data:
        if not isinstance(item, str):
            raise ValueError(f"bad path {item!r}")
        items.append((item, _count(count), _count(error)))
    return items


def _history_point(p: Any) -> dict[str, Any]:
    point = {"t": _number(p["t"]), "requests": _count(p["requests"])}
    for key in ("hits", "bytes", "bytes_cache"):
        point[key] = _count(p.get(key, 0))
    for key in ("hit_ratio", "byte_hit_ratio", "hit_ratio_total", "byte_hit_ratio_total"):
        value = p.get(key)
        point[key] = None if value is None else _number(value)  # type: ignore[assignment]  # JSON null stays null
    return point
