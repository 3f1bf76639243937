"""The machine, tool versions, and CPU used by processes outside the benchmark (noise).

The benchmark often shares its machine (other engineers' test suites). Every
measurement records how much CPU processes outside the harness's own process tree
used meanwhile (`foreign_cpu`, in cores), so noisy samples are visible in the
report instead of silently lowering the numbers.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime jiffies)."""
    out: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _descendants(table: dict[int, tuple[int, int]], root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    seen = {root}
    stack = [root]
    while stack:
        for c in kids.get(stack.pop(), ()):
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def _total_busy() -> int:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]) - idle


class NoiseMonitor:
    """Samples, every `interval` s, CPU jiffies of processes not descended from this one."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.me = os.getpid()
        self._stop = threading.Event()
        self.foreign_jiffies = 0
        self.busy_jiffies = 0
        self.top: dict[int, int] = {}
        self._t0 = 0.0
        self.seconds = 0.0

    def _run(self) -> None:
        prev = _proc_table()
        prev_busy = _total_busy()
        while not self._stop.wait(self.interval):
            cur = _proc_table()
            busy = _total_busy()
            ours = _descendants(cur, self.me)
            for pid, (_, j) in cur.items():
                if pid in ours or pid not in prev:
                    continue
                d = j - prev[pid][1]
                if d > 0:
                    self.foreign_jiffies += d
                    self.top[pid] = self.top.get(pid, 0) + d
            self.busy_jiffies += busy - prev_busy
            prev, prev_busy = cur, busy

    def __enter__(self) -> NoiseMonitor:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.seconds = time.monotonic() - self._t0

    @property
    def foreign_cores(self) -> float:
        """Average cores used by processes outside the harness during the window."""
        return round(self.foreign_jiffies / CLK / max(self.seconds, 1e-6), 3)


def foreign_load(seconds: float = 2.0) -> float:
    with NoiseMonitor(interval=min(0.5, seconds / 2)) as m:
        time.sleep(seconds)
    return m.foreign_cores


def wait_quiet(max_wait: float, threshold: float = 0.15, window: float = 2.0) -> dict:
    """Wait (bounded) until other processes use under `threshold` cores."""
    t0 = time.monotonic()
    samples = []
    while True:
        f = foreign_load(window)
        samples.append(f)
        if f < threshold or time.monotonic() - t0 >= max_wait:
            return {"waited_s": round(time.monotonic() - t0, 1), "foreign_cores": f, "quiet": f < threshold}


def _version(cmd: list[str]) -> str | None:
    exe = shutil.which(cmd[0]) or (cmd[0] if os.path.exists(cmd[0]) else None)
    if exe is None:
        return None
    try:
        p = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=10)
        text = (p.stdout + p.stderr).strip().splitlines()
        return text[0] if text else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    try:
        import mitmproxy.version

        versions["mitmproxy"] = mitmproxy.version.VERSION
    except Exception:  # noqa: BLE001
        versions["mitmproxy"] = None
    try:
        import diskcache

        versions["diskcache"] = diskcache.__version__
    except Exception:  # noqa: BLE001
        versions["diskcache"] = None
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    versions["nginx"] = _version([nginx, "-v"]) if nginx else None
    versions["wrk"] = _version(["wrk", "--version"])
    versions["py-spy"] = _version(["py-spy", "--version"])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_at_start": os.getloadavg(),
    }
