"""Large hits sent from the cache file straight to the client socket (sendfile).

Why: a large hit used to travel twice through Python (the loopback stream server, then
mitmproxy relaying it to the client, docs/large-media.md). mitmproxy owns the client
socket, but every byte it writes to a client goes through one `writer.write(data)` in
`ConnectionHandler.server_event` (mitmproxy 11 and 12), and for an HTTP/1 response whose
body is not chunked the body bytes reach that call unchanged (`Http1Server.send`). So:

* `install()` wraps the client's `StreamWriter` of every connection handler;
* for an eligible hit the addon answers with a response whose head is the engine's plan
  (Content-Length the real size) and whose body is a *token* (`PREFIX` + random hex);
* when the wrapped writer is asked to write that token, it starts `loop.sendfile()` of the
  cache file on the client's transport instead. mitmproxy's state machine has meanwhile
  finished the response and goes on as after any response (keep-alive); anything it
  writes while the file is going out (a pipelined answer, a close) waits behind it.

Verification: the first whole-body hit of a file is hashed (SHA-256, in a worker
thread with `pread`, so a second core hashes while the kernel sends) and its *last byte*
is held back until the hash matches the one recorded at fill; a `Range` window of a file
not yet proven has its MiB blocks checked against their CRC-32 before any byte is sent.
A damaged entry is dropped and the connection aborted: never a complete wrong body.
A file whose whole hash matched is remembered by identity (`file_identity`: device,
inode, size, mtime and ctime) so later hits of it, whole or windows, are pure sendfile:
hashing every hit would cap a hit at SHA-256's ~1 GB/s on this machine.

Only plain-HTTP/1.1 GETs on a keep-alive connection take this path (TLS is encrypted in
Python by mitmproxy; HTTP/2 frames its data), for bodies of at least `THRESHOLD` bytes.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from mediaedge.digest import checked_block, covering_blocks
from mediaedge.errors import DamagedEntry as DamagedEntry  # re-exported: raised here

log = logging.getLogger("mediaedge.zerocopy")

PREFIX = b"\x00mediaedge-zerocopy:"
TOKEN_LEN = len(PREFIX) + 32
THRESHOLD = 1 << 20
HASH_CHUNK = 1 << 20
_INSTALLED = "_mediaedge_zerocopy"


@dataclass
class FileWindow:
    """Where a hit's bytes are and how to prove them: the engine's hook fills this in."""

    file: BinaryIO
    size: int
    start: int
    end: int
    sha256: str
    blocks: str
    on_damaged: Callable[[str], Awaitable[None]]

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end == self.size


_jobs: dict[bytes, Any] = {}  # token -> streamserver.Job, popped by the writer


def installed() -> bool:
    from mitmproxy.proxy import server

    return bool(getattr(server.LiveConnectionHandler.__init__, _INSTALLED, False))


def eligible(flow: Any, window: FileWindow | None, min_size: int = THRESHOLD) -> bool:
    """A plain-HTTP/1.1 keep-alive GET of at least `min_size` bytes (0: never), with the
    hook installed."""
    if window is None or min_size <= 0 or window.end - window.start < min_size or not installed():
        return False
    req = flow.request
    return (req.method == "GET" and req.http_version == "HTTP/1.1"
            and not flow.client_conn.tls_established
            and "close" not in req.headers.get("connection", "").lower())


def register(job: Any) -> bytes:
    """The body token mitmproxy is given instead of the bytes."""
    token = PREFIX + secrets.token_hex(16).encode()
    _jobs[token] = job
    return token


def discard(token: bytes) -> None:
    """A token mitmproxy will never write (the flow errored before its response)."""
    job = _jobs.pop(token, None)
    if job is not None and job.source is not None:
        _close(job.source.file)


class ZeroCopyWriter:
    """The client's StreamWriter, with a token write turned into a sendfile."""

    def __init__(self, inner: asyncio.StreamWriter) -> None:
        self._inner = inner
        self._busy: asyncio.Task[None] | None = None
        self._queued: list[bytes] = []
        self._eof = False
        self._close = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def write(self, data: bytes) -> None:
        if self._busy is not None:
            self._queued.append(bytes(data))
            return
        if len(data) == TOKEN_LEN and data[:len(PREFIX)] == PREFIX:
            job = _jobs.pop(bytes(data), None)
            if job is not None:
                self._busy = asyncio.get_running_loop().create_task(self._send(job))
                return
        self._inner.write(data)

    def write_eof(self) -> None:
        if self._busy is not None:
            self._eof = True
            return
        self._inner.write_eof()

    def close(self) -> None:
        if self._busy is not None:
            self._close = True
            return
        self._inner.close()

    async def _send(self, job: Any) -> None:
        window: FileWindow = job.source
        transport = self._inner.transport
        job._transport = transport
        sent = 0
        completed = False
        loop = asyncio.get_running_loop()
        try:
            if job.aborted:
                raise ConnectionAbortedError("aborted by invalidation")
            count = window.end - window.start
            identity = file_identity(os.fstat(window.file.fileno()), window.sha256)
            proven = VERDICTS.proven(identity)
            log.debug("zero-copy send of %d bytes at %d (%s)", count, window.start,
                      "proven before" if proven else "checked now")
            if proven:
                await loop.sendfile(transport, window.file, window.start, count)
            elif window.whole:
                # its own descriptor: the thread may outlive the send (client gone) and the file
                hashing = asyncio.ensure_future(asyncio.to_thread(_sha256, os.dup(window.file.fileno()), window.size))
                try:
                    await loop.sendfile(transport, window.file, 0, count - 1)
                    sent = count - 1
                    digest = await hashing
                finally:
                    if not hashing.done():
                        hashing.cancel()
                if digest != window.sha256:
                    await window.on_damaged("SHA-256")
                    raise DamagedEntry("SHA-256")
                VERDICTS.remember(identity)
                await loop.sendfile(transport, window.file, count - 1, 1)
            else:
                bad = await asyncio.to_thread(_bad_block, window)
                if bad is not None:
                    await window.on_damaged(f"block {bad}")
                    raise DamagedEntry(f"block {bad}")
                await loop.sendfile(transport, window.file, window.start, count)
            sent = count
            completed = True
        except Exception as e:  # noqa: BLE001 - client gone, aborted, damaged entry: cut the body
            log.debug("zero-copy send ended early: %r", e)
            transport.abort()
            self._queued.clear()
        finally:
            job._transport = None
            _close(window.file)
            job.source = None
            self._busy = None
            if job.on_done is not None:
                try:
                    job.on_done(sent, completed)
                except Exception:  # reporting must never break serving
                    log.exception("zero-copy on_done failed")
            self._flush()

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        for data in queued:
            self.write(data)
            if self._busy is not None:  # a pipelined zero-copy answer: the rest waits for it
                self._queued.extend(queued[queued.index(data) + 1:])
                break
        if self._busy is None:
            if self._eof and not self._inner.is_closing():
                self._inner.write_eof()
            if self._close:
                self._inner.close()


Identity = tuple[int, int, int, int, int, str]


def file_identity(st: os.stat_result, sha256: str) -> Identity:
    """What names one version of a file's bytes. ctime is in it because user space
    cannot set it back: any write through the file system (a flipped byte, a truncate,
    even one followed by `utime`) gives the file a new identity, so a verdict never
    outlives a change. Damage below the file system (a disk's own bit rot) is not seen
    until the verdict is forgotten (LRU) or the process restarts."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha256)


class Verdicts:
    """Files whose whole body matched its SHA-256, so a later hit of the same identity
    (whole or any window) is sent without reading it in Python. Bounded, LRU."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._proven: OrderedDict[Identity, None] = OrderedDict()

    def proven(self, identity: Identity) -> bool:
        if identity in self._proven:
            self._proven.move_to_end(identity)
            return True
        return False

    def remember(self, identity: Identity) -> None:
        self._proven[identity] = None
        self._proven.move_to_end(identity)
        while len(self._proven) > self.limit:
            self._proven.popitem(last=False)


VERDICTS = Verdicts()


def _sha256(fd: int, size: int) -> str:
    """Worker thread: hashlib releases the GIL; pread leaves the file position alone.
    Closes `fd` (a dup the thread owns)."""
    h = hashlib.sha256()
    offset = 0
    try:
        while offset < size:
            data = os.pread(fd, min(HASH_CHUNK, size - offset), offset)
            if not data:
                break
            h.update(data)
            offset += len(data)
    finally:
        os.close(fd)
    return h.hexdigest() if offset == size else ""


def _bad_block(window: FileWindow) -> int | None:
    """Worker thread: the first block of the window that fails its CRC-32, else None."""
    for index in covering_blocks(window.start, window.end):
        if checked_block(window.file, window.size, window.blocks, index) is None:
            return index
    return None


def _close(f: BinaryIO) -> None:
    try:
        f.close()
    except OSError:
        pass


def install() -> None:
    """Wrap the client writer of every connection handler, once per process."""
    from mitmproxy.proxy import server

    init = server.LiveConnectionHandler.__init__
    if getattr(init, _INSTALLED, False):
        return

    def wrapped(self: Any, reader: Any, writer: Any, *args: Any, **kwargs: Any) -> None:
        init(self, reader, writer, *args, **kwargs)
        if isinstance(writer, asyncio.StreamWriter):
            self.transports[self.client].writer = ZeroCopyWriter(writer)

    setattr(wrapped, _INSTALLED, True)
    server.LiveConnectionHandler.__init__ = wrapped  # type: ignore[method-assign]
