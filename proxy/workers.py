"""`--workers N`: N serving processes behind one node, and the supervisor that runs them.

Why processes: the hit path of one process is at mitmproxy's ceiling and Python runs
one thread at a time, so more cores need more processes. Each worker is the ordinary
`mediaedge serve` (mitmproxy, the engine, its own memory tier) binding the --listen
port with SO_REUSEPORT, so the kernel spreads connections over them; all of them use
one --cache-dir (diskcache is safe across processes) and one invalidation log.

The supervisor (this module, no mitmproxy in it) starts the workers one after the
other (the first alone, so a bad setting is said once and schema creation never
races), holds --admin-listen for the node, restarts a worker that dies (with a log
line), and stops them all on SIGINT/SIGTERM within the contract's 10 s.

Each worker's admin plane is its private control endpoint: 127.0.0.1 on a free port,
guarded by a random bearer token only the supervisor knows. Through it the supervisor
reads every worker's counters (`GET /_worker/state`: `Stats.state()`, summed exactly by
`mediaedge.stats.merge_states`) and makes workers apply the invalidation log now
(`POST /_worker/sync`). Every accepted invalidation (webhook, PURGE) calls the
supervisor's own private endpoint (`POST /_node/sync`) before it answers, so every
live worker has applied it by then. Coalescing is per worker: a stampede on one key
costs at most one origin fetch per worker.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mediaedge.admin import AdminRequest, AdminResponse, AdminServer, token_guard
from mediaedge.adminauth import authorized
from mediaedge.config import Settings, format_hostport
from mediaedge.errors import StartupError, WebhookError
from mediaedge.metrics import NodeFacts, build_info, render_metrics
from mediaedge.rates import MinuteRing, Snapshot
from mediaedge.shutdown import EXIT_DEADLINE
from mediaedge.stats import RESULTS, Stats, merge_states
from mediaedge.webhook import verify_head

log = logging.getLogger("mediaedge")

ENV_WORKER = "MEDIAEDGE_WORKER"  # "INDEX:SUPERVISOR_PORT" in a worker's environment
ENV_TOKEN = "MEDIAEDGE_WORKER_TOKEN"  # the control token (not on the command line: ps shows that)
CONTROL_TIMEOUT = 10.0  # seconds for one control call to a worker
START_TIMEOUT = 60.0  # seconds a worker may take to come up
SAMPLE_EVERY = 5.0  # the dashboard's rates, as in mediaedge.runtime
RESTART_BACKOFF_MAX = 30.0


def check_free(setting: str, host: str, port: int) -> None:
    """Fail with one clear line before anything binds the port (mitmproxy would log a traceback)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise StartupError(f"{setting}: cannot listen on {host}:{port}: {e.strerror or e}") from e


def free_port(host: str) -> int:
    """A port the kernel has free now: --listen's port 0 resolved once, for every worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def restart_delay(failures: int) -> float:
    """Seconds before restarting a worker that died `failures` times in a row soon after
    starting: none the first time, then doubling up to RESTART_BACKOFF_MAX."""
    return 0.0 if failures <= 1 else min(RESTART_BACKOFF_MAX, 0.5 * 2 ** (failures - 2))


# ---------------------------------------------------------------------- the worker side
@dataclass(frozen=True)
class WorkerEnv:
    """What a worker process is told by its supervisor (environment variables)."""

    index: int
    supervisor_port: int
    token: str

    @classmethod
    def from_environ(cls) -> WorkerEnv | None:
        raw, token = os.environ.get(ENV_WORKER), os.environ.get(ENV_TOKEN)
        if not raw or not token:
            return None
        index, _, port = raw.partition(":")
        return cls(int(index), int(port), token)

    def environ(self) -> dict[str, str]:
        return {ENV_WORKER: f"{self.index}:{self.supervisor_port}", ENV_TOKEN: self.token}

    @property
    def supervisor_url(self) -> str:
        return f"http://127.0.0.1:{self.supervisor_port}"

    async def call_supervisor(self, path: str, body: dict[str, Any], timeout: float = 30.0) -> None:
        """POST `body` to the supervisor's private endpoint; raises when it does not say 200."""
        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.post(self.supervisor_url + path, json=body,
                                  headers={"authorization": f"Bearer {self.token}"})
            r.raise_for_status()

    async def synced(self, seq: int) -> None:
        """After this worker accepted and applied events up to `seq`: every other live worker
        applies them too before we answer. When that fails they still follow the log (1 s)."""
        try:
            await self.call_supervisor("/_node/sync", {"worker": self.index, "seq": seq})
        except (httpx.HTTPError, OSError) as e:
            log.warning("worker %d: could not make the other workers apply seq %d now: %s; "
                        "they apply it from the invalidation log within a second", self.index, seq, e)


def reuse_port(loop: asyncio.AbstractEventLoop, port: int) -> None:
    """Make servers this loop creates on `port` bind with SO_REUSEPORT.

    mitmproxy (11.0 and 12.x) binds its listener with `asyncio.start_server(handler, host,
    port)`, which calls `loop.create_server(factory, host, port)` on the running loop, with
    no way to ask for `reuse_port`; wrapping this one loop's method adds it without
    touching asyncio for anybody else."""
    original = loop.create_server

    async def create_server(*args: Any, **kwargs: Any) -> Any:
        if (args[2] if len(args) > 2 else kwargs.get("port")) == port:
            kwargs["reuse_port"] = True
        return await original(*args, **kwargs)

    setattr(loop, "create_server", create_server)  # noqa: B010 - an instance attribute, on purpose


class WorkerReady:
    """mitmproxy addon: once the listener is up, tell the supervisor this worker serves."""

    def __init__(self, env: WorkerEnv, control_port: Callable[[], int]) -> None:
        self.env = env
        self.control_port = control_port

    async def running(self) -> None:
        await self.env.call_supervisor("/_node/ready", {"worker": self.env.index, "pid": os.getpid(),
                                                        "port": self.control_port()})


# ---------------------------------------------------------------------- the supervisor
@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    port: int | None = None  # its control port, once it said it is ready
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    failures: int = 0  # deaths in a row soon after starting (restart backoff)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def live(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and self.port is not None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the supervisor dies (even by SIGKILL), so no
    worker is ever orphaned holding the port. Linux's PR_SET_PDEATHSIG; elsewhere nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


class Supervisor:
    def __init__(self, settings: Settings, argv: list[str]) -> None:
        self.settings = settings
        self.argv = argv  # serve's own arguments ("serve", flags...), repeated for each worker
        self.token = secrets.token_urlsafe(32)
        self.workers = [Worker(i) for i in range(settings.workers)]
        self.stopping = False
        self.private = AdminServer({("POST", "/_node/ready"): self._guard(self._ready),
                                    ("POST", "/_node/sync"): self._guard(self._sync)})
        self.admin = AdminServer(self._routes(), head_checks={("POST", "/publish"): self._publish_head})
        self.client: httpx.AsyncClient | None = None
        self.started_at = time.time()
        self.rates = MinuteRing()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        s = self.settings
        host, port = s.listen
        check_free("--listen", host, port)
        check_free("--admin-listen", *s.admin_listen)
        self.listen = (host, port or free_port(host))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopped.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward_hup)
        self.client = httpx.AsyncClient(timeout=CONTROL_TIMEOUT)
        await self.private.start("127.0.0.1", 0)
        try:
            if not await self._start_workers():
                return 1
            try:
                await self.admin.start(*s.admin_listen)
            except OSError as e:
                raise StartupError(f"--admin-listen: cannot listen on {format_hostport(s.admin_listen)}: "
                                   f"{e.strerror or e}") from e
            listen_host = f"[{host}]" if ":" in host else host
            print(f"mediaedge: data plane on http://{listen_host}:{self.listen[1]} "
                  f"(upstream {s.upstream or 'none: database origin only'})", flush=True)
            print(f"mediaedge: admin plane on http://{s.admin_url.split('://', 1)[1]}", flush=True)
            log.info("%d workers serving (pids %s)", len(self.workers),
                     " ".join(str(w.pid) for w in self.workers))
            self._tasks.append(loop.create_task(self._sampler()))
            await self._stopped.wait()
            return 0
        finally:
            await self._stop_all()

    async def _start_workers(self) -> bool:
        """The first worker alone (it creates schemas, and says a bad setting once), then the
        rest together. False when one could not start (its own line is on stderr)."""
        first, rest = self.workers[0], self.workers[1:]
        for batch in ([first], rest):
            for w in batch:
                await self._spawn(w)
            for w in batch:
                if not await self._wait_ready(w):
                    return False
        for w in self.workers:
            self._tasks.append(asyncio.get_running_loop().create_task(self._watch(w)))
        return True

    async def _spawn(self, w: Worker) -> None:
        w.ready.clear()
        w.port = None
        env = {**os.environ, **WorkerEnv(w.index, self.private.port, self.token).environ()}
        cmd = [sys.executable, "-m", "mediaedge", *self.argv, "--workers", "1",
               "--listen", format_hostport(self.listen)]
        w.proc = await asyncio.create_subprocess_exec(*cmd, env=env, preexec_fn=_die_with_parent)
        w.started_at = time.monotonic()

    async def _wait_ready(self, w: Worker) -> bool:
        assert w.proc is not None
        ready = asyncio.ensure_future(w.ready.wait())
        exited = asyncio.ensure_future(w.proc.wait())
        stop = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((ready, exited, stop), timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (ready, exited, stop):
                f.cancel()
        if w.ready.is_set():
            return True
        if w.proc.returncode is None and not self._stopped.is_set():
            log.error("worker %d (pid %d) did not start within %g s", w.index, w.proc.pid, START_TIMEOUT)
        return False

    async def _watch(self, w: Worker) -> None:
        """Restart `w` whenever it dies, until the node stops."""
        while not self.stopping:
            assert w.proc is not None
            code = await w.proc.wait()
            if self.stopping or self._stopped.is_set():
                return  # a Ctrl-C reaches the workers too (one process group): not a crash
            w.port = None
            w.failures = w.failures + 1 if time.monotonic() - w.started_at < 10 else 1
            delay = restart_delay(w.failures)
            log.warning("worker %d (pid %d) exited with %s; restarting it%s", w.index, w.proc.pid,
                        _exit_text(code), f" in {delay:g} s" if delay else "")
            if delay:
                await asyncio.sleep(delay)
            if self.stopping or self._stopped.is_set():
                return
            await self._spawn(w)
            if await self._wait_ready(w):
                log.info("worker %d restarted (pid %d)", w.index, w.proc.pid)

    def _forward_hup(self) -> None:
        """SIGHUP: every worker reopens its access log (logrotate)."""
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGHUP)

    async def _stop_all(self) -> None:
        """SIGTERM every worker, wait for them within the contract's 10 s, SIGKILL stragglers."""
        self.stopping = True
        for t in self._tasks:
            t.cancel()
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        if procs:
            _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs],
                                            timeout=EXIT_DEADLINE + 0.5)
            for p in procs:
                if p.returncode is None:
                    log.warning("worker pid %d did not stop in time: killed", p.pid)
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        await self.admin.stop()
        await self.private.stop()
        if self.client is not None:
            await self.client.aclose()

    # ------------------------------------------------------------------ talking to workers
    async def _control(self, w: Worker, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self.client is not None and w.port is not None
        headers = {"authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return await self.client.request(method, f"http://127.0.0.1:{w.port}{path}", headers=headers, **kwargs)

    async def states(self) -> list[dict[str, Any]]:
        """Every live worker's counters (`GET /_worker/state`); a worker that does not answer
        is left out (and `workers` in /stats says how many answered)."""
        async def one(w: Worker) -> dict[str, Any] | None:
            try:
                r = await self._control(w, "GET", "/_worker/state")
                r.raise_for_status()
                data: dict[str, Any] = r.json()
                return data
            except (httpx.HTTPError, OSError, ValueError) as e:
                log.warning("worker %d did not report its counters: %s", w.index, e)
                return None

        answers = await asyncio.gather(*(one(w) for w in self.workers if w.live))
        return [a for a in answers if a is not None]

    async def node_stats(self) -> tuple[Stats, dict[str, Any], list[dict[str, Any]]]:
        """The node's counters (every worker's summed), its /stats document, and the answers."""
        states = await self.states()
        merged = merge_states([a["state"] for a in states])
        stats = Stats.from_state(merged, prefixes=self.settings.media_prefixes,
                                 disk_errors=sum(a["snapshot"].get("disk_errors", 0) for a in states),
                                 not_found=sum(a["snapshot"].get("not_found", 0) for a in states))
        stats.workers = len(states)
        # One cache directory: its size is the same whoever reads it (the largest, the latest).
        entries = max((a["snapshot"]["entries"] for a in states), default=0)
        volume = max((a["snapshot"]["cache_bytes"] for a in states), default=0)
        seq = max((a["snapshot"].get("invalidation_seq") or 0 for a in states), default=None)
        snap = stats.snapshot(entries=entries, cache_bytes=volume, cache_size=self.settings.cache_size,
                              invalidation_seq=seq)
        for key in ("evictions", "admission_refused"):
            snap[key] = sum(a["snapshot"].get(key, 0) for a in states)
        # extra: who answered, and how many media requests each served (the spread)
        snap["worker_requests"] = {str(a["pid"]): a["snapshot"]["requests"] for a in states}
        return stats, snap, states

    async def _sync_all(self, *, but: int | None = None) -> int:
        """Every live worker (but the one that asked) applies the invalidation log now."""
        async def one(w: Worker) -> bool:
            try:
                r = await self._control(w, "POST", "/_worker/sync")
                r.raise_for_status()
                return True
            except (httpx.HTTPError, OSError) as e:
                log.warning("worker %d did not apply the invalidation log now: %s", w.index, e)
                return False

        done = await asyncio.gather(*(one(w) for w in self.workers if w.live and w.index != but))
        return sum(done)

    # ------------------------------------------------------------------ the private endpoint
    def _guard(self, handler: Callable[[AdminRequest], Awaitable[AdminResponse]]
               ) -> Callable[[AdminRequest], Awaitable[AdminResponse]]:
        async def guarded(req: AdminRequest) -> AdminResponse:
            if not authorized(self.token, req.headers, req.path, query_ok=False):
                return AdminResponse.json(401, {"error": "worker token required"})
            return await handler(req)
        return guarded

    async def _ready(self, req: AdminRequest) -> AdminResponse:
        body = json.loads(req.body)
        w = self.workers[int(body["worker"])]
        if w.pid != body["pid"]:
            return AdminResponse.json(409, {"error": "not the worker this supervisor started"})
        w.port = int(body["port"])
        w.failures = 0 if time.monotonic() - w.started_at >= 10 else w.failures
        w.ready.set()
        return AdminResponse.json(200, {"ok": True})

    async def _sync(self, req: AdminRequest) -> AdminResponse:
        body = json.loads(req.body)
        return AdminResponse.json(200, {"synced": await self._sync_all(but=int(body["worker"]))})

    # ------------------------------------------------------------------ the node's admin plane
    def _routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/stats"): self._admin_guard(self._stats),
            ("GET", "/metrics"): self._admin_guard(self._metrics),
            ("GET", "/readyz"): self._admin_guard(self._readyz),
            ("GET", "/"): self._admin_guard(self._dashboard, query_ok=True),
            ("POST", "/publish"): self._publish,
        }

    def _admin_guard(self, handler: Callable[[AdminRequest], Awaitable[AdminResponse]], *,
                     query_ok: bool = False) -> Callable[[AdminRequest], Awaitable[AdminResponse]]:
        """`handler` behind --admin-token (mediaedge.admin.token_guard)."""
        return token_guard(self.settings.admin_token, handler, query_ok=query_ok)

    async def _healthz(self, _: AdminRequest) -> AdminResponse:
        return AdminResponse.text(200, "ok\n")

    async def _stats(self, req: AdminRequest) -> AdminResponse:
        snap = (await self.node_stats())[1]
        return AdminResponse.json(200, snap)

    async def _metrics(self, req: AdminRequest) -> AdminResponse:
        stats, snap, states = await self.node_stats()
        facts = NodeFacts(snap["evictions"],
                          max((a.get("lag_seconds", 0.0) for a in states), default=0.0),
                          max((a.get("lag_events", 0) for a in states), default=0))
        body, ctype = render_metrics(stats, entries=snap["entries"], cache_bytes=snap["cache_bytes"],
                                     cache_size=self.settings.cache_size, node=facts)
        return AdminResponse(200, body, ctype)

    def _rate_snapshot(self, stats: Stats, evictions: int) -> Snapshot:
        results, not_found, buckets = stats.cumulative()
        return Snapshot(time.time(), tuple(results[r] for r in RESULTS), not_found, tuple(buckets), evictions)

    async def _sampler(self) -> None:
        """The dashboard's last-hour rates: the node's totals every SAMPLE_EVERY seconds."""
        while True:
            try:
                stats, snap, _ = await self.node_stats()
                self.rates.observe(self._rate_snapshot(stats, snap["evictions"]))
            except Exception as e:  # noqa: BLE001 - reporting never stops the node
                log.warning("stats sampling failed: %s", e)
            await asyncio.sleep(SAMPLE_EVERY)

    async def _dashboard(self, req: AdminRequest) -> AdminResponse:
        from mediaedge.dashboard import render_dashboard

        stats, snap, _ = await self.node_stats()
        now = self._rate_snapshot(stats, snap["evictions"])
        s = self.settings
        node = {"node_id": f"{s.node_id} ({stats.workers} workers)", "version": build_info()["version"],
                "upstream": s.upstream, "origin_profile": s.origin_profile,
                "uptime_seconds": max(0.0, time.time() - self.started_at), "evictions": snap["evictions"]}
        html = render_dashboard(snap, stats.history(), node=node, last_hour=self.rates.last_hour(now),
                                per_minute=self.rates.per_minute(now))
        return AdminResponse(200, html.encode(), "text/html; charset=utf-8")

    async def _readyz(self, req: AdminRequest) -> AdminResponse:
        """Readiness is the node's components (databases, upstream, disk): one worker checks them."""
        return await self._forward(req, "/readyz")

    def _publish_head(self, headers: dict[str, str]) -> None:
        verify_head(self.settings.webhook_secret, timestamp=headers.get("x-mediaedge-timestamp"),
                    signature=headers.get("x-mediaedge-signature"), now=time.time())

    async def _publish(self, req: AdminRequest) -> AdminResponse:
        """The webhook, handled by one live worker: it checks, logs and applies the events,
        and before it answers every other worker has applied them (`WorkerEnv.synced`)."""
        return await self._forward(req, "/publish")

    async def _forward(self, req: AdminRequest, path: str) -> AdminResponse:
        live = [w for w in self.workers if w.live]
        if not live:
            raise WebhookError(503, "no worker is running; retry shortly")
        w = live[int(time.monotonic() * 1000) % len(live)]
        keep = ("content-type", "x-mediaedge-timestamp", "x-mediaedge-signature")
        try:
            r = await self._control(w, req.method, path, content=req.body,
                                    headers={k: v for k, v in req.headers.items() if k in keep},
                                    timeout=60.0)
        except (httpx.HTTPError, OSError) as e:
            raise WebhookError(503, f"worker {w.index} did not answer: {e}") from e
        return AdminResponse(r.status_code, r.content, r.headers.get("content-type", "application/json"))


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


async def supervise(settings: Settings, argv: list[str]) -> int:
    """`mediaedge serve --workers N` (N > 1): run the supervisor until SIGINT/SIGTERM."""
    return await Supervisor(settings, argv).run()
