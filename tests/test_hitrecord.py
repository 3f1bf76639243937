"""Hit records (proxy/hitrecord.py): a small entry's plain-hit answer written with its
metadata, so a disk hit serves without decoding the metadata or planning the response.

What a user relies on: a disk hit answers exactly as the entry's metadata says under the
edge's current settings (the same template and freshness the memory tier computes), a
soft purge or a renewal is never hidden by an older record, rows written before records
still serve, and a damaged row is never served.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from dataclasses import replace

import pytest

from mediaedge import hitrecord
from mediaedge.cache import Cache
from mediaedge.contract import EngineConfig
from mediaedge.engine import Engine, MediaRequest
from mediaedge.headers import Headers
from mediaedge.storage import DBNAME, CacheStore, EntryMeta, Pointer, entry_key, split_inline_raw

T0 = 1_700_000_000.0
BODY = bytes(range(256)) * 4


def meta_for(target: str, body: bytes = BODY, *headers: tuple[str, str], revision: str = "r1",
             **fields: object) -> EntryMeta:
    base = dict(target=target, revision=revision, status=200,
                headers=Headers([("Content-Type", "image/jpeg"), ("Content-Length", str(len(body))), *headers]),
                size=len(body), sha256=hashlib.sha256(body).hexdigest(), request_time=T0, response_time=T0,
                source="upstream", key_revision=revision)
    base.update(fields)
    return EntryMeta(**base)  # type: ignore[arg-type]


SAMPLES = [
    meta_for("/media/plain.jpg"),
    meta_for("/media/cc.jpg", BODY, ("Cache-Control", "public, max-age=60, stale-while-revalidate=30, "
                                                      "stale-if-error=600, must-revalidate"),
             ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"), ("Age", "7"), ("ETag", '"e1"')),
    meta_for("/media/db.pdf", BODY, ("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT"), source="db"),
    meta_for("/media/gone.jpg", b"", status=404, negative=True),
    meta_for("/media/cdn.jpg", BODY, ("Cache-Status", "upstream-cdn; hit"), ("CDN-Cache-Control", "max-age=5")),
    meta_for("/media/latin.jpg", BODY, ("Content-Disposition", "inline; filename=\"caf\u00e9.jpg\""),
             ("X-Odd", "snow \u2603 man")),
    meta_for("/media/vary.jpg", BODY, ("Vary", "Accept"), vary=("accept",), vary_values=("image/webp",)),
    meta_for("/media/tagged.jpg", BODY, ("Surrogate-Key", "cat-1 cat-2"), tags=("cat-1", "cat-2")),
    meta_for("/media/soft.jpg", soft_stale=True),
]


def store_of(tmp_path, config: EngineConfig | None = None, *, records: bool = True) -> tuple[CacheStore, Cache]:
    store = CacheStore(str(tmp_path / "cache"), size_limit=64 << 20)
    cache = Cache(store, config or EngineConfig())
    if not records:
        store.hit_record = None  # as a version before records wrote its rows
    return store, cache


def commit(store: CacheStore, meta: EntryMeta, body: bytes = BODY) -> None:
    path = store.new_temp_path()
    with open(path, "wb") as f:
        f.write(body)
    store.commit(path, meta)
    store.set_pointer(meta.target, Pointer(meta.key_revision, meta.vary))


def headers_for(meta: EntryMeta) -> Headers:
    return Headers([("Accept", v) for v in meta.vary_values if v is not None])


@pytest.mark.parametrize("meta", SAMPLES, ids=lambda m: m.target)
def test_a_record_reads_back_as_the_template_and_facts_computed_from_the_metadata(tmp_path, meta):
    store, cache = store_of(tmp_path)
    body = BODY if meta.size else b""
    expected = cache.record_of(meta)
    assert hitrecord.decode(cache.hit_record(meta), cache.fingerprint) == expected
    commit(store, meta, body)
    stored = cache.probe_stored(meta.target, headers_for(meta))
    assert stored is not None
    held = cache.hot_entry(meta, body)
    assert (stored.hot.template, stored.hot.facts, stored.hot.body) == (held.template, held.facts, body)
    assert EntryMeta.from_json(stored.hot.meta_json) == meta
    assert (stored.record.vary_values, stored.record.tags) == (meta.vary_values, meta.tags)


def test_every_committed_entry_carries_its_record_and_older_rows_still_serve(tmp_path):
    store, cache = store_of(tmp_path, records=False)
    old = meta_for("/media/old.jpg")
    commit(store, old)
    store.hit_record = cache.hit_record
    new = meta_for("/media/new.jpg")
    commit(store, new)
    raw = {m.target: bytes(store._cache.get(entry_key(m.target, "r1", ()))) for m in (old, new)}  # noqa: SLF001
    assert split_inline_raw(raw[old.target])[2] == b""
    assert hitrecord.decode(split_inline_raw(raw[new.target])[2], cache.fingerprint) == cache.record_of(new)
    for m in (old, new):
        stored = cache.probe_stored(m.target, Headers())
        assert stored is not None and stored.record == cache.record_of(m)
        found = store.open_entry(m.target, "r1", ())  # the thread path reads both formats too
        assert found is not None and found.meta == m and found.body == BODY


def test_a_record_written_under_other_settings_is_not_used(tmp_path):
    """--default-ttl changed between runs: the freshness is the current settings', not the record's."""
    short = EngineConfig(default_ttl=10)
    store, cache = store_of(tmp_path, short)
    meta = meta_for("/media/nottl.jpg")  # no Cache-Control: the default TTL applies
    commit(store, meta)
    stored = cache.probe_stored(meta.target, Headers())
    assert stored is not None and stored.hot.facts.fresh.lifetime == 10
    store.close()
    store2, cache2 = store_of(tmp_path, EngineConfig(default_ttl=3600))
    assert cache2.fingerprint != cache.fingerprint
    stored = cache2.probe_stored(meta.target, Headers())
    assert stored is not None and stored.hot.facts.fresh.lifetime == 3600
    assert hitrecord.decode(cache.hit_record(meta), cache2.fingerprint) is None


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'{"a":1}', b"[" + b"1," * 17 + b"1]"])
def test_a_record_that_is_not_one_reads_as_none(raw):
    assert hitrecord.decode(raw, "fp") is None


@pytest.mark.parametrize("at", [[99, 1, 2], [-1, 1, 2], [0, 0, 0], [0, 1, 1], [0.5, 1, 2], [None, 1, 2]])
def test_a_record_whose_positions_disagree_with_its_fields_reads_as_none(tmp_path, at):
    """Valid JSON that our writer never makes (damage inside the digits of a row): the
    per-request fields must sit where the template says, or the entry is decoded the long way."""
    store, cache = store_of(tmp_path, EngineConfig())
    good = json.loads(cache.hit_record(meta_for("/media/pos.jpg")))
    assert hitrecord.decode(json.dumps(good).encode(), cache.fingerprint) is not None
    good[7] = at
    assert hitrecord.decode(json.dumps(good).encode(), cache.fingerprint) is None


def engine_of(store: CacheStore, clock: list[float]) -> Engine:
    engine = Engine(EngineConfig(), store, upstream=None, db=None, clock=lambda: clock[0])
    engine.ready.set()
    engine.cache.hot.max_bytes = 0  # every hit from the disk
    return engine


def test_a_soft_purge_and_a_renewal_rewrite_the_record_with_the_metadata(tmp_path):
    store = CacheStore(str(tmp_path / "cache"), size_limit=64 << 20)
    clock = [T0 + 5]
    engine = engine_of(store, clock)
    meta = meta_for("/media/a.jpg", BODY, ("Cache-Control", "max-age=60"))
    commit(store, meta)
    req = MediaRequest("GET", meta.target, Headers())
    hit = engine.hot_hit(req)
    assert hit is not None and hit.body == BODY and dict(hit.wire)[b"Age"] == b"5"
    clock[0] = T0 + 100  # past max-age: not a plain hit
    assert engine.hot_hit(req) is None
    renewed = replace(meta, request_time=T0 + 90, response_time=T0 + 90)
    assert store.update_meta(renewed)
    hit = engine.hot_hit(req)
    assert hit is not None and dict(hit.wire)[b"Age"] == b"10"
    assert store.mark_soft_stale(meta.target) == 1
    assert engine.hot_hit(req) is None  # soft-purged: never a fresh hit, whatever was recorded before


def test_a_damaged_small_entry_is_never_served_from_its_record(tmp_path):
    store = CacheStore(str(tmp_path / "cache"), size_limit=64 << 20)
    engine = engine_of(store, [T0 + 1])
    meta = meta_for("/media/a.jpg")
    commit(store, meta)
    key = entry_key(meta.target, "r1", ())
    value = bytearray(store._cache.get(key))  # noqa: SLF001
    value[10] ^= 0xFF  # one body byte flipped behind the edge's back
    con = sqlite3.connect(f"{store.directory}/{DBNAME}")
    with con:
        con.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(value), key))
    con.close()
    assert engine.cache.probe_stored(meta.target, Headers()) is None
    assert engine.hot_hit(MediaRequest("GET", meta.target, Headers())) is None  # `handle` drops it


def test_damaged_metadata_behind_a_held_record_is_dropped_not_a_failure(tmp_path):
    """A memory-tier entry made from a record keeps the metadata undecoded; when `handle`
    needs it (a conditional request) and it does not decode, the disk is asked instead."""
    store = CacheStore(str(tmp_path / "cache"), size_limit=64 << 20)
    engine = engine_of(store, [T0 + 1])
    engine.cache.hot.max_bytes = 1 << 20
    meta = meta_for("/media/a.jpg", BODY, ("ETag", '"e1"'))
    commit(store, meta)
    stored = engine.cache.probe_stored(meta.target, Headers())
    assert stored is not None
    broken = stored._replace(hot=stored.hot._replace(meta_json=b"{broken"))
    engine.store.touch(meta.target)
    engine.store.touch(meta.target)
    engine.cache.hold(meta.target, broken)
    assert engine.cache.probe(meta.target, Headers()) is not None
    conditional = MediaRequest("GET", meta.target, Headers([("If-None-Match", '"e1"')]))
    reply = asyncio.run(engine.handle(conditional))
    assert (reply.status, reply.result) == (304, "hit")  # answered from the disk's intact row
    held = engine.cache.probe(meta.target, Headers())
    assert held is None or EntryMeta.from_json(held.meta_json) == meta  # the broken copy is gone


def test_small_entries_with_records_still_share_database_pages(tmp_path):
    """A 1 KiB entry's row (body, metadata, record) stays under half a 4 KiB SQLite page, so
    two share one: a record as plain as the metadata made every such row take a page of
    its own and doubled the database (2.1 → 4.1 GB at 1M entries)."""
    store, cache = store_of(tmp_path)
    body = bytes(1024)
    for i in range(600):
        meta = meta_for(f"/media/catalog/product/cache/small/{i:06d}.jpg", body,
                        ("Cache-Control", "public, max-age=86400"), ("ETag", f'"r1-{i}"'), ("X-Media-Revision", "r1"))
        commit(store, meta, body)
    assert cache.probe_stored(meta.target, Headers()) is not None
    store.close()
    con = sqlite3.connect(f"{tmp_path}/cache/{DBNAME}")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size, pages = con.execute("PRAGMA page_size").fetchone()[0], con.execute("PRAGMA page_count").fetchone()[0]
    con.close()
    assert page_size * pages / 600 < 3000  # ~2.5 KB per entry (its row, its pointer, the key index); one page: > 4 KB
