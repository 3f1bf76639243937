"""The hit slab inside the cache (proxy/storage.py, proxy/cache.py): a small entry's disk
hit is read from the slab without a SQL statement, and every change of a target's rows
(purge, soft purge, publish, tag purge, eviction, clear, a new revision) is seen by the
next hit, in this process and in another one sharing the directory.

The lookup statement is counted (`CacheStore._lookup_rows`): a slab hit runs none."""
from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import replace

import pytest

from mediaedge import hitslab
from mediaedge.cache import Cache
from mediaedge.contract import EngineConfig
from mediaedge.engine import Engine, MediaRequest
from mediaedge.headers import Headers
from mediaedge.invalidation import Invalidator
from mediaedge.storage import CacheStore, EntryMeta
from mediaedge.webhook import PublishEvent, PurgeEvent

T0 = 1_700_000_000.0
SLAB = 2 << 20


def body_of(target: str, n: int = 1) -> bytes:
    return hashlib.sha256(f"{target}#{n}".encode()).digest() * 32  # 1 KiB, one per target and version


def meta_for(target: str, body: bytes, *headers: tuple[str, str], revision: str = "r1", **fields: object) -> EntryMeta:
    base = dict(target=target, revision=revision, status=200,
                headers=Headers([("Content-Type", "image/jpeg"), ("Content-Length", str(len(body))),
                                 ("Cache-Control", "max-age=600"), *headers]),
                size=len(body), sha256=hashlib.sha256(body).hexdigest(), request_time=T0, response_time=T0,
                source="upstream", key_revision=revision)
    base.update(fields)
    return EntryMeta(**base)  # type: ignore[arg-type]


class Node:
    """A store, its cache and engine, and a count of lookup statements: one process."""

    def __init__(self, directory: str, *, slab: int = SLAB, size_limit: int = 64 << 20) -> None:
        self.store = CacheStore(directory, size_limit=size_limit, slab_size=slab)
        self.engine = Engine(EngineConfig(), self.store, upstream=None, db=None, clock=lambda: T0 + 5)
        self.engine.ready.set()
        self.engine.cache.hot.max_bytes = 0  # every hit from the disk
        self.cache: Cache = self.engine.cache
        self.statements = 0
        rows = self.store._lookup_rows

        def counted(*args: object) -> object:
            self.statements += 1
            return rows(*args)  # type: ignore[arg-type]

        self.store._lookup_rows = counted  # type: ignore[method-assign]

    def commit(self, meta: EntryMeta, body: bytes) -> list[str]:
        path = self.store.new_temp_path()
        with open(path, "wb") as f:
            f.write(body)
        return self.store.commit_current(path, meta)

    def hit(self, target: str, headers: Headers | None = None) -> bytes | None:
        reply = self.engine.hot_hit(MediaRequest("GET", target, headers or Headers()))
        return None if reply is None else reply.body

    def apply(self, event: object) -> None:
        asyncio.run(Invalidator(self.engine, None, node="test").apply(event))  # type: ignore[arg-type]


@pytest.fixture
def node(tmp_path):
    n = Node(str(tmp_path / "cache"))
    yield n
    n.store.close()


def test_a_small_entry_is_hit_from_the_slab_without_a_statement(node):
    t = "/media/a.jpg"
    node.commit(meta_for(t, body_of(t)), body_of(t))
    assert node.hit(t) == body_of(t)
    assert node.hit(t) == body_of(t)
    assert node.statements == 0


def test_a_purge_a_soft_purge_and_a_publish_are_seen_by_the_next_hit(node):
    a, b, c = "/media/a.jpg", "/media/b.jpg", "/media/c.jpg"
    for t in (a, b, c):
        node.commit(meta_for(t, body_of(t)), body_of(t))
        assert node.hit(t) == body_of(t)
    node.apply(PurgeEvent(path=a))
    assert node.hit(a) is None
    node.apply(PurgeEvent(path=b, soft=True))
    assert node.hit(b) is None  # soft-purged: never a fresh hit
    node.apply(PublishEvent(path=c, revision="r2"))
    assert node.hit(c) is None
    node.commit(meta_for(c, body_of(c, 2), revision="r2"), body_of(c, 2))
    assert node.hit(c) == body_of(c, 2)


def test_a_tag_or_prefix_purge_is_seen_by_the_next_hit(node):
    tagged = [f"/media/cat/{i}.jpg" for i in range(5)]
    for t in tagged:
        node.commit(meta_for(t, body_of(t), ("Surrogate-Key", "cat-1"), tags=("cat-1",)), body_of(t))
    other = "/media/keep.jpg"
    node.commit(meta_for(other, body_of(other)), body_of(other))
    assert all(node.hit(t) == body_of(t) for t in [*tagged, other])
    node.apply(PurgeEvent(tag="cat-1"))
    assert all(node.hit(t) is None for t in tagged)
    assert node.hit(other) == body_of(other)
    node.apply(PurgeEvent(prefix="/media/k"))
    assert node.hit(other) is None


def test_a_new_revision_replaces_the_old_one(node):
    t = "/media/a.jpg"
    node.commit(meta_for(t, body_of(t)), body_of(t))
    assert node.hit(t) == body_of(t)
    node.commit(meta_for(t, body_of(t, 2), revision="r2"), body_of(t, 2))
    assert node.hit(t) == body_of(t, 2)
    assert node.statements == 0


def test_evicted_and_cleared_entries_are_not_hit(tmp_path):
    """Small entries pushed out by large ones (which never enter the slab): the slab still
    has room for them, but they are evicted, so they are not hit."""
    node = Node(str(tmp_path / "cache"), slab=hitslab.MIN_RING, size_limit=8 << 20)
    small = [f"/media/e/{i}.bin" for i in range(20)]
    for t in small:
        node.commit(meta_for(t, body_of(t)), body_of(t))
    assert all(node.hit(t) == body_of(t) for t in small)
    evicted: list[str] = []
    big = os.urandom(200_000)
    for i in range(40):
        t = f"/media/big/{i}.bin"
        evicted += node.commit(meta_for(t, big), big)
    gone = [t for t in small if t in evicted]
    assert gone, "the cache should have evicted small entries"
    assert all(node.hit(t) is None for t in gone)
    survivor = small[-1]
    node.commit(meta_for(survivor, body_of(survivor)), body_of(survivor))
    assert node.hit(survivor) == body_of(survivor)
    node.store.clear()
    assert node.store.slab.get(survivor) is None and node.hit(survivor) is None
    node.store.close()


def test_entries_stored_before_the_slab_are_put_in_it_by_their_first_hit(tmp_path):
    directory = str(tmp_path / "cache")
    old = Node(directory, slab=0)
    t = "/media/old.jpg"
    old.commit(meta_for(t, body_of(t)), body_of(t))
    old.store.close()
    node = Node(directory)
    assert node.hit(t) == body_of(t) and node.statements == 1
    assert node.hit(t) == body_of(t) and node.statements == 1  # from the slab now
    node.store.close()


def test_a_target_with_vary_is_never_hit_from_the_slab(node):
    t = "/media/v.jpg"
    meta = meta_for(t, body_of(t), ("Vary", "Accept"), vary=("accept",), vary_values=("image/webp",))
    node.commit(meta, body_of(t))
    headers = Headers([("Accept", "image/webp")])
    assert node.hit(t, headers) == body_of(t) and node.hit(t, headers) == body_of(t)
    assert node.statements == 2
    assert node.store.slab.get(t) is None
    assert node.hit(t, Headers([("Accept", "image/png")])) is None  # another variant: not stored


def test_a_damaged_slab_value_is_never_served(node):
    t = "/media/a.jpg"
    node.commit(meta_for(t, body_of(t)), body_of(t))
    slab = node.store.slab
    g = slab.geometry
    index, fp = hitslab.place(t, g.buckets)
    fd = os.open(slab.path, os.O_RDWR)
    try:
        _, slots = hitslab.parse_bucket(os.pread(fd, hitslab.BUCKET.size, hitslab.HEADER_SIZE + index * hitslab.BUCKET.size))
        _, _, offset = next(s for s in slots if s[0] == fp)
        at = g.ring_start + offset % g.ring + hitslab.RECORD.size + len(t) + 100  # a body byte
        os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0xFF]), at)
    finally:
        os.close(fd)
    assert node.hit(t) == body_of(t)  # the intact row answered
    assert node.statements == 1


def test_another_process_on_the_directory_sees_every_change(tmp_path):
    directory = str(tmp_path / "cache")
    writer, reader = Node(directory), Node(directory)
    a, b = "/media/a.jpg", "/media/b.jpg"
    for t in (a, b):
        writer.commit(meta_for(t, body_of(t)), body_of(t))
    assert reader.hit(a) == body_of(a) and reader.hit(b) == body_of(b) and reader.statements == 0
    writer.apply(PurgeEvent(path=a))
    assert reader.hit(a) is None
    writer.commit(meta_for(b, body_of(b, 2), revision="r2"), body_of(b, 2))
    assert reader.hit(b) == body_of(b, 2)
    writer.store.clear()
    assert reader.hit(b) is None
    writer.store.close()
    reader.store.close()


def test_records_under_other_settings_are_not_put_again_on_every_hit(tmp_path):
    directory = str(tmp_path / "cache")
    first = Node(directory)
    t = "/media/nottl.jpg"
    body = body_of(t)
    meta = meta_for(t, body)
    meta = replace(meta, headers=Headers([("Content-Type", "image/jpeg")]))  # the default TTL applies
    first.commit(meta, body)
    first.store.close()
    store = CacheStore(directory, size_limit=64 << 20, slab_size=SLAB)
    engine = Engine(EngineConfig(default_ttl=3600), store, upstream=None, db=None, clock=lambda: T0 + 5)
    engine.ready.set()
    engine.cache.hot.max_bytes = 0
    puts = []
    real = store.slab.put
    store.slab.put = lambda *a: puts.append(a) or real(*a)  # type: ignore[method-assign]
    for _ in range(3):
        reply = engine.hot_hit(MediaRequest("GET", t, Headers()))
        assert reply is not None and reply.body == body
    assert puts == []  # the row's record is another settings': nothing to put
    store.close()


def test_a_purge_between_a_rows_read_and_its_slab_put_wins(tmp_path):
    """Another process purges while this one reads the row on its way to the slab: the
    value read (now purged) is not put back, so the next hit does not serve it."""
    directory = str(tmp_path / "cache")
    old = Node(directory, slab=0)
    t = "/media/a.jpg"
    old.commit(meta_for(t, body_of(t)), body_of(t))  # stored before the slab: not in it
    old.store.close()
    reader, purger = Node(directory), Node(directory)
    read = reader.store.inline_rows

    def read_then_purge(*args: object) -> object:
        found = read(*args)  # type: ignore[arg-type]
        purger.apply(PurgeEvent(path=t))  # lands between the read and the put
        return found

    reader.store.inline_rows = read_then_purge  # type: ignore[method-assign]
    assert reader.hit(t) == body_of(t)  # the read itself was before the purge
    reader.store.inline_rows = read  # type: ignore[method-assign]
    assert reader.store.slab.get(t) is None
    assert reader.hit(t) is None and purger.hit(t) is None
    reader.store.close()
    purger.store.close()


def test_slab_reads_leave_the_event_loop_when_they_have_been_slow(node):
    """A slab larger than the page cache waits on the disk: after a run of slow inline reads
    (`InlineReads`, shared with the row lookups) a hit is not read on the loop at all, except
    one probe every PROBE_EVERY; the engine's thread path answers those."""
    from mediaedge.policy.lookup import PROBE_EVERY

    t = "/media/a.jpg"
    node.commit(meta_for(t, body_of(t)), body_of(t))
    assert node.hit(t) == body_of(t)
    slab = node.store.slab
    assert slab is not None
    reads = 0
    get = slab.get

    def counted(target: str) -> bytes | None:
        nonlocal reads
        reads += 1
        return get(target)

    slab.get = counted  # type: ignore[method-assign]
    node.store.inline_reads.slow_share = 1.0  # as after a run of disk-bound reads
    answers = [node.hit(t) for _ in range(PROBE_EVERY)]
    assert reads == 1 and node.statements == 0  # the probe's slab read; nothing else ran on the loop
    assert answers.count(None) == PROBE_EVERY - 1 and body_of(t) in answers
    node.store.inline_reads.slow_share = 0.0
    assert node.hit(t) == body_of(t) and reads == 2


def test_the_start_up_read_ahead_reads_the_slab_first_then_the_database(node):
    t = "/media/a.jpg"
    node.commit(meta_for(t, body_of(t)), body_of(t))
    decision = node.store.prewarm()
    assert decision.warm, decision.reason
    assert decision.parts == ("hit slab", "cache database")
    assert node.store.slab is not None and os.path.basename(node.store.slab.path) in {
        os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) for fd in node.store._readahead_fds}
