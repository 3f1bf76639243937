"""Everything one mediaedge node runs, built from `Settings` and started in order.

Start order matters: storage and the origins first (a bad setting fails before any
listener opens), then the invalidation log and the catch-up of missed events (so
no cached entry is served before them), then the loopback stream server and the
admin plane. The mitmproxy addon holds one Runtime and hands media requests to
its engine.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mediaedge.access import Access, AuthClient, AuthDecisions
from mediaedge.accesslog import AccessLog
from mediaedge.admin import AdminRequest, AdminResponse, AdminServer, token_guard
from mediaedge.config import Settings
from mediaedge.dashboard import render_dashboard
from mediaedge.contract import EngineConfig
from mediaedge.engine import Engine
from mediaedge.invalidation import Invalidator
from mediaedge.invalidation_log import Accepted, InvalidationLog
from mediaedge.metrics import NodeFacts, build_info, render_metrics
from mediaedge.origins.db import DatabaseOrigin
from mediaedge.origins.sqlroutes import SqlRouteOrigin
from mediaedge.policy.access import Gates
from mediaedge.policy.cachestatus import set_cache_name
from mediaedge.privatemedia import PrivateMedia
from mediaedge.pools import in_database_thread, install_cache_pool
from mediaedge.rates import MinuteRing, Snapshot
from mediaedge.readiness import Readiness, Remembered, readiness
from mediaedge.stats import RESULTS, Stats, write_state
from mediaedge.storage import CacheStore
from mediaedge.streamserver import StreamServer
from mediaedge.origins.http import Upstream
from mediaedge.webhook import Event, parse_events, replay_key, verify, verify_head
from mediaedge.errors import DatabaseError, OriginError, StartupError, WebhookError
from mediaedge.workers import WorkerEnv
from mediaedge.zerocopy import set_write_stall

log = logging.getLogger("mediaedge")

SAMPLE_EVERY = 5.0
SAVE_STATS_EVERY = 30.0


class NodeInvalidator(Invalidator):
    """A worker's invalidator (--workers): an accepted event (webhook, PURGE) is applied by
    every other worker of the node too before the request that brought it is answered."""

    worker: WorkerEnv

    async def accept(self, events: list[Event], *, signature: str | None = None) -> Accepted:
        result = await super().accept(events, signature=signature)
        await self.worker.synced(result.seq)
        return result


class Runtime:
    def __init__(self, settings: Settings, *, worker: WorkerEnv | None = None) -> None:
        self.settings = settings
        self.worker = worker  # set in a worker process of --workers N (mediaedge.workers)
        self.stream = StreamServer()
        self.admin: AdminServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._fill_cache = (0, 0)  # (entries, bytes), refreshed off the hot path
        # Private media (docs/private-media.md): the prefixes, and the app's auth gate.
        self.gates = Gates(settings.signed_prefixes, settings.auth_prefixes)
        self.access: Access | None = None
        self.started_at = time.time()
        self.rates = MinuteRing()  # per-minute counts of the last hour (the dashboard's rates)
        self._ready = Remembered()  # /readyz's last round of checks
        self._ready_lock: asyncio.Lock | None = None
        # /readyz's checks block on databases and the upstream: one thread of their own,
        # so they never hold up cache or database-origin work.
        self._ready_pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, admin: bool = True) -> None:
        s = self.settings
        install_cache_pool(asyncio.get_running_loop())
        self.store = await asyncio.to_thread(_open_store, s)
        self.db = await in_database_thread(_open_db, s)
        self.invalidation_log = await in_database_thread(_open_log, s)
        # MEDIAEDGE_BENCH_STATS=off: counters off, only to measure what they cost (bench/).
        stats_off = os.environ.get("MEDIAEDGE_BENCH_STATS") == "off"
        self.stats = (_NullStats if stats_off else Stats)(prefixes=s.media_prefixes)
        # Workers share the cache directory: each keeps its own counters file.
        name = "stats.json" if self.worker is None else f"stats-worker{self.worker.index}.json"
        self.stats_path = os.path.join(s.cache_dir, name)
        await asyncio.to_thread(self.stats.restore, self.stats_path)
        try:
            self.access_log = AccessLog(s.access_log, s.access_log_format)
        except OSError as e:
            raise StartupError(f"--access-log: cannot open {s.access_log!r}: {e.strerror or e}") from e
        upstream = Upstream(s.upstream, timeout=s.upstream_timeout, forward=s.forward_headers) if s.upstream else None
        set_cache_name(s.cache_name)
        set_write_stall(s.idle_timeout)  # a client that takes no byte of a streamed body is dropped
        self.engine = Engine(
            EngineConfig.from_settings(s),
            self.store, upstream=upstream, db=self.db, stats=self.stats,
        )
        if s.auth_url and s.auth_prefixes:
            self.access = Access(AuthClient(s.auth_url, timeout=s.upstream_timeout),
                                 AuthDecisions(s.auth_ttl, clock=time.monotonic))
        self.private = PrivateMedia(self.gates, s.signing_keys, self.access, self.stats)
        kind = Invalidator if self.worker is None else NodeInvalidator
        self.invalidator = kind(self.engine, self.invalidation_log, node=s.node_id, stats=self.stats,
                                retention=s.log_retention,
                                auth_decisions=self.access.decisions if self.access else None)
        if isinstance(self.invalidator, NodeInvalidator) and self.worker is not None:
            self.invalidator.worker = self.worker
        missed = await self.invalidator.catch_up()
        if missed:
            log.info("applied %d invalidation event(s) missed while down", missed)
        self.engine.ready.set()
        self.invalidator.start()
        await self.stream.start()
        if admin:
            self.admin = AdminServer(self._routes(), head_checks={("POST", "/publish"): self._publish_head})
            host, port = s.admin_listen
            try:
                await self.admin.start(host, port)
            except OSError as e:
                raise StartupError(f"--admin-listen: cannot listen on {host}:{port}: {e.strerror or e}") from e
        await self._refresh_fill()
        self.rates.observe(self.rate_snapshot())
        # Last: its reads slow the start's own (seen: 2.6 s starts against 1.5 s at 1M entries when first).
        if self.worker is None or self.worker.index == 0:  # the page cache is the node's: one read is enough
            self.store.prewarm_in_background()  # the database into the page cache (mediaedge.policy.lookup)
        self._tasks.append(asyncio.get_running_loop().create_task(self._sampler()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.invalidator.stop()
        if self.admin is not None:
            await self.admin.stop()
        await self.stream.stop()
        await self.engine.aclose()
        if self.access is not None:
            await self.access.aclose()
        await self._save_stats()
        self.access_log.close()
        if self._ready_pool is not None:
            self._ready_pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._close_blocking)

    def _close_blocking(self) -> None:
        self.store.close()
        if self.db is not None:
            self.db.close()
        self.invalidation_log.close()

    async def _sampler(self) -> None:
        last_save = time.monotonic()
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            try:
                self.stats.sample()
                await self._refresh_fill()
                self.rates.observe(self.rate_snapshot())
                if time.monotonic() - last_save >= SAVE_STATS_EVERY:
                    await self._save_stats()
                    last_save = time.monotonic()
            except Exception as e:  # noqa: BLE001 - reporting never stops the node
                log.warning("stats sampling failed: %s", e)

    async def _save_stats(self) -> None:
        """Counters survive restarts: state taken on the loop, written off it (atomically)."""
        try:
            await asyncio.to_thread(write_state, self.stats_path, self.stats.state())
        except OSError as e:  # a full cache disk must not break a clean stop
            log.warning("could not save counters to %s: %s", self.stats_path, e.strerror or e)

    async def _refresh_fill(self) -> None:
        self._fill_cache = await asyncio.to_thread(lambda: (self.store.entry_count(), self.store.volume()))

    # ------------------------------------------------------------------ admin plane
    def _routes(self) -> dict[tuple[str, str], Any]:
        if self.worker is not None:  # the supervisor's control calls (mediaedge.workers)
            return {**self._node_routes(), ("GET", "/_worker/state"): self._guarded(self._worker_state),
                    ("POST", "/_worker/sync"): self._guarded(self._worker_sync)}
        return self._node_routes()

    async def _worker_state(self, _: AdminRequest) -> AdminResponse:
        """Everything the supervisor sums into the node's /stats and /metrics."""
        await self._refresh_fill()
        lag_seconds, lag_events = await self.invalidator.lag()
        return AdminResponse.json(200, {"pid": os.getpid(), "state": self.stats.state(),
                                        "snapshot": self.snapshot(), "lag_seconds": lag_seconds,
                                        "lag_events": lag_events})

    async def _worker_sync(self, _: AdminRequest) -> AdminResponse:
        """Apply the invalidation log up to its end now (another worker just accepted events)."""
        applied = await self.invalidator.catch_up()
        return AdminResponse.json(200, {"applied": applied, "seq": self.invalidator.latest_seq})

    def _node_routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/stats"): self._guarded(self._stats),
            ("GET", "/metrics"): self._guarded(self._metrics),
            ("GET", "/readyz"): self._guarded(self._readyz),
            ("GET", "/"): self._guarded(self._dashboard, query_ok=True),
            ("POST", "/publish"): self._publish,
        }

    def _guarded(self, handler: Callable[[AdminRequest], Awaitable[AdminResponse]], *,
                 query_ok: bool = False) -> Callable[[AdminRequest], Awaitable[AdminResponse]]:
        """`handler` behind --admin-token (mediaedge.admin.token_guard)."""
        return token_guard(self.settings.admin_token, handler, query_ok=query_ok)

    def rate_snapshot(self) -> Snapshot:
        """The counts behind the dashboard's last-hour rates, now (mediaedge.rates)."""
        results, not_found, buckets = self.stats.cumulative()
        return Snapshot(time.time(), tuple(results[r] for r in RESULTS), not_found, tuple(buckets),
                        self.store.evictions)

    def node_info(self) -> dict[str, Any]:
        """Who this node is, for the dashboard's header."""
        s = self.settings
        return {"node_id": s.node_id, "version": build_info()["version"], "upstream": s.upstream,
                "origin_profile": s.origin_profile, "uptime_seconds": max(0.0, time.time() - self.started_at),
                "evictions": self.store.evictions}

    async def _readyz(self, _: AdminRequest) -> AdminResponse:
        result = await self.readiness()
        return AdminResponse.json(result.status, result.body())

    async def readiness(self) -> Readiness:
        """The `mediaedge check` components, at most one round per readiness.TTL seconds;
        requests arriving during a round wait for it instead of starting their own."""
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            remembered = self._ready.get(time.monotonic())
            if remembered is not None:
                return remembered
            if self._ready_pool is None:
                self._ready_pool = ThreadPoolExecutor(1, thread_name_prefix="mediaedge-readyz")
            s = self.settings
            bound = s.db_timeout * 2 + (s.upstream_timeout if s.upstream else 0) + 5
            try:
                result = await asyncio.wait_for(
                    asyncio.get_running_loop().run_in_executor(self._ready_pool, self._run_checks), bound)
            except TimeoutError:
                result = readiness([("checks", f"did not finish within {bound:g} s")])
            self._ready.put(result, time.monotonic())
            return result

    def _run_checks(self) -> Readiness:
        from mediaedge.check import checks

        results: list[tuple[str, str | None]] = []
        for name, check in checks(self.settings, held=lambda: self._fill_cache[1]):
            try:
                results.append((name, check()))
            except Exception as e:  # noqa: BLE001 - a check that breaks is a failed component
                results.append((name, f"{type(e).__name__}: {e}"))
        return readiness(results)

    async def _healthz(self, _: AdminRequest) -> AdminResponse:
        return AdminResponse.text(200, "ok\n")

    def snapshot(self) -> dict[str, Any]:
        entries, volume = self._fill_cache
        snap = self.stats.snapshot(entries=entries, cache_bytes=volume, cache_size=self.settings.cache_size,
                                   invalidation_seq=self.invalidator.latest_seq)
        if self.access is not None:  # extra: the memory of the app's answers (proxy/access.py)
            decisions = self.access.decisions
            snap["auth_remembered"] = {"answers": len(decisions), "estimated_bytes": decisions.bytes}
        # extras: the disk's admission and eviction since start (mediaedge.policy.admission)
        snap["evictions"] = self.store.evictions
        snap["admission_refused"] = self.store.refused
        return snap

    async def _stats(self, _: AdminRequest) -> AdminResponse:
        await self._refresh_fill()
        return AdminResponse.json(200, self.snapshot())

    async def _metrics(self, _: AdminRequest) -> AdminResponse:
        await self._refresh_fill()
        entries, volume = self._fill_cache
        lag_seconds, lag_events = await self.invalidator.lag()
        body, ctype = render_metrics(self.stats, entries=entries, cache_bytes=volume,
                                     cache_size=self.settings.cache_size,
                                     node=NodeFacts(self.store.evictions, lag_seconds, lag_events))
        return AdminResponse(200, body, ctype)

    async def _dashboard(self, req: AdminRequest) -> AdminResponse:
        await self._refresh_fill()
        now = self.rate_snapshot()
        html = render_dashboard(self.snapshot(), self.stats.history(), node=self.node_info(),
                                last_hour=self.rates.last_hour(now), per_minute=self.rates.per_minute(now))
        return AdminResponse(200, html.encode(), "text/html; charset=utf-8")

    def _publish_head(self, headers: dict[str, str]) -> None:
        """The webhook's checks that need no body, run before the body is read."""
        verify_head(self.settings.webhook_secret, timestamp=headers.get("x-mediaedge-timestamp"),
                    signature=headers.get("x-mediaedge-signature"), now=time.time())

    async def _publish(self, req: AdminRequest) -> AdminResponse:
        signature = req.headers.get("x-mediaedge-signature")
        verify(
            self.settings.webhook_secret,
            timestamp=req.headers.get("x-mediaedge-timestamp"),
            signature=signature,
            body=req.body,
            now=time.time(),
        )
        assert signature is not None  # verify refuses a request without one
        events = await asyncio.to_thread(parse_events, req.body)  # up to 1 MiB of paths: CPU work
        try:
            result = await self.invalidator.accept(events, signature=replay_key(signature))
        except DatabaseError as e:
            raise WebhookError(503, f"invalidation log unavailable: {e}") from e
        return AdminResponse(200, json.dumps(publish_answer(result)).encode() + b"\n")


def publish_answer(result: Accepted) -> dict[str, Any]:
    """The webhook's 200 body: `replayed` only on a replay, so first answers stay as they were."""
    body: dict[str, Any] = {"accepted": result.accepted, "seq": result.seq}
    if result.replayed:
        body["replayed"] = True
    return body


class _NullStats(Stats):
    """Counting switched off (benchmarks of the counters' own cost)."""

    def record(self, **_: Any) -> None:
        pass

    def origin_fetch(self, origin: str, outcome: str) -> None:
        pass

    def coalesced(self) -> None:
        pass

    def revalidated(self) -> None:
        pass

    def denied(self, reason: str) -> None:
        pass


# ---------------------------------------------------------------------- openers
def _open_store(s: Settings) -> CacheStore:
    try:
        return CacheStore(s.cache_dir, size_limit=s.cache_size, slab_size=s.hit_slab_size)
    except OSError as e:
        raise StartupError(f"--cache-dir: cannot use {s.cache_dir!r}: {e.strerror or e}") from e


def _open_db(s: Settings) -> DatabaseOrigin | SqlRouteOrigin | None:
    if s.origin_db is None:
        return None  # --origin-db none: a plain HTTP cache in front of the upstream
    if s.origin_profile == "sql":
        return _open_sql_routes(s)
    try:
        return DatabaseOrigin(s.origin_db, s.origin_profile, media_prefixes=s.media_prefixes,
                              create=s.origin_profile == "native", lookup_timeout=s.db_timeout)
    except (OriginError, DatabaseError) as e:
        raise StartupError(f"--origin-db: {e}") from e


def _open_sql_routes(s: Settings) -> SqlRouteOrigin:
    """The sql profile's origin, refused at start when a route's query does not run
    against the database (a missing table or column, a syntax error): one line naming it."""
    assert s.origin_db is not None  # the sql profile needs its database
    try:
        origin = SqlRouteOrigin(s.origin_db, s.sql_routes, timeout=s.db_timeout)
        problems = [(route, problem) for route, problem in origin.check() if problem]
    except (OriginError, DatabaseError) as e:
        raise StartupError(f"--origin-db: {e}") from e
    if problems:
        origin.close()
        route, problem = problems[0]
        raise StartupError(f"--config: sql_route #{route.index} ({route.match.pattern}): {problem}")
    return origin


def _open_log(s: Settings) -> InvalidationLog:
    try:
        return InvalidationLog(s.state_db_url)
    except DatabaseError as e:
        setting = "--state-db" if s.state_db else "--origin-db"
        raise StartupError(f"{setting}: invalidation log: {e}") from e
