"""CacheStore over diskcache: pickle refused, atomic commits, damage detection, scans, state."""
from __future__ import annotations

import hashlib
import os
import sqlite3

import diskcache
import pytest

from mediaedge.headers import Headers
from mediaedge.storage import CacheStore, EntryMeta, Pointer


def meta(target: str, body: bytes, revision: str = "r1", tags: tuple[str, ...] = (), **kw) -> EntryMeta:
    return EntryMeta(target=target, revision=revision, status=200, headers=Headers([("Content-Type", "x/y")]),
                     size=len(body), sha256=hashlib.sha256(body).hexdigest(), request_time=1.0, response_time=2.0,
                     source="upstream", tags=tags, key_revision=revision, **kw)


def put(store: CacheStore, target: str, body: bytes, **kw) -> EntryMeta:
    m = meta(target, body, **kw)
    tmp = store.new_temp_path()
    with open(tmp, "wb") as f:
        f.write(body)
    store.commit(tmp, m)
    store.set_pointer(target, Pointer(m.key_revision, ()))
    return m


@pytest.fixture
def store(tmp_path):
    s = CacheStore(str(tmp_path / "c"), size_limit=50 << 20)
    yield s
    s.close()


@pytest.mark.parametrize("size", [10, 40_000, 2_000_000], ids=["inline", "file", "large-file"])
def test_commit_and_open_roundtrip(store, size):
    body = os.urandom(size)
    m = put(store, "/media/a.jpg", body)
    e = store.open_entry("/media/a.jpg", "r1", ())
    assert e is not None and e.meta == m
    got = e.body if e.body is not None else e.file.read(m.size)
    e.close()
    assert got == body
    assert oct(os.stat(store.directory).st_mode & 0o777) == "0o700"


def test_pickle_is_refused_both_ways(store, tmp_path):
    with pytest.raises(TypeError):
        store._cache.set("k", {"a": 1})  # would pickle
    # a pickled value planted by someone with write access is treated as absent
    evil = diskcache.Cache(str(tmp_path / "c"))
    evil.set("v\x1f/media/x\x1fr\x1f[]", ["pickled"])
    evil.close()
    assert store.open_entry("/media/x", "r", ()) is None


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_entry_is_dropped(store, damage):
    body = os.urandom(100_000)
    put(store, "/media/d.jpg", body)
    con = sqlite3.connect(os.path.join(store.directory, "cache.db"))
    (filename,) = con.execute("SELECT filename FROM Cache WHERE key LIKE 'v%'").fetchone()
    con.close()
    path = os.path.join(store.directory, filename)
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(50_000)
        else:
            f.seek(10)
            f.write(b"\x00\x01\x02")
    assert store.open_entry("/media/d.jpg", "r1", ()) is None
    assert store.entry_count() == 0  # dropped, so the next request fetches again


def test_prefix_and_tag_scans(store):
    put(store, "/media/cat/a.jpg", b"a", tags=("red", "shoes"))
    put(store, "/media/cat/b.jpg", b"b", tags=("blue",))
    put(store, "/media/catalog.jpg", b"c", tags=("red_x",))
    assert sorted(store.targets_with_prefix("/media/cat/")) == ["/media/cat/a.jpg", "/media/cat/b.jpg"]
    assert store.targets_with_tag("red") == ["/media/cat/a.jpg"]  # not red_x: LIKE wildcards escaped
    assert store.delete_target("/media/cat/a.jpg") == 1
    assert store.get_pointer("/media/cat/a.jpg") is None


def test_revision_switch_keeps_open_readers(store):
    old = os.urandom(100_000)
    put(store, "/media/r.jpg", old, revision="r1")
    e = store.open_entry("/media/r.jpg", "r1", ())
    reader = e.file if e.file is not None else None
    put(store, "/media/r.jpg", os.urandom(100_000), revision="r2")
    store.delete_revision("/media/r.jpg", "r1")
    assert store.open_entry("/media/r.jpg", "r1", ()) is None
    if reader is not None:
        assert reader.read(len(old)) == old  # a download that began keeps its bytes
    e.close()


def test_durable_state_survives_and_is_never_evicted(tmp_path):
    s = CacheStore(str(tmp_path / "c"), size_limit=1 << 20)
    s.set_published("/media/p.jpg", "r9")
    s.set_applied_seq(42)
    for i in range(30):
        put(s, f"/media/fill{i}.bin", os.urandom(100_000))
    s.close()
    s = CacheStore(str(tmp_path / "c"), size_limit=1 << 20)
    assert s.get_published("/media/p.jpg") == "r9" and s.get_applied_seq() == 42
    assert s.volume() <= 1 << 20
    s.close()


def test_stray_temp_files_are_cleared_at_start(tmp_path):
    s = CacheStore(str(tmp_path / "c"), size_limit=1 << 20)
    stray = s.new_temp_path()
    open(stray, "wb").write(b"partial")
    s.close()
    CacheStore(str(tmp_path / "c"), size_limit=1 << 20).close()
    assert not os.path.exists(stray)


def test_commit_reports_the_targets_it_evicted(tmp_path):
    """The memory tier drops what the disk evicts, so a commit must say what that was."""
    s = CacheStore(str(tmp_path / "c"), size_limit=1 << 20)
    reported: list[str] = []
    for i in range(30):
        body = os.urandom(100_000)
        m = meta(f"/media/e{i}.bin", body)
        tmp = s.new_temp_path()
        with open(tmp, "wb") as f:
            f.write(body)
        evicted = s.commit(tmp, m)
        assert m.target not in evicted  # the entry just stored is never the one evicted
        reported += evicted
    gone = [f"/media/e{i}.bin" for i in range(30) if s.open_entry(f"/media/e{i}.bin", "r1", ()) is None]
    assert gone and reported == gone == [f"/media/e{i}.bin" for i in range(len(gone))]  # oldest first
    assert s.evictions == len(gone)
    assert s.volume() <= 1 << 20
    s.close()


def _offer(s: CacheStore, target: str, body: bytes) -> bool:
    """One request that missed, as the engine makes it: counted, weighed, stored if admitted."""
    s.touch(target)
    if not s.admission(target, len(body)).admit:
        return False
    tmp = s.new_temp_path()
    with open(tmp, "wb") as f:
        f.write(body)
    s.commit(tmp, meta(target, body))
    s.set_pointer(target, Pointer("r1", ()))
    return True


def test_one_hit_wonders_do_not_displace_a_popular_entry(tmp_path):
    s = CacheStore(str(tmp_path / "c"), size_limit=1 << 20)
    assert _offer(s, "/media/pop.bin", os.urandom(100_000))
    for _ in range(5):
        s.touch("/media/pop.bin")  # hits: counted in memory, nothing written
    stored = [_offer(s, f"/media/w{i}.bin", os.urandom(100_000)) for i in range(30)]
    assert any(stored) and not all(stored) and s.refused == stored.count(False)
    assert s.open_entry("/media/pop.bin", "r1", ()) is not None
    # asked for twice, an object beats the one-hit residents; the popular one stays
    for i in range(4):
        s.touch(f"/media/two{i}.bin")  # an earlier request
        assert _offer(s, f"/media/two{i}.bin", os.urandom(100_000))
    assert s.evictions > 0
    assert s.open_entry("/media/pop.bin", "r1", ()) is not None
    assert s.volume() <= 1 << 20
    s.close()


def test_restart_starts_counting_afresh_and_evicts_only_what_it_must(tmp_path):
    """The counts live in memory: after a restart every resident counts 0, so a newcomer is
    admitted (plain FIFO) and each commit evicts only the room it needs, oldest first."""
    d = str(tmp_path / "c")
    s = CacheStore(d, size_limit=1 << 20)
    for i in range(30):
        _offer(s, f"/media/r{i}.bin", os.urandom(100_000))
    before = s.entry_count()
    s.close()
    s = CacheStore(d, size_limit=1 << 20)
    assert s.sketch.estimate(hash("/media/r29.bin")) == 0
    assert s.entry_count() == before
    assert _offer(s, "/media/new.bin", os.urandom(100_000))
    assert s.entry_count() >= before - 1 and s.evictions <= 1
    assert s.open_entry("/media/new.bin", "r1", ()) is not None
    s.close()


def test_cull_moves_frequent_tail_entries_to_the_head(tmp_path):
    """The oldest entry, asked for often, is not evicted: it is given a new store time
    (one write at cull time), and a less asked one goes instead."""
    s = CacheStore(str(tmp_path / "c"), size_limit=1 << 20)
    _offer(s, "/media/old.bin", os.urandom(100_000))
    for _ in range(6):
        s.touch("/media/old.bin")
    for i in range(24):
        target = f"/media/n{i}.bin"
        for _ in range(1 + i // 8):
            s.touch(target)  # earlier requests: later newcomers are asked for more
        _offer(s, target, os.urandom(100_000))
    assert s.evictions >= 12
    assert s.open_entry("/media/old.bin", "r1", ()) is not None
    # moved to the head: stored before every n{i}, its store time is now no older than theirs
    # (the entries reinserted by one cull share its time)
    times = dict(s._cache._sql("SELECT key, store_time FROM Cache WHERE substr(key, 1, 2) = 'v' || char(31)").fetchall())
    old = times.pop(next(k for k in times if "/media/old.bin" in k))
    assert times and old >= max(times.values())
    s.close()


def test_the_tail_weighs_entries_and_an_evicted_target_takes_its_pointer(tmp_path):
    """A pointer row is stored just after its entry: the cull's sample is entries only
    (TAIL_SAMPLE of them, not half pointers), and a target evicted loses its pointer too,
    so its next fill is weighed by admission, not stored as a "resident" refresh."""
    from mediaedge.policy.admission import TAIL_SAMPLE

    s = CacheStore(str(tmp_path / "c"), size_limit=4 << 20)
    for i in range(80):
        for _ in range(i // 10):
            s.touch(f"/media/t{i}.bin")  # earlier requests: later newcomers beat the residents
        _offer(s, f"/media/t{i}.bin", os.urandom(100_000))
    assert s.evictions > 0
    tail = s._read_tail()
    assert len(tail) == TAIL_SAMPLE and all(k.startswith("v\x1f") for k, _ in tail)
    stored = {t for t in (f"/media/t{i}.bin" for i in range(80)) if s.open_entry(t, "r1", ()) is not None}
    assert 0 < len(stored) < 80
    for i in range(80):
        t = f"/media/t{i}.bin"
        assert s.has_pointer(t) == (t in stored), t
    assert s.admission("/media/t0.bin", 100_000, resident=s.has_pointer("/media/t0.bin")).reason != "resident"
    s.close()


def test_a_pointer_goes_with_the_last_entry_of_its_target_only(store):
    """`_drop_pointer_if_bare` checks and deletes in one statement (no entry committed in
    between can lose its pointer); it keeps a pointer that still has an entry, and a
    target whose name extends another's is not that target's entry."""
    from mediaedge.storage import entry_key

    put(store, "/media/a.jpg", b"a")
    put(store, "/media/a.jpgx", b"b")
    store._drop_pointer_if_bare("/media/a.jpg")
    assert store.has_pointer("/media/a.jpg")
    assert store._cache.delete(entry_key("/media/a.jpg", "r1", ()))
    rows = len(store._cache)
    store._drop_pointer_if_bare("/media/a.jpg")
    assert not store.has_pointer("/media/a.jpg") and store.has_pointer("/media/a.jpgx")
    assert len(store._cache) == rows - 1  # diskcache's own count followed the delete
    assert store.open_entry("/media/a.jpgx", "r1", ()).body == b"b"
@pytest.mark.parametrize("size", [10, 40_000, 2_000_000], ids=["inline", "file", "large-file"])
def test_update_meta_rewrites_only_the_trailer(store, size):
    """Revalidation renews an entry's metadata; a large body stays in its file, untouched
    (same inode), and readers that had it open keep reading the same bytes."""
    from dataclasses import replace

    body = os.urandom(size)
    m = put(store, "/media/a.jpg", body)
    before = store.open_entry("/media/a.jpg", "r1", ())
    path = before.file.name if before.file is not None else None
    inode = os.stat(path).st_ino if path else None
    renewed = replace(m, headers=Headers([("Content-Type", "x/y"), ("Cache-Control", "max-age=600"),
                                          ("X-Custom", "v" * 3000)]), request_time=50.0, response_time=51.0)
    volume = store.volume()
    assert store.update_meta(renewed) is True
    after = store.open_entry("/media/a.jpg", "r1", ())
    assert after is not None and after.meta == renewed
    got = after.body if after.body is not None else after.file.read(m.size)
    after.close()
    assert got == body
    if path:
        assert os.stat(path).st_ino == inode  # the same file: rewritten in place, never copied
        assert before.file.read(m.size) == body  # an open reader is unaffected
        assert store.volume() > volume  # the longer trailer is accounted
    before.close()
    # smaller again: the file is truncated to the new trailer
    assert store.update_meta(m) is True
    again = store.open_entry("/media/a.jpg", "r1", ())
    assert again is not None and again.meta == m
    again.close()


def test_update_meta_refuses_another_body(store):
    from dataclasses import replace

    m = put(store, "/media/a.jpg", os.urandom(40_000))
    assert store.update_meta(replace(m, sha256="0" * 64)) is False  # replaced meanwhile: not ours
    assert store.update_meta(replace(m, target="/media/gone.jpg")) is False
    e = store.open_entry("/media/a.jpg", "r1", ())
    assert e is not None and e.meta == m
    e.close()


@pytest.mark.parametrize("size", [10, 2_000_000], ids=["inline", "large-file"])
def test_soft_purge_rewrites_the_trailer_not_the_body(store, size):
    """A soft purge of a large object (every slice of a 4 GB video) must not copy its body:
    the file stays the same inode, the bytes the same, only soft_stale is set."""
    body = os.urandom(size)
    m = put(store, "/media/v.mp4", body)
    before = store.open_entry("/media/v.mp4", "r1", ())
    inode = os.stat(before.file.name).st_ino if before.file is not None else None
    before.close()
    assert store.mark_soft_stale("/media/v.mp4") == 1
    assert store.mark_soft_stale("/media/v.mp4") == 0  # already soft-stale: nothing to do
    after = store.open_entry("/media/v.mp4", "r1", ())
    assert after is not None and after.meta.soft_stale and after.meta.sha256 == m.sha256
    got = after.body if after.body is not None else after.file.read(m.size)
    if inode is not None:
        assert os.stat(after.file.name).st_ino == inode
    after.close()
    assert hashlib.sha256(got).hexdigest() == m.sha256
