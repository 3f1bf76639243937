"""mediaedge.metrics: the exposition parses, carries the contract's names and the Stats numbers."""
from __future__ import annotations

import math

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from mediaedge.metrics import render_metrics
from mediaedge.stats import Stats


def families(stats: Stats, **kw) -> dict:
    body, content_type = render_metrics(stats, entries=kw.get("entries", 7), cache_bytes=kw.get("cache_bytes", 4096),
                                        cache_size=kw.get("cache_size"))
    assert content_type.startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def samples(family, name: str | None = None) -> dict:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if name is None or s.name == name}


def loaded_stats() -> Stats:
    stats = Stats(clock=lambda: 1000.0, prefixes=("/media/", "/media/catalog/"))
    script = [("hit", "cache", 100, 0.0003), ("hit", "cache", 100, 0.0004), ("stale", "cache", 50, 0.002),
              ("miss", "db", 1000, 0.04), ("miss", "upstream", 500, 0.2), ("pass", "upstream", 10, 0.3),
              ("error", None, 20, 12.0)]
    for result, source, size, duration in script:
        stats.record(result=result, source=source, body_bytes=size, duration=duration, path="/media/catalog/x.jpg")
    stats.origin_fetch("db", "ok")
    stats.origin_fetch("upstream", "ok")
    stats.origin_fetch("upstream", "error")
    stats.origin_fetch("db", "notfound")
    stats.invalidation("purge", 2)
    stats.invalidation("publish")
    stats.coalesced()
    return stats


def test_exposed_names_are_exactly_the_contracts():
    body, _ = render_metrics(loaded_stats(), entries=1, cache_bytes=2)
    names = {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines() if not line.startswith("#")}
    assert {
        "mediaedge_requests_total", "mediaedge_origin_fetches_total", "mediaedge_served_bytes_total",
        "mediaedge_cache_entries", "mediaedge_cache_bytes", "mediaedge_invalidations_total",
        "mediaedge_request_duration_seconds_bucket", "mediaedge_request_duration_seconds_count",
        "mediaedge_request_duration_seconds_sum",
    } <= names
    assert not any(n.endswith("_total_total") for n in names)
    assert "# TYPE mediaedge_request_duration_seconds histogram" in body.decode()


def test_values_match_the_stats():
    f = families(loaded_stats(), entries=7, cache_bytes=4096, cache_size=1 << 30)
    assert samples(f["mediaedge_requests"], "mediaedge_requests_total") == {
        (("result", "hit"),): 2, (("result", "stale"),): 1, (("result", "miss"),): 2,
        (("result", "pass"),): 1, (("result", "error"),): 1,
    }
    fetches = samples(f["mediaedge_origin_fetches"], "mediaedge_origin_fetches_total")
    assert len(fetches) == 8  # 2 origins x ok|notmodified|notfound|error
    assert fetches[(("origin", "db"), ("outcome", "ok"))] == 1
    assert fetches[(("origin", "db"), ("outcome", "notfound"))] == 1
    assert fetches[(("origin", "upstream"), ("outcome", "error"))] == 1
    assert fetches[(("origin", "upstream"), ("outcome", "notfound"))] == 0
    assert samples(f["mediaedge_served_bytes"], "mediaedge_served_bytes_total") == {
        (("source", "cache"),): 250, (("source", "upstream"),): 510, (("source", "db"),): 1000,
    }
    assert samples(f["mediaedge_cache_entries"]) == {(): 7}
    assert samples(f["mediaedge_cache_bytes"]) == {(): 4096}
    assert samples(f["mediaedge_cache_size_bytes"]) == {(): 1 << 30}
    inval = samples(f["mediaedge_invalidations"], "mediaedge_invalidations_total")
    assert inval[(("type", "purge"),)] == 2 and inval[(("type", "publish"),)] == 1
    assert inval[(("type", "delete"),)] == 0
    assert samples(f["mediaedge_coalesced"], "mediaedge_coalesced_total") == {(): 1}
    by_prefix = samples(f["mediaedge_prefix_requests"], "mediaedge_prefix_requests_total")
    assert by_prefix[(("prefix", "/media/catalog/"), ("result", "hit"))] == 2
    assert by_prefix[(("prefix", "/media/"), ("result", "hit"))] == 0


def test_duration_histogram_per_result():
    f = families(loaded_stats())["mediaedge_request_duration_seconds"]
    assert f.type == "histogram"
    buckets = {(s.labels["result"], float(s.labels["le"])): s.value
               for s in f.samples if s.name.endswith("_bucket")}
    assert buckets[("hit", 0.0005)] == 2
    assert buckets[("stale", 0.001)] == 0 and buckets[("stale", 0.0025)] == 1
    assert buckets[("miss", 0.025)] == 0 and buckets[("miss", 0.05)] == 1 and buckets[("miss", 0.25)] == 2
    assert buckets[("error", 10.0)] == 0 and buckets[("error", math.inf)] == 1
    les = sorted({le for _r, le in buckets})
    assert les[0] == 0.0005 and les[-2] == 10.0 and les[-1] == math.inf
    counts = {s.labels["result"]: s.value for s in f.samples if s.name.endswith("_count")}
    sums = {s.labels["result"]: s.value for s in f.samples if s.name.endswith("_sum")}
    assert counts == {"hit": 2, "stale": 1, "miss": 2, "pass": 1, "error": 1}
    assert abs(sums["miss"] - 0.24) < 1e-9
    for result in counts:  # cumulative buckets never decrease
        row = [buckets[(result, le)] for le in les]
        assert row == sorted(row)


def test_fresh_stats_expose_zeroes_and_no_size_when_unknown():
    f = families(Stats(clock=lambda: 0.0), entries=0, cache_bytes=0)
    assert set(samples(f["mediaedge_requests"], "mediaedge_requests_total").values()) == {0}
    assert "mediaedge_cache_size_bytes" not in f


def test_uses_a_private_registry():
    render_metrics(loaded_stats(), entries=1, cache_bytes=1)
    render_metrics(loaded_stats(), entries=1, cache_bytes=1)  # a second render: no duplicate registration
    assert not any(name.startswith("mediaedge") for name in REGISTRY._names_to_collectors)


def test_denied_by_reason():
    stats = Stats()
    stats.denied("expired")
    stats.denied("auth")
    stats.denied("auth")
    body, _ = render_metrics(stats, entries=0, cache_bytes=0)
    lines = [line for line in body.decode().splitlines() if line.startswith("mediaedge_denied_total")]
    assert sorted(lines) == ['mediaedge_denied_total{reason="auth"} 2.0', 'mediaedge_denied_total{reason="expired"} 1.0',
                             'mediaedge_denied_total{reason="signature"} 0.0']
