"""In-process timings of the pieces of a 10 KB hit (evidence for the profile).

Each piece is timed alone with `timeit` on this machine, in microseconds per
call, so the report can say what a hit costs besides mitmproxy itself: the
storage lookup (pointer + entry rows in SQLite), the SHA-256 check of the body,
the JSON trailer decode, the response plan, counters, the access-log line, the
worker-thread hop, and mitmproxy's own response construction.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
import timeit

from bench.origin import PATTERN


_SCALE = 1.0


def _best(fn, number: int, repeat: int = 5) -> float:
    number = max(10, int(number * _SCALE))
    return round(min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6, 2)


def run(size: int = 10240, scale: float = 1.0) -> dict:
    """`scale` < 1 shortens every loop (smoke mode)."""
    global _SCALE
    _SCALE = scale
    from mediaedge.accesslog import format_access_line
    from mediaedge.replies import _vary_values
    from mediaedge.headers import Headers
    from mediaedge.policy.cachestatus import cache_status
    from mediaedge.policy.freshness import current_age, freshness
    from mediaedge.respond import plan_response
    from mediaedge.stats import Stats
    from mediaedge.storage import CacheStore, EntryMeta, Pointer, _split_inline, encode_trailer

    out: dict[str, float] = {}
    d = tempfile.mkdtemp(prefix="bench-micro-")
    store = CacheStore(os.path.join(d, "c"), size_limit=1 << 30)
    body = PATTERN[:size]
    now = time.time()
    headers = Headers([("Content-Type", "application/octet-stream"), ("Content-Length", str(size)),
                       ("Cache-Control", "public, max-age=86400"), ("ETag", '"v1"'), ("X-Media-Revision", "v1")])
    target = "/media/bench/s10240/hot.bin"
    meta = EntryMeta(target=target, revision="v1", status=200, headers=headers, size=size,
                     sha256=hashlib.sha256(body).hexdigest(), request_time=now, response_time=now,
                     source="upstream", key_revision="v1")
    tmp = store.new_temp_path()
    with open(tmp, "wb") as f:
        f.write(body)
    store.commit(tmp, meta)
    store.set_pointer(target, Pointer("v1", ()))
    req_headers = Headers([("Host", "127.0.0.1:8080"), ("User-Agent", "wrk"), ("Accept", "*/*")])

    out["storage.get_pointer (SQLite row + JSON)"] = _best(lambda: store.get_pointer(target), 2000)
    out["storage.open_entry (SQLite row, split, sha256 check, JSON)"] = _best(
        lambda: store.open_entry(target, "v1", ()), 2000)
    out["  of which sha256(10 KB body)"] = _best(lambda: hashlib.sha256(body).hexdigest(), 5000)
    raw = body + encode_trailer(meta)
    out["  of which trailer split + EntryMeta.from_json"] = _best(lambda: _split_inline(raw), 5000)
    out["  of which diskcache Cache.get (inline value)"] = _best(
        lambda: store._cache.get(f"v\x1f{target}\x1fv1\x1f[]", read=True), 2000)  # noqa: SLF001

    def lookup() -> None:
        p = store.get_pointer(target)
        store.open_entry(target, p.revision, _vary_values(p.vary, req_headers))

    out["engine lookup total (pointer + entry), on the calling thread"] = _best(lookup, 2000)

    def state() -> None:
        current_age(date=None, age_header=None, request_time=now, response_time=now, now=time.time())
        freshness(headers, default_ttl=86400, response_time=now)

    out["freshness + age"] = _best(state, 5000)
    out["plan_response (conditionals, ranges, headers)"] = _best(lambda: plan_response(
        method="GET", request_headers=req_headers, status=200, headers=headers, length=size, revision="v1",
        revision_header="X-Media-Revision", cache_status=cache_status(hit=True, ttl=86399), age=0,
        date="Mon, 30 Nov 2026 12:00:00 GMT", browser_cache_control="no-cache"), 5000)
    stats = Stats(prefixes=("/media/",))
    out["Stats.record (counters, histogram)"] = _best(lambda: stats.record(
        result="hit", source="cache", body_bytes=size, duration=0.0004, path=target), 20000)
    out["format_access_line (--access-log)"] = _best(lambda: format_access_line(
        client="127.0.0.1", method="GET", target=target, status=200, body_bytes=size, referer=None,
        user_agent="wrk", cache_result="hit", origin="cache", duration=0.0004, now=time.time()), 20000)

    async def hops(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await asyncio.to_thread(int)
        return (time.perf_counter() - t0) / n * 1e6

    out["asyncio.to_thread round trip (idle loop)"] = round(min(asyncio.run(hops(max(50, int(3000 * scale)))) for _ in range(3)), 2)

    try:
        from mitmproxy import http

        pairs = [(k.encode(), v.encode()) for k, v in headers]

        def make() -> None:
            r = http.Response.make(200, b"")
            r.headers = http.Headers(pairs)
            r.raw_content = body

        out["mitmproxy Response.make + headers + raw_content"] = _best(make, 5000)
    except Exception:  # noqa: BLE001
        pass
    store.close()
    return out
