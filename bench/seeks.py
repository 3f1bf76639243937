"""What a seek costs: bytes the app sends and time to first byte for random seeks into a
large object, sliced (--slice-size, the edge's default 16 MiB) or not stored at all
(--slice-size 0 and the object over --max-object-size).

    python -m bench.seeks                              # 20 seeks into a 2 GB object, 1 MiB each, sliced
    python -m bench.seeks --slice-size 0               # the same, the object not stored (Range forwarded)
    python -m bench.seeks --size 400MB --seeks 5
    python -m bench.seeks --edge-python /path/to/older/.venv/bin/python --seeks 3   # "before"

One real `mediaedge serve` in front of a real loopback app (bench/edge.py) whose object
is synthetic (generated as it is sent, never written to disk) and which answers
`Range` with 206 as nginx does; the app counts the body bytes it writes. Each seek is
`Range: bytes=A-(A+window-1)` at a random A; the first one is reported apart, since it
is the one that learns the object is sliced or not stored (its whole answer is dropped
after the head). Sliced, a later seek costs the slice it falls in (nothing when an
earlier seek fetched that slice). The same seeks are then made again (a second viewer):
sliced, they come from the cache; not stored, each costs its window again. `--edge-python` runs the edge with another interpreter (an older checkout's venv)
to measure what a seek cost before.

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

import requests

from bench.edge import Edge, Route, Upstream, synthetic_chunk
from mediaedge.config import parse_size

PATH = "/media/film.mp4"


def seek(edge: Edge, upstream: Upstream, start: int, window: int, size: int) -> dict[str, float | int]:
    before = upstream.body_bytes[PATH]
    end = min(start + window, size) - 1
    t0 = time.perf_counter()
    with requests.get(edge.url + PATH, headers={"Range": f"bytes={start}-{end}"}, stream=True, timeout=600) as r:
        chunks = r.iter_content(64 * 1024)
        first = next(chunks, b"")
        ttfb = time.perf_counter() - t0
        body = first + b"".join(chunks)
    took = time.perf_counter() - t0
    if r.status_code != 206 or body != synthetic_chunk(start, end - start + 1):
        raise SystemExit(f"seek to {start}: status {r.status_code}, {len(body)} bytes, wrong body")
    # the app may still be pushing bytes of a dropped answer into a closed socket: let it stop
    deadline = time.monotonic() + 120
    last = -1
    while time.monotonic() < deadline and last != upstream.body_bytes[PATH]:
        last = upstream.body_bytes[PATH]
        time.sleep(0.2)
    return {"start": start, "app_bytes": upstream.body_bytes[PATH] - before, "ttfb_ms": round(ttfb * 1000, 2),
            "total_ms": round(took * 1000, 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="2GB", help="object size (default 2GB)")
    p.add_argument("--seeks", type=int, default=20)
    p.add_argument("--window", default="1MiB", help="bytes per seek (default 1MiB)")
    p.add_argument("--max-object-size", default="1GiB", help="the edge's --max-object-size (below --size)")
    p.add_argument("--slice-size", default=None,
                   help="the edge's --slice-size (default: not passed, the edge's own default; 0: off)")
    p.add_argument("--edge-python", default=None, help="run the edge with this interpreter (an older checkout)")
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)
    size, window = parse_size(args.size), parse_size(args.window)
    rng = random.Random(args.seed)
    upstream = Upstream()
    upstream.routes[PATH] = Route(size=size, ranges=True, headers={"Content-Type": "video/mp4", "ETag": '"f1"'})
    with tempfile.TemporaryDirectory() as tmp:
        slicing = [] if args.slice_size is None else ["--slice-size", args.slice_size]
        edge = Edge(tmp, upstream=upstream.url, args=["--max-object-size", args.max_object_size,
                                                       "--cache-size", "4GiB", *slicing])
        if args.edge_python:
            edge.cmd[0] = args.edge_python
        edge.start()
        try:
            starts = [rng.randrange(size - window) for _ in range(args.seeks)]
            runs = [seek(edge, upstream, start, window, size) for start in starts]
            # A second viewer seeking to the same places: what the edge kept pays off here.
            again = [seek(edge, upstream, start, window, size) for start in starts]
        finally:
            edge.stop()
            upstream.close()
    rest = runs[1:] or runs
    print(json.dumps({
        "object_bytes": size, "window_bytes": window, "seeks": len(runs),
        "edge": args.edge_python or "this checkout",
        "slice_size": "edge default" if args.slice_size is None else args.slice_size,
        "first_seek": runs[0],
        "later_seeks": {
            "app_bytes_total": sum(int(r["app_bytes"]) for r in rest),
            "app_bytes_per_seek_max": max(int(r["app_bytes"]) for r in rest),
            "ttfb_ms_p50": round(statistics.median(r["ttfb_ms"] for r in rest), 2),
            "ttfb_ms_max": round(max(r["ttfb_ms"] for r in rest), 2),
            "total_ms_p50": round(statistics.median(r["total_ms"] for r in rest), 2),
        },
        "app_bytes_all_seeks": sum(int(r["app_bytes"]) for r in runs),
        "second_viewer": {
            "app_bytes_total": sum(int(r["app_bytes"]) for r in again),
            "ttfb_ms_p50": round(statistics.median(r["ttfb_ms"] for r in again), 2),
            "ttfb_ms_max": round(max(r["ttfb_ms"] for r in again), 2),
        },
    }, indent=2))


if __name__ == "__main__":
    main()
