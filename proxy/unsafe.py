"""Invalidation on unsafe methods (RFC 9111 4.4): a core service the mitmproxy shell calls.

RFC 9110 9.2.1: the safe methods are GET, HEAD, OPTIONS and TRACE. RFC 9111 4.4: "A
cache MUST invalidate the target URI ... when it receives a non-error status code in
response to an unsafe request method (including methods whose safety is unknown)":
every other method (PROPFIND, M-SEARCH, FOO ...) invalidates its media target, and
the same-origin Location / Content-Location of the response too. PURGE is answered by
the edge (`mediaedge.purge`), never forwarded, so it never reaches here.
"""
from __future__ import annotations

from collections.abc import Callable

from mediaedge.errors import TargetError
from mediaedge.invalidation import Invalidator
from mediaedge.policy.target import is_media, normalize_target
from mediaedge.webhook import PurgeEvent

SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def invalidates(method: str, target: str | None, prefixes: tuple[str, ...]) -> bool:
    """Whether a forwarded request, if it succeeds, invalidates its (normalised) target."""
    return target is not None and method not in SAFE and is_media(target, prefixes)


def same_origin_locations(field: Callable[[str], str | None], hosts: tuple[str, ...],
                          prefixes: tuple[str, ...]) -> list[str]:
    """The media targets named by a response's Location and Content-Location (`field`
    reads a response field) whose host is one of `hosts`, the target URI's (RFC 9111 4.4):
    the Host the client sent, or the one the app was sent (reverse mode: the upstream's)
    and echoes in the links it builds. Others are left alone."""
    same = {h.lower() for h in hosts if h}
    out = []
    for name in ("location", "content-location"):
        value = field(name)
        if not value:
            continue
        if value.startswith(("http://", "https://")):
            parts = value.split("/", 3)
            if parts[2].lower() not in same:
                continue
            value = "/" + (parts[3] if len(parts) > 3 else "")  # its path and query
        try:
            t = normalize_target(value)
        except TargetError:
            continue
        if is_media(t, prefixes):
            out.append(t)
    return out


async def invalidate_after(invalidator: Invalidator, target: str, status: int, field: Callable[[str], str | None],
                           hosts: tuple[str, ...], prefixes: tuple[str, ...]) -> list[str]:
    """After the origin answered an unsafe request for `target`: a non-error status
    (2xx, 3xx) invalidates the target and its same-origin locations. Returns them."""
    if not 200 <= status < 400:
        return []
    targets = [target, *same_origin_locations(field, hosts, prefixes)]
    for t in targets:
        await invalidator.apply(PurgeEvent(path=t))
    return targets
