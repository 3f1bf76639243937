"""The entries count kept by SQLite triggers: exact after every way a row comes or goes,
across two stores sharing one directory (a future --workers), and on old directories."""
from __future__ import annotations

import diskcache

from mediaedge.storage import ENTRY_TRIGGERS, CacheStore

from test_storage import put


def scanned(store: CacheStore) -> int:
    """The count the slow way: what the triggers must always agree with."""
    return store._count_entries()


def test_count_follows_commits_replacements_deletes_and_clear(tmp_path):
    s = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)
    try:
        for i in range(5):
            put(s, f"/media/{i}.bin", b"x" * 100)
        put(s, "/media/big.bin", b"y" * 100_000)  # a file entry
        assert s.entry_count() == scanned(s) == 6
        put(s, "/media/0.bin", b"z" * 100)  # same key: replaced, not added
        put(s, "/media/1.bin", b"z" * 100, revision="r2")  # a second revision: a second row
        assert s.entry_count() == scanned(s) == 7
        assert s.delete_target("/media/1.bin") == 2
        s.delete_revision("/media/2.bin", "r1")
        assert s.entry_count() == scanned(s) == 4
        s.clear()
        assert s.entry_count() == scanned(s) == 0
    finally:
        s.close()


def test_count_follows_evictions(tmp_path):
    s = CacheStore(str(tmp_path / "c"), size_limit=8 << 20)
    try:
        evicted = []
        for i in range(12):
            evicted += put_evicting(s, f"/media/e{i}.bin", bytes([i]) * (1 << 20))
        assert evicted, "the limit should have forced evictions"
        assert s.entry_count() == scanned(s) == 12 - len(evicted)
    finally:
        s.close()


def put_evicting(s: CacheStore, target: str, body: bytes) -> list[str]:
    from test_storage import meta

    tmp = s.new_temp_path()
    with open(tmp, "wb") as f:
        f.write(body)
    return s.commit(tmp, meta(target, body))


def test_two_stores_on_one_directory_see_each_others_writes(tmp_path):
    a = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)
    b = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)
    try:
        put(a, "/media/a.bin", b"a")
        put(b, "/media/b.bin", b"b")
        b.delete_target("/media/a.bin")
        assert a.entry_count() == b.entry_count() == scanned(a) == 1
        c = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)  # a third open keeps the count
        assert c.entry_count() == 1
        c.close()
        put(a, "/media/c.bin", b"c")
        assert b.entry_count() == 2
    finally:
        a.close()
        b.close()


def test_a_directory_from_before_the_counter_is_counted_once_at_open(tmp_path):
    s = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)
    for i in range(3):
        put(s, f"/media/{i}.bin", b"x")
    s.close()
    raw = diskcache.Cache(str(tmp_path / "c"))  # as an older mediaedge left it: no triggers, no table
    for name, _ in ENTRY_TRIGGERS:
        raw._sql(f"DROP TRIGGER {name}")
    raw._sql("DROP TABLE MediaedgeCount")
    raw.close()
    s = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)
    try:
        assert s.entry_count() == 3
        put(s, "/media/3.bin", b"x")
        assert s.entry_count() == scanned(s) == 4
    finally:
        s.close()
