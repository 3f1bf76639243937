"""The reply side of the data path: what a request is sent, from a stored entry or from
the fetch it waited on.

The engine decides which (`mediaedge.policy.decide`); this module turns an entry or a
fill's head into a `Reply` (`mediaedge.respond.plan_response`), checks large hits as they
stream (whole bodies against their SHA-256, windows block by block), and serves stale
entries and error answers. It fetches nothing: when the fetch a request waited on cannot
answer it (another Vary variant, private, dropped after its head), it says so with a
`Retry` and the engine starts the fetch.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, Literal

from mediaedge.cache import Cache
from mediaedge.coalesce import Coalescer, Flight
from mediaedge.contract import EngineConfig, MediaRequest, Reply
from mediaedge.digest import BLOCK, blocks_valid, checked_block, covering_blocks, verified_stream
from mediaedge.errors import DamagedEntry, FillFailed
from mediaedge.fill import FillHead, ReadBody
from mediaedge.headers import Headers
from mediaedge.policy.cachecontrol import delta_seconds
from mediaedge.policy.cachestatus import cache_status
from mediaedge.policy.decide import Serve, entry_age, entry_facts, on_lookup
from mediaedge.policy.freshness import Freshness, ttl_left
from mediaedge.policy.target import vary_names, vary_values
from mediaedge.respond import HTTP_DATES, Plan, plan_response
from mediaedge.slices import Opened, SlicedObject
from mediaedge.stats import StatsSink
from mediaedge.storage import Entry, EntryMeta
from mediaedge.streamserver import FileBody, Job
from mediaedge.zerocopy import FileWindow

log = logging.getLogger("mediaedge.engine")

VERIFY_CHUNK = 1 << 20
SMALL_BODY = 256 * 1024  # hits up to this size are answered from memory, larger ones streamed

# The fetch waited on cannot answer this request: "alone", it needs a fetch of its own (not
# shareable, another Vary variant, or renewed and purged again); "rerouted", the fetch was
# dropped after its head (a Range for what is not stored, or an object served by slices).
Retry = Literal["alone", "rerouted"]


class Replies:
    """Replies from entries and fills; one per engine, sharing its cache, clock and stats."""

    def __init__(self, config: EngineConfig, cache: Cache, flights: Coalescer, *,
                 clock: Callable[[], float], stats: StatsSink | None) -> None:
        self.config = config
        self.cache = cache
        self.flights = flights  # downloads are tracked by target, so invalidations can cut them
        self.clock = clock
        self.stats = stats
        self.browser_cache_control = cache.browser_cache_control

    # ---------------------------------------------------------------- hits
    def serve_entry(self, req: MediaRequest, entry: Entry, age: float, fresh: Freshness, result: str,
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
    # ---------------------------------------------------------------- fills
    async def from_flight(
        self, req: MediaRequest, stale: Entry | None, now: float, flight: Flight, joined: bool, read: ReadBody
    ) -> Reply | Retry:
        """The reply of a request that started or joined `flight`, once its head is known;
        `read`: the body, from this request's seat on the fill."""
        # Joining a fill whose body is already complete and checked is reading the
        # entry being committed: report it as the hit it is about to be.
        complete = joined and flight.fill.done and flight.fill.error is None
        head = await self._head(req, stale, now, flight)
        if not isinstance(head, FillHead):
            return head
        if head.stale_first and stale is not None:
            return self.serve_stale(req, stale, now)  # the upstream's own 5xx only when nothing stale is left
        if joined and not (head.shareable and _same_vary(head, flight.leader_headers, req.headers)):
            # Not ours to share (private, Set-Cookie, another Vary variant): fetch alone.
            return "alone"
        if head.renewed:
            return await self._serve_renewed(req, now, head, joined)
        if joined and not complete and self.stats is not None:
            self.stats.coalesced()
        return await self._from_head(req, flight, head, joined, complete, read)

    async def _head(self, req: MediaRequest, stale: Entry | None, now: float,
                    flight: Flight) -> FillHead | Reply | Retry:
        """The fill's head; or, when it failed or took too long, the stale entry or an error."""
        try:
            # shield: the head is shared with every other waiter of this fetch
            return await asyncio.wait_for(asyncio.shield(flight.fill.head), self.config.coalesce_timeout)
        except FillFailed as e:
            if flight.fill.rerouted:
                return "rerouted"
            if stale is not None:
                return self.serve_stale(req, stale, now)
            return self.error_reply(req.target, e.status, str(e))
        except TimeoutError:
            if stale is not None:
                return self.serve_stale(req, stale, now)
            return self.error_reply(req.target, 504, f"the origin gave no answer within {self.config.coalesce_timeout:g} s")

    async def _from_head(self, req: MediaRequest, flight: Flight, head: FillHead, joined: bool, complete: bool,
                         read: ReadBody) -> Reply:
        """The reply planned from the origin's head, its body read from the fill."""
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
            # Small bodies from memory; anything else streams (an app's 404 page can be large).
            small = head.length is not None and head.length <= SMALL_BODY
            if small and (head.negative or flight.fill.done):
                reply.body = await _collect(read(start, end))
            else:
                reply.job = self.stream(req.target, plan.status, plan.headers, read(start, end))
        return reply

    def slice_fresh(self, meta: EntryMeta) -> tuple[bool, float, float]:
        """May a stored slice be served (fresh), how old it is and its ttl left (proxy/slices.py asks)."""
        facts, now = entry_facts(meta, self.config), self.clock()
        age = entry_age(facts, now)
        return isinstance(on_lookup(facts, now, self.config), Serve), age, ttl_left(age, facts.fresh)

    def slices_plan(self, req: MediaRequest, obj: SlicedObject, text: str, age: int | None) -> Plan:
        """A sliced object's reply, planned from its whole 200's head (proxy/slices.py)."""
        return plan_response(method=req.method, request_headers=req.headers, status=200, headers=obj.headers,
                             length=obj.size, revision=obj.revision, revision_header=self.config.revision_header,
                             cache_status=text, age=age, date=HTTP_DATES.text(self.clock()),
                             browser_cache_control=self.browser_cache_control)

    async def from_slices(self, req: MediaRequest, obj: SlicedObject, opened: Opened, *, windowless: bool) -> Reply:
        """A sliced object's reply, its window streamed from the slices `opened`."""
        if opened.cached:
            answer = self.slices_plan(req, obj, cache_status(hit=True, ttl=int(opened.ttl)),
                                      None if opened.age is None else int(opened.age))
        else:
            answer = self.slices_plan(req, obj, cache_status(fwd="miss", fwd_status=206, stored=True,
                                                             detail="upstream"), None)
        reply = Reply(answer.status, answer.headers, result="hit" if opened.cached else "miss",
                      source="cache" if opened.cached else "upstream", target=req.target)
        if answer.window is None or windowless:
            await opened.body.aclose()
        else:
            reply.job = self.stream(req.target, answer.status, answer.headers, opened.body)
        return reply

    def stream(self, target: str, status: int, headers: Headers, body: AsyncIterator[bytes]) -> Job:
        """A streamed reply's job, tracked under its target until its last byte is sent."""
        return self.flights.track(target, Job(status, headers, body))

    def error_reply(self, target: str, status: int, message: str) -> Reply:
        return _error_reply(target, status, message, date=HTTP_DATES.text(self.clock()))

    def serve_stale(self, req: MediaRequest, stale: Entry, now: float) -> Reply:
        facts = entry_facts(stale.meta, self.config)
        return self.serve_entry(req, stale, entry_age(facts, now), facts.fresh, "stale")

    async def _serve_renewed(self, req: MediaRequest, now: float, head: FillHead, joined: bool) -> Reply | Retry:
        """A request whose fetch ended in a renewal: the renewed entry, from the cache
        (a hit, counted in `revalidated`). Gone again already (purged): fetch alone."""
        found = await self.cache.read(req.target, req.headers)
        if found.entry is None:
            return "alone"
        entry = found.entry
        facts = entry_facts(entry.meta, self.config)
        age, fresh = entry_age(facts, self.clock()), facts.fresh
        if self.stats is not None:
            self.stats.revalidated()
        text = cache_status(fwd="stale", fwd_status=304, collapsed=joined, detail=head.source)
        return self.serve_entry(req, entry, age, fresh, "hit", status_text=text)


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
