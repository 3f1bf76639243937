"""The cache's state with one owner: the disk store, the memory tier, the invalidation
epochs, the targets last fetched unstored, and the lock commits and invalidations take.

`lookup` (memory tier, else the disk in a worker thread, then held in memory), `commit`
(a finished fill, unless an invalidation or a published revision forbids it) and `renew`
(a revalidated entry) are the engine's; `locked` and `forget` are the invalidator's
(proxy/invalidation.py): the store's half of an event under the lock, then the memory's.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import NamedTuple, TypeVar

from mediaedge import hitrecord
from mediaedge.contract import EngineConfig
from mediaedge.epochs import Epochs, Verdict
from mediaedge.hitrecord import HitRecord
from mediaedge.headers import Headers
from mediaedge.hot import HotEntries, HotEntry, admits
from mediaedge.policy.decide import entry_facts, published_conflict
from mediaedge.policy.target import vary_values
from mediaedge.respond import browser_cache_control, hit_template
from mediaedge.storage import CacheStore, Entry, EntryMeta, InlineValue, Pointer, inline_entry, split_inline_raw
from mediaedge.unstored import UnstoredTargets

log = logging.getLogger("mediaedge.cache")

T = TypeVar("T")


@dataclass
class Found:
    entry: Entry | None
    pointer: Pointer | None


class Stored(NamedTuple):
    """A small entry `probe_stored` read from the disk, ready to serve and to `hold`."""

    hot: HotEntry
    vary: tuple[str, ...]  # the target's Vary names (its pointer's)
    record: HitRecord
    generation: int  # the memory tier's, before the read


class Cache:
    def __init__(self, store: CacheStore, config: EngineConfig) -> None:
        self.store = store
        self.config = config
        self.hot = HotEntries(max_bytes=config.memory_size)
        # Invalidations applied while fills run, checked at commit under `lock` and
        # before joining a running fill (proxy/epochs.py).
        self.epochs = Epochs()
        self.lock = threading.Lock()  # commit vs invalidation, across worker threads
        self.unstored = UnstoredTargets()  # targets whose last fetch was not stored (seeks)
        self.browser_cache_control = browser_cache_control(config.browser_ttl)
        # What a stored hit record depends on besides the entry (proxy/hitrecord.py); the
        # store writes one with every entry's metadata.
        self.fingerprint = hitrecord.fingerprint(
            revision_header=config.revision_header, browser_cache_control=self.browser_cache_control,
            default_ttl=config.default_ttl, negative_ttl=config.negative_ttl)
        store.hit_record = self.hit_record
        # What the last `probe_stored` read (target, request headers, memory-tier generation,
        # answer): the request it did not serve (a miss, a large or stale entry) comes to
        # `read` next, which takes it instead of running the same statement again.
        self._probed: tuple[str, Headers, int, InlineValue | None] | None = None

    # ---------------------------------------------------------------- lookups
    def probe(self, target: str, headers: Headers) -> HotEntry | None:
        """The memory tier's entry for this request's variant (no thread hop)."""
        return self.hot.get(target, lambda vary: vary_values(vary, headers))

    async def lookup(self, target: str, headers: Headers, *, running: Callable[[str], bool]) -> Found:
        """The stored entry for this request's variant, from the disk (worker thread); a
        small body of a target asked for before (`hot.admits`: the engine counted this
        request) is then held in memory. `running(target)`: a fetch for it is in flight."""
        generation = self.hot.generation
        found = await self.read(target, headers)
        if found.entry is None and self.hot.generation != generation and not running(target):
            # A fill for this target committed while we looked: look again rather
            # than start a second origin fetch for something now stored.
            found = await self.read(target, headers)
        entry, pointer = found.entry, found.pointer
        if (entry is not None and entry.body is not None and pointer is not None
                and self._admits(target, len(entry.body))):
            meta = entry.meta
            self.hot.put(target, pointer.vary, meta.vary_values if meta.vary else (),
                         self.hot_entry(meta, entry.body), generation, meta.tags)
        return found

    def probe_stored(self, target: str, headers: Headers) -> Stored | None:
        """A small stored entry read right here and served as a memory-tier entry is (no
        coroutine, no thread hop, no plan: its hit record, proxy/hitrecord.py); None: not
        stored, not small, not cheap to read now, or not intact (`lookup` answers).

        "Cheap now": reads on the event loop have not lately been slow (the store's
        `inline_reads`: a slab or database larger than the page cache waits on the disk).
        One decision and one timing for the whole probe, slab and rows."""
        reads = self.store.inline_reads
        if not reads.allowed():
            self._probed = (target, headers, self.hot.generation, None)  # `read` goes to the thread at once
            return None
        t0 = time.perf_counter()
        try:
            return self._probe_stored(target, headers)
        finally:
            reads.took((time.perf_counter() - t0) * 1e6)

    def _probe_stored(self, target: str, headers: Headers) -> Stored | None:
        generation = self.hot.generation
        slab = self.store.slab
        try:
            stamp = None
            if slab is not None:
                try:
                    from_slab = self._from_slab(slab.get(target), generation)
                    if from_slab is not None:
                        return from_slab
                    stamp = slab.stamp(target)
                except (OSError, ValueError, struct.error) as e:  # damaged: the rows answer
                    log.debug("hit slab read failed for %s: %s", target, e)
            quick = self.store.inline_rows(target, lambda vary: vary_values(vary, headers))
            self._probed = (target, headers, generation, quick)
            if quick is None or quick[0] is None or quick[1] is None:
                return None
            body, meta_json, raw = split_inline_raw(quick[1])
            record = hitrecord.decode(raw, self.fingerprint) if raw else None
            slab_worthy = record is not None and stamp is not None and not quick[0].vary
            if record is None:  # written before records, or under other settings
                record = self.record_of(EntryMeta.from_json(meta_json))
        except Exception as e:  # noqa: BLE001 - a broken cache degrades to the async path
            log.warning("cache lookup failed for %s: %s", target, e)
            return None
        if not hitrecord.body_matches(record, body):
            return None  # `lookup` reads it again and drops it
        if slab_worthy:  # read before there was a slab, or pushed out of it: the next hit skips SQLite
            assert slab is not None and stamp is not None
            try:
                slab.put(target, quick[1], stamp, wait=False)
            except OSError as e:
                log.debug("hit slab: could not put %s: %s", target, e)
        return Stored(HotEntry(meta_json, body, record.template, record.facts), quick[0].vary, record, generation)

    def _from_slab(self, value: bytes | None, generation: int) -> Stored | None:
        """A hit slab value (proxy/hitslab.py) as `probe_stored` answers, when its record was
        written under our settings and the body is the one it describes."""
        if value is None:
            return None
        body, meta_json, raw = split_inline_raw(value)
        record = hitrecord.decode(raw, self.fingerprint) if raw else None
        if record is None or not hitrecord.body_matches(record, body):
            return None
        return Stored(HotEntry(meta_json, body, record.template, record.facts), (), record, generation)

    def hold(self, target: str, stored: Stored) -> None:
        """Keep an entry `probe_stored` read in memory, if its target was asked for before
        and no invalidation came since it was read."""
        if self._admits(target, len(stored.hot.body)):
            self.hot.put(target, stored.vary, stored.record.vary_values, stored.hot, stored.generation,
                         stored.record.tags)

    def _admits(self, target: str, size: int) -> bool:
        """Hold a small disk hit of `size` bytes in memory? Only a target asked for before
        (`hot.admits`: the engine counted this request) and, when the tier is full, more
        often than the entry it would push out; never with --memory-size off."""
        if not self.hot.max_bytes:
            return False
        frequency = self.store.frequency(target)
        if not admits(frequency):
            return False
        victim = self.hot.victim(target, size)
        return victim is None or admits(frequency, self.store.frequency(victim))

    async def read(self, target: str, headers: Headers) -> Found:
        """The stored entry from the disk only; a broken cache is a miss. A small entry is
        read right here, without the hop to a worker thread, while such reads stay cheap
        (storage.lookup_inline, mediaedge.policy.lookup); anything else on a worker thread."""
        probed, self._probed = self._probed, None
        try:
            if probed is not None and probed[0] == target and probed[1] is headers and probed[2] == self.hot.generation:
                quick = inline_entry(probed[3])  # this request's own probe, nothing invalidated since
            else:
                quick = self.store.lookup_inline(target, lambda vary: vary_values(vary, headers))
            if quick is not None:
                return Found(quick[1], quick[0])
            return await asyncio.to_thread(self._lookup, target, headers)
        except Exception as e:  # noqa: BLE001 - a broken cache degrades to a miss, never a failed response
            log.warning("cache lookup failed for %s: %s", target, e)
            return Found(None, None)

    def _lookup(self, target: str, headers: Headers) -> Found:
        pointer = self.store.get_pointer(target)
        if pointer is None:
            return Found(None, None)
        values = vary_values(pointer.vary, headers)
        return Found(self.store.open_entry(target, pointer.revision, values), pointer)

    def hot_entry(self, meta: EntryMeta, body: bytes) -> HotEntry:
        """What the memory tier keeps of a small entry: everything a hot hit needs, computed once."""
        record = self.record_of(meta)
        return HotEntry(meta.to_json(), body, record.template, record.facts)

    def record_of(self, meta: EntryMeta) -> HitRecord:
        """A stored entry as a plain hit serves it under our settings."""
        facts = entry_facts(meta, self.config)
        template = hit_template(status=meta.status, headers=meta.headers, length=meta.size,
                                revision=meta.revision or None, revision_header=self.config.revision_header,
                                browser_cache_control=self.browser_cache_control)
        return HitRecord(meta.size, meta.sha256[:hitrecord.SHA256_KEPT], meta.vary_values if meta.vary else (), meta.tags, template, facts)

    def hit_record(self, meta: EntryMeta) -> bytes:
        """The record the store writes with `meta`, so a disk hit need not compute it."""
        return hitrecord.encode(self.fingerprint, self.record_of(meta))

    # ---------------------------------------------------------------- commits
    async def commit(self, temp_path: str, meta: EntryMeta, *, epoch: int, aborted: Callable[[], bool],
                     adopt_published: bool = False) -> Verdict | None:
        """Commit a finished fill and point the target at it: how it was committed (None:
        not at all). The memory tier never serves what this replaced or evicted."""
        self.hot.drop(meta.target)  # a lookup running now must not re-insert the old entry
        self.unstored.drop(meta.target)  # stored after all: seeks are served from the cache
        committed, evicted = await asyncio.to_thread(self._commit, temp_path, meta, epoch, aborted, adopt_published)
        self.hot.drop(meta.target)
        for target in evicted:
            self.hot.drop(target)  # never serve from memory what the disk has evicted
        return committed

    def _commit(self, temp_path: str, meta: EntryMeta, epoch: int, aborted: Callable[[], bool],
                adopt_published: bool) -> tuple[Verdict | None, list[str]]:
        """Worker thread. Under `lock`, the lock invalidations are applied under, so an
        event is wholly before this commit (its mark is seen here) or wholly after it (it
        drops what this commit stored): a fill that began before a matching event is never
        committed as current (proxy/epochs.py)."""
        evicted: list[str] = []
        with self.lock:
            if aborted():
                return None, evicted  # the node is stopping: nothing is committed
            standing, mark = self.epochs.verdict(epoch, meta.target, meta.tags, meta.revision or None)
            if standing is Verdict.INVALID:
                log.info("%s: not stored, invalidated during the fetch (%s event)", meta.target, mark and mark.kind)
                return None, evicted
            if standing is Verdict.STALE:
                if self.store.get_pointer(meta.target) is not None:
                    return None, evicted  # something as new or newer is stored: keep it
                meta = replace(meta, soft_stale=True)
            if adopt_published:
                self.store.set_published(meta.target, meta.revision)
            if published_conflict(self.store.get_published(meta.target), meta.revision, negative=meta.negative):
                return None, evicted
            try:
                evicted = self.store.commit_current(temp_path, meta)
            except OSError as e:
                log.warning("could not store %s (serving without storing): %s", meta.target, e)
                return None, evicted
        return standing, evicted

    async def renew(self, meta: EntryMeta, *, epoch: int, aborted: Callable[[], bool]) -> bool:
        """Store a revalidated entry's new metadata unless something overtook the
        revalidation: an invalidation since it began, a newer entry for the target, a
        published revision other than the entry's."""
        self.hot.drop(meta.target)
        renewed = await asyncio.to_thread(self._renew, meta, epoch, aborted)
        if renewed:
            self.hot.drop(meta.target)
        return renewed

    def _renew(self, meta: EntryMeta, epoch: int, aborted: Callable[[], bool]) -> bool:
        with self.lock:
            if aborted():
                return False
            standing, _ = self.epochs.verdict(epoch, meta.target, meta.tags, meta.revision or None)
            if standing is not Verdict.CURRENT:
                return False
            pointer = self.store.get_pointer(meta.target)
            if pointer is None or pointer.revision != meta.key_revision:
                return False
            if published_conflict(self.store.get_published(meta.target), meta.revision):
                return False
            return self.store.update_meta(meta)

    async def drop_damaged(self, meta: EntryMeta) -> None:
        """An entry whose bytes failed their check: gone from disk and memory."""
        await asyncio.to_thread(self.store.delete_revision, meta.target, meta.key_revision)
        self.hot.drop(meta.target)

    # ---------------------------------------------------------------- invalidation
    def locked(self, change: Callable[[], T]) -> T:
        """Run the store's half of an invalidation under the commit lock (worker thread)."""
        with self.lock:
            return change()

    def forget(self, targets: Iterable[str] = (), *, prefix: str | None = None, tag: str | None = None,
               everything: bool = False, keep_unstored: bool = False) -> None:
        """The memory's half of an invalidation: the memory tier never serves these again,
        and (unless `keep_unstored`) a new revision of them may be storable. `tag`: also
        every entry the memory tier holds with that Surrogate-Key, whatever the disk says."""
        if everything:
            self.hot.clear()
        if tag is not None:
            self.hot.drop_tag(tag)
        for t in targets:
            self.hot.drop(t)
            if not keep_unstored:
                self.unstored.drop(t)
        if prefix is not None:
            self.hot.drop_prefix(prefix)
            if not keep_unstored:
                self.unstored.drop_prefix(prefix)
