"""Inline lookups (CacheStore.lookup_inline, run on the event loop): the same answer as
the thread path or none at all, never a deleted, evicted, replaced or damaged entry."""
from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from mediaedge.policy.lookup import BUDGET_US, PROBE_EVERY, SLOW_SHARE, place_lookup, prewarm, slow_share_after
from mediaedge import storage
from mediaedge.storage import CacheStore, Pointer

from test_storage import meta, put


def no_vary(vary: tuple[str, ...]) -> tuple[str | None, ...]:
    return ()


@pytest.fixture
def store(tmp_path):
    s = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)
    yield s
    s.close()


# -- the placement policy (pure) ---------------------------------------------------
def test_cheap_lookups_run_inline():
    assert place_lookup(0.0, 0).inline


def test_slow_lookups_go_to_a_thread_with_a_periodic_probe():
    decisions = [place_lookup(0.9, n).inline for n in range(PROBE_EVERY)]
    assert decisions.count(True) == 1 and decisions[-1] is True
    assert "disk-bound" in place_lookup(0.9, 0).reason


def test_preempted_lookups_on_a_busy_machine_do_not_flip_the_placement():
    share = 0.0
    for i in range(1000):  # one lookup in four descheduled for 50 ms: the others take 60 µs
        share = slow_share_after(share, 50_000.0 if i % 4 == 0 else 60.0)
        assert place_lookup(share, 0).inline
    for _ in range(30):  # but a run of slow reads (a disk-bound cache) does
        share = slow_share_after(share, 5_000.0)
    assert share > SLOW_SHARE and not place_lookup(share, 0).inline
    for _ in range(30):  # and cheap probes bring it back
        share = slow_share_after(share, BUDGET_US / 4)
    assert place_lookup(share, 0).inline


# -- against a real cache directory -------------------------------------------------
def test_same_answer_as_the_thread_path(store):
    m = put(store, "/media/a.jpg", b"abc" * 100)
    pointer, entry = store.lookup_inline("/media/a.jpg", no_vary)
    assert pointer == store.get_pointer("/media/a.jpg")
    assert entry is not None and entry.meta == m and entry.body == b"abc" * 100
    assert store.lookup_inline("/media/none.jpg", no_vary) == (None, None)
    store.set_pointer("/media/b.jpg", Pointer("r9", ()))  # a pointer whose entry is gone
    assert store.lookup_inline("/media/b.jpg", no_vary) == (Pointer("r9", ()), None)


def test_file_entries_are_left_to_the_thread(store):
    put(store, "/media/big.bin", os.urandom(100_000))
    assert store.lookup_inline("/media/big.bin", no_vary) is None
    e = store.open_entry("/media/big.bin", "r1", ())
    assert e is not None
    e.close()


def test_vary_values_pick_the_variant(store):
    for lang in ("en", "fr"):
        body = f"hello {lang}".encode()
        m = meta("/media/v.txt", body, vary=("accept-language",), vary_values=(lang,))
        tmp = store.new_temp_path()
        with open(tmp, "wb") as f:
            f.write(body)
        store.commit(tmp, m)
    store.set_pointer("/media/v.txt", Pointer("r1", ("accept-language",)))
    for lang in ("en", "fr"):
        _, e = store.lookup_inline("/media/v.txt", lambda vary, lang=lang: (lang,) if vary else ())
        assert e is not None and e.body == f"hello {lang}".encode()
    assert store.lookup_inline("/media/v.txt", lambda vary: ("de",))[1] is None


def test_never_serves_what_was_deleted_replaced_or_cleared(store):
    put(store, "/media/a.jpg", b"one")
    assert store.lookup_inline("/media/a.jpg", no_vary)[1].body == b"one"
    put(store, "/media/a.jpg", b"two", revision="r2")  # publish: a new revision
    assert store.lookup_inline("/media/a.jpg", no_vary)[1].body == b"two"
    store.delete_revision("/media/a.jpg", "r2")
    assert store.lookup_inline("/media/a.jpg", no_vary)[1] is None
    put(store, "/media/a.jpg", b"three", revision="r3")
    store.delete_target("/media/a.jpg")  # purge
    assert store.lookup_inline("/media/a.jpg", no_vary) == (None, None)
    put(store, "/media/b.jpg", b"b")
    store.clear()
    assert store.lookup_inline("/media/b.jpg", no_vary) == (None, None)


def test_never_serves_what_was_evicted(tmp_path):
    s = CacheStore(str(tmp_path / "c"), size_limit=4 << 20)
    try:
        evicted: list[str] = []
        for i in range(200):
            body = bytes([i % 251]) * 30_000  # inline rows (under 32 KB)
            evicted += put_and_evict(s, f"/media/e{i}.bin", body)
            assert s.lookup_inline(f"/media/e{i}.bin", no_vary)[1].body == body
        assert evicted
        for target in evicted:
            found = s.lookup_inline(target, no_vary)
            assert found is not None and found[1] is None
    finally:
        s.close()


def put_and_evict(s: CacheStore, target: str, body: bytes) -> list[str]:
    m = meta(target, body)
    tmp = s.new_temp_path()
    with open(tmp, "wb") as f:
        f.write(body)
    evicted = s.commit(tmp, m)
    s.set_pointer(target, Pointer("r1", ()))
    return evicted


def test_sees_another_process_writes_at_once(tmp_path):
    """Two stores on one directory, as two workers: nothing is cached per process."""
    a = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)
    b = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)
    try:
        put(a, "/media/a.jpg", b"from a")
        assert b.lookup_inline("/media/a.jpg", no_vary)[1].body == b"from a"
        put(b, "/media/a.jpg", b"from b", revision="r2")
        assert a.lookup_inline("/media/a.jpg", no_vary)[1].body == b"from b"
        b.delete_target("/media/a.jpg")
        assert a.lookup_inline("/media/a.jpg", no_vary) == (None, None)
    finally:
        a.close()
        b.close()


def test_a_damaged_row_is_left_to_the_thread_path_which_drops_it(store):
    put(store, "/media/a.jpg", b"good body")
    key = "v\x1f/media/a.jpg\x1fr1\x1f[]"
    (value,) = store._cache._sql("SELECT value FROM Cache WHERE key = ?", (key,)).fetchone()
    bad = bytes(value).replace(b"good", b"evil")
    store._cache._sql("UPDATE Cache SET value = ? WHERE key = ?", (sqlite3.Binary(bad), key))
    assert store.lookup_inline("/media/a.jpg", no_vary) is None
    assert store.open_entry("/media/a.jpg", "r1", ()) is None  # dropped as damaged
    assert store.lookup_inline("/media/a.jpg", no_vary)[1] is None


def test_holds_no_read_snapshot_that_would_block_checkpoints(store):
    for i in range(20):
        put(store, f"/media/{i}.bin", b"x" * 1000)
    for i in range(20):
        assert store.lookup_inline(f"/media/{i}.bin", no_vary)[1] is not None
    put(store, "/media/late.bin", b"y")
    busy, _, _ = store._cache._sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


def test_slow_lookups_are_sent_to_the_thread(store):
    put(store, "/media/a.jpg", b"abc")
    store.inline_reads.slow_share = 1.0  # as after a run of disk-bound reads
    answers = [store.lookup_inline("/media/a.jpg", no_vary) for _ in range(PROBE_EVERY)]
    assert answers.count(None) == PROBE_EVERY - 1  # one probe ran inline
    assert answers[-1][1].body == b"abc"


def test_body_checked_against_its_hash(store):
    body = b"checked"
    m = put(store, "/media/h.bin", body)
    _, e = store.lookup_inline("/media/h.bin", no_vary)
    assert hashlib.sha256(e.body).hexdigest() == m.sha256


# ------------------------------------------------------------------ reading the database ahead at start
def test_prewarm_reads_what_fits_in_a_share_of_memory_in_order():
    slab, db = ("hit slab", 100 << 20), ("cache database", 100 << 20)
    assert prewarm([slab, db], 1 << 30).parts == ("hit slab", "cache database")  # 200 MiB of 1 GiB
    half = prewarm([slab, ("cache database", 200 << 20)], 1 << 30)  # 300 MiB: over a quarter
    assert half.warm and half.parts == ("hit slab",) and "cache database not read" in half.reason
    assert not prewarm([("hit slab", 300 << 20), db], 1 << 30).warm  # the first part decides: no skipping ahead
    assert prewarm([("cache database", 300 << 20)], 1 << 30, share=0.5).parts == ("cache database",)
    assert not prewarm([db], None).warm  # memory unknown: leave the page cache alone
    assert not prewarm([], 1 << 30).warm


def test_read_ahead_reads_a_sparse_files_data_only(tmp_path, monkeypatch):
    """The hit slab is sparse until its ring has gone round once: its holes are not read
    (they would fill the page cache with zeros)."""
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
        for at in (0, 40 << 20):
            f.seek(at)
            f.write(b"d" * (1 << 20))
    reads = []
    readv = os.readv

    def counted(fd, bufs):
        n = readv(fd, bufs)
        reads.append(n)
        return n

    monkeypatch.setattr(os, "readv", counted)
    fd = os.open(path, os.O_RDONLY)
    try:
        storage._read_data(fd, bytearray(1 << 20), lambda: False)
    finally:
        os.close(fd)
    assert 2 << 20 <= sum(reads) < 8 << 20, reads  # two 1 MiB extents (and their filesystem blocks), not 64 MiB


def test_prewarm_keeps_its_descriptors_until_close(store):
    """Closing a descriptor of the database drops SQLite's POSIX locks of the whole process
    (tests/test_e2e_lookup.py saw another edge's purge missed): they live until `close`."""
    put(store, "/a.jpg", b"x" * 100)
    decision = store.prewarm()
    if not decision.warm or not hasattr(os, "posix_fadvise"):
        pytest.skip(decision.reason)
    fds = list(store._readahead_fds)
    assert fds and all(os.fstat(fd) for fd in fds)
    assert store.get_pointer("/a.jpg") is not None
    store.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert store.prewarm().warm and store._readahead_fds == []  # closed: nothing opened again


def test_mapped_inline_reads_survive_the_database_shrinking_under_them(store):
    """The inline connection reads cache.db through a memory map (storage.INLINE_MMAP_SIZE).
    A mapped page past the end of a file that shrank would crash the process (SIGBUS), so
    shrink it under the mapped reader, from another connection, as another process's
    deletes and checkpoints do (auto_vacuum returns the freed pages): every read is still
    the stored body or nothing, and the survivors are all found."""
    bodies = {f"/media/m/{i}.bin": os.urandom(4000) for i in range(2000)}
    for target, body in bodies.items():
        put(store, target, body)
    con = store._inline_con()
    assert con.execute("PRAGMA mmap_size").fetchone()[0] > 0
    for target in bodies:  # every page mapped and read
        store.inline_reads.slow_share = 0.0
        assert store.lookup_inline(target, no_vary)[1].body == bodies[target]
    path = os.path.join(store.directory, "cache.db")
    before = os.path.getsize(path)
    other = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        for _ in range(10):
            other.execute("DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache ORDER BY rowid DESC LIMIT 350)")
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            found = 0
            for target, body in bodies.items():
                store.inline_reads.slow_share = 0.0  # keep every read on the mapped connection, however busy the machine
                got = store.lookup_inline(target, no_vary)
                if got is not None and got[1] is not None:
                    assert got[1].body == body
                    found += 1
            left = other.execute("SELECT count(*) FROM Cache WHERE key LIKE 'v%'").fetchone()[0]
            assert found == left
    finally:
        other.close()
    assert os.path.getsize(path) < before / 2, (before, os.path.getsize(path))


@pytest.mark.parametrize("revision", ['r"1', "r\\1", "caf\u00e9-\u2603", "r'1; --", "r\x1f1", "1", "%_*"])
def test_one_statement_finds_the_entry_of_any_revision_spelling(store, revision):
    """The pointer and its entry are read in one statement, the entry's key built in SQL
    from the pointer's JSON (`entry_key_around`): any revision reads back the entry the
    thread path opens, and the key is built exactly as `entry_key` builds it."""
    from mediaedge.storage import entry_key, entry_key_around

    before, after = entry_key_around("/media/q.jpg")
    assert before + revision + after == entry_key("/media/q.jpg", revision, ())
    m = put(store, "/media/q.jpg", b"body " + revision.encode(), revision=revision)
    pointer, entry = store.lookup_inline("/media/q.jpg", no_vary)
    assert pointer == Pointer(revision, ()) and entry is not None and entry.meta == m
    assert entry.body == b"body " + revision.encode()
