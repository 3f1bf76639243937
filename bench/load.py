"""Load generation: wrk (Debian) with bench/lua/bench.lua, or a Python fallback.

Both run as a separate process and print one `BENCHJSON {...}` line, parsed into
the same dict: requests, seconds, bytes, errors, req/s, MB/s and latency
percentiles in milliseconds. The Python generator (asyncio, keep-alive, one
process) is used only when wrk is missing; the report says which tool ran and
shows its own ceiling against the origin.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import shutil
import subprocess
import sys
import time

LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua", "bench.lua")
FORCE_PYTHON = os.environ.get("BENCH_LOADGEN") == "python"


def zipf_cdf(n: int, s: float) -> list[float]:
    """Cumulative probabilities of ranks 1..n under Zipf's law with exponent `s`: rank k
    has weight 1/k**s. The one copy: bench/hitratio.py and bench/run.py draw from it too
    (`bisect_left(cdf, random())` is the 0-based rank drawn)."""
    w = [1 / (k ** s) for k in range(1, n + 1)]
    tot = sum(w)
    cdf, acc = [], 0.0
    for x in w:
        acc += x / tot
        cdf.append(acc)
    return cdf


def wrk_binary() -> str | None:
    if FORCE_PYTHON:
        return None
    return shutil.which("wrk")


def tool_name() -> str:
    return "wrk" if wrk_binary() else "python-asyncio"


def _parse(out: str) -> dict:
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            raw = json.loads(line[len("BENCHJSON "):])
            secs = raw["duration_us"] / 1e6 or 1e-9
            errors = sum(raw[k] for k in raw if k.startswith("err_"))
            return {
                "requests": raw["requests"],
                "seconds": round(secs, 3),
                "bytes": raw["bytes"],
                "errors": errors,
                "errors_detail": {k[4:]: raw[k] for k in raw if k.startswith("err_") and raw[k]},
                "rps": round(raw["requests"] / secs, 1),
                "mbps": round(raw["bytes"] / secs / 1e6, 2),
                "p50_ms": raw["p50_us"] / 1000,
                "p90_ms": raw["p90_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "max_ms": raw["max_us"] / 1000,
                "mean_ms": round(raw["mean_us"] / 1000, 4),
            }
    raise RuntimeError(f"no BENCHJSON line in load generator output: {out[-2000:]}")


LOAD_CPUS: set[int] | None = None  # CPU affinity of the load generator (set by the harness when pinning)


def run_load(port: int, path: str, *, conns: int, duration: float, threads: int = 1, mode: str = "single",
             n: int = 1, s: float = 1.0, template: str = "/%d", seed: int = 1, timeout_s: float = 10.0,
             cpus: set[int] | None | bool = True) -> dict:
    """Drive http://127.0.0.1:port<path> with `conns` keep-alive connections for `duration` s."""
    threads = max(1, min(threads, conns))
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_N": str(n), "BENCH_S": str(s), "BENCH_TEMPLATE": template,
           "BENCH_SEED": str(seed)}
    wrk = wrk_binary()
    dur = max(1, int(round(duration)))
    if wrk:
        cmd = [wrk, "-t", str(threads), "-c", str(conns), "-d", f"{dur}s", "--timeout", f"{int(timeout_s)}s",
               "-s", LUA, f"http://127.0.0.1:{port}{path}"]
    else:
        cmd = [sys.executable, "-m", "bench.load", "--port", str(port), "--path", path, "-c", str(conns),
               "-d", str(dur), "--timeout", str(timeout_s)]
    pin = LOAD_CPUS if cpus is True else (cpus or None)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=dur + 60,
                       preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None)
    if p.returncode != 0:
        raise RuntimeError(f"load generator failed ({p.returncode}): {p.stderr[-2000:]} {p.stdout[-2000:]}")
    res = _parse(p.stdout)
    res["tool"] = "wrk" if wrk else "python-asyncio"
    res["conns"] = conns
    return res


# ----------------------------------------------------------------------------- python fallback
async def _one_conn(port: int, paths, deadline: float, lat: list[float], stats: dict, timeout: float) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        stats["err_connect"] += 1
        return
    try:
        while time.monotonic() < deadline:
            path = paths()
            t0 = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:].strip())
                body_read = 0
                while body_read < length:
                    chunk = await asyncio.wait_for(reader.read(min(1 << 20, length - body_read)), timeout)
                    if not chunk:
                        raise ConnectionError("closed mid-body")
                    body_read += len(chunk)
            except TimeoutError:
                stats["err_timeout"] += 1
                return
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                stats["err_read"] += 1
                return
            lat.append(time.perf_counter() - t0)
            stats["bytes"] += len(head) + length
            if status >= 400:
                stats["err_status"] += 1
    finally:
        writer.close()


async def _py_main(port: int, path: str, conns: int, duration: float, timeout: float) -> dict:
    mode = os.environ.get("BENCH_MODE", "single")
    n = int(os.environ.get("BENCH_N", "1"))
    s = float(os.environ.get("BENCH_S", "1.0"))
    tmpl = os.environ.get("BENCH_TEMPLATE", "/%d")
    rng = random.Random(int(os.environ.get("BENCH_SEED", "1")))
    if mode == "zipf":
        cdf = zipf_cdf(n, s)

        def paths() -> str:
            return tmpl % min(n - 1, bisect.bisect_left(cdf, rng.random()))
    elif mode == "uniform":
        def paths() -> str:
            return tmpl % rng.randrange(n)
    else:
        def paths() -> str:
            return path
    lat: list[float] = []
    stats = {"bytes": 0, "err_connect": 0, "err_read": 0, "err_write": 0, "err_status": 0, "err_timeout": 0}
    t0 = time.monotonic()
    deadline = t0 + duration
    await asyncio.gather(*(_one_conn(port, paths, deadline, lat, stats, timeout) for _ in range(conns)))
    elapsed = time.monotonic() - t0
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q / 100 * len(lat)))] * 1e6 if lat else 0.0

    return {"requests": len(lat), "duration_us": int(elapsed * 1e6), **stats,
            "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99), "max_us": (lat[-1] * 1e6 if lat else 0),
            "mean_us": (sum(lat) / len(lat) * 1e6 if lat else 0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description="fallback load generator")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("-c", type=int, default=16)
    p.add_argument("-d", type=float, default=5)
    p.add_argument("--timeout", type=float, default=10)
    a = p.parse_args(argv)
    res = asyncio.run(_py_main(a.port, a.path, a.c, a.d, a.timeout))
    print("BENCHJSON " + json.dumps({k: (int(v) if k.endswith("_us") and k != "mean_us" else v)
                                     for k, v in res.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
