"""The admin plane: /healthz, /stats, /metrics, the dashboard and the publish webhook.

A small asyncio HTTP/1.1 server (h11 does the parsing) rather than a second
mitmproxy listener, because the webhook must refuse bodies over 1 MiB before
reading them, and mitmproxy reads a request body whole before any addon sees it.
Routing is a dict; each handler is a few lines that call stats, metrics, dashboard
or the invalidator.

It shares the data plane's process, so nothing a client does here may cost
unbounded memory or hold a connection forever (`Limits`):

- at most `max_connections` connections at once; one more is answered `503`
  at once, before its request is read;
- request bodies are buffered whole (the webhook's MAC covers all of it), so
  their bytes in flight are bounded: a request reserves its declared length
  (1 MiB for a chunked one) before its body is read, `503` when the budget is
  spent;
- a route may check the request head first (`head_checks`): the webhook
  refuses a missing, malformed or expired signature before reading any body;
- a request head must arrive within `head_timeout` and its body within
  `body_timeout`, each a deadline for the whole, not a per-read idle timeout
  (a client sending one byte every few seconds would never trip those);
- a refused request's connection is closed after lingering briefly (reading
  and discarding what the client is still sending, nginx's lingering close),
  so the client reads our answer rather than a reset.
"""
from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import h11

from mediaedge.adminauth import CHALLENGE, authorized
from mediaedge.errors import WebhookError
from mediaedge.shutdown import close_server
from mediaedge.webhook import MAX_BODY

log = logging.getLogger("mediaedge.admin")

_T = TypeVar("_T")

READ_SIZE = 65536
MAX_HEAD = 64 * 1024  # bytes of request head h11 buffers before refusing it


@dataclass(frozen=True)
class Limits:
    """What one admin plane grants its clients, all at once."""

    max_connections: int = 64
    max_body_bytes_in_flight: int = 8 << 20
    head_timeout: float = 10.0  # seconds for a whole request head (and a keep-alive's idle wait)
    body_timeout: float = 30.0  # seconds for a whole request body
    linger: float = 1.0  # seconds a refused connection is drained before it is closed


@dataclass(frozen=True)
class AdminRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class AdminResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    retry_after: int | None = None
    headers: tuple[tuple[str, str], ...] = ()  # extra fields, e.g. WWW-Authenticate on a 401

    @classmethod
    def json(cls, status: int, obj: object) -> AdminResponse:
        return cls(status, json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    @classmethod
    def text(cls, status: int, text: str) -> AdminResponse:
        return cls(status, text.encode(), "text/plain; charset=utf-8")


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]
# Runs on a request's head (lower-case header names) before its body is read; raise
# WebhookError to refuse the request.
HeadCheck = Callable[[dict[str, str]], None]


class _Refused(Exception):
    """The request ends here: answer `response` and close the connection."""

    def __init__(self, response: AdminResponse) -> None:
        self.response = response


def body_reservation(headers: dict[str, str]) -> int:
    """Bytes to reserve for a request's body before reading it: its declared length,
    the 1 MiB cap for a chunked one, 0 for none (h11 refuses a bad Content-Length)."""
    declared = headers.get("content-length", "").strip()
    if declared.isdigit():
        return min(int(declared), MAX_BODY + 1)
    return MAX_BODY + 1 if "chunked" in headers.get("transfer-encoding", "").lower() else 0


def token_guard(token: str | None, handler: Handler, *, query_ok: bool = False) -> Handler:
    """`handler` behind --admin-token (mediaedge.adminauth): 401 with a Bearer challenge.
    One spelling for the one-process admin plane and the --workers supervisor's."""
    async def guarded(req: AdminRequest) -> AdminResponse:
        if not authorized(token, req.headers, req.path, query_ok=query_ok):
            where = "Authorization: Bearer TOKEN" + (" or ?token=TOKEN" if query_ok else "")
            refusal = AdminResponse.json(401, {"error": f"admin token required ({where}; --admin-token)"})
            return AdminResponse(401, refusal.body, refusal.content_type, headers=(("www-authenticate", CHALLENGE),))
        return await handler(req)
    return guarded


def busy(what: str) -> AdminResponse:
    """The refusal past a bound: 503 at once, and when to come back (the bounds free up fast)."""
    response = AdminResponse.json(503, {"error": f"admin plane busy: {what}; retry shortly"})
    return AdminResponse(response.status, response.body, response.content_type, retry_after=1)


class AdminServer:
    def __init__(self, routes: dict[tuple[str, str], Handler], *,
                 head_checks: dict[tuple[str, str], HeadCheck] | None = None,
                 limits: Limits = Limits()) -> None:
        self.routes = routes
        self.head_checks = head_checks or {}
        self.limits = limits
        self._server: asyncio.base_events.Server | None = None
        self.port = 0
        self.connections = 0  # open, counted against limits.max_connections
        self.body_bytes = 0  # reserved by requests whose bodies are being read or handled
        self._writers: set[asyncio.StreamWriter] = set()  # admitted connections, closed by stop()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    def admit(self) -> bool:
        """Count a new connection in, or say it is one too many (the caller refuses it)."""
        if self.connections >= self.limits.max_connections:
            return False
        self.connections += 1
        return True

    async def stop(self) -> None:
        """Stop listening and drop open connections: from Python 3.12 on, `wait_closed`
        waits for them, and an idle keep-alive one would hold a stop for its head deadline."""
        if self._server is not None:
            await close_server(self._server, self._writers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, admitted: bool) -> None:
        if not admitted:
            # Answered at once, without reading a byte (reading costs memory, and there
            # may be any number of these): no lingering either. A client that is still
            # sending may see a reset, but Linux keeps the answer readable for it.
            try:
                writer.write(_raw_response(busy(f"{self.limits.max_connections} connections open, the limit")))
                await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()
            return
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._writers.add(writer)
        try:
            while True:
                reserved = 0
                try:
                    request, reserved = await self._read_request(conn, reader)
                    if request is None:
                        return
                    response = await self._dispatch(request)
                finally:
                    self.body_bytes -= reserved
                await _send(conn, writer, response, head_only=request.method == "HEAD")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except _Refused as e:
            await self._refuse(reader, writer, conn, e.response)
        except (h11.ProtocolError, OSError):
            return
        finally:
            self.connections -= 1
            self._writers.discard(writer)
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[AdminRequest | None, int]:
        """The next request and the body bytes reserved for it (the caller releases them),
        or (None, 0) when the client closed the connection between requests."""
        try:
            head = await _within(self.limits.head_timeout, _read_head(conn, reader),
                                 f"request head not received within {self.limits.head_timeout:g} s")
        except _Refused:
            if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                return None, 0  # an idle keep-alive connection: closed without a word, as nginx does
            raise
        if head is None:
            return None, 0
        method = head.method.decode("ascii", "replace")
        target = head.target.decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        need = body_reservation(headers)
        if need > MAX_BODY:
            if "content-length" in headers:
                raise _Refused(_too_large())
            need = MAX_BODY  # chunked: refused with 413 once it passes the cap
        check = self.head_checks.get((method, target.split("?", 1)[0]))
        if check is not None:
            try:
                check(headers)
            except WebhookError as e:
                raise _Refused(AdminResponse(e.status, e.body())) from None
        if self.body_bytes + need > self.limits.max_body_bytes_in_flight:
            raise _Refused(busy(f"request bodies in flight would pass {self.limits.max_body_bytes_in_flight} bytes"))
        self.body_bytes += need
        try:
            body = await _within(self.limits.body_timeout, _read_body(conn, reader),
                                 f"request body not received within {self.limits.body_timeout:g} s")
        except BaseException:
            self.body_bytes -= need
            raise
        return AdminRequest(method, target, headers, body), need

    async def _dispatch(self, request: AdminRequest) -> AdminResponse:
        path = request.path.split("?", 1)[0]
        method = "GET" if request.method == "HEAD" else request.method
        handler = self.routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in self.routes):
                return AdminResponse.json(405, {"error": f"method {request.method} not allowed on {path}"})
            return AdminResponse.json(404, {"error": f"no such admin path {path}"})
        try:
            return await handler(request)
        except WebhookError as e:
            return AdminResponse(e.status, e.body())
        except Exception as e:  # noqa: BLE001 - the admin plane answers, never crashes
            log.exception("admin %s %s failed", request.method, path)
            return AdminResponse.json(500, {"error": f"{type(e).__name__}: {e}".splitlines()[0]})

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      conn: h11.Connection | None, response: AdminResponse) -> None:
        """Answer `response` with `Connection: close`, then linger: read and drop what the
        client still sends (up to `limits.linger` s) so it reads the answer, not a reset."""
        try:
            try:
                if conn is None or conn.our_state is not h11.SEND_RESPONSE:
                    raise h11.LocalProtocolError("no request to answer")
                await _send(conn, writer, response, close=True)
            except h11.LocalProtocolError:
                writer.write(_raw_response(response))
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            await _within(self.limits.linger, _drain(reader), "linger")
        except (_Refused, OSError, h11.ProtocolError):  # OSError: the client reset or went away
            pass


class _Protocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, with the admin plane's bounds applied on connect.

    The transport reads 256 KiB per recv by default, whatever the reader's limit;
    64 KiB here keeps a connection's read-ahead at most 3 x 64 KiB. A connection
    past `max_connections` has its reading paused before the first recv, so a
    flood of them costs no buffers.
    """

    def __init__(self, server: AdminServer) -> None:
        self._admitted = False
        super().__init__(asyncio.StreamReader(limit=READ_SIZE),
                         lambda r, w: server._serve(r, w, self._admitted))
        self._admin = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if hasattr(transport, "max_size"):
            transport.max_size = READ_SIZE  # type: ignore[attr-defined]
        self._admitted = self._admin.admit()
        if not self._admitted:
            transport.pause_reading()  # type: ignore[attr-defined]
        super().connection_made(transport)


async def _within(seconds: float, work: Awaitable[_T], what: str) -> _T:
    """`work` under one deadline for the whole of it; past it the request is refused with 408."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise _Refused(AdminResponse.json(408, {"error": what})) from None


async def _drain(reader: asyncio.StreamReader) -> None:
    while await reader.read(READ_SIZE):
        pass


async def _read_head(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    """The next request's head; None when the client closed cleanly between requests."""
    while True:
        event = _next_event(conn)
        if event is h11.NEED_DATA:
            data = await reader.read(READ_SIZE)
            if not data and conn.their_state is h11.IDLE:
                return None
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed, PAUSED


async def _read_body(conn: h11.Connection, reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        event = _next_event(conn)
        if event is h11.NEED_DATA:
            data = await reader.read(READ_SIZE)
            conn.receive_data(data)
            if not data and conn.their_state is h11.SEND_BODY:
                raise ConnectionError("client closed the connection inside a request body")
            continue
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _Refused(_too_large())
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            raise ConnectionError("client closed the connection inside a request body")


def _next_event(conn: h11.Connection) -> object:
    try:
        return conn.next_event()
    except h11.RemoteProtocolError as e:
        raise _Refused(AdminResponse.json(e.error_status_hint, {"error": "malformed request"})) from None


def _too_large() -> AdminResponse:
    return AdminResponse.json(413, {"error": f"body larger than {MAX_BODY} bytes"})


def _response_headers(response: AdminResponse, *, close: bool) -> list[tuple[str, str]]:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("cache-control", "no-store"),
    ]
    if response.retry_after is not None:
        headers.append(("retry-after", str(response.retry_after)))
    headers.extend(response.headers)
    if close:
        headers.append(("connection", "close"))
    return headers


def _raw_response(response: AdminResponse) -> bytes:
    """A whole closing response, for when there is no parsed request for h11 to answer."""
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Error"
    head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in _response_headers(response, close=True)) + "\r\n"
    return head.encode("latin-1") + response.body



def _bytes_of(conn: h11.Connection, event: h11.Event) -> bytes:
    """What h11 puts on the wire for `event` (None only for ConnectionClosed, never sent here)."""
    data = conn.send(event)
    assert data is not None
    return data


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: AdminResponse, *,
    close: bool = False, head_only: bool = False,
) -> None:
    headers = _response_headers(response, close=close)
    writer.write(_bytes_of(conn, h11.Response(status_code=response.status, headers=headers)))
    if response.body and not head_only:
        writer.write(_bytes_of(conn, h11.Data(data=response.body)))
    writer.write(_bytes_of(conn, h11.EndOfMessage()))
    await writer.drain()
