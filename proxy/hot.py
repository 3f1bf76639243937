"""Small, recently served entries kept in memory: a hit without a thread hop or SQLite.

Bounded by bytes (least recently used out first). Every invalidation, commit and
purge drops the target's entries, and a lookup that began before a drop may not
insert what it read (the generation check), so memory never serves what the disk
would no longer serve.
"""
from __future__ import annotations

from collections import OrderedDict

from proxy.storage import EntryMeta

MAX_BYTES = 64 << 20
MAX_ENTRY = 256 << 10
# Python objects per entry (EntryMeta, Headers, tuples) measured ~4 KB with tracemalloc:
# counted with the body so 64 MiB means 64 MiB of real memory, even for tiny objects.
ENTRY_OVERHEAD = 4096


class HotEntries:
    def __init__(self, max_bytes: int = MAX_BYTES, max_entry: int = MAX_ENTRY) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.generation = 0
        self._bytes = 0
        # target -> (vary names, {vary values: [meta, body, hit template, state facts]})
        self._items: OrderedDict[str, tuple[tuple[str, ...], dict[tuple[str, ...], list]]] = OrderedDict()

    def get(self, target: str, values_for: object) -> list | None:
        """`[meta, body, template, facts]` for the request's variant, or None. The last two
        slots (the entry's `proxy.respond.HitTemplate` and the clock-free inputs of its
        freshness) are filled by the engine on first use and kept here so they live and
        die with the entry."""
        item = self._items.get(target)
        if item is None:
            return None
        vary, variants = item
        found = variants.get(values_for(vary))  # type: ignore[operator]
        if found is not None:
            self._items.move_to_end(target)
        return found

    def put(self, target: str, vary: tuple[str, ...], values: tuple[str, ...], meta: EntryMeta, body: bytes,
            generation: int) -> None:
        if generation != self.generation or len(body) > self.max_entry:
            return
        item = self._items.get(target)
        if item is None or item[0] != vary:
            self.drop(target, bump=False)
            item = (vary, {})
            self._items[target] = item
        old = item[1].get(values)
        if old is not None:
            self._bytes -= len(old[1]) + ENTRY_OVERHEAD
        item[1][values] = [meta, body, None, None]
        self._bytes += len(body) + ENTRY_OVERHEAD
        while self._bytes > self.max_bytes and self._items:
            _, (_, variants) = self._items.popitem(last=False)
            self._bytes -= sum(len(v[1]) + ENTRY_OVERHEAD for v in variants.values())

    def drop(self, target: str, *, bump: bool = True) -> None:
        if bump:
            self.generation += 1
        item = self._items.pop(target, None)
        if item is not None:
            self._bytes -= sum(len(v[1]) + ENTRY_OVERHEAD for v in item[1].values())

    def drop_prefix(self, prefix: str) -> None:
        self.generation += 1
        for t in [t for t in self._items if t.startswith(prefix)]:
            self.drop(t, bump=False)

    def clear(self) -> None:
        self.generation += 1
        self._items.clear()
        self._bytes = 0

    @property
    def size(self) -> int:
        return self._bytes
