"""End to end: real `mediaedge serve` between a real client and a real loopback upstream."""
from __future__ import annotations

import os
import socket
import time

import pytest
import requests

from tests.edge import Edge, Route, sha, wait_until

BODY = os.urandom(10_000)


def test_miss_then_hit_exact_bytes_and_one_upstream_fetch(edge, upstream):
    upstream.routes["/media/a.jpg"] = Route(body=BODY, headers={"Content-Type": "image/jpeg", "X-Media-Revision": "r1"})
    r1 = edge.get("/media/a.jpg")
    assert r1.status_code == 200
    assert sha(r1.content) == sha(BODY)
    assert r1.headers["Cache-Status"] == "mediaedge; fwd=miss; fwd-status=200; stored; detail=upstream"
    assert r1.headers["X-Media-Revision"] == "r1"
    r2 = edge.get("/media/a.jpg")
    assert r2.status_code == 200
    assert sha(r2.content) == sha(BODY)
    assert r2.headers["Cache-Status"].startswith("mediaedge; hit")
    assert r2.headers["Content-Length"] == str(len(BODY))
    assert r2.headers["Accept-Ranges"] == "bytes"
    assert r2.headers["ETag"] == '"r1"'
    assert "Age" in r2.headers
    assert r2.headers["Content-Type"] == "image/jpeg"
    assert upstream.hits["/media/a.jpg"] == 1


def test_head_and_get_share_entries(edge, upstream):
    upstream.routes["/media/h.png"] = Route(body=BODY, headers={"X-Media-Revision": "h1"})
    h = requests.head(edge.url + "/media/h.png", timeout=10)
    assert h.status_code == 200
    assert h.headers["Content-Length"] == str(len(BODY))
    assert h.content == b""
    g = edge.get("/media/h.png")
    # the HEAD's fill may still be running (joined: collapsed) or done (hit); never a second fetch
    assert g.headers["Cache-Status"].startswith("mediaedge; hit") or "collapsed" in g.headers["Cache-Status"]
    assert g.content == BODY
    assert upstream.hits["/media/h.png"] == 1


def test_conditional_304(edge, upstream):
    upstream.routes["/media/c.jpg"] = Route(body=BODY, headers={"X-Media-Revision": "c1",
                                                                "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"})
    edge.get("/media/c.jpg")
    r = edge.get("/media/c.jpg", headers={"If-None-Match": '"c1"'})
    assert r.status_code == 304
    assert r.content == b""
    r = edge.get("/media/c.jpg", headers={"If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert r.status_code == 304
    r = edge.get("/media/c.jpg", headers={"If-None-Match": '"other"'})
    assert r.status_code == 200 and r.content == BODY


@pytest.mark.parametrize(
    "range_header,status,expected",
    [
        ("bytes=0-99", 206, (0, 100)),
        ("bytes=9900-", 206, (9900, 10000)),
        ("bytes=-10", 206, (9990, 10000)),
        ("bytes=9990-20000", 206, (9990, 10000)),
        ("bytes=20000-", 416, None),
        ("bytes=abc", 200, (0, 10000)),  # malformed: ignored
        ("bytes=0-1,5-6", 200, (0, 10000)),  # several ranges: full 200 (README)
    ],
)
def test_ranges_from_cache_and_on_miss(edge, upstream, range_header, status, expected):
    path = f"/media/r{abs(hash(range_header))}.bin"
    upstream.routes[path] = Route(body=BODY, headers={"X-Media-Revision": "r"})
    # on a miss: the whole object is fetched once and stored, the client gets its range
    r = edge.get(path, headers={"Range": range_header})
    assert r.status_code == status
    for _attempt in range(2):
        if status == 416:
            assert r.headers["Content-Range"] == f"bytes */{len(BODY)}"
        else:
            a, b = expected
            assert r.content == BODY[a:b]
            if status == 206:
                assert r.headers["Content-Range"] == f"bytes {a}-{b - 1}/{len(BODY)}"
        r = edge.get(path, headers={"Range": range_header})
        assert r.status_code == status
    assert upstream.hits[path] == 1
    assert "range" not in {k.lower() for k in upstream.requests[-1][2]}


@pytest.mark.parametrize(
    "headers,req_headers",
    [
        ({"Cache-Control": "no-store"}, {}),
        ({"Cache-Control": "private, max-age=60"}, {}),
        ({"Set-Cookie": "s=1"}, {}),
        ({"Vary": "*"}, {}),
        ({}, {"Authorization": "Bearer x"}),
    ],
)
def test_not_stored(edge, upstream, headers, req_headers):
    path = f"/media/ns{abs(hash(str(headers) + str(req_headers)))}.jpg"
    upstream.routes[path] = Route(body=BODY, headers=headers)
    for _ in range(2):
        r = edge.get(path, headers=req_headers)
        assert r.status_code == 200 and r.content == BODY
        assert "stored" not in r.headers["Cache-Status"]
        assert "fwd=bypass" in r.headers["Cache-Status"]
    assert upstream.hits[path] == 2


def test_authorization_with_public_is_stored(edge, upstream):
    upstream.routes["/media/pub.jpg"] = Route(body=BODY, headers={"Cache-Control": "public, max-age=60"})
    edge.get("/media/pub.jpg", headers={"Authorization": "Bearer x"})
    r = edge.get("/media/pub.jpg")
    assert r.headers["Cache-Status"].startswith("mediaedge; hit")
    assert upstream.hits["/media/pub.jpg"] == 1


def test_hard_refresh_served_from_cache(edge, upstream):
    upstream.routes["/media/f.jpg"] = Route(body=BODY)
    edge.get("/media/f.jpg")
    r = edge.get("/media/f.jpg", headers={"Cache-Control": "no-cache", "Pragma": "no-cache"})
    assert r.headers["Cache-Status"].startswith("mediaedge; hit")
    assert upstream.hits["/media/f.jpg"] == 1


def test_expiry_refetches(edge, upstream):
    """Fresh for max-age after receipt, refetched once past it.

    No Date from the app (http.server's has 1 s granularity: with max-age=1 an entry
    could be stale on arrival), so its age counts from the edge's receipt time (RFC
    9110 6.6.1); the expiry is polled for, and only a lower bound is put on when it
    came, which a loaded machine cannot break."""
    max_age = 3
    upstream.routes["/media/e.jpg"] = Route(body=BODY, headers={"Cache-Control": f"max-age={max_age}"}, date=False)
    sent = time.monotonic()
    edge.get("/media/e.jpg")
    assert edge.get("/media/e.jpg").headers["Cache-Status"].startswith("mediaedge; hit")
    wait_until(lambda: "fwd=" in edge.get("/media/e.jpg").headers["Cache-Status"], 10 + max_age, 0.2, "expiry")
    assert time.monotonic() - sent >= max_age - 0.1, "refetched before max-age ran out"
    assert upstream.hits["/media/e.jpg"] == 2


def test_vary_keys_variants(edge, upstream):
    calls = {"n": 0}

    def body() -> bytes:
        calls["n"] += 1
        return b"variant-%d" % calls["n"]

    upstream.routes["/media/v.jpg"] = Route(body=body, headers={"Vary": "Accept"})
    a1 = edge.get("/media/v.jpg", headers={"Accept": "image/webp"})
    b1 = edge.get("/media/v.jpg", headers={"Accept": "image/png"})
    a2 = edge.get("/media/v.jpg", headers={"Accept": "image/webp"})
    assert a1.content != b1.content
    assert a2.content == a1.content
    assert a2.headers["Cache-Status"].startswith("mediaedge; hit")


def test_non_media_forwarded_untouched_and_not_stored(edge, upstream):
    upstream.routes["/api/x"] = Route(body=b"api", headers={"X-App": "1"})
    for _ in range(2):
        r = edge.get("/api/x")
        assert r.content == b"api" and r.headers["X-App"] == "1"
        assert "Cache-Status" not in r.headers
    assert upstream.hits["/api/x"] == 2


def test_unsafe_request_invalidates(edge, upstream):
    upstream.routes["/media/u.jpg"] = Route(body=BODY)
    edge.get("/media/u.jpg")
    requests.post(edge.url + "/media/u.jpg", data=b"x", timeout=10)
    r = edge.get("/media/u.jpg")
    assert "fwd=miss" in r.headers["Cache-Status"]
    assert upstream.hits["/media/u.jpg"] == 3  # GET, POST, GET


def test_cache_survives_restart(tmp_path, upstream):
    upstream.routes["/media/p.jpg"] = Route(body=BODY, headers={"X-Media-Revision": "p1"})
    e = Edge(str(tmp_path), upstream=upstream.url).start()
    try:
        e.get("/media/p.jpg")
    finally:
        e.stop()
    e = Edge(str(tmp_path), upstream=upstream.url).start()
    try:
        r = e.get("/media/p.jpg")
        assert r.headers["Cache-Status"].startswith("mediaedge; hit") and r.content == BODY
    finally:
        e.stop()
    assert upstream.hits["/media/p.jpg"] == 1
    assert oct(os.stat(os.path.join(str(tmp_path), "cache")).st_mode & 0o777) == "0o700"


def test_upstream_cut_short_is_not_stored(edge, upstream):
    upstream.routes["/media/cut.bin"] = Route(size=2_000_000, cut_after=500_000)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        r = edge.get("/media/cut.bin")
        r.content  # noqa: B018
    upstream.routes["/media/cut.bin"] = Route(size=2_000_000)
    r = edge.get("/media/cut.bin")
    assert "fwd=miss" in r.headers["Cache-Status"] and len(r.content) == 2_000_000


def test_bad_paths(edge, upstream):
    for raw, status in [("/media/../etc/passwd", 400), ("/media/%2e%2e/x", 400), ("/media/a%00b", 400),
                        ("/media/a%2Fb", 400), ("/media/" + "a" * 5000, 414)]:
        with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as s:
            s.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.split(b" ", 2)[1] == str(status).encode(), (raw, data[:200])
    assert not any(p.startswith("/etc") or ".." in p for p in upstream.hits)


def test_max_object_size_passes_through(tmp_path, upstream):
    upstream.routes["/media/big.bin"] = Route(size=300_000)
    e = Edge(str(tmp_path), upstream=upstream.url, args=["--max-object-size", "100000"]).start()
    try:
        for _ in range(2):
            r = e.get("/media/big.bin")
            assert len(r.content) == 300_000
            assert "stored" not in r.headers["Cache-Status"]
    finally:
        e.stop()
    assert upstream.hits["/media/big.bin"] == 2


def test_cache_size_bound_holds(tmp_path, upstream):
    for i in range(40):
        upstream.routes[f"/media/s{i}.bin"] = Route(body=os.urandom(200_000))
    e = Edge(str(tmp_path), upstream=upstream.url, args=["--cache-size", "2MiB"]).start()
    try:
        for i in range(40):
            assert e.get(f"/media/s{i}.bin").status_code == 200
        s = e.stats()
        assert s["cache_bytes"] <= 2 * 1024 * 1024
    finally:
        e.stop()


def test_entry_evicted_from_disk_is_not_served_from_memory(tmp_path, upstream):
    """A small entry hit twice sits in the memory tier; once later stores evict it from
    disk (--cache-size), the next request goes to the origin again, as with no memory tier."""
    bodies = {f"/media/churn{i}.bin": os.urandom(100_000) for i in range(40)}
    for path, body in bodies.items():
        upstream.routes[path] = Route(body=body, headers={"Content-Type": "application/octet-stream"})
    e = Edge(str(tmp_path), upstream=upstream.url, args=["--cache-size", "2MiB", "--max-object-size", "256KiB"]).start()
    try:
        first = "/media/churn0.bin"
        for _ in range(3):  # miss, then hits (the memory tier holds it from the first hit)
            r = e.get(first)
            assert sha(r.content) == sha(bodies[first])
        assert r.headers["Cache-Status"].startswith("mediaedge; hit")
        # Each later object asked for more often than `first` (3 times): admission by
        # frequency (mediaedge.policy.admission) then lets them push it out.
        for path in list(bodies)[1:]:
            for _ in range(5):
                assert sha(e.get(path).content) == sha(bodies[path])
        assert upstream.hits[first] == 1
        r = e.get(first)
        assert sha(r.content) == sha(bodies[first])
        assert "fwd=miss" in r.headers["Cache-Status"], r.headers["Cache-Status"]
        assert upstream.hits[first] == 2
    finally:
        e.stop()
