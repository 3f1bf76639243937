"""Slice caching end to end (--slice-size, nginx's slice module): an object from the upstream
larger than a slice is fetched and stored slice by slice with Range requests.

What a user cares about: a seek costs the app one slice, windows across slice boundaries
and whole bodies are byte-exact, a representation that changes between slices never
reaches a client mixed, and an upstream that ignores Range still gets whole-object
behaviour."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
import requests

from mediaedge.webhook import signed_headers
from tests.edge import Edge, Route, Upstream, sha, synthetic_chunk, synthetic_sha, wait_until

MiB = 1 << 20
SLICE = MiB
SIZE = 5 * MiB + 12345  # six slices, the last one short
PATH = "/media/film.mp4"
SECRET = "slice-secret"


def _route(**kw: object) -> Route:
    headers = {"Content-Type": "video/mp4", "ETag": '"e1"'}
    headers.update(kw.pop("headers", {}))  # type: ignore[arg-type]
    return Route(size=kw.pop("size", SIZE), ranges=True, headers=headers, **kw)  # type: ignore[arg-type]


def _edge(tmp_path, upstream: Upstream, *extra: str) -> Edge:
    return Edge(str(tmp_path), upstream=upstream.url,
                args=["--slice-size", "1MiB", "--webhook-secret", SECRET, *extra]).start()


def _settled(upstream: Upstream, path: str = PATH) -> int:
    """The app's body bytes for `path` once it has stopped sending (a slice is read to its
    end after the client's window went out)."""
    last: list[int] = [-1]

    def still() -> bool:
        now = upstream.body_bytes[path]
        same = now == last[0]
        last[0] = now
        return same

    wait_until(still, 10, 0.2, "the upstream to stop sending")
    return upstream.body_bytes[path]


def _learn(edge: Edge, upstream: Upstream, path: str = PATH) -> int:
    """The first request learns the object is sliced from a whole answer's head (dropped)."""
    r = edge.get(path, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == synthetic_chunk(0, 100)
    return _settled(upstream, path)


def test_a_seek_costs_one_slice_and_windows_across_slices_are_exact(tmp_path):
    upstream = Upstream()
    upstream.routes[PATH] = _route()
    edge = _edge(tmp_path, upstream)
    try:
        first = _learn(edge, upstream)
        assert first < SLICE + 8 * MiB  # slice 0, and what the dropped whole answer had in flight
        # A seek into slice 3: exactly one slice from the app, the window to the client.
        before = upstream.body_bytes[PATH]
        start = 3 * SLICE + 1000
        r = edge.get(PATH, headers={"Range": f"bytes={start}-{start + 99}"})
        assert r.status_code == 206 and r.content == synthetic_chunk(start, 100)
        assert r.headers["Content-Range"] == f"bytes {start}-{start + 99}/{SIZE}"
        assert r.headers["Cache-Status"] == "mediaedge; fwd=miss; fwd-status=206; stored; detail=upstream"
        assert _settled(upstream) - before == SLICE
        assert upstream.range_requests[-1] == (PATH, f"bytes={3 * SLICE}-{4 * SLICE - 1}", 206)
        # Another seek into the same slice: from the cache, nothing from the app.
        before = upstream.body_bytes[PATH]
        r = edge.get(PATH, headers={"Range": f"bytes={start + 5000}-{start + 5099}"})
        assert r.status_code == 206 and r.content == synthetic_chunk(start + 5000, 100)
        assert r.headers["Cache-Status"].startswith("mediaedge; hit")
        # A window across the boundary of slices 3 and 4: one more slice, bytes exact.
        a, b = 4 * SLICE - 777, 4 * SLICE + 888
        r = edge.get(PATH, headers={"Range": f"bytes={a}-{b}"})
        assert r.status_code == 206 and sha(r.content) == sha(synthetic_chunk(a, b - a + 1))
        assert _settled(upstream) - before == SLICE
        # The last, short slice (suffix form).
        r = edge.get(PATH, headers={"Range": "bytes=-10"})
        assert r.status_code == 206 and r.content == synthetic_chunk(SIZE - 10, 10)
        # The whole object: streamed slice after slice, the missing ones fetched as it goes.
        before = upstream.body_bytes[PATH]
        r = edge.get(PATH)
        assert r.status_code == 200 and r.headers["Content-Length"] == str(SIZE)
        assert sha(r.content) == synthetic_sha(SIZE) and r.headers["ETag"] == '"e1"'
        assert _settled(upstream) - before == 2 * SLICE  # slices 1 and 2: the others were stored
        r = edge.get(PATH)
        assert r.headers["Cache-Status"].startswith("mediaedge; hit") and sha(r.content) == synthetic_sha(SIZE)
        r = edge.get(PATH, headers={"If-None-Match": '"e1"'})
        assert r.status_code == 304
        assert _settled(upstream) - before == 2 * SLICE
        assert edge.stats()["entries"] == 6  # one entry per slice, none for the whole
    finally:
        edge.stop()
        upstream.close()


def test_a_4gb_object_seek_costs_one_slice(tmp_path):
    """A 4 GiB video (generated on the fly, never stored whole): a seek near its end costs
    the app one slice, and the edge stores just that slice."""
    size = 4 << 30
    path = "/media/huge.mp4"
    upstream = Upstream()
    upstream.routes[path] = _route(size=size)
    edge = _edge(tmp_path, upstream)
    try:
        _learn(edge, upstream, path)
        for start in (size - 100, size // 2 + 12345, 3 * (size // 4)):
            before = upstream.body_bytes[path]
            r = edge.get(path, headers={"Range": f"bytes={start}-{start + 99}"})
            assert r.status_code == 206 and r.content == synthetic_chunk(start, 100)
            assert r.headers["Content-Range"] == f"bytes {start}-{start + 99}/{size}"
            assert _settled(upstream, path) - before == SLICE
        assert edge.stats()["cache_bytes"] < 16 * MiB
    finally:
        edge.stop()
        upstream.close()


def test_a_changed_representation_between_slices_cuts_the_response_and_drops_the_slices(tmp_path):
    upstream = Upstream()
    upstream.routes[PATH] = _route()
    edge = _edge(tmp_path, upstream)
    try:
        _learn(edge, upstream)  # slice 0 of "e1" stored
        upstream.routes[PATH] = _route(seed=1, headers={"ETag": '"e2"'})  # changed behind the edge
        got = b""
        cut = False
        try:
            with requests.get(edge.url + PATH, stream=True, timeout=30) as r:
                assert r.status_code == 200 and r.headers["Content-Length"] == str(SIZE)
                for chunk in r.iter_content(65536):
                    got += chunk
        except requests.exceptions.RequestException:
            cut = True
        assert cut or len(got) < SIZE, "a response mixing two representations completed"
        assert got == synthetic_chunk(0, len(got))  # what went out is all of the old one
        assert len(got) <= SLICE
        # The next request gets the new representation, whole and exact.
        r = wait_until(lambda: (x := edge.get(PATH)).status_code == 200 and len(x.content) == SIZE and x, 10,
                       what="the new representation")
        assert sha(r.content) == synthetic_sha(SIZE, seed=1) and r.headers["ETag"] == '"e2"'
    finally:
        edge.stop()
        upstream.close()


def test_an_upstream_that_ignores_range_gets_whole_object_behaviour(tmp_path):
    """It says `Accept-Ranges: bytes` but answers every Range with the whole 200."""
    upstream = Upstream()
    upstream.routes[PATH] = Route(size=SIZE, headers={"Content-Type": "video/mp4", "ETag": '"e1"',
                                                      "Accept-Ranges": "bytes"})
    edge = _edge(tmp_path, upstream)
    try:
        r = edge.get(PATH, headers={"Range": "bytes=3000000-3000099"})
        assert r.status_code == 206 and r.content == synthetic_chunk(3000000, 100)
        r = wait_until(lambda: (x := edge.get(PATH)).headers["Cache-Status"].startswith("mediaedge; hit") and x,
                       10, what="the object stored whole")
        assert sha(r.content) == synthetic_sha(SIZE)
        hits = upstream.hits[PATH]
        assert hits <= 3  # learnt (dropped), the slice answered 200 (dropped), the whole fetch
        r = edge.get(PATH, headers={"Range": f"bytes={SIZE - 10}-"})
        assert r.status_code == 206 and r.content == synthetic_chunk(SIZE - 10, 10)
        assert upstream.hits[PATH] == hits
    finally:
        edge.stop()
        upstream.close()


def _publish(edge: Edge, events: list[dict]) -> requests.Response:
    raw = json.dumps({"events": events}).encode()
    headers = signed_headers(SECRET, raw, time.time())
    headers["Content-Type"] = "application/json"
    return requests.post(edge.admin + "/publish", data=raw, headers=headers, timeout=10)


@pytest.mark.parametrize("event", [{"type": "purge", "path": PATH}, {"type": "purge", "tag": "film"},
                                   {"type": "purge", "prefix": "/media/"}], ids=["path", "tag", "prefix"])
def test_purge_covers_every_slice(tmp_path, event):
    upstream = Upstream()
    upstream.routes[PATH] = _route(headers={"Surrogate-Key": "film"})
    edge = _edge(tmp_path, upstream)
    try:
        r = edge.get(PATH)
        assert sha(r.content) == synthetic_sha(SIZE)
        wait_until(lambda: edge.stats()["entries"] == 6, 10, what="six slices stored")
        assert edge.get(PATH, headers={"Range": "bytes=10-19"}).headers["Cache-Status"].startswith("mediaedge; hit")
        assert _publish(edge, [event]).status_code == 200
        assert edge.stats()["entries"] == 0
        r = edge.get(PATH, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == synthetic_chunk(10, 10)
        assert "fwd=miss" in r.headers["Cache-Status"]
    finally:
        edge.stop()
        upstream.close()


def test_slicing_off_fetches_whole(tmp_path):
    upstream = Upstream()
    upstream.routes[PATH] = _route()
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--slice-size", "0"]).start()
    try:
        r = edge.get(PATH, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == synthetic_chunk(10, 10)
        wait_until(lambda: edge.get(PATH, headers={"Range": "bytes=0-0"}).headers["Cache-Status"].startswith(
            "mediaedge; hit"), 10, what="stored whole")
        assert upstream.range_requests == [] and upstream.hits[PATH] == 1
    finally:
        edge.stop()
        upstream.close()


@pytest.mark.full
def test_a_whole_400mb_sliced_object_streams_with_flat_memory(tmp_path):
    size = 400 * MiB
    upstream = Upstream()
    upstream.routes[PATH] = _route(size=size)
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--cache-size", "2GiB"]).start()  # 16 MiB slices
    try:
        edge.get("/media/warmup.jpg")
        base = edge.peak_rss_kib()
        took = []
        for _ in range(2):  # a miss, slice after slice, then a hit
            h = hashlib.sha256()
            t0 = time.perf_counter()
            with requests.get(edge.url + PATH, stream=True, timeout=300) as r:
                for chunk in r.iter_content(1 << 20):
                    h.update(chunk)
            took.append(time.perf_counter() - t0)
            assert h.hexdigest() == synthetic_sha(size)
        growth = edge.peak_rss_kib() - base
        print(f"\nsliced 400 MiB: peak RSS +{growth >> 10} MiB, miss {size / took[0] / 1e6:.0f} MB/s, "
              f"hit {size / took[1] / 1e6:.0f} MB/s")
        assert growth < 100 * 1024, f"peak RSS grew by {growth} KiB"
    finally:
        edge.stop()
        upstream.close()


def test_concurrent_seeks_into_one_slice_share_its_fetch(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    upstream = Upstream()
    upstream.routes[PATH] = _route(chunk_delay=0.01)  # a slice takes a while to arrive
    edge = _edge(tmp_path, upstream)
    try:
        _learn(edge, upstream)
        asked = len(upstream.range_requests)
        starts = [2 * SLICE + 4096 * i for i in range(6)]
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(lambda a: edge.get(PATH, headers={"Range": f"bytes={a}-{a + 99}"}), starts))
        assert all(r.status_code == 206 and r.content == synthetic_chunk(a, 100) for a, r in zip(starts, got))
        assert upstream.range_requests[asked:] == [(PATH, f"bytes={2 * SLICE}-{3 * SLICE - 1}", 206)]
    finally:
        edge.stop()
        upstream.close()


def test_a_client_that_leaves_mid_slice_holds_nobody_up(tmp_path):
    """A client gone during a slice's fetch: the slice is not stored half, and the next
    request for it fetches it at once (nobody waits on the abandoned fetch)."""
    upstream = Upstream()
    upstream.routes[PATH] = _route(chunk_delay=0.005)
    edge = _edge(tmp_path, upstream)
    try:
        _learn(edge, upstream)
        with requests.get(edge.url + PATH, headers={"Range": f"bytes={SLICE}-"}, stream=True, timeout=30) as r:
            assert r.status_code == 206
            next(r.iter_content(65536))
        t0 = time.monotonic()
        r = edge.get(PATH, headers={"Range": f"bytes={SLICE + 10}-{SLICE + 19}"})
        assert r.status_code == 206 and r.content == synthetic_chunk(SLICE + 10, 10)
        assert time.monotonic() - t0 < 10
        r = wait_until(lambda: (x := edge.get(PATH, headers={"Range": f"bytes={SLICE}-{SLICE + 9}"})).headers[
            "Cache-Status"].startswith("mediaedge; hit") and x, 10, what="slice 1 stored whole")
        assert r.content == synthetic_chunk(SLICE, 10)
    finally:
        edge.stop()
        upstream.close()


def test_a_purge_during_a_slice_fetch_keeps_that_slice_out_of_the_cache(tmp_path):
    """The commit-time epoch check covers slices: a slice whose fetch began before a purge
    of its object is sent to its client but never stored."""
    import threading

    upstream = Upstream()
    route = _route()
    upstream.routes[PATH] = route
    edge = _edge(tmp_path, upstream)
    try:
        _learn(edge, upstream)
        route.hold_at, route.hold, route.held = 100_000, threading.Event(), threading.Event()
        result: list[requests.Response] = []
        t = threading.Thread(target=lambda: result.append(
            edge.get(PATH, headers={"Range": f"bytes={2 * SLICE}-{2 * SLICE + 9}"})))
        t.start()
        assert route.held.wait(10), "the slice fetch did not start"
        assert _publish(edge, [{"type": "purge", "path": PATH}]).status_code == 200
        route.hold_at = None
        route.hold.set()
        t.join(30)
        assert result and result[0].status_code == 206 and result[0].content == synthetic_chunk(2 * SLICE, 10)
        _settled(upstream)
        asked = len(upstream.range_requests)
        r = edge.get(PATH, headers={"Range": f"bytes={2 * SLICE}-{2 * SLICE + 9}"})
        assert r.content == synthetic_chunk(2 * SLICE, 10)
        assert "fwd=miss" in r.headers["Cache-Status"]  # not stored: fetched again
        assert len(upstream.range_requests) > asked
    finally:
        edge.stop()
        upstream.close()
