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
        # statuses: only 200, plus 404/410 as negative entries
        ("GET", 404, [], [], Storability(True, "ok", negative=True)),
        ("GET", 410, [], [], Storability(True, "ok", negative=True)),
        ("GET", 206, [], [], Storability(False, "status")),
        ("GET", 304, [], [], Storability(False, "status")),
        ("GET", 301, [], [], Storability(False, "status")),
        ("GET", 500, [], [], Storability(False, "status")),
        ("GET", 503, [], [("Cache-Control", "max-age=60")], Storability(False, "status")),
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
