"""Publish webhooks end to end: real nodes sharing a database, real upstream, real clients."""
from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest
import requests

from mediaedge.webhook import signed_headers
from tests.edge import SECRET, Edge, Route, publish, sha, status_of, synthetic_sha, wait_until


@pytest.fixture
def node(tmp_path, upstream):
    e = Edge(str(tmp_path), upstream=upstream.url, args=["--webhook-secret", SECRET, "--node-id", "a"]).start()
    yield e
    e.stop()


def test_publish_new_revision_replaces_old(node, upstream):
    upstream.routes["/media/p.jpg"] = Route(body=b"one", headers={"X-Media-Revision": "r1"})
    assert node.get("/media/p.jpg").content == b"one"
    assert status_of(node.get("/media/p.jpg")).startswith("mediaedge; hit")
    upstream.routes["/media/p.jpg"] = Route(body=b"two", headers={"X-Media-Revision": "r2"})
    r = publish(node, [{"type": "publish", "path": "/media/p.jpg", "revision": "r2"}])
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1 and r.json()["seq"] >= 1
    r = node.get("/media/p.jpg")
    assert r.content == b"two" and r.headers["X-Media-Revision"] == "r2"
    assert "fwd=miss" in status_of(r)


@pytest.mark.parametrize("case", ["no-signature", "bad-signature", "old-timestamp", "too-large", "not-json",
                                  "bad-schema"])
def test_refusals_change_nothing(node, upstream, case):
    upstream.routes["/media/k.jpg"] = Route(body=b"keep", headers={"X-Media-Revision": "k1"})
    node.get("/media/k.jpg")
    event = [{"type": "delete", "path": "/media/k.jpg"}]
    if case == "no-signature":
        r = requests.post(node.admin + "/publish", data=json.dumps({"events": event}), timeout=10)
        expected = 401
    elif case == "bad-signature":
        r = publish(node, event, secret="wrong")
        expected = 401
    elif case == "old-timestamp":
        r = publish(node, event, now=time.time() - 301)
        expected = 401
    elif case == "too-large":
        r = publish(node, event, body=b'{"events": [' + b" " * (1 << 20) + b"]}")
        expected = 413
    elif case == "not-json":
        r = publish(node, event, body=b"{nope")
        expected = 400
    else:
        r = publish(node, [{"type": "delete"}])
        expected = 400
    assert r.status_code == expected, r.text
    assert "error" in r.json()
    hit = node.get("/media/k.jpg")
    assert status_of(hit).startswith("mediaedge; hit") and hit.content == b"keep"


def test_no_secret_refuses_with_503(tmp_path, upstream):
    e = Edge(str(tmp_path), upstream=upstream.url).start()
    try:
        r = publish(e, [{"type": "delete", "path": "/media/x.jpg"}])
        assert r.status_code == 503 and "error" in r.json()
    finally:
        e.stop()


def test_purge_by_prefix_tag_and_soft(node, upstream):
    for name, tags in [("a", "red shoes"), ("b", "blue"), ("c", "red")]:
        upstream.routes[f"/media/cat/{name}.jpg"] = Route(body=name.encode(), headers={"Surrogate-Key": tags})
    upstream.routes["/media/other/z.jpg"] = Route(body=b"z")
    for p in ["/media/cat/a.jpg", "/media/cat/b.jpg", "/media/cat/c.jpg", "/media/other/z.jpg"]:
        node.get(p)
    assert publish(node, [{"type": "purge", "tag": "red"}]).status_code == 200
    assert "fwd=miss" in status_of(node.get("/media/cat/a.jpg"))
    assert "fwd=miss" in status_of(node.get("/media/cat/c.jpg"))
    assert status_of(node.get("/media/cat/b.jpg")).startswith("mediaedge; hit")
    assert publish(node, [{"type": "purge", "prefix": "/media/cat/"}]).status_code == 200
    assert "fwd=miss" in status_of(node.get("/media/cat/b.jpg"))
    assert status_of(node.get("/media/other/z.jpg")).startswith("mediaedge; hit")
    # soft purge: served stale while one refetch runs, then fresh again
    before = upstream.hits["/media/other/z.jpg"]
    assert publish(node, [{"type": "purge", "path": "/media/other/z.jpg", "soft": True}]).status_code == 200
    r = node.get("/media/other/z.jpg")
    assert r.content == b"z" and "ttl=-" in status_of(r)
    wait_until(lambda: upstream.hits["/media/other/z.jpg"] == before + 1, 5, what="one background refetch")
    wait_until(lambda: "ttl=-" not in status_of(node.get("/media/other/z.jpg")), 5, what="fresh again")
    assert upstream.hits["/media/other/z.jpg"] == before + 1


# PURGE on the data plane (--allow-purge-from): tests/test_e2e_purge.py


def test_published_revision_wins_over_lagging_upstream(tmp_path, upstream):
    from mediaedge.origins.db import DatabaseOrigin

    db_url = f"sqlite:///{tmp_path}/origin.db"
    origin = DatabaseOrigin(db_url)
    fresh = b"fresh from the database"
    import io

    origin.put("/media/lag.jpg", io.BytesIO(fresh), size=len(fresh), sha256=sha(fresh), revision="r2",
               content_type="image/jpeg")
    origin.close()
    upstream.routes["/media/lag.jpg"] = Route(body=b"stale app copy", headers={"X-Media-Revision": "r1"})
    e = Edge(str(tmp_path), upstream=upstream.url, origin_db=db_url, args=["--webhook-secret", SECRET]).start()
    try:
        assert e.get("/media/lag.jpg").content == b"stale app copy"
        assert publish(e, [{"type": "publish", "path": "/media/lag.jpg", "revision": "r2"}]).status_code == 200
        for _ in range(2):
            r = e.get("/media/lag.jpg")
            assert r.content == fresh and r.headers["X-Media-Revision"] == "r2"
        assert status_of(r).startswith("mediaedge; hit")  # the database's r2 was stored as current
    finally:
        e.stop()


def _two_nodes(tmp_path, upstream, state_db: str | None = None):
    db = state_db or f"sqlite:///{tmp_path}/shared.db"
    nodes = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        nodes.append(Edge(str(d), upstream=upstream.url, origin_db=db,
                          args=["--webhook-secret", SECRET, "--node-id", name]).start())
    return nodes


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=[pytest.mark.full, pytest.mark.postgres])])
def test_every_node_applies_within_a_second_and_a_down_node_catches_up(tmp_path, upstream, request, kind):
    upstream.routes["/media/n.jpg"] = Route(body=b"old", headers={"X-Media-Revision": "o"})
    state = request.getfixturevalue("pg_server").create_database() if kind == "postgres" else None
    a, b = _two_nodes(tmp_path, upstream, state_db=state)
    try:
        for n in (a, b):
            n.get("/media/n.jpg")
            assert status_of(n.get("/media/n.jpg")).startswith("mediaedge; hit")
        upstream.routes["/media/n.jpg"] = Route(body=b"new", headers={"X-Media-Revision": "n"})
        t0 = time.monotonic()
        assert publish(a, [{"type": "publish", "path": "/media/n.jpg", "revision": "n"}]).status_code == 200
        assert a.get("/media/n.jpg").content == b"new"
        wait_until(lambda: b.get("/media/n.jpg").content == b"new", 2.0, 0.01, "node b to follow")
        assert time.monotonic() - t0 < 1.5
        # node b goes down hard; a delete is published meanwhile; b must not serve its entry after restart
        assert status_of(b.get("/media/n.jpg")).startswith("mediaedge; hit")
        b.kill9()
        upstream.routes["/media/n.jpg"] = Route(body=b"newest", headers={"X-Media-Revision": "z"})
        assert publish(a, [{"type": "delete", "path": "/media/n.jpg"}]).status_code == 200
        b.start()
        r = b.get("/media/n.jpg")
        assert r.content == b"newest" and "fwd=miss" in status_of(r)
    finally:
        a.stop()
        b.stop()


def _slow_reader(url: str, out: dict, gate: threading.Event, first: int = 1 << 20) -> None:
    h = hashlib.sha256()
    n = 0
    try:
        with requests.get(url, stream=True, timeout=60) as r:
            out["status"] = r.status_code
            out["revision"] = r.headers.get("X-Media-Revision")
            it = r.iter_content(64 * 1024)
            for chunk in it:
                h.update(chunk)
                n += len(chunk)
                if n >= first and not gate.is_set():
                    out["started"] = True
                    gate.wait(30)
        out["complete"] = True
    except Exception as e:  # noqa: BLE001
        out["error"] = repr(e)
    out["sha"] = h.hexdigest()
    out["bytes"] = n


SIZE = 24 * 1024 * 1024


@pytest.mark.parametrize("cached", [True, False], ids=["from-cache", "while-filling"])
def test_download_running_across_a_publish_keeps_its_revision(node, upstream, cached):
    upstream.routes["/media/big.mp4"] = Route(size=SIZE, seed=1, headers={"X-Media-Revision": "v1"},
                                              chunk_delay=0 if cached else 0.002)
    if cached:
        assert node.get("/media/big.mp4").status_code == 200
    out: dict = {}
    gate = threading.Event()
    t = threading.Thread(target=_slow_reader, args=(node.url + "/media/big.mp4", out, gate))
    t.start()
    wait_until(lambda: out.get("started"), 20, what="slow reader to start")
    upstream.routes["/media/big.mp4"] = Route(size=SIZE, seed=2, headers={"X-Media-Revision": "v2"})
    assert publish(node, [{"type": "publish", "path": "/media/big.mp4", "revision": "v2"}]).status_code == 200
    new = hashlib.sha256(node.get("/media/big.mp4").content).hexdigest()
    assert new == synthetic_sha(SIZE, seed=2)
    gate.set()
    t.join(60)
    assert out.get("complete"), out
    assert out["revision"] == "v1" and out["bytes"] == SIZE
    assert out["sha"] == synthetic_sha(SIZE, seed=1)  # never mixed with v2


def test_abort_inflight_cuts_running_downloads(node, upstream):
    upstream.routes["/media/revoked.mp4"] = Route(size=SIZE, seed=3, headers={"X-Media-Revision": "x"})
    node.get("/media/revoked.mp4")
    out: dict = {}
    gate = threading.Event()
    t = threading.Thread(target=_slow_reader, args=(node.url + "/media/revoked.mp4", out, gate))
    t.start()
    wait_until(lambda: out.get("started"), 20, what="slow reader to start")
    r = publish(node, [{"type": "delete", "path": "/media/revoked.mp4", "abort_inflight": True}])
    assert r.status_code == 200
    gate.set()
    t.join(60)
    assert not out.get("complete") or out["bytes"] < SIZE, out
    assert out["bytes"] < SIZE


@pytest.mark.full
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_propagation_to_other_nodes(tmp_path, upstream, request, kind):
    """50 publishes on node a; time until node b serves the new revision (median, max)."""
    if kind == "postgres":
        state = request.getfixturevalue("pg_server").create_database()
    else:
        state = f"sqlite:///{tmp_path}/shared.db"
    nodes = _two_nodes(tmp_path, upstream, state_db=state)
    a, b = nodes
    third = Edge(str(tmp_path / "c"), upstream=upstream.url, origin_db=state,
                 args=["--webhook-secret", SECRET, "--node-id", "c"])
    (tmp_path / "c").mkdir()
    third.start()
    nodes.append(third)
    try:
        delays = []
        for i in range(50):
            path = f"/media/prop{i % 5}.jpg"
            upstream.routes[path] = Route(body=f"v{i}".encode(), headers={"X-Media-Revision": f"r{i}"})
            if i < 5:
                for n in nodes:
                    n.get(path)
            t0 = time.monotonic()
            assert publish(a, [{"type": "publish", "path": path, "revision": f"r{i}"}]).status_code == 200
            for n in (b, third):
                wait_until(lambda n=n, i=i, path=path: n.get(path).headers.get("X-Media-Revision") == f"r{i}", 3.0, 0.005)
            delays.append(time.monotonic() - t0)
        delays.sort()
        median, worst = delays[len(delays) // 2], delays[-1]
        print(f"\npropagation via {kind}: median {median * 1000:.0f} ms, max {worst * 1000:.0f} ms over 50 publishes")
        assert worst < 1.5
    finally:
        for n in nodes:
            n.stop()


def test_prewarm_fetches_the_new_revision_before_the_first_visitor(node, upstream):
    upstream.routes["/media/warm.jpg"] = Route(body=b"v1", headers={"X-Media-Revision": "w1"})
    node.get("/media/warm.jpg")
    upstream.routes["/media/warm.jpg"] = Route(body=b"v2", headers={"X-Media-Revision": "w2"})
    r = publish(node, [{"type": "publish", "path": "/media/warm.jpg", "revision": "w2", "prewarm": True}])
    assert r.status_code == 200
    wait_until(lambda: upstream.hits["/media/warm.jpg"] == 2, 5, what="background prewarm fetch")
    r = wait_until(lambda: (lambda r: r if r.headers["Cache-Status"].startswith("mediaedge; hit") else None)(
        node.get("/media/warm.jpg")), 5)
    assert r.content == b"v2" and r.headers["X-Media-Revision"] == "w2"
    assert upstream.hits["/media/warm.jpg"] == 2


# --- replayed webhooks ------------------------------------------------------------------------


def _send(edge: Edge, raw: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(edge.admin + "/publish", data=raw, headers=headers, timeout=10)


def _log_rows(state_db: str) -> int:
    from mediaedge.invalidation_log import InvalidationLog

    log = InvalidationLog(state_db)
    try:
        return len(log.since(0))
    finally:
        log.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=[pytest.mark.full, pytest.mark.postgres])])
def test_a_replayed_purge_changes_nothing_on_any_node(tmp_path, upstream, request, kind):
    """A captured purge sent again (to the same node, then to another sharing the state
    database) is answered with the first answer's figures and `replayed`, and purges nothing."""
    state = request.getfixturevalue("pg_server").create_database() if kind == "postgres" else None
    a, b = _two_nodes(tmp_path, upstream, state_db=state)
    state_db = state or f"sqlite:///{tmp_path}/shared.db"
    try:
        upstream.routes["/media/r.jpg"] = Route(body=b"r", headers={"X-Media-Revision": "r1"})
        for n in (a, b):
            n.get("/media/r.jpg")
        raw = json.dumps({"events": [{"type": "purge", "prefix": "/media/"}]}).encode()
        headers = signed_headers(SECRET, raw, time.time())
        first = _send(a, raw, headers)
        assert first.status_code == 200, first.text
        figures = first.json()
        assert set(figures) == {"accepted", "seq"} and figures["accepted"] == 1
        rows = _log_rows(state_db)
        # the entry is fetched again after the purge, on both nodes
        assert "fwd=miss" in status_of(a.get("/media/r.jpg"))
        wait_until(lambda: "fwd=miss" in status_of(b.get("/media/r.jpg")), 2.0, 0.01, "node b to apply the purge")
        for n in (a, b):
            assert status_of(n.get("/media/r.jpg")).startswith("mediaedge; hit")
        fetched = upstream.hits["/media/r.jpg"]
        # the replay, to the same node and to the other one
        for n in (a, b, a):
            again = _send(n, raw, headers)
            assert again.status_code == 200, again.text
            assert again.json() == {**figures, "replayed": True}
        # the signature's hex in upper case names the same MAC: still a replay
        upper = {**headers, "X-Mediaedge-Signature": "sha256=" + headers["X-Mediaedge-Signature"][7:].upper()}
        assert _send(b, raw, upper).json() == {**figures, "replayed": True}
        assert _log_rows(state_db) == rows
        # (a replay that applied would have done so before its answer, on the node it was sent to)
        for n in (a, b):
            hit = n.get("/media/r.jpg")
            assert status_of(hit).startswith("mediaedge; hit") and hit.content == b"r"
        assert upstream.hits["/media/r.jpg"] == fetched
        # a new signature for the same body is a new request
        fresh = _send(a, raw, signed_headers(SECRET, raw, time.time() + 1))
        assert fresh.status_code == 200 and fresh.json() == {"accepted": 1, "seq": figures["seq"] + 1}
    finally:
        a.stop()
        b.stop()


def test_a_replay_on_another_node_answers_only_once_that_node_applied_the_events(tmp_path, upstream):
    """A sender whose answer from node a got lost retries on node b: b's 200 (replayed)
    still means "applied here", not "applied somewhere, b follows within a second"."""
    a, b = _two_nodes(tmp_path, upstream)
    try:
        upstream.routes["/media/q.jpg"] = Route(body=b"q", headers={"X-Media-Revision": "q1"})
        for i in range(5):
            for n in (a, b):
                wait_until(lambda n=n: status_of(n.get("/media/q.jpg")).startswith("mediaedge; hit"), 5, 0.01,
                           "the entry to be cached")
            raw = json.dumps({"events": [{"type": "purge", "path": "/media/q.jpg"}]}).encode()
            headers = signed_headers(SECRET, raw, time.time() + i)
            assert _send(a, raw, headers).status_code == 200
            again = _send(b, raw, headers)
            assert again.status_code == 200 and again.json()["replayed"] is True
            assert "fwd=miss" in status_of(b.get("/media/q.jpg")), f"round {i}: b served the purged entry"
    finally:
        a.stop()
        b.stop()


def test_soft_purge_revalidates_with_a_conditional_get(node, upstream):
    """A soft-purged entry with a validator costs the app a 304, not the body again;
    a changed object comes back whole (and replaces the entry)."""
    body = bytes(range(256)) * 2000  # 512000 bytes: streamed from a file, not memory
    route = Route(body=body, not_modified=True, headers={"ETag": '"sp1"', "Cache-Control": "max-age=600"})
    upstream.routes["/media/sp.mp4"] = route
    assert sha(node.get("/media/sp.mp4").content) == sha(body)
    assert publish(node, [{"type": "purge", "path": "/media/sp.mp4", "soft": True}]).status_code == 200
    r = node.get("/media/sp.mp4")
    assert sha(r.content) == sha(body) and "ttl=-" in status_of(r)  # served stale while it revalidates
    wait_until(lambda: upstream.not_modified["/media/sp.mp4"] == 1, 5, what="one conditional GET")
    wait_until(lambda: (s := status_of(node.get("/media/sp.mp4"))).startswith("mediaedge; hit; ttl=") and "ttl=-" not in s, 5,
               what="fresh again after the 304")
    assert upstream.requests[-1][2].get("if-none-match") == '"sp1"'
    assert upstream.hits["/media/sp.mp4"] == 2 and upstream.body_bytes["/media/sp.mp4"] == len(body)

    # Changed behind the edge: the soft purge's conditional GET gets the new body (a 200).
    new = body[::-1]
    upstream.routes["/media/sp.mp4"] = Route(body=new, not_modified=True,
                                             headers={"ETag": '"sp2"', "Cache-Control": "max-age=600"})
    # (one second later: the same signed body within a second would be a replay)
    assert publish(node, [{"type": "purge", "path": "/media/sp.mp4", "soft": True}],
                   now=time.time() + 1).status_code == 200
    assert sha(node.get("/media/sp.mp4").content) == sha(body)  # stale while it refetches
    wait_until(lambda: sha(node.get("/media/sp.mp4").content) == sha(new), 5, what="the changed object")
    assert upstream.not_modified["/media/sp.mp4"] == 1 and upstream.hits["/media/sp.mp4"] == 3
    assert upstream.body_bytes["/media/sp.mp4"] == 2 * len(body)
