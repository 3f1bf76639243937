"""Hostile admin-plane clients for tests/test_admin_limits.py, also runnable by hand:

    python tests/adminflood.py ADMIN_PORT PID [CONNECTIONS] [--signed-headers]

sends CONNECTIONS (default 400) concurrent `POST /publish` requests with 1 MiB
bodies and prints the status counts and the node's RSS before and at its peak.
"""
from __future__ import annotations

import asyncio
import collections
import sys
import threading
import time

MIB = 1 << 20


def publish_head(port: int, length: int, *, signed_headers: bool) -> bytes:
    """A request head for /publish; `signed_headers`: well-formed signature headers with a wrong MAC,
    so a server must read the body before it can refuse it."""
    lines = [
        "POST /publish HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if signed_headers:
        lines += [f"X-Mediaedge-Timestamp: {int(time.time())}", "X-Mediaedge-Signature: sha256=" + "0" * 64]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _one(port: int, body: bytes, signed_headers: bool, timeout: float) -> str:
    """Status code of one request as text, or the name of what went wrong instead."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (TimeoutError, OSError) as e:
        return type(e).__name__
    try:
        writer.write(publish_head(port, len(body), signed_headers=signed_headers))
        try:
            writer.write(body)
            await asyncio.wait_for(writer.drain(), timeout)
        except (TimeoutError, OSError):
            pass  # refused before the body: the answer may still be readable
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.split()[1].decode() if line.startswith(b"HTTP/1.1 ") else "closed"
    except (TimeoutError, OSError, IndexError) as e:
        return type(e).__name__
    finally:
        writer.close()


async def _flood(port: int, n: int, size: int, signed_headers: bool, timeout: float) -> collections.Counter[str]:
    body = b" " * size
    results = await asyncio.gather(*(_one(port, body, signed_headers, timeout) for _ in range(n)))
    return collections.Counter(results)


def flood(port: int, n: int = 400, size: int = MIB, *, signed_headers: bool = False,
          timeout: float = 30.0) -> collections.Counter[str]:
    """`n` concurrent POST /publish with `size`-byte bodies; the count of each outcome."""
    return asyncio.run(_flood(port, n, size, signed_headers, timeout))


class PeakRss:
    """Samples a process's RSS every 10 ms in a thread (VmHWM is not reset between phases)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, self.rss_kib())
            except OSError:
                return
            self._stop.wait(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def main(argv: list[str]) -> int:
    port, pid = int(argv[1]), int(argv[2])
    n = int(argv[3]) if len(argv) > 3 and argv[3].isdigit() else 400
    signed = "--signed-headers" in argv
    sampler = PeakRss(pid)
    before = sampler.rss_kib()
    started = time.monotonic()
    with sampler:
        counts = flood(port, n, signed_headers=signed)
    took = time.monotonic() - started
    print(f"{n} connections x 1 MiB ({'signature headers' if signed else 'unsigned'}): {dict(counts)} in {took:.1f} s;"
          f" RSS {before / 1024:.0f} MB before, peak {sampler.peak_kib / 1024:.0f} MB,"
          f" after {sampler.rss_kib() / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
