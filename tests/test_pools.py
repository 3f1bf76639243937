"""Worker threads never hold a stopping process (proxy/pools.py, proxy/fill.py)."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mediaedge.errors import FillFailed
from mediaedge.fill import Fill
from mediaedge.pools import DaemonThreadPool
from tests.edge import REPO


def test_daemon_pool_runs_work_and_bounds_its_threads() -> None:
    pool = DaemonThreadPool(3, "t")
    gate = threading.Event()
    futures = [pool.submit(lambda i=i: (gate.wait(5), i)[1]) for i in range(6)]
    time.sleep(0.05)
    assert 1 <= len(pool._threads) <= 3 and all(t.daemon for t in pool._threads)
    gate.set()
    assert [f.result(5) for f in futures] == list(range(6))
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.submit(print)


def test_a_blocked_database_thread_does_not_hold_the_exit() -> None:
    """A ThreadPoolExecutor's thread stuck in a call keeps the interpreter from exiting
    (it joins them); the database pool's daemon threads do not."""
    code = textwrap.dedent("""
        import asyncio, time
        from mediaedge.pools import in_database_thread
        async def main():
            task = asyncio.ensure_future(in_database_thread(time.sleep, 60))
            await asyncio.sleep(0.2)
            task.cancel()
        asyncio.run(main())
    """)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=30)
    assert time.monotonic() - t0 < 10


def test_write_from_thread_gives_up_once_the_fill_is_aborted(tmp_path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fill = Fill("/media/x", str(tmp_path / "x.tmp"))
        await asyncio.to_thread(fill.write_from_thread, b"abc", loop)
        assert fill.written == 3
        fill.abort()
        with pytest.raises(FillFailed):
            await asyncio.to_thread(fill.write_from_thread, b"def", loop)
        assert fill.written == 3

    asyncio.run(main())


@pytest.mark.filterwarnings("ignore:coroutine 'Fill.write' was never awaited")
def test_write_from_thread_does_not_wait_forever_on_a_stopped_loop(tmp_path) -> None:
    """The loop stops (shutdown) while a producer thread waits for its write to run."""
    loop = asyncio.new_event_loop()
    fill = loop.run_until_complete(_make_fill(str(tmp_path / "y.tmp")))
    outcome: list[object] = []

    def producer() -> None:
        try:
            fill.write_from_thread(b"abc", loop)
            outcome.append("written")
        except FillFailed as e:
            outcome.append(e)

    t = threading.Thread(target=producer, daemon=True)
    t.start()  # the loop is not running: the write is never run
    t.join(5)
    loop.close()
    assert not t.is_alive() and isinstance(outcome[0], FillFailed), outcome


async def _make_fill(path: str) -> Fill:
    return Fill("/media/y", path)
