"""Worker threads, split by what they wait on.

Cache work (SQLite lookups, file reads and writes in the cache directory) is fast
and must never queue behind database work: a locked table or a dead database can
hold a database thread for as long as its timeout. So the origin and the state
database get their own bounded pool, and the loop's default executor (used by
`asyncio.to_thread` for cache work) is sized for the cache alone.

The database pool's threads are daemon threads. A `ThreadPoolExecutor`'s are not:
the interpreter joins them at exit, so one thread stuck in a slow query or a blob
copy would keep a stopped node alive for as long as the database takes (contract: a
node stops within 10 s of SIGTERM). Nothing a database thread does is committed
without the loop: a copy cut off at exit leaves a temp file, removed at the next start.
"""
from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

CACHE_THREADS = 16
DATABASE_THREADS = 16


class DaemonThreadPool(Executor):
    """A bounded pool of daemon worker threads, started as work arrives (as
    `ThreadPoolExecutor` does), that interpreter exit does not wait for."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._shut = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[T] = Future()
            self._work.put((future, functools.partial(fn, *args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                t = threading.Thread(target=self._worker, name=f"{self._prefix}_{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)
            return future

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, call = item
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    future.set_exception(e)
                else:
                    future.set_result(result)
            del item, future, call
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for t in threads:
                t.join()


_database_pool = DaemonThreadPool(DATABASE_THREADS, "mediaedge-db")


def install_cache_pool(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_default_executor(ThreadPoolExecutor(max_workers=CACHE_THREADS, thread_name_prefix="mediaedge-cache"))


async def in_database_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking database call (origin or invalidation log) off the loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_database_pool, functools.partial(fn, *args, **kwargs))
