"""The fill side for the HTTP origin (the app server): ask the upstream for a miss, pass
its answer on to the fill's readers while storing it, or say why it is not the client's
answer (the database origin is asked next).

What to do with an answer is `mediaedge.policy.decide.on_upstream_answer`'s; this module
performs it: conditional GETs for revalidations (a 304 renews the entry), the client's
Range forwarded for what the edge will not store (`mediaedge.policy.seek`), revisionless
small bodies hashed before the head goes out, objects over `--slice-size` handed to
slice caching, and unstored fetches stopped when nobody reads them any more.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from mediaedge.coalesce import Coalescer, Flight
from mediaedge.contract import EngineConfig, MediaRequest
from mediaedge.databasefill import DatabaseFill
from mediaedge.errors import FillFailed, UpstreamError
from mediaedge.fill import Fill, FillHead
from mediaedge.fillstore import HASH_BEFORE_HEAD, FillStore
from mediaedge.origins import Failed
from mediaedge.origins.db import DbObject
from mediaedge.origins.http import Upstream, UpstreamResponse
from mediaedge.policy.decide import (
    STRIPPED_FROM_ORIGIN, FallBack, Pass, Store, UpstreamAnswer, content_length, on_upstream_answer, renewed,
    surrogate_keys,
)
from mediaedge.policy.fallback import Fallback
from mediaedge.policy.revalidate import conditional_fields, updated_headers, use_not_modified
from mediaedge.policy.seek import abandon_fetch
from mediaedge.policy.target import revision_from
from mediaedge.slices import Slices

log = logging.getLogger("mediaedge.engine")


class UpstreamFill:
    """One engine's upstream side. `database`: the database side, asked for a row when the
    upstream's representation is not the published revision (None: no database origin)."""

    def __init__(self, config: EngineConfig, upstream: Upstream, store: FillStore, flights: Coalescer,
                 slices: Slices, *, database: DatabaseFill | None, clock: Callable[[], float]) -> None:
        self.config = config
        self.upstream = upstream
        self.store = store
        self.flights = flights
        self.slices = slices
        self.database = database
        self.clock = clock

    async def ask(self, flight: Flight, req: MediaRequest, published: str | None) -> bool:
        """True when the upstream's answer was used; False: fall back to the database."""
        resp = await self._get(flight, req)
        if isinstance(resp, Failed):
            self.store.count_fetch("upstream", "error")
            flight.upstream_failure = resp.message
            flight.upstream_error_kind = resp.kind
            return False
        if resp is None:
            return True  # not modified: the stored entry was renewed
        answer = self.answer_of(req, resp)
        decision = on_upstream_answer(answer, published=published, has_database=self.database is not None,
                                      settings=self.config, forward_range=flight.forward_range)
        if isinstance(decision, FallBack) and decision.otherwise is None:
            self.store.count_fetch("upstream", "notfound" if resp.status < 500 else "error")
            flight.upstream_failure = decision.reason
            flight.upstream_status = resp.status
            flight.upstream_answer = resp  # its body is read only if the client is to get it
            return False
        self.store.count_fetch("upstream", "ok")
        if isinstance(decision, FallBack):
            # Published revision wins when the database has the file; media only the app
            # has (no row) is served from the app rather than turned into a 404 for everyone.
            assert self.database is not None and decision.otherwise is not None
            row = await self.database.find(req.target)
            if isinstance(row, DbObject):
                await resp.aclose()
                flight.db_object = row
                return False
            decision = decision.otherwise
        if not flight.forward_range and self._learns_slices(req, resp, decision, answer.revision):
            # An object over --slice-size: this whole answer is dropped after its head and
            # every request of this fetch is served slice by slice (`Engine._rerouted`).
            await resp.aclose()
            self.flights.close_to_joiners(req.target, flight)
            flight.fill.rerouted = True
            raise FillFailed("served slice by slice", 502)
        await self.pump(flight, req, resp, answer.revision, decision)
        return True

    async def pass_on(self, flight: Flight, req: MediaRequest, resp: UpstreamResponse, published: str | None,
                      fallback: Fallback) -> None:
        """The database had no row: the upstream's own answer (404/410/5xx) goes to the client."""
        head = self.answer_of(req, resp)
        passed = on_upstream_answer(head, published=published, has_database=self.database is not None,
                                    settings=self.config, fallback=fallback, forward_range=flight.forward_range)
        assert not isinstance(passed, FallBack)  # with `fallback` given, it never falls back again
        await self.pump(flight, req, resp, head.revision, passed, fallback=fallback)

    def answer_of(self, req: MediaRequest, resp: UpstreamResponse) -> UpstreamAnswer:
        """The upstream's head as the decisions see it."""
        explicit = (resp.headers.get(self.config.revision_header) or "").strip() or None
        return UpstreamAnswer(req.target, resp.status, resp.headers, req.headers,
                              revision_from(resp.headers, self.config.revision_header), explicit,
                              content_length(resp.headers))

    async def _get(self, flight: Flight, req: MediaRequest) -> UpstreamResponse | Failed | None:
        """The upstream's answer for this fetch; None when it was a revalidation the
        upstream answered 304 and the stored entry was renewed. A 304 that does not
        answer for the stored entry (RFC 9111 4.3.4) is followed by a plain GET."""
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
            if await self.store.renew(flight, fresh, "upstream"):
                self.store.count_fetch("upstream", "notmodified")
                return None
        log.info("%s: a 304 that cannot renew the stored entry (%s); fetching it whole", req.target, matches.reason)
        return await self.upstream.fetch(req.target, req.headers)


    async def pump(
        self, flight: Flight, req: MediaRequest, resp: UpstreamResponse, revision: str | None,
        decision: Store | Pass, fallback: Fallback | None = None,
    ) -> None:
        """Stream the upstream's answer to the client, and into the cache when `decision`
        says Store: a representation, or (`fallback`) its own 404/410/5xx after the
        database had no row."""
        fill = flight.fill
        request_time = self.clock()
        if isinstance(decision, Pass):
            await self._passing(flight, req, resp, decision)
        storable = isinstance(decision, Store)
        length = content_length(resp.headers)
        admitted = not storable or self.store.admitted(flight, req.target, length)
        representation = resp.status == 200  # only a 200 gets a revision from its content
        flight.tags = surrogate_keys(resp.headers)
        chunks = resp.chunks()
        sha, revision = await self._hash_first(fill, chunks, representation, revision, length)
        flight.revision = revision
        head = FillHead(resp.status, resp.headers.without(*STRIPPED_FROM_ORIGIN), "upstream", revision, length,
                        shareable=decision.shareable, storable=storable and admitted, negative=decision.negative,
                        not_stored_reason=(decision.reason if isinstance(decision, Pass) else "")
                        or ("" if admitted else "admission"),
                        stale_first=fallback is not None and fallback.stale_first)
        storable = storable and admitted
        fill.length = length
        fill.head.set_result(head)
        sha = await self._body(flight, resp, chunks, storable, sha)
        if revision is None and representation:
            revision = "sha256:" + sha[:16]
        if storable and fill.written > self.config.max_object_size and resp.status == 200:
            self.store.remember_unstored(req.target, 200, "size")  # no Content-Length: found too big at the end
        if isinstance(decision, Store) and storable and fill.written <= self.config.max_object_size:
            meta = decision.meta(revision=revision or "", size=fill.written, sha256=sha, blocks=fill.block_sums(),
                                 request_time=request_time, response_time=self.clock())
            await self.store.install(flight, meta)

    async def _passing(self, flight: Flight, req: MediaRequest, resp: UpstreamResponse, decision: Pass) -> None:
        """An answer passed on unstored: said when it is deception armour's doing, and
        remembered for seeks when the reason is the object's own."""
        if decision.reason == "deception":
            log.warning("not storing %s (deception armour): %s", req.target, decision.detail)
        if decision.remember:
            await self._not_stored(flight, req, resp, decision.reason)

    async def _hash_first(self, fill: Fill, chunks: AsyncIterator[bytes], representation: bool,
                          revision: str | None, length: int | None) -> tuple[str, str | None]:
        """A small revisionless representation is read and hashed before its head goes out,
        so the client gets X-Media-Revision too: (its SHA-256, the revision)."""
        if representation and revision is None and length is not None and length <= HASH_BEFORE_HEAD:
            await self._copy_chunks(fill, chunks)
            sha = fill.finish()
            return sha, "sha256:" + sha[:16]
        return "", revision

    async def _body(self, flight: Flight, resp: UpstreamResponse, chunks: AsyncIterator[bytes], storable: bool,
                    sha: str) -> str:
        """The rest of the body into the fill, its length checked; its SHA-256."""
        fill = flight.fill
        try:
            if not fill.done:
                # An answer nobody stores is read only while someone reads it: a player that
                # opens a 4 GB video with `bytes=0-` and seeks away after 2 MB cuts the fetch.
                await self._copy_chunks(fill, chunks, None if storable else flight)
                sha = fill.finish()
        except UpstreamError as e:
            raise FillFailed(f"upstream body cut: {e}", 502) from e
        finally:
            await resp.aclose()
        if fill.length is not None and fill.written != fill.length:
            fill.error = f"upstream sent {fill.written} of {fill.length} bytes"
            raise FillFailed(fill.error, 502)
        return sha

    async def _not_stored(self, flight: Flight, req: MediaRequest, resp: UpstreamResponse, reason: str) -> None:
        """A whole answer the edge will not store: remembered for later seeks, and when the
        fetch is for a Range request, dropped after its head (its requests are re-sent with
        their Range: `rerouted`) rather than read whole to send a window."""
        self.store.remember_unstored(req.target, resp.status, reason)
        if not abandon_fetch(method=req.method, request_headers=req.headers, status=resp.status, reason=reason):
            return
        await resp.aclose()
        self.flights.close_to_joiners(req.target, flight)  # nobody joins it from now on
        flight.fill.rerouted = True
        raise FillFailed(f"not stored ({reason}): the Range goes to the origin", 502)

    async def _copy_chunks(self, fill: Fill, chunks: AsyncIterator[bytes], unread: Flight | None = None) -> None:
        """Copy the upstream's body into the fill; `unread`: stop once nobody reads it (a
        fetch that is not stored), and let nobody join it from then on. A cut body raises
        UpstreamError (translated at the origin's boundary, origins/http.py)."""
        async for chunk in chunks:
            await fill.write(chunk)
            if unread is not None and fill.waiting == 0:
                self.flights.close_to_joiners(fill.target, unread)
                raise FillFailed("not stored and nobody reads it any more", 502)

    def _learns_slices(self, req: MediaRequest, resp: UpstreamResponse, decision: Store | Pass,
                       revision: str | None) -> bool:
        """Is this whole answer's object to be served slice by slice (mediaedge.policy.slices)?
        Stored objects and those only too big to store whole qualify; a private request or a
        revision other than the published one does not."""
        storable = isinstance(decision, Store) or decision.reason == "size"
        if req.private or (isinstance(decision, Pass) and decision.reason == "published"):
            return False
        return self.slices.learn(target=req.target, status=resp.status, length=content_length(resp.headers),
                                 headers=resp.headers.without(*STRIPPED_FROM_ORIGIN), storable=storable,
                                 tags=surrogate_keys(resp.headers), revision=revision)
