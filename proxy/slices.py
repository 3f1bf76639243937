"""Slice caching's I/O (nginx's slice module): objects over --slice-size fetched, stored and
served slice by slice.

Why: a seek into a 4 GB video must cost the app one slice, and a whole-object request
must stream with flat memory from many small entries. The decisions are pure
(mediaedge.policy.slices); this module does the fetching and storing:

- `SlicedObjects` remembers, in memory, which targets are sliced (their size, head and
  validator, learnt from a whole fetch's head; `Engine` drops that answer and asks again
  slice by slice) and which upstreams ignored `Range` for a target (not sliced again for
  a while: whole-object behaviour).
- `Slices.open` gets the first slice a window needs before the response head goes out:
  from the store, or fetched with a `Range` request whose answer is checked against the
  object's validator. `SliceUnusable` there means the engine serves the request whole.
- The body then streams slice after slice; a slice fetched is written to a spool file
  while its bytes go to the client and committed as an entry of its own under the
  object's target (key revision `slice:<validator>:<size>:<index>`), so purge, publish,
  tags, soft purge and the commit-time epoch check (proxy/epochs.py) cover every slice.
  A later slice of another representation drops the object's slices and cuts the
  response: never a body mixed from two versions.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from mediaedge.digest import BLOCK, BodyDigest, blocks_valid, checked_block, covering_blocks
from mediaedge.epochs import Epochs, Verdict
from mediaedge.errors import FillFailed, SliceUnusable, UpstreamError
from mediaedge.headers import Headers
from mediaedge.policy.slices import (Piece, Validator, check_slice, pieces, range_field, should_slice,
                                     slice_bounds, slice_key, validator_of)
from mediaedge.storage import CacheStore, Entry, EntryMeta
from mediaedge.upstream import Upstream, UpstreamResponse

log = logging.getLogger("mediaedge.slices")

MAX_OBJECTS = 4096  # sliced targets remembered (least recent out: relearnt from a whole fetch's head)
REFUSED_TTL = 600.0  # an upstream that ignored Range for a target is not asked for slices again for this long
CHANGED_TTL = 5.0  # a representation that changed under the edge: served whole for a moment, then sliced anew
READ_CHUNK = 1 << 20
# A request for a slice whose fetch is running waits for it (then reads it from the
# store) at most this long before fetching it itself.
JOIN_TIMEOUT = 60.0
HEADERS_NOT_SENT = ("authorization", "cookie", "range", "if-range")


@dataclass(frozen=True)
class SlicedObject:
    """An object served slice by slice: what its whole 200's head said."""

    target: str
    size: int
    headers: Headers  # the 200's end-to-end fields, what every answer is planned from
    validator: Validator
    revision: str | None
    tags: tuple[str, ...]


class SlicedObjects:
    """Targets known to be sliced, and targets not to slice for a while (memory only)."""

    def __init__(self, limit: int = MAX_OBJECTS) -> None:
        self.limit = limit
        self._objects: OrderedDict[str, SlicedObject] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()

    def get(self, target: str) -> SlicedObject | None:
        obj = self._objects.get(target)
        if obj is not None:
            self._objects.move_to_end(target)
        return obj

    def put(self, obj: SlicedObject) -> None:
        self._objects[obj.target] = obj
        self._objects.move_to_end(obj.target)
        while len(self._objects) > self.limit:
            self._objects.popitem(last=False)

    def drop(self, target: str) -> None:
        self._objects.pop(target, None)

    def refuse(self, target: str, until: float) -> None:
        self._objects.pop(target, None)
        self._refused[target] = until
        self._refused.move_to_end(target)
        while len(self._refused) > self.limit:
            self._refused.popitem(last=False)

    def refused(self, target: str, now: float) -> bool:
        until = self._refused.get(target)
        if until is None:
            return False
        if now >= until:
            del self._refused[target]
            return False
        return True


class WindowBody:
    """The body of a window: an async iterator whose `aclose` also releases the first
    slice (held since `open`) when the body was never read: a job nobody claimed must not
    keep an upstream response open, nor keep others waiting on that slice's fetch."""

    def __init__(self, chunks: AsyncIterator[bytes], first: _Source | None) -> None:
        self._chunks = chunks
        self._first = first

    def __aiter__(self) -> WindowBody:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()  # type: ignore[attr-defined]  # an async generator
        finally:
            if self._first is not None:
                await self._first.aclose()


@dataclass
class Opened:
    """A window of a sliced object, its first slice in hand: `body` streams it."""

    cached: bool  # every slice the window touches is stored
    age: float | None  # of the first slice, when stored
    ttl: float
    body: WindowBody


FreshCheck = Callable[[EntryMeta], tuple[bool, float, float]]  # fresh?, age, ttl left


class Slices:
    """Fetching, storing and streaming the slices of sliced objects (see the module doc)."""

    def __init__(self, *, store: CacheStore, upstream: Upstream | None, epochs: Epochs, store_lock: threading.Lock,
                 running: dict[int, int], slice_size: int, max_object_size: int, revision_header: str,
                 clock: Callable[[], float], fresh: FreshCheck, on_evicted: Callable[[list[str]], None],
                 count_fetch: Callable[[str, str], None] = lambda origin, outcome: None) -> None:
        self.store = store
        self.upstream = upstream
        self.epochs = epochs
        self.store_lock = store_lock
        self.running = running  # the engine's running fills' epochs: ours count too (Epochs.prune)
        self.slice_size = slice_size
        self.max_object_size = max_object_size
        self.revision_header = revision_header
        self.clock = clock
        self.fresh = fresh
        self.on_evicted = on_evicted
        self.count_fetch = count_fetch  # origin fetches by outcome (/stats, Prometheus): one per slice
        self.objects = SlicedObjects()
        self._busy: dict[tuple[str, str], asyncio.Event] = {}
        self.fetched = 0  # slices fetched from the upstream (tests, bench)

    # ------------------------------------------------------------ what is sliced
    def known(self, target: str) -> SlicedObject | None:
        return self.objects.get(target) if self.upstream is not None else None

    def learn(self, *, target: str, status: int, length: int | None, headers: Headers, storable: bool,
              tags: tuple[str, ...], revision: str | None) -> bool:
        """A whole fetch's head: is the object to be served slice by slice from now on?"""
        if self.upstream is None or self.objects.refused(target, self.clock()):
            return False
        if not should_slice(slice_size=self.slice_size, max_object_size=self.max_object_size, status=status,
                            length=length, headers=headers, storable=storable,
                            revision_header=self.revision_header).ok:
            return False
        assert length is not None
        self.objects.put(SlicedObject(target, length, headers, validator_of(headers, self.revision_header),
                                      revision, tags))
        log.debug("%s: %d bytes, served in slices of %d", target, length, self.slice_size)
        return True

    def forget(self, target: str) -> None:
        """An invalidation: the next request learns the object anew."""
        self.objects.drop(target)

    # ------------------------------------------------------------ serving
    async def open(self, obj: SlicedObject, request_headers: Headers, start: int, end: int) -> Opened:
        """Bytes [start, end) of the object: the first slice is had (stored, or its fetch's
        head checked) before this returns; `SliceUnusable`: serve the request whole."""
        wanted = pieces(start, end, self.slice_size)
        headers = request_headers.without(*HEADERS_NOT_SENT)
        if not wanted:
            return Opened(True, None, 0.0, WindowBody(_empty(), None))
        first = await self._source(obj, wanted[0].index, headers)
        cached = isinstance(first, _Stored) and all(
            await asyncio.to_thread(self._has, obj, [p.index for p in wanted[1:]]))
        age = first.age if isinstance(first, _Stored) else None
        ttl = first.ttl if isinstance(first, _Stored) else 0.0
        return Opened(cached, age, ttl, WindowBody(self._stream(obj, wanted, first, headers), first))

    async def _stream(self, obj: SlicedObject, wanted: list[Piece], first: _Source,
                      headers: Headers) -> AsyncIterator[bytes]:
        source: _Source | None = first
        try:
            for piece in wanted:
                if source is None:
                    try:
                        source = await self._source(obj, piece.index, headers)
                    except SliceUnusable as e:
                        log.warning("%s: slice %d unusable (%s): response cut", obj.target, piece.index, e)
                        raise
                async for chunk in source.read(piece.start, piece.end):
                    yield chunk
                await source.aclose()
                source = None
        finally:
            if source is not None:
                await source.aclose()

    def _has(self, obj: SlicedObject, indexes: list[int]) -> list[bool]:
        return [self.store.has_entry(obj.target, slice_key(obj.validator, i, self.slice_size), ())
                for i in indexes]

    async def _source(self, obj: SlicedObject, index: int, headers: Headers) -> _Source:
        """Slice `index`: stored and fresh, else fetched (joining a fetch of it that runs)."""
        key = slice_key(obj.validator, index, self.slice_size)
        for _ in range(2):
            stored = await asyncio.to_thread(self._open_stored, obj, index, key)
            if stored is not None:
                return stored
            busy = self._busy.get((obj.target, key))
            if busy is None:
                break
            try:
                await asyncio.wait_for(busy.wait(), JOIN_TIMEOUT)
            except TimeoutError:
                break
        return await self._fetch(obj, index, key, headers)

    def _open_stored(self, obj: SlicedObject, index: int, key: str) -> _Stored | None:
        entry = self.store.open_entry(obj.target, key, ())
        if entry is None:
            return None
        first, end = slice_bounds(index, self.slice_size, obj.size)
        fresh, age, ttl = self.fresh(entry.meta)
        if not fresh or entry.meta.soft_stale or entry.meta.size != end - first:
            entry.close()
            return None  # expired or soft-purged: fetched again (and checked against the validator)
        return _Stored(self, entry, age, ttl)

    async def _fetch(self, obj: SlicedObject, index: int, key: str, headers: Headers) -> _Fetching:
        assert self.upstream is not None
        epoch = self.epochs.epoch
        token = object()
        self.running[id(token)] = epoch
        busy = asyncio.Event()
        self._busy.setdefault((obj.target, key), busy)

        def done() -> None:
            busy.set()
            if self._busy.get((obj.target, key)) is busy:
                del self._busy[(obj.target, key)]
            self.running.pop(id(token), None)
            self.epochs.prune(min(self.running.values(), default=None))

        request_time = self.clock()
        try:
            resp = await self.upstream.get(obj.target, headers,
                                           (("Range", range_field(index, self.slice_size, obj.size)),))
        except UpstreamError as e:
            done()
            self.count_fetch("upstream", "error")
            raise SliceUnusable(f"upstream: {e}", "upstream") from e
        decision = check_slice(expected=obj.validator, size=obj.size, index=index, slice_size=self.slice_size,
                               status=resp.status, headers=resp.headers, revision_header=self.revision_header)
        if not decision.ok:
            await resp.aclose()
            done()
            now = self.clock()
            if decision.reason == "changed":
                # Another representation: none of this one's slices may be served any more.
                self.objects.refuse(obj.target, now + CHANGED_TTL)
                await asyncio.to_thread(self._drop_slices, obj.target)
            else:
                self.objects.refuse(obj.target, now + REFUSED_TTL)
            raise SliceUnusable(f"slice {index}: {decision.reason} (upstream answered {resp.status})",
                                decision.reason)
        self.fetched += 1
        self.count_fetch("upstream", "ok")
        return _Fetching(self, obj, index, key, resp, epoch, request_time, done)

    def _drop_slices(self, target: str) -> None:
        with self.store_lock:
            self.store.delete_target(target)
        log.warning("%s: its representation changed between slices: every slice dropped", target)

    def _commit(self, fetch: _Fetching, meta: EntryMeta) -> bool:
        """Commit a finished slice unless an invalidation since its fetch began covers it
        (worker thread, under store_lock like every commit)."""
        with self.store_lock:
            standing, _ = self.epochs.verdict(fetch.epoch, meta.target, meta.tags, meta.revision or None)
            if standing is not Verdict.CURRENT:
                return False
            published = self.store.get_published(meta.target)
            if published is not None and meta.revision != published:
                return False
            try:
                evicted = self.store.commit(fetch.temp_path, meta)
            except OSError as e:
                log.warning("could not store a slice of %s: %s", meta.target, e)
                return False
        self.on_evicted(evicted)
        return True


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


class _Source:
    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        raise NotImplementedError
        yield b""

    async def aclose(self) -> None:
        pass


class _Stored(_Source):
    """A stored slice: each MiB block of the window checked against its CRC-32 first."""

    def __init__(self, owner: Slices, entry: Entry, age: float, ttl: float) -> None:
        self.owner, self.entry, self.age, self.ttl = owner, entry, age, ttl

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        meta = self.entry.meta
        if self.entry.body is not None:  # small, already checked against its SHA-256
            yield self.entry.body[start:end]
            return
        f = self.entry.file
        assert f is not None
        checked = blocks_valid(meta.blocks, meta.size)

        def read_block(index: int) -> bytes | None:  # worker thread: zlib releases the GIL
            if checked:
                return checked_block(f, meta.size, meta.blocks, index)
            f.seek(index * BLOCK)  # an entry with no block sums: read as it is
            return f.read(min(BLOCK, meta.size - index * BLOCK))

        for index in covering_blocks(start, end):
            data = await asyncio.to_thread(read_block, index)
            if data is None:
                log.warning("a slice of %s is damaged on disk (block %d): dropped, download cut",
                            meta.target, index)
                await asyncio.to_thread(self.owner.store.delete_revision, meta.target, meta.key_revision)
                raise FillFailed("damaged cache entry")
            base = index * BLOCK
            yield data[max(start - base, 0):end - base]

    async def aclose(self) -> None:
        self.entry.close()  # idempotent


@dataclass
class _Fetching(_Source):
    """A slice arriving from the upstream: written to a spool file as its bytes go out,
    committed once whole and length-checked."""

    owner: Slices
    obj: SlicedObject
    index: int
    key: str
    resp: UpstreamResponse
    epoch: int
    request_time: float
    done: Callable[[], None]
    temp_path: str = ""
    _closed: bool = field(default=False, repr=False)

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        first, stop = slice_bounds(self.index, self.owner.slice_size, self.obj.size)
        length = stop - first
        self.temp_path = self.owner.store.new_temp_path()
        digest = BodyDigest()
        pos = 0
        committed = False
        try:
            with open(self.temp_path, "wb") as spool:
                # chunks() raises UpstreamError for a body cut mid-way (origins/http.py)
                async for chunk in self.resp.chunks():
                    chunk = chunk[:length - pos]
                    spool.write(chunk)
                    digest.update(chunk)
                    a, b = max(start - pos, 0), min(end - pos, len(chunk))
                    pos += len(chunk)
                    if a < b:
                        yield chunk[a:b]
                    if pos >= length:
                        break
            if pos != length:
                raise FillFailed(f"upstream sent {pos} of {length} bytes of slice {self.index}", 502)
            meta = EntryMeta(
                target=self.obj.target, revision=self.obj.revision or "", status=200,
                headers=_slice_headers(self.obj.headers, self.resp.headers), size=length,
                sha256=digest.hexdigest(), blocks=digest.blocks(), request_time=self.request_time,
                response_time=self.owner.clock(), source="upstream", tags=self.obj.tags, key_revision=self.key)
            committed = await asyncio.to_thread(self.owner._commit, self, meta)
        finally:
            if not committed:
                _unlink_quiet(self.temp_path)
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.resp.aclose()
        finally:
            self.done()
            if self.temp_path and os.path.exists(self.temp_path):
                _unlink_quiet(self.temp_path)


def _slice_headers(whole: Headers, part: Headers) -> Headers:
    """A slice's stored fields: the object's, with the age basis (Date, Age) of the answer
    that brought this slice, so each slice's freshness runs from its own fetch."""
    out = whole.without("date", "age", "content-range", "content-length")
    basis = [(name, value) for name in ("Date", "Age") for value in part.get_all(name)[:1]]
    return Headers([*basis, *out])


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
