"""The contenders as real processes on loopback: origin, mediaedge, mitmdump, nginx, ceiling.

Every server binds 127.0.0.1 on a free port, logs to a file in the run's work
directory, and is stopped by its own pid (SIGTERM, then SIGKILL after a bound).
"""
from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys

from bench.edge import venv_executable as venv_executable  # re-exported: bench modules use procs.venv_executable
from bench.edge import wait_until
from bench.ports import free_port as free_port  # re-exported: bench modules use procs.free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return out


def proc_status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def http_get(port: int, path: str, timeout: float = 10.0, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


class Server:
    """One contender process. `port` is where the load goes."""

    name = "server"
    kind = "server"

    def __init__(self, workdir: str, name: str | None = None) -> None:
        self.workdir = workdir
        self.extra_env: dict[str, str] = {}
        self.cpus: set[int] | None = None  # CPU affinity (None: any)
        if name:
            self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(workdir, f"{self.name}-{self.port}.log")
        self._log = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}

    def ready(self) -> bool:
        return listening(self.port)

    def start(self, timeout: float = 60.0) -> Server:
        self._log = open(self.log_path, "ab")
        cpus = self.cpus
        self.proc = subprocess.Popen(self.command(), cwd=REPO, env=self.env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
            return self.ready()

        try:
            wait_until(up, timeout, 0.05, f"{self.name} to listen")
        except AssertionError as e:  # timed out (the bench's callers expect a RuntimeError)
            self.stop()
            raise RuntimeError(str(e)) from e
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The process and its children (nginx workers)."""
        return [self.pid, *_children(self.pid)]

    def rss_kib(self) -> int:
        return sum(proc_status_kib(p, "VmRSS") for p in self.pids())

    def peak_rss_kib(self) -> int:
        return sum(proc_status_kib(p, "VmHWM") for p in self.pids())

    def mem(self) -> dict:
        """RSS split into anonymous (heap: Python objects, SQLite page caches) and file-backed
        (mmap'd SQLite pages, libraries) memory, plus the thread count."""
        pids = self.pids()
        return {"rss_kib": sum(proc_status_kib(p, "VmRSS") for p in pids),
                "rss_anon_kib": sum(proc_status_kib(p, "RssAnon") for p in pids),
                "rss_file_kib": sum(proc_status_kib(p, "RssFile") for p in pids),
                "threads": sum(proc_status_kib(p, "Threads") for p in pids)}

    def log_tail(self, n: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def pause(self) -> None:
        """SIGSTOP: an idle contender's timers (log polls, samplers) must not wake on the
        core the one under test runs on."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class OriginServer(Server):
    name = "origin"
    kind = "origin"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.origin", "--port", str(self.port)]

    def counts(self, prefix: str) -> dict[str, int]:
        import json

        return json.loads(http_get(self.port, f"/__counts?prefix={prefix}")[2])

    def total(self) -> int:
        import json

        return int(json.loads(http_get(self.port, "/__total")[2])["requests"])

    def connections(self) -> int:
        """TCP connections the origin accepted so far (each /__ query adds one)."""
        import json

        return int(json.loads(http_get(self.port, "/__total")[2])["connections"])


class EdgeServer(Server):
    """`python -m mediaedge serve` (mediaedge), as a user runs it."""

    name = "mediaedge"
    kind = "mediaedge"

    def __init__(self, workdir: str, *, upstream: str | None, origin_db: str, cache_dir: str,
                 cache_size: str = "8GiB", extra: list[str] | None = None, name: str | None = None,
                 gc_probe: bool = False) -> None:
        super().__init__(workdir, name)
        self.gc_log = os.path.join(workdir, f"{self.name}-{self.port}.gc.log") if gc_probe else None
        self.admin_port = free_port()
        self.upstream = upstream
        self.origin_db = origin_db
        self.cache_dir = cache_dir
        self.cache_size = cache_size
        self.extra = list(extra or [])

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "mediaedge", "serve", "--listen", f"127.0.0.1:{self.port}",
               "--admin-listen", f"127.0.0.1:{self.admin_port}", "--cache-dir", self.cache_dir,
               "--origin-db", self.origin_db, "--cache-size", self.cache_size]
        if self.upstream:
            cmd += ["--upstream", self.upstream]
        return cmd + self.extra

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.gc_log:
            probe = os.path.join(REPO, "bench", "gcprobe")
            env["PYTHONPATH"] = probe + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            env["GCPROBE_LOG"] = self.gc_log
        return env

    def gc_mark(self) -> int:
        """Where the GC log ends now (pass to gc_pauses to look at what happened since)."""
        try:
            return os.path.getsize(self.gc_log) if self.gc_log else 0
        except OSError:
            return 0

    def gc_pauses(self, since: int = 0) -> dict | None:
        """Garbage-collector stops logged since `since`: generation-2 passes and any pass >= 2 ms."""
        if not self.gc_log:
            return None
        try:
            with open(self.gc_log) as f:
                f.seek(since)
                rows = [line.split() for line in f if line.strip()]
        except OSError:
            return None
        gen2 = sorted(float(r[1]) for r in rows if r[0] == "2")
        slow = [float(r[1]) for r in rows if float(r[1]) >= 2.0]
        return {"gen2_passes": len(gen2), "gen2_max_ms": round(gen2[-1], 1) if gen2 else 0.0,
                "gen2_median_ms": round(gen2[len(gen2) // 2], 1) if gen2 else 0.0,
                "passes_over_2ms": len(slow), "stopped_ms_total": round(sum(slow), 1),
                "max_ms": round(max(slow), 1) if slow else 0.0}

    def ready(self) -> bool:
        status, _, _ = http_get(self.admin_port, "/healthz", timeout=1)
        return status == 200 and listening(self.port)

    def stats(self) -> dict:
        import json

        return json.loads(http_get(self.admin_port, "/stats")[2])

    def restart(self) -> EdgeServer:
        self.stop()
        return self.start()  # type: ignore[return-value]


class MitmdumpServer(Server):
    """Plain `mitmdump --mode reverse:ORIGIN` pass-through: what users run without a cache."""

    name = "mitmdump"
    kind = "mitmdump"

    def __init__(self, workdir: str, origin_url: str, *, stream_large: bool = True, name: str | None = None) -> None:
        super().__init__(workdir, name)
        self.origin_url = origin_url
        self.stream_large = stream_large

    def command(self) -> list[str]:
        exe = venv_executable("mitmdump") or "mitmdump"
        cmd = [exe, "-q", "--mode", f"reverse:{self.origin_url}@127.0.0.1:{self.port}",
               "--set", "connection_strategy=lazy"]
        if self.stream_large:
            cmd += ["--set", "stream_large_bodies=1m"]
        return cmd


class CeilingServer(Server):
    name = "ceiling"
    kind = "ceiling"

    def __init__(self, workdir: str, size: int = 10240, name: str | None = None) -> None:
        super().__init__(workdir, name)
        self.size = size

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.ceiling", "--port", str(self.port), "--size", str(self.size)]


NGINX_CONF = """\
{user}
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/client_body;
  proxy_temp_path {tmp}/proxy_temp;
  fastcgi_temp_path {tmp}/fastcgi_temp;
  uwsgi_temp_path {tmp}/uwsgi_temp;
  scgi_temp_path {tmp}/scgi_temp;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  proxy_cache_path {tmp}/cache levels=1:2 keys_zone=media:64m max_size={max_size} inactive=7d use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache media;
      proxy_cache_key $request_uri;
      proxy_cache_valid 200 1d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 60s;
      proxy_cache_lock_age 60s;
      proxy_max_temp_file_size 0;
      add_header Cache-Status "nginx; $upstream_cache_status";
    }}
  }}
}}
"""


class NginxServer(Server):
    """Debian's nginx with proxy_cache, configured in a temp dir (one worker: one core, like mediaedge)."""

    name = "nginx"
    kind = "nginx"

    def __init__(self, workdir: str, origin_port: int, *, workers: int = 1, max_size: str = "8g") -> None:
        super().__init__(workdir)
        self.tmp = os.path.join(workdir, f"nginx-{self.port}")
        os.makedirs(self.tmp, exist_ok=True)
        user = "user root root;" if os.geteuid() == 0 else ""
        self.conf = os.path.join(self.tmp, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF.format(user=user, workers=workers, tmp=self.tmp, max_size=max_size,
                                      origin_port=origin_port, port=self.port))

    @staticmethod
    def available() -> bool:
        return nginx_binary() is not None

    def command(self) -> list[str]:
        return [nginx_binary() or "nginx", "-p", self.tmp, "-e", os.path.join(self.tmp, "error.log"),
                "-c", self.conf, "-g", "daemon off;"]

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        # workers follow the master (SIGTERM is a fast shutdown); nothing else to do

    def cache_bytes(self) -> int:
        total = 0
        for root, _, files in os.walk(os.path.join(self.tmp, "cache")):
            for fn in files:
                try:
                    total += os.stat(os.path.join(root, fn)).st_blocks * 512
                except OSError:
                    pass
        return total


def nginx_binary() -> str | None:
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and os.path.exists(cand):
            return cand
    return None


def du_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for fn in files:
            try:
                total += os.stat(os.path.join(root, fn)).st_blocks * 512
            except OSError:
                pass
    return total
