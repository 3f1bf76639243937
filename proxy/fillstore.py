"""What every fill does with what it fetched, whichever origin answered: admission at the
head, the commit (or renewal) into the cache, negative entries, notes of what was not
stored (for seeks), and the origin fetch counts.

Shared by the two fill sides (`proxy/upstreamfill.py`, `proxy/databasefill.py`) so each
speaks to the cache in one way; the decisions themselves are `mediaedge.policy.decide`'s.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from mediaedge.cache import Cache
from mediaedge.coalesce import Flight
from mediaedge.contract import MediaRequest
from mediaedge.epochs import Verdict
from mediaedge.fill import FillHead
from mediaedge.policy.decide import NOT_FOUND_BODY, NOT_FOUND_HEADERS, Store, on_not_found
from mediaedge.policy.seek import remember
from mediaedge.stats import StatsSink
from mediaedge.storage import CacheStore, EntryMeta

log = logging.getLogger("mediaedge.engine")

HASH_BEFORE_HEAD = 1 << 20  # revisionless bodies up to this size are hashed before the head goes out


class FillStore:
    """The fill side's one way into the cache. `refresh` starts a background fetch (the
    engine's): a commit a soft purge overtook is stored stale and fetched once more."""

    def __init__(self, cache: Cache, store: CacheStore, *, clock: Callable[[], float], stats: StatsSink | None,
                 refresh: Callable[[MediaRequest], None]) -> None:
        self.cache = cache
        self.store = store
        self.clock = clock
        self.stats = stats
        self.refresh = refresh

    def admitted(self, flight: Flight, target: str, length: int | None) -> bool:
        """Admission at the head (memory only): refused, the response is served as a miss
        and not stored (mediaedge.policy.admission)."""
        decision = self.store.admission(target, length, resident=flight.resident)
        if not decision.admit:
            log.debug("%s: not stored (admission: %s)", target, decision.reason)
        return decision.admit

    async def install(self, flight: Flight, meta: EntryMeta, *, adopt_published: bool = False) -> None:
        """Commit a finished fill as `meta` (unless its disk failed: then it was passed through)."""
        fill = flight.fill
        if fill.spilled:
            if self.stats is not None:
                self.stats.disk_error()
            return  # the cache disk failed during this fill: passed through, not stored
        committed = await self.cache.commit(fill.temp_path, meta, epoch=flight.epoch, aborted=lambda: fill.aborted,
                                            adopt_published=adopt_published)
        if committed is Verdict.STALE:
            # A soft purge arrived during the fill: stored stale, and one refetch runs.
            self.refresh(MediaRequest("GET", meta.target, flight.leader_headers))

    async def renew(self, flight: Flight, meta: EntryMeta, source: str) -> bool:
        """Store the renewed metadata and tell the fetch's readers to serve the entry."""
        if not await self.cache.renew(meta, epoch=flight.epoch, aborted=lambda: flight.fill.aborted):
            return False
        flight.tags, flight.revision = meta.tags, meta.revision
        flight.fill.head.set_result(FillHead(meta.status, meta.headers, source, meta.revision, meta.size,
                                             shareable=True, storable=True, renewed=True))
        flight.fill.finish()
        return True

    async def negative(self, flight: Flight, req: MediaRequest, source: str) -> None:
        """Our 404 for what no origin has, stored for `--negative-ttl` when the decision says so."""
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
        await self.install(flight, meta)

    def remember_unstored(self, target: str, status: int, reason: str) -> bool:
        """Note a fetch that was not stored, for later seeks (mediaedge.policy.seek.remember)."""
        note = remember(status=status, reason=reason, now=self.clock())
        if note is not None:
            self.cache.unstored.put(target, note)
        return note is not None

    def count_fetch(self, origin: str, outcome: str) -> None:
        if self.stats is not None:
            self.stats.origin_fetch(origin, outcome)
