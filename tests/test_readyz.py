"""GET /readyz on a real node: the components of `mediaedge check`, 200 or 503, and
remembered for a couple of seconds so load balancers cannot hammer the databases."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from edge import Edge, wait_until
from mediaedge.readiness import TTL

COMPONENTS = ["origin_db", "state_db", "upstream", "cache_dir", "free_disk"]


def readyz(edge: Edge) -> requests.Response:
    return requests.get(edge.admin + "/readyz", timeout=60)


def test_ready_with_every_component_ok(tmp_path, upstream):
    edge = Edge(str(tmp_path), upstream=upstream.url).start()
    try:
        r = readyz(edge)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ready"] is True
        assert list(body["components"]) == COMPONENTS
        assert all(c["ok"] for c in body["components"].values())
        assert body["components"]["upstream"]["check"] == f"upstream {upstream.url}"
        assert body["components"]["origin_db"]["check"].endswith("(native)")
        assert r.headers["Cache-Control"] == "no-store"
    finally:
        edge.stop()


def test_answers_are_remembered_and_shared(tmp_path, upstream):
    """The upstream check is a GET /; count how often the node makes it."""
    edge = Edge(str(tmp_path), upstream=upstream.url).start()
    try:
        before = upstream.hits["/"]
        with ThreadPoolExecutor(10) as pool:  # ten load balancers at once: one round of checks
            answers = list(pool.map(lambda _: readyz(edge).status_code, range(10)))
        assert answers == [200] * 10
        assert upstream.hits["/"] - before == 1
        started = time.monotonic()
        polls = 0
        while time.monotonic() - started < 1.5 * TTL:  # polled as fast as it answers
            assert readyz(edge).status_code == 200
            polls += 1
        elapsed = time.monotonic() - started
        rounds = upstream.hits["/"] - before
        assert polls > 10
        assert rounds <= elapsed / TTL + 2, (rounds, polls, elapsed)
    finally:
        edge.stop()


def test_an_unreachable_upstream_makes_the_node_unready_and_healthz_stays_ok(tmp_path, upstream):
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--upstream-timeout", "2"]).start()
    try:
        assert readyz(edge).status_code == 200
        upstream.close()

        def unready() -> dict | None:
            r = readyz(edge)
            return r.json() if r.status_code == 503 else None  # (a 503 Response is falsy)
        body = wait_until(unready, 20, 0.2, "/readyz to say 503")
        assert body["ready"] is False
        assert body["components"]["upstream"]["ok"] is False
        assert body["components"]["upstream"]["problem"].startswith("not reachable")
        assert [k for k, c in body["components"].items() if not c["ok"]] == ["upstream"]
        assert requests.get(edge.admin + "/healthz", timeout=5).status_code == 200
    finally:
        edge.stop()


def test_free_disk_against_cache_size(tmp_path):
    edge = Edge(str(tmp_path), args=["--cache-size", "1000TiB"]).start()
    try:
        r = readyz(edge)
        assert r.status_code == 503
        disk = r.json()["components"]["free_disk"]
        assert disk["ok"] is False
        assert disk["problem"].endswith("available for the cache but --cache-size is 1000TiB")
        assert "upstream" not in r.json()["components"]  # not configured, not checked
    finally:
        edge.stop()
