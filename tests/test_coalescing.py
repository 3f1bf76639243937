"""Request coalescing with real processes: many concurrent misses for one key, one origin fetch.

A real `mediaedge serve`, a real loopback upstream that counts requests and records
when it sent each head and finished each body, and real clients (one thread and one
connection each). Contract §2: "Concurrent misses for one key make one origin fetch;
the others join it" and "on a miss the client receives bytes as they arrive".
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from tests.edge import Edge, Route, Upstream, synthetic_chunk, synthetic_sha, wait_until

CLIENTS = 100
SIZE = 2 * 1024 * 1024  # 32 upstream chunks of 64 KiB
CHUNK_DELAY = 0.03  # ~1 s for the whole body: every client arrives while the fill runs


@dataclass
class Result:
    status: int | None = None
    cache_status: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    length: int = 0
    sha256: str = ""
    first_byte_at: float | None = None  # time.monotonic(), same clock as Upstream.finished_at
    done_at: float | None = None
    error: str | None = None  # the body was cut (requests raised)


def fetch(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> Result:
    res = Result()
    h = hashlib.sha256()
    try:
        with requests.get(url, headers=headers or {}, stream=True, timeout=timeout) as r:
            res.status = r.status_code
            res.headers = dict(r.headers)
            res.cache_status = r.headers.get("Cache-Status", "")
            for chunk in r.iter_content(65536):
                if chunk and res.first_byte_at is None:
                    res.first_byte_at = time.monotonic()
                h.update(chunk)
                res.length += len(chunk)
    except requests.RequestException as e:
        res.error = f"{type(e).__name__}: {e}"
    res.sha256 = h.hexdigest()
    res.done_at = time.monotonic()
    return res


def herd(url: str, n: int, headers_for=lambda i: None, timeout: float = 60) -> list[Result]:
    """n clients released at once (a barrier), each on its own connection; bounded by `timeout`."""
    results: list[Result | None] = [None] * n
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        barrier.wait(timeout=30)
        results[i] = fetch(url, headers_for(i), timeout=timeout)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 30
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "clients still running after the deadline"
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory, upstream):
    e = Edge(str(tmp_path_factory.mktemp("coalescing")), upstream=upstream.url,
             args=["--upstream-timeout", "2"]).start()
    yield e
    e.stop()


def test_100_concurrent_misses_make_one_fetch_and_everyone_gets_every_byte(edge, upstream):
    path = "/media/herd/product.jpg"
    upstream.routes[path] = Route(size=SIZE, chunk_delay=CHUNK_DELAY,
                                  headers={"Content-Type": "image/jpeg", "X-Media-Revision": "h1"})
    before = edge.stats()
    results = herd(edge.url + path, CLIENTS)
    expected = synthetic_sha(SIZE)

    assert upstream.hits[path] == 1
    bad = [(i, r.status, r.length, r.error) for i, r in enumerate(results)
           if r.error or r.status != 200 or r.length != SIZE or r.sha256 != expected]
    assert not bad, f"{len(bad)} clients did not get every byte: {bad[:5]}"
    assert all(r.headers.get("X-Media-Revision") == "h1" for r in results)

    collapsed = [r for r in results if "collapsed" in r.cache_status]
    leaders = [r for r in results if "fwd=miss" in r.cache_status and "collapsed" not in r.cache_status]
    assert len(leaders) == 1, [r.cache_status for r in results][:10]
    assert len(collapsed) >= CLIENTS // 2, "most clients should have joined the running fill"

    # Waiters stream from the first byte of the fill, not after it completes. The upstream
    # thread notes its finish after its last write, so a fast client can be done first.
    wait_until(lambda: path in upstream.finished_at, 10, 0.05, "the upstream to note its finish")
    finished = upstream.finished_at[path][0]
    early = [r for r in collapsed if r.first_byte_at is not None and r.first_byte_at < finished]
    assert early, "no joined client received a byte before the upstream finished sending"
    assert len(early) >= len(collapsed) // 2

    after = edge.stats()
    assert after["coalesced"] - before["coalesced"] == len(collapsed)
    assert after["origin_fetches"]["upstream"] - before["origin_fetches"]["upstream"] == 1

    # the entry was stored whole: the next request is a hit with the same bytes
    r = fetch(edge.url + path)
    assert r.cache_status.startswith("mediaedge; hit") and r.sha256 == expected
    assert upstream.hits[path] == 1


def test_range_requests_join_a_running_fill_and_get_their_window(edge, upstream):
    path = "/media/herd/video.mp4"
    upstream.routes[path] = Route(size=SIZE, chunk_delay=CHUNK_DELAY, headers={"X-Media-Revision": "v1"})
    windows = [(0, 99), (SIZE - 100, SIZE - 1), (65_000, 700_000), (1_000_000, None), (None, 5000)]

    def spec(i: int) -> str:
        a, b = windows[i % len(windows)]
        return f"bytes=-{b}" if a is None else f"bytes={a}-{'' if b is None else b}"

    results = herd(edge.url + path, 20, headers_for=lambda i: {"Range": spec(i)})
    assert upstream.hits[path] == 1
    for i, r in enumerate(results):
        a, b = windows[i % len(windows)]
        start, end = (SIZE - b, SIZE) if a is None else (a, SIZE if b is None else b + 1)
        assert r.error is None and r.status == 206, (spec(i), r.status, r.error)
        assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"
        assert r.sha256 == hashlib.sha256(synthetic_chunk(start, end - start)).hexdigest(), spec(i)


def _assert_cut_cleanly(results: list[Result], full_length: int) -> None:
    """Every client saw the failure: an error status before the body, or a broken
    connection mid-body. Never a 200 whose body is short but looks complete."""
    for r in results:
        if r.error is not None:
            continue  # the cut reached the client as a broken body
        assert r.status is not None and r.status >= 500, (r.status, r.length, r.cache_status)


def test_cut_upstream_body_fails_every_waiter_and_is_not_stored(edge, upstream):
    path = "/media/herd/cut.bin"
    upstream.routes[path] = Route(size=SIZE, cut_after=SIZE // 2, chunk_delay=CHUNK_DELAY,
                                  headers={"X-Media-Revision": "c1"})
    results = herd(edge.url + path, 30, timeout=30)
    assert upstream.hits[path] == 1
    _assert_cut_cleanly(results, SIZE)
    assert sum(r.error is not None for r in results) >= 1
    # nothing was stored: the next request fetches again and gets the whole body
    upstream.routes[path] = Route(size=SIZE, headers={"X-Media-Revision": "c1"})
    r = fetch(edge.url + path)
    assert r.status == 200 and r.length == SIZE and r.sha256 == synthetic_sha(SIZE)
    assert "fwd=miss" in r.cache_status
    assert upstream.hits[path] == 2


def test_cut_chunked_upstream_body_fails_every_waiter(edge, upstream):
    """The origin gave no length (chunked): the cut is still a broken body for every
    client, never a clean end of a chunked response."""
    path = "/media/herd/cut-chunked.bin"
    upstream.routes[path] = Route(size=SIZE, cut_after=SIZE // 2, chunk_delay=CHUNK_DELAY, chunked=True,
                                  headers={"X-Media-Revision": "cc1"})
    results = herd(edge.url + path, 20, timeout=30)
    assert upstream.hits[path] == 1
    _assert_cut_cleanly(results, SIZE)
    assert all(r.error is not None or r.length < SIZE for r in results)
    upstream.routes[path] = Route(size=SIZE, chunked=True, headers={"X-Media-Revision": "cc1"})
    r = fetch(edge.url + path)
    assert r.status == 200 and r.length == SIZE and "fwd=miss" in r.cache_status


def test_stalled_upstream_body_times_out_every_waiter(edge, upstream):
    """The upstream sends a head and one chunk, then stalls longer than
    --upstream-timeout (2 s here): every waiter is cut, none hangs, nothing is stored."""
    path = "/media/herd/stall.bin"
    upstream.routes[path] = Route(size=SIZE, chunk_delay=6.0, headers={"X-Media-Revision": "s1"})
    t0 = time.monotonic()
    results = herd(edge.url + path, 20, timeout=30)
    elapsed = time.monotonic() - t0
    assert upstream.hits[path] == 1
    _assert_cut_cleanly(results, SIZE)
    assert all(r.error is not None or r.status >= 500 for r in results)
    assert elapsed < 15, f"waiters were held {elapsed:.1f} s by a stalled upstream"
    upstream.routes[path] = Route(size=SIZE, headers={"X-Media-Revision": "s1"})
    assert "fwd=miss" in fetch(edge.url + path).cache_status


def test_private_requests_do_not_join_a_shared_fill(edge, upstream):
    """Authorization/Cookie requests fetch on their own (README: never join another
    client's fetch); anonymous ones still coalesce."""
    path = "/media/herd/private.jpg"
    upstream.routes[path] = Route(size=SIZE // 4, chunk_delay=CHUNK_DELAY,
                                  headers={"X-Media-Revision": "p1", "Cache-Control": "public, max-age=60"})
    results = herd(edge.url + path, 10,
                   headers_for=lambda i: {"Cookie": f"s={i}"} if i < 3 else None)
    assert all(r.error is None and r.status == 200 and r.length == SIZE // 4 for r in results)
    # 3 private fetches + 1 shared fetch for the 7 anonymous clients (or hits once stored)
    assert upstream.hits[path] <= 4


@pytest.mark.full
def test_coalescing_holds_round_after_round_with_a_fast_upstream(tmp_path):
    """No window between "fill finished" and "entry visible" lets a second fetch in:
    up to 150 rounds (45 s) of 40 concurrent misses on a fresh key against an instant
    upstream; stops at the first round with a second upstream fetch. (Before the engine
    looked again when a fill committed during its lookup, ~5% of rounds had two.)"""
    up = Upstream()
    e = Edge(str(tmp_path), upstream=up.url).start()
    try:
        body = bytes(range(256)) * 400  # 100 KiB
        deadline = time.monotonic() + 45
        for i in range(150):
            path = f"/media/fast/{i}.bin"
            up.routes[path] = Route(body=body, headers={"X-Media-Revision": f"f{i}"})
            results = herd(e.url + path, 40, timeout=30)
            assert all(r.error is None and r.status == 200 and r.length == len(body) for r in results)
            leaders = sorted(r.cache_status for r in results if "collapsed" not in r.cache_status
                             and "fwd=miss" in r.cache_status)
            assert up.hits[path] == 1, f"round {i}: {up.hits[path]} upstream fetches, leaders {leaders}"
            if time.monotonic() > deadline:
                break
    finally:
        e.stop()
        up.close()


@pytest.mark.full
def test_db_origin_misses_coalesce(tmp_path):
    """With no upstream, concurrent misses for a database row read it once."""
    from mediaedge.origins.db import DatabaseOrigin
    import io

    db_url = f"sqlite:///{tmp_path / 'origin.db'}"
    body = synthetic_chunk(0, 3 * 1024 * 1024)
    with DatabaseOrigin(db_url) as db:
        db.put("/media/db/big.bin", io.BytesIO(body), size=len(body), sha256=hashlib.sha256(body).hexdigest(),
               revision="d1", content_type="application/octet-stream")
    e = Edge(str(tmp_path), origin_db=db_url).start()
    try:
        before = e.stats()
        results = herd(e.url + "/media/db/big.bin", 50, timeout=60)
        assert all(r.error is None and r.status == 200 and r.sha256 == hashlib.sha256(body).hexdigest()
                   for r in results)
        after = e.stats()
        assert after["origin_fetches"]["db"] - before["origin_fetches"]["db"] == 1
        wait_until(lambda: e.stats()["requests"] >= before["requests"] + 50, 10, 0.1, "stats")
    finally:
        e.stop()


# ----------------------------------------------------------------------------- per-waiter cap and timeout
@pytest.fixture(scope="module")
def tight_edge(tmp_path_factory, upstream):
    """At most 4 requests per fetch; a request waits at most 2 s for a head or for bytes."""
    e = Edge(str(tmp_path_factory.mktemp("tight")), upstream=upstream.url,
             args=["--upstream-timeout", "10", "--coalesce-max-waiters", "4", "--coalesce-timeout", "2"]).start()
    yield e
    e.stop()


def test_waiters_past_the_cap_get_503_not_another_fetch(tight_edge, upstream):
    path = "/media/tight/capped.jpg"
    size = 1024 * 1024
    upstream.routes[path] = Route(size=size, delay=0.8, chunk_delay=0.05, headers={"X-Media-Revision": "cap1"})
    results = herd(tight_edge.url + path, 12, timeout=30)
    assert upstream.hits[path] == 1
    served = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 503]
    assert len(served) + len(refused) == 12, [(r.status, r.error) for r in results]
    assert refused, "nobody was refused: 12 clients shared a fetch capped at 4"
    assert len([r for r in served if "fwd=miss" in r.cache_status]) <= 4
    assert all(r.error is None and r.length == size and r.sha256 == synthetic_sha(size) for r in served)
    for r in refused:
        assert r.headers.get("Retry-After") == "1" and "Cache-Status" in r.headers
    wait_until(lambda: fetch(tight_edge.url + path).cache_status.startswith("mediaedge; hit"), 10, 0.1,
               "the entry to be stored")
    assert upstream.hits[path] == 1


def test_waiters_give_up_on_a_slow_head_with_504_and_the_fetch_goes_on(tight_edge, upstream):
    path = "/media/tight/slow-head.jpg"
    upstream.routes[path] = Route(body=b"late but good" * 100, delay=4.0, headers={"X-Media-Revision": "sh1"})
    t0 = time.monotonic()
    results = herd(tight_edge.url + path, 3, timeout=30)
    elapsed = time.monotonic() - t0
    assert [r.status for r in results] == [504] * 3, [(r.status, r.error) for r in results]
    assert elapsed < 3.8, f"waiters were held {elapsed:.1f} s with --coalesce-timeout 2"
    r = requests.get(tight_edge.url + path + "?probe", timeout=10)  # another key: the node still serves
    assert r.status_code in (200, 404)
    wait_until(lambda: path in upstream.finished_at, 10, 0.05, "the upstream to finish")
    wait_until(lambda: fetch(tight_edge.url + path).cache_status.startswith("mediaedge; hit"), 10, 0.1,
               "the fetch the waiters left to be stored")
    assert upstream.hits[path] == 1 and fetch(tight_edge.url + path).length == 1300


def test_slow_head_serves_the_stale_entry_when_it_may(tight_edge, upstream):
    path = "/media/tight/stale.jpg"
    upstream.routes[path] = Route(body=b"old" * 1000, headers={"X-Media-Revision": "st1",
                                                              "Cache-Control": "max-age=1, stale-if-error=600"})
    assert fetch(tight_edge.url + path).status == 200
    time.sleep(1.2)  # let it expire (the clock the entry is judged by is the edge's)
    upstream.routes[path] = Route(body=b"new" * 1000, delay=4.0, headers={"X-Media-Revision": "st2"})
    t0 = time.monotonic()
    r = fetch(tight_edge.url + path)
    assert time.monotonic() - t0 < 3.8
    assert r.status == 200 and r.length == 3000 and r.headers["X-Media-Revision"] == "st1", r.cache_status
    assert "hit" in r.cache_status and "ttl=-" in r.cache_status


def test_a_stalled_body_cuts_its_waiters_after_the_timeout_and_the_fill_completes(tight_edge, upstream):
    path = "/media/tight/stall.bin"
    size = 4 * 64 * 1024
    upstream.routes[path] = Route(size=size, chunk_delay=2.6, headers={"X-Media-Revision": "sb1"})
    t0 = time.monotonic()
    results = herd(tight_edge.url + path, 3, timeout=30)
    elapsed = time.monotonic() - t0
    assert all(r.error is not None for r in results), [(r.status, r.length) for r in results]
    assert elapsed < 5.5, f"waiters were held {elapsed:.1f} s by a body stalled past --coalesce-timeout 2"
    wait_until(lambda: path in upstream.finished_at, 15, 0.05, "the upstream to finish")
    r = fetch(tight_edge.url + path)
    assert r.cache_status.startswith("mediaedge; hit") and r.sha256 == synthetic_sha(size), r.cache_status
    assert upstream.hits[path] == 1
