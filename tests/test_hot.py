"""The in-memory tier: bounded, LRU, and never re-filled by a lookup older than an invalidation."""
from __future__ import annotations

from proxy.headers import Headers
from proxy.hot import ENTRY_OVERHEAD, HotEntries
from proxy.storage import EntryMeta


def m(target: str) -> EntryMeta:
    return EntryMeta(target, "r", 200, Headers(), 1, "x", 0.0, 0.0, "upstream")


def none(vary):
    return ()


def test_put_get_and_drop():
    h = HotEntries(max_bytes=100_000)
    h.put("/a", (), (), m("/a"), b"x" * 10, h.generation)
    assert h.get("/a", none)[1] == b"x" * 10
    h.drop("/a")
    assert h.get("/a", none) is None and h.size == 0


def test_a_lookup_older_than_an_invalidation_does_not_insert():
    h = HotEntries()
    gen = h.generation  # lookup starts
    h.drop("/a")  # invalidation meanwhile
    h.put("/a", (), (), m("/a"), b"old", gen)
    assert h.get("/a", none) is None


def test_bounded_by_bytes_lru_first():
    h = HotEntries(max_bytes=3 * (10 + ENTRY_OVERHEAD), max_entry=10)
    for t in ("/a", "/b", "/c"):
        h.put(t, (), (), m(t), b"1234567890", h.generation)
    h.get("/a", none)  # /a is now the most recent
    h.put("/d", (), (), m("/d"), b"1234567890", h.generation)
    assert h.get("/b", none) is None and h.get("/a", none) is not None and h.size <= 3 * (10 + ENTRY_OVERHEAD)
    h.put("/big", (), (), m("/big"), b"x" * 11, h.generation)
    assert h.get("/big", none) is None


def test_vary_variants():
    h = HotEntries()
    h.put("/v", ("accept",), ("image/webp",), m("/v"), b"webp", h.generation)
    h.put("/v", ("accept",), ("image/png",), m("/v"), b"png", h.generation)
    assert h.get("/v", lambda vary: ("image/png",))[1] == b"png"
    assert h.get("/v", lambda vary: ("text/html",)) is None
    h.drop_prefix("/")
    assert h.size == 0
