"""The data path for one media request, as a short driver: lookup, decide, then serve,
join or start a fetch, and reply.

request → `Engine.handle` → (storage lookup) → `policy.decide.on_lookup` → fresh hit:
`Replies` from the entry; stale: reply and refresh in the background; miss: join or
start a `Fill` (`Coalescer`) whose task walks the origin chain (`_ask_origins`:
`UpstreamFill`, then `DatabaseFill`, then `policy.fallback.after_origins`) → `Replies`
from the fill's head. The sides live in their own modules: `replies.py` (what is sent),
`upstreamfill.py` and `databasefill.py` (what each origin's fetch does), `fillstore.py`
(what every fill does with the cache). The addon turns a `Reply` into a response.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from mediaedge.cache import Cache
from mediaedge.coalesce import Busy, Coalescer, Flight
# re-exported: the addon and older callers import them from here
from mediaedge.contract import EngineConfig as EngineConfig, MediaRequest as MediaRequest, Reply as Reply
from mediaedge.errors import FillFailed, SliceUnusable
from mediaedge.fill import Fill, ReadBody
from mediaedge.headers import Headers
from mediaedge.hot import HotEntry
from mediaedge.origins import MediaDatabase
from mediaedge.policy.cachestatus import cache_status
from mediaedge.policy.decide import (
    Revalidate, Serve, ServeStale, entry_facts, on_lookup, serves_fresh,
)
from mediaedge.policy.freshness import Freshness, ttl_left
from mediaedge.policy.fallback import Database, Origin, after_origins, next_origin, origin_chain
from mediaedge.policy.seek import forwardable, route_range
from mediaedge.policy.revalidate import can_revalidate
from mediaedge.databasefill import DatabaseFill
from mediaedge.fillstore import FillStore
from mediaedge.origins.http import Upstream
from mediaedge.replies import Replies
from mediaedge.respond import HTTP_DATES, is_plain
from mediaedge.slices import Slices
from mediaedge.stats import StatsSink
from mediaedge.storage import CacheStore, Entry, EntryMeta
from mediaedge.upstreamfill import UpstreamFill

log = logging.getLogger("mediaedge.engine")

NO_HEADERS = Headers()
Seat = AbstractContextManager[ReadBody]  # a request's place on a fill (`Fill.seat()`)


class Engine:
    """One node's data path: wires the cache, the coalescer, the reply side and one fill
    side per configured origin, and drives a request through them."""

    def __init__(self, config: EngineConfig, store: CacheStore, *, upstream: Upstream | None,
                 db: MediaDatabase | None, stats: StatsSink | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.upstream = upstream
        self.db = db
        self.stats = stats
        self.clock = clock
        # The cache's state has one owner (proxy/cache.py): disk store, memory tier, epochs, lock.
        self.cache = Cache(store, config)
        # Aliases kept for older callers; the invalidator goes through `cache` and `flights`.
        self.store_lock = self.cache.lock
        # Invalidations applied while fills run, checked at commit under the cache's lock and
        # before joining a running fill (proxy/epochs.py); and the epoch of each running fill.
        self.epochs = self.cache.epochs
        self.flights = Coalescer(self.epochs, max_waiters=config.coalesce_max_waiters)
        self.hot = self.cache.hot
        self.unstored = self.cache.unstored  # targets whose last fetch was not stored (seeks)
        self.browser_cache_control = self.cache.browser_cache_control
        # The fill side's way into the cache, shared by both origins' sides; and the reply side.
        self.fills = FillStore(self.cache, store, clock=clock, stats=stats, refresh=self._start_refresh)
        self.replies = Replies(config, self.cache, self.flights, clock=clock, stats=stats)
        # Slice caching's driver (proxy/slices.py), sharing our epochs, lock and running fetches.
        self.slices = Slices(store=store, upstream=upstream, epochs=self.epochs, store_lock=self.store_lock,
                             running=self.flights.epochs_running, slice_size=config.slice_size,
                             max_object_size=config.max_object_size, revision_header=config.revision_header,
                             clock=clock, fresh=self.replies.slice_fresh, on_evicted=self._evicted,
                             count_fetch=self.fills.count_fetch)
        # Closed until missed invalidations are applied: no cached entry is served before.
        self.ready = asyncio.Event()
        # One side per configured origin; the chain (`origins`) says which are asked, in order.
        self.from_database = None if db is None else DatabaseFill(config, db, self.fills, clock=clock)
        self.from_upstream = None if upstream is None else UpstreamFill(
            config, upstream, self.fills, self.flights, self.slices, database=self.from_database, clock=clock)

    @property
    def origins(self) -> tuple[Origin, ...]:
        """The fallback chain a miss walks, in order (mediaedge.policy.fallback), composed
        from the origins the settings configured (runtime.py builds `upstream` and `db`)."""
        return origin_chain(has_upstream=self.upstream is not None, has_database=self.db is not None)

    # ---------------------------------------------------------------- entry point
    def hot_hit(self, req: MediaRequest) -> Reply | None:
        """The common case answered without a coroutine, a thread hop or a plan: a fresh
        entry held in memory, or else a small one read from the disk with its hit record
        (`Cache.probe_stored`), asked for without Range or conditionals. None: take `handle`.

        Same decision as `handle`'s first branch (fresh and not soft-purged → hit), with
        the plan taken from the entry's `HitTemplate` (tests/test_respond.py checks it
        equals `plan_response`)."""
        if not self.ready.is_set() or not is_plain(req.headers):
            return None
        hot = self.cache.probe(req.target, req.headers)
        if hot is not None:
            return self._hot_reply(req, hot)
        stored = self.cache.probe_stored(req.target, req.headers)  # a small entry on disk, same rule
        if stored is None:
            return None
        reply = self._hot_reply(req, stored.hot)
        if reply is not None:
            self.cache.hold(req.target, stored)
        return reply

    def _hot_reply(self, req: MediaRequest, hot: HotEntry) -> Reply | None:
        """A plain request's answer from a memory-tier entry, when it is fresh."""
        now = self.clock()
        fresh = hot.facts.fresh
        age = serves_fresh(hot.facts, now)  # on_lookup's Serve rule
        if age is None:
            return None
        self.store.touch(req.target)  # admission counts (memory only)
        template = hot.template
        wire = template.headers(age=int(age), cache_status=cache_status(hit=True, ttl=ttl_left(age, fresh)),
                                date=HTTP_DATES.wire(now))
        return Reply(template.status, NO_HEADERS, b"" if req.method == "HEAD" else hot.body, result="hit",
                     source="cache", target=req.target, wire=wire)

    async def handle(self, req: MediaRequest) -> Reply:
        if not self.ready.is_set():
            await self.ready.wait()
        hot = self.cache.probe(req.target, req.headers)  # the one memory-tier probe of this request
        if hot is not None and is_plain(req.headers):
            fast = self._hot_reply(req, hot)
            if fast is not None:
                return fast
        self.store.touch(req.target)  # admission counts (memory only; a hot reply counted its own)
        now = self.clock()
        entry = None if hot is None else self._held_entry(req.target, hot)
        if entry is None:
            entry = (await self.cache.lookup(req.target, req.headers, running=self.flights.running)).entry
        if entry is None:
            sliced = await self._from_slices(req)  # an object known to be sliced: from its slices
            return sliced if sliced is not None else await self._from_fill(req, None, now)
        meta = entry.meta
        decision = on_lookup(entry_facts(meta, self.config), now, self.config,
                             revalidatable=self._revalidatable(meta))
        if isinstance(decision, Serve):
            return self._serve_entry(req, entry, decision.age, decision.fresh, "hit")
        if isinstance(decision, ServeStale):
            self._start_refresh(req, meta if decision.revalidate else None)
            return self._serve_entry(req, entry, decision.age, decision.fresh, "stale")
        stale_fallback = entry if decision.stale_fallback else None
        if stale_fallback is None:
            entry.close()
        try:
            return await self._from_fill(req, stale_fallback, now, meta if isinstance(decision, Revalidate) else None)
        finally:
            if stale_fallback is not None:
                stale_fallback.close()

    def _held_entry(self, target: str, hot: HotEntry) -> Entry | None:
        """A memory-tier entry as an `Entry`. Its metadata came from the disk undecoded when
        its hit record was read instead (`Cache.probe_stored`): damaged, it is dropped and
        the disk is asked, which drops the damaged row."""
        try:
            return Entry(EntryMeta.from_json(hot.meta_json), body=hot.body)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("dropping a damaged memory-tier entry for %s: %s", target, e)
            self.cache.hot.drop(target)
            return None

    # ---------------------------------------------------------------- misses
    async def _from_fill(self, req: MediaRequest, stale: Entry | None, now: float,
                         revalidate: EntryMeta | None = None) -> Reply:
        try:
            if stale is None and revalidate is None and self._forwards_range(req):
                flight, joined, seat = self._flight_for(req, alone=True, forward_range=True)
            else:
                flight, joined, seat = self._flight_for(req, revalidate=revalidate)
        except Busy as e:
            # Another fetch of the same object would defeat coalescing; the stale copy
            # or a retry soon is what a herd this size should get.
            if stale is not None:
                return self.replies.serve_stale(req, stale, now)
            reply = self.replies.error_reply(req.target, 503, str(e))
            reply.headers = reply.headers.with_set("Retry-After", "1")
            return reply
        return await self._reply_from_flight(req, stale, now, flight, joined, seat)

    async def _reply_from_flight(self, req: MediaRequest, stale: Entry | None, now: float, flight: Flight,
                                 joined: bool, seat: Seat) -> Reply:
        """This request's reply from the fetch it started or joined (`Replies.from_flight`);
        a fetch of its own when that one cannot answer it. The seat is given up when
        nothing came to read from it."""
        with seat as read:
            answer = await self.replies.from_flight(req, stale, now, flight, joined, read)
            if isinstance(answer, Reply):
                return answer
            if answer == "rerouted":
                return await self._rerouted(req, stale, now)
            return await self._fetch_alone(req, stale, now)

    def _serve_entry(self, req: MediaRequest, entry: Entry, age: float, fresh: Freshness, result: str,
                     status_text: str | None = None) -> Reply:
        return self.replies.serve_entry(req, entry, age, fresh, result, status_text)  # `handle`'s name for it

    async def _rerouted(self, req: MediaRequest, stale: Entry | None, now: float) -> Reply:
        """The fetch this request waited on turned out not storable and was dropped after its
        head: a Range request goes to the origin with its Range (mediaedge.policy.seek),
        any other asks again (a whole fetch, which is never dropped so). Dropped because the
        object is to be served slice by slice: from its slices (fetched whole when they
        cannot be had after all)."""
        if self.slices.known(req.target) is not None:
            sliced = await self._from_slices(req)
            return sliced if sliced is not None else await self._from_fill(req, stale, now)
        if not forwardable(req.method, req.headers):
            return await self._from_fill(req, stale, now)
        flight, _, seat = self._flight_for(req, alone=True, forward_range=True)
        return await self._reply_from_flight(req, stale, now, flight, False, seat)

    def _forwards_range(self, req: MediaRequest) -> bool:
        """Does this miss send the client's Range to the origin (mediaedge.policy.seek)?"""
        if not forwardable(req.method, req.headers):
            return False
        return route_range(method=req.method, request_headers=req.headers, known=self.unstored.get(req.target),
                           now=self.clock()).forward

    def _flight_for(self, req: MediaRequest, *, alone: bool = False, forward_range: bool = False,
                    revalidate: EntryMeta | None = None) -> tuple[Flight, bool, Seat]:
        """Join the running fill for this target, or start one (coalescing).

        Returns the flight, whether it was joined, and this request's seat on its fill
        (taken now, while the fill's descriptor is certainly open)."""
        shared = not alone and not req.private
        if shared:
            joined = self.flights.join(req.target)
            if joined is not None:
                return joined, True, joined.fill.seat()
        if alone and not forward_range and revalidate is None:
            forward_range = self._forwards_range(req)
        fill = Fill(req.target, self.store.new_temp_path(), stall_timeout=self.config.coalesce_timeout)
        flight = self.flights.begin(req.target, fill, req.headers, shared=shared, revalidating=revalidate,
                                    forward_range=forward_range)
        seat = fill.seat()
        flight.task = asyncio.get_running_loop().create_task(self._run_fill(flight, req))
        return flight, False, seat

    def _start_refresh(self, req: MediaRequest, revalidate: EntryMeta | None = None) -> None:
        """stale-while-revalidate / soft purge: one background fetch per target (a
        revalidation when `revalidate`, the stored entry, has a validator)."""
        if self.flights.joinable(req.target) is not None:
            return
        bg = MediaRequest("GET", req.target, req.headers.without("authorization", "cookie", "range"))
        with self._flight_for(bg, revalidate=revalidate)[2]:
            pass  # a background fetch has no reader: its seat is given up at once

    # ---------------------------------------------------------------- the fetch
    async def _run_fill(self, flight: Flight, req: MediaRequest) -> None:
        fill = flight.fill
        try:
            published = await asyncio.to_thread(self.store.get_published, req.target)
            if self.from_database is not None and await self.from_database.revalidate(flight, req):
                return
            flight.resident = await asyncio.to_thread(self.store.has_pointer, req.target)
            await self._ask_origins(flight, req, published)
        except FillFailed as e:
            fill.fail(str(e), e.status)
        except Exception as e:  # noqa: BLE001 - a fill must fail cleanly whatever happened
            log.exception("fill for %s failed", req.target)
            fill.fail(f"internal error: {type(e).__name__}", 502)
        finally:
            if flight.upstream_answer is not None:
                answer, flight.upstream_answer = flight.upstream_answer, None
                await answer.aclose()
            fill.settled.set()
            self.flights.end(req.target, flight)
            fill.close()
            _unlink_quiet(fill.temp_path)

    async def _ask_origins(self, flight: Flight, req: MediaRequest, published: str | None) -> None:
        """The fallback chain's driver: each origin in `self.origins` until one answers
        for the client (mediaedge.policy.fallback.next_origin); spent, `after_origins` decides."""
        origin = next_origin(self.origins)
        while origin is not None:
            if origin == "db":
                assert self.from_database is not None
                missing = await self.from_database.fill(flight, req, published)
                if missing is not None:
                    await self._after_origins(flight, req, published, *missing)
                return
            assert self.from_upstream is not None
            if await self.from_upstream.ask(flight, req, published):
                return
            origin = next_origin(self.origins, origin, upstream_status=flight.upstream_status,
                                 upstream_failed=flight.upstream_error_kind is not None,
                                 row_found=flight.db_object is not None)
        await self._after_origins(flight, req, published, "none", "no database origin")

    async def _after_origins(self, flight: Flight, req: MediaRequest, published: str | None,
                             database: Database, problem: str) -> None:
        """No row (or no answer from the database): what the upstream said decides
        (mediaedge.policy.fallback). Stale entries are served by the requests that hold
        them: on `FillFailed`, or on a head marked `stale_first`."""
        decision = after_origins(has_upstream="upstream" in self.origins, upstream_status=flight.upstream_status,
                                 upstream_failure=flight.upstream_error_kind, database=database)
        answer, flight.upstream_answer = flight.upstream_answer, None
        if decision.action == "upstream" and answer is not None:
            assert self.from_upstream is not None
            await self.from_upstream.pass_on(flight, req, answer, published, decision)
            return
        if answer is not None:
            await answer.discard()
        if decision.action == "not-found":
            await self.fills.negative(flight, req, "db")
            return
        both = f"{flight.upstream_failure}; " if flight.upstream_failure else ""
        raise FillFailed(f"{both}{problem}", decision.status or 502)

    def _revalidatable(self, meta: EntryMeta) -> bool:
        """May this entry, once expired, be revalidated (mediaedge.policy.revalidate)?"""
        probe = self.from_database is not None and self.from_database.can_probe(meta)
        return can_revalidate(source=meta.source, negative=meta.negative, soft_stale=meta.soft_stale,
                              headers=meta.headers, has_revision_probe=probe).ok

    async def _fetch_alone(self, req: MediaRequest, stale: Entry | None, now: float) -> Reply:
        """A fetch of this request's own, joined by no one (what it joined was not for it)."""
        alone, _, seat = self._flight_for(req, alone=True)
        return await self._reply_from_flight(req, stale, now, alone, False, seat)

    # ---------------------------------------------------------------- slices
    async def _from_slices(self, req: MediaRequest) -> Reply | None:
        """A request for a sliced object, answered from its slices (proxy/slices.py). None:
        not sliced, or its first slice could not be had as one: served as a whole fetch."""
        obj = self.slices.known(req.target)
        if obj is None or req.private or req.method not in ("GET", "HEAD"):
            return None
        window = self.replies.slices_plan(req, obj, "", None).window
        try:
            start, end = window or (0, 0)
            opened = await self.slices.open(obj, req.headers, start, obj.size if end is None else end)
        except SliceUnusable as e:
            log.info("%s: not served from slices (%s): fetched whole", req.target, e)
            return None
        return await self.replies.from_slices(req, obj, opened, windowless=window is None)

    def _evicted(self, targets: list[str]) -> None:
        for target in targets:
            self.hot.drop(target)  # never serve from memory what the disk has evicted

    # ---------------------------------------------------------------- invalidation
    def forget_flights(self, targets: list[str], *, abort: bool) -> None:
        """New requests must not join fills that began before an invalidation."""
        self.cache.forget(targets)  # a new revision may be storable: fetched whole once more
        for t in targets:
            self.slices.forget(t)  # relearnt from the next whole fetch's head
        self.flights.forget(targets, abort=abort)

    def flights_matching(self, prefix: str | None, tag: str | None = None) -> list[str]:
        """Targets with a running fill or download under `prefix`, or a running fill
        tagged `tag` (tags of stored entries come from the store)."""
        return self.flights.matching(prefix, tag)

    def prewarm(self, req: MediaRequest) -> None:
        """Fetch a newly published revision in the background so the first visitor hits."""
        self._start_refresh(req)

    async def aclose(self) -> None:
        """Cut every fetch in flight (shutdown): tasks cancelled, database copies in worker
        threads stopped at their next chunk; nothing of theirs is committed."""
        for flight in self.flights.shared():
            flight.fill.abort()
            if flight.task is not None:
                flight.task.cancel()
        if self.upstream is not None:
            await self.upstream.aclose()


# -------------------------------------------------------------------- helpers

def _unlink_quiet(path: str) -> None:

    try:
        os.unlink(path)
    except OSError:
        pass
