"""Hit ratio of eviction policies on the same traces, at the same byte capacity.

    python -m bench.hitratio [--n 100000] [--s 0.9] [--fraction 0.091] [--requests 1000000]

Replays a Zipf trace (the first half warms up, the second is measured) and a
scan-heavy trace (that warm-up, one sweep over every object in id order, then as many
Zipf requests again, measured after the sweep; and the same without the sweep, to see
what it costs) against: LRU; least-recently-stored (FIFO, what the cache did
before); `tinylfu` (mediaedge.policy.admission, exactly as proxy/storage.py applies it:
the sketch, admission at the head, the sampled-tail cull with reinsertion); the
W-TinyLFU and S3-FIFO designs for reference; and the ideal for a stationary Zipf
source, the most popular objects pinned. Hit ratios count the measured part of each
trace only (after the warm-up). Deterministic: same seed, same numbers.
"""
from __future__ import annotations

import argparse
import bisect
import json
import random
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from bench.load import zipf_cdf
from mediaedge.policy.admission import TAIL_SAMPLE, FrequencySketch, Resident, admit, plan_cull


NOMINAL_FRACTION = 0.091  # the benchmark's cache: 40MiB held 9,105 of 100,000 2 KB objects


def zipf_trace(n: int, s: float, requests: int, seed: int, perm_seed: int) -> list[int]:
    """Object ids 0..n-1, id 0 the most popular. Ids are shuffled through a fixed
    permutation so popularity is not the id order (a sweep in id order is then not
    a sweep in popularity order)."""
    cdf = zipf_cdf(n, s)
    rng = random.Random(seed)
    perm = list(range(n))
    random.Random(perm_seed).shuffle(perm)
    return [perm[min(n - 1, bisect.bisect_left(cdf, rng.random()))] for _ in range(requests)]


# ------------------------------------------------------------------ policies
# Each takes the trace, the sizes, the byte capacity and the index the measurement
# starts at; returns hits counted from there.
Policy = Callable[[list[int], Callable[[int], int], int, int], int]


def run_lru(trace: list[int], size: Callable[[int], int], cap: int, start: int, *, fifo: bool = False) -> int:
    cache: OrderedDict[int, int] = OrderedDict()
    used = hits = 0
    for i, k in enumerate(trace):
        if k in cache:
            if not fifo:
                cache.move_to_end(k)
            hits += i >= start
            continue
        sz = size(k)
        if sz > cap:
            continue
        cache[k] = sz
        used += sz
        while used > cap:
            used -= cache.popitem(last=False)[1]
    return hits


def run_fifo(trace: list[int], size: Callable[[int], int], cap: int, start: int) -> int:
    return run_lru(trace, size, cap, start, fifo=True)


def run_tinylfu(trace: list[int], size: Callable[[int], int], cap: int, start: int) -> int:
    """mediaedge's policy: as proxy/storage.py runs it, with the FIFO as an OrderedDict."""
    cache: OrderedDict[int, int] = OrderedDict()
    sketch = FrequencySketch(max(1, cap // max(1, size(trace[0]))), **SKETCH)
    used = hits = 0
    for i, k in enumerate(trace):
        sketch.record(k)
        if k in cache:
            hits += i >= start
            continue
        sz = size(k)
        tail = _tail(cache, sketch)
        if not admit(sketch.estimate(k), sz, cap - used, tail, cap).admit:
            continue
        cache[k] = sz
        used += sz
        while used > cap:
            plan = plan_cull(_tail(cache, sketch), used - cap)
            for key in plan.evict:
                used -= cache.pop(int(key))
            for key in plan.reinsert:
                cache.move_to_end(int(key))
            if not plan.evict:
                break
    return hits


SKETCH: dict = {}


def _tail(cache: OrderedDict[int, int], sketch: FrequencySketch) -> list[Resident]:
    out = []
    for k, sz in cache.items():
        out.append(Resident(str(k), sz, sketch.estimate(k)))
        if len(out) == TAIL_SAMPLE:
            break
    return out


def run_wtinylfu(trace: list[int], size: Callable[[int], int], cap: int, start: int) -> int:
    """Reference: Caffeine's W-TinyLFU (1% LRU window, SLRU main 20/80), entries in memory."""
    obj = max(1, size(trace[0]))
    total = max(2, cap // obj)
    wcap = max(1, total // 100)
    mcap = total - wcap
    pcap = int(mcap * 0.8)
    window: OrderedDict[int, None] = OrderedDict()
    prob: OrderedDict[int, None] = OrderedDict()
    prot: OrderedDict[int, None] = OrderedDict()
    sketch = FrequencySketch(total)
    hits = 0
    for i, k in enumerate(trace):
        sketch.record(k)
        if k in window:
            window.move_to_end(k)
        elif k in prot:
            prot.move_to_end(k)
        elif k in prob:
            del prob[k]
            prot[k] = None
            if len(prot) > pcap:
                prob[prot.popitem(last=False)[0]] = None
        else:
            window[k] = None
            if len(window) > wcap:
                cand = window.popitem(last=False)[0]
                if len(prob) + len(prot) < mcap:
                    prob[cand] = None
                else:
                    victim = next(iter(prob)) if prob else next(iter(prot))
                    if sketch.estimate(cand) > sketch.estimate(victim):
                        (prob if victim in prob else prot).pop(victim)
                        prob[cand] = None
            continue
        hits += i >= start
    return hits


def run_s3fifo(trace: list[int], size: Callable[[int], int], cap: int, start: int) -> int:
    """Reference: S3-FIFO (Yang et al. 2023): 10% small FIFO, main FIFO with 2-bit
    reinsertion, ghost FIFO of keys; frequency per entry in memory."""
    obj = max(1, size(trace[0]))
    total = max(2, cap // obj)
    scap = max(1, total // 10)
    mcap = total - scap
    small: deque[int] = deque()
    main: deque[int] = deque()
    ghost: OrderedDict[int, None] = OrderedDict()
    freq: dict[int, int] = {}
    where: dict[int, str] = {}
    hits = 0

    def evict_main() -> None:
        while main:
            v = main.popleft()
            if freq[v] > 0:
                freq[v] -= 1
                main.append(v)
            else:
                del where[v], freq[v]
                return

    def evict_small() -> None:
        while small:
            v = small.popleft()
            if freq[v] > 1:
                if len(main) >= mcap:
                    evict_main()
                main.append(v)
                where[v] = "m"
                freq[v] = 0
                return
            del where[v], freq[v]
            ghost[v] = None
            if len(ghost) > mcap:
                ghost.popitem(last=False)
            return

    for i, k in enumerate(trace):
        if k in where:
            freq[k] = min(3, freq[k] + 1)
            hits += i >= start
            continue
        if k in ghost:
            del ghost[k]
            if len(main) >= mcap:
                evict_main()
            main.append(k)
            where[k] = "m"
        else:
            if len(small) >= scap:
                evict_small()
            small.append(k)
            where[k] = "s"
        freq[k] = 0
    return hits


def run_ideal(trace: list[int], size: Callable[[int], int], cap: int, start: int, popular: Iterable[int]) -> int:
    """The most popular objects (by the source's own ranking) pinned, as many as fit."""
    pinned, used = set(), 0
    for k in popular:
        sz = size(k)
        if used + sz > cap:
            break
        pinned.add(k)
        used += sz
    return sum(1 for k in trace[start:] if k in pinned)


POLICIES: dict[str, Policy] = {"lru": run_lru, "fifo": run_fifo, "tinylfu": run_tinylfu,
                               "w-tinylfu": run_wtinylfu, "s3-fifo": run_s3fifo}


def popularity(n: int, seed: int) -> list[int]:
    """Object ids, most popular first: the permutation `zipf_trace` uses (perm[rank] = id)."""
    perm = list(range(n))
    random.Random(seed + 1).shuffle(perm)
    return perm


def make_traces(n: int, s: float, requests: int, seed: int) -> dict[str, tuple[list[int], int]]:
    """The traces, each with the index its measured part starts at. zipf: the first half
    warms up; scan: that warm-up, a sweep over every object in id order, then half as
    many Zipf requests again, measured after the sweep; no-sweep: the same without the
    sweep (the difference is what the sweep costs afterwards). bench/hitratio_live.py
    replays the same traces against a live edge."""
    zipf = zipf_trace(n, s, requests, seed, seed + 1)
    half = requests // 2
    again = zipf_trace(n, s, half, seed + 7, seed + 1)
    return {"zipf": (zipf, half), "scan": (zipf[:half] + list(range(n)) + again, half + n),
            "no-sweep": (zipf[:half] + again, half)}


def measure(n: int, s: float, fraction: float, requests: int, obj: int, seed: int,
            policies: Iterable[str] = tuple(POLICIES)) -> dict:
    size = (lambda k: obj)  # noqa: E731 - every object the same size, as in the live benchmark
    cap = int(n * fraction) * obj
    perm = popularity(n, seed)
    traces = make_traces(n, s, requests, seed)
    out: dict = {"catalogue": n, "zipf_s": s, "object_bytes": obj, "capacity_bytes": cap,
                 "capacity_entries": cap // obj, "cache_fraction": round(cap / (n * obj), 4),
                 "requests": requests, "seed": seed, "traces": {}}
    for name, (trace, start) in traces.items():
        counted = len(trace) - start
        row: dict = {"requests": len(trace), "measured": counted}
        for p in policies:
            t0 = time.perf_counter()
            row[p] = round(POLICIES[p](trace, size, cap, start) / counted, 4)
            row[f"{p}_s"] = round(time.perf_counter() - t0, 1)
        row["ideal"] = round(run_ideal(trace, size, cap, start, perm) / counted, 4)
        out["traces"][name] = row
    return out


def sketch_memory(entries: int = 1_000_000, records: int = 200_000) -> dict:
    """What the policy keeps in memory for a cache of `entries` entries (the sketch is
    all of it: the FIFO order is the disk's), measured with tracemalloc, and the cost
    of counting one request."""
    import tracemalloc

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sketch = FrequencySketch(entries)
    for k in range(records):
        sketch.record(k)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    t0 = time.perf_counter()
    for k in range(records):
        sketch.record(k)
    per = (time.perf_counter() - t0) / records
    return {"entries": entries, "bytes": held, "bytes_per_entry": round(held / entries, 2),
            "record_us": round(per * 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hitratio", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="objects in the catalogue")
    p.add_argument("--s", type=float, default=0.9, help="Zipf exponent")
    p.add_argument("--fraction", type=float, default=NOMINAL_FRACTION, help="cache capacity as a fraction of the catalogue")
    p.add_argument("--requests", type=int, default=1_000_000, help="Zipf requests (the first half warms up)")
    p.add_argument("--object-bytes", type=int, default=2048)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset of " + ",".join(POLICIES))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    res = measure(a.n, a.s, a.fraction, a.requests, a.object_bytes, a.seed, [x for x in a.policies.split(",") if x])
    res["memory"] = sketch_memory()
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['catalogue']:,} objects, Zipf s={res['zipf_s']}, capacity {res['capacity_entries']:,} objects "
          f"({res['cache_fraction']:.1%}, {res['capacity_bytes']:,} bytes), seed {res['seed']}")
    names = [x for x in a.policies.split(",") if x] + ["ideal"]
    print("| trace | requests (measured) | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for name, row in res["traces"].items():
        print(f"| {name} | {row['requests']:,} ({row['measured']:,}) | " + " | ".join(f"{row[x]:.3f}" for x in names) + " |")
    m = res["memory"]
    print(f"tinylfu memory at {m['entries']:,} entries: {m['bytes']:,} bytes ({m['bytes_per_entry']} per entry); "
          f"{m['record_us']} µs to count one request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
