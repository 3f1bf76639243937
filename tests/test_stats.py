"""mediaedge.stats and mediaedge.topk: counters that reconcile exactly, with a fake clock.

A scripted run of known traffic is replayed into Stats and every number of the
/stats document is checked against what the script says it must be.
"""
from __future__ import annotations

import json
import math
import os
import random
from collections import Counter

import pytest

from mediaedge.stats import DURATION_BUCKETS, RESULTS, SOURCES, Stats, write_state
from mediaedge.topk import SpaceSaving


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


PREFIXES = ("/media/", "/media/catalog/", "/static/")

# (result, source, body bytes, path): a scripted hour of known traffic.
SCRIPT = [
    ("miss", "db", 1000, "/media/catalog/a.jpg"),
    ("hit", "cache", 1000, "/media/catalog/a.jpg"),
    ("hit", "cache", 1000, "/media/catalog/a.jpg"),
    ("miss", "upstream", 500, "/media/b.png"),
    ("stale", "cache", 500, "/media/b.png"),
    ("pass", "upstream", 200, "/media/private.jpg"),
    ("error", None, 30, "/media/catalog/broken.jpg"),
    ("miss", "db", 4000, "/media/catalog/c.jpg"),
    ("miss", "db", 4000, "/media/catalog/c.jpg"),
    ("hit", None, 0, "/media/catalog/c.jpg"),  # a 304 from cache: no body, no source
    ("miss", "upstream", 50, "/static/app.css"),
    ("hit", "cache", 50, "/static/app.css"),
    ("miss", "db", 7, "/elsewhere/x"),  # matches no configured prefix
]


def replay(stats: Stats, script=SCRIPT, duration: float = 0.002) -> None:
    for result, source, size, path in script:
        stats.record(result=result, source=source, body_bytes=size, duration=duration, path=path)


def snap(stats: Stats, **kw) -> dict:
    return stats.snapshot(entries=kw.get("entries", 3), cache_bytes=kw.get("cache_bytes", 9000),
                          cache_size=kw.get("cache_size", 1 << 20), invalidation_seq=kw.get("invalidation_seq"))


# -- the /stats document ------------------------------------------------------

def test_scripted_run_reconciles_exactly():
    stats = Stats(clock=Clock(), prefixes=PREFIXES)
    replay(stats)
    for origin, outcome in [("db", "ok")] * 4 + [("upstream", "ok")] * 3 + [("upstream", "error"), ("db", "notfound")]:
        stats.origin_fetch(origin, outcome)
    stats.coalesced()
    stats.coalesced()
    stats.revalidated()
    stats.invalidation("publish")
    stats.invalidation("purge", 3)
    s = snap(stats, invalidation_seq=42)

    assert (s["requests"], s["hits"], s["stale"], s["misses"], s["passes"], s["errors"]) == (13, 4, 1, 6, 1, 1)
    assert s["requests"] == s["hits"] + s["stale"] + s["misses"] + s["passes"] + s["errors"]
    assert s["hit_ratio"] == 5 / 13
    assert s["bytes_served"] == {"cache": 2550, "upstream": 750, "db": 9007}
    assert s["byte_hit_ratio"] == 2550 / (2550 + 750 + 9007)
    assert s["origin_fetches"] == {"upstream": 4, "db": 5}
    assert s["origin_fetch_outcomes"] == {"upstream": {"ok": 3, "notmodified": 0, "notfound": 0, "error": 1},
                                          "db": {"ok": 4, "notmodified": 0, "notfound": 1, "error": 0}}
    assert s["coalesced"] == 2
    assert s["revalidated"] == 1
    assert s["invalidations"] == 4
    assert s["invalidations_by_type"] == {"publish": 1, "delete": 0, "purge": 3, "soft-purge": 0, "abort": 0}
    assert (s["entries"], s["cache_bytes"], s["cache_size"], s["invalidation_seq"]) == (3, 9000, 1 << 20, 42)
    assert s["since"] == "2023-11-14T22:13:20+00:00"
    json.dumps(s)  # a JSON document, nothing else


def test_contract_keys_and_types():
    s = snap(Stats(clock=Clock()))
    for key in ("requests", "hits", "misses", "stale", "passes", "errors", "coalesced", "revalidated", "entries",
                "cache_bytes", "invalidations"):
        assert type(s[key]) is int, key
    assert s["hit_ratio"] == 0.0 and s["byte_hit_ratio"] == 0.0  # 0 when none, not NaN or None
    assert type(s["hit_ratio"]) is float and type(s["byte_hit_ratio"]) is float
    assert set(s["origin_fetches"]) == {"upstream", "db"}
    assert set(s["bytes_served"]) == {"cache", "upstream", "db"}
    assert isinstance(s["since"], str)


def test_per_prefix_uses_the_longest_matching_prefix():
    stats = Stats(clock=Clock(), prefixes=PREFIXES)
    replay(stats)
    p = snap(stats)["prefixes"]
    assert list(p) == sorted(PREFIXES)
    catalog, media, static = p["/media/catalog/"], p["/media/"], p["/static/"]
    assert (catalog["requests"], catalog["hits"], catalog["misses"], catalog["errors"]) == (7, 3, 3, 1)
    assert catalog["bytes_served"] == {"cache": 2000, "upstream": 0, "db": 9000}
    assert catalog["bytes"] == 11000
    assert catalog["hit_ratio"] == 3 / 7 and catalog["byte_hit_ratio"] == 2000 / 11000
    assert (media["requests"], media["hits"], media["stale"], media["misses"], media["passes"]) == (3, 0, 1, 1, 1)
    assert media["bytes_served"] == {"cache": 500, "upstream": 700, "db": 0}
    assert (static["requests"], static["hit_ratio"], static["byte_hit_ratio"]) == (2, 0.5, 0.5)
    # /elsewhere/x is counted in the totals but under no prefix
    assert sum(v["requests"] for v in p.values()) == snap(stats)["requests"] - 1
    for view in p.values():
        assert view["requests"] == view["hits"] + view["stale"] + view["misses"] + view["passes"] + view["errors"]


def test_top_missed_counts_misses_only():
    stats = Stats(clock=Clock(), prefixes=PREFIXES)
    replay(stats)
    assert snap(stats)["top_missed"] == [
        {"path": "/media/catalog/c.jpg", "count": 2},
        {"path": "/media/catalog/a.jpg", "count": 1},
        {"path": "/media/b.png", "count": 1},
        {"path": "/static/app.css", "count": 1},
        {"path": "/elsewhere/x", "count": 1},
    ]


def test_top_missed_is_bounded_under_a_scan_of_unique_paths():
    stats = Stats(clock=Clock(), top_k=20)
    for i in range(10_000):
        stats.record(result="miss", source="db", body_bytes=1, duration=0.01, path=f"/media/scan/{i}")
        if i % 10 == 0:
            stats.record(result="miss", source="db", body_bytes=1, duration=0.01, path="/media/hot.jpg")
    top = snap(stats)["top_missed"]
    assert len(top) == 20
    assert top[0]["path"] == "/media/hot.jpg" and top[0]["count"] >= 1000
    assert len(stats._missed) <= 80


def test_unknown_result_or_source_is_refused_and_counts_nothing():
    stats = Stats(clock=Clock())
    with pytest.raises(ValueError):
        stats.record(result="HIT", source="cache", body_bytes=1, duration=0.1, path="/media/a")
    with pytest.raises(ValueError):
        stats.record(result="hit", source="disk", body_bytes=1, duration=0.1, path="/media/a")
    with pytest.raises(ValueError):
        stats.origin_fetch("cdn", "ok")
    with pytest.raises(ValueError):
        stats.origin_fetch("db", "timeout")
    s = snap(stats)
    assert s["requests"] == 0 and sum(s["bytes_served"].values()) == 0 and sum(s["origin_fetches"].values()) == 0


def test_invariant_holds_for_random_traffic():
    rng = random.Random(7)
    stats = Stats(clock=Clock(), prefixes=PREFIXES)
    expect_results, expect_bytes = Counter(), Counter()
    for _ in range(5000):
        result = rng.choice(RESULTS)
        source = rng.choice((*SOURCES, None))
        size = rng.randint(0, 10_000)
        stats.record(result=result, source=source, body_bytes=size, duration=rng.random(), path=rng.choice(PREFIXES) + "x")
        expect_results[result] += 1
        if source:
            expect_bytes[source] += size
    s = snap(stats)
    assert s["requests"] == 5000 == s["hits"] + s["stale"] + s["misses"] + s["passes"] + s["errors"]
    assert (s["hits"], s["stale"], s["misses"], s["passes"], s["errors"]) == tuple(expect_results[r] for r in RESULTS)
    assert s["bytes_served"] == {k: expect_bytes[k] for k in SOURCES}
    assert s["hit_ratio"] == (s["hits"] + s["stale"]) / 5000
    assert sum(v["requests"] for v in s["prefixes"].values()) == 5000


# -- duration histogram ---------------------------------------------------------

def test_duration_histogram_buckets_are_upper_bounds():
    stats = Stats(clock=Clock())
    for d in (0.0001, 0.0005, 0.0006, 0.3, 10.0, 42.0):
        stats.record(result="hit", source="cache", body_bytes=1, duration=d, path="/media/a")
    buckets, count, total = stats.duration_histogram()["hit"]
    assert [b for b, _ in buckets] == [*DURATION_BUCKETS, math.inf]
    cumulative = dict(buckets)
    assert cumulative[0.0005] == 2  # le is inclusive
    assert cumulative[0.001] == 3
    assert cumulative[0.25] == 3 and cumulative[0.5] == 4
    assert cumulative[10.0] == 5 and cumulative[math.inf] == 6 == count
    assert total == pytest.approx(52.3012)
    assert stats.duration_histogram()["miss"][1] == 0


# -- history (ring buffer) --------------------------------------------------------

def test_sample_gives_interval_ratios_and_none_without_traffic():
    clock = Clock()
    stats = Stats(clock=clock, sample_every=5)
    clock.t += 5
    stats.sample()  # nothing happened
    replay(stats, [("hit", "cache", 300, "/media/a"), ("miss", "db", 100, "/media/b")])
    clock.t += 5
    stats.sample()
    replay(stats, [("hit", "cache", 100, "/media/a")] * 3)
    clock.t += 5
    stats.sample()
    replay(stats, [("hit", None, 0, "/media/a")])  # a 304: a request, no bytes
    clock.t += 5
    stats.sample()
    h = stats.history()
    assert [p["t"] for p in h] == [clock.t - 15, clock.t - 10, clock.t - 5, clock.t]
    assert [p["requests"] for p in h] == [0, 2, 3, 1]
    assert [p["hit_ratio"] for p in h] == [None, 0.5, 1.0, 1.0]
    assert [p["byte_hit_ratio"] for p in h] == [None, 0.75, 1.0, None]
    assert [(p["hits"], p["bytes"], p["bytes_cache"]) for p in h] == [(0, 0, 0), (1, 400, 300), (3, 300, 300), (1, 0, 0)]
    assert h[-1]["hit_ratio_total"] == 5 / 6
    assert h[-1]["byte_hit_ratio_total"] == 600 / 700


def test_history_is_a_ring_of_the_last_hour():
    clock = Clock()
    stats = Stats(clock=clock, history_seconds=3600, sample_every=5)
    for _ in range(2000):
        clock.t += 5
        stats.sample()
    h = stats.history()
    assert len(h) == 721  # 0..3600 s back, both ends included
    assert h[0]["t"] == clock.t - 3600 and h[-1]["t"] == clock.t
    clock.t += 1800  # no samples for half an hour (e.g. the timer stalled): old points age out
    assert len(stats.history()) == 361


# -- persistence ------------------------------------------------------------------

def test_save_and_restore_round_trip(tmp_path):
    clock = Clock()
    stats = Stats(clock=clock, prefixes=PREFIXES)
    replay(stats)
    stats.origin_fetch("db", "ok")
    stats.origin_fetch("upstream", "notmodified")
    stats.coalesced()
    stats.revalidated()
    stats.invalidation("soft-purge", 2)
    stats.invalidation("custom", 1)
    clock.t += 5
    stats.sample()
    path = tmp_path / "stats.json"
    stats.save(str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]  # no temp file left behind

    clock.t += 60  # a restart a minute later
    again = Stats(clock=clock, prefixes=PREFIXES)
    assert again.restore(str(path)) is True
    assert snap(again) == snap(stats)
    assert again.history() == stats.history()
    assert again.duration_histogram() == stats.duration_histogram()
    # the next interval starts from the restored totals, not from zero
    replay(again, [("hit", "cache", 10, "/media/a")])
    clock.t += 5
    again.sample()
    assert again.history()[-1]["requests"] == 1


def test_restore_keeps_only_configured_prefixes(tmp_path):
    stats = Stats(clock=Clock(), prefixes=PREFIXES)
    replay(stats)
    stats.save(str(tmp_path / "s.json"))
    again = Stats(clock=Clock(), prefixes=("/media/catalog/", "/new/"))
    assert again.restore(str(tmp_path / "s.json"))
    p = snap(again)["prefixes"]
    assert set(p) == {"/media/catalog/", "/new/"}
    assert p["/media/catalog/"]["requests"] == 7 and p["/new/"]["requests"] == 0


def test_load_classmethod(tmp_path):
    stats = Stats(clock=Clock())
    replay(stats)
    stats.save(str(tmp_path / "s.json"))
    assert snap(Stats.load(str(tmp_path / "s.json"), clock=Clock()))["requests"] == 13


@pytest.mark.parametrize("content", [
    "",
    "{not json",
    "[]",
    '{"version": 99}',
    "null",
])
def test_restore_tolerates_a_damaged_file(tmp_path, content):
    path = tmp_path / "stats.json"
    path.write_text(content)
    stats = Stats(clock=Clock())
    replay(stats)
    before = snap(stats)
    assert stats.restore(str(path)) is False
    assert snap(stats) == before


def test_restore_rejects_bad_values_without_partial_changes(tmp_path):
    good = Stats(clock=Clock(), prefixes=PREFIXES)
    replay(good)
    state = good.state()
    state["durations"]["miss"]["counts"][0] = -1  # parsed after the totals: must not leave them applied
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(state))
    fresh = Stats(clock=Clock(), prefixes=PREFIXES)
    assert fresh.restore(str(path)) is False
    assert snap(fresh)["requests"] == 0


def test_restore_of_a_missing_file_is_a_fresh_start(tmp_path):
    stats = Stats(clock=Clock())
    assert stats.restore(str(tmp_path / "nope.json")) is False
    assert snap(stats)["requests"] == 0


def test_write_state_replaces_atomically(tmp_path):
    path = tmp_path / "sub" / "stats.json"
    write_state(str(path), {"a": 1})
    write_state(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(path.parent) == ["stats.json"]
    with pytest.raises(TypeError):
        write_state(str(path), {"a": object()})  # a failed write keeps the old file and no temp
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(path.parent) == ["stats.json"]


# -- space-saving top-k (proxy/topk.py) ------------------------------------------------

def test_space_saving_is_exact_below_capacity():
    s = SpaceSaving(10)
    for item in "abacabad":
        s.add(item)
    assert s.top(3) == [("a", 4), ("b", 2), ("c", 1)]
    assert s.error("a") == 0


def test_space_saving_finds_the_heavy_hitters_of_a_skewed_stream():
    rng = random.Random(1)
    # Zipf-like: item i drawn with weight 1 / (i + 1), over 5000 distinct items.
    items = [f"/media/{i}.jpg" for i in range(5000)]
    weights = [1 / (i + 1) for i in range(5000)]
    stream = rng.choices(items, weights, k=100_000)
    truth = Counter(stream)
    s = SpaceSaving(80)  # 4 * k for k = 20
    for item in stream:
        s.add(item)
    assert len(s) == 80
    true_top = [item for item, _ in truth.most_common(10)]
    found = [item for item, _ in s.top(10)]
    assert found == true_top
    for item, count in s.top(20):
        # never an underestimate, and off by at most the recorded error
        assert truth[item] <= count <= truth[item] + s.error(item)
    # the guarantee: every item with more than N / capacity occurrences is monitored
    for item, n in truth.items():
        if n > len(stream) / 80:
            assert item in s


def test_space_saving_replaces_the_minimum_and_tracks_its_error():
    s = SpaceSaving(2)
    for item in ("a", "a", "a", "b", "c"):
        s.add(item)
    # c took over b's counter (count 1) and starts at 2 with error 1
    assert s.top(2) == [("a", 3), ("c", 2)]
    assert s.error("c") == 1 and "b" not in s
    s.add("d")  # replaces c (the minimum, 2)
    assert s.top(2) == [("a", 3), ("d", 3)] and s.error("d") == 2


def test_space_saving_round_trips_and_rejects_bad_capacity():
    s = SpaceSaving(5)
    for item in "aaabbcdddde":
        s.add(item)
    copy = SpaceSaving.from_items(5, s.items())
    assert copy.top(5) == s.top(5)
    copy.add("f")
    copy.add("e")
    assert copy.top(1) == [("d", 4)]
    assert len(SpaceSaving.from_items(2, s.items())) == 2
    with pytest.raises(ValueError):
        SpaceSaving(0)


def test_denied_counts_refusals_which_are_also_errors(tmp_path):
    stats = Stats(prefixes=("/media/",))
    for reason in ("signature", "signature", "expired", "auth", "bogus"):
        stats.record(result="error", source=None, body_bytes=14, duration=0.001, path="/media/p/a.jpg")
        stats.denied(reason)
    stats.record(result="error", source=None, body_bytes=14, duration=0.001, path="/media/m/a.jpg")  # a 503
    snap = stats.snapshot(entries=0, cache_bytes=0, cache_size=1)
    assert snap["denied"] == 4 and snap["errors"] == 6 and snap["requests"] == 6
    assert snap["denied_by_reason"] == {"signature": 2, "expired": 1, "auth": 1}
    stats.save(str(tmp_path / "s.json"))
    again = Stats(prefixes=("/media/",))
    assert again.restore(str(tmp_path / "s.json"))
    assert again.snapshot(entries=0, cache_bytes=0, cache_size=1)["denied_by_reason"] == snap["denied_by_reason"]
