"""The live edge's hit ratio on a fixed, seeded trace, next to the simulated policies.

    python -m bench.hitratio_live [--n 20000] [--s 0.9] [--fraction 0.091] [--requests 200000]

Replays `bench.hitratio`'s own traces against a real `python -m mediaedge serve` edge
in front of a real origin (bench/origin.py), by a few keep-alive connections taking
the requests in order: the Zipf trace (first half warm-up, second half measured), then
one sweep over every object in id order, then Zipf requests again (measured: the
scan-heavy trace, whose warm-up is the whole Zipf trace).
Count-bounded, not time-bounded: same seed, same requests, whatever the machine's speed.
Each answer's `Cache-Status` says hit or not; the hit ratio counts the measured part of
the trace only (as the simulation does: after the warm-up, after the sweep).

Capacity in the same units as the simulation's. Objects are `--object-bytes` (default
40,000: above the store's INLINE_LIMIT, so each entry is a file and diskcache counts its
exact size; small values would live in SQLite pages, whose count only grows). An entry
then costs its body plus its trailer; the database (keys, indexes) and the store's
reserve (proxy/storage.py OVERHEAD_RESERVE) come on top. `--cache-size` is set so the
edge holds `int(n × fraction)` entries, and the simulation and the ideal are run at the
entries the edge actually held (read from /stats), on the same trace, in the same run.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import hitratio, procs
from mediaedge.storage import INLINE_LIMIT, OVERHEAD_RESERVE

OBJECT_BYTES = 40_000  # above INLINE_LIMIT (32 KiB): each entry a file, its size counted exactly
assert OBJECT_BYTES > INLINE_LIMIT
TRAILER_BYTES = 560  # per entry beyond the body: its JSON trailer and footer (measured 558 for these targets)
DB_BYTES_PER_ENTRY = 800  # SQLite pages per stored entry: its row, its pointer row, indexes (measured ~770)
DB_FLOOR = 64 << 10  # the schema and counters a database holds anyway
RESERVE = OVERHEAD_RESERVE  # kept out of the entries' room (a quarter of --cache-size below 4 × it)


def cache_size_for(entries: int, obj: int) -> int:
    """The --cache-size (bytes) at which the edge holds about `entries` objects of `obj` bytes.

    diskcache's volume is its database's pages plus the sizes of its files, and the store
    gives entries --cache-size less min(a quarter, RESERVE) (proxy/storage.py)."""
    room = DB_FLOOR + entries * (obj + TRAILER_BYTES + DB_BYTES_PER_ENTRY)
    return room + RESERVE if room >= 3 * RESERVE else -(-room * 4 // 3)


def replay(port: int, paths: list[str], conns: int) -> tuple[bytearray, int]:
    """Request every path, in order, over `conns` keep-alive connections (each takes the
    next request of the trace when its previous answer is read). Returns one byte per
    request (1: the answer was a hit) and the count of errors."""
    hits = bytearray(len(paths))
    nxt = itertools.count()  # next() on a count is atomic under the GIL
    errors = [0]

    def worker() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            i = next(nxt)
            if i >= len(paths):
                break
            for attempt in range(3):
                try:
                    c.request("GET", paths[i])
                    r = c.getresponse()
                    r.read()
                    status = r.getheader("Cache-Status") or ""
                    if r.status != 200:
                        errors[0] += 1
                    hits[i] = 1 if "; hit" in status else 0
                    break
                except (OSError, http.client.HTTPException):
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    if attempt == 2:
                        errors[0] += 1
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return hits, errors[0]


def live_run(workdir: str, origin: procs.Server, trace: list[int], parts: list[tuple[str, int, int]], obj: int,
             cache_size: int, conns: int, log: Any, pin: Callable[[procs.Server], Any]) -> dict:
    """One fresh edge, the whole trace in order; per part (name, start, end) its hit
    ratio by Cache-Status and by the edge's own /stats, and the entries held at its end."""
    cache_dir = os.path.join(workdir, "cache-live")
    edge = procs.EdgeServer(workdir, upstream=origin.url, origin_db=f"sqlite:///{workdir}/origin.db",
                            cache_dir=cache_dir, cache_size=str(cache_size), name="mediaedge-live",
                            # every object is a file, which the hit slab never holds: its
                            # share of --cache-size would only shrink the room measured here
                            extra=["--hit-slab-size", "off"])
    pin(edge)
    edge.start()
    out: dict = {}
    try:
        paths = [f"/media/z/s{obj}/{k}.bin" for k in trace]
        for name, start, end in parts:
            st0, t0 = edge.stats(), time.monotonic()
            hits, errors = replay(edge.port, paths[start:end], conns)
            t1, st = time.monotonic(), edge.stats()
            d_req = st["requests"] - st0["requests"]
            d_hit = st["hits"] + st["stale"] - st0["hits"] - st0["stale"]
            out[name] = {"requests": end - start, "live": round(sum(hits) / max(1, len(hits)), 4),
                         "live_stats": round(d_hit / d_req, 4) if d_req else None,  # the edge's own count
                         "entries_at_end": int(st.get("entries") or 0), "cache_bytes": st.get("cache_bytes"),
                         "errors": errors, "rps": round((end - start) / max(1e-9, t1 - t0), 1),
                         "seconds": round(t1 - t0, 1)}
            log(f"  live {name}: {out[name]}")
    finally:
        edge.stop()
    return out


def measure(n: int, s: float, fraction: float, requests: int, obj: int, seed: int, conns: int = 8,
            workdir: str | None = None, log: Any = None,
            origin: procs.Server | None = None, pin: Callable[[procs.Server], Any] = lambda s: s) -> dict:
    """Live and simulated hit ratios. One edge takes, in order: the Zipf trace's first
    half (warm-up), its second half (measured: "zipf"), a sweep over every object, and
    Zipf requests again (measured: "scan"), exactly bench/hitratio.py's traces (its scan
    trace, warmed up by the whole Zipf trace rather than its first half). `origin`: a
    running origin (else one is started here); `pin`: applied to the edge before it
    starts (bench/run.py's CPU pinning)."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    scratch = workdir is None  # a workdir of our own is removed at the end (~40 MB of cache at 10,000 objects)
    workdir = workdir or tempfile.mkdtemp(prefix="mediaedge-hitratio-")
    entries = int(n * fraction)
    cache_size = cache_size_for(entries, obj)
    traces = hitratio.make_traces(n, s, requests, seed)
    zipf, half = traces["zipf"]
    scan, _ = traces["scan"]
    whole = zipf + scan[half:]  # the Zipf trace, the sweep, Zipf again
    again = len(zipf) + n
    parts = [("warm-up", 0, half), ("zipf", half, len(zipf)), ("sweep", len(zipf), again), ("scan", again, len(whole))]
    perm = hitratio.popularity(n, seed)
    out: dict = {"catalogue": n, "zipf_s": s, "object_bytes": obj, "cache_fraction": fraction,
                 "capacity_entries": entries, "cache_size_bytes": cache_size, "requests": requests, "seed": seed,
                 "conns": conns, "total_requests": len(whole), "traces": {}}
    own = origin is None
    if origin is None:
        origin = procs.OriginServer(workdir)
        origin.start()
    t0 = time.monotonic()
    try:
        live = live_run(workdir, origin, whole, parts, obj, cache_size, conns, log, pin)
    finally:
        if own:
            origin.stop()
        if scratch:
            shutil.rmtree(workdir, ignore_errors=True)
    out["live_seconds"] = round(time.monotonic() - t0, 1)
    out["errors"] = sum(p["errors"] for p in live.values())
    size = (lambda k: obj)  # noqa: E731 - every object the same size
    for name, trace, start in (("zipf", zipf, half), ("scan", whole, again)):
        row = dict(live[name])
        row["requests"], row["measured"] = len(trace), len(trace) - start
        # The simulation at the capacity the live edge held (its volume fills to the limit):
        held = row["entries_at_end"] or entries
        cap = held * obj
        for p in ("tinylfu", "lru", "fifo"):
            row[p] = round(hitratio.POLICIES[p](trace, size, cap, start) / row["measured"], 4)
        row["ideal"] = round(hitratio.run_ideal(trace, size, cap, start, perm) / row["measured"], 4)
        row["simulated_entries"] = held
        out["traces"][name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hitratio_live", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="objects in the catalogue")
    p.add_argument("--s", type=float, default=0.9, help="Zipf exponent")
    p.add_argument("--fraction", type=float, default=hitratio.NOMINAL_FRACTION, help="cache capacity / catalogue")
    p.add_argument("--requests", type=int, default=200_000, help="Zipf requests (the first half warms up)")
    p.add_argument("--object-bytes", type=int, default=OBJECT_BYTES)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--conns", type=int, default=8)
    a = p.parse_args(argv)
    res = measure(a.n, a.s, a.fraction, a.requests, a.object_bytes, a.seed, a.conns)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
