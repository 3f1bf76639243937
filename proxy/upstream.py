"""Moved to `mediaedge.origins.http` (the HTTP origin); kept so existing imports work."""
from mediaedge.origins.http import (
    FORWARDED_TO_UPSTREAM, MAX_FIELD, MAX_FIELDS_TOTAL, NEVER_FORWARDED, Upstream, UpstreamResponse, forwarding,
    no_cookie_jar, stateless_client, upstream_request_headers,
)

__all__ = [
    "FORWARDED_TO_UPSTREAM", "MAX_FIELD", "MAX_FIELDS_TOTAL", "NEVER_FORWARDED", "Upstream", "UpstreamResponse",
    "forwarding", "no_cookie_jar", "stateless_client", "upstream_request_headers",
]
