"""What revalidation saves: bytes the app sends for expired-but-unchanged media, and
what a revalidated hit costs against a plain hit.

    python -m bench.revalidation                  # 100 rounds, a 100 MB object
    python -m bench.revalidation --rounds 20 --size 10MB

One real `mediaedge serve` in front of a real loopback app (bench/edge.py), which
counts the bytes it writes (status line, header fields, body) per path:

1. before: the object expires at once (`Cache-Control: max-age=0`) and the app ignores
   conditionals (a 200 every time): each request is a full refetch, which is what an
   edge without revalidation does (the previous release sent no validators at all).
2. after: the same object and lifetime, the app answers `If-None-Match` with a 304:
   each request is a conditional GET and the body comes from the cache.
   In the same run, a second object of the same size with a long lifetime is asked
   for between revalidations: plain hits. Time to first byte and to last byte, p50.

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import requests

from bench.edge import Edge, Route, Upstream, synthetic_sha
from mediaedge.config import parse_size


def _timed_get(url: str) -> tuple[float, float, str, str]:
    """(seconds to the head, seconds to the last byte, Cache-Status, body SHA-256)."""
    import hashlib

    h = hashlib.sha256()
    t0 = time.perf_counter()
    with requests.get(url, stream=True, timeout=120) as r:
        first = time.perf_counter() - t0
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
        total = time.perf_counter() - t0
        return first, total, r.headers.get("Cache-Status", ""), h.hexdigest()


def _p50(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def run(rounds: int, size: int) -> dict:
    expect = synthetic_sha(size)
    out: dict = {"rounds": rounds, "object_bytes": size}
    for phase in ("before", "after"):
        upstream = Upstream()
        with tempfile.TemporaryDirectory(prefix="mediaedge-bench-reval-") as workdir:
            edge = Edge(workdir, upstream=upstream.url,
                        args=["--cache-size", str(max(4 * size, 1 << 30)), "--max-object-size", str(2 * size)]).start()
            try:
                upstream.routes["/media/v.mp4"] = Route(size=size, not_modified=phase == "after", headers={
                    "Content-Type": "video/mp4", "ETag": '"v1"', "Cache-Control": "max-age=0"})
                upstream.routes["/media/plain.mp4"] = Route(size=size, headers={
                    "Content-Type": "video/mp4", "ETag": '"p1"', "Cache-Control": "max-age=86400"})
                assert _timed_get(edge.url + "/media/v.mp4")[3] == expect  # the first fetch, not counted
                assert _timed_get(edge.url + "/media/plain.mp4")[3] == expect
                sent = upstream.header_bytes["/media/v.mp4"] + upstream.body_bytes["/media/v.mp4"]
                requests_before = upstream.hits["/media/v.mp4"]
                expired: list[tuple[float, float]] = []
                plain: list[tuple[float, float]] = []
                statuses: set[str] = set()
                for _ in range(rounds):
                    first, total, status, digest = _timed_get(edge.url + "/media/v.mp4")
                    assert digest == expect, "wrong bytes"
                    expired.append((first, total))
                    statuses.add(status)
                    if phase == "after":
                        first, total, status, digest = _timed_get(edge.url + "/media/plain.mp4")
                        assert digest == expect and status.startswith("mediaedge; hit"), status
                        plain.append((first, total))
                app_bytes = upstream.header_bytes["/media/v.mp4"] + upstream.body_bytes["/media/v.mp4"] - sent
                result = {
                    "app_requests": upstream.hits["/media/v.mp4"] - requests_before,
                    "app_bytes_sent": app_bytes,
                    "app_304s": upstream.not_modified["/media/v.mp4"],
                    "cache_status": sorted(statuses),
                    "expired_ttfb_p50_ms": _p50([t[0] for t in expired]),
                    "expired_total_p50_ms": _p50([t[1] for t in expired]),
                }
                if plain:
                    result["plain_hit_ttfb_p50_ms"] = _p50([t[0] for t in plain])
                    result["plain_hit_total_p50_ms"] = _p50([t[1] for t in plain])
                    result["revalidated"] = edge.stats()["revalidated"]
                out[phase] = result
            finally:
                edge.stop()
                upstream.close()
    out["bytes_saved_ratio"] = round(1 - out["after"]["app_bytes_sent"] / max(out["before"]["app_bytes_sent"], 1), 6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--size", default="100MB", help="object size (bytes or a unit: 100MB, 1GiB)")
    args = ap.parse_args()
    print(json.dumps(run(args.rounds, parse_size(args.size)), indent=2))


if __name__ == "__main__":
    main()
