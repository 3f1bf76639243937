"""mediaedge.rates: rates and latency quantiles from per-minute snapshots (pure, clock passed in)."""
from __future__ import annotations

import pytest

from mediaedge.rates import MinuteRing, Snapshot, between, quantile
from mediaedge.stats import DURATION_BUCKETS, RESULTS, Stats

ZERO_BUCKETS = (0,) * (len(DURATION_BUCKETS) + 1)


def snap(t, *, hit=0, miss=0, error=0, not_found=0, evictions=0, buckets=ZERO_BUCKETS):
    counts = {"hit": hit, "stale": 0, "miss": miss, "pass": 0, "error": error}
    return Snapshot(t, tuple(counts[r] for r in RESULTS), not_found, tuple(buckets), evictions)


def buckets_with(**at):
    """Non-cumulative counts: at={"0.001": 5} puts 5 requests in the bucket bounded by 0.001."""
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    for bound, n in at.items():
        counts[len(DURATION_BUCKETS) if bound == "inf" else DURATION_BUCKETS.index(float(bound))] += n
    return tuple(counts)


@pytest.mark.parametrize(("q", "counts", "expected"), [
    # all in the first bucket (0, 0.0005]: interpolated from 0
    (0.5, buckets_with(**{"0.0005": 10}), 0.00025),
    (0.99, buckets_with(**{"0.0005": 10}), 0.000495),
    # 90 fast, 10 slow: p50 among the fast, p99 inside the slow bucket (0.5, 1.0]
    (0.5, buckets_with(**{"0.001": 90, "1.0": 10}), 0.0005 + 0.0005 * 50 / 90),
    (0.99, buckets_with(**{"0.001": 90, "1.0": 10}), 0.5 + 0.5 * 9 / 10),
    # in +Inf: the highest finite bound, as histogram_quantile answers
    (0.99, buckets_with(inf=10), 10.0),
    (0.5, ZERO_BUCKETS, None),
])
def test_quantile(q, counts, expected):
    result = quantile(q, DURATION_BUCKETS, counts)
    assert result == (None if expected is None else pytest.approx(expected))


def test_between_gives_rates_per_second():
    w = between(snap(0, hit=100, miss=10), snap(60, hit=700, miss=70, error=6, not_found=12, evictions=3,
                                                  buckets=buckets_with(**{"0.001": 782})))
    assert w.seconds == 60
    assert w.per_second["requests"] == pytest.approx(666 / 60)
    assert w.per_second["hit"] == 10.0 and w.per_second["miss"] == 1.0 and w.per_second["error"] == 0.1
    assert w.per_second["not_found"] == 0.2 and w.per_second["evictions"] == 0.05
    assert w.p50 == pytest.approx(0.00075) and w.p99 == pytest.approx(0.0005 + 0.0005 * 0.99)


def test_a_counter_that_went_down_is_a_reset():
    w = between(snap(0, hit=1000), snap(10, hit=50))
    assert w.per_second["hit"] == 5.0


def test_ring_keeps_one_snapshot_a_minute_for_an_hour():
    ring = MinuteRing()
    for second in range(0, 3 * 3600, 5):  # a sampler every 5 s for three hours
        ring.observe(snap(second, hit=second))
    assert len(ring._ring) == 61  # bounded, whatever the uptime
    now = snap(3 * 3600, hit=3 * 3600)
    w = ring.last_hour(now)
    assert w is not None and 3600 <= w.seconds <= 3630
    assert w.per_second["hit"] == pytest.approx(1.0)
    minutes = ring.per_minute(now)
    assert 60 <= len(minutes) <= 61 and all(m.per_second["hit"] == pytest.approx(1.0) for _t, m in minutes)


def test_young_ring_covers_since_start_and_empty_ring_says_none():
    ring = MinuteRing()
    assert ring.last_hour(snap(0)) is None
    ring.observe(snap(0))
    ring.observe(snap(30, hit=30))  # under a minute after the last kept: not kept
    assert len(ring._ring) == 1
    w = ring.last_hour(snap(90, hit=180))
    assert w is not None and w.seconds == 90 and w.per_second["hit"] == 2.0


def test_stats_cumulative_feeds_the_ring():
    stats = Stats(clock=lambda: 1000.0)
    stats.record(result="hit", source="cache", body_bytes=1, duration=0.0004, path="/media/a")
    stats.record(result="miss", source="db", body_bytes=1, duration=0.2, path="/media/b", status=404)
    stats.record(result="miss", source="db", body_bytes=1, duration=0.2, path="/media/c", status=200)
    results, not_found, buckets = stats.cumulative()
    assert results == {"hit": 1, "stale": 0, "miss": 2, "pass": 0, "error": 0}
    assert not_found == 1
    assert buckets == list(buckets_with(**{"0.0005": 1, "0.25": 2}))
    assert stats.snapshot(entries=0, cache_bytes=0, cache_size=0)["not_found"] == 1
