"""mediaedge.policy.seek: when a Range miss goes to the origin with its Range (table tests)."""
from __future__ import annotations

import pytest

from mediaedge.headers import Headers
from mediaedge.policy.ranges import ByteRange
from mediaedge.policy.seek import (
    UNSTORED_TTL,
    Unstored,
    abandon_fetch,
    database_window,
    is_range_request,
    remember,
    route_range,
)

NOW = 1_000_000.0
TOO_BIG = Unstored("size", NOW + 10)


@pytest.mark.parametrize("method,fields,known,forward,reason", [
    ("GET", {"Range": "bytes=0-99"}, TOO_BIG, True, "size"),
    ("GET", {"Range": "bytes=-100"}, Unstored("no-store", NOW + 1), True, "no-store"),
    ("GET", {"Range": "bytes=0-99"}, None, False, "unknown"),
    ("GET", {"Range": "bytes=0-99"}, Unstored("size", NOW), False, "forgotten"),
    ("GET", {}, TOO_BIG, False, "no-range"),
    ("GET", {"Range": "items=0-9"}, TOO_BIG, False, "no-range"),  # malformed: ignored, a plain GET
    ("GET", {"Range": "bytes=9-1"}, TOO_BIG, False, "no-range"),
    ("HEAD", {"Range": "bytes=0-99"}, TOO_BIG, False, "no-range"),
    ("get", {"Range": "bytes=0-99,200-299"}, TOO_BIG, True, "size"),  # several ranges: the origin decides
])
def test_route_range(method, fields, known, forward, reason):
    got = route_range(method=method, request_headers=Headers(list(fields.items())), known=known, now=NOW)
    assert (got.forward, got.reason) == (forward, reason)


@pytest.mark.parametrize("status,reason,kept", [
    (200, "size", True), (200, "no-store", True), (200, "private", True), (200, "set-cookie", True),
    (200, "vary-star", True), (200, "deception", True),
    (200, "authorization", False),  # about the client who asked, not the object
    (200, "admission", False), (200, "", False), (404, "size", False), (206, "status", False),
])
def test_remember(status, reason, kept):
    note = remember(status=status, reason=reason, now=NOW)
    assert (note is not None) == kept
    if note is not None:
        assert note == Unstored(reason, NOW + UNSTORED_TTL)


@pytest.mark.parametrize("method,fields,status,reason,abandon", [
    ("GET", {"Range": "bytes=100-"}, 200, "size", True),
    ("GET", {"Range": "bytes=100-"}, 200, "private", True),
    ("GET", {}, 200, "size", False),  # a whole request wants the whole object
    ("GET", {"Range": "bytes=100-"}, 200, "authorization", False),
    ("GET", {"Range": "bytes=100-"}, 404, "size", False),
    ("HEAD", {"Range": "bytes=100-"}, 200, "size", False),
])
def test_abandon_fetch(method, fields, status, reason, abandon):
    assert abandon_fetch(method=method, request_headers=Headers(list(fields.items())), status=status,
                         reason=reason) is abandon


def test_is_range_request():
    assert is_range_request("GET", Headers([("Range", "bytes=0-")]))
    assert not is_range_request("GET", Headers([("Range", "bytes=x")]))


@pytest.mark.parametrize("fields,expected", [
    ({"Range": "bytes=10-19"}, ByteRange(10, 19)),
    ({"Range": "bytes=-5"}, ByteRange(995, 999)),
    ({"Range": "bytes=990-"}, ByteRange(990, 999)),
    ({"Range": "bytes=990-5000"}, ByteRange(990, 999)),
    ({"Range": "bytes=1000-"}, "unsatisfiable"),
    ({"Range": "bytes=0-1,5-6"}, "full"),
    ({"Range": "bytes=oops"}, "full"),
    ({}, "full"),
    ({"Range": "bytes=10-19", "If-Range": '"r1"'}, ByteRange(10, 19)),
    ({"Range": "bytes=10-19", "If-Range": '"r0"'}, "full"),
    ({"Range": "bytes=10-19", "If-Range": 'W/"r1"'}, "full"),
    ({"Range": "bytes=10-19", "If-Range": "Tue, 14 Nov 2023 22:13:20 GMT"}, ByteRange(10, 19)),
    ({"Range": "bytes=10-19", "If-Range": "Tue, 14 Nov 2023 22:13:21 GMT"}, "full"),
])
def test_database_window(fields, expected):
    got = database_window(request_headers=Headers(list(fields.items())), length=1000, etag='"r1"',
                          last_modified=1_700_000_000.0)
    assert got == expected
