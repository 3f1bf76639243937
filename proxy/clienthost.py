"""The Host the client sent, kept before mitmproxy's reverse mode rewrites it.

In reverse mode (`keep_host_header` off, which a TLS upstream's SNI needs) mitmproxy's
`HttpStream.state_wait_for_request_headers` (mitmproxy/proxy/layers/http/__init__.py, the
same code in 11 and 12) replaces the request's Host with the upstream's before the first
hook runs, and keeps no copy. RFC 9111 4.4 compares an unsafe request's absolute
`Location` / `Content-Location` with the *target URI's* host, the one the client named:
the public name an app configured with its base URL writes into its links. We wrap that
method so the Host as received is in `flow.metadata[CLIENT_HOST]` before any hook sees
the flow. A wrap around the original, not a copy; idempotent.
"""
from __future__ import annotations

from collections.abc import Generator
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.layers import http as http_layers

CLIENT_HOST = "mediaedge_client_host"
_INSTALLED = "_mediaedge_client_host"


def client_host(flow: http.HTTPFlow) -> str | None:
    """The Host field (or HTTP/2 :authority) the client sent, when the wrap saw it."""
    value = flow.metadata.get(CLIENT_HOST)
    return value if isinstance(value, str) else None


def install() -> None:
    """Wrap `HttpStream.state_wait_for_request_headers` once per process."""
    stream = http_layers.HttpStream
    if getattr(stream.state_wait_for_request_headers, _INSTALLED, False):
        return
    original = stream.state_wait_for_request_headers

    def state_wait_for_request_headers(self: Any, event: Any) -> Generator[Any, Any, None]:
        request = getattr(event, "request", None)
        host = request.host_header if isinstance(request, http.Request) else None
        inner = original(self, event)  # its first step makes `self.flow`, before any hook
        try:
            cmd = next(inner)
        except StopIteration:
            _keep(self, host)
            return
        _keep(self, host)
        while True:
            reply = yield cmd
            try:
                cmd = inner.send(reply)
            except StopIteration:
                return

    setattr(state_wait_for_request_headers, _INSTALLED, True)
    state_wait_for_request_headers.__doc__ = original.__doc__
    stream.state_wait_for_request_headers = state_wait_for_request_headers  # type: ignore[method-assign]


def _keep(stream: Any, host: str | None) -> None:
    flow = getattr(stream, "flow", None)
    if host and isinstance(flow, http.HTTPFlow):
        flow.metadata.setdefault(CLIENT_HOST, host)
