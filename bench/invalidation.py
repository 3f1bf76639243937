"""Invalidation propagation and catch-up, measured on real nodes.

    python -m bench.invalidation                         # SQLite state database
    python -m bench.invalidation --state-db postgresql://u:p@127.0.0.1:5432/db
    python -m bench.invalidation --postgres               # a throw-away PostgreSQL (bench/dbservers.py)

1. Propagation: two nodes share the state database; 100 times, a publish of a new
   revision is sent to node a, and the time from its 200 to node b serving the new
   revision is taken (b polled every 2 ms). Median, p99, max.
2. Catch-up: node b is stopped, 100,000 events are appended to the log (1,000 per
   append, as 100 webhooks of 1,000 events would), b is started again; the time from
   its start to its first answer (it applies every missed event before it serves).

Prints one JSON object. Uses the real-process helpers the tests use too (bench/edge.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import requests

from bench.edge import SECRET, Edge, Route, Upstream, publish
from mediaedge.invalidation_log import InvalidationLog


def _nodes(workdir: str, upstream: Upstream, state_db: str | None) -> tuple[Edge, Edge]:
    db = f"sqlite:///{workdir}/origin.db"
    out = []
    for name in ("a", "b"):
        args = ["--webhook-secret", SECRET, "--node-id", name]
        if state_db:
            args += ["--state-db", state_db]
        out.append(Edge(f"{workdir}", upstream=upstream.url, origin_db=db, cache_dir=f"{workdir}/cache-{name}",
                        args=args).start())
    return out[0], out[1]


def propagation(a: Edge, b: Edge, upstream: Upstream, rounds: int) -> list[float]:
    times = []
    for i in range(rounds):
        path = f"/media/bench/propagation-{i}.jpg"
        upstream.routes[path] = Route(body=f"rev {i}".encode(), headers={"X-Media-Revision": f"r{i}"})
        assert b.get(path).headers.get("X-Media-Revision") == f"r{i}"  # b holds r{i}
        upstream.routes[path] = Route(body=f"rev {i}+".encode(), headers={"X-Media-Revision": f"r{i}+"})
        r = publish(a, [{"type": "publish", "path": path, "revision": f"r{i}+"}])
        assert r.status_code == 200, r.text
        t0 = time.perf_counter()
        deadline = t0 + 5
        while time.perf_counter() < deadline:
            if requests.get(b.url + path, timeout=5).headers.get("X-Media-Revision") == f"r{i}+":
                break
            time.sleep(0.002)
        times.append(time.perf_counter() - t0)
    return times


def catch_up(a: Edge, b: Edge, state_db: str, events: int) -> float:
    b.stop()
    log = InvalidationLog(state_db)
    try:
        batch = [{"type": "purge", "path": f"/media/bench/missed/{i}.jpg"} for i in range(1000)]
        for _ in range(events // 1000):
            log.append(batch, node="bench", at=time.time())
    finally:
        log.close()
    t0 = time.perf_counter()
    b.start(timeout=600)
    requests.get(b.url + "/media/bench/after.jpg", timeout=60)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state-db", default=None, help="state database URL (default: the nodes' SQLite origin)")
    p.add_argument("--postgres", action="store_true", help="start a temporary PostgreSQL as the state database")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--events", type=int, default=100_000)
    args = p.parse_args()
    server = None
    if args.postgres:
        from bench.dbservers import PostgresServer

        server = PostgresServer().start()
        args.state_db = server.create_database()
    try:
        run(args)
    finally:
        if server is not None:
            server.stop()


def run(args: argparse.Namespace) -> None:
    upstream = Upstream()
    with tempfile.TemporaryDirectory() as d:
        a, b = _nodes(d, upstream, args.state_db)
        try:
            t = sorted(propagation(a, b, upstream, args.rounds))
            state = args.state_db or f"sqlite:///{d}/origin.db"
            out = {
                "state_db": "postgresql" if state.startswith("postgresql") else "sqlite",
                "propagation_ms": {"median": round(statistics.median(t) * 1000, 1),
                                   "p99": round(t[min(len(t) - 1, int(len(t) * 0.99))] * 1000, 1),
                                   "max": round(t[-1] * 1000, 1), "rounds": len(t)},
                "catch_up_s": {"events": args.events, "seconds": round(catch_up(a, b, state, args.events), 2)},
            }
            print(json.dumps(out))
        finally:
            a.stop()
            b.stop()
            upstream.close()


if __name__ == "__main__":
    main()
