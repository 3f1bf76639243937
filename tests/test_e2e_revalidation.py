"""Revalidation end to end: a real `mediaedge serve` in front of a real loopback app that
answers conditional GETs with 304 and counts requests and body bytes; and in front of
real databases, whose rows are revalidated by their revision (contract section 2)."""
from __future__ import annotations

import io
import os
import re
import threading

import pytest
import requests

from mediaedge.origins.db import DatabaseOrigin
from tests.edge import Edge, Route, Upstream, sha, wait_until
from tests.sqlfixtures import PLAIN_ROUTE, SITECORE_ROUTE, Tables, route_for

LM = "Wed, 21 Oct 2015 07:28:00 GMT"
REVALIDATED = "mediaedge; fwd=stale; fwd-status=304; detail=upstream"


def conditionals(upstream: Upstream, path: str) -> list[dict[str, str]]:
    """The conditional fields of each request the app got for `path`, in order."""
    return [{k.lower(): v for k, v in h.items() if k.lower().startswith("if-")}
            for _, p, h in upstream.requests if p == path]


def origin_fetches(edge: Edge) -> dict[tuple[str, str], float]:
    text = requests.get(edge.admin + "/metrics", timeout=5).text
    found = re.findall(r'^mediaedge_origin_fetches_total\{origin="(\w+)",outcome="(\w+)"\} (\S+)$', text, re.M)
    return {(o, k): float(v) for o, k, v in found}


@pytest.mark.parametrize("size", [10_000, 600_000], ids=["memory", "file"])
def test_etag_revalidation_costs_one_304_not_the_body(edge, upstream, size):
    body = os.urandom(size)
    upstream.routes["/media/e.jpg"] = Route(body=body, not_modified=True, headers={
        "Content-Type": "image/jpeg", "ETag": '"v1"', "Cache-Control": "max-age=0"})
    first = edge.get("/media/e.jpg")
    assert first.headers["Cache-Status"] == "mediaedge; fwd=miss; fwd-status=200; stored; detail=upstream"
    for n in range(1, 4):
        r = edge.get("/media/e.jpg")
        assert r.status_code == 200 and sha(r.content) == sha(body)
        assert r.headers["Cache-Status"] == REVALIDATED
        assert r.headers["Content-Length"] == str(size) and r.headers["ETag"] == '"v1"'
        assert upstream.not_modified["/media/e.jpg"] == n
    assert upstream.hits["/media/e.jpg"] == 4
    assert upstream.body_bytes["/media/e.jpg"] == size  # the body crossed once
    assert conditionals(upstream, "/media/e.jpg") == [{}] + [{"if-none-match": '"v1"'}] * 3
    stats = edge.stats()
    assert (stats["hits"], stats["misses"], stats["revalidated"]) == (3, 1, 3)
    fetches = origin_fetches(edge)
    assert fetches[("upstream", "notmodified")] == 3 and fetches[("upstream", "ok")] == 1


def test_last_modified_revalidation(edge, upstream):
    body = os.urandom(50_000)
    upstream.routes["/media/lm.png"] = Route(body=body, not_modified=True, headers={
        "Content-Type": "image/png", "Last-Modified": LM, "Cache-Control": "max-age=0"})
    edge.get("/media/lm.png")
    r = edge.get("/media/lm.png")
    assert r.headers["Cache-Status"] == REVALIDATED and r.content == body
    assert r.headers["Last-Modified"] == LM
    assert conditionals(upstream, "/media/lm.png") == [{}, {"if-modified-since": LM}]
    assert upstream.body_bytes["/media/lm.png"] == len(body)


def test_304_updates_stored_fields_and_renews_freshness(edge, upstream):
    body = os.urandom(40_000)
    route = Route(body=body, not_modified=True, headers={
        "Content-Type": "image/jpeg", "ETag": '"v1"', "Cache-Control": "max-age=0", "X-Custom": "old"})
    upstream.routes["/media/u.jpg"] = route
    assert edge.get("/media/u.jpg").headers["X-Custom"] == "old"
    # The app now says: same representation, new metadata.
    route.headers = {"Content-Type": "image/jpeg", "ETag": '"v1"', "Cache-Control": "max-age=600",
                     "X-Custom": "new", "X-Added": "yes"}
    r = edge.get("/media/u.jpg")
    assert r.headers["Cache-Status"] == REVALIDATED and r.content == body
    assert (r.headers["X-Custom"], r.headers["X-Added"], r.headers["Cache-Control"]) == ("new", "yes", "max-age=600")
    assert r.headers["Content-Length"] == str(len(body))
    # renewed for 600 s: the next request is a plain hit, and the app hears nothing
    before = upstream.hits["/media/u.jpg"]
    r = edge.get("/media/u.jpg")
    assert re.fullmatch(r"mediaedge; hit; ttl=(59\d|600)", r.headers["Cache-Status"]), r.headers["Cache-Status"]
    assert r.headers["X-Custom"] == "new" and int(r.headers["Age"]) <= 2 and r.content == body
    assert upstream.hits["/media/u.jpg"] == before == 2


def test_200_on_revalidation_replaces_the_entry(edge, upstream):
    old, new = os.urandom(30_000), os.urandom(31_000)
    route = Route(body=old, not_modified=True, headers={"ETag": '"v1"', "Cache-Control": "max-age=0",
                                                        "Content-Type": "image/jpeg"})
    upstream.routes["/media/r.jpg"] = route
    edge.get("/media/r.jpg")
    route.body, route.headers = new, {"ETag": '"v2"', "Cache-Control": "max-age=600", "Content-Type": "image/jpeg"}
    r = edge.get("/media/r.jpg")
    assert r.headers["Cache-Status"] == "mediaedge; fwd=miss; fwd-status=200; stored; detail=upstream"
    assert sha(r.content) == sha(new) and r.headers["ETag"] == '"v2"'
    assert conditionals(upstream, "/media/r.jpg")[1] == {"if-none-match": '"v1"'}
    r = edge.get("/media/r.jpg")
    assert r.headers["Cache-Status"].startswith("mediaedge; hit") and sha(r.content) == sha(new)
    assert upstream.hits["/media/r.jpg"] == 2 and upstream.not_modified["/media/r.jpg"] == 0


def test_concurrent_requests_share_one_conditional_request(edge, upstream):
    body = os.urandom(700_000)
    route = Route(body=body, not_modified=True, headers={"ETag": '"c1"', "Cache-Control": "max-age=0",
                                                         "Content-Type": "video/mp4"})
    upstream.routes["/media/c.mp4"] = route
    edge.get("/media/c.mp4")
    route.delay = 0.5  # the 304 takes a while: every request arrives while it is pending
    results: list[requests.Response] = []
    lock = threading.Lock()

    def fetch() -> None:
        r = edge.get("/media/c.mp4")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8
    assert all(r.status_code == 200 and sha(r.content) == sha(body) for r in results)
    statuses = sorted(r.headers["Cache-Status"] for r in results)
    assert all(s.startswith("mediaedge; fwd=stale; fwd-status=304") for s in statuses), statuses
    assert upstream.hits["/media/c.mp4"] == 2 and upstream.not_modified["/media/c.mp4"] == 1
    assert upstream.body_bytes["/media/c.mp4"] == len(body)
    assert edge.stats()["revalidated"] == 8


def test_stale_while_revalidate_refreshes_with_a_conditional_request(edge, upstream):
    body = os.urandom(50_000)
    route = Route(body=body, not_modified=True, headers={
        "ETag": '"s1"', "Cache-Control": "max-age=0, stale-while-revalidate=60", "X-Custom": "old"})
    upstream.routes["/media/swr.jpg"] = route
    edge.get("/media/swr.jpg")
    route.headers = {"ETag": '"s1"', "Cache-Control": "max-age=600", "X-Custom": "new"}
    r = edge.get("/media/swr.jpg")
    assert re.fullmatch(r"mediaedge; hit; ttl=-\d+", r.headers["Cache-Status"]) and r.content == body
    wait_until(lambda: upstream.not_modified["/media/swr.jpg"] == 1, what="the background revalidation")
    r = wait_until(lambda: (x := edge.get("/media/swr.jpg")).headers.get("X-Custom") == "new" and x,
                   what="the renewed entry")
    assert r.headers["Cache-Status"].startswith("mediaedge; hit; ttl=") and r.content == body
    assert conditionals(upstream, "/media/swr.jpg") == [{}, {"if-none-match": '"s1"'}]
    assert upstream.body_bytes["/media/swr.jpg"] == len(body)


def test_upstream_failure_during_revalidation_serves_stale_within_grace(edge, upstream):
    body = os.urandom(20_000)
    route = Route(body=body, not_modified=True, headers={"ETag": '"g1"', "Cache-Control": "max-age=0"})
    upstream.routes["/media/g.jpg"] = route
    edge.get("/media/g.jpg")
    upstream.routes["/media/g.jpg"] = Route(status=503, body=b"down")
    r = edge.get("/media/g.jpg")
    assert r.status_code == 200 and r.content == body
    assert re.fullmatch(r"mediaedge; hit; ttl=-\d+", r.headers["Cache-Status"])
    assert conditionals(upstream, "/media/g.jpg")[1] == {"if-none-match": '"g1"'}


@pytest.mark.parametrize("client_tag, status", [('"k1"', 304), ('"other"', 200)])
def test_client_conditional_on_a_miss_fetches_whole_and_is_answered_from_it(edge, upstream, client_tag, status):
    body = os.urandom(90_000)
    upstream.routes["/media/k.jpg"] = Route(body=body, not_modified=True, headers={"ETag": '"k1"'})
    r = edge.get("/media/k.jpg", headers={"if-none-match": client_tag})
    assert r.status_code == status
    assert r.content == (b"" if status == 304 else body)
    assert conditionals(upstream, "/media/k.jpg") == [{}]  # the client's validators are not sent upstream
    assert upstream.not_modified["/media/k.jpg"] == 0
    # the whole object is stored (the 304 may go out while the body is still arriving, so
    # a request just after it can join the fetch): a plain request then hits, the app
    # hears nothing more
    wait_until(lambda: edge.get("/media/k.jpg").headers["Cache-Status"].startswith("mediaedge; hit"), 10, 0.05,
               "the fetched object to be stored")
    r = edge.get("/media/k.jpg")
    assert r.headers["Cache-Status"].startswith("mediaedge; hit") and sha(r.content) == sha(body)
    r = edge.get("/media/k.jpg", headers={"if-none-match": '"k1"'})
    assert r.status_code == 304 and r.headers["Cache-Status"].startswith("mediaedge; hit")
    assert upstream.hits["/media/k.jpg"] == 1 and upstream.body_bytes["/media/k.jpg"] == len(body)


# ------------------------------------------------------------------ database origins

def _put(url: str, path: str, body: bytes, revision: str) -> None:
    with DatabaseOrigin(url) as o:
        o.put(path, io.BytesIO(body), size=len(body), sha256=sha(body), revision=revision, content_type="image/png")


def test_database_entry_revalidates_by_the_row_revision(tmp_path, origin_url):
    body, newer = os.urandom(300_000), os.urandom(300_001)
    _put(origin_url, "/media/db.png", body, "rev1")
    edge = Edge(str(tmp_path), origin_db=origin_url, args=["--default-ttl", "0"]).start()
    try:
        r = edge.get("/media/db.png")
        assert r.headers["Cache-Status"] == "mediaedge; fwd=miss; fwd-status=200; stored; detail=db"
        for _n in (1, 2):
            r = edge.get("/media/db.png")
            assert r.headers["Cache-Status"] == "mediaedge; fwd=stale; fwd-status=304; detail=db"
            assert sha(r.content) == sha(body) and r.headers["X-Media-Revision"] == "rev1"
        fetches = origin_fetches(edge)
        # the row's blob was read once: revalidations read its revision only
        assert fetches[("db", "ok")] == 1 and fetches[("db", "notmodified")] == 2
        _put(origin_url, "/media/db.png", newer, "rev2")
        r = edge.get("/media/db.png")
        assert r.headers["Cache-Status"] == "mediaedge; fwd=miss; fwd-status=200; stored; detail=db"
        assert sha(r.content) == sha(newer) and r.headers["X-Media-Revision"] == "rev2"
        assert origin_fetches(edge)[("db", "ok")] == 2
        assert edge.stats()["revalidated"] == 2
    finally:
        edge.stop()


def test_sql_route_revalidates_by_its_revision_column(tmp_path, origin_url):
    tables = Tables(origin_url)
    try:
        body = os.urandom(120_000)
        tables.plain("img/a.png", body, "rev-1")
        tables.sitecore("7f0c1a52-9b3e-4d1f-8a6c-2e5b9d4c3a10", [b"x" * 1000, b"y" * 1000])
        config = tmp_path / "edge.toml"
        config.write_text(route_for(tables.dialect, PLAIN_ROUTE + SITECORE_ROUTE))
        edge = Edge(str(tmp_path), origin_db=origin_url, args=[
            "--origin-profile", "sql", "--config", str(config), "--default-ttl", "0",
            "--media-prefix", "/media/", "--media-prefix", "/-/media/"]).start()
        try:
            assert edge.get("/media/img/a.png").headers["Cache-Status"].endswith("stored; detail=db")
            r = edge.get("/media/img/a.png")
            assert r.headers["Cache-Status"] == "mediaedge; fwd=stale; fwd-status=304; detail=db"
            assert sha(r.content) == sha(body)
            assert origin_fetches(edge)[("db", "notmodified")] == 1
            # a new revision in the row: fetched again
            newer = os.urandom(120_000)
            tables.run("UPDATE media SET data = ?, rev = ? WHERE path = ?", (newer, "rev-2", "img/a.png"))
            r = edge.get("/media/img/a.png")
            assert r.headers["Cache-Status"].startswith("mediaedge; fwd=miss") and sha(r.content) == sha(newer)
            # a route without a revision column cannot revalidate: fetched again every time
            sitecore = "/-/media/7f0c1a52-9b3e-4d1f-8a6c-2e5b9d4c3a10.pdf"
            edge.get(sitecore)
            r = edge.get(sitecore)
            assert r.headers["Cache-Status"].startswith("mediaedge; fwd=miss") and r.content == b"x" * 1000 + b"y" * 1000
            fetches = origin_fetches(edge)
            assert fetches[("db", "notmodified")] == 1 and fetches[("db", "ok")] == 4
        finally:
            edge.stop()
    finally:
        tables.close()
