"""Two builds of mediaedge on the same filled caches, interleaved: hit latency and CPU per hit.

    python -m bench.entries_ab --base-python OLD/.venv/bin/python [--levels 10000,1000000] [--reps 2]
                               [--caches DIR] [--out FILE]

The entries scenario of `python -m bench` measures one build; on a shared machine its
latencies move with whatever else runs, by more than the effect of a change to the
lookup path. This runs the other build (`--base-python`: an interpreter whose
environment has it installed) and this one back to back, alternating the order each
repeat, on the caches `python -m bench --only entries --entries-cache-dir DIR` filled
(DIR/c<entries>), and reports medians. CPU per request (the edge's user + system time
over the 1-connection run, divided by its requests) is the steadier figure: it does not
count the time spent waiting for a core.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from bench import load, procs

TEMPLATE = "/media/pop/s1024/%d.bin"


class _Edge(procs.EdgeServer):
    python = sys.executable

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[0] = self.python
        return cmd


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(python: str, cache_dir: str, n: int, seed: int) -> dict:
    """Start an edge on `cache_dir`, warm it, then 1-connection (5 s) and 16-connection (3 s) random keys."""
    wd = tempfile.mkdtemp(prefix="mediaedge-ab-")
    e = _Edge(wd, upstream="http://127.0.0.1:9", origin_db=f"sqlite:///{wd}/origin.db", cache_dir=cache_dir,
              cache_size="64GiB", name="ab")
    e.python = python
    t0 = time.monotonic()
    e.start()
    start_s = time.monotonic() - t0
    try:
        load.run_load(e.port, "/", conns=4, duration=1, mode="uniform", n=n, template=TEMPLATE, cpus=False)
        c0 = _cpu_s(e.pid)
        r1 = load.run_load(e.port, "/", conns=1, duration=5, mode="uniform", n=n, template=TEMPLATE, seed=seed,
                           cpus=False)
        cpu_us = (_cpu_s(e.pid) - c0) / max(1, r1["requests"]) * 1e6
        r16 = load.run_load(e.port, "/", conns=16, duration=3, mode="uniform", n=n, template=TEMPLATE,
                            seed=seed + 100, cpus=False)
    finally:
        e.stop()
    return {"start_s": start_s, "rps": r1["rps"], "p50_ms": r1["p50_ms"], "p99_ms": r1["p99_ms"],
            "rps16": r16["rps"], "cpu_us_per_req": cpu_us}


def run(base_python: str, levels: list[int], reps: int, caches: str) -> dict:
    builds = {"base": base_python, "this": sys.executable}
    runs: dict[str, list[dict]] = {}
    for rep in range(reps):
        order = ("base", "this") if rep % 2 == 0 else ("this", "base")
        for name in order:
            for n in levels:
                try:
                    r = measure(builds[name], os.path.join(caches, f"c{n}"), n, seed=rep + 3)
                except RuntimeError:  # a free port taken before the edge bound it: once more
                    r = measure(builds[name], os.path.join(caches, f"c{n}"), n, seed=rep + 3)
                print(name, n, json.dumps({k: round(v, 3) for k, v in r.items()}), file=sys.stderr, flush=True)
                runs.setdefault(f"{name} {n}", []).append(r)
    return {key: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]} | {"repeats": len(rs)}
            for key, rs in runs.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.entries_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--base-python", required=True, help="interpreter of the other build")
    p.add_argument("--levels", default="10000,1000000")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--caches", default="/tmp/entries", help="DIR of `--entries-cache-dir DIR` (DIR/c<entries>)")
    p.add_argument("--out", default="", help="also write the medians here (JSON)")
    a = p.parse_args(argv)
    res = run(a.base_python, [int(x) for x in a.levels.split(",") if x], a.reps, a.caches)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
