"""What to send a client for a stored (or arriving) response: status, headers, byte window.

Pure: the engine gives the request's headers and the response's facts; this module
applies conditionals (RFC 9110 13), ranges (RFC 9110 14) and the headers the contract
promises on every media response (Date, Cache-Status, Age, ETag, X-Media-Revision,
Accept-Ranges, Content-Length, and the browser's Cache-Control when the origin gave
none), and returns a plan. No I/O; the time for Date is passed in (`HttpDates` keeps
the formatted string for the current second).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from mediaedge.headers import Headers
from mediaedge.policy.conditional import not_modified
from mediaedge.policy.httpdate import format_http_date, parse_http_date
from mediaedge.policy.ranges import (
    ByteRange,
    content_range,
    if_range_allows,
    parse_range,
    resolve_range,
    unsatisfied_content_range,
)
from mediaedge.policy.target import etag_for_revision

# Fields we set ourselves on the way out (anything stored under these names is replaced).
OWN_FIELDS = ("date", "content-length", "content-range", "age", "cache-status", "accept-ranges",
              "transfer-encoding", "connection", "keep-alive")
# Fields by which an origin states how long a client may keep a response (RFC 9111 5.2, 5.3).
# CDN-Cache-Control / Surrogate-Control speak to caches like us only, not to browsers.
BROWSER_FRESHNESS_FIELDS = ("cache-control", "expires")


def browser_cache_control(browser_ttl: float) -> str:
    """The Cache-Control a client gets when the origin gave none (`--browser-ttl`).

    `no-cache` by default: the browser keeps the body but asks again each time (with
    the ETag we always send, so a 304 from cache), and a publish reaches it at once.
    `max-age=N` trades that for N seconds without a request. Only what the client
    sees; the edge's own freshness comes from --default-ttl.
    """
    return f"max-age={int(browser_ttl)}" if browser_ttl > 0 else "no-cache"


class HttpDates:
    """The IMF-fixdate of the current second, formatted at most once per second.

    RFC 9110 6.6.1: an origin server with a clock MUST send Date on every 2xx-4xx
    response (and we are the origin of every response we make). Formatting one costs a
    few microseconds; the hot hit only reads the cached string (nginx keeps its
    `ngx_cached_http_time` the same way).
    """

    __slots__ = ("_second", "_text", "_wire")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""
        self._wire = b""

    def _refresh(self, second: int) -> None:
        self._text = format_http_date(second)
        self._wire = self._text.encode("ascii")
        self._second = second

    def text(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._refresh(second)
        return self._text

    def wire(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._refresh(second)
        return self._wire


HTTP_DATES = HttpDates()  # one per process: every caller asks about the same clock


@dataclass(frozen=True)
class Plan:
    status: int
    headers: Headers
    # [start, end) of the body to send; None: no body (HEAD, 304, 416). end None: to the end.
    window: tuple[int, int | None] | None


def plan_response(
    *,
    method: str,
    request_headers: Headers,
    status: int,
    headers: Headers,
    length: int | None,
    revision: str | None,
    revision_header: str,
    cache_status: str,
    age: int | None,
    date: str,
    browser_cache_control: str | None = None,
) -> Plan:
    """`date`: the Date to send (the edge's clock, or the upstream's own Date when passing
    its response on). `browser_cache_control`: added when the origin's headers say
    nothing to browsers (no Cache-Control, no Expires); see `browser_cache_control()`."""
    out = headers.without(*OWN_FIELDS, revision_header)
    if browser_cache_control and not any(name in out for name in BROWSER_FRESHNESS_FIELDS):
        out = Headers([("Date", date), *out, ("Cache-Control", browser_cache_control)])
    else:
        out = Headers([("Date", date), *out])
    etag = out.get("etag")
    if etag is None and revision:
        etag = etag_for_revision(revision)
        out = out.with_set("ETag", etag)
    extra: list[tuple[str, str]] = []
    if revision:
        extra.append((revision_header, revision))
    if age is not None:
        extra.append(("Age", str(_age_value(age))))
    extra.append(("Cache-Status", upstream_cache_status(headers) + cache_status))
    is_head = method == "HEAD"

    if status != 200:
        # Negative (404/410) and other answers: no conditionals or ranges apply. RFC 9110
        # 8.6: no Content-Length in a 204 (nor a body); a passed-on 206 keeps its Content-Range.
        body_len = length or 0
        # A passed-on 304 (a client's conditional forwarded for an object not stored): no body.
        if status in (204, 304) or status < 200:
            return Plan(status, Headers([*out, *extra]), None)
        # A passed-on 416 keeps its Content-Range too (bytes */LEN, RFC 9110 15.5.17).
        ranges = [("Content-Range", v) for v in headers.get_all("content-range")] if status in (206, 416) else []
        return Plan(status, Headers([*out, *extra, *ranges, ("Content-Length", str(body_len))]),
                    None if is_head else (0, body_len))

    last_modified = parse_http_date(out.get("last-modified"))
    if not_modified(request_headers, etag=etag, last_modified=last_modified):
        return Plan(304, Headers([*out.without("content-type"), *extra]), None)

    extra.append(("Accept-Ranges", "bytes"))
    spec = parse_range(request_headers.get("range")) if method == "GET" else None
    if spec is not None and length is not None and if_range_allows(
        request_headers.get("if-range"), etag=etag, last_modified=last_modified
    ):
        resolved = resolve_range(spec, length)
        if isinstance(resolved, ByteRange):
            return Plan(
                206,
                Headers([*out, *extra, ("Content-Range", content_range(resolved, length)),
                         ("Content-Length", str(resolved.length))]),
                (resolved.start, resolved.end + 1),
            )
        if resolved == "unsatisfiable":
            return Plan(
                416,
                Headers([*out.without("content-type"), *extra,
                         ("Content-Range", unsatisfied_content_range(length)), ("Content-Length", "0")]),
                None,
            )
        # "full": several ranges asked; we answer the whole body (documented in README)
    if length is not None:
        extra.append(("Content-Length", str(length)))
    return Plan(200, Headers([*out, *extra]), None if is_head else (0, length))


# RFC 9211 2: "When adding a value to the Cache-Status header field, caches SHOULD
# preserve the existing field value, to allow debugging of the entire chain of caches
# handling the request" and members are ordered "the cache closest to the origin
# server first". So the members the upstream sent (another cache in front of the
# app, a shield tier) come first, ours last, in one field value.
def upstream_cache_status(headers: Headers) -> str:
    """The upstream's Cache-Status members followed by ", " (or "" when it sent none)."""
    members = ", ".join(v.strip() for v in headers.get_all("cache-status") if v.strip())
    return members + ", " if members else ""


# Request fields that can change what a stored response's plan is. A request with none
# of them (the common case: a browser or CDN fetching an image) always gets the same
# status and headers for an entry, except Age and Cache-Status (If-Range only matters
# with Range). Vary is handled by the entry lookup, not here.
PLAN_CHANGING_FIELDS = ("range", "if-none-match", "if-modified-since")


def is_plain(request_headers: Headers) -> bool:
    """True when `plan_response` gives this request the entry's template answer."""
    return not any(name in request_headers for name in PLAN_CHANGING_FIELDS)


class HitTemplate(NamedTuple):
    """`plan_response`'s answer to a plain GET or HEAD for one stored response, with the
    three fields that change per request (Date, Age, Cache-Status) at known positions,
    already encoded for the wire. Built once per entry kept in memory (proxy/hot.py), so a hot
    hit costs a copy and two substitutions instead of a plan. A NamedTuple of bytes and
    ints, which the garbage collector stops tracking."""

    status: int
    pairs: tuple[tuple[bytes, bytes], ...]
    age_at: int
    cache_status_at: int
    date_at: int
    cache_status_prefix: str = ""  # the upstream's members (upstream_cache_status)

    def headers(self, *, age: int, cache_status: str, date: bytes) -> list[tuple[bytes, bytes]]:
        pairs = list(self.pairs)
        pairs[self.date_at] = (b"Date", date)
        pairs[self.age_at] = (b"Age", str(_age_value(age)).encode())
        pairs[self.cache_status_at] = (b"Cache-Status",
                                       (self.cache_status_prefix + cache_status).encode("latin-1", "replace"))
        return pairs


def hit_template(*, status: int, headers: Headers, length: int, revision: str | None,
                 revision_header: str, browser_cache_control: str | None = None) -> HitTemplate:
    plan = plan_response(method="GET", request_headers=Headers(), status=status, headers=headers, length=length,
                         revision=revision, revision_header=revision_header, cache_status="", age=0, date="",
                         browser_cache_control=browser_cache_control)
    names = [k.lower() for k, _ in plan.headers]
    return HitTemplate(
        plan.status,
        tuple(wire_pairs(plan.headers)),
        names.index("age"),
        names.index("cache-status"),
        names.index("date"),
        upstream_cache_status(headers),
    )


# RFC 9111 5.1: "If a cache receives a value larger than the largest positive integer
# it can represent, or if any of its age calculations overflows, it MUST transmit an
# Age header field with a value of 2147483648 (2^31)."
AGE_MAX = 2**31


def _age_value(age: int) -> int:
    return min(max(0, age), AGE_MAX)


def wire_pairs(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Header fields as mitmproxy wants them. Names are tokens (ASCII); values we did not
    make come from stored responses and pass through latin-1 as HTTP/1.1 carries them."""
    return [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers]
