"""Fixes to mitmproxy 11's HTTP/1 server side, applied once per process.

(The third, `make_error_response` below: the error answers mitmproxy writes itself —
400 on a head it cannot parse, 502 when a passed-through upstream is down — carry
no Date; RFC 9110 6.6.1 wants one on every response, so we add it.)

`Http1Server.read_headers` (mitmproxy/proxy/layers/http/_http1.py) has two gaps that
a client can use against every other client of the process:

* no size limit (`# FIXME: protect against header size DoS`): a request head is
  buffered until its blank line arrives, so one connection can make the proxy hold
  hundreds of MB. We answer 431 and close once the buffer holds more than
  `MAX_REQUEST_HEAD` bytes without a complete head; Varnish (`http_req_size`, 32 KiB)
  and nginx (`large_client_header_buffers`, 4 x 8 KiB) do the same.
* a leading empty line (RFC 9112 section 2.2: a server SHOULD ignore at least one
  empty line before the request-line) makes h11's `maybe_extract_lines()` return
  `[]`, which mitmproxy takes for "need more bytes": the request already buffered is
  never parsed and the connection hangs. We drop such lines first.

Both are wraps around the original method, not copies of it, so the rest of the
parser (and mitmproxy's own error answers) stays mitmproxy's. The wrap touches h11's
`ReceiveBuffer` internals (`_data`, `_extract`): h11 and mitmproxy are pinned in
pyproject.toml, and tests/test_hostile.py fails if either changes underneath us.
"""
from __future__ import annotations

import re
import time
from collections.abc import Generator
from typing import Any

from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1

from proxy.respond import HTTP_DATES

MAX_REQUEST_HEAD = 64 * 1024
"""Largest request line plus header fields we read. Twice Varnish's default: media
requests carry cookies from the shop in front of them, and the upstream allow-list
(proxy/upstream.py) already caps any one field at 8 KiB."""

_BLANK_LINE = re.compile(rb"\n\r?\n")  # what h11 takes for the end of a head
_INSTALLED = "_mediaedge_guarded"


def head_too_large(data: bytes | bytearray, limit: int = MAX_REQUEST_HEAD) -> bool:
    """True when `data` holds more than `limit` bytes and no head ends within them."""
    return len(data) > limit and _BLANK_LINE.search(data, 0, limit + 3) is None


def leading_empty_lines(data: bytes | bytearray) -> int:
    """How many bytes of empty lines (CRLF or bare LF) start `data`."""
    n = 0
    while True:
        if data[n:n + 2] == b"\r\n":
            n += 2
        elif data[n:n + 1] == b"\n":
            n += 1
        else:
            return n


def with_date(response: bytes, date: bytes) -> bytes:
    """An assembled HTTP/1 response head with `Date: date` added after its status line."""
    line_end = response.find(b"\r\n")
    if line_end < 0 or b"\r\ndate:" in response[:response.find(b"\r\n\r\n")].lower():
        return response
    return response[:line_end + 2] + b"Date: " + date + b"\r\n" + response[line_end + 2:]


def _install_dated_errors() -> None:
    original = _http1.make_error_response
    if getattr(original, _INSTALLED, False):
        return

    def make_error_response(status_code: int, message: str = "") -> bytes:
        return with_date(original(status_code, message), HTTP_DATES.wire(time.time()))

    setattr(make_error_response, _INSTALLED, True)
    _http1.make_error_response = make_error_response  # type: ignore[assignment]


def install() -> None:
    """Wrap `Http1Server.read_headers` and `make_error_response`; idempotent, so every
    addon instance may call it."""
    _install_dated_errors()
    server = _http1.Http1Server
    if getattr(server.read_headers, _INSTALLED, False):
        return
    original = server.read_headers

    def read_headers(self: Any, event: events.ConnectionEvent) -> Generator[Any, Any, None]:
        if isinstance(event, events.DataReceived):
            data = self.buf._data
            if data[:1] in (b"\r", b"\n"):
                skip = leading_empty_lines(data)
                if skip:
                    self.buf._extract(skip)
                if not self.buf:
                    return
            if len(data) > MAX_REQUEST_HEAD and head_too_large(data):
                yield commands.Log(
                    f"{_peer(self.conn)}: request head over {MAX_REQUEST_HEAD} bytes, answered 431")
                yield commands.SendData(self.conn, _http1.make_error_response(
                    431, f"Request header fields too large (limit {MAX_REQUEST_HEAD} bytes)"))
                yield commands.CloseConnection(self.conn)
                self.state = self.done
                return
        yield from original(self, event)

    setattr(read_headers, _INSTALLED, True)
    read_headers.__doc__ = original.__doc__
    server.read_headers = read_headers  # type: ignore[method-assign]


def _peer(conn: Any) -> str:
    try:
        host, port = conn.peername[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError):
        return "client"
