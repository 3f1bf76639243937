import pytest

from mediaedge.headers import Headers
from mediaedge.policy.storable import Storability, storability

AUTH = [("Authorization", "Bearer x")]


@pytest.mark.parametrize(
    "method, status, request_headers, response_headers, expected",
    [
        # the ordinary case
        ("GET", 200, [], [], Storability(True, "ok")),
        ("HEAD", 200, [], [("Cache-Control", "max-age=60")], Storability(True, "ok")),
        ("get", 200, [], [], Storability(True, "ok")),
        # methods
        ("POST", 200, [], [], Storability(False, "method")),
        ("PUT", 200, [], [], Storability(False, "method")),
        ("OPTIONS", 200, [], [], Storability(False, "method")),
        # statuses (RFC 9110 15.1): 404/410 without explicit freshness are negative entries
        ("GET", 404, [], [], Storability(True, "ok", negative=True)),
        ("GET", 410, [], [], Storability(True, "ok", negative=True)),
        ("GET", 404, [], [("Cache-Control", "max-age=60")], Storability(True, "ok")),
        ("GET", 410, [], [("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], Storability(True, "ok")),
        # a 206 from the upstream, a 304, a 1xx: never
        ("GET", 206, [], [], Storability(False, "status")),
        ("GET", 206, [], [("Cache-Control", "max-age=60")], Storability(False, "status")),
        ("GET", 304, [], [("Cache-Control", "max-age=60")], Storability(False, "status")),
        ("GET", 100, [], [], Storability(False, "status")),
        # heuristically cacheable: explicit freshness, else Last-Modified, else not stored
        ("GET", 301, [], [("Cache-Control", "max-age=60")], Storability(True, "ok")),
        ("GET", 308, [], [("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")], Storability(True, "ok")),
        ("GET", 301, [], [], Storability(False, "no-freshness")),
        ("GET", 203, [], [("Expires", "junk")], Storability(True, "ok")),  # explicit (already expired)
        ("GET", 204, [], [("CDN-Cache-Control", "max-age=60")], Storability(True, "ok")),
        ("GET", 300, [], [("Cache-Control", "s-maxage=60")], Storability(True, "ok")),
        ("GET", 405, [], [("Cache-Control", "max-age=60")], Storability(True, "ok")),
        ("GET", 414, [], [("Cache-Control", "max-age=60")], Storability(True, "ok")),
        ("GET", 501, [], [("Cache-Control", "max-age=60")], Storability(True, "ok")),
        # any other final status: only with explicit freshness
        ("GET", 302, [], [], Storability(False, "status")),
        ("GET", 302, [], [("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")], Storability(False, "status")),
        ("GET", 302, [], [("Cache-Control", "max-age=60")], Storability(True, "ok")),
        ("GET", 307, [], [("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], Storability(True, "ok")),
        ("GET", 403, [], [("CDN-Cache-Control", "s-maxage=5")], Storability(True, "ok")),
        ("GET", 500, [], [], Storability(False, "status")),
        ("GET", 503, [], [("Cache-Control", "max-age=60")], Storability(True, "ok")),
        ("GET", 503, [], [("Cache-Control", "max-age=60, no-store")], Storability(False, "no-store")),
        # Cache-Control and CDN-Cache-Control
        ("GET", 200, [], [("Cache-Control", "no-store")], Storability(False, "no-store")),
        ("GET", 200, [], [("Cache-Control", "max-age=60, NO-STORE")], Storability(False, "no-store")),
        ("GET", 200, [], [("Cache-Control", "private")], Storability(False, "private")),
        ("GET", 200, [], [("Cache-Control", 'private="Set-Cookie"')], Storability(False, "private")),
        ("GET", 200, [], [("CDN-Cache-Control", "no-store")], Storability(False, "no-store")),
        ("GET", 200, [], [("CDN-Cache-Control", "private")], Storability(False, "private")),
        ("GET", 200, [], [("Cache-Control", "public"), ("Cache-Control", "no-store")], Storability(False, "no-store")),
        ("GET", 404, [], [("Cache-Control", "no-store")], Storability(False, "no-store", negative=True)),
        ("GET", 200, [], [("Cache-Control", "no-cache")], Storability(True, "ok")),  # stored, revalidated
        # Set-Cookie: forwarded, never stored
        ("GET", 200, [], [("Set-Cookie", "a=b")], Storability(False, "set-cookie")),
        ("GET", 200, [], [("set-cookie", "a=b"), ("Cache-Control", "public")], Storability(False, "set-cookie")),
        # Vary
        ("GET", 200, [], [("Vary", "*")], Storability(False, "vary-star")),
        ("GET", 200, [], [("Vary", "Accept, *")], Storability(False, "vary-star")),
        ("GET", 200, [], [("Vary", "Accept"), ("Vary", " * ")], Storability(False, "vary-star")),
        ("GET", 200, [], [("Vary", "Accept-Encoding")], Storability(True, "ok")),
        # Authorization: only with public or s-maxage
        ("GET", 200, AUTH, [], Storability(False, "authorization")),
        ("GET", 200, AUTH, [("Cache-Control", "max-age=60")], Storability(False, "authorization")),
        ("GET", 200, AUTH, [("Cache-Control", "must-revalidate")], Storability(False, "authorization")),
        ("GET", 200, AUTH, [("Cache-Control", "public")], Storability(True, "ok")),
        ("GET", 200, AUTH, [("Cache-Control", "s-maxage=60")], Storability(True, "ok")),
        ("GET", 200, [("authorization", "Basic eDp5")], [("Cache-Control", "Public")], Storability(True, "ok")),
        ("GET", 200, AUTH, [("CDN-Cache-Control", "public")], Storability(False, "authorization")),
        # junk never raises
        ("GET", 200, [], [("Cache-Control", '",,=="; no-store')], Storability(True, "ok")),
        ("GET", 200, [], [("Cache-Control", '"x", no-store')], Storability(False, "no-store")),
    ],
)
def test_storability(method, status, request_headers, response_headers, expected):
    result = storability(
        method=method, status=status, request_headers=Headers(request_headers), response_headers=Headers(response_headers)
    )
    assert result == expected


@pytest.mark.parametrize("status, headers, storable", [
    (503, [], False),
    (500, [("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")], False),
    (501, [("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")], False),  # heuristic is not enough
    (502, [("Cache-Control", "max-age=5")], True),
])
def test_explicit_only_stores_an_upstream_error_only_with_its_own_freshness(status, headers, storable):
    result = storability(method="GET", status=status, request_headers=Headers(), response_headers=Headers(headers),
                         explicit_only=True)
    assert result.storable is storable


@pytest.mark.parametrize("reason, shareable", [
    ("ok", True), ("status", True), ("no-freshness", True),
    ("private", False), ("set-cookie", False), ("authorization", False), ("vary-star", False), ("no-store", False),
])
def test_only_reasons_about_the_response_are_shared_with_joiners(reason, shareable):
    assert Storability(False, reason).shareable is shareable
