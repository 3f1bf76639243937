"""Fill a cache directory directly through mediaedge's own storage (no HTTP).

Used to measure hit latency as the cache holds 10k, 100k, 1M entries without
spending minutes on misses. The edge must not be running on the directory while
it is filled. Three ways, all producing the rows a fill from the upstream commits:

- `commit`: `CacheStore.commit` (temp file, trailer, rename/inline, cull) then
  `set_pointer`, batched in one diskcache transaction. The real write path; ~1-2k/s
  here (three file opens per entry).
- `set`: the same key and bytes `commit` stores for an inline entry, through
  diskcache's `set` (no temp file, no cull). ~4k/s.
- `bulk`: the same rows (columns computed by mediaedge's `SafeDisk.store`, exactly as
  `diskcache.Cache.set` computes them for a new key) inserted with one `executemany`
  per batch; diskcache's own triggers keep its count and size. For 1M entries.

After filling, a sample of entries is opened with `CacheStore.open_entry` (length and
SHA-256 checked) to prove they are servable.
"""
from __future__ import annotations

import hashlib
import random
import time

from mediaedge import hitslab
from mediaedge.headers import Headers
from mediaedge.cache import Cache
from mediaedge.contract import EngineConfig
from mediaedge.storage import INLINE_LIMIT, CacheStore, EntryMeta, Pointer, entry_key, pointer_key

from bench.origin import PATTERN

TEMPLATE = "/media/pop/s{size}/{i}.bin"

_INSERT = ("INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, "
           "filename, value) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)")


def populate(cache_dir: str, start: int, end: int, *, size: int, size_limit: int, batch: int = 5000,
             deadline: float | None = None, method: str = "commit") -> dict:
    """Add entries start..end-1 (paths TEMPLATE); returns how many and how fast."""
    if method != "commit" and size + 2048 >= INLINE_LIMIT:
        method = "commit"  # the shortcuts are only equivalent for inline (small) entries
    # the hit slab an edge with --cache-size `size_limit` keeps (proxy/hitslab.py), filled as its commits fill it
    store = CacheStore(cache_dir, size_limit=size_limit, slab_size=hitslab.default_size(size_limit))
    Cache(store, EngineConfig())  # hit records as an edge with default settings writes them (proxy/hitrecord.py)
    cache = store._cache  # noqa: SLF001
    body = PATTERN[:size]
    sha = hashlib.sha256(body).hexdigest()
    revision = f"v1-{size}"
    headers = Headers([
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(size)),
        ("Cache-Control", "public, max-age=86400"),
        ("ETag", f'"{revision}"'),
        ("X-Media-Revision", revision),
    ])
    pointer = Pointer(revision, ())
    t0 = time.perf_counter()
    done = start
    try:
        while done < end:
            if deadline is not None and time.monotonic() > deadline:
                break
            stop = min(end, done + batch)
            now = time.time()
            metas = [(TEMPLATE.format(size=size, i=i),) for i in range(done, stop)]
            slab_values: list[tuple[str, bytes, tuple[int, int]]] = []
            with cache.transact():  # one SQLite transaction per batch
                if method == "bulk":
                    rows = []
                    for (target,) in metas:
                        meta = EntryMeta(target=target, revision=revision, status=200, headers=headers, size=size,
                                         sha256=sha, request_time=now, response_time=now, source="upstream",
                                         key_revision=revision)
                        entry = body + store.trailer(meta)
                        if store.slab is not None:
                            slab_values.append((target, entry, store.slab.stamp(target)))
                        for key, value in ((entry_key(target, revision, ()), entry),
                                           (pointer_key(target), pointer.to_json())):
                            db_key, raw = cache._disk.put(key)  # noqa: SLF001
                            vsize, mode, filename, db_value = cache._disk.store(value, False, key=key)  # noqa: SLF001
                            rows.append((db_key, raw, now, None, now, None, vsize, mode, filename, db_value))
                    cache._con.executemany(_INSERT, rows)  # noqa: SLF001
                else:
                    for (target,) in metas:
                        meta = EntryMeta(target=target, revision=revision, status=200, headers=headers, size=size,
                                         sha256=sha, request_time=now, response_time=now, source="upstream",
                                         key_revision=revision)
                        if method == "set":
                            entry = body + store.trailer(meta)
                            cache.set(entry_key(target, revision, ()), entry)
                            store.set_pointer(target, pointer)
                            if store.slab is not None:  # stamped after set_pointer's forget, put below
                                slab_values.append((target, entry, store.slab.stamp(target)))
                        else:
                            tmp = store.new_temp_path()
                            with open(tmp, "wb") as f:
                                f.write(body)
                            store.commit_current(tmp, meta)
            for target, value, stamp in slab_values:  # after the rows are committed, as `commit_current`
                assert store.slab is not None
                store.slab.put(target, value, stamp)
            done = stop
        count = store.entry_count()
        # Prove a sample is servable through the same calls the engine's lookup makes.
        rng = random.Random(7)
        bad = 0
        for i in (rng.randrange(0, max(1, done)) for _ in range(50)):
            target = TEMPLATE.format(size=size, i=i)
            p = store.get_pointer(target)
            e = store.open_entry(target, p.revision, ()) if p else None
            if e is None or e.body != body:
                bad += 1
            elif e is not None:
                e.close()
    finally:
        store.close()
    secs = time.perf_counter() - t0
    return {"method": method, "added": done - start, "entries": count, "seconds": round(secs, 1),
            "per_second": round((done - start) / secs, 1) if secs else None, "reached": done,
            "sample_unservable": bad}


def count(cache_dir: str, *, size: int) -> int:
    """Entries already in a directory `populate` filled (0 when none): where to resume.

    `populate` adds indices in order, so the count is the next index, provided the last
    one is there (checked; otherwise the fill is redone from 0)."""
    import os

    if not os.path.isdir(cache_dir):
        return 0
    store = CacheStore(cache_dir, size_limit=64 << 30)
    try:
        n = store.entry_count()
        last = TEMPLATE.format(size=size, i=n - 1)
        return n if n and store.get_pointer(last) is not None else 0
    finally:
        store.close()
