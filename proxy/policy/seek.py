"""Seeks into what the edge will not store: when a Range goes to the origin as it came.

Pure. Without this, a player seeking near the end of a 400 MB video the edge does not
store (over --max-object-size, or not storable) makes the edge download all of it to
send 100 bytes. The edge remembers, per target, that its last fetch was not stored
(`Unstored`, kept in memory for UNSTORED_TTL), and a Range request for such a target is
forwarded with its Range (and If-Range); the upstream's 206/416/200 is passed on, never
stored. A first Range request whose fetch turns out not storable is re-sent the same way
(`abandon_fetch`): the whole-object answer is dropped after its head.
"""
from __future__ import annotations

from dataclasses import dataclass

from mediaedge.headers import Headers
from mediaedge.policy.ranges import ByteRange, if_range_allows, parse_range, resolve_range

# How long "this target's last fetch was not stored" is believed. A publish or purge of
# the target forgets it at once; otherwise an object that became small enough (or
# storable) is fetched whole again after this long.
UNSTORED_TTL = 600.0
# Why a 200 was not stored that says something about the object itself, not about the
# client who asked ('authorization') or the cache's mood ('admission'): worth remembering.
REMEMBERED_REASONS = frozenset({"size", "no-store", "private", "set-cookie", "vary-star", "deception"})


@dataclass(frozen=True)
class Unstored:
    """A target whose last whole fetch was not stored, and why, until `until`."""

    reason: str
    until: float


@dataclass(frozen=True)
class Route:
    """The decision: `forward` the client's Range to the origin, with the reason."""

    forward: bool
    reason: str


def is_range_request(method: str, request_headers: Headers) -> bool:
    """A GET with a Range we understand (a malformed one is ignored: a plain GET)."""
    return method.upper() == "GET" and parse_range(request_headers.get("range")) is not None


def is_conditional_request(method: str, request_headers: Headers) -> bool:
    """A GET with If-None-Match or If-Modified-Since: on something the edge will not store,
    the origin answers it (a 304 costs the app no body), not the edge after a whole fetch."""
    return method.upper() == "GET" and ("if-none-match" in request_headers or "if-modified-since" in request_headers)


def forwardable(method: str, request_headers: Headers) -> bool:
    """A request whose own Range or validators go to the origin when the edge will not store
    the object (a seek, or a client's conditional GET)."""
    return is_range_request(method, request_headers) or is_conditional_request(method, request_headers)


def route_range(*, method: str, request_headers: Headers, known: Unstored | None, now: float) -> Route:
    """On a miss: send the client's Range and validators to the origin, or fetch the object as usual."""
    if not forwardable(method, request_headers):
        return Route(False, "no-range")
    if known is None:
        return Route(False, "unknown")
    if now >= known.until:
        return Route(False, "forgotten")
    return Route(True, known.reason)


def remember(*, status: int, reason: str, now: float) -> Unstored | None:
    """What a whole fetch that was not stored teaches (None: nothing worth keeping)."""
    if status != 200 or reason not in REMEMBERED_REASONS:
        return None
    return Unstored(reason, now + UNSTORED_TTL)


def abandon_fetch(*, method: str, request_headers: Headers, status: int, reason: str) -> bool:
    """Drop a whole-object answer after its head and re-send the leader's Range (or its
    validators) instead?

    Only for a Range or conditional request whose answer the edge will not store for a
    reason of the object's own: streaming it whole would cost the object to send the
    window, and a client's conditional is the origin's to answer with a 304."""
    return forwardable(method, request_headers) and remember(status=status, reason=reason, now=0.0) is not None


def database_window(*, request_headers: Headers, length: int, etag: str | None,
                    last_modified: float | None) -> ByteRange | str:
    """The window a database read serves a Range request for an object not stored:
    a ByteRange (206), 'unsatisfiable' (416) or 'full' (200: no usable Range, several
    ranges, or an If-Range that names another representation)."""
    spec = parse_range(request_headers.get("range"))
    if spec is None or not if_range_allows(request_headers.get("if-range"), etag=etag, last_modified=last_modified):
        return "full"
    return resolve_range(spec, length)
