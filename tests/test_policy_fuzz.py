"""Properties of the policy over arbitrary input: parsers never raise, and
normalize_target only ever refuses with TargetError or returns a safe key."""
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mediaedge.errors import TargetError
from mediaedge.headers import Headers
from mediaedge.policy.cachecontrol import DELTA_SECONDS_MAX, delta_seconds, parse_cache_control
from mediaedge.policy.conditional import not_modified
from mediaedge.policy.freshness import classify, current_age, freshness, ttl_left
from mediaedge.policy.httpdate import format_http_date, parse_http_date
from mediaedge.policy.ranges import ByteRange, if_range_allows, parse_range, resolve_range
from mediaedge.policy.target import decoded_path, is_media, lenient_path, normalize_target, vary_names

# Moderate example counts keep the whole policy suite near 15 s; the target
# property, the security-relevant one, gets more.
FUZZ = settings(max_examples=120, deadline=None)
FUZZ_MORE = settings(max_examples=400, deadline=None)
NOW = 1_700_000_000.0

# Pieces that make path handling interesting, mixed with arbitrary text.
TARGET_PIECES = st.sampled_from(
    [
        "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", "%00", "\x00", "%", "%4", "%zz",
        "%41", "%7e", "%c3%a9", "%C3", "%ff", "é", "😀", "\udcc3", "\udca9", "\udcff", "?", "#", ";", " ",
        "a", "A", "media", "=", "&", "+", "\r\n", "\t", "%0a", "http://h", "~", "%25",
        "%252e", "%253B", "%3B", "%EF%BC%8E", "\uff0e", "%255c", "%252f",
    ]
)
TARGETS = st.one_of(
    st.text(max_size=60),
    st.lists(TARGET_PIECES, max_size=16).map("".join),
    st.lists(TARGET_PIECES, max_size=16).map(lambda pieces: "/" + "".join(pieces)),
)
HEADER_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["max-age=60", "no-store", 's-maxage="5"', "bytes=0-1", "*", 'W/"a"', '"a", "b"', "Sun, 06 Nov 1994 08:49:37 GMT", "0"]
    ),
)
HEADER_NAMES = st.sampled_from(
    [
        "Cache-Control", "CDN-Cache-Control", "Expires", "Date", "Last-Modified", "Age", "If-None-Match",
        "If-Modified-Since", "Vary", "ETag", "X-Other",
    ]
)
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_TEXT), max_size=6).map(Headers)
FINITE = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
ANY_FLOAT = st.floats()


# parsers never raise


@FUZZ
@given(st.one_of(st.none(), HEADER_TEXT))
def test_parse_range_never_raises(value):
    spec = parse_range(value)
    if spec is not None:
        assert spec and all(first is not None or last is not None for first, last in spec)


@FUZZ
@given(st.one_of(st.none(), HEADER_TEXT))
def test_parse_cache_control_never_raises(value):
    directives = parse_cache_control(value)
    assert all(name == name.lower() and name for name in directives)


@FUZZ
@given(st.one_of(st.none(), HEADER_TEXT))
def test_delta_seconds_is_bounded(value):
    seconds = delta_seconds(value)
    assert seconds is None or 0 <= seconds <= DELTA_SECONDS_MAX


@FUZZ
@given(st.one_of(st.none(), HEADER_TEXT), st.one_of(st.none(), FINITE))
def test_parse_http_date_never_raises(value, now):
    parse_http_date(value, now=now)


@FUZZ
@given(ANY_FLOAT)
def test_format_http_date_never_raises(ts):
    assert format_http_date(ts).endswith(" GMT")


@FUZZ
@given(HEADERS, st.one_of(st.none(), HEADER_TEXT), st.one_of(st.none(), ANY_FLOAT))
def test_not_modified_never_raises(headers, etag, last_modified):
    assert not_modified(headers, etag=etag, last_modified=last_modified) in (True, False)


@FUZZ
@given(st.one_of(st.none(), HEADER_TEXT), st.one_of(st.none(), HEADER_TEXT), st.one_of(st.none(), ANY_FLOAT))
def test_if_range_allows_never_raises(if_range, etag, last_modified):
    assert if_range_allows(if_range, etag=etag, last_modified=last_modified) in (True, False)


@FUZZ
@given(HEADERS, ANY_FLOAT, FINITE, FINITE)
def test_freshness_never_raises_and_classifies_consistently(headers, default_ttl, response_time, elapsed):
    f = freshness(headers, default_ttl=default_ttl, response_time=response_time)
    assert 0 <= f.lifetime <= DELTA_SECONDS_MAX
    assert f.source in {"cdn-cache-control", "s-maxage", "max-age", "expires", "heuristic", "default"}
    age = current_age(
        date=parse_http_date(headers.get("Date")),
        age_header=delta_seconds(headers.get("Age")),
        request_time=response_time,
        response_time=response_time,
        now=response_time + elapsed,
    )
    assert age >= 0
    state = classify(age, f, grace=86400)
    assert (state == "fresh") == (age < f.lifetime)
    if state == "fresh":
        assert ttl_left(age, f) >= 0
    vary_names(headers)


# ranges resolve inside the representation


@FUZZ
@given(st.lists(TARGET_PIECES | st.sampled_from(["bytes=", "-", "0", "9", "5-", "-3", ","]), max_size=8).map("".join), st.integers(0, 10_000))
def test_resolved_range_is_inside(value, length):
    spec = parse_range(value)
    if spec is None:
        return
    resolved = resolve_range(spec, length)
    if isinstance(resolved, ByteRange):
        assert 0 <= resolved.start <= resolved.end < length
    else:
        assert resolved in ("full", "unsatisfiable")


# normalize_target: only TargetError, idempotent, safe output


@FUZZ_MORE
@given(TARGETS)
def test_normalize_target_is_safe_and_idempotent(raw):
    try:
        canonical = normalize_target(raw)
    except TargetError as e:
        assert e.status in (400, 404, 414)
        assert "\n" not in str(e)
        return
    assert normalize_target(canonical) == canonical
    assert canonical.isascii() and canonical.startswith("/")
    assert "\x00" not in canonical and "%00" not in canonical
    assert not re.search(r"[\x00-\x20\x7f]", canonical)
    path = canonical.partition("?")[0]
    assert "%2F" not in path.upper() and "%5C" not in path.upper() and "\\" not in path
    decoded = decoded_path(canonical)
    assert ".." not in decoded.split("/") and "." not in decoded.split("/")
    # Rule 2 (web cache deception): nothing a lenient app would resolve elsewhere
    lenient = lenient_path(path)
    segments = lenient.split("/")[1:]
    assert "\\" not in lenient and not re.search(r"[\x00-\x1f\x7f-\x9f]", lenient)
    assert all(segment.strip(". ") for segment in segments[:-1])
    assert segments[-1] == "" or segments[-1].strip(". ")
    assert "\ufffd" not in decoded or "\ufffd" in raw or "%EF%BF%BD" in canonical
    is_media(canonical, ("/media/",))
