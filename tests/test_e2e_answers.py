"""The upstream's own answers, through a real `mediaedge serve` in front of a real app.

- When the database has no row, the client gets what the upstream said: its own 404/410
  page (status, fields, body), negative-cached; after its 5xx, a stale entry within its
  grace, else its own 5xx, unstored; after it failed, stale, else 502/504 (one line).
- Statuses other than 200 stored as RFC 9110 15.1 allows (tests/test_e2e_statuses.py has more).
Rules: mediaedge.policy.fallback (table-driven in tests/test_policy_fallback.py).
"""
from __future__ import annotations

import time

import pytest
import requests

from tests.edge import Edge, Route, Upstream, edge_with_upstream, status_of, wait_until

PAGE = b"<!doctype html><title>Not found</title><p>The app's own 404 page.</p>" + b"<!-- pad -->" * 40_000  # ~480 KB
BODY = b"\xff\xd8\xff-answers-" * 2000


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("answers")
    with edge_with_upstream(d, args=["--negative-ttl", "1", "--grace", "60", "--upstream-timeout", "1",
                                     "--state-db", f"sqlite:///{d / 'state.db'}"]) as pair:
        yield pair


def test_the_apps_own_404_page_reaches_the_client_and_is_negative_cached(env):
    edge, up = env
    path = "/media/answers/missing.jpg"
    up.routes[path] = Route(status=404, body=PAGE, headers={"Content-Type": "text/html; charset=utf-8",
                                                            "X-App": "shop"})
    r = edge.get(path)
    assert r.status_code == 404 and r.content == PAGE, (r.status_code, len(r.content))
    assert r.headers["Content-Type"] == "text/html; charset=utf-8" and r.headers["X-App"] == "shop"
    assert status_of(r) == "mediaedge; fwd=miss; fwd-status=404; stored; detail=upstream"
    r = edge.get(path)
    assert r.status_code == 404 and r.content == PAGE and r.headers["X-App"] == "shop"
    assert status_of(r).startswith("mediaedge; hit")
    assert up.hits[path] == 1
    # --negative-ttl 1: then the app is asked again
    wait_until(lambda: edge.get(path) is not None and up.hits[path] == 2, 5, 0.2, "the negative entry to expire")


def test_a_410_with_explicit_freshness_is_kept_for_it_not_the_negative_ttl(env):
    edge, up = env
    path = "/media/answers/gone.jpg"
    up.routes[path] = Route(status=410, body=b"gone for good\n", headers={"Cache-Control": "max-age=60"})
    assert edge.get(path).content == b"gone for good\n"
    time.sleep(1.5)  # past --negative-ttl 1 (not an assertion: the hit below is)
    r = edge.get(path)
    assert r.status_code == 410 and r.content == b"gone for good\n" and status_of(r).startswith("mediaedge; hit")
    assert up.hits[path] == 1


def test_a_503_and_no_row_serves_the_stale_entry_and_keeps_it(env):
    """The issue's case: a 503 plus a missing row once turned into a cached 404 and the
    stale entry was lost. Now the stale entry is served, and still there next time."""
    edge, up = env
    path = "/media/answers/stale.jpg"
    up.routes[path] = Route(body=BODY, headers={"X-Media-Revision": "s1", "Cache-Control": "max-age=1"})
    stored = time.time()
    assert edge.get(path).content == BODY
    wait_until(lambda: time.time() > stored + 1.5, 5, 0.05, "expiry")
    up.routes[path] = Route(status=503, body=b"<p>maintenance</p>", headers={"Retry-After": "30"})
    for _ in range(3):
        r = edge.get(path)
        assert r.status_code == 200 and r.content == BODY and "ttl=-" in status_of(r), (r.status_code, status_of(r))
    up.routes[path] = Route(body=BODY, headers={"X-Media-Revision": "s1", "Cache-Control": "max-age=60"})
    # (a request may still join the last 503's fetch while its body drains: stale again)
    wait_until(lambda: "fwd=miss" in status_of(edge.get(path)), 5, 0.05, "the app's answer once it is back")
    r = edge.get(path)
    assert r.status_code == 200 and r.content == BODY and status_of(r).startswith("mediaedge; hit; ttl=")


def test_a_5xx_and_no_row_and_nothing_stale_is_the_apps_own_answer_unstored(env):
    edge, up = env
    path = "/media/answers/down.jpg"
    up.routes[path] = Route(status=503, body=b"<p>maintenance</p>",
                            headers={"Retry-After": "30", "Content-Type": "text/html"})
    for _ in range(2):
        r = edge.get(path)
        assert r.status_code == 503 and r.content == b"<p>maintenance</p>" and r.headers["Retry-After"] == "30"
        assert status_of(r) == "mediaedge; fwd=bypass; fwd-status=503; detail=upstream"
    assert up.hits[path] == 2


def test_a_5xx_with_explicit_freshness_is_stored_for_it(env):
    edge, up = env
    path = "/media/answers/down-explicit.jpg"
    up.routes[path] = Route(status=500, body=b"boom", headers={"Cache-Control": "max-age=30"})
    assert edge.get(path).status_code == 500
    r = edge.get(path)
    assert r.status_code == 500 and r.content == b"boom" and status_of(r).startswith("mediaedge; hit")
    assert up.hits[path] == 1


def test_an_upstream_timeout_and_no_row_is_a_one_line_504(env):
    edge, up = env
    path = "/media/answers/slow.jpg"
    up.routes[path] = Route(body=BODY, delay=2.5)
    r = edge.get(path)
    assert r.status_code == 504 and r.headers["Content-Type"].startswith("text/plain")
    assert r.content.endswith(b"\n") and r.content.count(b"\n") == 1 and b"timed out" in r.content


# ----------------------------------------------------------------------------- --origin-db none
def test_origin_db_none_without_an_upstream_refuses_to_start_with_one_line(tmp_path):
    import subprocess
    import sys

    from tests.edge import REPO

    p = subprocess.run([sys.executable, "-m", "mediaedge", "serve", "--origin-db", "none",
                        "--cache-dir", str(tmp_path / "cache")], cwd=REPO, capture_output=True, timeout=60)
    err = p.stderr.decode()
    assert p.returncode != 0 and "Traceback" not in err
    assert err.strip().splitlines() == ["mediaedge: error: --origin-db: none needs --upstream "
                                        "(with no database origin the app is the only origin)"], err


def test_origin_db_none_is_a_plain_http_cache_in_front_of_the_app(tmp_path):
    import os

    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url, origin_db="none", args=["--negative-ttl", "30"]).start()
    try:
        up.routes["/media/plain/a.jpg"] = Route(body=BODY, headers={"Content-Type": "image/jpeg"})
        r = edge.get("/media/plain/a.jpg")
        assert r.content == BODY and status_of(r).startswith("mediaedge; fwd=miss; fwd-status=200; stored")
        assert status_of(edge.get("/media/plain/a.jpg")).startswith("mediaedge; hit")
        up.routes["/media/plain/404.jpg"] = Route(status=404, body=b"<p>app 404</p>")
        for _ in range(2):
            r = edge.get("/media/plain/404.jpg")
            assert r.status_code == 404 and r.content == b"<p>app 404</p>"
        assert up.hits["/media/plain/a.jpg"] == 1 and up.hits["/media/plain/404.jpg"] == 1
        assert not os.path.exists(tmp_path / "origin.db")
        assert os.path.exists(tmp_path / "cache" / "invalidations.db")  # the invalidation log
        stats = edge.stats()
        assert stats["origin_fetches"].get("db", 0) == 0
    finally:
        edge.stop()
        up.close()


@pytest.mark.full
def test_a_large_404_page_from_the_app_streams_with_bounded_memory(tmp_path, record_property):
    """The app's 404 body is streamed to the client (and the cache), never held whole."""
    import hashlib

    from tests.edge import synthetic_sha

    size = 200 << 20
    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url, origin_db="none", args=["--cache-size", "4GiB"]).start()
    try:
        path = "/media/answers/huge-404.jpg"
        up.routes[path] = Route(status=404, size=size, headers={"Content-Type": "text/html"})
        rss_before = edge.rss_kib()
        h = hashlib.sha256()
        with requests.get(edge.url + path, stream=True, timeout=120) as r:
            assert r.status_code == 404
            for chunk in r.iter_content(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == synthetic_sha(size)
        growth_mib = (edge.peak_rss_kib() - rss_before) / 1024
        record_property("huge_404_peak_rss_growth_mib", round(growth_mib))
        assert growth_mib < 64, f"RSS grew {growth_mib:.0f} MiB for a 200 MiB 404 body"
    finally:
        edge.stop()
        up.close()
