"""The memory tier's admission on a working set larger than the tier, in process.

    python -m bench.memtier [--entries 40000] [--requests 40000] [--memory 64MiB,16MiB]
                            [--cache DIR] [--seed 7]

Fills a cache with small entries (bench/populate.py; DIR is reused when it holds them),
then replays uniform and Zipf (s = 0.9) traces through `Engine.hot_hit`, as the request
hook does, under two admission rules for the memory tier (proxy/hot.py): mediaedge's
(TinyLFU: once the tier is full, a target must have been asked for more often than the
entry it would push out) and the earlier one (any target asked for twice). Each run
warms up with one trace of `--requests`, then measures another. It reports the share of
requests served from memory and the tier's puts: a put on a full tier builds an entry and
evicts another, which is churn when the evicted one is as likely to be asked for again.
Deterministic traces (same seed, same requests); CPU time is reported but moves with
whatever else runs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from typing import Any

from bench.hitratio import zipf_trace
from bench.populate import TEMPLATE, count, populate
from mediaedge import hitslab
from mediaedge.config import parse_size
from mediaedge.contract import EngineConfig
from mediaedge.engine import Engine, MediaRequest
from mediaedge.headers import Headers
from mediaedge.policy.admission import FrequencySketch
from mediaedge.storage import CacheStore

OBJECT_BYTES = 1024
CACHE_LIMIT = 1 << 30
RULES = ("tinylfu", "second-request")


def _trace(kind: str, n: int, requests: int, seed: int) -> list[int]:
    if kind == "zipf":
        return zipf_trace(n, 0.9, requests, seed, perm_seed=3)
    rng = random.Random(seed)
    return [rng.randrange(n) for _ in range(requests)]


def run(store: CacheStore, rule: str, memory: int, trace: list[int], warm: list[int]) -> dict[str, Any]:
    """Replay `warm`, then `trace`, through a fresh engine's hot path; counts of the second."""
    store.sketch = FrequencySketch(max(1, store.entry_count()))  # no counts from the run before
    engine = Engine(EngineConfig(memory_size=memory), store, upstream=None, db=None, clock=time.time)
    engine.ready.set()
    cache, hot = engine.cache, engine.cache.hot
    if rule == "second-request":
        hot.victim = lambda target, size: None  # type: ignore[method-assign]  # the rule before TinyLFU
    counts = {"puts": 0, "memory": 0}
    put, probe = hot.put, cache.probe

    def counted_put(*args: Any, **kwargs: Any) -> None:
        counts["puts"] += 1
        put(*args, **kwargs)

    def counted_probe(target: str, headers: Headers) -> Any:
        found = probe(target, headers)
        counts["memory"] += found is not None
        return found

    hot.put = counted_put  # type: ignore[method-assign]
    cache.probe = counted_probe  # type: ignore[method-assign]
    headers = Headers()
    targets = [TEMPLATE.format(size=OBJECT_BYTES, i=i) for i in range(max(max(warm), max(trace)) + 1)]
    unserved = 0
    for phase in (warm, trace):
        counts.update(puts=0, memory=0)
        unserved = 0
        t0 = time.process_time()
        for i in phase:
            unserved += engine.hot_hit(MediaRequest("GET", targets[i], headers)) is None
        cpu = time.process_time() - t0
    return {"rule": rule, "memory_bytes": memory, "requests": len(trace), "puts": counts["puts"],
            "memory_hits": counts["memory"], "memory_ratio": round(counts["memory"] / len(trace), 4),
            "held": len(hot._items), "not_hot_path": unserved, "cpu_us_per_request": round(cpu / len(trace) * 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memtier", description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=40_000, help="small entries in the cache")
    p.add_argument("--requests", type=int, default=40_000, help="requests per trace (one more trace warms up)")
    p.add_argument("--memory", default="64MiB,16MiB", help="memory-tier sizes to run, comma-separated")
    p.add_argument("--cache", help="cache directory (filled when it holds fewer entries; default: a temporary one)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    a = p.parse_args(argv)
    directory = a.cache or tempfile.mkdtemp(prefix="mediaedge-memtier-")
    os.makedirs(directory, exist_ok=True)
    have = count(directory, size=OBJECT_BYTES)
    if have < a.entries:
        populate(directory, have, a.entries, size=OBJECT_BYTES, size_limit=CACHE_LIMIT, method="bulk")
    store = CacheStore(directory, size_limit=CACHE_LIMIT, slab_size=hitslab.default_size(CACHE_LIMIT))
    results = []
    try:
        for kind in ("uniform", "zipf"):
            warm = _trace(kind, a.entries, a.requests, a.seed)
            trace = _trace(kind, a.entries, a.requests, a.seed + 1)
            for memory in (parse_size(m) for m in a.memory.split(",") if m):
                for rule in RULES:
                    results.append({"trace": kind, **run(store, rule, memory, trace, warm)})
    finally:
        store.close()
    if a.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{a.entries:,} entries of {OBJECT_BYTES} bytes, {a.requests:,} requests measured after as many of warm-up")
    print("| trace | memory tier | rule | from memory | puts | entries held | CPU µs per request |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['trace']} | {r['memory_bytes'] >> 20} MiB | {r['rule']} | {r['memory_ratio']:.1%} | {r['puts']:,} "
              f"| {r['held']:,} | {r['cpu_us_per_request']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
