"""May a response be stored? One decision, with the reason, so stats can count it.

Pure. The rules are the contract's (section 2), each from RFC 9111 section 3;
the first rule that forbids storing names the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from mediaedge.headers import Headers
from mediaedge.policy.cachecontrol import parse_cache_control

# RFC 9111 3: "the request method is understood by the cache"; only these
# methods read media, and GET and HEAD share entries (contract section 2).
STORABLE_METHODS = frozenset({"GET", "HEAD"})
# 404 and 410 are kept briefly (--negative-ttl) so a missing file does not
# reach the origins on every request.
NEGATIVE_STATUSES = frozenset({404, 410})


@dataclass(frozen=True)
class Storability:
    """The decision: `reason` is 'ok' when storable, else the rule that forbade it."""

    storable: bool
    # 'ok', 'no-store', 'private', 'set-cookie', 'vary-star', 'authorization', 'method', 'status';
    # the engine adds 'deception' (mediaedge.policy.armour) for upstream responses
    reason: str
    negative: bool = False  # a 404/410 remembered for --negative-ttl, not a representation


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
def storability(*, method: str, status: int, request_headers: Headers, response_headers: Headers) -> Storability:
    """Whether the edge may store this response, and why not."""
    if method.upper() not in STORABLE_METHODS:
        return Storability(False, "method")
    negative = status in NEGATIVE_STATUSES
    if status != 200 and not negative:
        return Storability(False, "status")
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
