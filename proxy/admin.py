"""The admin plane: /healthz, /stats, /metrics, the dashboard and the publish webhook.

A small asyncio HTTP/1.1 server (h11 does the parsing) rather than a second
mitmproxy listener, because the webhook must refuse bodies over 1 MiB before
reading them, and mitmproxy reads a request body whole before any addon sees it.
Routing is a dict; each handler is a few lines that call stats, metrics, dashboard
or the invalidator.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11

from proxy.shutdown import close_server
from proxy.webhook import MAX_BODY, WebhookError

log = logging.getLogger("mediaedge.admin")

READ_TIMEOUT = 30.0


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

    @classmethod
    def json(cls, status: int, obj: object) -> AdminResponse:
        return cls(status, json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    @classmethod
    def text(cls, status: int, text: str) -> AdminResponse:
        return cls(status, text.encode(), "text/plain; charset=utf-8")


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]


class AdminServer:
    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        self.routes = routes
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()  # open connections, aborted by stop()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            await close_server(self._server, self._writers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(conn, reader, writer)
                if request is None:
                    return
                response = await self._dispatch(request)
                await _send(conn, writer, response, head_only=request.method == "HEAD")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.TimeoutError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> AdminRequest | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                await _send_error(conn, writer, e.error_status_hint, "malformed request")
                return None
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
                conn.receive_data(data)
                if not data and conn.their_state is h11.SEND_BODY:
                    return None
                continue
            if isinstance(event, h11.Request):
                request = event
                declared = _header(event.headers, b"content-length")
                if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
                    await _send(conn, writer, _too_large(), close=True)
                    return None
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    await _send(conn, writer, _too_large(), close=True)
                    return None
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
                return AdminRequest(
                    request.method.decode("ascii", "replace"),
                    request.target.decode("latin-1"),
                    headers,
                    bytes(body),
                )
            elif isinstance(event, (h11.ConnectionClosed,)) or event is h11.PAUSED:
                return None

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


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v.decode("latin-1").strip()
    return None


def _too_large() -> AdminResponse:
    return AdminResponse.json(413, {"error": f"body larger than {MAX_BODY} bytes"})


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: AdminResponse, *,
    close: bool = False, head_only: bool = False,
) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("cache-control", "no-store"),
    ]
    if close:
        headers.append(("connection", "close"))
    writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
    if response.body and not head_only:
        writer.write(conn.send(h11.Data(data=response.body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


async def _send_error(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str) -> None:
    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
        try:
            await _send(conn, writer, AdminResponse.json(status, {"error": message}), close=True)
        except h11.LocalProtocolError:
            pass
