"""Header hygiene of a shared cache (RFC 9110 7.6.1, RFC 9111 4.1, 4.2.3, 4.4, 5.3), through a
real `mediaedge serve` in front of a real app. See docs/http-conformance.md."""
from __future__ import annotations


import pytest
import requests

from tests.edge import Route, edge_with_upstream, status_of
from tests.test_hygiene import get

BODY = b"\x89PNG-rfc9111-" * 1000


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with edge_with_upstream(tmp_path_factory.mktemp("rfc9111"), origin_db="none") as pair:
        yield pair


def test_fields_named_in_connection_are_neither_stored_nor_passed_on(env):
    edge, up = env
    path = "/media/rfc/connection.png"
    up.routes[path] = Route(body=BODY, headers={"Connection": "X-Hop, keep-alive", "X-Hop": "secret",
                                                "Keep-Alive": "timeout=5", "X-Kept": "yes"})
    for _ in range(2):  # miss, then hit
        r = get(edge.port, path)
        assert r.status == 200 and r.body == BODY
        assert r.get("x-hop") is None and r.get("keep-alive") is None and r.get("x-kept") == "yes", r.fields
    assert status_of(r).startswith("mediaedge; hit")
    up.routes["/app/page"] = Route(body=b"page", headers={"Connection": "X-Hop", "X-Hop": "secret", "X-Kept": "yes"})
    r = get(edge.port, "/app/page")  # not media: passed through by mitmproxy
    assert r.status == 200 and r.get("x-hop") is None and r.get("x-kept") == "yes", r.fields


def test_every_end_to_end_field_is_kept_in_order_with_repeats(env):
    edge, up = env
    path = "/media/rfc/order.png"
    up.routes[path] = Route(body=BODY, fields=[("X-B", "1"), ("Link", "</a.css>; rel=preload"), ("X-A", "2"),
                                               ("Link", "</b.js>; rel=preload"), ("X-B", "3")])
    for _ in range(2):
        r = get(edge.port, path)
        mine = [(k, v) for k, v in r.fields if k.lower() in ("x-a", "x-b", "link")]
        assert [(k.lower(), v) for k, v in mine] == [("x-b", "1"), ("link", "</a.css>; rel=preload"), ("x-a", "2"),
                                                     ("link", "</b.js>; rel=preload"), ("x-b", "3")], r.fields
    assert status_of(r).startswith("mediaedge; hit")


def test_the_upstreams_age_counts_in_the_entrys_age(env):
    """RFC 9111 4.2.3: Age 3590 of max-age 3600 leaves 10 s, not an hour."""
    edge, up = env
    path = "/media/rfc/aged.png"
    up.routes[path] = Route(body=BODY, headers={"Cache-Control": "max-age=3600", "Age": "3590"})
    r = edge.get(path)
    assert int(r.headers["Age"]) >= 3590  # passed on with the miss
    r = edge.get(path)
    assert status_of(r).startswith("mediaedge; hit; ttl=")
    ttl = int(status_of(r).split("ttl=")[1].split(";")[0])
    assert 0 <= ttl <= 10 and int(r.headers["Age"]) >= 3590, (ttl, r.headers["Age"])


def test_an_unparsable_expires_means_already_expired(env):
    """RFC 9111 5.3: stored (it has an explicit lifetime: zero), but never served fresh."""
    edge, up = env
    path = "/media/rfc/expires.png"
    up.routes[path] = Route(body=BODY, headers={"Expires": "tomorrow-ish"})
    edge.get(path)
    r = edge.get(path)
    assert r.content == BODY and "fwd=miss" in status_of(r)
    assert up.hits[path] == 2


@pytest.mark.parametrize("method", ["POST", "PROPFIND", "M-SEARCH", "FOO"])
def test_any_unsafe_method_invalidates_the_target_on_success(env, method):
    edge, up = env
    path = f"/media/rfc/unsafe-{method}.png"
    up.routes[path] = Route(body=BODY, headers={"Cache-Control": "max-age=600"})
    edge.get(path)
    assert status_of(edge.get(path)).startswith("mediaedge; hit")
    r = requests.request(method, edge.url + path, timeout=10)
    assert r.status_code == 200
    r = edge.get(path)
    assert "fwd=miss" in status_of(r), status_of(r)
    assert up.hits[path] == 3  # GET, the unsafe request, GET again


def test_an_unsafe_method_answered_with_an_error_invalidates_nothing(env):
    edge, up = env
    path = "/media/rfc/unsafe-error.png"
    up.routes[path] = Route(body=BODY, headers={"Cache-Control": "max-age=600"})
    edge.get(path)
    up.routes[path] = Route(status=403, body=b"no")
    assert requests.request("PROPFIND", edge.url + path, timeout=10).status_code == 403
    assert status_of(edge.get(path)).startswith("mediaedge; hit")


def test_vary_matches_values_normalised_as_the_field_allows(env):
    edge, up = env
    path = "/media/rfc/vary.png"
    up.routes[path] = Route(body=BODY, headers={"Vary": "Accept-Encoding", "Cache-Control": "max-age=600"})
    assert "fwd=miss" in status_of(get(edge.port, path, "Accept-Encoding: gzip, br"))
    for same in ("Accept-Encoding: br,GZIP", "Accept-Encoding: br ,  gzip"):
        assert status_of(get(edge.port, path, same)).startswith("mediaedge; hit"), same
    assert "fwd=miss" in status_of(get(edge.port, path, "Accept-Encoding: br"))
    assert up.hits[path] == 2


def test_a_successful_unsafe_request_invalidates_same_origin_location_and_content_location(env):
    """RFC 9111 4.4: same-origin Location / Content-Location too (absolute or not; in
    reverse mode the app's links name the Host it was sent, the upstream's); another host's never."""
    edge, up = env
    paths = {name: f"/media/rfc/loc-{name}.png" for name in ("location", "content-location", "foreign")}
    for path in paths.values():
        up.routes[path] = Route(body=BODY, headers={"Cache-Control": "max-age=600"})
        edge.get(path)
    up.routes["/media/rfc/upload"] = Route(status=201, body=b"", headers={
        "Location": f"{up.url}{paths['location']}", "Content-Location": paths["content-location"]})
    assert requests.post(edge.url + "/media/rfc/upload", data=b"x", timeout=10).status_code == 201
    up.routes["/media/rfc/upload2"] = Route(status=201, body=b"", headers={
        "Location": f"http://elsewhere.example{paths['foreign']}"})
    assert requests.post(edge.url + "/media/rfc/upload2", data=b"x", timeout=10).status_code == 201
    assert "fwd=miss" in status_of(edge.get(paths["location"]))
    assert "fwd=miss" in status_of(edge.get(paths["content-location"]))
    assert status_of(edge.get(paths["foreign"])).startswith("mediaedge; hit")


def test_an_absolute_location_naming_the_host_the_client_used_is_invalidated(env):
    """RFC 9111 4.4 compares with the *target URI's* host: the Host the client sent
    (`shop.example`, the public name an app configured with its base URL writes into its
    links). mitmproxy's reverse mode rewrites Host to the upstream's before any hook sees
    the request, so the comparison must not read the Host field at response time."""
    edge, up = env
    path = "/media/rfc/loc-public.png"
    up.routes[path] = Route(body=BODY, headers={"Cache-Control": "max-age=600"})
    edge.get(path)
    assert status_of(edge.get(path)).startswith("mediaedge; hit")
    up.routes["/media/rfc/upload-public"] = Route(status=201, body=b"", headers={
        "Location": f"http://Shop.Example{path}"})
    r = requests.post(edge.url + "/media/rfc/upload-public", data=b"x", headers={"Host": "shop.example"}, timeout=10)
    assert r.status_code == 201
    assert up.requests[-1][2]["Host"] != "shop.example"  # the app was sent the upstream's Host
    assert "fwd=miss" in status_of(edge.get(path)), "the Location on the client's Host was not invalidated"
    assert up.hits[path] == 2
