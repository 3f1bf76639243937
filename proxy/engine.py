"""The data path for one media request: cache lookup, freshness, fill, fallback, reply.

request → `Engine.handle` → (storage lookup in a worker thread) → fresh hit: reply
from the entry; stale: reply and refresh in the background; miss: join or start a
`Fill` (upstream first, the database origin on 404/410/5xx/refused/timeout) → reply
that streams the fill. The addon turns a `Reply` into a mitmproxy response; policy
decisions come from `mediaedge.policy.*` and `mediaedge.respond`, pure functions.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

from mediaedge.cache import Cache
from mediaedge.coalesce import Busy, Coalescer, Flight
# re-exported: the addon and older callers import them from here
from mediaedge.contract import EngineConfig as EngineConfig, MediaRequest as MediaRequest, Reply as Reply
from mediaedge.errors import DamagedEntry, FillFailed, OriginError, SliceUnusable, UpstreamError
from mediaedge.digest import BLOCK, blocks_valid, checked_block, covering_blocks, verified_stream
from mediaedge.epochs import Verdict
from mediaedge.fill import Fill, FillHead, SpoolHandle
from mediaedge.headers import Headers
from mediaedge.hot import HotEntry
from mediaedge.origins import Failed, MediaDatabase, NotFound
from mediaedge.origins.db import DbObject
from mediaedge.policy.cachecontrol import delta_seconds
from mediaedge.policy.cachestatus import cache_status
from mediaedge.policy.decide import (
    NOT_FOUND_BODY, NOT_FOUND_HEADERS, STRIPPED_FROM_ORIGIN, DatabaseRow, FallBack, Pass, Revalidate, Serve, ServeStale, Store, UpstreamAnswer,
    adopts_published, content_length, database_headers, entry_age, entry_facts, on_database_row, on_lookup, on_not_found,
    on_upstream_answer, renewed, serves_fresh, surrogate_keys,
)
from mediaedge.policy.freshness import Freshness, ttl_left
from mediaedge.policy.fallback import Database, Fallback, Origin, after_origins, next_origin, origin_chain
from mediaedge.policy.ranges import ByteRange, content_range, unsatisfied_content_range
from mediaedge.policy.seek import abandon_fetch, database_window, forwardable, is_range_request, remember, route_range
from mediaedge.policy.revalidate import can_revalidate, conditional_fields, db_unchanged, updated_headers, use_not_modified
from mediaedge.policy.target import decoded_path, etag_for_revision, revision_from, vary_names, vary_values
from mediaedge.pools import in_database_thread
from mediaedge.respond import HTTP_DATES, Plan, is_plain, plan_response
from mediaedge.slices import Slices
from mediaedge.stats import StatsSink
from mediaedge.storage import CacheStore, Entry, EntryMeta
from mediaedge.streamserver import FileBody, Job
from mediaedge.zerocopy import FileWindow
from mediaedge.origins.http import Upstream, UpstreamResponse
from mediaedge.origins.rows import find_row

log = logging.getLogger("mediaedge.engine")

VERIFY_CHUNK = 1 << 20
SMALL_BODY = 256 * 1024  # hits up to this size are answered from memory, larger ones streamed
HASH_BEFORE_HEAD = 1 << 20  # revisionless bodies up to this size are hashed before the head goes out
NO_HEADERS = Headers()


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        store: CacheStore,
        *,
        upstream: Upstream | None,
        db: MediaDatabase | None,
        stats: StatsSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
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
        # Slice caching's driver (proxy/slices.py), sharing our epochs, lock and running fetches.
        self.slices = Slices(store=store, upstream=upstream, epochs=self.epochs, store_lock=self.store_lock,
                             running=self.flights.epochs_running, slice_size=config.slice_size,
                             max_object_size=config.max_object_size, revision_header=config.revision_header,
                             clock=clock, fresh=self._slice_fresh, on_evicted=self._evicted,
                             count_fetch=self._count_fetch)
        # Closed until missed invalidations are applied: no cached entry is served before.
        self.ready = asyncio.Event()

    @property
    def origins(self) -> tuple[Origin, ...]:
        """The fallback chain a miss walks, in order (mediaedge.policy.fallback), composed
        from the origins the settings configured (runtime.py builds `upstream` and `db`)."""
        return origin_chain(has_upstream=self.upstream is not None, has_database=self.db is not None)

    # ---------------------------------------------------------------- entry point
    def hot_hit(self, req: MediaRequest) -> Reply | None:
        """The common case answered without a coroutine, a lookup or a plan: a fresh entry
        held in memory, asked for without Range or conditionals. None: take `handle`.

        Same decision as `handle`'s first branch (fresh and not soft-purged → hit), with
        the plan taken from the entry's `HitTemplate` (tests/test_respond.py checks it
        equals `plan_response`)."""
        if not self.ready.is_set() or not is_plain(req.headers):
            return None
        hot = self.cache.probe(req.target, req.headers)
        return None if hot is None else self._hot_reply(req, hot)

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
        if hot is not None:
            entry: Entry | None = Entry(EntryMeta.from_json(hot.meta_json), body=hot.body)
        else:
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

    # ---------------------------------------------------------------- hits
    def _serve_entry(self, req: MediaRequest, entry: Entry, age: float, fresh: Freshness, result: str,
                     status_text: str | None = None) -> Reply:
        meta = entry.meta
        ttl = ttl_left(age, fresh)
        if result == "stale" and ttl >= 0:
            ttl = -1  # soft-purged while still within its lifetime: report it stale
        plan = plan_response(
            method=req.method,
            request_headers=req.headers,
            status=meta.status,
            headers=meta.headers,
            length=meta.size,
            revision=meta.revision or None,
            revision_header=self.config.revision_header,
            cache_status=status_text or cache_status(hit=True, ttl=ttl),
            age=int(age),
            date=HTTP_DATES.text(self.clock()),  # served by us: our clock (Age says how old it is)
            browser_cache_control=self.browser_cache_control,
        )
        reply = Reply(plan.status, plan.headers, result=result, source="cache", target=req.target)
        if plan.window is None:
            entry.close()
            return reply
        start, end = plan.window
        end = meta.size if end is None else end
        if entry.body is not None:
            reply.body = entry.body[start:end]
            return reply
        assert entry.file is not None
        if start == 0 and end == meta.size:
            # A whole body is checked against the SHA-256 recorded at fill time as it
            # streams; the last bytes are held back until it matches, so a damaged file
            # can only ever reach a client as a cut response, never as a complete one.
            body: object = self._verified_body(entry.file, meta)
        elif blocks_valid(meta.blocks, meta.size):
            # A window: each MiB block it touches is checked against its CRC-32 before
            # any byte of it is sent, so a damaged block reaches no client at all.
            body = self._verified_window(entry.file, meta, start, end)
        else:
            body = FileBody(entry.file, start, end - start)  # entries from before block sums
        reply.job = self.flights.track(req.target, Job(plan.status, plan.headers, body))  # type: ignore[arg-type]
        if not isinstance(body, FileBody):  # the file and its sums, for sendfile to the client (proxy/zerocopy.py)
            reply.job.source = FileWindow(entry.file, meta.size, start, end, meta.sha256, meta.blocks,
                                          lambda where: self._drop_damaged(meta, where))
        entry.file = None  # the job owns it now
        return reply

    async def _verified_body(self, f: BinaryIO, meta: EntryMeta) -> AsyncIterator[bytes]:
        """A whole-body hit from disk, its last piece held back until its SHA-256 matches."""
        try:
            async for chunk in verified_stream(f, meta.size, meta.sha256, VERIFY_CHUNK):
                yield chunk
        except DamagedEntry as e:
            await self._drop_damaged(meta, e.where)
            raise FillFailed("damaged cache entry") from e
        finally:
            f.close()

    async def _verified_window(self, f: BinaryIO, meta: EntryMeta, start: int, end: int) -> AsyncIterator[bytes]:
        """A Range hit from disk: only the blocks it covers, each checked before any byte of it goes."""
        try:
            for index in covering_blocks(start, end):
                data = await asyncio.to_thread(checked_block, f, meta.size, meta.blocks, index)
                if data is None:
                    await self._drop_damaged(meta, f"block {index}")
                    raise FillFailed("damaged cache entry")
                base = index * BLOCK
                yield data[max(start - base, 0):end - base]
        finally:
            f.close()

    async def _drop_damaged(self, meta: EntryMeta, where: str) -> None:
        log.warning("cache entry for %s is damaged on disk (%s): dropped, download cut", meta.target, where)
        await self.cache.drop_damaged(meta)

    # ---------------------------------------------------------------- misses
    async def _from_fill(self, req: MediaRequest, stale: Entry | None, now: float,
                         revalidate: EntryMeta | None = None) -> Reply:
        try:
            if stale is None and revalidate is None and self._forwards_range(req):
                flight, joined, handle = self._flight_for(req, alone=True, forward_range=True)
            else:
                flight, joined, handle = self._flight_for(req, revalidate=revalidate)
        except Busy as e:
            # Another fetch of the same object would defeat coalescing; the stale copy
            # or a retry soon is what a herd this size should get.
            if stale is not None:
                return self._serve_stale(req, stale, now)
            reply = self._error_reply(req.target, 503, str(e))
            reply.headers = reply.headers.with_set("Retry-After", "1")
            return reply
        try:
            return await self._reply_from_flight(req, stale, now, flight, joined, handle)
        finally:
            if not handle.consumed:
                handle.close()

    async def _reply_from_flight(
        self, req: MediaRequest, stale: Entry | None, now: float, flight: Flight, joined: bool, handle: SpoolHandle
    ) -> Reply:
        # Joining a fill whose body is already complete and checked is reading the
        # entry being committed: report it as the hit it is about to be.
        complete = joined and flight.fill.done and flight.fill.error is None
        try:
            # shield: the head is shared with every other waiter of this fetch
            head = await asyncio.wait_for(asyncio.shield(flight.fill.head), self.config.coalesce_timeout)
        except FillFailed as e:
            if flight.fill.rerouted:
                return await self._rerouted(req, stale, now)
            if stale is not None:
                return self._serve_stale(req, stale, now)
            return self._error_reply(req.target, e.status, str(e))
        except TimeoutError:
            if stale is not None:
                return self._serve_stale(req, stale, now)
            return self._error_reply(req.target, 504, f"the origin gave no answer within {self.config.coalesce_timeout:g} s")
        if head.stale_first and stale is not None:
            return self._serve_stale(req, stale, now)  # the upstream's own 5xx only when nothing stale is left
        if joined and not (head.shareable and _same_vary(head, flight.leader_headers, req.headers)):
            # Not ours to share (private, Set-Cookie, another Vary variant): fetch alone.
            return await self._fetch_alone(req, stale, now)
        if head.renewed:
            return await self._serve_renewed(req, stale, now, head, joined)
        if joined and not complete and self.stats is not None:
            self.stats.coalesced()
        # Refused by admission (mediaedge.policy.admission) is still a miss: shareable, just not stored.
        fwd = "miss" if head.storable or head.negative or head.not_stored_reason == "admission" else "bypass"
        status_text = cache_status(
            fwd=fwd, fwd_status=head.status, stored=head.storable, collapsed=joined, detail=head.source
        )
        if complete and head.storable:
            status_text, fwd = cache_status(hit=True), "hit"
        plan = plan_response(
            method=req.method,
            request_headers=req.headers,
            status=head.status,
            headers=head.headers,
            length=head.length,
            revision=head.revision,
            revision_header=self.config.revision_header,
            cache_status=status_text,
            age=delta_seconds(_first(head.headers, "age")),  # passed on: the upstream's Age (RFC 9111 5.1)
            # passed on as it arrives: the upstream's own Date when it sent one (RFC 9110 6.6.1)
            date=_first(head.headers, "date") or HTTP_DATES.text(self.clock()),
            browser_cache_control=self.browser_cache_control,
        )
        result = {"miss": "miss", "hit": "hit"}.get(fwd, "pass")
        source = "cache" if fwd == "hit" else head.source
        reply = Reply(plan.status, plan.headers, result=result, source=source, target=req.target)
        if plan.window is not None:
            start, end = plan.window
            mine = handle
            # Small bodies from memory; anything else streams (an app's 404 page can be large).
            small = head.length is not None and head.length <= SMALL_BODY
            if small and (head.negative or flight.fill.done):
                reply.body = await _collect(flight.fill.reader(mine, start, end))
            else:
                reply.job = self.flights.track(req.target, Job(plan.status, plan.headers, flight.fill.reader(mine, start, end)))
        return reply

    def _error_reply(self, target: str, status: int, message: str) -> Reply:
        return _error_reply(target, status, message, date=HTTP_DATES.text(self.clock()))

    def _serve_stale(self, req: MediaRequest, stale: Entry, now: float) -> Reply:
        facts = entry_facts(stale.meta, self.config)
        return self._serve_entry(req, stale, entry_age(facts, now), facts.fresh, "stale")

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
        flight, _, handle = self._flight_for(req, alone=True, forward_range=True)
        try:
            return await self._reply_from_flight(req, stale, now, flight, False, handle)
        finally:
            if not handle.consumed:
                handle.close()

    def _forwards_range(self, req: MediaRequest) -> bool:
        """Does this miss send the client's Range to the origin (mediaedge.policy.seek)?"""
        if not forwardable(req.method, req.headers):
            return False
        return route_range(method=req.method, request_headers=req.headers, known=self.unstored.get(req.target),
                           now=self.clock()).forward

    def _flight_for(self, req: MediaRequest, *, alone: bool = False, forward_range: bool = False,
                    revalidate: EntryMeta | None = None) -> tuple[Flight, bool, SpoolHandle]:
        """Join the running fill for this target, or start one (coalescing).

        Returns the flight, whether it was joined, and this reader's own spool handle
        (taken now, while the fill's descriptor is certainly open)."""
        shared = not alone and "authorization" not in req.headers and "cookie" not in req.headers
        if shared:
            joined = self.flights.join(req.target)
            if joined is not None:
                return joined, True, joined.fill.open_handle()
        if alone and not forward_range and revalidate is None:
            forward_range = self._forwards_range(req)
        fill = Fill(req.target, self.store.new_temp_path(), stall_timeout=self.config.coalesce_timeout)
        flight = self.flights.begin(req.target, fill, req.headers, shared=shared, revalidating=revalidate,
                                    forward_range=forward_range)
        handle = fill.open_handle()
        flight.task = asyncio.get_running_loop().create_task(self._run_fill(flight, req))
        return flight, False, handle

    def _start_refresh(self, req: MediaRequest, revalidate: EntryMeta | None = None) -> None:
        """stale-while-revalidate / soft purge: one background fetch per target (a
        revalidation when `revalidate`, the stored entry, has a validator)."""
        if self.flights.joinable(req.target) is not None:
            return
        bg = MediaRequest("GET", req.target, req.headers.without("authorization", "cookie", "range"))
        self._flight_for(bg, revalidate=revalidate)[2].close()

    # ---------------------------------------------------------------- the fetch
    async def _run_fill(self, flight: Flight, req: MediaRequest) -> None:
        fill = flight.fill
        try:
            published = await asyncio.to_thread(self.store.get_published, req.target)
            if await self._revalidate_db(flight, req):
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
                await self._from_database(flight, req, published)
                return
            if await self._try_upstream(flight, req, published):
                return
            origin = next_origin(self.origins, origin, upstream_status=flight.upstream_status,
                                 upstream_failed=flight.upstream_error_kind is not None,
                                 row_found=flight.db_object is not None)
        await self._not_in_database(flight, req, published, "none", "no database origin")

    async def _try_upstream(self, flight: Flight, req: MediaRequest, published: str | None) -> bool:
        """True when the upstream's answer was used; False: fall back to the database."""
        assert self.upstream is not None
        resp = await self._upstream_get(flight, req)
        if isinstance(resp, Failed):
            self._count_fetch("upstream", "error")
            flight.upstream_failure = resp.message
            flight.upstream_error_kind = resp.kind
            return False
        if resp is None:
            return True  # not modified: the stored entry was renewed
        answer = self._answer_of(req, resp)
        decision = on_upstream_answer(answer, published=published, has_database="db" in self.origins,
                                      settings=self.config, forward_range=flight.forward_range)
        if isinstance(decision, FallBack) and decision.otherwise is None:
            self._count_fetch("upstream", "notfound" if resp.status < 500 else "error")
            flight.upstream_failure = decision.reason
            flight.upstream_status = resp.status
            flight.upstream_answer = resp  # its body is read only if the client is to get it
            return False
        self._count_fetch("upstream", "ok")
        if isinstance(decision, FallBack):
            # Published revision wins when the database has the file; media only the app
            # has (no row) is served from the app rather than turned into a 404 for everyone.
            assert self.db is not None and decision.otherwise is not None
            row = await find_row(self.db, self._db_key(req.target))
            if isinstance(row, DbObject):
                await resp.aclose()
                flight.db_object = row
                return False
            decision = decision.otherwise
        if not flight.forward_range and self._learns_slices(req, resp, decision, answer.revision):
            # An object over --slice-size: this whole answer is dropped after its head and
            # every request of this fetch is served slice by slice (`_rerouted`).
            await resp.aclose()
            self.flights.close_to_joiners(req.target, flight)
            flight.fill.rerouted = True
            raise _failed("served slice by slice", 502)
        await self._pump_upstream(flight, req, resp, answer.revision, decision)
        return True

    def _answer_of(self, req: MediaRequest, resp: UpstreamResponse) -> UpstreamAnswer:
        """The upstream's head as the decisions see it."""
        explicit = (resp.headers.get(self.config.revision_header) or "").strip() or None
        return UpstreamAnswer(req.target, resp.status, resp.headers, req.headers,
                              revision_from(resp.headers, self.config.revision_header), explicit,
                              content_length(resp.headers))

    # ---------------------------------------------------------------- revalidation
    def _revalidatable(self, meta: EntryMeta) -> bool:
        """May this entry, once expired, be revalidated (mediaedge.policy.revalidate)?"""
        probe = self.db is not None and meta.source == "db" and \
            self.db.can_probe_revision(self._db_key(meta.target))
        return can_revalidate(source=meta.source, negative=meta.negative, soft_stale=meta.soft_stale,
                              headers=meta.headers, has_revision_probe=probe).ok

    async def _upstream_get(self, flight: Flight, req: MediaRequest) -> UpstreamResponse | Failed | None:
        """The upstream's answer for this fetch; None when it was a revalidation the
        upstream answered 304 and the stored entry was renewed. A 304 that does not
        answer for the stored entry (RFC 9111 4.3.4) is followed by a plain GET."""
        assert self.upstream is not None
        if flight.forward_range:
            # the client's Range and validators: the upstream's 206/416/304 is passed on
            wanted = tuple((name, value) for name in ("Range", "If-Range", "If-None-Match", "If-Modified-Since")
                           for value in req.headers.get_all(name)[:1])
            return await self.upstream.fetch(req.target, req.headers, wanted)
        stored = flight.revalidating
        fields = conditional_fields(stored.headers) if stored is not None and stored.source == "upstream" else ()
        if not fields:
            return await self.upstream.fetch(req.target, req.headers)
        assert stored is not None
        request_time = self.clock()
        resp = await self.upstream.fetch(req.target, req.headers, fields)
        if isinstance(resp, Failed) or resp.status != 304:
            return resp  # a 200 replaces the entry as any fill does; failures fall back as usual
        await resp.discard()
        matches = use_not_modified(stored.headers, resp.headers, revision_header=self.config.revision_header)
        if matches.ok:
            fresh = renewed(stored, headers=updated_headers(stored.headers, resp.headers),
                            request_time=request_time, response_time=self.clock())
            if await self._renew(flight, fresh, "upstream"):
                self._count_fetch("upstream", "notmodified")
                return None
        log.info("%s: a 304 that cannot renew the stored entry (%s); fetching it whole", req.target, matches.reason)
        return await self.upstream.fetch(req.target, req.headers)

    async def _revalidate_db(self, flight: Flight, req: MediaRequest) -> bool:
        """An expired entry from the database origin: its row's revision is read (not its
        blob); unchanged → the entry is renewed (True). Else the usual fetch runs."""
        stored = flight.revalidating
        if stored is None or stored.source != "db" or self.db is None:
            return False
        try:
            probe = await in_database_thread(self.db.revision_of, self._db_key(req.target))
        except OriginError as e:
            log.info("%s: revalidation with the database failed (%s)", req.target, e)
            self._count_fetch("db", "error")
            flight.db_problem = f"database origin: {e}"
            return False
        if not db_unchanged(stored_revision=stored.revision, found=probe.found, revision=probe.revision).ok:
            return False
        now = self.clock()
        if not await self._renew(flight, renewed(stored, request_time=now, response_time=now), "db"):
            return False
        self._count_fetch("db", "notmodified")
        return True

    async def _renew(self, flight: Flight, meta: EntryMeta, source: str) -> bool:
        """Store the renewed metadata and tell the fetch's readers to serve the entry."""
        if not await self.cache.renew(meta, epoch=flight.epoch, aborted=lambda: flight.fill.aborted):
            return False
        flight.tags, flight.revision = meta.tags, meta.revision
        flight.fill.head.set_result(FillHead(meta.status, meta.headers, source, meta.revision, meta.size,
                                             shareable=True, storable=True, renewed=True))
        flight.fill.finish()
        return True

    async def _fetch_alone(self, req: MediaRequest, stale: Entry | None, now: float) -> Reply:
        """A fetch of this request's own, joined by no one (what it joined was not for it)."""
        alone, _, own = self._flight_for(req, alone=True)
        try:
            return await self._reply_from_flight(req, stale, now, alone, False, own)
        finally:
            if not own.consumed:
                own.close()

    async def _serve_renewed(self, req: MediaRequest, stale: Entry | None, now: float, head: FillHead,
                             joined: bool) -> Reply:
        """A request whose fetch ended in a renewal: the renewed entry, from the cache
        (a hit, counted in `revalidated`). Gone again already (purged): fetch alone."""
        found = await self.cache.read(req.target, req.headers)
        if found.entry is None:
            return await self._fetch_alone(req, stale, now)
        entry = found.entry
        facts = entry_facts(entry.meta, self.config)
        age, fresh = entry_age(facts, self.clock()), facts.fresh
        if self.stats is not None:
            self.stats.revalidated()
        text = cache_status(fwd="stale", fwd_status=304, collapsed=joined, detail=head.source)
        return self._serve_entry(req, entry, age, fresh, "hit", status_text=text)

    async def _pump_upstream(
        self, flight: Flight, req: MediaRequest, resp: UpstreamResponse, revision: str | None,
        decision: Store | Pass, fallback: Fallback | None = None,
    ) -> None:
        """Stream the upstream's answer to the client, and into the cache when `decision`
        says Store: a representation, or (`fallback`) its own 404/410/5xx after the
        database had no row."""
        fill = flight.fill
        request_time = self.clock()
        headers = resp.headers.without(*STRIPPED_FROM_ORIGIN)
        if isinstance(decision, Pass):
            if decision.reason == "deception":
                log.warning("not storing %s (deception armour): %s", req.target, decision.detail)
            if decision.remember:
                await self._not_stored(flight, req, resp, decision.reason)
        storable = isinstance(decision, Store)
        length = content_length(resp.headers)
        admitted = not storable or self._admitted(flight, req.target, length)
        representation = resp.status == 200  # only a 200 gets a revision from its content
        flight.tags = surrogate_keys(resp.headers)
        chunks = resp.chunks()
        head_sent = False
        if representation and revision is None and length is not None and length <= HASH_BEFORE_HEAD:
            # Revisionless: hash the body first so the client gets X-Media-Revision too.
            await self._copy_chunks(fill, chunks)
            sha = fill.finish()
            revision = "sha256:" + sha[:16]
        else:
            sha = ""
        flight.revision = revision
        head = FillHead(resp.status, headers, "upstream", revision, length,
                        shareable=decision.shareable, storable=storable and admitted, negative=decision.negative,
                        not_stored_reason=(decision.reason if isinstance(decision, Pass) else "")
                        or ("" if admitted else "admission"),
                        stale_first=fallback is not None and fallback.stale_first)
        storable = storable and admitted
        fill.length = length
        fill.head.set_result(head)
        head_sent = True
        try:
            if not fill.done:
                # An answer nobody stores is read only while someone reads it: a player that
                # opens a 4 GB video with `bytes=0-` and seeks away after 2 MB cuts the fetch.
                await self._copy_chunks(fill, chunks, None if storable else flight)
                sha = fill.finish()
        except UpstreamError as e:
            raise _failed(f"upstream body cut: {e}", 502) from e
        finally:
            await resp.aclose()
        if length is not None and fill.written != length:
            fill.error = f"upstream sent {fill.written} of {length} bytes"
            raise _failed(fill.error, 502)
        if revision is None and representation:
            revision = "sha256:" + sha[:16]
        if storable and fill.written > self.config.max_object_size and resp.status == 200:
            self._remember_unstored(req.target, 200, "size")  # no Content-Length: found too big at the end
        if isinstance(decision, Store) and storable and fill.written <= self.config.max_object_size and head_sent:
            meta = decision.meta(revision=revision or "", size=fill.written, sha256=sha, blocks=fill.block_sums(),
                                 request_time=request_time, response_time=self.clock())
            await self._install_async(flight, meta)

    def _remember_unstored(self, target: str, status: int, reason: str) -> bool:
        note = remember(status=status, reason=reason, now=self.clock())
        if note is not None:
            self.unstored.put(target, note)
        return note is not None

    async def _not_stored(self, flight: Flight, req: MediaRequest, resp: UpstreamResponse, reason: str) -> None:
        """A whole answer the edge will not store: remembered for later seeks, and when the
        fetch is for a Range request, dropped after its head (its requests are re-sent with
        their Range: `rerouted`) rather than read whole to send a window."""
        self._remember_unstored(req.target, resp.status, reason)
        if not abandon_fetch(method=req.method, request_headers=req.headers, status=resp.status, reason=reason):
            return
        await resp.aclose()
        self.flights.close_to_joiners(req.target, flight)  # nobody joins it from now on
        flight.fill.rerouted = True
        raise _failed(f"not stored ({reason}): the Range goes to the origin", 502)

    async def _copy_chunks(self, fill: Fill, chunks: AsyncIterator[bytes], unread: Flight | None = None) -> None:
        """Copy the upstream's body into the fill; `unread`: stop once nobody reads it (a
        fetch that is not stored), and let nobody join it from then on. A cut body raises
        UpstreamError (translated at the origin's boundary, origins/http.py)."""
        async for chunk in chunks:
            await fill.write(chunk)
            if unread is not None and fill.waiting == 0:
                self.flights.close_to_joiners(fill.target, unread)
                raise _failed("not stored and nobody reads it any more", 502)

    async def _from_database(self, flight: Flight, req: MediaRequest, published: str | None) -> None:
        fill = flight.fill
        request_time = self.clock()
        database, obj, problem = await self._ask_database(flight, req)
        if obj is None:
            await self._not_in_database(flight, req, published, database, problem)
            return
        if flight.upstream_answer is not None:
            answer, flight.upstream_answer = flight.upstream_answer, None
            await answer.discard()
        row = DatabaseRow(req.target, obj.path, obj.size, obj.revision, obj.content_type, obj.updated_at, obj.tags)
        decision = on_database_row(row, self.config)
        headers = database_headers(row)
        storable = isinstance(decision, Store)
        if isinstance(decision, Pass):
            self._remember_unstored(req.target, 200, decision.reason)
            if await self._database_window(flight, req, obj, headers):
                return
        # a published revision is the truth being installed: not weighed against the tail
        admitted = not storable or published is not None or self._admitted(flight, req.target, obj.size)
        flight.tags, flight.revision = obj.tags, obj.revision
        fill.length = obj.size
        loop = asyncio.get_running_loop()
        revision = obj.revision
        # Revisionless rows (the sql profile) get the body's hash, as revisionless
        # upstream bodies do: small ones are hashed before the head goes out.
        hash_first = revision is None and obj.size is not None and obj.size <= HASH_BEFORE_HEAD
        if hash_first:
            await in_database_thread(self._copy_db_blob, obj, fill, loop)
            sha = fill.finish()
            revision = flight.revision = "sha256:" + sha[:16]
        fill.head.set_result(FillHead(200, headers, "db", revision, obj.size, shareable=True,
                                      storable=storable and admitted,
                                      not_stored_reason="" if admitted else "admission"))
        storable = storable and admitted
        if not hash_first:
            await in_database_thread(self._copy_db_blob, obj, fill, loop, 0, None, not storable)
            sha = fill.finish()
        if obj.size is not None and fill.written != obj.size:
            raise _failed(f"database returned {fill.written} of {obj.size} bytes", 502)
        revision = flight.revision = revision or "sha256:" + sha[:16]
        adopt = adopts_published(published, revision)
        if adopt:
            # The database is the source of truth: a publish naming a revision that
            # neither origin has must not turn caching off for the path until the next
            # publish (every request passed through): the row wins and is stored.
            log.warning("%s: published revision %r is on neither origin; storing the database's %r",
                        req.target, published, revision)
        if isinstance(decision, Store) and storable and fill.written <= self.config.max_object_size:
            meta = decision.meta(revision=revision, size=fill.written, sha256=sha, blocks=fill.block_sums(),
                                 request_time=request_time, response_time=self.clock())
            await self._install_async(flight, meta, adopt_published=adopt)

    async def _database_window(self, flight: Flight, req: MediaRequest, obj: DbObject, headers: Headers) -> bool:
        """A Range request for a row the edge will not store: just the window is read from
        the database and answered 206 (or 416), never stored. False: serve it whole."""
        if obj.size is None or not is_range_request(req.method, req.headers):
            return False
        etag = etag_for_revision(obj.revision) if obj.revision else None
        window: ByteRange | str = database_window(request_headers=req.headers, length=obj.size, etag=etag,
                                 last_modified=obj.updated_at)
        if window == "full":
            return False
        fill = flight.fill
        flight.tags, flight.revision = obj.tags, obj.revision
        if not isinstance(window, ByteRange):  # unsatisfiable
            fill.length = 0
            fill.head.set_result(FillHead(416, headers.with_set("Content-Range", unsatisfied_content_range(obj.size)),
                                          "db", obj.revision, 0, shareable=False, storable=False,
                                          not_stored_reason="range"))
            fill.finish()
            return True
        fill.length = window.length
        fill.head.set_result(FillHead(206, headers.with_set("Content-Range", content_range(window, obj.size)),
                                      "db", obj.revision, window.length, shareable=False, storable=False,
                                      not_stored_reason="range"))
        await in_database_thread(self._copy_db_blob, obj, fill, asyncio.get_running_loop(),
                                 window.start, window.end + 1, True)
        fill.finish()
        if fill.written != window.length:
            raise _failed(f"database returned {fill.written} of {window.length} bytes", 502)
        return True

    def _admitted(self, flight: Flight, target: str, length: int | None) -> bool:
        """Admission at the head (memory only): refused, the response is served as a miss
        and not stored (mediaedge.policy.admission)."""
        decision = self.store.admission(target, length, resident=flight.resident)
        if not decision.admit:
            log.debug("%s: not stored (admission: %s)", target, decision.reason)
        return decision.admit
    async def _ask_database(self, flight: Flight, req: MediaRequest) -> tuple[Database, DbObject | None, str]:
        """What the database origin says: found (with the row), notfound, failed or none."""
        if flight.db_object is not None:
            self._count_fetch("db", "ok")
            return "found", flight.db_object, ""
        assert self.db is not None  # asked only when the chain holds the database
        if flight.db_problem is not None:
            return "failed", None, flight.db_problem
        row = await find_row(self.db, self._db_key(req.target))
        if isinstance(row, Failed):
            self._count_fetch("db", "error")
            return "failed", None, row.message
        if isinstance(row, NotFound):
            self._count_fetch("db", "notfound")
            return "notfound", None, row.reason
        self._count_fetch("db", "ok")
        return "found", row, ""

    async def _not_in_database(self, flight: Flight, req: MediaRequest, published: str | None,
                               database: Database, problem: str) -> None:
        """No row (or no answer from the database): what the upstream said decides
        (mediaedge.policy.fallback). Stale entries are served by the requests that hold
        them: on `FillFailed`, or on a head marked `stale_first`."""
        decision = after_origins(has_upstream="upstream" in self.origins, upstream_status=flight.upstream_status,
                                 upstream_failure=flight.upstream_error_kind, database=database)
        answer, flight.upstream_answer = flight.upstream_answer, None
        if decision.action == "upstream" and answer is not None:
            head = self._answer_of(req, answer)
            passed = on_upstream_answer(head, published=published, has_database="db" in self.origins,
                                        settings=self.config, fallback=decision, forward_range=flight.forward_range)
            assert not isinstance(passed, FallBack)  # with `fallback` given, it never falls back again
            await self._pump_upstream(flight, req, answer, head.revision, passed, fallback=decision)
            return
        if answer is not None:
            await answer.discard()
        if decision.action == "not-found":
            await self._negative(flight, req, "db")
            return
        both = f"{flight.upstream_failure}; " if flight.upstream_failure else ""
        raise _failed(f"{both}{problem}", decision.status or 502)

    def _db_key(self, target: str) -> str:
        """What the database origin looks up: the decoded path, or (the sql profile,
        whose routes match what clients send) the canonical target itself."""
        return target if getattr(self.db, "by_target", False) else decoded_path(target)

    def _copy_db_blob(self, obj: DbObject, fill: Fill, loop: asyncio.AbstractEventLoop,
                      start: int = 0, end: int | None = None, unread: bool = False) -> None:
        """Copy bytes [start, end) of a row into the fill (worker thread); `unread`: stop once
        nobody reads them (an answer that is not stored)."""
        assert self.db is not None
        chunks = self.db.read(obj) if start == 0 and end is None else self.db.read(obj, start, end)
        try:
            for chunk in chunks:
                fill.write_from_thread(chunk, loop)
                if unread and fill.waiting == 0:
                    raise _failed("not stored and nobody reads it any more", 502)
        except OriginError as e:
            raise _failed(f"database read failed: {e}", 502) from e
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # ends the read's snapshot now, also when the fill was aborted

    async def _negative(self, flight: Flight, req: MediaRequest, source: str) -> None:
        fill = flight.fill
        decision = on_not_found(req.target, source, upstream_error_kind=flight.upstream_error_kind)
        storable = isinstance(decision, Store)
        fill.head.set_result(FillHead(404, NOT_FOUND_HEADERS, source, None, len(NOT_FOUND_BODY),
                                      shareable=decision.shareable, storable=storable, negative=True))
        await fill.write(NOT_FOUND_BODY)
        sha = fill.finish()
        if not isinstance(decision, Store):
            return
        now = self.clock()
        meta = decision.meta(revision="", size=len(NOT_FOUND_BODY), sha256=sha, blocks=fill.block_sums(),
                             request_time=now, response_time=now)
        flight.tags = ()
        await self._install_async(flight, meta)

    async def _install_async(self, flight: Flight, meta: EntryMeta, *, adopt_published: bool = False) -> None:
        fill = flight.fill
        if fill.spilled:
            if self.stats is not None:
                self.stats.disk_error()
            return  # the cache disk failed during this fill: passed through, not stored
        committed = await self.cache.commit(fill.temp_path, meta, epoch=flight.epoch, aborted=lambda: fill.aborted,
                                            adopt_published=adopt_published)
        if committed is Verdict.STALE:
            # A soft purge arrived during the fill: stored stale, and one refetch runs.
            self._start_refresh(MediaRequest("GET", meta.target, flight.leader_headers))

    # ---------------------------------------------------------------- bookkeeping
    # ---------------------------------------------------------------- slices
    def _learns_slices(self, req: MediaRequest, resp: UpstreamResponse, decision: Store | Pass,
                       revision: str | None) -> bool:
        """Is this whole answer's object to be served slice by slice (mediaedge.policy.slices)?
        Stored objects and those only too big to store whole qualify; a private request or a
        revision other than the published one does not."""
        storable = isinstance(decision, Store) or decision.reason == "size"
        if _private(req) or (isinstance(decision, Pass) and decision.reason == "published"):
            return False
        return self.slices.learn(target=req.target, status=resp.status, length=content_length(resp.headers),
                                 headers=resp.headers.without(*STRIPPED_FROM_ORIGIN), storable=storable,
                                 tags=surrogate_keys(resp.headers), revision=revision)

    async def _from_slices(self, req: MediaRequest) -> Reply | None:
        """A request for a sliced object, answered from its slices (proxy/slices.py). None:
        not sliced, or its first slice could not be had as one: served as a whole fetch."""
        obj = self.slices.known(req.target)
        if obj is None or _private(req) or req.method not in ("GET", "HEAD"):
            return None

        def plan(text: str, age: int | None) -> Plan:
            return plan_response(method=req.method, request_headers=req.headers, status=200, headers=obj.headers,
                                 length=obj.size, revision=obj.revision, revision_header=self.config.revision_header,
                                 cache_status=text, age=age, date=HTTP_DATES.text(self.clock()),
                                 browser_cache_control=self.browser_cache_control)

        window = plan("", None).window
        try:
            start, end = window or (0, 0)
            opened = await self.slices.open(obj, req.headers, start, obj.size if end is None else end)
        except SliceUnusable as e:
            log.info("%s: not served from slices (%s): fetched whole", req.target, e)
            return None
        if opened.cached:
            answer = plan(cache_status(hit=True, ttl=int(opened.ttl)), None if opened.age is None else int(opened.age))
        else:
            answer = plan(cache_status(fwd="miss", fwd_status=206, stored=True, detail="upstream"), None)
        reply = Reply(answer.status, answer.headers, result="hit" if opened.cached else "miss",
                      source="cache" if opened.cached else "upstream", target=req.target)
        if answer.window is None or window is None:
            await opened.body.aclose()
        else:
            reply.job = self.flights.track(req.target, Job(answer.status, answer.headers, opened.body))
        return reply

    def _slice_fresh(self, meta: EntryMeta) -> tuple[bool, float, float]:
        """May a stored slice be served (fresh), how old it is and its ttl left."""
        facts, now = entry_facts(meta, self.config), self.clock()
        age = entry_age(facts, now)
        return isinstance(on_lookup(facts, now, self.config), Serve), age, ttl_left(age, facts.fresh)

    def _evicted(self, targets: list[str]) -> None:
        for target in targets:
            self.hot.drop(target)  # never serve from memory what the disk has evicted

    # ---------------------------------------------------------------- bookkeeping
    def _count_fetch(self, origin: str, outcome: str) -> None:
        if self.stats is not None:
            self.stats.origin_fetch(origin, outcome)

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
def _private(req: MediaRequest) -> bool:
    """A request whose fetch is its own (credentials): never shares slices."""
    return "authorization" in req.headers or "cookie" in req.headers


def _failed(message: str, status: int) -> FillFailed:
    return FillFailed(message, status)


def _error_reply(target: str, status: int, message: str, *, date: str) -> Reply:
    body = (message.splitlines()[0] if message else "origin unavailable").encode("utf-8", "replace") + b"\n"
    headers = Headers([
        ("Date", date),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Status", cache_status(fwd="miss", detail="error")),
    ])
    return Reply(status, headers, body, result="error", source=None, target=target)


async def _collect(chunks: object) -> bytes:
    parts = [c async for c in chunks]  # type: ignore[attr-defined]
    return b"".join(parts)


def _vary_values(vary: tuple[str, ...], headers: Headers) -> tuple[str | None, ...]:
    """The request's Vary values for a storage key (absent: None, never "")."""
    return vary_values(vary, headers)


def _same_vary(head: FillHead, leader: Headers, mine: Headers) -> bool:
    names = vary_names(head.headers)
    if names is None:
        return False
    return _vary_values(names, leader) == _vary_values(names, mine)


def _first(headers: Headers, name: str) -> str | None:
    values = headers.get_all(name)
    return values[0] if values else None


def _unlink_quiet(path: str) -> None:

    try:
        os.unlink(path)
    except OSError:
        pass
