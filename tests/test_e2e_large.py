"""Large media: a several-hundred-MB object streams through a miss and a hit with bounded memory."""
from __future__ import annotations

import hashlib
import time

import pytest
import requests

from tests.edge import Edge, Route, Upstream, synthetic_sha

SIZE = 400 * 1024 * 1024
LIMIT_KIB = 100 * 1024  # peak RSS may grow by at most 100 MiB


def fetch_hash(url: str, headers: dict[str, str] | None = None) -> tuple[str, int, requests.Response, float]:
    h = hashlib.sha256()
    n = 0
    t0 = time.perf_counter()
    with requests.get(url, stream=True, timeout=120, headers=headers or {}) as r:
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n, r, time.perf_counter() - t0


@pytest.mark.full
def test_large_object_miss_and_hit_stream_with_bounded_memory(tmp_path, record_property):
    upstream = Upstream()
    upstream.routes["/media/video.mp4"] = Route(size=SIZE, headers={"Content-Type": "video/mp4",
                                                                     "X-Media-Revision": "v1"})
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--cache-size", "2GiB", "--max-object-size", "1GiB"]).start()
    try:
        expected = synthetic_sha(SIZE)
        edge.get("/media/warmup.jpg")  # import paths, first allocations
        base = edge.peak_rss_kib()

        digest, n, r, t_miss = fetch_hash(edge.url + "/media/video.mp4")
        assert (digest, n) == (expected, SIZE)
        assert "fwd=miss" in r.headers["Cache-Status"] and "stored" in r.headers["Cache-Status"]
        after_miss = edge.peak_rss_kib()

        digest, n, r, t_hit = fetch_hash(edge.url + "/media/video.mp4")
        assert (digest, n) == (expected, SIZE)
        assert r.headers["Cache-Status"].startswith("mediaedge; hit")
        after_hit = edge.peak_rss_kib()

        # a range from deep inside the object, from cache
        with requests.get(edge.url + "/media/video.mp4", headers={"Range": "bytes=300000000-300000099"},
                          timeout=30) as rr:
            assert rr.status_code == 206 and len(rr.content) == 100
        assert upstream.hits["/media/video.mp4"] == 1
        growth_miss = after_miss - base
        growth_hit = after_hit - base
        record_property("peak_rss_growth_miss_kib", growth_miss)
        record_property("peak_rss_growth_hit_kib", growth_hit)
        print(f"\nlarge object {SIZE >> 20} MiB: base peak RSS {base >> 10} MiB, "
              f"miss +{growth_miss >> 10} MiB ({SIZE / t_miss / 1e6:.0f} MB/s), "
              f"hit +{growth_hit >> 10} MiB ({SIZE / t_hit / 1e6:.0f} MB/s)")
        assert growth_miss < LIMIT_KIB, f"miss grew peak RSS by {growth_miss} KiB"
        assert growth_hit < LIMIT_KIB, f"hit grew peak RSS by {growth_hit} KiB"
    finally:
        edge.stop()
        upstream.close()


@pytest.mark.full
def test_seek_near_the_end_of_a_400mb_object_over_max_size_costs_the_window(tmp_path, record_property):
    """The issue's case: 100 bytes near the end of a 400 MB video the edge will not store.
    Before, the edge fetched all 400 MB from the app (2.4 s); now the app sends the window
    (the first seek also sends what the dropped whole answer had in the socket buffers)."""
    from tests.edge import synthetic_chunk

    upstream = Upstream()
    upstream.routes["/media/video.mp4"] = Route(size=SIZE, ranges=True,
                                                headers={"Content-Type": "video/mp4", "ETag": '"v1"'})
    # --slice-size 0: the unsliced path (tests/test_e2e_slices.py has the sliced one)
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--max-object-size", "128MiB", "--slice-size", "0"]).start()
    try:
        costs = []
        for start in (SIZE - 1000, SIZE - 500_000, 300_000_000):
            before = upstream.body_bytes["/media/video.mp4"]
            t0 = time.perf_counter()
            r = requests.get(edge.url + "/media/video.mp4", headers={"Range": f"bytes={start}-{start + 99}"},
                             timeout=60)
            took = time.perf_counter() - t0
            assert r.status_code == 206 and r.content == synthetic_chunk(start, 100)
            costs.append((upstream.body_bytes["/media/video.mp4"] - before, took))
        print(f"\nseeks into a 400 MiB object over --max-object-size: app bytes and time {costs}")
        record_property("seek_costs", costs)
        assert costs[0][0] < 32 << 20
        assert [c for c, _ in costs[1:]] == [100, 100]
    finally:
        edge.stop()
        upstream.close()
