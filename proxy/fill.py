"""One origin fetch being written to disk, that any number of clients read as it grows.

A fill is how a miss streams to its client while it is stored, and how concurrent
misses for one key share one origin fetch (nginx's proxy_cache_lock, but readers
start from the first byte instead of waiting for the end). The body goes to a temp
file in the cache directory; readers `pread` it at their own pace, so a slow client
never holds the origin or memory. When the body is complete and its length checked,
the engine commits the temp file into the cache by rename.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import BinaryIO
from dataclasses import dataclass

from proxy.headers import Headers

READ_CHUNK = 256 * 1024


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


class FillFailed(Exception):
    """The fill could not complete; readers must cut their response short.

    `status` is what a client that has not yet got a head should be answered.
    """

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class Fill:
    def __init__(self, target: str, temp_path: str) -> None:
        self.target = target
        self.temp_path = temp_path
        self._wfd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.rfd = os.open(temp_path, os.O_RDONLY)
        self.head: asyncio.Future[FillHead] = asyncio.get_running_loop().create_future()
        self.written = 0
        self.done = False
        self.error: str | None = None
        self.readers = 0
        self._hash = hashlib.sha256()
        self._progress = asyncio.Event()
        self.invalidated = False  # an invalidation arrived meanwhile: never commit
        self.length: int | None = None  # the body's announced length, once the head is known
        # Set once the fill is committed (or will not be): a reader holds back the body's
        # last bytes until then, so a client that got a whole response and asks again
        # finds the entry (no race between "client done" and "entry stored").
        self.settled = asyncio.Event()

    # -- writer side (the engine's fetch task) --------------------------------------
    def write_blocking(self, chunk: bytes) -> None:
        """Append a chunk (in a worker thread); the caller then calls `advanced`."""
        view = memoryview(chunk)
        while view:
            n = os.write(self._wfd, view)
            view = view[n:]
        self._hash.update(chunk)

    def advanced(self, n: int) -> None:
        self.written += n
        self._wake()

    def finish(self) -> str:
        """Mark the body complete; returns its SHA-256 hex."""
        self._close_writer()
        self.done = True
        self._wake()
        return self._hash.hexdigest()

    def fail(self, reason: str, status: int = 502) -> None:
        self._close_writer()
        self.error = reason
        self.settled.set()
        if not self.head.done():
            self.head.set_exception(FillFailed(reason, status))
            self.head.exception()  # mark retrieved: nobody may be waiting
        self._wake()

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

    # -- reader side ----------------------------------------------------------------
    def open_handle(self) -> BinaryIO:
        """A reader's own handle on the spool, taken when it joins (a dup of the fill's),
        so the temp file may be renamed, unlinked or closed by the fill meanwhile."""
        return os.fdopen(os.dup(self.rfd), "rb", buffering=0)

    def reader(self, handle: BinaryIO, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) as they are written; raises FillFailed if the fill fails.

        `end` None means "to the end of the body, whenever that is". Closes `handle`.
        """
        return self._iter(handle, start, end)

    async def _iter(self, f: object, start: int, end: int | None) -> AsyncIterator[bytes]:
        fd = f.fileno()  # type: ignore[attr-defined]
        self.readers += 1
        try:
            pos = start
            while end is None or pos < end:
                if self.error is not None:
                    raise FillFailed(self.error)
                available = self.written
                if pos < available:
                    n = min(available - pos, READ_CHUNK)
                    if end is not None:
                        n = min(n, end - pos)
                    chunk = await asyncio.to_thread(os.pread, fd, n, pos)
                    if not chunk:
                        raise FillFailed("spool file shrank")
                    pos += len(chunk)
                    total = self.written if self.done else self.length
                    if total is not None and pos >= total:
                        await self.settled.wait()
                        if self.error is not None:
                            raise FillFailed(self.error)
                    yield chunk
                    continue
                if self.done:
                    if end is not None and pos < end:
                        raise FillFailed("body shorter than announced")
                    await self.settled.wait()
                    return
                await self._progress.wait()
        finally:
            self.readers -= 1
            f.close()  # type: ignore[attr-defined]
