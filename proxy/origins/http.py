"""The HTTP origin: fetching media from the app server (the upstream) ourselves, not
through mitmproxy. Its errors are translated here, once: `fetch` returns an answer or a
`Failed`, and a body cut mid-way raises `UpstreamError`, never an httpx exception.

Why not let mitmproxy forward media misses: a refused or timed-out upstream makes
mitmproxy fire `error` and send the client a 502 before an addon can fall back to
the database (seen with mitmproxy 11 and 12). Fetching with our own client lets the engine decide the
fallback, coalesce concurrent misses into one fetch, and fetch the whole object for
a Range request. Non-media requests still go through mitmproxy untouched.
"""
from __future__ import annotations

import http.cookiejar
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from mediaedge.headers import Headers
from mediaedge.errors import UpstreamError
from mediaedge.origins import Failed
from mediaedge.policy.hop import HOP_BY_HOP, connection_options, end_to_end

log = logging.getLogger("mediaedge.upstream")

# A media fetch is shared by every client that joins it and its answer is stored
# for everyone, so only request fields that legitimately select a representation
# go upstream (the usual Vary candidates), plus the credentials that make a request
# private (never coalesced; stored only when the answer says public/s-maxage).
# Everything else — X-Forwarded-Host, Forwarded, X-Original-URL, X-Rewrite-URL, … —
# is an unkeyed input that could poison what other clients get.
FORWARDED_TO_UPSTREAM = frozenset({
    "accept", "accept-encoding", "accept-language", "user-agent", "authorization", "cookie",
    "save-data", "dpr", "viewport-width", "width", "sec-ch-dpr", "sec-ch-width", "sec-ch-viewport-width",
})


# Never sent on a media fetch, even with `--forward-header '*'`: the fetch is of the
# whole object for everyone (no Range, no conditionals: a 206 or 304 could not be
# stored), and the framing and Host fields are the client's own connection's.
NEVER_FORWARDED = frozenset({
    "host", "content-length", "expect", "range", "if-range", "if-match", "if-none-match",
    "if-modified-since", "if-unmodified-since",
})

MAX_FIELD = 8 * 1024  # bytes per forwarded field; a longer one is dropped, not sent
MAX_FIELDS_TOTAL = 32 * 1024


def forwarding(extra: tuple[str, ...] = ()) -> frozenset[str] | None:
    """The request fields a media fetch sends: the built-in allow-list plus `--forward-header`
    names; None (`*`) means every end-to-end field but NEVER_FORWARDED."""
    if "*" in extra:
        return None
    return FORWARDED_TO_UPSTREAM | {name.lower() for name in extra}


def upstream_request_headers(request_headers: Headers,
                             allowed: frozenset[str] | None = FORWARDED_TO_UPSTREAM) -> list[tuple[bytes, bytes]]:
    """The client's fields we send on a media fetch: allowed (`forwarding()`), well-formed only.

    A value with control characters (CR, LF, NUL; obs-fold) is dropped rather than
    sent: it would make our own request fail and turn into a database fallback for
    everyone. obs-text (bytes >= 0x80) is passed as latin-1, as it came.
    """
    out: list[tuple[bytes, bytes]] = []
    total = 0
    if allowed is None:
        # RFC 9110 7.6.1: the client's hop-by-hop fields, and those its Connection names, stay here.
        skip = NEVER_FORWARDED | HOP_BY_HOP | connection_options(request_headers)
    for name, value in request_headers:
        lname = name.lower()
        if (lname in skip if allowed is None else lname not in allowed) or len(value) > MAX_FIELD:
            continue
        total += len(value)
        if total > MAX_FIELDS_TOTAL:
            break
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
            continue
        try:
            out.append((lname.encode("ascii"), value.strip().encode("latin-1")))
        except UnicodeEncodeError:
            continue
    return out


@dataclass
class UpstreamResponse:
    status: int
    headers: Headers
    _response: httpx.Response

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body exactly as sent (no content decoding): we store what we forward. A read
        error (reset, timeout mid-body) raises `UpstreamError`."""
        try:
            async for chunk in self._response.aiter_raw(64 * 1024):
                yield chunk
        except Exception as e:  # noqa: BLE001 - the boundary: whatever httpx raises mid-body becomes UpstreamError
            raise _map_error(e) from e

    async def aclose(self) -> None:
        await self._response.aclose()

    async def discard(self) -> None:
        """Drop an unused answer (a 404/5xx before the database fallback). A small body
        is read to its end first so the keep-alive connection can be reused."""
        length = self._response.headers.get("content-length", "")
        try:
            if length.isdigit() and int(length) <= 64 * 1024:
                await self._response.aread()
        except (httpx.HTTPError, OSError):
            pass
        await self._response.aclose()


def _map_error(e: Exception) -> UpstreamError:
    if isinstance(e, httpx.TimeoutException):
        return UpstreamError("timeout", f"upstream timed out ({type(e).__name__})")
    if isinstance(e, httpx.ConnectError):
        return UpstreamError("refused", f"upstream refused the connection: {e}")
    return UpstreamError("error", f"upstream failed: {type(e).__name__}: {e}")


def no_cookie_jar() -> http.cookiejar.CookieJar:
    """A cookie jar that accepts no cookie from any domain.

    One httpx client serves every client's fetches. With its default jar it keeps each
    Set-Cookie the app answers and sends it on later requests to that host, whoever
    asked: a victim's session reaches the app on an attacker's fetch. Given to httpx as
    a plain CookieJar it is used as is; wrapped in `httpx.Cookies` it would be copied
    into a new jar with the default (accepting) policy (measured with httpx 0.28).
    """
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def stateless_client(*, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An httpx client that sends only the fields it is given and keeps nothing between
    requests (no cookies, no default Accept / Accept-Encoding / User-Agent / Connection,
    no proxy or netrc from the environment).

    httpx adds `Accept: */*`, `Accept-Encoding: gzip, deflate, br, zstd` and
    `User-Agent: python-httpx/...` to every request unless they are removed from
    `client.headers`; the app would then pick a representation (a compressed one, one
    for "any" Accept) the client never asked for, and store it for everyone.
    """
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
        follow_redirects=False,
        trust_env=False,
        cookies=no_cookie_jar(),
        transport=transport,  # None: httpx's own; tests pass an httpx.MockTransport (no sockets)
    )
    for name in list(client.headers.keys()):
        del client.headers[name]
    return client


class Upstream:
    def __init__(self, base_url: str, *, timeout: float, forward: tuple[str, ...] = (),
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = stateless_client(timeout=timeout, transport=transport)
        self._allowed = forwarding(forward)  # parsed once (--forward-header)

    async def get(self, target: str, request_headers: Headers,
                  conditional: tuple[tuple[str, str], ...] = ()) -> UpstreamResponse:
        """GET the whole object (no Range; no conditionals of the client's) with the client's
        other headers. `conditional`: the edge's own validators when it revalidates an
        expired entry (mediaedge.policy.revalidate)."""
        try:
            fields = upstream_request_headers(request_headers, self._allowed)
            fields += [(k.lower().encode("ascii"), v.encode("latin-1")) for k, v in conditional]
            request = self._client.build_request("GET", self.base_url + target, headers=fields)
            response = await self._client.send(request, stream=True)
        except (httpx.HTTPError, OSError, ValueError) as e:
            raise _map_error(e) from e
        # RFC 9110 7.6.1: hop-by-hop fields and those named in Connection are neither
        # stored nor passed on; every other field is kept, in order, repeats included.
        return UpstreamResponse(response.status_code, Headers(end_to_end(response.headers.multi_items())), response)

    async def fetch(self, target: str, request_headers: Headers,
                    validators: tuple[tuple[str, str], ...] = ()) -> UpstreamResponse | Failed:
        """The origin interface: the upstream's answer (any status, body unread), or why
        there is none (refused, timeout, error) with the status a client would get."""
        try:
            return await self.get(target, request_headers, validators)
        except UpstreamError as e:
            return Failed(e.kind, 504 if e.kind == "timeout" else 502, str(e))

    async def aclose(self) -> None:
        await self._client.aclose()

