"""Every heuristically cacheable status (RFC 9110 15.1) stored, others only with explicit
freshness, a 206 from the upstream never; through a real edge in front of a real app.
The rule is mediaedge.policy.storable (table-driven in tests/test_policy_storable.py)."""
from __future__ import annotations

import pytest
import requests

from tests.edge import Edge, Route, edge_with_upstream, status_of

LM = "Thu, 01 Jan 2015 00:00:00 GMT"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with edge_with_upstream(tmp_path_factory.mktemp("statuses"), origin_db="none") as pair:
        yield pair


def twice(edge: Edge, path: str) -> tuple[requests.Response, requests.Response]:
    return (edge.get(path, allow_redirects=False), edge.get(path, allow_redirects=False))


@pytest.mark.parametrize("status, headers, body", [
    (301, {"Location": "/media/st/new-301.jpg", "Cache-Control": "max-age=60"}, b"moved permanently"),
    (308, {"Location": "/media/st/new-308.jpg", "Last-Modified": LM}, b"moved for good"),
    (302, {"Location": "/media/st/elsewhere.jpg", "Cache-Control": "max-age=60"}, b"found"),
    (307, {"Location": "/media/st/elsewhere.jpg", "Expires": "Thu, 01 Jan 2099 00:00:00 GMT"}, b"temporary"),
    (203, {"Last-Modified": LM, "Content-Type": "image/jpeg"}, b"\xff\xd8 transformed"),
    (300, {"Cache-Control": "s-maxage=60"}, b"choices"),
    (403, {"CDN-Cache-Control": "max-age=60"}, b"forbidden, says the app, for a minute"),
    (405, {"Cache-Control": "max-age=60", "Allow": "GET"}, b"no"),
], ids=lambda v: str(v) if isinstance(v, int) else None)
def test_stored_and_served_with_its_fields_and_body(env, status, headers, body):
    edge, up = env
    path = f"/media/st/{status}.jpg"
    up.routes[path] = Route(status=status, body=body, headers=headers)
    first, second = twice(edge, path)
    assert first.status_code == status and first.content == body
    assert status_of(first) == f"mediaedge; fwd=miss; fwd-status={status}; stored; detail=upstream"
    assert second.status_code == status and second.content == body, (second.status_code, second.content)
    assert status_of(second).startswith("mediaedge; hit")
    for name, value in headers.items():
        assert second.headers[name] == value
    assert up.hits[path] == 1


def test_a_stored_204_has_no_body_and_no_content_length(env):
    edge, up = env
    path = "/media/st/204.jpg"
    up.routes[path] = Route(status=204, headers={"Cache-Control": "max-age=60", "Content-Length": "0"})
    first, second = twice(edge, path)
    assert second.status_code == 204 and second.content == b"" and status_of(second).startswith("mediaedge; hit")
    assert "Content-Length" not in second.headers
    assert up.hits[path] == 1


@pytest.mark.parametrize("status, headers", [
    (302, {"Location": "/media/st/x.jpg"}),  # not heuristically cacheable: explicit freshness only
    (302, {"Location": "/media/st/x.jpg", "Last-Modified": LM}),
    (307, {"Location": "/media/st/x.jpg"}),
    (403, {}),
    (301, {"Location": "/media/st/x.jpg"}),  # cacheable, but no freshness at all (not a 200: no --default-ttl)
    (206, {"Content-Range": "bytes 0-3/10", "Cache-Control": "max-age=60"}),  # never
], ids=lambda v: str(v) if isinstance(v, int) else None)
def test_not_stored(env, status, headers):
    edge, up = env
    path = f"/media/st/not-{status}-{len(headers)}.jpg"
    up.routes[path] = Route(status=status, body=b"abcd", headers=headers)
    first, second = twice(edge, path)
    assert first.status_code == second.status_code == status and second.content == b"abcd"
    assert "stored" not in status_of(second) and not status_of(second).startswith("mediaedge; hit")
    if status == 206:
        assert second.headers["Content-Range"] == "bytes 0-3/10"
    assert up.hits[path] == 2
