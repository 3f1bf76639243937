"""plan_response: what a client gets for a stored response (pure, table-driven)."""
from __future__ import annotations

import pytest

from mediaedge.headers import Headers
from mediaedge.respond import plan_response

DATE = "Mon, 30 Nov 2026 12:00:00 GMT"
STORED = Headers([("Content-Type", "image/jpeg"), ("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
                  ("Content-Length", "999"), ("Age", "77")])


def plan(method="GET", status=200, length=1000, revision="r1", **req):
    return plan_response(method=method, request_headers=Headers(list(req.items())), status=status,
                         headers=STORED, length=length, revision=revision, revision_header="X-Media-Revision",
                         cache_status="mediaedge; hit", age=5, date=DATE)


@pytest.mark.parametrize("req,status,window,extra", [
    # plain
    ({}, 200, (0, 1000), {"Content-Length": "1000", "Accept-Ranges": "bytes"}),
    # conditionals
    ({"If-None-Match": '"r1"'}, 304, None, {}),
    ({"If-None-Match": 'W/"r1"'}, 304, None, {}),
    ({"If-None-Match": '"r0", "r1"'}, 304, None, {}),
    ({"If-None-Match": "*"}, 304, None, {}),
    ({"If-None-Match": '"zz"'}, 200, (0, 1000), {}),
    ({"If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}, 304, None, {}),
    ({"If-Modified-Since": "Tue, 20 Oct 2015 07:28:00 GMT"}, 200, (0, 1000), {}),
    ({"If-None-Match": '"zz"', "If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}, 200, (0, 1000), {}),
    # ranges
    ({"Range": "bytes=0-9"}, 206, (0, 10), {"Content-Range": "bytes 0-9/1000", "Content-Length": "10"}),
    ({"Range": "bytes=990-"}, 206, (990, 1000), {"Content-Range": "bytes 990-999/1000"}),
    ({"Range": "bytes=-1"}, 206, (999, 1000), {}),
    ({"Range": "bytes=1000-"}, 416, None, {"Content-Range": "bytes */1000"}),
    ({"Range": "bytes=5-1"}, 200, (0, 1000), {}),
    ({"Range": "items=0-1"}, 200, (0, 1000), {}),
    ({"Range": "bytes=0-1,4-5"}, 200, (0, 1000), {}),
    ({"Range": "bytes=0-9", "If-Range": '"r1"'}, 206, (0, 10), {}),
    ({"Range": "bytes=0-9", "If-Range": '"old"'}, 200, (0, 1000), {}),
])
def test_get(req, status, window, extra):
    p = plan(**req)
    assert p.status == status and p.window == window
    for k, v in extra.items():
        assert p.headers.get(k) == v
    assert p.headers.get("Cache-Status") == "mediaedge; hit"
    assert p.headers.get("X-Media-Revision") == "r1" and p.headers.get("ETag") == '"r1"'
    assert p.headers.get("Age") == "5"  # ours, not the stored one
    assert p.headers.get_all("Date") == [DATE]  # on 200, 206, 304 and 416 alike
    assert len(p.headers.get_all("Content-Length")) <= 1


def test_date_replaces_a_stored_one_and_comes_first():
    headers = Headers([("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Content-Type", "image/png")])
    p = plan_response(method="GET", request_headers=Headers(), status=200, headers=headers, length=1,
                      revision="r", revision_header="X-Media-Revision", cache_status="c", age=0, date=DATE)
    assert p.headers.pairs()[0] == ("Date", DATE) and p.headers.get_all("Date") == [DATE]


@pytest.mark.parametrize("origin, given, sent", [
    ([], "no-cache", "no-cache"),  # a database row: no word on browsers
    ([], "max-age=60", "max-age=60"),
    ([("Cache-Control", "public, max-age=31536000")], "no-cache", "public, max-age=31536000"),  # the origin's own
    ([("Expires", "Wed, 21 Oct 2037 07:28:00 GMT")], "no-cache", None),  # Expires speaks to browsers too
    ([("CDN-Cache-Control", "max-age=600")], "no-cache", "no-cache"),  # speaks to caches only
    ([], None, None),
])
def test_browser_cache_control_only_when_the_origin_gave_none(origin, given, sent):
    for req in ({}, {"If-None-Match": '"r1"'}, {"Range": "bytes=0-1"}):  # 200, 304, 206
        p = plan_response(method="GET", request_headers=Headers(list(req.items())), status=200,
                          headers=Headers(origin), length=10, revision="r1", revision_header="X-Media-Revision",
                          cache_status="c", age=0, date=DATE, browser_cache_control=given)
        assert p.headers.get("Cache-Control") == sent, (req, p.headers)


def test_browser_cache_control_value():
    from mediaedge.respond import browser_cache_control

    assert browser_cache_control(0) == "no-cache"
    assert browser_cache_control(60) == "max-age=60"
    assert browser_cache_control(90.7) == "max-age=90"


def test_http_dates_are_imf_fixdates_refreshed_each_second():
    from mediaedge.respond import HttpDates

    dates = HttpDates()
    assert dates.text(784111777.9) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert dates.wire(784111777.1) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert dates.wire(784111778.0) == b"Sun, 06 Nov 1994 08:49:38 GMT"
    assert dates.text(784111778.5) == "Sun, 06 Nov 1994 08:49:38 GMT"


def test_head_has_no_window_but_full_length():
    p = plan(method="HEAD")
    assert p.status == 200 and p.window is None and p.headers.get("Content-Length") == "1000"


def test_head_ignores_range():
    assert plan(method="HEAD", Range="bytes=0-9").status == 200


def test_negative_entry():
    p = plan(status=404, length=10, revision=None)
    assert p.status == 404 and p.window == (0, 10) and p.headers.get("X-Media-Revision") is None


def test_unknown_length_streams_whole_body_and_ignores_range():
    p = plan(length=None, Range="bytes=0-9")
    assert p.status == 200 and p.window == (0, None) and p.headers.get("Content-Length") is None


# ----------------------------------------------------------------------------- hot-hit templates
from hypothesis import given, settings, strategies as st  # noqa: E402

from mediaedge.respond import hit_template, is_plain, wire_pairs  # noqa: E402

_FIELD = st.sampled_from(["Content-Type", "ETag", "Date", "Expires", "Last-Modified", "Age", "Cache-Status", "Content-Length",
                          "X-Media-Revision", "Cache-Control", "Accept-Ranges", "Vary", "Surrogate-Key",
                          "Content-Range", "Connection", "X-Other"])
_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=20)


@settings(max_examples=300, deadline=None)
@given(stored=st.lists(st.tuples(_FIELD, _VALUE), max_size=8), status=st.sampled_from([200, 404, 410]),
       length=st.integers(0, 10**10), revision=st.one_of(st.none(), st.text("abc123", min_size=1, max_size=8)),
       age=st.integers(-5, 10**9), method=st.sampled_from(["GET", "HEAD"]),
       req=st.lists(st.tuples(st.sampled_from(["Accept", "User-Agent", "Cache-Control", "Pragma", "If-Range",
                                               "Cookie"]), _VALUE), max_size=4),
       ttl=st.integers(-100, 10**6), browser=st.sampled_from([None, "no-cache", "max-age=60"]))
def test_a_hit_template_answers_exactly_like_plan_response(stored, status, length, revision, age, method, req, ttl,
                                                           browser):
    """The hot-hit fast path (engine.hot_hit) may skip plan_response only because, for a
    plain request, the template gives byte for byte the same status and headers."""
    request_headers = Headers(req)
    assert is_plain(request_headers)
    cs = f"mediaedge; hit; ttl={ttl}"
    plan = plan_response(method=method, request_headers=request_headers, status=status, headers=Headers(stored),
                         length=length, revision=revision, revision_header="X-Media-Revision", cache_status=cs,
                         age=age, date=DATE, browser_cache_control=browser)
    t = hit_template(status=status, headers=Headers(stored), length=length, revision=revision,
                     revision_header="X-Media-Revision", browser_cache_control=browser)
    assert t.status == plan.status
    assert t.headers(age=age, cache_status=cs, date=DATE.encode()) == wire_pairs(plan.headers)


@pytest.mark.parametrize("fields, plain", [
    ({}, True), ({"Accept": "*/*", "Cache-Control": "no-cache"}, True), ({"If-Range": '"x"'}, True),
    ({"Range": "bytes=0-1"}, False), ({"If-None-Match": '"x"'}, False),
    ({"if-modified-since": "Wed, 21 Oct 2015 07:28:00 GMT"}, False),
])
def test_is_plain(fields, plain):
    assert is_plain(Headers(list(fields.items()))) is plain


def test_age_is_sent_at_most_2_to_the_31():
    """RFC 9111 5.1: an overflowing age is transmitted as 2147483648."""
    from mediaedge.respond import plan_response

    plan = plan_response(method="GET", request_headers=Headers(), status=200, headers=Headers(), length=1,
                         revision="r", revision_header="X-Media-Revision", cache_status="mediaedge; hit",
                         age=2**31 + 500, date="")
    assert plan.headers.get("age") == "2147483648"


def test_the_upstreams_cache_status_members_come_first():
    from mediaedge.respond import hit_template, plan_response

    stored = Headers([("Cache-Status", "origin-cdn; hit"), ("cache-status", "shield; fwd=miss")])
    plan = plan_response(method="GET", request_headers=Headers(), status=200, headers=stored, length=1,
                         revision="r", revision_header="X-Media-Revision", cache_status="mediaedge; hit",
                         age=0, date="")
    assert plan.headers.get_all("cache-status") == ["origin-cdn; hit, shield; fwd=miss, mediaedge; hit"]
    template = hit_template(status=200, headers=stored, length=1, revision="r", revision_header="X-Media-Revision")
    wire = dict(template.headers(age=0, cache_status="mediaedge; hit", date=b""))
    assert wire[b"Cache-Status"] == b"origin-cdn; hit, shield; fwd=miss, mediaedge; hit"
