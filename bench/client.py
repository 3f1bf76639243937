"""Small HTTP clients the scenarios need besides wrk: sequential latency, a stampede,
many idle connections. Raw sockets / http.client, so nothing here is a bottleneck
worth more than tens of microseconds per request (reported with the numbers)."""
from __future__ import annotations

import asyncio
import http.client
import socket
import statistics
import time


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize_ms(lat_s: list[float]) -> dict:
    ms = [x * 1000 for x in lat_s]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p90_ms": round(percentile(ms, 90), 3),
            "p99_ms": round(percentile(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "max_ms": round(max(ms), 3), "min_ms": round(min(ms), 3)}


def sequential(port: int, paths: list[str], timeout: float = 30.0) -> dict:
    """GET each path in turn on one keep-alive connection; latency per request (head sent to body read)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    lat: list[float] = []
    statuses: dict[int, int] = {}
    cache_status: dict[str, int] = {}
    bytes_read = 0
    try:
        for p in paths:
            t0 = time.perf_counter()
            conn.request("GET", p)
            r = conn.getresponse()
            body = r.read()
            lat.append(time.perf_counter() - t0)
            bytes_read += len(body)
            statuses[r.status] = statuses.get(r.status, 0) + 1
            cs = [x.strip() for x in (r.getheader("cache-status") or "-").split(";")]
            key = "; ".join(x for x in cs[1:] if not x.startswith("ttl=")) if len(cs) > 1 else cs[0]
            cache_status[key] = cache_status.get(key, 0) + 1
            if r.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    finally:
        conn.close()
    return {**summarize_ms(lat), "statuses": statuses, "cache_status": cache_status, "bytes": bytes_read}


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    got = 0
    while got < n:
        chunk = await reader.read(min(1 << 20, n - got))
        if not chunk:
            raise ConnectionError(f"closed after {got} of {n} body bytes")
        got += len(chunk)
    return status, hdrs, got


async def _stampede(port: int, path: str, clients: int, timeout: float) -> dict:
    conns = []
    for _ in range(clients):
        conns.append(await asyncio.open_connection("127.0.0.1", port))
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    done_at: list[float] = []
    results: list[tuple[int, str, int]] = []
    errors: list[str] = []
    t0 = time.perf_counter()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(req)
        try:
            status, hdrs, n = await asyncio.wait_for(_read_response(reader), timeout)
            results.append((status, hdrs.get("cache-status", "-"), n))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        done_at.append(time.perf_counter() - t0)

    await asyncio.gather(*(one(r, w) for r, w in conns))
    for _, w in conns:
        w.close()
    statuses: dict[int, int] = {}
    cache: dict[str, int] = {}
    for st, cs, _ in results:
        statuses[st] = statuses.get(st, 0) + 1
        parts = [x.strip() for x in cs.split(";")]
        key = "; ".join(p for p in parts[1:] if not p.startswith("ttl=")) or cs
        cache[key] = cache.get(key, 0) + 1
    return {
        "clients": clients,
        "all_complete_ms": round(max(done_at) * 1000, 1) if done_at else None,
        "first_complete_ms": round(min(done_at) * 1000, 1) if done_at else None,
        "p50_complete_ms": round(percentile(done_at, 50) * 1000, 1) if done_at else None,
        "statuses": statuses,
        "cache_status": cache,
        "complete_bodies": sum(1 for _, _, n in results),
        "body_bytes_each": results[0][2] if results else 0,
        "errors": errors[:5],
        "error_count": len(errors),
    }


def stampede(port: int, path: str, clients: int = 100, timeout: float = 60.0) -> dict:
    """Open `clients` connections, then send the same GET on all at once; time to all complete."""
    return asyncio.run(_stampede(port, path, clients, timeout))


class HeldConnections:
    """`n` keep-alive connections, each having made one request, kept open (memory per connection)."""

    def __init__(self, port: int, path: str, n: int) -> None:
        self.port, self.path, self.n = port, path, n
        self.socks: list[socket.socket] = []
        self.failed = 0

    def open(self, timeout: float = 30.0) -> HeldConnections:
        req = f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()
        deadline = time.monotonic() + timeout
        for _ in range(self.n):
            if time.monotonic() > deadline:
                break
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                s.sendall(req)
                _read_blocking(s)
                self.socks.append(s)
            except OSError:
                self.failed += 1
        return self

    def close(self) -> None:
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks.clear()


def _read_blocking(s: socket.socket) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":", 1)[1])
    got = len(rest)
    while got < n:
        chunk = s.recv(min(1 << 20, n - got))
        if not chunk:
            raise ConnectionError("closed mid-body")
        got += len(chunk)


def stream_get(port: int, path: str, timeout: float = 300.0) -> dict:
    """One GET whose body is read and discarded in 1 MiB pieces (large objects); MB/s."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        ttfb = time.perf_counter() - t0
        n = 0
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            n += len(chunk)
        secs = time.perf_counter() - t0
        return {"status": r.status, "bytes": n, "seconds": round(secs, 3), "ttfb_ms": round(ttfb * 1000, 2),
                "mbps": round(n / secs / 1e6, 1), "cache_status": r.getheader("cache-status")}
    finally:
        conn.close()
