"""TinyLFU admission over the store's FIFO (mediaedge.policy.admission): the sketch,
the admission decision and the cull plan, table-driven, plus properties."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaedge.policy.admission import (
    COUNTER_MAX,
    DEPTH,
    MIN_SAMPLE_CAPACITY,
    SAMPLE_FACTOR,
    FrequencySketch,
    Resident,
    admit,
    plan_cull,
)

PROPS = settings(max_examples=150, deadline=None)


def tail(*rows: tuple[str, int, int]) -> list[Resident]:
    return [Resident(k, size, freq) for k, size, freq in rows]


# ------------------------------------------------------------------ admit
@pytest.mark.parametrize(
    "cand, size, free, rows, limit, want, reason, victims",
    [
        # room left: stored whatever its count (a fresh start, an empty sketch)
        (0, 10, 10, [("a", 10, 9)], 100, True, "room", ()),
        (1, 10, 50, [], 100, True, "room", ()),
        # no room: more frequent than the least frequent tail entry it would push out
        (3, 10, 0, [("a", 10, 5), ("b", 10, 2)], 100, True, "more-frequent", ("b",)),
        # a tie keeps the resident: a one-hit wonder never displaces a one-hit resident
        (1, 10, 0, [("a", 10, 1)], 100, False, "less-frequent", ("a",)),
        (2, 10, 0, [("a", 10, 5), ("b", 10, 2)], 100, False, "less-frequent", ("b",)),
        # a larger newcomer must beat every entry it would push out
        (4, 25, 0, [("a", 10, 1), ("b", 10, 3), ("c", 10, 5)], 100, False, "less-frequent", ("a", "b", "c")),
        (6, 25, 0, [("a", 10, 1), ("b", 10, 3), ("c", 10, 5)], 100, True, "more-frequent", ("a", "b", "c")),
        (4, 25, 5, [("a", 10, 1), ("b", 10, 3), ("c", 10, 5)], 100, True, "more-frequent", ("a", "b")),
        # after a restart every resident counts 0: anything asked for once gets in
        (1, 10, 0, [("a", 10, 0), ("b", 10, 0)], 100, True, "more-frequent", ("a",)),
        # larger than the whole cache: never
        (15, 101, 100, [], 100, False, "too-large", ()),
        # equal frequencies: the oldest goes first (the tail comes oldest first)
        (2, 10, 0, [("old", 10, 1), ("new", 10, 1)], 100, True, "more-frequent", ("old",)),
    ],
)
def test_admit(cand, size, free, rows, limit, want, reason, victims):
    d = admit(cand, size, free, tail(*rows), limit)
    assert (d.admit, d.reason, d.victims) == (want, reason, victims)


@pytest.mark.parametrize("cand, free", [(0, 0), (1, 0), (1, 500)])
def test_a_new_copy_of_a_stored_target_replaces_it(cand, free):
    """A refresh or new revision of a stored target is always admitted: refused, the old
    (expired, soft-purged) copy would send every later request to the origin."""
    d = admit(cand, 10, free, tail(("hot", 10, 15)), 100, resident=True)
    assert (d.admit, d.reason) == (True, "resident")
    assert admit(cand, 101, free, [], 100, resident=True).reason == "too-large"


# ------------------------------------------------------------------ plan_cull
@pytest.mark.parametrize(
    "rows, excess, evict, reinsert",
    [
        # nothing to free: nothing happens
        ([("a", 10, 0)], 0, (), ()),
        # equal counts: plain FIFO, oldest first, nobody moved
        ([("a", 10, 0), ("b", 10, 0), ("c", 10, 0)], 15, ("a", "b"), ()),
        # the least frequent go; those more frequent than every evicted one go back to the head
        ([("a", 10, 7), ("b", 10, 1), ("c", 10, 1), ("d", 10, 3)], 10, ("b",), ("a", "d")),
        ([("a", 10, 7), ("b", 10, 1), ("c", 10, 3)], 15, ("b", "c"), ("a",)),
        # as frequent as an evicted one: waits at the tail, not moved
        ([("a", 10, 2), ("b", 10, 2), ("c", 10, 4)], 5, ("a",), ("c",)),
        # not enough in the sample: all of it goes (the store looks again)
        ([("a", 10, 9), ("b", 10, 1)], 100, ("b", "a"), ()),
    ],
)
def test_plan_cull(rows, excess, evict, reinsert):
    plan = plan_cull(tail(*rows), excess)
    assert (plan.evict, plan.reinsert) == (evict, reinsert)


RESIDENTS = st.lists(st.tuples(st.integers(1, 1000), st.integers(0, COUNTER_MAX)), max_size=20).map(
    lambda rows: [Resident(f"k{i}", size, freq) for i, (size, freq) in enumerate(rows)])


@PROPS
@given(RESIDENTS, st.integers(0, 30_000))
def test_plan_cull_properties(residents, excess):
    plan = plan_cull(residents, excess)
    keys = [r.key for r in residents]
    by_key = {r.key: r for r in residents}
    assert set(plan.evict) <= set(keys) and set(plan.reinsert) <= set(keys)
    assert not set(plan.evict) & set(plan.reinsert)
    freed = sum(by_key[k].size for k in plan.evict)
    # frees enough when the sample can, else takes all of it; never more than needed
    assert freed >= excess or len(plan.evict) == len(residents)
    if plan.evict:
        assert freed - by_key[plan.evict[-1]].size < excess
        # nothing kept is less frequent than anything evicted
        worst = max(by_key[k].freq for k in plan.evict)
        assert all(r.freq >= worst for r in residents if r.key not in plan.evict)
        assert all(by_key[k].freq > worst for k in plan.reinsert)
    else:
        assert excess <= 0 or not residents


@PROPS
@given(st.integers(0, COUNTER_MAX), st.integers(1, 500), st.integers(0, 500), RESIDENTS)
def test_admit_properties(cand, size, free, residents):
    d = admit(cand, size, free, residents, 10_000)
    if size <= free:
        assert d.admit and d.reason == "room"
    elif d.admit:
        # admitted without room: strictly more frequent than each entry it pushes out
        assert all(cand > r.freq for r in residents if r.key in d.victims)
    else:
        assert any(cand <= r.freq for r in residents if r.key in d.victims) or not residents


# ------------------------------------------------------------------ the sketch
def test_sketch_counts_saturate_and_never_underestimate():
    s = FrequencySketch(1000)
    for k in range(500):
        for _ in range(k % 5):
            s.record(k)
    for k in range(500):
        assert s.estimate(k) >= k % 5  # count-min: never below the truth
    for _ in range(100):
        s.record(10_000)
    assert s.estimate(10_000) == COUNTER_MAX


def test_sketch_ages_by_halving():
    s = FrequencySketch(1000)
    assert s.sample_size == SAMPLE_FACTOR * 1000
    for _ in range(8):
        s.record(7)
    before = s.estimate(7)
    s.age()
    assert s.estimate(7) == before // 2 and s.agings == 1
    # and by itself, once sample_size accesses were recorded
    t = FrequencySketch(10)
    assert t.sample_size == SAMPLE_FACTOR * MIN_SAMPLE_CAPACITY  # a tiny cache still counts a while
    for i in range(t.sample_size):
        t.record(i % 3)
    assert t.agings == 1


def test_sketch_grows_without_losing_counts():
    s = FrequencySketch(1000)
    for k in range(300):
        for _ in range(1 + k % 7):
            s.record(k)
    before = [s.estimate(k) for k in range(300)]
    width = s.width
    s.ensure_capacity(100_000)
    assert s.width > width and s.memory_bytes() == DEPTH * s.width
    assert [s.estimate(k) for k in range(300)] == before
    s.ensure_capacity(10)  # never shrinks
    assert [s.estimate(k) for k in range(300)] == before


def test_sketch_memory_per_entry_is_bounded():
    """16 to 32 bytes per entry held, whatever the keys: nothing grows with requests."""
    for entries in (1_000, 100_000, 1_000_000):
        s = FrequencySketch(entries)
        for k in range(10_000):
            s.record(k * 7919)
        assert 16 <= s.memory_bytes() / entries <= 32 + 4096 * DEPTH / entries


@PROPS
@given(st.lists(st.integers(0, 50), max_size=300))
def test_sketch_estimate_is_at_least_the_count_capped(keys):
    s = FrequencySketch(64)
    for k in keys:
        s.record(k)
    for k in set(keys):
        assert s.estimate(k) >= min(COUNTER_MAX, keys.count(k)) or s.agings
