"""Worker threads, split by what they wait on.

Cache work (SQLite lookups, file reads and writes in the cache directory) is fast
and must never queue behind database work: a locked table or a dead database can
hold a database thread for as long as its timeout. So the origin and the state
database get their own bounded pool, and the loop's default executor (used by
`asyncio.to_thread` for cache work) is sized for the cache alone.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

CACHE_THREADS = 16
DATABASE_THREADS = 16

_database_pool = ThreadPoolExecutor(max_workers=DATABASE_THREADS, thread_name_prefix="mediaedge-db")


def install_cache_pool(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_default_executor(ThreadPoolExecutor(max_workers=CACHE_THREADS, thread_name_prefix="mediaedge-cache"))


async def in_database_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking database call (origin or invalidation log) off the loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_database_pool, functools.partial(fn, *args, **kwargs))
