"""HTTP dates: parse the three formats RFC 9110 allows, generate only IMF-fixdate.

Pure: no clock is read here. Junk never raises; it parses to None, and each
caller decides what an unusable date means (an invalid Expires means stale).
"""
from __future__ import annotations

import calendar
import datetime
import math
import re

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NUMBER = {name: i for i, name in enumerate(_MONTHS, start=1)}
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# The greatest timestamp IMF-fixdate can carry (9999-12-31T23:59:59Z).
_MAX_TIMESTAMP = 253402300799
_MIN_TIMESTAMP = -62135596800  # 0001-01-01T00:00:00Z

_MONTH = r"(?P<month>[A-Za-z]{3})"
_TIME = r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
_ZONE = r"(?:GMT|UTC)"

# RFC 9110 5.6.7:
#   IMF-fixdate  = day-name "," SP date1 SP time-of-day SP GMT
#   date1        = day SP month SP year   ; e.g., 02 Jun 1982
#   rfc850-date  = day-name-l "," SP date2 SP time-of-day SP GMT
#   date2        = day "-" month "-" 2DIGIT   ; e.g., 02-Jun-82
#   asctime-date = day-name SP date3 SP time-of-day SP year
#   date3        = month SP ( 2DIGIT / ( SP DIGIT ))   ; e.g., Jun  2
# Whitespace and letter case are tolerated; the day name is not checked
# against the date (servers get it wrong and the date still means one instant).
_IMF_FIXDATE = re.compile(
    rf"^(?:[A-Za-z]{{3}}\s*,\s*)?(?P<day>\d{{1,2}})\s+{_MONTH}\s+(?P<year>\d{{4}})\s+{_TIME}\s+{_ZONE}$",
    re.IGNORECASE | re.ASCII,
)
_RFC850_DATE = re.compile(
    rf"^[A-Za-z]{{6,9}}\s*,\s*(?P<day>\d{{1,2}})-{_MONTH}-(?P<year>\d{{2}})\s+{_TIME}\s+{_ZONE}$",
    re.IGNORECASE | re.ASCII,
)
_ASCTIME_DATE = re.compile(
    rf"^[A-Za-z]{{3}}\s+{_MONTH}\s+(?P<day>\d{{1,2}})\s+{_TIME}\s+(?P<year>\d{{4}})$",
    re.IGNORECASE | re.ASCII,
)


def parse_http_date(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds since the epoch for an HTTP-date, or None when `value` is not one.

    RFC 9110 5.6.7: "Recipients of timestamp values are encouraged to be robust
    in parsing timestamps unless otherwise restricted by the field definition."
    and "Recipients of a timestamp value in rfc850-date format, which uses a
    two-digit year, MUST interpret a timestamp that appears to be more than 50
    years in the future as representing the most recent year in the past that
    had the same last two digits."

    That two-digit rule needs a clock: pass `now` to apply it; without one the
    POSIX pivot is used (69 and below are 20xx, 70 and above 19xx).
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    for pattern in (_IMF_FIXDATE, _RFC850_DATE, _ASCTIME_DATE):
        match = pattern.match(text)
        if match:
            return _timestamp(match, now)
    return None


def _timestamp(match: re.Match[str], now: float | None) -> float | None:
    month = _MONTH_NUMBER.get(match["month"].lower())
    if month is None:
        return None
    year = int(match["year"])
    if len(match["year"]) == 2:
        year = _four_digit_year(year, now)
    day, hour, minute, second = (int(match[k]) for k in ("day", "hour", "minute", "second"))
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second (RFC 9110 5.6.7)
        return None
    try:
        datetime.date(year, month, day)
    except ValueError:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _four_digit_year(two_digits: int, now: float | None) -> int:
    if now is None or not math.isfinite(now):
        return 2000 + two_digits if two_digits < 70 else 1900 + two_digits
    this_year = datetime.datetime.fromtimestamp(_clamp(now), datetime.UTC).year
    year = this_year - this_year % 100 + two_digits
    if year > this_year + 50:
        year -= 100
    return year


def format_http_date(ts: float) -> str:
    """IMF-fixdate for `ts` (fractions dropped), e.g. "Sun, 06 Nov 1994 08:49:37 GMT".

    RFC 9110 5.6.7: "When a sender generates a field that contains one or more
    timestamps defined as HTTP-date, the sender MUST generate those timestamps
    in the IMF-fixdate format." Built by hand: strftime's day and month names
    follow the process locale.
    """
    moment = datetime.datetime.fromtimestamp(_clamp(ts), datetime.UTC)
    return (
        f"{_DAY_NAMES[moment.weekday()]}, {moment.day:02d} {_MONTH_NAMES[moment.month - 1]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT"
    )


def _clamp(ts: float) -> int:
    """An integer timestamp inside what IMF-fixdate can express (NaN becomes 0)."""
    if ts != ts:  # NaN
        return 0
    if ts >= _MAX_TIMESTAMP:
        return _MAX_TIMESTAMP
    if ts <= _MIN_TIMESTAMP:
        return _MIN_TIMESTAMP
    return math.floor(ts)
