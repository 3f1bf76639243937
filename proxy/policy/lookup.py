"""Where a cache lookup runs: on the event loop, or on a worker thread.

A small entry's lookup is two indexed SQLite row reads (one statement) and a SHA-256
of at most 32 KB: ~60-70 µs at 10k and at 1M entries alike (measured, bench/populate.py caches). The hop
to a worker thread and back costs more than that on a busy 2-core machine (a queue
put, a thread wake-up, a self-pipe write, a loop wake-up: two scheduler round trips),
and it was a good part of the difference between a hit served from the memory tier and
one served from disk (random-key p50 0.75 ms at 10k entries, where every entry fits in
memory, against 1.55 ms at 100k and 1M; ~90 µs of CPU per disk hit, measured with
bench/entries_ab.py). So small lookups run on the loop, as long as
they stay cheap: when the database pages are not in the OS page cache (a cache much
larger than RAM), a read waits on the disk and would hold every other connection up.
The share of recent inline lookups that took longer than the budget says which: when
most of them do, lookups go back to a worker thread, with one probe on the loop every
`PROBE_EVERY` lookups to notice when they are cheap again. A share, not an average of
durations: on a busy machine some lookups are preempted mid-way (milliseconds of wall
time for microseconds of work), and those must not send every lookup to the thread.

Pure: durations are passed in (microseconds), no clock, no I/O.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

BUDGET_US = 250.0  # an inline lookup slower than this would have been cheaper on a worker thread
SLOW_SHARE = 0.5  # when more than this share of recent inline lookups is slow, use the thread
ALPHA = 0.05  # weight of the newest lookup in the share (~20 lookups of memory)
PROBE_EVERY = 64  # while on the thread, one lookup in this many still runs inline to re-measure


class Placement(NamedTuple):
    inline: bool
    reason: str


def place_lookup(slow_share: float, since_inline: int, *, limit: float = SLOW_SHARE,
                 probe_every: int = PROBE_EVERY) -> Placement:
    """Run the next lookup inline (on the event loop) or on a worker thread?

    `slow_share`: recent inline lookups slower than the budget (`slow_share_after`);
    `since_inline`: lookups sent to a thread since the last inline one."""
    if slow_share <= limit:
        return Placement(True, "inline lookups are cheap")
    if since_inline + 1 >= probe_every:
        return Placement(True, "probe: are inline lookups cheap again?")
    return Placement(False, f"{slow_share:.0%} of recent inline lookups took over {BUDGET_US:.0f} µs: disk-bound")


def slow_share_after(share: float, took_us: float, *, budget_us: float = BUDGET_US, alpha: float = ALPHA) -> float:
    """The share of slow inline lookups, moved by one more that took `took_us`."""
    return share + alpha * ((1.0 if took_us > budget_us else 0.0) - share)


class InlineReads:
    """What small reads on the event loop (the hit slab's, the inline rows') have cost lately,
    and so whether the next one runs there: `place_lookup` over `slow_share_after`.
    One per cache store, touched by the event loop only. Pure: durations are passed in."""

    def __init__(self) -> None:
        self.slow_share = 0.0  # share of recent inline reads over budget
        self.since_inline = 0  # reads sent to a thread since the last inline one

    def allowed(self) -> bool:
        """Run the next small read here? (A False counts towards the next probe.)"""
        if not place_lookup(self.slow_share, self.since_inline).inline:
            self.since_inline += 1
            return False
        self.since_inline = 0
        return True

    def took(self, took_us: float) -> None:
        """One inline read took `took_us` microseconds."""
        self.slow_share = slow_share_after(self.slow_share, took_us)


# ------------------------------------------------------------------ the database in the OS page cache
# A lookup costs ~30 µs while the pages it reads (index and row, pointer and entry) are in
# the OS page cache, and several random disk reads when they are not: measured at 1M
# entries (2.1 GB database) right after dropping it from the page cache, p50 230 µs and
# p99 1.6 ms per lookup, against 32 µs and 0.1 ms once the file was read (4.3 s); end to end
# that was the whole gap between a memory-tier hit and a disk hit (docs/BENCHMARKS.md).
# A node restarted on a large cache would otherwise warm it one random 4 KB read per
# request. Read ahead only while it leaves most of the memory to everything else.
PREWARM_SHARE = 0.25


class Prewarm(NamedTuple):
    warm: bool
    reason: str
    parts: tuple[str, ...] = ()  # what to read, in this order


def prewarm(parts: Sequence[tuple[str, int]], available_bytes: int | None, *,
            share: float = PREWARM_SHARE) -> Prewarm:
    """What of the cache to read once at start, so its pages are in the OS page cache?

    `parts`: (name, bytes on disk) in the order they serve hits: the hit slab (small
    entries' values, proxy/hitslab.py) first, then the SQLite database with its WAL (index,
    pointers, small entries inline again). The longest run of them from the first that
    fits in `share` of `available_bytes` (memory available to the page cache; None:
    unknown, read nothing)."""
    if available_bytes is None:
        return Prewarm(False, "available memory unknown")
    budget = available_bytes * share
    chosen: list[str] = []
    total = 0
    for name, size in parts:
        if total + size > budget:
            break
        chosen.append(name)
        total += size
    described = ", ".join(f"{name} {size >> 20} MiB" for name, size in parts) or "nothing"
    if not chosen:
        return Prewarm(False, f"{described}: over {share:.0%} of the {available_bytes >> 20} MiB available")
    left = [name for name, _ in parts[len(chosen):]]
    return Prewarm(True, f"{described}: {', '.join(chosen)} fit{'s' if len(chosen) == 1 else ''} in {share:.0%} "
                         f"of the {available_bytes >> 20} MiB available" + (f" ({', '.join(left)} not read)" if left else ""),
                   tuple(chosen))
