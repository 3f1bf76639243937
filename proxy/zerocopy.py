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

A client that stops reading would hold a send (its connection, the cache file) forever:
mitmproxy's idle watchdog sees no activity and asks the writer to close, but the close
waits behind the send, and the kernel keeps a zero-window connection open for as long as
the client acknowledges its probes. So each sendfile has a stall deadline (nginx's
`send_timeout`, here `--idle-timeout`): pushed back whenever the client acknowledges
more bytes (`TCP_INFO`'s `tcpi_bytes_acked`, Linux), and on expiry the send is cut and
the connection aborted. A slow client that keeps reading is never cut.

Streamed bodies (not sendfile: `--sendfile-min-size off`, TLS, fills, database blobs)
stall in the same place one level up: mitmproxy awaits the client writer's `drain()`
after each write and reads nothing more meanwhile, and its idle close waits for the
write buffer, so the connection, the stream server's cache file or fill reader were
held forever. The wrapper's `drain` and `close` arm the same stall watch while bytes
wait in the transport's buffer (`--idle-timeout`, `set_write_stall`), and reset the
connection when it expires.

Only plain-HTTP/1.1 GETs on a keep-alive connection take this path (TLS is encrypted in
Python by mitmproxy; HTTP/2 frames its data), for bodies of at least `THRESHOLD` bytes.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import struct
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
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
# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, a u64 at this offset since Linux 4.1.
TCP_INFO_LEN = 256
BYTES_ACKED_AT = 120
STALL_POLL = 1.0  # seconds at most between two looks at a send's progress


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


_jobs: dict[bytes, tuple[Any, float]] = {}  # token -> (streamserver.Job, stall seconds), popped by the writer
_write_stall = [0.0]  # --idle-timeout for writes mitmproxy waits on (set_write_stall; 0: never cut)


def set_write_stall(seconds: float) -> None:
    """The stall deadline of every client write mitmproxy waits on (`ZeroCopyWriter.drain`):
    the node's `--idle-timeout`, set once it runs."""
    _write_stall[0] = seconds


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


def register(job: Any, stall: float = 0.0) -> bytes:
    """The body token mitmproxy is given instead of the bytes; the send is dropped when
    the client takes no byte for `stall` seconds (0: never)."""
    token = PREFIX + secrets.token_hex(16).encode()
    _jobs[token] = (job, stall)
    return token


def discard(token: bytes) -> None:
    """A token mitmproxy will never write (the flow errored before its response)."""
    found = _jobs.pop(token, None)
    if found is not None and found[0].source is not None:
        _close(found[0].source.file)


class ZeroCopyWriter:
    """The client's StreamWriter, with a token write turned into a sendfile."""

    def __init__(self, inner: asyncio.StreamWriter) -> None:
        self._inner = inner
        self._busy: asyncio.Task[None] | None = None
        self._queued: list[bytes] = []
        self._eof = False
        self._close = False
        self._watch: _StallWatch | None = None  # armed while written bytes wait for the client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def write(self, data: bytes) -> None:
        if self._busy is not None:
            self._queued.append(bytes(data))
            return
        if len(data) == TOKEN_LEN and data[:len(PREFIX)] == PREFIX:
            found = _jobs.pop(bytes(data), None)
            if found is not None:
                self._busy = asyncio.get_running_loop().create_task(self._send(*found))
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
        self._watch_writes()  # a close waits for the buffer: the client must still take it
        self._inner.close()

    def drain(self) -> Coroutine[Any, Any, None]:
        """mitmproxy awaits this after each write (and reads nothing more meanwhile), so
        the bytes waiting here are where a client that stops reading holds a streamed
        body, its fill reader and the connection: the wait gets the stall deadline.
        (Not a coroutine of its own: mitmproxy drains every writer after every read.)"""
        if self._busy is None:
            self._watch_writes()
        return self._inner.drain()

    def _watch_writes(self) -> None:
        """Arm the stall watch while bytes wait in the transport's buffer: the connection
        is aborted when the client acknowledges no byte for `--idle-timeout`. A slow
        client that keeps reading is never cut; an idle keep-alive connection (nothing
        buffered) is left to mitmproxy's own idle timeout."""
        stall = _write_stall[0]
        transport = self._inner.transport
        if stall <= 0 or (self._watch is not None and not self._watch.done):
            return
        if not isinstance(transport, asyncio.WriteTransport) or transport.get_write_buffer_size() == 0:
            return
        sock = transport.get_extra_info("socket")
        acked = bytes_acked(sock) if sock is not None else None
        if acked is None:
            return

        def stalled() -> None:
            log.info("client %s dropped: it took no byte for %g s of a pending write",
                     transport.get_extra_info("peername"), stall)
            reset(transport)

        self._watch = _StallWatch(asyncio.get_running_loop(), sock, acked, stall, stalled,
                                  lambda: transport.get_write_buffer_size() > 0)

    async def _send(self, job: Any, stall: float) -> None:
        window: FileWindow = job.source
        transport = self._inner.transport
        job._transport = transport
        sent = 0
        completed = False
        loop = asyncio.get_running_loop()

        async def sendfile(file: BinaryIO, offset: int, count: int) -> None:
            await send_watched(loop, transport, file, offset, count, stall)

        try:
            if job.aborted:
                raise ConnectionAbortedError("aborted by invalidation")
            count = window.end - window.start
            identity = file_identity(os.fstat(window.file.fileno()), window.sha256)
            proven = VERDICTS.proven(identity)
            log.debug("zero-copy send of %d bytes at %d (%s)", count, window.start,
                      "proven before" if proven else "checked now")
            if proven:
                await sendfile(window.file, window.start, count)
            elif window.whole:
                # its own descriptor: the thread may outlive the send (client gone) and the file
                hashing = asyncio.ensure_future(asyncio.to_thread(_sha256, os.dup(window.file.fileno()), window.size))
                try:
                    await sendfile(window.file, 0, count - 1)
                    sent = count - 1
                    digest = await hashing
                finally:
                    if not hashing.done():
                        hashing.cancel()
                if digest != window.sha256:
                    await window.on_damaged("SHA-256")
                    raise DamagedEntry("SHA-256")
                VERDICTS.remember(identity)
                await sendfile(window.file, count - 1, 1)
            else:
                bad = await asyncio.to_thread(_bad_block, window)
                if bad is not None:
                    await window.on_damaged(f"block {bad}")
                    raise DamagedEntry(f"block {bad}")
                await sendfile(window.file, window.start, count)
            sent = count
            completed = True
        except TimeoutError:
            log.info("zero-copy send to %s dropped: the client took no byte for %g s",
                     transport.get_extra_info("peername"), stall)
            reset(transport)
            self._queued.clear()
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


async def send_watched(loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport, file: BinaryIO,
                       offset: int, count: int, stall: float) -> None:
    """`loop.sendfile`, cut with TimeoutError when the client acknowledges no byte for
    `stall` seconds (0, or no TCP_INFO on this system: never cut)."""
    sock = transport.get_extra_info("socket")
    acked = bytes_acked(sock) if stall > 0 and sock is not None else None
    task = asyncio.current_task()
    if acked is None or task is None:
        await loop.sendfile(transport, file, offset, count)
        return
    watch = _StallWatch(loop, sock, acked, stall, task.cancel)
    try:
        await loop.sendfile(transport, file, offset, count)
    except asyncio.CancelledError:
        if watch.fired and task.uncancel() == 0:  # our cancel, not the caller's
            raise TimeoutError(f"no byte taken for {stall:g} s") from None
        raise
    finally:
        watch.stop()


class _StallWatch:
    """A timer (no task: a hit pays one `call_later`) that looks at the bytes the client
    acknowledged every `stall / 4` s at most 1 s apart, and calls `on_stall` when they
    have not moved for `stall` seconds. With `pending`, it stops by itself once that says
    nothing is waiting to go out any more (`done`)."""

    __slots__ = ("loop", "sock", "acked", "stall", "on_stall", "pending", "moved", "fired", "done", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, acked: int, stall: float,
                 on_stall: Callable[[], object], pending: Callable[[], bool] | None = None) -> None:
        self.loop, self.sock, self.acked, self.stall = loop, sock, acked, stall
        self.on_stall, self.pending = on_stall, pending
        self.moved = loop.time()
        self.fired = False
        self.done = False
        self.handle = loop.call_later(min(stall / 4, STALL_POLL), self._look)

    def _look(self) -> None:
        if self.pending is not None and not self.pending():
            self.done = True
            return
        now = bytes_acked(self.sock)
        if now is not None and now != self.acked:
            self.acked, self.moved = now, self.loop.time()
        elif self.loop.time() - self.moved >= self.stall:
            self.fired = self.done = True
            self.on_stall()
            return
        self.handle = self.loop.call_later(min(self.stall / 4, STALL_POLL), self._look)

    def stop(self) -> None:
        self.done = True
        self.handle.cancel()


def reset(transport: asyncio.BaseTransport) -> None:
    """Abort a stalled client's connection with a reset: a plain close would leave the
    bytes it never took queued in the kernel (an orphan in FIN-WAIT-1, megabytes each)
    for as long as it keeps acknowledging zero-window probes."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()  # type: ignore[attr-defined]  # a socket transport


def bytes_acked(sock: socket.socket) -> int | None:
    """How many bytes of this connection the peer has acknowledged; None where unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    except (OSError, AttributeError):  # not Linux, or not a TCP socket
        return None
    if len(info) < BYTES_ACKED_AT + 8:
        return None
    return int.from_bytes(info[BYTES_ACKED_AT:BYTES_ACKED_AT + 8], sys.byteorder)


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
