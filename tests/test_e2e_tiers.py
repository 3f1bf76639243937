"""Tiers of mediaedge and the fields a media fetch forwards, through real edges.

- `--cache-name`: an edge in front of a shield edge shows both Cache-Status members,
  the shield's first (RFC 9211 2), in one field value.
- Two tiers sharing one state database both drop an entry on one publish.
- `--forward-header NAME` / `*`: request fields a media fetch sends upstream.
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from mediaedge.webhook import signed_headers
from tests.edge import Edge, Route, Upstream, status_of, wait_until

SECRET = "tiers-secret"
V1 = b"\xff\xd8\xff-tier-v1-" * 500
V2 = b"\xff\xd8\xff-tier-v2-" * 500


@pytest.fixture
def tiers(tmp_path):
    """app <- shield (--cache-name shield) <- edge, no database origin, one shared state database."""
    app = Upstream()
    state = f"sqlite:///{tmp_path / 'state.db'}"
    common = ["--state-db", state, "--webhook-secret", SECRET]
    (tmp_path / "shield").mkdir()
    (tmp_path / "edge").mkdir()
    shield = Edge(str(tmp_path / "shield"), upstream=app.url, origin_db="none",
                  args=["--cache-name", "shield", "--node-id", "shield", *common]).start()
    edge = Edge(str(tmp_path / "edge"), upstream=shield.url, origin_db="none",
                args=["--node-id", "edge", *common]).start()
    yield app, shield, edge
    edge.stop()
    shield.stop()
    app.close()


def test_an_edge_in_front_of_a_shield_shows_both_members_shield_first(tiers):
    app, shield, edge = tiers
    path = "/media/tiers/a.jpg"
    app.routes[path] = Route(body=V1, headers={"Content-Type": "image/jpeg", "Cache-Control": "max-age=600"})
    r = edge.get(path)
    assert r.content == V1
    assert status_of(r) == ("shield; fwd=miss; fwd-status=200; stored; detail=upstream, "
                            "mediaedge; fwd=miss; fwd-status=200; stored; detail=upstream")
    r = edge.get(path)
    assert status_of(r).startswith("shield; fwd=miss; fwd-status=200; stored; detail=upstream, mediaedge; hit; ttl=")
    r = shield.get(path)
    assert status_of(r).startswith("shield; hit; ttl=") and "mediaedge" not in status_of(r)
    assert app.hits[path] == 1


def test_two_tiers_sharing_a_state_database_both_drop_an_entry_on_one_publish(tiers):
    app, shield, edge = tiers
    path = "/media/tiers/published.jpg"
    app.routes[path] = Route(body=V1, headers={"X-Media-Revision": "r1", "Cache-Control": "max-age=3600"})
    assert edge.get(path).content == V1
    assert status_of(edge.get(path)).startswith("shield; fwd=miss")  # both tiers hold r1
    assert status_of(shield.get(path)).startswith("shield; hit")
    app.routes[path] = Route(body=V2, headers={"X-Media-Revision": "r2", "Cache-Control": "max-age=3600"})
    body = json.dumps({"events": [{"type": "publish", "path": path, "revision": "r2"}]}).encode()
    r = requests.post(edge.admin + "/publish", data=body, timeout=10,
                      headers={**signed_headers(SECRET, body, time.time()), "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    # one publish, on the outer tier: both tiers drop r1 (the shield by following the shared log)
    wait_until(lambda: shield.get(path).content == V2, 10, 0.1, "the shield to drop r1")
    wait_until(lambda: edge.get(path).content == V2, 10, 0.1, "the edge to drop r1")
    r = edge.get(path)
    assert r.content == V2 and r.headers["X-Media-Revision"] == "r2" and "mediaedge; hit" in status_of(r)
    assert status_of(shield.get(path)).startswith("shield; hit")


def test_forward_header_sends_named_fields_and_star_every_end_to_end_field(tmp_path):
    app = Upstream()
    path = "/media/fwd/a.jpg"
    app.routes[path] = Route(body=V1, headers={"Cache-Control": "no-store"})
    sent = {"X-Original-URL": "/other", "X-Device": "tablet", "Range": "bytes=0-3", "Accept": "image/*"}

    def fetched(edge: Edge) -> dict[str, str]:
        before = len(app.requests)
        edge.get(path, headers=sent)
        return {k.lower(): v for k, v in app.requests[before][2].items()}

    (tmp_path / "one").mkdir()
    (tmp_path / "all").mkdir()
    (tmp_path / "none").mkdir()
    edges = [Edge(str(tmp_path / "none"), upstream=app.url, origin_db="none").start(),
             Edge(str(tmp_path / "one"), upstream=app.url, origin_db="none",
                  args=["--forward-header", "X-Device"]).start(),
             Edge(str(tmp_path / "all"), upstream=app.url, origin_db="none", args=["--forward-header", "*"]).start()]
    try:
        plain, one, star = (fetched(e) for e in edges)
        assert "x-device" not in plain and "x-original-url" not in plain and plain["accept"] == "image/*"
        assert one["x-device"] == "tablet" and "x-original-url" not in one
        assert star["x-device"] == "tablet" and star["x-original-url"] == "/other" and star["accept"] == "image/*"
        assert "range" not in star  # the fetch is of the whole object, always
    finally:
        for e in edges:
            e.stop()
        app.close()
