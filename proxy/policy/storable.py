"""May a response be stored? One decision, with the reason, so stats can count it.

Pure. The rules are the contract's (section 2), each from RFC 9111 section 3;
the first rule that forbids storing names the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from mediaedge.headers import Headers
from mediaedge.policy.cachecontrol import parse_cache_control
from mediaedge.policy.freshness import has_explicit_freshness

# RFC 9111 3: "the request method is understood by the cache"; only these
# methods read media, and GET and HEAD share entries (contract section 2).
STORABLE_METHODS = frozenset({"GET", "HEAD"})
# 404 and 410 are kept briefly (--negative-ttl) so a missing file does not
# reach the origins on every request.
NEGATIVE_STATUSES = frozenset({404, 410})
# RFC 9110 15.1: "Responses with status codes that are defined as heuristically
# cacheable (e.g., 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, and 501
# in this specification) can be reused by a cache with heuristic expiration unless
# otherwise indicated by the method definition or explicit cache controls". 206 is
# left out: a partial response from the upstream is never stored (we store objects
# whole; contract section 2).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Reasons that say nothing about the client who asked: a fetch refused for them may
# still be shared with the requests that joined it (coalescing), just not stored.
SHAREABLE_REASONS = frozenset({"ok", "status", "no-freshness"})


@dataclass(frozen=True)
class Storability:
    """The decision: `reason` is 'ok' when storable, else the rule that forbade it."""

    storable: bool
    # 'ok', 'no-store', 'private', 'set-cookie', 'vary-star', 'authorization', 'method', 'status',
    # 'no-freshness' (a heuristically cacheable status other than 200/404/410 with neither
    # explicit freshness nor Last-Modified);
    # the engine adds 'deception' (mediaedge.policy.armour) for upstream responses
    reason: str
    negative: bool = False  # a 404/410 remembered for --negative-ttl, not a representation

    @property
    def shareable(self) -> bool:
        """May requests that joined this fetch get the same answer (not client-specific)?"""
        return self.reason in SHAREABLE_REASONS


# RFC 9111 3: "A cache MUST NOT store a response to a request unless:
#  - the request method is understood by the cache;
#  - the response status code is final (see Section 15 of [HTTP]);
#  - ...
#  - the no-store cache directive is not present in the response (see Section 5.2.2.5);
#  - if the cache is shared: the private response directive is either not
#    present or allows a shared cache to store a modified response; see Section 5.2.2.7);
#  - if the cache is shared: the Authorization header field is not present in
#    the request (see Section 11.6.2 of [HTTP]) or a response directive is
#    present that explicitly allows shared caching (see Section 3.5); ..."
# RFC 9111 4.1: "A stored response with a Vary header field value containing a
# member "*" always fails to match."
# Set-Cookie: RFC 9111 7.3 leaves it to caches; like Varnish, a response that
# sets a cookie is forwarded but never shared with other clients.
# RFC 9111 3: "... the response status code is final" and the response contains
# "an explicit expiration time", or "a status code that is defined as heuristically
# cacheable", or "a public response directive" (...). Our rule (contract section 2):
# a heuristically cacheable status with explicit freshness, else heuristic freshness
# (Last-Modified), else --default-ttl for 200 and --negative-ttl for 404/410; any
# other final status only with explicit freshness. `explicit_only`: only with
# explicit freshness whatever the status (the upstream's 5xx after a fallback).
def storability(*, method: str, status: int, request_headers: Headers, response_headers: Headers,
                explicit_only: bool = False) -> Storability:
    """Whether the edge may store this response, and why not."""
    if method.upper() not in STORABLE_METHODS:
        return Storability(False, "method")
    explicit = has_explicit_freshness(response_headers)
    negative = status in NEGATIVE_STATUSES and not explicit
    if status < 200 or status == 206 or status == 304:
        return Storability(False, "status")
    if not explicit:
        if explicit_only or status not in HEURISTIC_STATUSES:
            return Storability(False, "status")
        if status not in (200, *NEGATIVE_STATUSES) and "last-modified" not in response_headers:
            return Storability(False, "no-freshness")
    cc = parse_cache_control(response_headers.get("Cache-Control"))
    cdn = parse_cache_control(response_headers.get("CDN-Cache-Control"))
    # Qualified forms (private="Set-Cookie") are treated like the plain ones:
    # storing a response minus some fields is not worth the risk for media.
    if "no-store" in cc or "no-store" in cdn:
        return Storability(False, "no-store", negative)
    if "private" in cc or "private" in cdn:
        return Storability(False, "private", negative)
    if "set-cookie" in response_headers:
        return Storability(False, "set-cookie", negative)
    if _vary_star(response_headers):
        return Storability(False, "vary-star", negative)
    if "authorization" in request_headers and not _allows_shared_caching(cc):
        return Storability(False, "authorization", negative)
    return Storability(True, "ok", negative)


# RFC 9111 3.5: "In this specification, the following response directives
# have such an effect: must-revalidate (Section 5.2.2.2), public (Section
# 5.2.2.9), and s-maxage (Section 5.2.2.10)." The contract names only public
# and s-maxage; must-revalidate alone does not make an authorised response shared.
def _allows_shared_caching(cc: dict[str, str | None]) -> bool:
    return "public" in cc or "s-maxage" in cc


# RFC 9110 12.5.5: Vary = #( "*" / field-name )
def _vary_star(headers: Headers) -> bool:
    return any(member.strip() == "*" for value in headers.get_all("Vary") for member in value.split(","))
