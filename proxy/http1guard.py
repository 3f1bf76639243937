"""Fixes to mitmproxy's HTTP/1 readers (11.0 and 12.x) and to h11 0.14, applied once per process.

`Http1Server.read_headers` and `Http1Client.read_headers`
(mitmproxy/proxy/layers/http/_http1.py, the same code in mitmproxy 11 and 12) and the
chunked-body reader they share with h11 have gaps that one peer can use against every
other client of the process:

* no size limit on a head (`# FIXME: protect against header size DoS`, on both the
  request and the response side): a head is buffered until its blank line arrives, so
  one client (or a broken or hostile app server, on a forwarded request) can make the
  proxy hold hundreds of MB. A request head over `MAX_REQUEST_HEAD` bytes is answered
  431 and closed; a response head over `MAX_RESPONSE_HEAD` bytes closes the upstream
  connection and the client gets 502. Varnish (`http_req_size` / `http_resp_size`,
  32 KiB) and nginx (`large_client_header_buffers`, `proxy_buffer_size`) do the same.
* a leading empty line (RFC 9112 section 2.2: a server SHOULD ignore at least one
  empty line before the request-line) makes h11's `maybe_extract_lines()` return
  `[]`, which mitmproxy takes for "need more bytes": the request already buffered is
  never parsed and the connection hangs. We drop such lines first.
* CVE-2025-43859 (request smuggling): h11 before 0.16 accepts chunk data followed by
  *any* two bytes instead of CRLF, so `5\\r\\nhelloXX0\\r\\n\\r\\n` is a valid body and a
  front end that reads it differently can be made to see a second request. mitmproxy
  11.0.2 (the last for Python 3.11) pins h11 0.14; h11 0.16 (mitmproxy 12) checks the
  CRLF. On an older h11 we make `ChunkedReader` check it the way 0.16 does. The patch is
  on h11's class, so it covers every chunked body the process reads: client requests and
  upstream responses in mitmproxy, the admin plane (h11) and httpx's (httpcore's)
  upstream fetches.
* a malformed request body (that footer, a bad chunk header) makes mitmproxy close the
  client connection *before* it sends its 400, so the client sees a bare close. We let
  the 400 go out first, then close, on both majors.
* a connection closed from inside its own handler could stay open (mitmproxy 12, seen
  with the response-head limit above): `ConnectionHandler.close_connection` cancels the
  connection's handler task, and `handle_connection` only closes the socket when that
  cancellation lands in its `reader.read()`. With more bytes already buffered the task
  goes on to `server_event(DataReceived)`, and if the `_server_event_lock` has a waiter
  there (mitmproxy 12's eager task factory starts the `error` hook task at once, and it
  queues for the lock) the cancellation lands in that `await` instead: the
  CancelledError leaves `handle_connection` past its `writer.close()`, and the socket
  stays open until the client connection ends. We close (and forget) the transport of
  any connection whose handler leaves that way, on both majors.
* the error answers mitmproxy writes itself (`make_error_response`: 400 on a head it
  cannot parse, 502 when a passed-through upstream is down) carry no Date; RFC 9110
  6.6.1 wants one on every response, so we add it.

All are wraps around the original methods, not copies of them, so the rest of the
parser (and mitmproxy's own error answers) stays mitmproxy's. The wraps touch h11's
`ReceiveBuffer` internals (`_data`, `_extract`) and `ChunkedReader._bytes_to_discard`:
h11 and mitmproxy are pinned per Python in pyproject.toml, and tests/test_hostile.py
and tests/test_http1guard.py fail if either changes underneath us.
"""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Generator
from typing import Any

import h11
from h11 import _readers as h11_readers
from mitmproxy.proxy import commands, events, server
from mitmproxy.proxy.layers.http import _base, _events, _http1

from mediaedge.respond import HTTP_DATES

MAX_REQUEST_HEAD = 64 * 1024
"""Largest request line plus header fields we read. Twice Varnish's default: media
requests carry cookies from the shop in front of them, and the upstream allow-list
(proxy/upstream.py) already caps any one field at 8 KiB."""

MAX_RESPONSE_HEAD = 64 * 1024
"""Largest status line plus header fields we read from the upstream on a forwarded
(non-media) request. The same bound as requests: an app's cookies and CSP headers fit
many times over."""

_BLANK_LINE = re.compile(rb"\n\r?\n")  # what h11 takes for the end of a head
_INSTALLED = "_mediaedge_guarded"
_CHUNK_FOOTER = b"\r\n"


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


def h11_checks_chunk_footer(version: str = h11.__version__) -> bool:  # type: ignore[attr-defined]
    """True for h11 0.16 and later, which refuse chunk data not followed by CRLF."""
    major, minor = (int(p) for p in re.findall(r"\d+", version)[:2])
    return (major, minor) >= (0, 16)


def footer_mismatch(pending: int, data: bytes | bytearray) -> bool:
    """True when `data`, the next bytes after a chunk's data, do not continue its CRLF.

    `pending` is h11 0.14's `_bytes_to_discard`: how many bytes of the CRLF are still to
    come (2 right after the data, 1 after a lone CR). Fewer bytes than that may have
    arrived yet; only those are compared."""
    expected = _CHUNK_FOOTER[len(_CHUNK_FOOTER) - pending:]
    got = bytes(data[:pending])
    return got != expected[:len(got)]


def install() -> None:
    """Install every wrap; idempotent, so every addon instance may call it."""
    _install_dated_errors()
    _guard_request_heads()
    _guard_response_heads()
    _answer_bad_request_bodies()
    _close_abandoned_transports()
    if not h11_checks_chunk_footer():
        _strict_chunk_footer()


def _guard_request_heads() -> None:
    """431 for request heads over the limit; leading empty lines skipped."""
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

    _mark(read_headers, original)
    server.read_headers = read_headers  # type: ignore[method-assign]


def _guard_response_heads() -> None:
    """Close the upstream and fail the flow (502 to the client) once a response head
    passes the limit without ending."""
    client = _http1.Http1Client
    if getattr(client.read_headers, _INSTALLED, False):
        return
    original = client.read_headers

    def read_headers(self: Any, event: events.ConnectionEvent) -> Generator[Any, Any, None]:
        if (isinstance(event, events.DataReceived) and self.request is not None
                and self.stream_id is not None and head_too_large(self.buf._data, MAX_RESPONSE_HEAD)):
            message = f"upstream response head over {MAX_RESPONSE_HEAD} bytes"
            yield commands.Log(f"{_peer(self.conn)}: {message}, connection closed")
            yield commands.CloseConnection(self.conn)
            # `code` is the class default: an int (502) in mitmproxy 11, an ErrorCode in 12.
            error = _events.ResponseProtocolError
            yield _base.ReceiveHttp(error(self.stream_id, message, error.code))
            self.state = self.done
            return
        yield from original(self, event)

    _mark(read_headers, original)
    client.read_headers = read_headers  # type: ignore[method-assign]


def _answer_bad_request_bodies() -> None:
    """Send the 400 for a malformed request body before the close, not after it.

    mitmproxy's `read_body` yields `CloseConnection(client)` and then the protocol error,
    and its HTTP stream sends nothing for a request-side error (only response-side errors
    become an error page), so the client sees a bare close and cannot tell a refused
    request from a crash. We hold that close until we know whether a request error
    follows, send the 400 if no response has started, then close; the connection is
    then done (its closing event must not answer a second time)."""
    server = _http1.Http1Server
    if getattr(server.read_body, _INSTALLED, False):
        return
    original = server.read_body

    def read_body(self: Any, event: events.Event) -> Generator[Any, Any, None]:
        inner = original(self, event)
        held: commands.CloseConnection | None = None
        reply: Any = None
        while True:
            try:
                cmd = inner.send(reply)
            except StopIteration:
                break
            reply = None
            if type(cmd) is commands.CloseConnection and cmd.connection is self.conn and held is None:
                held = cmd
                continue
            if held is not None and isinstance(cmd, _base.ReceiveHttp) \
                    and isinstance(cmd.event, _events.RequestProtocolError):
                if self.response is None:
                    yield commands.SendData(self.conn, _http1.make_error_response(400, cmd.event.message))
                yield held
                held = None
                reply = yield cmd
                self.state = self.done
                continue
            if held is not None:
                yield held
                held = None
            reply = yield cmd
        if held is not None:
            yield held

    _mark(read_body, original)
    server.read_body = read_body  # type: ignore[method-assign]


def _close_abandoned_transports() -> None:
    """Close a connection's socket when its handler ends without closing it.

    mitmproxy's `handle_connection` closes the writer and drops the transport on its
    normal way out; an exception (a cancellation delivered while it awaits
    `server_event`, see the module docstring) skips both. We do them in that case."""
    handler = server.ConnectionHandler
    if getattr(handler.handle_connection, _INSTALLED, False):
        return
    original = handler.handle_connection

    async def handle_connection(self: Any, connection: Any) -> None:
        try:
            await original(self, connection)
        finally:
            io = self.transports.get(connection)
            if io is not None and io.handler is asyncio.current_task():
                self.transports.pop(connection, None)
                if io.writer is not None:
                    try:
                        io.writer.close()
                    except OSError:
                        pass

    _mark(handle_connection, original)
    handler.handle_connection = handle_connection  # type: ignore[method-assign]


def _strict_chunk_footer() -> None:
    """h11 < 0.16: refuse chunk data not followed by exactly CRLF (CVE-2025-43859),
    raising the error h11 0.16 raises. Checked before the original discards the bytes."""
    reader = h11_readers.ChunkedReader
    if getattr(reader.__call__, _INSTALLED, False):
        return
    original = reader.__call__

    def __call__(self: Any, buf: Any) -> Any:
        pending = self._bytes_to_discard
        if pending and not self._reading_trailer and footer_mismatch(pending, buf._data):
            raise h11.LocalProtocolError(
                f"malformed chunk footer: {bytes(buf._data[:pending])!r} "
                f"(expected {_CHUNK_FOOTER[len(_CHUNK_FOOTER) - pending:]!r})")
        return original(self, buf)

    _mark(__call__, original)
    reader.__call__ = __call__  # type: ignore[method-assign]


def _mark(wrapper: Callable[..., Any], original: Callable[..., Any]) -> None:
    setattr(wrapper, _INSTALLED, True)
    wrapper.__doc__ = original.__doc__


def _peer(conn: Any) -> str:
    try:
        host, port = conn.peername[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError):
        return "peer"
