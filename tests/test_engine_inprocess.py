"""The engine's decisions driven in process: a real Engine and a real on-disk cache, a
fake upstream (httpx.MockTransport behind the upstream client) and an in-memory
database origin, a clock the test moves. No sockets, no mitmproxy: what is asserted is
what the client would get (status, bytes, Cache-Status) and how often each origin was asked.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from mediaedge.engine import Engine, EngineConfig, MediaRequest, Reply
from mediaedge.errors import FillFailed, OriginError
from mediaedge.headers import Headers
from mediaedge.origins.db import DbObject, RevisionProbe
from mediaedge.storage import CacheStore
from mediaedge.streamserver import FileBody
from mediaedge.origins.http import Upstream

T0 = 1_700_000_000.0
TARGET = "/media/a.jpg"
BODY = bytes(range(256)) * 40  # 10 KiB


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeUpstream:
    """Answers from a table the test edits; counts requests; can hold answers at a gate."""

    answers: dict[str, Callable[[httpx.Request], httpx.Response]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.get(request.url.raw_path.decode())
        if answer is None:
            return response(404, [], b"app: no such file")
        return answer(request)


class FakeDatabase:
    """An in-memory database origin (the MediaDatabase protocol)."""

    by_target = False

    def __init__(self) -> None:
        self.rows: dict[str, tuple[bytes, str]] = {}
        self.lookups = 0
        self.failing = False

    def lookup(self, path: str, /) -> DbObject | None:
        self.lookups += 1
        if self.failing:
            raise OriginError("database down")
        found = self.rows.get(path)
        if found is None:
            return None
        body, revision = found
        return DbObject(path, revision, "image/jpeg", len(body), hashlib.sha256(body).hexdigest(), (), None, (path,))

    def read(self, obj: DbObject, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20, /) -> Iterator[bytes]:
        body = self.rows[obj.path][0][start:end]
        for i in range(0, len(body), chunk_size):
            yield body[i:i + chunk_size]

    def can_probe_revision(self, path: str, /) -> bool:
        return True

    def revision_of(self, path: str, /) -> RevisionProbe:
        found = self.rows.get(path)
        return RevisionProbe(found is not None, found[1] if found else None)

    def close(self) -> None:
        pass


def response(status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> httpx.Response:
    """An answer whose body streams as a socket's would (a `content=` body counts as already read)."""
    headers = [*(headers or []), ("Content-Length", str(len(body)))]
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def ok(body: bytes = BODY, *extra: tuple[str, str], revision: str | None = "r1") -> Callable[[httpx.Request], httpx.Response]:
    headers = [("Content-Type", "image/jpeg"), *extra]
    if revision is not None:
        headers.append(("X-Media-Revision", revision))
    return lambda request: response(200, headers, body)


@dataclass
class Rig:
    engine: Engine
    store: CacheStore
    upstream: FakeUpstream
    db: FakeDatabase
    clock: Clock

    async def get(self, target: str = TARGET, *headers: tuple[str, str]) -> tuple[Reply, bytes]:
        reply = await self.engine.handle(MediaRequest("GET", target, Headers(list(headers))))
        return reply, await body_of(reply)

    async def settled(self) -> None:
        """Every background fetch finished (bounded)."""
        for _ in range(500):
            tasks = [f.task for f in self.engine.flights.shared() if f.task is not None]
            if not tasks:
                return
            await asyncio.wait(tasks, timeout=5)
        raise AssertionError("fetches still running")


async def body_of(reply: Reply) -> bytes:
    if reply.job is None:
        return reply.body
    body = reply.job.body
    if isinstance(body, FileBody):
        body.file.seek(body.offset)
        data = body.file.read(body.count)
        body.file.close()
    elif body is None:
        data = b""
    else:
        data = b"".join([chunk async for chunk in body])
    if reply.job.on_done is not None:
        reply.job.on_done(len(data), True)
    return data


def run(tmp_path: Any, test: Callable[[Rig], Awaitable[None]], *, db: bool = True, **config: Any) -> None:
    async def main() -> None:
        fake = FakeUpstream()
        database = FakeDatabase()
        clock = Clock()
        store = CacheStore(str(tmp_path / "cache"), size_limit=1 << 30)
        upstream = Upstream("http://app.invalid", timeout=5, transport=httpx.MockTransport(fake.handle))
        engine = Engine(EngineConfig(**config), store, upstream=upstream, db=database if db else None, clock=clock)
        engine.ready.set()
        try:
            await test(Rig(engine, store, fake, database, clock))
        finally:
            await engine.aclose()
            store.close()

    asyncio.run(main())


def cache_status(reply: Reply) -> str:
    return reply.headers.get("cache-status") or ""


# ------------------------------------------------------------------ serve / fetch
def test_hit_after_miss_is_one_origin_fetch(tmp_path):
    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok()
        first, body1 = await rig.get()
        await rig.settled()
        second, body2 = await rig.get()
        assert (first.status, first.result, body1) == (200, "miss", BODY)
        assert (second.status, second.result, second.source, body2) == (200, "hit", "cache", BODY)
        assert len(rig.upstream.requests) == 1
        assert rig.engine.hot_hit(MediaRequest("GET", TARGET, Headers())) is not None  # small: held in memory

    run(tmp_path, t)


def test_ten_concurrent_misses_make_one_fetch(tmp_path):
    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok()
        rig.upstream.gate = asyncio.Event()
        tasks = [asyncio.create_task(rig.get()) for _ in range(10)]
        for _ in range(100):  # let every request reach the fetch before the origin answers
            await asyncio.sleep(0)
        rig.upstream.gate.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert [body for _, body in results] == [BODY] * 10
        assert len(rig.upstream.requests) == 1
        # the others joined it: while it ran (collapsed), or as it was being committed (hit)
        assert all("collapsed" in cache_status(r) or r.result == "hit" for r, _ in results[1:])

    run(tmp_path, t)


def test_stale_while_revalidate_serves_stale_and_refreshes_once(tmp_path):
    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok(BODY, ("Cache-Control", "max-age=60, stale-while-revalidate=600"))
        await rig.get()
        await rig.settled()
        rig.clock.now += 70
        new = b"new" * 100
        rig.upstream.answers[TARGET] = ok(new, ("Cache-Control", "max-age=60"), revision="r2")
        rig.upstream.gate = asyncio.Event()
        stale = [await rig.get() for _ in range(5)]
        assert all((r.result, body) == ("stale", BODY) for r, body in stale)
        rig.upstream.gate.set()
        await rig.settled()
        assert len(rig.upstream.requests) == 2  # one refresh for five stale answers
        reply, body = await rig.get()
        assert (reply.result, body) == ("hit", new)

    run(tmp_path, t)


def test_expired_entry_is_revalidated_with_its_etag(tmp_path):
    async def t(rig: Rig) -> None:
        def answer(request: httpx.Request) -> httpx.Response:
            if request.headers.get("if-none-match") == '"v1"':
                return response(304, [("ETag", '"v1"'), ("Cache-Control", "max-age=60")])
            return response(200, [("ETag", '"v1"'), ("Cache-Control", "max-age=60")], BODY)

        rig.upstream.answers[TARGET] = answer
        await rig.get()
        await rig.settled()
        rig.clock.now += 120
        reply, body = await rig.get()
        assert (reply.status, reply.result, body) == (200, "hit", BODY)
        assert "fwd=stale" in cache_status(reply) and "fwd-status=304" in cache_status(reply)
        assert [r.headers.get("if-none-match") for r in rig.upstream.requests] == [None, '"v1"']
        again, _ = await rig.get()
        assert again.result == "hit" and len(rig.upstream.requests) == 2  # renewed for another minute

    run(tmp_path, t)


# ------------------------------------------------------------------ fall back
def test_upstream_404_falls_back_to_the_database(tmp_path):
    async def t(rig: Rig) -> None:
        rig.db.rows[TARGET] = (BODY, "d1")
        reply, body = await rig.get()
        assert (reply.status, reply.source, body) == (200, "db", BODY)
        assert reply.headers.get("x-media-revision") == "d1"
        await rig.settled()
        hit, body = await rig.get()
        assert (hit.result, body) == ("hit", BODY)
        assert (len(rig.upstream.requests), rig.db.lookups) == (1, 1)

    run(tmp_path, t)


def test_the_origin_chain_is_composed_from_the_origins_configured(tmp_path):
    async def with_db(rig: Rig) -> None:
        assert rig.engine.origins == ("upstream", "db")

    async def without_db(rig: Rig) -> None:  # --origin-db none: the upstream's own 404 is final
        assert rig.engine.origins == ("upstream",)
        rig.upstream.answers[TARGET] = lambda request: response(404, [], b"app's 404")
        reply, body = await rig.get()
        assert (reply.status, body) == (404, b"app's 404")

    run(tmp_path / "a", with_db)
    run(tmp_path / "b", without_db, db=False)


def test_upstream_refused_falls_back_to_the_database(tmp_path):
    async def t(rig: Rig) -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        rig.upstream.answers[TARGET] = refuse
        rig.db.rows[TARGET] = (BODY, "d1")
        reply, body = await rig.get()
        assert (reply.status, reply.source, body) == (200, "db", BODY)

    run(tmp_path, t)


def test_upstream_5xx_with_an_expired_entry_serves_it_within_grace(tmp_path):
    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok(BODY, ("Cache-Control", "max-age=60, stale-while-revalidate=600"))
        await rig.get()
        await rig.settled()
        rig.clock.now += 3600  # expired, within --grace
        rig.upstream.answers[TARGET] = lambda request: response(503, [], b"down")
        reply, body = await rig.get()
        assert (reply.status, reply.result, body) == (200, "stale", BODY)
        rig.clock.now += 2 * 86400  # beyond grace: the upstream's own 503
        reply, body = await rig.get()
        assert (reply.status, body) == (503, b"down")

    run(tmp_path, t, db=False)


def test_both_origins_failing_without_stale_is_a_502(tmp_path):
    async def t(rig: Rig) -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        rig.upstream.answers[TARGET] = refuse
        rig.db.failing = True
        reply, _ = await rig.get()
        assert (reply.status, reply.result) == (502, "error")

    run(tmp_path, t)


class CutStream(httpx.AsyncByteStream):
    """A body reset by the peer after its first bytes."""

    async def __aiter__(self):  # type: ignore[override]
        yield BODY[:100]
        raise httpx.ReadError("connection reset by peer")


def test_a_body_cut_mid_way_cuts_the_reply_and_stores_nothing(tmp_path):
    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = lambda request: httpx.Response(
            200, headers=[("Content-Length", str(len(BODY))), ("X-Media-Revision", "r1")], stream=CutStream())
        reply = await rig.engine.handle(MediaRequest("GET", TARGET, Headers()))
        with pytest.raises(FillFailed):
            await body_of(reply)
        await rig.settled()
        assert rig.store.get_pointer(TARGET) is None
        rig.upstream.answers[TARGET] = ok()
        _, body = await rig.get()
        assert body == BODY and len(rig.upstream.requests) == 2

    run(tmp_path, t)


# ------------------------------------------------------------------ published revision wins
def test_published_revision_wins_over_a_lagging_upstream(tmp_path):
    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok(b"old" * 10, revision="r1")
        rig.db.rows[TARGET] = (BODY, "r2")
        rig.store.set_published(TARGET, "r2")
        reply, body = await rig.get()
        assert (reply.source, body) == ("db", BODY)
        await rig.settled()
        hit, body = await rig.get()
        assert (hit.result, body, hit.headers.get("x-media-revision")) == ("hit", BODY, "r2")

    run(tmp_path, t)


def test_published_revision_no_row_serves_the_app_unstored(tmp_path):
    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok(b"old" * 10, revision="r1")
        rig.store.set_published(TARGET, "r2")
        reply, body = await rig.get()
        assert (reply.status, body) == (200, b"old" * 10)
        await rig.settled()
        again, _ = await rig.get()
        assert again.result != "hit" and len(rig.upstream.requests) == 2

    run(tmp_path, t)


# ------------------------------------------------------------------ negative entries
def test_no_upstream_and_no_row_is_our_own_not_found(tmp_path):
    async def t(rig: Rig) -> None:
        rig.engine.upstream = None
        reply, body = await rig.get()
        assert (reply.status, reply.source, body) == (404, "db", b"not found\n")
        await rig.settled()
        again, _ = await rig.get()
        assert (again.status, again.result, rig.db.lookups) == (404, "hit", 1)

    run(tmp_path, t)


def test_not_found_anywhere_is_remembered_for_negative_ttl(tmp_path):
    async def t(rig: Rig) -> None:
        reply, body = await rig.get()
        assert (reply.status, body) == (404, b"app: no such file")  # no row: the app's own 404 page
        await rig.settled()
        again, _ = await rig.get()
        assert (again.status, again.result) == (404, "hit")
        assert (len(rig.upstream.requests), rig.db.lookups) == (1, 1)
        rig.clock.now += 11  # --negative-ttl 10
        await rig.get()
        assert (len(rig.upstream.requests), rig.db.lookups) == (2, 2)

    run(tmp_path, t, negative_ttl=10.0)


def test_private_answers_are_not_stored(tmp_path):
    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok(BODY, ("Cache-Control", "private"))
        first, _ = await rig.get()
        await rig.settled()
        second, body = await rig.get()
        assert (first.result, second.result, body) == ("pass", "pass", BODY)
        assert len(rig.upstream.requests) == 2

    run(tmp_path, t)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_hot_hit_and_handle_agree(tmp_path, method):
    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok()
        await rig.get()
        await rig.settled()
        await rig.get()  # read from disk once: then held in memory
        req = MediaRequest(method, TARGET, Headers())
        fast = rig.engine.hot_hit(req)
        assert fast is not None and fast.result == "hit" and fast.body == (BODY if method == "GET" else b"")
        rig.clock.now += 86400 + 1  # default TTL over: not a plain hit any more
        assert rig.engine.hot_hit(req) is None

    run(tmp_path, t)


def test_a_disk_hit_is_held_in_memory_from_its_targets_second_request(tmp_path):
    """A one-off disk hit (random keys over a cache larger than the memory tier) builds no
    memory-tier entry; a target asked for again is held (mediaedge.hot.admits)."""
    from mediaedge.policy.admission import FrequencySketch

    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok()
        await rig.get()
        await rig.settled()
        rig.store.sketch = FrequencySketch(16)  # as after a restart: no request counted yet
        first, body = await rig.get()
        assert (first.result, first.source, body) == ("hit", "cache", BODY)
        assert rig.engine.cache.probe(TARGET, Headers()) is None  # asked once since start: not held
        second, body = await rig.get()
        assert (second.result, body) == ("hit", BODY)
        assert rig.engine.cache.probe(TARGET, Headers()) is not None  # asked again: held in memory
        assert len(rig.upstream.requests) == 1

    run(tmp_path, t)


def test_a_full_memory_tier_keeps_its_entries_against_a_target_asked_for_less_often(tmp_path):
    """Uniform keys over more targets than the tier holds must not churn it: once it is
    full, a disk hit is held only if its target was asked for more often than the entry
    it would push out (mediaedge.hot.admits with the victim's count)."""
    from mediaedge.hot import ENTRY_OVERHEAD
    from mediaedge.policy.admission import FrequencySketch

    held_a, held_b, newcomer = "/media/held-a.jpg", "/media/held-b.jpg", "/media/new.jpg"

    async def t(rig: Rig) -> None:
        cache = rig.engine.cache
        cache.hot.max_bytes = 2 * (len(BODY) + ENTRY_OVERHEAD)  # room for two entries
        for target in (held_a, held_b, newcomer):
            rig.upstream.answers[target] = ok()
            await rig.get(target)
        await rig.settled()
        rig.store.sketch = FrequencySketch(64)
        for target in (held_a, held_b):
            for _ in range(3):  # asked three times: held
                await rig.get(target)
        assert cache.probe(held_a, Headers()) is not None and cache.probe(held_b, Headers()) is not None
        for _ in range(3):  # asked as often as the oldest held (held_a): not held, nothing evicted
            reply, body = await rig.get(newcomer)
            assert (reply.result, body) == ("hit", BODY)
        assert cache.probe(newcomer, Headers()) is None
        assert cache.probe(held_a, Headers()) is not None and cache.probe(held_b, Headers()) is not None
        await rig.get(newcomer)  # a fourth time: more than held_a, which it replaces
        assert cache.probe(newcomer, Headers()) is not None
        assert cache.probe(held_a, Headers()) is None and cache.probe(held_b, Headers()) is not None
        assert len(rig.upstream.requests) == 3  # every one of these was a hit

    run(tmp_path, t)


def test_a_request_the_hot_path_did_not_serve_reads_the_disk_once(tmp_path):
    """The shell asks `hot_hit`, then `handle` (proxy/shell.py): a miss, a large entry or
    a stale one costs one lookup statement, not two; an invalidation between them, or
    another request, makes `handle` read again."""
    from mediaedge.webhook import PurgeEvent

    big = bytes(range(256)) * 256  # 64 KiB: a file, not inline

    async def t(rig: Rig) -> None:
        rig.engine.cache.hot.max_bytes = 0  # every hit from the disk
        rig.upstream.answers[TARGET] = ok(BODY, ("Cache-Control", "max-age=60, stale-while-revalidate=600"))
        rig.upstream.answers["/media/big.bin"] = ok(big)
        for target in (TARGET, "/media/big.bin"):
            await rig.get(target)
        await rig.settled()
        calls: list[str] = []
        rows = rig.store._lookup_rows

        def counted(target, values_for):
            calls.append(target)
            return rows(target, values_for)

        rig.store._lookup_rows = counted  # type: ignore[method-assign]

        async def as_the_shell(target: str) -> tuple[Reply, bytes]:
            req = MediaRequest("GET", target, Headers())
            reply = rig.engine.hot_hit(req) or await rig.engine.handle(req)
            return reply, await body_of(reply)

        reply, body = await as_the_shell(TARGET)  # a disk hit: the hot path serves it
        assert (reply.result, body, calls) == ("hit", BODY, [TARGET])
        calls.clear()
        reply, body = await as_the_shell("/media/big.bin")  # a file: looked up once, then the thread
        assert (reply.result, body, calls) == ("hit", big, ["/media/big.bin"])
        calls.clear()
        rig.upstream.answers["/media/none.jpg"] = lambda request: response(404, [], b"no")
        reply, _ = await as_the_shell("/media/none.jpg")  # a miss
        assert reply.status == 404 and calls == ["/media/none.jpg"]
        calls.clear()
        rig.clock.now += 120  # stale: served by handle from the probe's read, refreshed behind
        reply, body = await as_the_shell(TARGET)
        assert (reply.result, body, calls) == ("stale", BODY, [TARGET])
        await rig.settled()
        calls.clear()

        req = MediaRequest("GET", "/media/big.bin", Headers())
        assert rig.engine.hot_hit(req) is None and calls == ["/media/big.bin"]
        await invalidator(rig).apply(PurgeEvent(path="/media/big.bin"))  # between the two
        rig.upstream.answers["/media/big.bin"] = ok(BODY, revision="r2")
        reply = await rig.engine.handle(req)
        assert reply.result == "miss" and await body_of(reply) == BODY
        assert calls == ["/media/big.bin", "/media/big.bin"]  # read again, not the probe's answer

    run(tmp_path, t)


# ------------------------------------------------------------------ invalidation (cache facade + coalescer)
def invalidator(rig: Rig) -> Any:
    from mediaedge.invalidation import Invalidator

    return Invalidator(rig.engine, None, node="test")  # type: ignore[arg-type]  # apply() needs no log


def test_a_purge_during_a_fetch_keeps_it_from_being_stored(tmp_path):
    from mediaedge.webhook import PurgeEvent

    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok()
        rig.upstream.gate = asyncio.Event()
        first = asyncio.create_task(rig.get())
        for _ in range(200):  # bounded: until the fetch has reached the origin
            if rig.upstream.requests:
                break
            await asyncio.sleep(0.01)
        await invalidator(rig).apply(PurgeEvent(path=TARGET))
        rig.upstream.gate.set()
        reply, body = await asyncio.wait_for(first, 10)
        assert body == BODY  # the request in flight still gets its answer
        await rig.settled()
        assert rig.store.get_pointer(TARGET) is None  # but it was not stored
        again, _ = await rig.get()
        assert again.result == "miss" and len(rig.upstream.requests) == 2

    run(tmp_path, t)


def test_a_purge_drops_the_memory_tier_entry(tmp_path):
    from mediaedge.webhook import PurgeEvent

    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok()
        await rig.get()
        await rig.settled()
        await rig.get()
        req = MediaRequest("GET", TARGET, Headers())
        assert rig.engine.hot_hit(req) is not None
        await invalidator(rig).apply(PurgeEvent(prefix="/media/"))
        assert rig.engine.hot_hit(req) is None
        reply, _ = await rig.get()
        assert reply.result == "miss" and len(rig.upstream.requests) == 2

    run(tmp_path, t)


def test_a_publish_of_another_revision_drops_the_entry_and_the_next_fetch_stores_it(tmp_path):
    from mediaedge.webhook import PublishEvent

    async def t(rig: Rig) -> None:
        rig.upstream.answers[TARGET] = ok(BODY, revision="r1")
        await rig.get()
        await rig.settled()
        await invalidator(rig).apply(PublishEvent(TARGET, "r2"))
        rig.upstream.answers[TARGET] = ok(b"v2" * 50, revision="r2")
        reply, body = await rig.get()
        assert (reply.result, body) == ("miss", b"v2" * 50)
        await rig.settled()
        hit, body = await rig.get()
        assert (hit.result, body) == ("hit", b"v2" * 50)

    run(tmp_path, t)
