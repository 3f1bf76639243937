"""Hits served by the inline lookup (proxy/policy/lookup.py) end to end: after a restart
the memory tier is empty, so small hits come from disk through `lookup_inline`; a purge,
a new revision and a second edge on the same cache directory are seen at once."""
from __future__ import annotations

import hashlib
import http.client
import os

import pytest

from tests.edge import Edge, Route, Upstream, get_plain as get, wait_until

BODIES = {f"/media/inline/{i}.jpg": os.urandom(3_000 + i) for i in range(20)}


def purge(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("PURGE", path)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


@pytest.fixture
def upstream():
    u = Upstream()
    for path, body in BODIES.items():
        u.routes[path] = Route(body=body, headers={"Content-Type": "image/jpeg", "X-Media-Revision": "r1"})
    yield u
    u.close()


def test_disk_hits_after_restart_purge_and_new_revision(tmp_path, upstream):
    args = ["--allow-purge-from", "127.0.0.1/32"]
    edge = Edge(str(tmp_path), upstream=upstream.url, args=args).start()
    try:
        for path, body in BODIES.items():
            assert get(edge.port, path)[2] == body
    finally:
        edge.stop()
    edge = Edge(str(tmp_path), upstream=upstream.url, args=args).start()  # memory tier empty
    try:
        for path, body in BODIES.items():
            status, cs, got = get(edge.port, path)
            assert status == 200 and cs.startswith("mediaedge; hit")
            assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        assert all(upstream.hits[p] == 1 for p in BODIES)  # every one served from disk
        purged = "/media/inline/3.jpg"
        assert purge(edge.port, purged) == 200
        status, cs, got = get(edge.port, purged)
        assert status == 200 and got == BODIES[purged] and "fwd=miss" in cs
        assert upstream.hits[purged] == 2
    finally:
        edge.stop()
    # A second edge on the same directory (as a future worker) and a new revision upstream.
    changed = "/media/inline/5.jpg"
    upstream.routes[changed] = Route(body=b"new bytes", headers={"Content-Type": "image/jpeg",
                                                                  "X-Media-Revision": "r2"})
    a = Edge(str(tmp_path), upstream=upstream.url, args=args).start()
    b = Edge(str(tmp_path), upstream=upstream.url, args=args).start()
    try:
        assert get(a.port, changed)[2] == BODIES[changed]  # still r1 on disk: a hit
        assert purge(a.port, changed) == 200
        # b never held it in memory: its disk lookup sees a's purge at once (nothing per process)
        status, cs, got = get(b.port, changed)
        assert got == b"new bytes" and "fwd=miss" in cs
        assert upstream.hits[changed] == 2
        other = "/media/inline/7.jpg"  # and what one edge stores, the other reads from disk
        upstream.routes[other] = Route(body=b"seven v2", headers={"X-Media-Revision": "r2"})
        assert purge(b.port, other) == 200
        # a applies b's purge from the log on its own, to the same directory: wait for it, or it
        # may delete the entry b is about to store (a and b are not workers of one node, which
        # apply each event before it is answered: tests/test_workers.py).
        seq = b.stats()["invalidation_seq"]
        wait_until(lambda: a.stats()["invalidation_seq"] >= seq, 20, 0.05, "edge a to apply b's purge")
        assert get(b.port, other)[2] == b"seven v2"
        status, cs, got = get(a.port, other)
        assert got == b"seven v2" and cs.startswith("mediaedge; hit")
        assert upstream.hits[other] == 2
    finally:
        a.stop()
        b.stop()
