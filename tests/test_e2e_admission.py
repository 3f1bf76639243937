"""End to end: admission and eviction by frequency (mediaedge.policy.admission) in a real
`mediaedge serve` with a small --cache-size, against a real loopback upstream."""
from __future__ import annotations

import os
import threading


from tests.edge import Edge, Route, Upstream, sha

CACHE = 2 * 1024 * 1024
OBJ = 100_000
ARGS = ["--cache-size", "2MiB", "--max-object-size", "256KiB"]
OCTETS = {"Content-Type": "application/octet-stream"}


def _route(upstream: Upstream, path: str, **kw: object) -> bytes:
    body = os.urandom(OBJ)
    upstream.routes[path] = Route(body=body, headers=OCTETS, **kw)  # type: ignore[arg-type]
    return body


def test_one_hit_wonder_flood_keeps_the_popular_entry(tmp_path, upstream):
    pop = "/media/pop.bin"
    pop_body = _route(upstream, pop)
    flood = {f"/media/once{i}.bin": _route(upstream, f"/media/once{i}.bin") for i in range(60)}
    twice = {f"/media/twice{i}.bin": _route(upstream, f"/media/twice{i}.bin") for i in range(6)}
    e = Edge(str(tmp_path), upstream=upstream.url, args=ARGS).start()
    try:
        for _ in range(5):
            assert sha(e.get(pop).content) == sha(pop_body)
        statuses = []
        for path, body in flood.items():
            r = e.get(path)
            assert r.status_code == 200 and sha(r.content) == sha(body)
            statuses.append(r.headers["Cache-Status"])
        # once the cache is full, one-hit wonders are served as misses and not stored
        refused = "mediaedge; fwd=miss; fwd-status=200; detail=upstream"
        assert statuses[0] == "mediaedge; fwd=miss; fwd-status=200; stored; detail=upstream"
        assert statuses[-1] == refused and statuses.count(refused) >= 40, statuses
        r = e.get(pop)
        assert sha(r.content) == sha(pop_body) and r.headers["Cache-Status"].startswith("mediaedge; hit")
        assert upstream.hits[pop] == 1
        # asked for twice, an object displaces one-hit residents: evictions, counted
        for path, body in twice.items():
            for _ in range(2):
                assert sha(e.get(path).content) == sha(body)
        r = e.get(next(iter(twice)))
        assert r.headers["Cache-Status"].startswith("mediaedge; hit"), r.headers["Cache-Status"]
        s = e.stats()
        assert s["evictions"] > 0 and s["admission_refused"] >= 40
        assert s["cache_bytes"] <= CACHE
        assert s["requests"] == s["hits"] + s["misses"] + s["stale"] + s["passes"] + s["errors"]
        assert sha(e.get(pop).content) == sha(pop_body)
        assert upstream.hits[pop] == 1  # never evicted, never fetched again
    finally:
        e.stop()


def test_refused_fill_still_feeds_every_coalesced_waiter(tmp_path, upstream):
    """Admission refuses to store, not to share: a stampede on a refused object gets the
    whole body from one origin fetch, and the next request misses again."""
    residents = {f"/media/res{i}.bin": _route(upstream, f"/media/res{i}.bin") for i in range(20)}
    e = Edge(str(tmp_path), upstream=upstream.url, args=ARGS).start()
    try:
        for _ in range(12):  # every resident asked for often: a newcomer asked for 5 times is weaker
            for path in residents:
                e.get(path)
        new = "/media/stampede.bin"
        body = _route(upstream, new, delay=0.5)
        results: list[tuple[int, str, str]] = []

        def one() -> None:
            r = e.get(new)
            results.append((r.status_code, sha(r.content), r.headers["Cache-Status"]))

        threads = [threading.Thread(target=one) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [(st, h) for st, h, _ in results] == [(200, sha(body))] * 5
        assert upstream.hits[new] == 1
        assert all("fwd=miss" in cs and "stored" not in cs for _, _, cs in results), results
        assert sum("collapsed" in cs for _, _, cs in results) == 4
        r = e.get(new)
        assert sha(r.content) == sha(body) and "fwd=miss" in r.headers["Cache-Status"]
        assert upstream.hits[new] == 2
        assert e.stats()["cache_bytes"] <= CACHE
    finally:
        e.stop()


def test_restart_with_empty_counts_evicts_only_what_new_entries_need(tmp_path, upstream):
    """The counts live in memory and start empty: after a restart newcomers are admitted
    (every resident counts 0) and each evicts only its room, oldest first; the rest stay hits."""
    old = {f"/media/old{i}.bin": _route(upstream, f"/media/old{i}.bin") for i in range(12)}
    new = {f"/media/new{i}.bin": _route(upstream, f"/media/new{i}.bin") for i in range(3)}
    e = Edge(str(tmp_path), upstream=upstream.url, args=ARGS).start()
    try:
        for path in old:
            for _ in range(3):
                e.get(path)
    finally:
        e.stop()
    e = Edge(str(tmp_path), upstream=upstream.url, args=ARGS, cache_dir=e.cache_dir).start()
    try:
        for path, body in new.items():
            r = e.get(path)
            assert sha(r.content) == sha(body) and "stored" in r.headers["Cache-Status"], r.headers["Cache-Status"]
        still = [p for p in old if e.get(p).headers["Cache-Status"].startswith("mediaedge; hit")]
        assert len(still) >= len(old) - len(new) - 1, still
        assert all(upstream.hits[p] == 1 for p in still)
        assert e.stats()["cache_bytes"] <= CACHE
    finally:
        e.stop()
