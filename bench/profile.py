"""Where the time goes on the hit path: py-spy on the running edge, parsed.

`record()` runs `py-spy record --format raw` (collapsed stacks) on a pid while the
caller drives load, plus an SVG flamegraph; `summarize()` turns the stacks into
self time per function, inclusive time per function, and a few named buckets
(mitmproxy's machinery, the engine, storage/SQLite, hashing, worker-thread waits).
"""
from __future__ import annotations

import os
import re
import subprocess
from collections import Counter


def pyspy() -> str | None:
    from bench.procs import venv_executable

    return venv_executable("py-spy")


def record(pid: int, seconds: int, raw_out: str, svg_out: str | None, rate: int = 250) -> subprocess.Popen:
    """Start py-spy recording (returns the process; wait on it after driving load)."""
    exe = pyspy()
    assert exe
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate), "--format", "raw",
           "--nonblocking", "--threads", "-o", raw_out]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def flamegraph(pid: int, seconds: int, svg_out: str, rate: int = 250) -> subprocess.Popen:
    exe = pyspy()
    assert exe
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate), "--nonblocking",
           "-o", svg_out]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def _frame_name(frame: str) -> tuple[str, str]:
    """'handle (proxy/engine.py:112)' -> ('proxy/engine.py:handle', 'proxy/engine.py')."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    f = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/", os.getcwd() + "/"):
        if marker in f:
            f = f.split(marker, 1)[1]
    return f"{f}:{m.group('func')}", f


BUCKETS = [
    # (name, predicate on the set of files/functions in one stack) — first match wins, by leafmost frame
    ("SQLite (diskcache get)", lambda fn: "diskcache/core.py" in fn or "sqlite3" in fn),
    ("sha256 of the body", lambda fn: "hashlib" in fn or "sha256" in fn),
    ("JSON trailer decode", lambda fn: fn.startswith("json/") or "from_json" in fn),
    ("proxy/storage.py", lambda fn: fn.startswith("proxy/storage.py")),
    ("proxy/respond.py + policy", lambda fn: fn.startswith(("proxy/respond.py", "proxy/policy/"))),
    ("proxy/headers.py", lambda fn: fn.startswith("proxy/headers.py")),
    ("proxy/stats.py", lambda fn: fn.startswith(("proxy/stats.py", "proxy/topk.py"))),
    ("proxy/engine.py", lambda fn: fn.startswith("proxy/engine.py")),
    ("proxy/shell.py + addons/", lambda fn: fn.startswith(("addons/", "proxy/shell.py", "proxy/record.py"))),
    ("thread pool (to_thread hand-off)", lambda fn: fn.startswith(("concurrent/futures", "threading.py",
                                                                    "asyncio/threads.py"))),
    ("mitmproxy HTTP/1 parse+assemble", lambda fn: "mitmproxy/proxy/layers/http" in fn or "mitmproxy/net/http" in fn
     or "h11" in fn),
    ("mitmproxy hooks/addon dispatch", lambda fn: "mitmproxy/addonmanager.py" in fn or "mitmproxy/hooks.py" in fn
     or "mitmproxy/master.py" in fn),
    ("mitmproxy other (layers, server, flow objects)", lambda fn: fn.startswith("mitmproxy/")),
    ("asyncio event loop / sockets", lambda fn: fn.startswith(("asyncio/", "selectors.py", "socket.py"))),
]


def summarize(raw_path: str, top: int = 25) -> dict:
    """Parse py-spy raw output (`frame;frame;... count`, root first) into tables."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    idle_workers = 0
    with open(raw_path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or " " not in line:
                continue
            stack, _, n = line.rpartition(" ")
            try:
                count = int(n)
            except ValueError:
                continue
            frames = [fr for fr in stack.split(";") if fr]
            if not frames:
                continue
            thread = frames[0] if frames[0].startswith(("thread", "process")) else ""
            names = [_frame_name(fr)[0] for fr in frames if not fr.startswith(("thread ", "process "))]
            if not names:
                continue
            if names[-1] == "concurrent/futures/thread.py:_worker":
                # An idle pool thread parked on its queue (py-spy's idle detection misses some of
                # these under CPU contention): not work, left out of every share.
                idle_workers += count
                continue
            total += count
            threads[thread[:60] or "?"] += count
            self_t[names[-1]] += count
            for nm in set(names):
                incl[nm] += count
            # bucket: the leafmost frame that matches a bucket
            for nm in reversed(names):
                b = next((name for name, pred in BUCKETS if pred(nm)), None)
                if b is not None:
                    buckets[b] += count
                    break
            else:
                buckets["other"] += count

    def pct(c: int) -> float:
        return round(100.0 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "idle_pool_samples_dropped": idle_workers,
        "self": [{"function": k, "pct": pct(v)} for k, v in self_t.most_common(top)],
        "inclusive": [{"function": k, "pct": pct(v)} for k, v in incl.most_common(top * 2)],
        "buckets": [{"bucket": k, "pct": pct(v)} for k, v in buckets.most_common()],
        "threads": [{"thread": k, "pct": pct(v)} for k, v in threads.most_common(8)],
    }
