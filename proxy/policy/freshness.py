"""Freshness lifetime, age and staleness of a stored response.

Pure: the clock is always an argument (`response_time`, `now`). The engine
computes a `Freshness` once when it stores a response and classifies the
entry's age on every hit.

Precedence, most specific first (contract section 2):
CDN-Cache-Control max-age (RFC 9213) > s-maxage > max-age > Expires > heuristic
(RFC 9111 4.2.2, when Last-Modified is present) > the configured default TTL.

CDN-Cache-Control is read next to Cache-Control rather than instead of it
(RFC 9213 2.2 says to ignore Cache-Control when a targeted field is present):
its max-age wins, and when it sets the lifetime, Cache-Control's no-cache and
revalidation directives (meant for browsers) are ignored; its stale-* win over
Cache-Control's, which still apply when it has none. Storage rules
(storable.py) follow the contract: `private`/`no-store` in either keeps a
response out.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from mediaedge.headers import Headers
from mediaedge.policy.cachecontrol import DELTA_SECONDS_MAX, delta_seconds, parse_cache_control
from mediaedge.policy.httpdate import parse_http_date

# RFC 9111 4.2.2: "If the response has a Last-Modified header field ..., caches
# are encouraged to use a heuristic expiration value that is no more than some
# fraction of the interval since that time. A typical setting of this fraction
# might be 10%."
HEURISTIC_FRACTION = 0.1


class Freshness(NamedTuple):
    """How long a stored response may be reused, and how far past that.

    A NamedTuple of plain values: the memory tier keeps one per entry, and tuples of
    atoms are not tracked by the garbage collector (proxy/hot.py)."""

    lifetime: float  # seconds fresh, counted from the response's age 0
    source: str  # 'cdn-cache-control', 's-maxage', 'max-age', 'expires', 'heuristic' or 'default'
    stale_while_revalidate: float  # seconds past lifetime a stale copy may be served while refetching
    stale_if_error: float | None  # seconds past lifetime usable when origins fail; None: not given
    must_revalidate: bool  # the origin forbids serving stale beyond the stale-* it granted


def freshness(response_headers: Headers, *, default_ttl: float, response_time: float) -> Freshness:
    """The freshness of a response received at `response_time`.

    Explicit directives that are present but invalid (`max-age=soon`) make the
    response stale, as RFC 9111 4.2.1 encourages, instead of falling through
    to a longer lifetime.
    """
    cdn = parse_cache_control(response_headers.get("CDN-Cache-Control"))
    cc = parse_cache_control(response_headers.get("Cache-Control"))
    lifetime, source = _lifetime(response_headers, cdn, cc, default_ttl, response_time)
    # A lifetime the CDN field set is not undone by a Cache-Control meant for
    # browsers ("Cache-Control: no-cache" + "CDN-Cache-Control: max-age=600").
    governing = (cdn,) if source == "cdn-cache-control" else (cdn, cc)
    if any(_unqualified_no_cache(d) for d in governing):
        lifetime = 0.0
    return Freshness(
        lifetime=lifetime,
        source=source,
        stale_while_revalidate=float(_stale_directive("stale-while-revalidate", cdn, cc) or 0),
        stale_if_error=_as_float(_stale_directive("stale-if-error", cdn, cc)),
        must_revalidate=any(_must_revalidate(d) for d in governing),
    )


# RFC 9111 4.2.1: "A cache can calculate the freshness lifetime (denoted as
# freshness_lifetime) of a response by evaluating the following rules and
# using the first match:
#  - If the cache is shared and the s-maxage response directive is present,
#    use its value, or
#  - If the max-age response directive is present, use its value, or
#  - If the Expires response header field is present, use its value minus the
#    value of the Date response header field (using the time the message was
#    received if it is not present, as per Section 6.6.1 of [HTTP]), or
#  - Otherwise, no explicit expiration time is present in the response. A
#    heuristic freshness lifetime might be applicable; see Section 4.2.2."
# RFC 9111 5.3: "If a response includes a Cache-Control header field with the
# max-age directive, a recipient MUST ignore the Expires header field." and
# "A cache recipient MUST interpret invalid date formats, especially the value
# "0", as representing a time in the past (i.e., "already expired")."
# RFC 9213 2.1: a targeted field has "the same semantics as the Cache-Control
# response header field", so a CDN-Cache-Control s-maxage counts as its max-age.
def _lifetime(
    headers: Headers, cdn: dict[str, str | None], cc: dict[str, str | None], default_ttl: float, response_time: float
) -> tuple[float, str]:
    for directives, name, source in (
        (cdn, "s-maxage", "cdn-cache-control"),
        (cdn, "max-age", "cdn-cache-control"),
        (cc, "s-maxage", "s-maxage"),
        (cc, "max-age", "max-age"),
    ):
        if name in directives:
            return float(delta_seconds(directives[name]) or 0), source
    date = _first_date(headers, "Date")
    received = date if date is not None else response_time
    expires_fields = headers.get_all("Expires")
    if expires_fields:
        expires = parse_http_date(expires_fields[0])
        return (_bounded(expires - received) if expires is not None else 0.0), "expires"
    last_modified = _first_date(headers, "Last-Modified")
    if last_modified is not None:
        return _heuristic(received - last_modified, default_ttl), "heuristic"
    return _bounded(default_ttl), "default"


# RFC 9111 4.2.1 lists the explicit expiration times: s-maxage, max-age, Expires
# (and RFC 9213 2.1 the targeted CDN-Cache-Control's max-age / s-maxage). A response
# with any of them may be stored whatever its status (RFC 9111 3, "contains ... an
# Expires header field, a max-age response directive, an s-maxage response directive").
def has_explicit_freshness(headers: Headers) -> bool:
    """True when the response states its own lifetime (even an invalid one: that is 'stale')."""
    cdn = parse_cache_control(headers.get("CDN-Cache-Control"))
    cc = parse_cache_control(headers.get("Cache-Control"))
    return "max-age" in cdn or "s-maxage" in cdn or "max-age" in cc or "s-maxage" in cc or "expires" in headers


# RFC 9111 4.2.2: "caches are encouraged to use a heuristic expiration value
# that is no more than some fraction of the interval since that time."
def _heuristic(interval: float, default_ttl: float) -> float:
    """10% of the time since the last modification, never more than the default TTL."""
    return min(_bounded(interval * HEURISTIC_FRACTION), _bounded(default_ttl))


# RFC 9111 5.2.2.4: the unqualified no-cache response directive "indicates that
# the response MUST NOT be used to satisfy any other request without forwarding
# it for validation and receiving a successful response". The qualified form
# (no-cache="Set-Cookie") only restricts the named fields, so it is ignored.
def _unqualified_no_cache(directives: dict[str, str | None]) -> bool:
    return "no-cache" in directives and not directives["no-cache"]


# RFC 9111 4.2.4: "A cache MUST NOT generate a stale response if it is
# prohibited by an explicit in-protocol directive (e.g., by a no-cache response
# directive, a must-revalidate response directive, or an applicable s-maxage or
# proxy-revalidate response directive)."
# RFC 9111 5.2.2.10: s-maxage "incorporates the semantics of the
# proxy-revalidate response directive for a shared cache."
def _must_revalidate(directives: dict[str, str | None]) -> bool:
    return (
        "must-revalidate" in directives
        or "proxy-revalidate" in directives
        or "s-maxage" in directives
        or _unqualified_no_cache(directives)
    )


# RFC 5861 3: "stale-while-revalidate = "stale-while-revalidate" "=" delta-seconds"
# RFC 5861 4: "stale-if-error = "stale-if-error" "=" delta-seconds"
# The CDN-targeted value wins over the general one (RFC 9213 2.2).
def _stale_directive(name: str, cdn: dict[str, str | None], cc: dict[str, str | None]) -> int | None:
    for directives in (cdn, cc):
        seconds = delta_seconds(directives.get(name))
        if seconds is not None:
            return seconds
    return None


def _first_date(headers: Headers, name: str) -> float | None:
    """The first field line only: joined repeats ("a, b") would not parse, and
    RFC 9111 4.2.1 says to use the first occurrence."""
    values = headers.get_all(name)
    return parse_http_date(values[0]) if values else None


def _as_float(value: int | None) -> float | None:
    return None if value is None else float(value)


def _bounded(seconds: float) -> float:
    """`seconds` within [0, 2**31]; NaN counts as 0."""
    if not seconds > 0:
        return 0.0
    return float(min(seconds, DELTA_SECONDS_MAX))


# RFC 9111 4.2.3:
#   apparent_age = max(0, response_time - date_value);
#   response_delay = response_time - request_time;
#   corrected_age_value = age_value + response_delay;
#   corrected_initial_age = max(apparent_age, corrected_age_value);
#   resident_time = now - response_time;
#   current_age = corrected_initial_age + resident_time;
# "age_value: The term "age_value" denotes the value of the Age header field
# (Section 5.1), in a form appropriate for arithmetic operation; or 0, if not
# available." A missing Date counts as the receipt time (RFC 9110 6.6.1), which
# makes apparent_age 0.
def current_age(
    *, date: float | None, age_header: float | None, request_time: float, response_time: float, now: float
) -> float:
    """Seconds since the origin generated the response, as RFC 9111 4.2.3 computes it.

    Never negative: a clock that went backwards yields 0, not a negative age.
    """
    date_value = response_time if date is None else date
    age_value = 0.0 if age_header is None else age_header
    apparent_age = max(0.0, response_time - date_value)
    response_delay = response_time - request_time
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = now - response_time
    age = corrected_initial_age + resident_time
    return age if age > 0 else 0.0


# RFC 9111 4.2: "A "fresh" response is one whose age has not yet exceeded its
# freshness lifetime." i.e. response_is_fresh = (freshness_lifetime > current_age)
# RFC 5861 3: "When present in an HTTP response, the stale-while-revalidate
# Cache-Control extension indicates that caches MAY serve the response in which
# it appears after it becomes stale, up to the indicated number of seconds."
# RFC 5861 4: "When present in an HTTP response, the stale-if-error
# Cache-Control extension indicates that when an error is encountered, a cached
# stale response MAY be used to satisfy the request, regardless of other
# freshness information."
# Without stale-if-error we allow `grace` (Varnish's name) past the lifetime,
# unless the origin forbade serving stale (RFC 9111 4.2.4, see _must_revalidate).
def classify(age: float, f: Freshness, *, grace: float) -> str:
    """'fresh', 'stale-while-revalidate', 'stale-if-error' (only if the origins fail) or 'expired'."""
    if age < f.lifetime:
        return "fresh"
    if age < f.lifetime + f.stale_while_revalidate:
        return "stale-while-revalidate"
    window = f.stale_if_error
    if window is None and not f.must_revalidate:
        window = grace
    if window is not None and age < f.lifetime + window:
        return "stale-if-error"
    return "expired"


# RFC 9211 2.4: ttl "indicates the response's remaining freshness lifetime as
# calculated by the cache, as an integer number of seconds" and "It can be
# negative, to indicate that the response is stale."
def ttl_left(age: float, f: Freshness) -> int:
    """Whole seconds of freshness left (floored); negative when stale."""
    left = f.lifetime - age
    if left != left:  # NaN
        return 0
    return math.floor(max(-DELTA_SECONDS_MAX, min(DELTA_SECONDS_MAX, left)))
