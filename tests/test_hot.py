"""The in-memory tier: bounded, LRU, and never re-filled by a lookup older than an invalidation."""
from __future__ import annotations

import gc

from mediaedge.headers import Headers
from mediaedge.hot import ENTRY_OVERHEAD, HotEntries, HotEntry, admits
from mediaedge.policy.decide import EntryFacts
from mediaedge.policy.freshness import Freshness
from mediaedge.respond import hit_template
from mediaedge.storage import EntryMeta

TEMPLATE = hit_template(status=200, headers=Headers([("Content-Type", "image/jpeg")]), length=1, revision="r",
                        revision_header="X-Media-Revision")


def entry(target: str, body: bytes) -> HotEntry:
    meta = EntryMeta(target, "r", 200, Headers(), len(body), "x", 0.0, 0.0, "upstream")
    facts = EntryFacts(None, None, Freshness(60.0, "max-age", 0.0, None, False), 0.0, 0.0, False, False)
    return HotEntry(meta.to_json(), body, TEMPLATE, facts)


def none(vary):
    return ()


def test_put_get_and_drop():
    h = HotEntries(max_bytes=100_000)
    h.put("/a", (), (), entry("/a", b"x" * 10), h.generation)
    assert h.get("/a", none).body == b"x" * 10
    h.drop("/a")
    assert h.get("/a", none) is None and h.size == 0


def test_a_lookup_older_than_an_invalidation_does_not_insert():
    h = HotEntries()
    gen = h.generation  # lookup starts
    h.drop("/a")  # invalidation meanwhile
    h.put("/a", (), (), entry("/a", b"old"), gen)
    assert h.get("/a", none) is None


def test_bounded_by_bytes_lru_first():
    h = HotEntries(max_bytes=3 * (10 + ENTRY_OVERHEAD), max_entry=10)
    for t in ("/a", "/b", "/c"):
        h.put(t, (), (), entry(t, b"1234567890"), h.generation)
    h.get("/a", none)  # /a is now the most recent
    h.put("/d", (), (), entry("/d", b"1234567890"), h.generation)
    assert h.get("/b", none) is None and h.get("/a", none) is not None and h.size <= 3 * (10 + ENTRY_OVERHEAD)
    h.put("/big", (), (), entry("/big", b"x" * 11), h.generation)
    assert h.get("/big", none) is None


def test_vary_variants():
    h = HotEntries()
    h.put("/v", ("accept",), ("image/webp",), entry("/v", b"webp"), h.generation)
    h.put("/v", ("accept",), ("image/png",), entry("/v", b"png"), h.generation)
    assert h.get("/v", lambda vary: ("image/png",)).body == b"png"
    assert h.get("/v", lambda vary: ("text/html",)) is None
    h.drop_prefix("/")
    assert h.size == 0


def test_entries_drop_out_of_the_garbage_collectors_tracking():
    """Thousands of entries live for hours: after a collection they must not be tracked,
    or every full collection walks them all (the gen-2 stops of docs/BENCHMARKS.md)."""
    h = HotEntries()
    for i in range(200):
        h.put(f"/t{i}", (), (), entry(f"/t{i}", b"x" * 10), h.generation)
    gc.collect()
    gc.collect()
    stored = [v for _, variants in h._items.values() for v in variants.values()]
    assert len(stored) == 200 and not [v for v in stored if gc.is_tracked(v)]
    back = h.get("/t7", none)
    assert back.template == TEMPLATE and back.facts == entry("/t7", b"").facts  # and the view comes back whole
    assert isinstance(back.facts, EntryFacts) and isinstance(back.facts.fresh, Freshness)


def test_only_a_target_asked_for_before_is_admitted():
    assert not admits(0) and not admits(1)
    assert admits(2) and admits(50)


def test_a_full_tier_admits_only_a_target_asked_for_more_often_than_its_victim():
    assert not admits(2, 2) and not admits(3, 7)  # as likely or less: keep what is held
    assert admits(3, 2) and admits(8, 0)
    assert not admits(1, 0)  # asked once is never held, whatever the victim


def test_the_victim_is_the_least_recently_used_target_once_the_tier_is_full():
    h = HotEntries(max_bytes=2 * (10 + ENTRY_OVERHEAD), max_entry=10)
    assert h.victim("/a", 10) is None  # empty
    h.put("/a", (), (), entry("/a", b"a" * 10), h.generation)
    assert h.victim("/b", 10) is None  # fits beside /a
    h.put("/b", (), (), entry("/b", b"b" * 10), h.generation)
    assert h.victim("/c", 10) == "/a"
    h.get("/a", none)  # used: /b is now the oldest
    assert h.victim("/c", 10) == "/b"
    assert h.victim("/b", 10) is None  # a target never evicts itself for its own put


def test_a_tag_drops_its_entries_without_the_disk_and_leaves_no_index_behind():
    """With --workers, the first worker to apply a purge by tag deletes the rows from the
    shared directory; the others find the targets in their memory tier's own tag index."""
    h = HotEntries(max_bytes=3 * (10 + ENTRY_OVERHEAD), max_entry=10)
    h.put("/a", (), (), entry("/a", b"a"), h.generation, ("shoes", "red"))
    h.put("/b", (), (), entry("/b", b"b"), h.generation, ("shoes",))
    h.put("/c", (), (), entry("/c", b"c"), h.generation)
    gen = h.generation
    h.drop_tag("shoes")
    assert h.generation > gen  # a lookup that began before does not put them back
    assert h.get("/a", none) is None and h.get("/b", none) is None and h.get("/c", none).body == b"c"
    h.drop_tag("red")  # /a's other tag went with it
    assert h._tagged == {} and h._tags_of == {}
    for i in range(5):  # evicted (LRU) and dropped entries leave their tags too
        h.put(f"/t{i}", (), (), entry(f"/t{i}", b"t"), h.generation, (f"k{i}",))
    h.drop("/t4")
    assert set(h._tags_of) == {"/t2", "/t3"} and set(h._tagged) == {"k2", "k3"}
    h.clear()
    assert h._tagged == {} and h._tags_of == {}
