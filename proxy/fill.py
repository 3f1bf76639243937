"""One origin fetch being written to disk, that any number of clients read as it grows.

A fill is how a miss streams to its client while it is stored, and how concurrent
misses for one key share one origin fetch (nginx's proxy_cache_lock, but readers
start from the first byte instead of waiting for the end). The body goes to a temp
file in the cache directory; readers `pread` it at their own pace, so a slow client
never holds the origin or memory. When the body is complete and its length checked,
the engine commits the temp file into the cache by rename.

When the cache disk fails (full, read-only, file too large) the fill *spills*: it
stops writing, is never stored, and hands every later chunk to each reader that had
joined through a small bounded queue — pass-through with back-pressure, so the
clients still get every byte and memory stays bounded.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

from mediaedge.digest import BodyDigest
from mediaedge.headers import Headers
from mediaedge.errors import FillFailed

T = TypeVar("T")
log = logging.getLogger("mediaedge.fill")

READ_CHUNK = 256 * 1024
QUEUE_CHUNKS = 16  # per reader, after a spill
SLOW_READER_TIMEOUT = 30.0  # a spilled reader that takes no chunk for this long is cut off
THREAD_WAIT_STEP = 0.25  # how often a producer thread waiting on the loop checks for an abort
_END = b""

# What a seat gives its request: the fill's bytes [start, end) as they arrive (end None:
# to the end of the body, whenever that is); raises FillFailed if the fill fails.
ReadBody = Callable[[int, int | None], AsyncIterator[bytes]]


@dataclass(frozen=True)
class FillHead:
    """The origin's answer, known before its body: enough to send the client's head."""

    status: int
    headers: Headers  # end-to-end headers as stored/forwarded
    source: str  # "upstream" | "db"
    revision: str | None
    length: int | None  # None when the origin did not say (chunked)
    shareable: bool  # may other clients read this fill? (not private, no Set-Cookie…)
    storable: bool
    negative: bool = False
    not_stored_reason: str = ""
    # An error answer (the upstream's own 5xx after the database had no row): a request
    # holding a stale entry within its grace serves that instead (mediaedge.policy.fallback).
    stale_first: bool = False
    # A revalidation said "not modified": the stored entry was renewed and readers serve
    # it from the cache (no body comes through this fill).
    renewed: bool = False


class _SpoolHandle:
    """One reader's access to a fill (its *seat*): its own dup of the spool file, and its
    queue for the bytes that arrive after a spill. Closing it releases both.

    Used as a context manager that gives `read`: leaving it closes the handle unless a
    reader took it over (the reader closes it when it ends)."""

    def __init__(self, fill: Fill, fd: int | None) -> None:
        self.fill = fill
        self.file = os.fdopen(fd, "rb", buffering=0) if fd is not None else None
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue(QUEUE_CHUNKS)
        self.consumed = False  # handed to a reader, which closes it
        fill._queues.add(self)

    def close(self) -> None:
        self.fill._queues.discard(self)
        if self.file is not None:
            self.file.close()
            self.file = None

    def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self.fill.reader(self, start, end)

    def __enter__(self) -> ReadBody:
        return self.read

    def __exit__(self, *exc: object) -> None:
        if not self.consumed:
            self.close()


class Fill:
    def __init__(self, target: str, temp_path: str, *, stall_timeout: float = 30.0) -> None:
        self.target = target
        self.stall_timeout = stall_timeout  # a reader waiting this long for new bytes gives up
        self.temp_path = temp_path
        self.head: asyncio.Future[FillHead] = asyncio.get_running_loop().create_future()
        self.written = 0  # body bytes received so far
        self.on_disk = 0  # of which in the spool file
        self.spilled_at: int | None = None  # bytes from here on live only in reader queues
        self.spill_reason = ""
        self.done = False
        self.error: str | None = None
        self.readers = 0
        self._hash = BodyDigest()  # SHA-256 and per-MiB CRC-32, see proxy/digest.py
        self._progress = asyncio.Event()
        self._queues: set[_SpoolHandle] = set()
        self.aborted = False  # the node is stopping: producers stop, nothing is committed
        # Dropped after the head because the edge will not store it and the leader asked for
        # a Range: every request reading it asks again (mediaedge.policy.seek).
        self.rerouted = False
        self.length: int | None = None  # the body's announced length, once the head is known
        # Set once the fill is committed (or will not be): a reader holds back the body's
        # last bytes until then, so a client that got a whole response and asks again
        # finds the entry (no race between "client done" and "entry stored").
        self.settled = asyncio.Event()
        self._wfd = self.rfd = -1
        try:
            self._wfd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self.rfd = os.open(temp_path, os.O_RDONLY)
        except OSError as e:
            self._spill(e)

    @property
    def waiting(self) -> int:
        """Requests holding a handle on this fill: reading it or waiting for its head."""
        return len(self._queues)

    @property
    def spilled(self) -> bool:
        return self.spilled_at is not None

    # -- writer side (the engine's fetch task) --------------------------------------
    async def write(self, chunk: bytes) -> None:
        """Append a chunk: to the spool file (in a worker thread), or after a spill
        straight to every reader's queue (waiting for the slowest one)."""
        if not chunk:
            return
        if self.spilled_at is None:
            try:
                await asyncio.to_thread(self._write_disk, chunk)
            except OSError as e:
                self._spill(e)
                rest = chunk[self.on_disk - self.written:]
                self._hash.update(rest)
                self.written = self.on_disk
                await self._to_queues(rest)
                self._advance(len(rest))
                return
            self._advance(len(chunk))
            return
        self._hash.update(chunk)
        await self._to_queues(chunk)
        self._advance(len(chunk))

    def write_from_thread(self, chunk: bytes, loop: asyncio.AbstractEventLoop) -> None:
        """`write` for a producer running in a worker thread (database reads).

        Never waits on the loop without end: once the fill is aborted (the node is
        stopping) or the loop is gone, the producer gets `FillFailed` at its next chunk
        instead of blocking on a write the loop will never run."""
        if self.aborted:
            raise FillFailed("fill aborted: the node is stopping", 503)
        future = asyncio.run_coroutine_threadsafe(self.write(chunk), loop)
        while True:
            try:
                return future.result(THREAD_WAIT_STEP)
            except TimeoutError:
                if self.aborted or loop.is_closed() or not loop.is_running():
                    future.cancel()
                    raise FillFailed("fill aborted: the node is stopping", 503) from None

    def abort(self) -> None:
        """Stop a thread producing into this fill at its next chunk (shutdown)."""
        self.aborted = True

    def _write_disk(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            n = os.write(self._wfd, view)
            self.on_disk += n
            self._hash.update(view[:n])
            view = view[n:]

    def _spill(self, e: OSError) -> None:
        self.spilled_at = self.on_disk
        self.spill_reason = f"{type(e).__name__}: {e.strerror or e}"
        log.warning("cache disk write failed for %s (%s): passing through without storing",
                    self.target, self.spill_reason)
        self._close_writer()

    async def _to_queues(self, chunk: bytes) -> None:
        for handle in list(self._queues):
            try:
                await asyncio.wait_for(handle.queue.put(chunk), SLOW_READER_TIMEOUT)
            except TimeoutError:
                handle.close()  # a reader that stopped reading; it will find its queue gone

    def _advance(self, n: int) -> None:
        self.written += n
        self._wake()

    def finish(self) -> str:
        """Mark the body complete; returns its SHA-256 hex."""
        self._close_writer()
        self.done = True
        self._signal(_END)
        self._wake()
        return self._hash.hexdigest()

    def block_sums(self) -> str:
        """Per-block CRC-32s of the body written so far (valid once finished)."""
        return self._hash.blocks()

    def fail(self, reason: str, status: int = 502) -> None:
        self._close_writer()
        self.error = reason
        self.settled.set()
        if not self.head.done():
            self.head.set_exception(FillFailed(reason, status))
            self.head.exception()  # mark retrieved: nobody may be waiting
        self._signal(FillFailed(reason, status))
        self._wake()

    def _signal(self, item: bytes | Exception) -> None:
        """Wake readers blocked on an empty queue (a full queue's reader will find
        `done`/`error` once it has drained it)."""
        if self.spilled_at is None:
            return
        for handle in list(self._queues):
            try:
                handle.queue.put_nowait(item)
            except asyncio.QueueFull:
                pass

    def _close_writer(self) -> None:
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1

    def _wake(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def close(self) -> None:
        """Drop the fill's own read handle (the engine calls it once the fill left the
        registry, so no new reader can join; running readers hold their own dups)."""
        self._close_writer()
        if self.rfd >= 0:
            os.close(self.rfd)
            self.rfd = -1

    def may_store(self) -> bool:
        """False once the head says this fill is not stored: a reader of a window of it need
        not wait for the rest (nor keep the fetch alive: the engine stops unread fills)."""
        head = self.head
        if not head.done() or head.cancelled() or head.exception() is not None:
            return True
        return head.result().storable

    # -- reader side ----------------------------------------------------------------
    def seat(self) -> AbstractContextManager[ReadBody]:
        """A request's seat on this fill, taken when it joins (a dup of the spool file, so
        the temp file may be renamed, unlinked or closed meanwhile, and a spill queue; it
        counts in `waiting`). `with seat as read:` gives the bytes; leaving it unread gives
        the seat up."""
        return _SpoolHandle(self, os.dup(self.rfd) if self.rfd >= 0 else None)

    def reader(self, handle: _SpoolHandle, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) as they arrive; raises FillFailed if the fill fails.

        `end` None means "to the end of the body, whenever that is". Closes `handle`.
        """
        handle.consumed = True
        return self._iter(handle, start, end)

    async def _stalled(self, waiting: Awaitable[T]) -> T:
        """Wait for the fill's next bytes, at most `stall_timeout` (the reader gives up;
        the fill itself goes on for the others and for the cache)."""
        try:
            return await asyncio.wait_for(waiting, self.stall_timeout)
        except TimeoutError:
            raise FillFailed(f"no bytes from the origin for {self.stall_timeout:g} s", 504) from None

    async def _iter(self, handle: _SpoolHandle, start: int, end: int | None) -> AsyncIterator[bytes]:
        self.readers += 1
        queue_pos: int | None = None  # offset of the next byte the spill queue will give
        try:
            pos = start
            while end is None or pos < end:
                if self.error is not None:
                    raise FillFailed(self.error)
                if self.spilled_at is not None and pos >= self.spilled_at:
                    if queue_pos is None:
                        queue_pos = self.spilled_at
                    if handle.queue.empty():
                        if self.error is not None:
                            raise FillFailed(self.error)
                        if self.done:
                            break
                        if handle not in self._queues:
                            raise FillFailed("reader fell behind a pass-through")
                    item = await self._stalled(handle.queue.get())
                    if isinstance(item, Exception):
                        raise item
                    if item is _END:
                        break
                    lo, hi = queue_pos, queue_pos + len(item)
                    queue_pos = hi
                    piece = item[max(0, pos - lo): (hi if end is None else min(hi, end)) - lo]
                    if piece:
                        pos += len(piece)
                        yield piece
                    continue
                limit = self.on_disk if self.spilled_at is None else self.spilled_at
                if pos < limit and handle.file is not None:
                    n = min(limit - pos, READ_CHUNK)
                    if end is not None:
                        n = min(n, end - pos)
                    chunk = await asyncio.to_thread(os.pread, handle.file.fileno(), n, pos)
                    if not chunk:
                        raise FillFailed("spool file shrank")
                    pos += len(chunk)
                    total = self.written if self.done else self.length
                    if total is not None and pos >= total and self.spilled_at is None:
                        await self.settled.wait()
                        if self.error is not None:
                            raise FillFailed(self.error)
                    yield chunk
                    continue
                if self.done and self.spilled_at is None:
                    break
                await self._stalled(self._progress.wait())
            if end is not None and pos < end:
                raise FillFailed("body shorter than announced")
            if self.spilled_at is None and self.may_store():
                await self.settled.wait()
        finally:
            self.readers -= 1
            handle.close()
