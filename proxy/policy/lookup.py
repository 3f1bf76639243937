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


def prewarm(db_bytes: int, available_bytes: int | None, *, share: float = PREWARM_SHARE) -> Prewarm:
    """Read the cache database once at start, so its pages are in the OS page cache?

    `db_bytes`: the SQLite database (index, pointers, small entries inline) and its WAL;
    `available_bytes`: memory available to the page cache (None: unknown)."""
    if available_bytes is None:
        return Prewarm(False, "available memory unknown")
    if db_bytes > available_bytes * share:
        return Prewarm(False, f"database {db_bytes >> 20} MiB is over {share:.0%} of the "
                              f"{available_bytes >> 20} MiB available")
    return Prewarm(True, f"database {db_bytes >> 20} MiB fits in {share:.0%} of the {available_bytes >> 20} MiB available")
