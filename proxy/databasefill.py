"""The fill side for the database origin: the row for a miss (or for a revalidation, its
revision only), its blob copied into the fill in a worker thread, a Range window of a row
the edge will not store read on its own, and the answer when there is no row.

What a row means is `mediaedge.policy.decide.on_database_row`'s; lookups go through
`mediaedge.origins.rows.find_row`, which translates the drivers' errors once.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mediaedge.coalesce import Flight
from mediaedge.contract import EngineConfig, MediaRequest
from mediaedge.errors import FillFailed, OriginError
from mediaedge.fill import Fill, FillHead
from mediaedge.fillstore import HASH_BEFORE_HEAD, FillStore
from mediaedge.headers import Headers
from mediaedge.origins import Failed, MediaDatabase, NotFound
from mediaedge.origins.db import DbObject
from mediaedge.origins.rows import find_row
from mediaedge.policy.decide import DatabaseRow, Pass, Store, adopts_published, database_headers, on_database_row, renewed
from mediaedge.policy.fallback import Database
from mediaedge.policy.ranges import ByteRange, content_range, unsatisfied_content_range
from mediaedge.policy.revalidate import db_unchanged
from mediaedge.policy.seek import database_window, is_range_request
from mediaedge.policy.target import decoded_path, etag_for_revision
from mediaedge.pools import in_database_thread
from mediaedge.storage import EntryMeta

log = logging.getLogger("mediaedge.engine")


class DatabaseFill:
    """One engine's database side."""

    def __init__(self, config: EngineConfig, db: MediaDatabase, store: FillStore, *,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.clock = clock

    async def fill(self, flight: Flight, req: MediaRequest, published: str | None) -> tuple[Database, str] | None:
        """Serve the row into the fill; no row (or no answer): what the database said and
        why, for `mediaedge.policy.fallback.after_origins` to decide on."""
        request_time = self.clock()
        database, obj, problem = await self._ask(flight, req)
        if obj is None:
            return database, problem
        if flight.upstream_answer is not None:
            answer, flight.upstream_answer = flight.upstream_answer, None
            await answer.discard()
        row = DatabaseRow(req.target, obj.path, obj.size, obj.revision, obj.content_type, obj.updated_at, obj.tags)
        decision = on_database_row(row, self.config)
        headers = database_headers(row)
        if isinstance(decision, Pass):
            self.store.remember_unstored(req.target, 200, decision.reason)
            if await self._window(flight, req, obj, headers):
                return None
        await self._serve_row(flight, req, published, obj, decision, headers, request_time)
        return None

    async def _serve_row(self, flight: Flight, req: MediaRequest, published: str | None, obj: DbObject,
                         decision: Store | Pass, headers: Headers, request_time: float) -> None:
        """The whole row to the fill's readers, and into the cache when `decision` says Store."""
        fill = flight.fill
        storable = isinstance(decision, Store)
        # a published revision is the truth being installed: not weighed against the tail
        admitted = not storable or published is not None or self.store.admitted(flight, req.target, obj.size)
        flight.tags, flight.revision = obj.tags, obj.revision
        fill.length = obj.size
        loop = asyncio.get_running_loop()
        revision = obj.revision
        # Revisionless rows (the sql profile) get the body's hash, as revisionless
        # upstream bodies do: small ones are hashed before the head goes out.
        hash_first = revision is None and obj.size is not None and obj.size <= HASH_BEFORE_HEAD
        if hash_first:
            await in_database_thread(self._copy_blob, obj, fill, loop)
            sha = fill.finish()
            revision = flight.revision = "sha256:" + sha[:16]
        fill.head.set_result(FillHead(200, headers, "db", revision, obj.size, shareable=True,
                                      storable=storable and admitted,
                                      not_stored_reason="" if admitted else "admission"))
        storable = storable and admitted
        if not hash_first:
            await in_database_thread(self._copy_blob, obj, fill, loop, 0, None, not storable)
            sha = fill.finish()
        if obj.size is not None and fill.written != obj.size:
            raise FillFailed(f"database returned {fill.written} of {obj.size} bytes", 502)
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
            await self.store.install(flight, meta, adopt_published=adopt)

    async def _window(self, flight: Flight, req: MediaRequest, obj: DbObject, headers: Headers) -> bool:
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
        await in_database_thread(self._copy_blob, obj, fill, asyncio.get_running_loop(),
                                 window.start, window.end + 1, True)
        fill.finish()
        if fill.written != window.length:
            raise FillFailed(f"database returned {fill.written} of {window.length} bytes", 502)
        return True

    async def _ask(self, flight: Flight, req: MediaRequest) -> tuple[Database, DbObject | None, str]:
        """What the database origin says: found (with the row), notfound, failed or none."""
        if flight.db_object is not None:
            self.store.count_fetch("db", "ok")
            return "found", flight.db_object, ""
        if flight.db_problem is not None:
            return "failed", None, flight.db_problem
        row = await find_row(self.db, self.key(req.target))
        if isinstance(row, Failed):
            self.store.count_fetch("db", "error")
            return "failed", None, row.message
        if isinstance(row, NotFound):
            self.store.count_fetch("db", "notfound")
            return "notfound", None, row.reason
        self.store.count_fetch("db", "ok")
        return "found", row, ""

    async def find(self, target: str) -> DbObject | NotFound | Failed:
        """The row serving `target` (the upstream side asks when its answer is not the
        published revision)."""
        return await find_row(self.db, self.key(target))

    def can_probe(self, meta: EntryMeta) -> bool:
        """Can this entry's row revision be read without its blob (revalidation)?"""
        return meta.source == "db" and self.db.can_probe_revision(self.key(meta.target))

    async def revalidate(self, flight: Flight, req: MediaRequest) -> bool:
        """An expired entry from the database origin: its row's revision is read (not its
        blob); unchanged → the entry is renewed (True). Else the usual fetch runs."""
        stored = flight.revalidating
        if stored is None or stored.source != "db":
            return False
        try:
            probe = await in_database_thread(self.db.revision_of, self.key(req.target))
        except OriginError as e:
            log.info("%s: revalidation with the database failed (%s)", req.target, e)
            self.store.count_fetch("db", "error")
            flight.db_problem = f"database origin: {e}"
            return False
        if not db_unchanged(stored_revision=stored.revision, found=probe.found, revision=probe.revision).ok:
            return False
        now = self.clock()
        if not await self.store.renew(flight, renewed(stored, request_time=now, response_time=now), "db"):
            return False
        self.store.count_fetch("db", "notmodified")
        return True


    def key(self, target: str) -> str:
        """What the database origin looks up: the decoded path, or (the sql profile,
        whose routes match what clients send) the canonical target itself."""
        return target if getattr(self.db, "by_target", False) else decoded_path(target)

    def _copy_blob(self, obj: DbObject, fill: Fill, loop: asyncio.AbstractEventLoop,
                      start: int = 0, end: int | None = None, unread: bool = False) -> None:
        """Copy bytes [start, end) of a row into the fill (worker thread); `unread`: stop once
        nobody reads them (an answer that is not stored)."""
        chunks = self.db.read(obj) if start == 0 and end is None else self.db.read(obj, start, end)
        try:
            for chunk in chunks:
                fill.write_from_thread(chunk, loop)
                if unread and fill.waiting == 0:
                    raise FillFailed("not stored and nobody reads it any more", 502)
        except OriginError as e:
            raise FillFailed(f"database read failed: {e}", 502) from e
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # ends the read's snapshot now, also when the fill was aborted
