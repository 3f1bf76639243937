"""/metrics beyond the Stats counters: build info, process metrics, evictions and the
invalidation lag; pure tables first, then a real node."""
from __future__ import annotations

import platform
import sqlite3

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.edge import Edge, Route, Upstream, wait_until
from mediaedge.invalidation import invalidation_lag
from mediaedge.metrics import NodeFacts, build_info, render_metrics
from mediaedge.stats import Stats


def values(body: bytes) -> dict[str, float]:
    """name{labels} -> value, labels sorted, for the samples without labels just the name."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_node_facts_build_info_and_process_metrics():
    body, _ = render_metrics(Stats(clock=lambda: 0.0), entries=0, cache_bytes=0, cache_size=1,
                             node=NodeFacts(evictions=7, lag_seconds=1.5, lag_events=3))
    v = values(body)
    info = build_info()
    assert info["python"] == platform.python_version() and info["version"] and info["mitmproxy"][0].isdigit()
    labels = f'mitmproxy="{info["mitmproxy"]}",python="{info["python"]}",version="{info["version"]}"'
    assert v[f"mediaedge_build_info{{{labels}}}"] == 1.0
    assert v["mediaedge_evictions_total"] == 7.0
    assert v["mediaedge_invalidation_lag_seconds"] == 1.5
    assert v["mediaedge_invalidation_lag_events"] == 3.0
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                 "process_start_time_seconds"):
        assert v[name] > 0, name
    # rendered twice: the process collector is shared, not registered twice
    assert values(render_metrics(Stats(), entries=0, cache_bytes=0)[0])["mediaedge_evictions_total"] == 0.0


@pytest.mark.parametrize(("now", "applied", "log_latest", "caught_up_at", "expected"), [
    (100.0, 5, 5, 99.95, (pytest.approx(0.05), 0)),  # healthy: just polled, nothing pending
    (100.0, 5, 9, 99.95, (pytest.approx(0.05), 4)),  # four events appended since the poll
    (100.0, 5, 9, 40.0, (60.0, 4)),  # stuck for a minute
    (100.0, 5, 5, 40.0, (60.0, 0)),  # cannot read the log: no known backlog, but the time grows
    (100.0, 7, 5, 100.0, (0.0, 0)),  # an older reading of the log's latest: never negative
    (100.0, 0, 0, None, (0.0, 0)),  # not started following yet
    (100.0, 0, 0, 101.0, (0.0, 0)),  # a clock that stepped back
])
def test_invalidation_lag(now, applied, log_latest, caught_up_at, expected):
    assert invalidation_lag(now=now, applied=applied, log_latest=log_latest, caught_up_at=caught_up_at) == expected


# -- a real node ---------------------------------------------------------------------

def scrape(edge: Edge) -> dict[str, float]:
    return values(requests.get(edge.admin + "/metrics", timeout=10).content)


def test_evictions_are_counted(tmp_path):
    upstream = Upstream()
    for i in range(24):
        upstream.routes[f"/media/{i}.bin"] = Route(size=300_000, seed=i, headers={"Cache-Control": "max-age=600"})
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--cache-size", "4MiB"]).start()
    try:
        assert scrape(edge)["mediaedge_evictions_total"] == 0.0
        stored = 0
        # 12 objects fill the cache (entries get 3 MiB); then objects asked for 3 times each
        # are more popular than the tail and push it out (one-hit wonders would be refused
        # by admission: mediaedge.policy.admission)
        for i, times in [(i, 1) for i in range(12)] + [(i, 3) for i in range(12, 24)]:
            for _ in range(times):
                r = edge.get(f"/media/{i}.bin")
                assert r.status_code == 200
                stored += "; stored" in r.headers["Cache-Status"]
        v = wait_until(lambda: (m := scrape(edge))["mediaedge_evictions_total"] > 0 and m, 10, 0.1, "evictions")
        # what was evicted is what is no longer there
        assert v["mediaedge_evictions_total"] + v["mediaedge_cache_entries"] == stored
        assert v["mediaedge_evictions_total"] == edge.stats()["evictions"]
        assert v["mediaedge_cache_bytes"] <= 4 * 2**20
    finally:
        edge.stop()
        upstream.close()


def test_invalidation_lag_grows_while_the_log_cannot_be_read(tmp_path):
    """The state database's log table vanishes under a running node (renamed away):
    the seconds behind grow; renamed back, the node catches up and the lag drops."""
    state = tmp_path / "state.db"
    edge = Edge(str(tmp_path), args=["--state-db", f"sqlite:///{state}"]).start()
    try:
        v = scrape(edge)
        assert v["mediaedge_invalidation_lag_events"] == 0.0
        assert v["mediaedge_invalidation_lag_seconds"] < 2.0
        with sqlite3.connect(state) as db:
            db.execute("ALTER TABLE mediaedge_invalidations RENAME TO away")
        wait_until(lambda: scrape(edge)["mediaedge_invalidation_lag_seconds"] > 3.0, 20, 0.2,
                   "the lag to grow while the log is gone")
        with sqlite3.connect(state) as db:
            db.execute("ALTER TABLE away RENAME TO mediaedge_invalidations")
        wait_until(lambda: scrape(edge)["mediaedge_invalidation_lag_seconds"] < 2.0, 20, 0.2,
                   "the lag to drop once the log is back")
        assert scrape(edge)["mediaedge_invalidation_lag_events"] == 0.0
    finally:
        edge.stop()
