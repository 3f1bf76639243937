import pytest

from mediaedge.policy.httpdate import format_http_date, parse_http_date

NOV_6_1994 = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example instant


@pytest.mark.parametrize(
    "value, expected",
    [
        # the three formats of RFC 9110 5.6.7
        ("Sun, 06 Nov 1994 08:49:37 GMT", NOV_6_1994),
        ("Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994),
        ("Sun Nov  6 08:49:37 1994", NOV_6_1994),
        # robustness: whitespace, case, day names and zones seen in the wild
        ("  Sun, 06 Nov 1994 08:49:37 GMT  ", NOV_6_1994),
        ("sun, 06 nov 1994 08:49:37 gmt", NOV_6_1994),
        ("Mon, 06 Nov 1994 08:49:37 GMT", NOV_6_1994),  # wrong day name: the date still counts
        ("06 Nov 1994 08:49:37 GMT", NOV_6_1994),
        ("Sun, 6 Nov 1994 08:49:37 GMT", NOV_6_1994),
        ("Sun, 06 Nov 1994 08:49:37 UTC", NOV_6_1994),
        ("Sun Nov 06 08:49:37 1994", NOV_6_1994),
        # edges of the calendar
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Wed, 31 Dec 1969 23:59:59 GMT", -1.0),
        ("Thu, 29 Feb 2024 12:00:00 GMT", 1709208000.0),
        ("Sat, 31 Dec 2016 23:59:60 GMT", 1483228800.0),  # leap second
        ("Fri, 31 Dec 9999 23:59:59 GMT", 253402300799.0),
        # two-digit years without a clock: the POSIX pivot
        ("Thursday, 01-Jan-70 00:00:00 GMT", 0.0),
        ("Saturday, 01-Jan-00 00:00:00 GMT", 946684800.0),
        ("Sunday, 01-Jan-69 00:00:00 GMT", 3124224000.0),
        # junk
        (None, None),
        ("", None),
        ("0", None),
        ("-1", None),
        ("now", None),
        ("Sun, 06 Nov 1994 08:49:37", None),  # no zone
        ("Sun, 06 Nov 1994 08:49:37 +0100", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),
        ("Sun, 00 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("Sun, 06 Nov 1994 08:60:00 GMT", None),
        ("Sun, 06 Nov 1994 08:49:61 GMT", None),
        ("Sun, 06 Nov 0000 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 GMT" + " " * 100, NOV_6_1994),
        ("Sun, 06 Nov 1994 08:49:37 GMT" + "x" * 100, None),
        ("Sun, ０６ Nov 1994 08:49:37 GMT", None),  # full-width digits
    ],
)
def test_parse_http_date(value, expected):
    assert parse_http_date(value) == expected


@pytest.mark.parametrize(
    "value, now, expected_year_start",
    [
        # RFC 9110 5.6.7: more than 50 years in the future means the past century
        ("Friday, 01-Jan-99 00:00:00 GMT", 1700000000.0, 915148800.0),  # 2023: 2099 is > 50 years ahead
        ("Tuesday, 01-Jan-30 00:00:00 GMT", 1700000000.0, 1893456000.0),  # 2030
        ("Wednesday, 01-Jan-70 00:00:00 GMT", 1700000000.0, 3155760000.0),  # 2070 is within 50 years
        ("Monday, 01-Jan-80 00:00:00 GMT", 1700000000.0, 315532800.0),  # 2080 is not: 1980
    ],
)
def test_parse_http_date_two_digit_year_with_clock(value, now, expected_year_start):
    assert parse_http_date(value, now=now) == expected_year_start


@pytest.mark.parametrize(
    "ts, expected",
    [
        (NOV_6_1994, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (NOV_6_1994 + 0.999, "Sun, 06 Nov 1994 08:49:37 GMT"),  # fractions dropped
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (1709208000, "Thu, 29 Feb 2024 12:00:00 GMT"),
        # out of IMF-fixdate's range: clamped, never raises
        (1e20, "Fri, 31 Dec 9999 23:59:59 GMT"),
        (-1e20, "Mon, 01 Jan 0001 00:00:00 GMT"),
        (float("inf"), "Fri, 31 Dec 9999 23:59:59 GMT"),
        (float("nan"), "Thu, 01 Jan 1970 00:00:00 GMT"),
    ],
)
def test_format_http_date(ts, expected):
    assert format_http_date(ts) == expected


@pytest.mark.parametrize("ts", [0, 1, NOV_6_1994, 1709208000, 2**31, 4102444800])
def test_round_trip(ts):
    assert parse_http_date(format_http_date(ts)) == ts
