"""Who may read the admin plane: the `--admin-token` bearer check, as pure functions.

The token guards what the admin plane tells about the node (`/stats`, `/metrics`,
`/readyz`, the dashboard). `/healthz` stays open, since load balancers and
orchestrators probe it without credentials and it tells nothing; `/publish`
is guarded by its own HMAC, which a sender already has.

A client sends `Authorization: Bearer TOKEN` (RFC 6750 2.1). The dashboard page
also takes `?token=TOKEN` (RFC 6750 2.3), because a browser cannot add a header
to a typed-in address; the page keeps the token in its own links so its refresh
carries it. The comparison is `hmac.compare_digest`, whose time does not depend on
where the first differing byte is, so the token cannot be guessed byte by byte.
"""
from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

# The challenge of a refusal (RFC 6750 3): says which scheme the client should use.
CHALLENGE = 'Bearer realm="mediaedge admin"'


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` field (header names lower case)."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def query_token(target: str) -> str | None:
    """The `token` parameter of a request target's query, if there is exactly one."""
    values = parse_qs(urlsplit(target).query, keep_blank_values=True).get("token", [])
    return values[0] if len(values) == 1 else None


def authorized(expected: str | None, headers: Mapping[str, str], target: str, *, query_ok: bool) -> bool:
    """Whether a request may read a guarded route: always when no token is configured,
    else when it presents the token (in the query only where `query_ok`)."""
    if not expected:
        return True
    offered = bearer_token(headers)
    if offered is None and query_ok:
        offered = query_token(target)
    if offered is None:
        return False
    return hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))
