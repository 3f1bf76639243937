"""Soak: a bounded mix of hits, misses, ranges, 404s, database rows, publishes and purges
against a real node, with every byte checked and memory sampled.

Bounded: 32 client threads (MEDIAEDGE_SOAK_CLIENTS) for 60 s (MEDIAEDGE_SOAK_SECONDS), each request with
its own timeout. Checked:
- zero wrong bytes: every 200 is compared with the upstream's content for the revision
  named in its X-Media-Revision header, every 206 with the right window of it; 404s only
  for the paths nobody has;
- "new requests never get an older revision" (contract §4): a request that starts after
  a publish of revision n was acknowledged gets n or newer;
- flat memory: RSS growth of the node after warm-up stays under 60 MiB;
- the stats add up (requests = hits + stale + misses + passes + errors) with no errors.

Publishing follows the contract's model, where the database origin is the source of
truth: each new revision is written to the database, then served by the app, then
published. (An app running ahead of its webhook with no database row is
tests/test_faults.py::test_app_ahead_of_its_publish_webhook_is_not_a_404.)
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import threading
import time
from collections import defaultdict

import pytest
import requests

from mediaedge.webhook import signed_headers
from tests.edge import Edge, Route, Upstream, synthetic_chunk, wait_until

SECRET = "soak-secret"
SECONDS = float(os.environ.get("MEDIAEDGE_SOAK_SECONDS", "60"))
CLIENTS = int(os.environ.get("MEDIAEDGE_SOAK_CLIENTS", "32"))
RSS_GROWTH_LIMIT_MIB = 60

SIZES = [2_000, 9_000, 30_000, 70_000, 250_000, 600_000, 1_500_000]  # inline, small files, streamed
UPSTREAM_PATHS = [f"/media/soak/u{i}.bin" for i in range(40)]
DB_PATHS = [f"/media/soak/db{i}.jpg" for i in range(5)]
MISSING_PATHS = [f"/media/soak/missing{i}.jpg" for i in range(10)]


def size_of(i: int) -> int:
    return SIZES[i % len(SIZES)]


def seed_of(i: int, rev: int) -> int:
    return i * 1000 + rev


class Content:
    """What the upstream serves: path i at revision n is synthetic bytes with seed (i, n)."""

    def __init__(self) -> None:
        self._digests: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()

    def digest(self, i: int, rev: int) -> str:
        key = (i, rev)
        with self._lock:
            if key in self._digests:
                return self._digests[key]
        d = hashlib.sha256(synthetic_chunk(0, size_of(i), seed_of(i, rev))).hexdigest()
        with self._lock:
            self._digests[key] = d
        return d


def publish(edge: Edge, events: list[dict]) -> requests.Response:
    body = json.dumps({"events": events}).encode()
    headers = signed_headers(SECRET, body, time.time())
    headers["Content-Type"] = "application/json"
    return requests.post(edge.admin + "/publish", data=body, headers=headers, timeout=10)


@pytest.mark.full
def test_soak_mixed_traffic_zero_wrong_bytes_and_flat_memory(tmp_path, record_property):
    up = Upstream()
    content = Content()
    revision = {i: 1 for i in range(len(UPSTREAM_PATHS))}

    def serve(i: int) -> None:
        rev = revision[i]
        up.routes[UPSTREAM_PATHS[i]] = Route(size=size_of(i), seed=seed_of(i, rev),
                                             headers={"X-Media-Revision": f"r{rev}", "Content-Type": "image/jpeg"})

    for i in range(len(UPSTREAM_PATHS)):
        serve(i)
    db_url = f"sqlite:///{tmp_path / 'origin.db'}"
    db_bodies = {p: os.urandom(5_000 + 20_000 * k) for k, p in enumerate(DB_PATHS)}
    from mediaedge.origins.db import DatabaseOrigin

    with DatabaseOrigin(db_url) as db:
        for p, b in db_bodies.items():
            db.put(p, io.BytesIO(b), size=len(b), sha256=hashlib.sha256(b).hexdigest(), revision="d1",
                   content_type="image/jpeg")
    edge = Edge(str(tmp_path), upstream=up.url, origin_db=db_url,
                args=["--webhook-secret", SECRET, "--cache-size", "12MiB", "--max-object-size", "2MiB",
                      "--negative-ttl", "2"]).start()

    deadline = time.monotonic() + SECONDS
    published: dict[int, list[tuple[int, float]]] = defaultdict(list)  # i -> [(rev, acknowledged at)]
    pub_lock = threading.Lock()
    wrong: list[str] = []
    counts: dict[str, int] = defaultdict(int)
    count_lock = threading.Lock()

    def bad(msg: str) -> None:
        if len(wrong) < 50:
            wrong.append(msg)

    def min_rev(i: int, started: float) -> int:
        with pub_lock:
            done = [rev for rev, at in published[i] if at < started]
        return max(done, default=1)

    def client(k: int) -> None:
        rng = random.Random(k)
        session = requests.Session()
        while time.monotonic() < deadline:
            roll = rng.random()
            started = time.monotonic()
            try:
                if roll < 0.60:
                    kind = "full"
                    i = rng.randrange(len(UPSTREAM_PATHS))
                    r = session.get(edge.url + UPSTREAM_PATHS[i], timeout=30)
                    rev = int(r.headers.get("X-Media-Revision", "r0")[1:])
                    if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != content.digest(i, rev):
                        bad(f"{UPSTREAM_PATHS[i]}: {r.status_code}, {len(r.content)} B, revision r{rev}, "
                            f"{r.headers.get('Cache-Status')}")
                    elif rev < min_rev(i, started):
                        bad(f"{UPSTREAM_PATHS[i]}: r{rev} served after r{min_rev(i, started)} was published")
                elif roll < 0.75:
                    kind = "range"
                    i = rng.randrange(len(UPSTREAM_PATHS))
                    size = size_of(i)
                    a = rng.randrange(size)
                    b = min(size - 1, a + rng.randrange(1, 200_000))
                    r = session.get(edge.url + UPSTREAM_PATHS[i], headers={"Range": f"bytes={a}-{b}"}, timeout=30)
                    rev = int(r.headers.get("X-Media-Revision", "r0")[1:])
                    if (r.status_code != 206 or r.headers.get("Content-Range") != f"bytes {a}-{b}/{size}"
                            or r.content != synthetic_chunk(a, b - a + 1, seed_of(i, rev))):
                        bad(f"{UPSTREAM_PATHS[i]} bytes={a}-{b}: {r.status_code} {r.headers.get('Content-Range')} "
                            f"r{rev} {r.headers.get('Cache-Status')}")
                elif roll < 0.85:
                    kind = "404"
                    p = rng.choice(MISSING_PATHS)
                    r = session.get(edge.url + p, timeout=30)
                    if r.status_code != 404:
                        bad(f"{p}: {r.status_code} for a path nobody has")
                elif roll < 0.95:
                    kind = "db"
                    p = rng.choice(DB_PATHS)
                    r = session.get(edge.url + p, timeout=30)
                    if r.status_code != 200 or r.content != db_bodies[p]:
                        bad(f"{p}: {r.status_code}, {len(r.content)} B, {r.headers.get('Cache-Status')}")
                else:
                    kind = "head"
                    i = rng.randrange(len(UPSTREAM_PATHS))
                    r = session.head(edge.url + UPSTREAM_PATHS[i], timeout=30)
                    if r.status_code != 200 or r.headers.get("Content-Length") != str(size_of(i)) or r.content:
                        bad(f"HEAD {UPSTREAM_PATHS[i]}: {r.status_code} {r.headers.get('Content-Length')}")
            except requests.RequestException as e:
                kind = "exception"
                bad(f"request failed: {type(e).__name__}: {e}")
            with count_lock:
                counts[kind] += 1

    publisher_db = DatabaseOrigin(db_url)

    def publisher() -> None:
        rng = random.Random(99)
        while time.monotonic() < deadline - 1:
            roll = rng.random()
            i = rng.randrange(len(UPSTREAM_PATHS))
            if roll < 0.6:
                revision[i] += 1
                body = synthetic_chunk(0, size_of(i), seed_of(i, revision[i]))
                publisher_db.put(UPSTREAM_PATHS[i], io.BytesIO(body), size=len(body),
                                 sha256=hashlib.sha256(body).hexdigest(), revision=f"r{revision[i]}",
                                 content_type="image/jpeg")
                serve(i)  # the database and the app have the new revision first, then the edge is told
                r = publish(edge, [{"type": "publish", "path": UPSTREAM_PATHS[i], "revision": f"r{revision[i]}"}])
                if r.status_code == 200:
                    with pub_lock:
                        published[i].append((revision[i], time.monotonic()))
                kind = "publish"
            elif roll < 0.8:
                r = publish(edge, [{"type": "purge", "path": UPSTREAM_PATHS[i], "soft": rng.random() < 0.5}])
                kind = "purge"
            else:
                r = publish(edge, [{"type": "purge", "prefix": f"/media/soak/u{rng.randrange(4)}"}])
                kind = "purge-prefix"
            if r.status_code != 200:
                bad(f"webhook {kind}: {r.status_code} {r.text[:200]}")
            with count_lock:
                counts[kind] += 1
            time.sleep(0.25)

    rss: list[tuple[float, int]] = []
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    threads.append(threading.Thread(target=publisher, daemon=True))
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - t0, edge.rss_kib()))
            time.sleep(1.0)
        for t in threads:
            t.join(max(1.0, deadline + 40 - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "clients still running after the deadline"

        warm = [kib for at, kib in rss if at >= SECONDS * 0.25]
        growth_mib = (max(warm) - warm[0]) / 1024 if warm else 0.0
        total = sum(counts.values())
        record_property("soak_requests", total)
        record_property("soak_rss_growth_mib", round(growth_mib, 1))
        print(f"\nsoak {SECONDS:.0f} s: {dict(counts)} ({total / SECONDS:.0f} req/s); RSS after warm-up "
              f"{warm[0] >> 10 if warm else 0} MiB, growth {growth_mib:.1f} MiB, peak {edge.peak_rss_kib() >> 10} MiB")

        assert not wrong, f"{len(wrong)} wrong answers, first: {wrong[:8]}"
        assert counts["publish"] >= 5 and counts["full"] >= 200 and counts["range"] >= 50
        assert growth_mib < RSS_GROWTH_LIMIT_MIB, f"RSS grew {growth_mib:.1f} MiB after warm-up: {rss}"

        def settled() -> dict:
            s = edge.stats()
            return s if s["requests"] == s["hits"] + s["stale"] + s["misses"] + s["passes"] + s["errors"] else {}

        s = wait_until(settled, 10, 0.2, "stats to add up")
        assert s["errors"] == 0, s
        assert s["cache_bytes"] <= 12 << 20
    finally:
        edge.stop()
        up.close()
        publisher_db.close()
