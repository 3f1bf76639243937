"""A loopback HTTP server inside the proxy process that streams large bodies.

Why: mitmproxy sends a response made by an addon as one in-memory blob and only
streams bodies that come from a server (docs/large-media.md). So for a large hit, a fill in
progress or a database blob, the addon registers a *job* here and points the flow
at `http://127.0.0.1:<port>/<token>`; mitmproxy then streams our bytes to the
client with `flow.response.stream = True`. Hits go out with `sendfile` (zero copy);
fills are tailed as they grow. Tokens are random and single-use, and the server
binds loopback only.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from mediaedge.headers import Headers
from mediaedge.shutdown import close_server

log = logging.getLogger("mediaedge.stream")

MAX_HEAD = 64 * 1024
PATH_PREFIX = "/__mediaedge/"


@dataclass
class FileBody:
    """A byte window of an open file, sent with sendfile. The job owns the file."""

    file: BinaryIO
    offset: int
    count: int


@dataclass(eq=False)
class Job:
    status: int
    headers: Headers
    body: FileBody | AsyncIterator[bytes] | None
    on_done: Callable[[int, bool], None] | None = None  # (bytes sent, completed)
    aborted: bool = False
    source: Any = None  # a zerocopy.FileWindow when the body may go out with sendfile instead
    _transport: asyncio.BaseTransport | None = field(default=None, repr=False)

    def abort(self) -> None:
        """Cut this download off now (abort_inflight): the client sees a broken body."""
        self.aborted = True
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]  # a socket transport


_REASONS = {200: "OK", 206: "Partial Content", 404: "Not Found", 502: "Bad Gateway"}


class StreamServer:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()  # open connections, aborted by stop()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            await close_server(self._server, self._writers)
        for job in self._jobs.values():
            _close_body(job)
        self._jobs.clear()

    def register(self, job: Job) -> str:
        token = secrets.token_urlsafe(18)
        self._jobs[token] = job
        return PATH_PREFIX + token

    def discard(self, path: str) -> None:
        """Forget a job that mitmproxy will never fetch (e.g. the client went away)."""
        job = self._jobs.pop(path[len(PATH_PREFIX):], None)
        if job is not None:
            _close_body(job)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = request_line.split(" ")
                path = parts[1] if len(parts) == 3 else ""
                job = self._jobs.pop(path[len(PATH_PREFIX):], None) if path.startswith(PATH_PREFIX) else None
                if job is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    await writer.drain()
                    return
                if not await self._send(job, writer):
                    return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send(self, job: Job, writer: asyncio.StreamWriter) -> bool:
        """Send one job's response; False when the connection must close."""
        sent = 0
        completed = False
        job._transport = writer.transport
        try:
            if job.aborted:
                raise ConnectionAbortedError("aborted by invalidation")
            headers = job.headers
            chunked = "content-length" not in headers and job.body is not None
            lines = [f"HTTP/1.1 {job.status} {_REASONS.get(job.status, 'OK')}"]
            lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("transfer-encoding", "connection")]
            if chunked:
                lines.append("transfer-encoding: chunked")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            body = job.body
            if isinstance(body, FileBody):
                if body.count:
                    loop = asyncio.get_running_loop()
                    await loop.sendfile(writer.transport, body.file, body.offset, body.count)
                sent = body.count
            elif body is not None:
                async for chunk in body:
                    if job.aborted:
                        raise ConnectionAbortedError("aborted by invalidation")
                    if not chunk:
                        continue
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    sent += len(chunk)
                    await writer.drain()
                if chunked:
                    writer.write(b"0\r\n\r\n")
            await writer.drain()
            completed = True
            return True
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - client gone, fill failed, damaged entry: cut the body
            log.debug("stream ended early: %r", e)
            return False
        finally:
            job._transport = None
            _close_body(job)
            if job.on_done is not None:
                try:
                    job.on_done(sent, completed)
                except Exception:  # reporting must never break serving
                    log.exception("stream on_done failed")


def _close_body(job: Job) -> None:
    body = job.body
    if isinstance(body, FileBody):
        try:
            body.file.close()
        except OSError:
            pass
    elif body is not None and hasattr(body, "aclose"):
        # async generators: schedule their cleanup
        try:
            asyncio.get_running_loop().create_task(body.aclose())  # type: ignore[union-attr]
        except RuntimeError:
            pass
    job.body = None


def file_size(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size
