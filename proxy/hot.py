"""Small, recently served entries kept in memory: a hit without a thread hop or SQLite.

Bounded by bytes (least recently used out first). Every invalidation, commit and
purge drops the target's entries, and a lookup that began before a drop may not
insert what it read (the generation check), so memory never serves what the disk
would no longer serve.
"""
from __future__ import annotations

from collections import OrderedDict

from typing import Any, NamedTuple

from mediaedge.policy.decide import EntryFacts
from mediaedge.policy.freshness import Freshness
from mediaedge.respond import HitTemplate

MAX_BYTES = 64 << 20
MAX_ENTRY = 256 << 10
# Python objects per entry measured ~4 KB with tracemalloc when entries held an EntryMeta
# (a HotEntry of bytes and tuples is smaller; the bound stays on the safe side):
# counted with the body so 64 MiB means 64 MiB of real memory, even for tiny objects.
ENTRY_OVERHEAD = 4096
# Requests for a target (this one included, mediaedge.policy.admission's count-min sketch)
# before a disk hit is held in memory. One-off random keys of a cache far larger than the
# tier would each build an entry (metadata re-encoded, freshness, a template) and evict
# another for nothing: measured, that was a tenth of a disk hit's CPU at 1M entries.
ADMIT_AFTER = 2


def admits(frequency: int, victim_frequency: int | None = None) -> bool:
    """Hold a disk hit in memory? Only a target asked for before: one asked once in a
    while would be evicted before its next request, and it costs the one being served.

    When the tier is full, `victim_frequency` is the count of the entry the put would push
    out first (`HotEntries.victim`), and the candidate must have been asked for more often
    (TinyLFU's admission). Without it a working set larger than the tier churns it: each
    admission builds an entry and evicts one as likely to be asked for again (python -m
    bench.memtier, uniform keys: 17,300 puts per 40,000 requests before, 4,200 after, for
    the same share served from memory)."""
    return frequency >= ADMIT_AFTER and (victim_frequency is None or frequency > victim_frequency)


class HotEntry(NamedTuple):
    """One response held in memory, as plain values only.

    Thousands of these live for hours. They are stored as plain tuples (`_pack`): the
    garbage collector stops tracking an exact tuple of bytes, numbers and such tuples
    (not a NamedTuple), so they add nothing to its full passes; with an `EntryMeta`,
    `Headers` and lists per entry, 13k entries made 200k tracked objects and 80-125 ms
    gen-2 stops. `get` rebuilds this view; the fast path reads its fields, the rest of
    the engine decodes `meta_json`."""

    meta_json: bytes  # EntryMeta.to_json()
    body: bytes
    template: HitTemplate  # the answer to a plain GET/HEAD (proxy/respond.py)
    facts: EntryFacts  # dates and freshness (mediaedge.policy.decide), computed once


BODY = HotEntry._fields.index("body")


# A packed entry: a plain tuple is ~3x smaller than the dataclass it stands for.
Packed = tuple[Any, ...]


def _pack(e: HotEntry) -> Packed:
    # Flat (the facts' fields inline, not a tuple of their own): each level of nesting
    # costs one more collection before the outer tuple is untracked.
    f = e.facts
    return (e.meta_json, e.body, tuple(e.template), f.date, f.age_header, tuple(f.fresh), f.request_time,
            f.response_time, f.negative, f.soft_stale)


def _unpack(t: Packed) -> HotEntry:
    return HotEntry(t[0], t[1], HitTemplate._make(t[2]), EntryFacts(t[3], t[4], Freshness._make(t[5]), *t[6:]))


class HotEntries:
    def __init__(self, max_bytes: int = MAX_BYTES, max_entry: int = MAX_ENTRY) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.generation = 0
        self._bytes = 0
        # target -> (vary names, {vary values: packed entry})
        self._items: OrderedDict[str, tuple[tuple[str, ...], dict[tuple[str | None, ...], Packed]]] = OrderedDict()
        # Surrogate-Key tags of the entries held: a purge by tag must find them here too. With
        # --workers, the first worker to apply it deletes the tagged rows from the shared
        # directory, and the others can no longer learn the targets from the disk.
        self._tagged: dict[str, set[str]] = {}
        self._tags_of: dict[str, frozenset[str]] = {}

    def get(self, target: str, values_for: object) -> HotEntry | None:
        """The entry for the request's variant (`values_for(vary names)`), or None."""
        item = self._items.get(target)
        if item is None:
            return None
        vary, variants = item
        found = variants.get(values_for(vary))  # type: ignore[operator]
        if found is None:
            return None
        self._items.move_to_end(target)
        return _unpack(found)

    def victim(self, target: str, size: int) -> str | None:
        """The target a put of a `size`-byte body for `target` would evict first (least
        recently used), or None when it fits without evicting."""
        if self._bytes + size + ENTRY_OVERHEAD <= self.max_bytes or not self._items:
            return None
        oldest = next(iter(self._items))
        return None if oldest == target else oldest

    def put(self, target: str, vary: tuple[str, ...], values: tuple[str | None, ...], entry: HotEntry,
            generation: int, tags: tuple[str, ...] = ()) -> None:
        if (generation != self.generation or len(entry.body) > self.max_entry
                or len(entry.body) + ENTRY_OVERHEAD > self.max_bytes):  # --memory-size off, or too small
            return
        item = self._items.get(target)
        if item is None or item[0] != vary:
            self.drop(target, bump=False)
            item = (vary, {})
            self._items[target] = item
        old = item[1].get(values)
        if old is not None:
            self._bytes -= len(old[BODY]) + ENTRY_OVERHEAD
        item[1][values] = _pack(entry)
        self._bytes += len(entry.body) + ENTRY_OVERHEAD
        if tags:
            self._tag(target, tags)
        while self._bytes > self.max_bytes and self._items:
            evicted, (_, variants) = self._items.popitem(last=False)
            self._bytes -= sum(len(v[BODY]) + ENTRY_OVERHEAD for v in variants.values())
            self._untag(evicted)

    def _tag(self, target: str, tags: tuple[str, ...]) -> None:
        held = self._tags_of.get(target, frozenset())
        self._tags_of[target] = held | frozenset(tags)  # every variant's tags: dropping more is safe
        for tag in tags:
            self._tagged.setdefault(tag, set()).add(target)

    def _untag(self, target: str) -> None:
        for tag in self._tags_of.pop(target, ()):
            targets = self._tagged.get(tag)
            if targets is not None:
                targets.discard(target)
                if not targets:
                    del self._tagged[tag]

    def drop(self, target: str, *, bump: bool = True) -> None:
        if bump:
            self.generation += 1
        item = self._items.pop(target, None)
        if item is not None:
            self._bytes -= sum(len(v[BODY]) + ENTRY_OVERHEAD for v in item[1].values())
            self._untag(target)

    def drop_tag(self, tag: str) -> None:
        """Every entry tagged `tag` (Surrogate-Key), found without the disk."""
        self.generation += 1
        for t in list(self._tagged.get(tag, ())):
            self.drop(t, bump=False)

    def drop_prefix(self, prefix: str) -> None:
        self.generation += 1
        for t in [t for t in self._items if t.startswith(prefix)]:
            self.drop(t, bump=False)

    def clear(self) -> None:
        self.generation += 1
        self._items.clear()
        self._tagged.clear()
        self._tags_of.clear()
        self._bytes = 0

    @property
    def size(self) -> int:
        return self._bytes
