import pytest

from mediaedge.headers import Headers
from mediaedge.policy.freshness import Freshness, classify, current_age, freshness, ttl_left
from mediaedge.policy.httpdate import format_http_date

NOW = 1_700_000_000.0  # the clock, passed in
DAY = 86400.0


def date(offset: float) -> str:
    return format_http_date(NOW + offset)


def fresh_for(headers: list[tuple[str, str]], default_ttl: float = DAY) -> Freshness:
    return freshness(Headers(headers), default_ttl=default_ttl, response_time=NOW)


@pytest.mark.parametrize(
    "headers, lifetime, source",
    [
        # precedence: CDN-Cache-Control > s-maxage > max-age > Expires > heuristic > default
        ([("CDN-Cache-Control", "max-age=600"), ("Cache-Control", "s-maxage=60, max-age=6")], 600, "cdn-cache-control"),
        ([("Cache-Control", "s-maxage=60, max-age=6"), ("Expires", date(3600))], 60, "s-maxage"),
        ([("Cache-Control", "max-age=6"), ("Expires", date(3600))], 6, "max-age"),
        ([("Expires", date(3600)), ("Last-Modified", date(-100 * DAY))], 3600, "expires"),
        ([("Last-Modified", date(-1000))], 100, "heuristic"),
        ([], DAY, "default"),
        ([("Cache-Control", "public")], DAY, "default"),
        # CDN-Cache-Control: its s-maxage also counts; without a lifetime it defers
        ([("CDN-Cache-Control", "s-maxage=700, max-age=600")], 700, "cdn-cache-control"),
        ([("CDN-Cache-Control", "stale-if-error=60"), ("Cache-Control", "max-age=6")], 6, "max-age"),
        # explicit but invalid lifetimes mean stale (RFC 9111 4.2.1), not a fall-through
        ([("Cache-Control", "max-age=soon"), ("Expires", date(3600))], 0, "max-age"),
        ([("Cache-Control", "max-age"), ("Expires", date(3600))], 0, "max-age"),
        ([("Cache-Control", "s-maxage=-1, max-age=60")], 0, "s-maxage"),
        ([("CDN-Cache-Control", "max-age=x"), ("Cache-Control", "max-age=60")], 0, "cdn-cache-control"),
        # quoted and huge values
        ([("Cache-Control", 'max-age="120"')], 120, "max-age"),
        ([("Cache-Control", "max-age=99999999999999")], 2**31, "max-age"),
        # first occurrence wins
        ([("Cache-Control", "max-age=60"), ("Cache-Control", "max-age=10")], 60, "max-age"),
        # Expires: relative to Date, else to the receipt time; invalid means stale
        ([("Date", date(-600)), ("Expires", date(600))], 1200, "expires"),
        ([("Date", "garbage"), ("Expires", date(600))], 600, "expires"),
        ([("Expires", date(-600))], 0, "expires"),
        ([("Expires", "0")], 0, "expires"),
        ([("Expires", "")], 0, "expires"),
        ([("Expires", date(600)), ("Expires", date(60))], 600, "expires"),
        ([("Expires", date(600)), ("Cache-Control", "no-transform")], 600, "expires"),
        # heuristic: 10% of Date - Last-Modified, capped at the default TTL
        ([("Date", date(-500)), ("Last-Modified", date(-1500))], 100, "heuristic"),
        ([("Last-Modified", date(-365 * DAY))], DAY, "heuristic"),
        ([("Last-Modified", date(3600))], 0, "heuristic"),  # modified in the future
        ([("Last-Modified", "yesterday")], DAY, "default"),
        # no-cache zeroes the lifetime, whatever set it
        ([("Cache-Control", "no-cache, max-age=600")], 0, "max-age"),
        ([("Cache-Control", "no-cache")], 0, "default"),
        ([("Cache-Control", 'no-cache="Set-Cookie", max-age=600')], 600, "max-age"),
        ([("CDN-Cache-Control", "no-cache"), ("Cache-Control", "max-age=60")], 0, "max-age"),
        # ... except a browser-only no-cache when the CDN field sets the lifetime
        ([("CDN-Cache-Control", "max-age=600"), ("Cache-Control", "no-cache")], 600, "cdn-cache-control"),
    ],
)
def test_lifetime(headers, lifetime, source):
    f = fresh_for(headers)
    assert (f.lifetime, f.source) == (lifetime, source)


@pytest.mark.parametrize(
    "headers, swr, sie",
    [
        ([], 0, None),
        ([("Cache-Control", "max-age=60, stale-while-revalidate=30")], 30, None),
        ([("Cache-Control", "max-age=60, stale-if-error=300")], 0, 300),
        ([("Cache-Control", "stale-if-error=0")], 0, 0),
        ([("Cache-Control", "stale-while-revalidate=soon, stale-if-error=-1")], 0, None),
        # CDN-Cache-Control wins; Cache-Control fills in what it leaves out
        (
            [("CDN-Cache-Control", "stale-while-revalidate=5"), ("Cache-Control", "stale-while-revalidate=30, stale-if-error=9")],
            5,
            9,
        ),
        ([("CDN-Cache-Control", "stale-if-error=1"), ("Cache-Control", "stale-if-error=9")], 0, 1),
    ],
)
def test_stale_directives(headers, swr, sie):
    f = fresh_for(headers)
    assert (f.stale_while_revalidate, f.stale_if_error) == (swr, sie)


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([("Cache-Control", "max-age=60")], False),
        ([("Cache-Control", "max-age=60, must-revalidate")], True),
        ([("Cache-Control", "max-age=60, proxy-revalidate")], True),
        ([("Cache-Control", "s-maxage=60")], True),  # RFC 9111 5.2.2.10
        ([("Cache-Control", "no-cache")], True),
        ([("CDN-Cache-Control", "must-revalidate")], True),
        # the CDN field's lifetime overrides Cache-Control's revalidation rules
        ([("CDN-Cache-Control", "max-age=60"), ("Cache-Control", "must-revalidate")], False),
    ],
)
def test_must_revalidate(headers, expected):
    assert fresh_for(headers).must_revalidate is expected


@pytest.mark.parametrize(
    "date_, age_header, request_time, response_time, now, expected",
    [
        # nothing but resident time
        (None, None, NOW, NOW, NOW + 10, 10),
        (NOW, None, NOW, NOW, NOW, 0),
        # apparent age: the response was generated before we received it
        (NOW - 30, None, NOW, NOW, NOW + 10, 40),
        # Age from an upstream cache, corrected by the response delay
        (None, 100, NOW - 2, NOW, NOW + 10, 112),
        (NOW - 30, 100, NOW - 2, NOW, NOW, 102),  # corrected age value beats apparent age
        (NOW - 300, 100, NOW - 2, NOW, NOW, 300),  # apparent age beats it
        # Date in the future (skewed origin clock): apparent age is 0
        (NOW + 3600, None, NOW, NOW, NOW + 5, 5),
        # a clock that went backwards never makes a negative age
        (None, None, NOW, NOW, NOW - 100, 0),
    ],
)
def test_current_age(date_, age_header, request_time, response_time, now, expected):
    age = current_age(date=date_, age_header=age_header, request_time=request_time, response_time=response_time, now=now)
    assert age == expected


def make(lifetime=60.0, swr=0.0, sie=None, must_revalidate=False) -> Freshness:
    return Freshness(lifetime, "max-age", swr, sie, must_revalidate)


@pytest.mark.parametrize(
    "age, f, grace, expected",
    [
        # fresh until the lifetime is reached
        (0, make(), 0, "fresh"),
        (59.9, make(), 0, "fresh"),
        (60, make(), 0, "expired"),
        (0, make(lifetime=0), 0, "expired"),
        # stale-while-revalidate window (RFC 5861 3)
        (60, make(swr=30), 0, "stale-while-revalidate"),
        (89.9, make(swr=30), 0, "stale-while-revalidate"),
        (90, make(swr=30), 0, "expired"),
        # stale-if-error: explicit window, else grace
        (100, make(sie=60), 0, "stale-if-error"),
        (120, make(sie=60), DAY, "expired"),  # explicit window beats a longer grace
        (100, make(), DAY, "stale-if-error"),
        (60 + DAY, make(), DAY, "expired"),
        (100, make(sie=0), DAY, "expired"),
        (95, make(swr=30, sie=60), 0, "stale-if-error"),
        # must-revalidate: grace does not apply, an explicit stale-if-error does
        (100, make(must_revalidate=True), DAY, "expired"),
        (100, make(sie=60, must_revalidate=True), DAY, "stale-if-error"),
        (70, make(swr=30, must_revalidate=True), DAY, "stale-while-revalidate"),
    ],
)
def test_classify(age, f, grace, expected):
    assert classify(age, f, grace=grace) == expected


@pytest.mark.parametrize(
    "age, lifetime, expected",
    [
        (0, 60, 60),
        (18.5, 60, 41),
        (60, 60, 0),
        (65, 60, -5),
        (60.5, 60, -1),  # floored, not truncated
        (0, 2**31, 2**31),
        (float("inf"), 60, -(2**31)),
        (float("nan"), 60, 0),
    ],
)
def test_ttl_left(age, lifetime, expected):
    assert ttl_left(age, make(lifetime=lifetime)) == expected


def test_stored_then_classified_later():
    """The whole path an entry takes: freshness at store time, age and class at hit time."""
    headers = Headers([("Date", date(-10)), ("Cache-Control", "max-age=60, stale-while-revalidate=30"), ("Age", "5")])
    f = freshness(headers, default_ttl=DAY, response_time=NOW)
    for now, expected_class, expected_ttl in [
        (NOW, "fresh", 50),  # apparent age 10 beats Age 5 + 1 s of delay
        (NOW + 45, "fresh", 5),
        (NOW + 55, "stale-while-revalidate", -5),
        (NOW + 85, "stale-if-error", -35),
        (NOW + DAY + 60, "expired", -86410),
    ]:
        age = current_age(date=NOW - 10, age_header=5, request_time=NOW - 1, response_time=NOW, now=now)
        assert classify(age, f, grace=DAY) == expected_class
        assert ttl_left(age, f) == expected_ttl
