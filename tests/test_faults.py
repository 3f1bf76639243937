"""Faults caused for real: stale serving when origins fail, integrity after crashes and
on-disk damage, and disk faults (full, read-only, churn).

Every test runs a real `mediaedge serve` against a real loopback upstream and a real
SQLite database origin. How each fault is caused:

- upstream 5xx / slow / refused: the scripted upstream's route, or shutting it down;
- database origin down: `DbOutage` checkpoints the SQLite file and overwrites it in
  place with junk (same inode), so the node's pooled connections and new ones both get
  "file is not a database"; `up()` writes the bytes back. The invalidation log lives in
  a separate `--state-db`, so only the origin is down;
- kill -9: SIGKILL to the node's process while a fill is being written;
- damaged cache: bytes flipped / files truncated under the cache directory (diskcache's
  `*.val` files, or the value column of its `cache.db` for entries kept inline);
- full disk: the cache directory on a 3 MiB tmpfs (`mount -t tmpfs`, root only; skipped
  when not permitted) and, unprivileged, RLIMIT_FSIZE on the node (writes past the limit
  fail with EFBIG, the same path as ENOSPC);
- read-only cache: `chattr +i` on the cache's tmp directory (root bypasses chmod, not the
  immutable flag); skipped where chattr is unsupported.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.edge import Edge, Route, Upstream, sha, status_of, synthetic_chunk, synthetic_sha, wait_until

BODY = os.urandom(20_000)


# ----------------------------------------------------------------------------- helpers
class DbOutage:
    """Make a SQLite database origin unreachable and bring it back, in place."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.saved: bytes | None = None

    def down(self) -> None:
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
        with open(self.path, "r+b") as f:
            self.saved = f.read()
            f.seek(0)
            f.write(b"\xa5" * len(self.saved))

    def up(self) -> None:
        if self.saved is not None:
            with open(self.path, "r+b") as f:
                f.write(self.saved)
            self.saved = None


def put_row(db_url: str, path: str, body: bytes, revision: str, content_type: str = "image/jpeg") -> None:
    from mediaedge.origins.db import DatabaseOrigin

    with DatabaseOrigin(db_url) as db:
        db.put(path, io.BytesIO(body), size=len(body), sha256=hashlib.sha256(body).hexdigest(),
               revision=revision, content_type=content_type)


def stale_ttl(r: requests.Response) -> int | None:
    """N of `mediaedge; hit; ttl=-N`, else None."""
    s = status_of(r)
    if not s.startswith("mediaedge; hit; ttl=-"):
        return None
    return int(s.rsplit("ttl=-", 1)[1].split(";")[0])


def assert_one_line_error(r: requests.Response, status: int) -> None:
    assert r.status_code == status, (r.status_code, status_of(r), r.content[:200])
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.content.endswith(b"\n") and r.content.count(b"\n") == 1, r.content
    assert b"Traceback" not in r.content


def wait_past(t: float, what: str) -> None:
    """Bounded wait for the wall clock to pass `t` (entry ages are wall-clock based)."""
    wait_until(lambda: time.time() > t, timeout=max(1.0, t - time.time() + 2), interval=0.05, what=what)


def cache_rows(cache_dir: str, target: str) -> list[tuple[str, str | None, int, bytes | None]]:
    """(key, filename, size, inline value) of the stored responses of `target`."""
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"), timeout=10)
    try:
        prefix = f"v\x1f{target}\x1f"
        return conn.execute("SELECT key, filename, size, value FROM Cache WHERE key >= ? AND key < ?",
                            (prefix, prefix + "\U0010ffff")).fetchall()
    finally:
        conn.close()


def entry_file(cache_dir: str, target: str) -> str:
    rows = [r for r in cache_rows(cache_dir, target) if r[1]]
    assert len(rows) == 1, rows
    return os.path.join(cache_dir, rows[0][1])


# ----------------------------------------------------------------------------- staleness
@pytest.fixture(scope="module")
def stale_env(tmp_path_factory):
    """One node for the staleness tests: upstream + SQLite origin that can be taken down,
    --upstream-timeout 1, --grace 3, invalidation log in its own database."""
    d = tmp_path_factory.mktemp("stale")
    up = Upstream()
    db_path = str(d / "origin.db")
    edge = Edge(str(d), upstream=up.url, origin_db=f"sqlite:///{db_path}",
                args=["--upstream-timeout", "1", "--grace", "3",
                      "--state-db", f"sqlite:///{d / 'state.db'}"]).start()
    outage = DbOutage(db_path)
    yield edge, up, outage
    outage.up()
    edge.stop()
    up.close()


def test_stale_while_revalidate_answers_at_once_with_one_background_refetch(stale_env):
    edge, up, _ = stale_env
    path = "/media/stale/swr.jpg"
    up.routes[path] = Route(body=b"old" * 1000, headers={"X-Media-Revision": "s1",
                                                          "Cache-Control": "max-age=1, stale-while-revalidate=30"})
    stored = time.time()
    assert "stored" in status_of(edge.get(path))
    wait_past(stored + 1.5, "the entry to go stale")
    # the app server is now slow (0.8 s, under --upstream-timeout 1) and has a new revision
    up.routes[path] = Route(body=b"new" * 1000, delay=0.8,
                            headers={"X-Media-Revision": "s2", "Cache-Control": "max-age=60"})
    answers: list[tuple[float, requests.Response]] = []

    def one() -> None:
        t0 = time.monotonic()
        r = edge.get(path, timeout=10)
        answers.append((time.monotonic() - t0, r))

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert len(answers) == 10
    for took, r in answers:
        assert r.status_code == 200 and r.content == b"old" * 1000
        assert stale_ttl(r) is not None and stale_ttl(r) >= 1, status_of(r)
        assert r.headers["X-Media-Revision"] == "s1"
        assert took < 0.6, f"a stale answer took {took:.2f} s (the refetch takes 0.8 s)"
    # exactly one background refetch, and then the new revision is served from cache
    wait_until(lambda: edge.get(path).content == b"new" * 1000, 10, 0.1, "the refreshed entry")
    r = edge.get(path)
    assert status_of(r).startswith("mediaedge; hit; ttl=") and stale_ttl(r) is None
    assert up.hits[path] == 2


def test_stale_if_error_on_upstream_5xx_when_the_database_is_down(stale_env):
    edge, up, outage = stale_env
    path = "/media/stale/sie-5xx.jpg"
    up.routes[path] = Route(body=BODY, headers={"X-Media-Revision": "e1",
                                                "Cache-Control": "max-age=1, stale-if-error=60"})
    stored = time.time()
    edge.get(path)
    wait_past(stored + 1.5, "expiry")
    up.routes[path] = Route(status=503, body=b"down for maintenance\n")
    outage.down()
    try:
        r = edge.get(path)
        assert r.status_code == 200 and r.content == BODY
        assert stale_ttl(r) is not None, status_of(r)
        assert r.headers["X-Media-Revision"] == "e1"
        r = edge.get(path, headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.content == BODY[:10] and stale_ttl(r) is not None
    finally:
        outage.up()
    assert up.hits[path] == 3


def test_stale_if_error_on_upstream_timeout_when_the_database_is_down(stale_env):
    edge, up, outage = stale_env
    path = "/media/stale/sie-timeout.jpg"
    up.routes[path] = Route(body=BODY, headers={"X-Media-Revision": "t1",
                                                "Cache-Control": "max-age=1, stale-if-error=60"})
    stored = time.time()
    edge.get(path)
    wait_past(stored + 1.5, "expiry")
    up.routes[path] = Route(body=BODY, delay=4.0, headers={"X-Media-Revision": "t2"})
    outage.down()
    try:
        t0 = time.monotonic()
        r = edge.get(path)
        took = time.monotonic() - t0
        assert r.status_code == 200 and r.content == BODY and stale_ttl(r) is not None, status_of(r)
        assert r.headers["X-Media-Revision"] == "t1"
        assert took < 3.5, f"stale-if-error after a timeout took {took:.1f} s (--upstream-timeout 1)"
    finally:
        outage.up()


def test_grace_serves_stale_when_the_origin_gave_no_stale_if_error_then_the_apps_own_5xx(stale_env):
    """--grace 3: an entry with plain max-age=1 is served stale for 3 s past expiry when both
    origins fail; past that, the app's own 500 (status and body), as the fallback rules say."""
    edge, up, outage = stale_env
    path = "/media/stale/grace.jpg"
    up.routes[path] = Route(body=BODY, headers={"X-Media-Revision": "g1", "Cache-Control": "max-age=1"})
    stored = time.time()
    edge.get(path)
    wait_past(stored + 1.3, "expiry")
    up.routes[path] = Route(status=500, body=b"boom\n")
    outage.down()
    try:
        r = edge.get(path)
        assert r.status_code == 200 and r.content == BODY and stale_ttl(r) is not None, status_of(r)
        wait_past(stored + 1 + 3 + 0.5, "the end of grace")
        r = edge.get(path)
        assert r.status_code == 500 and r.content == b"boom\n", (r.status_code, r.content)
        assert status_of(r).startswith("mediaedge; fwd=bypass; fwd-status=500")
    finally:
        outage.up()


def test_upstream_5xx_and_no_row_serves_the_stale_entry_else_the_upstream_status(stale_env):
    """Fallback rules: the app failing (5xx) while the database has no row is not "absent".
    The stale entry within its grace is served; with none, the app's own status, unstored
    (a 404 stored here once outlived the app's recovery after a soft purge)."""
    edge, up, _ = stale_env
    path = "/media/stale/gone.jpg"
    up.routes[path] = Route(body=BODY, headers={"X-Media-Revision": "n1",
                                                "Cache-Control": "max-age=1, stale-if-error=60"})
    stored = time.time()
    edge.get(path)
    wait_past(stored + 1.5, "expiry")
    up.routes[path] = Route(status=500, body=b"boom\n")
    r = edge.get(path)
    assert r.status_code == 200 and r.content == BODY and stale_ttl(r) is not None, status_of(r)
    fresh_path = "/media/stale/never-seen.jpg"
    up.routes[fresh_path] = Route(status=503, body=b"down\n")
    for _ in range(2):
        r = edge.get(fresh_path)
        assert r.status_code == 503, r.text
    assert up.hits[fresh_path] == 2  # not stored: the app is asked again
    up.routes[fresh_path] = Route(body=BODY, headers={"X-Media-Revision": "n2"})
    r = edge.get(fresh_path)
    assert r.status_code == 200 and r.content == BODY


def test_database_origin_row_served_when_upstream_fails(stale_env):
    """Fallback: upstream 5xx → the database row is served (and stored)."""
    edge, up, outage = stale_env
    path = "/media/stale/from-db.jpg"
    put_row(edge.origin_db, path, BODY, "db1")
    up.routes[path] = Route(status=502, body=b"bad gateway\n")
    r = edge.get(path)
    assert r.status_code == 200 and r.content == BODY and r.headers["X-Media-Revision"] == "db1"
    assert "detail=db" in status_of(r)


@pytest.mark.full
def test_stale_if_error_when_upstream_refuses_and_database_is_down(tmp_path):
    up = Upstream()
    db_path = str(tmp_path / "origin.db")
    edge = Edge(str(tmp_path), upstream=up.url, origin_db=f"sqlite:///{db_path}",
                args=["--state-db", f"sqlite:///{tmp_path / 'state.db'}"]).start()
    outage = DbOutage(db_path)
    try:
        path = "/media/stale/refused.jpg"
        # Connection: close, so no kept-alive connection outlives the server
        up.routes[path] = Route(body=BODY, headers={"X-Media-Revision": "r1", "Connection": "close",
                                                    "Cache-Control": "max-age=1, stale-if-error=60"})
        stored = time.time()
        edge.get(path)
        up.close()  # the app server is gone: connection refused
        wait_past(stored + 1.5, "expiry")
        outage.down()
        r = edge.get(path)
        assert r.status_code == 200 and r.content == BODY and stale_ttl(r) is not None, status_of(r)
        # a media URL nobody has cached: both origins down, nothing stale → 502, one line
        assert_one_line_error(edge.get("/media/stale/never-seen.jpg"), 502)
    finally:
        outage.up()
        edge.stop()


@pytest.mark.full
def test_database_only_node_serves_within_grace_then_503(tmp_path):
    """No upstream: the database is the only origin. A row carries no freshness: it is
    fresh for --default-ttl, then served stale for --grace while the database is down,
    then 503 with a one-line cause."""
    db_path = str(tmp_path / "origin.db")
    db_url = f"sqlite:///{db_path}"
    edge = Edge(str(tmp_path), origin_db=db_url,
                args=["--default-ttl", "1", "--grace", "2", "--state-db",
                      f"sqlite:///{tmp_path / 'state.db'}"]).start()
    outage = DbOutage(db_path)
    try:
        put_row(db_url, "/media/dbonly/a.jpg", BODY, "a1")
        stored = time.time()
        r = edge.get("/media/dbonly/a.jpg")
        assert r.content == BODY and "detail=db" in status_of(r)
        wait_past(stored + 1.3, "expiry")
        outage.down()
        r = edge.get("/media/dbonly/a.jpg")
        assert r.status_code == 200 and r.content == BODY and stale_ttl(r) is not None, status_of(r)
        assert_one_line_error(edge.get("/media/dbonly/never.jpg"), 503)
        wait_past(stored + 1 + 2 + 0.5, "the end of grace")
        assert_one_line_error(edge.get("/media/dbonly/a.jpg"), 503)
        outage.up()
        r = edge.get("/media/dbonly/a.jpg")
        # the row is unchanged: the entry is revalidated by its revision, not read again
        assert r.status_code == 200 and r.content == BODY
        assert "fwd=stale; fwd-status=304; detail=db" in status_of(r)
    finally:
        outage.up()
        edge.stop()


def test_app_ahead_of_its_publish_webhook_is_not_a_404(tmp_path):
    """The app answers for the media (no database row): publish r1, the app moves to r2, the
    entry is purged (or evicted, or expires) before the webhook for r2 arrives. A miss then
    must not be a 404: the app's r2 (unstored), or r1, but the file exists."""
    import json

    from mediaedge.webhook import signed_headers

    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url, args=["--webhook-secret", "s3cret"]).start()

    def publish(events: list[dict]) -> None:
        body = json.dumps({"events": events}).encode()
        r = requests.post(edge.admin + "/publish", data=body, headers=signed_headers("s3cret", body, time.time()),
                          timeout=10)
        assert r.status_code == 200, r.text

    try:
        path = "/media/race/app-ahead.jpg"
        up.routes[path] = Route(body=b"one", headers={"X-Media-Revision": "r1"})
        publish([{"type": "publish", "path": path, "revision": "r1"}])
        assert edge.get(path).content == b"one"
        up.routes[path] = Route(body=b"two", headers={"X-Media-Revision": "r2"})
        publish([{"type": "purge", "path": path}])
        r = edge.get(path)
        assert r.status_code == 200 and r.content in (b"one", b"two"), (r.status_code, status_of(r))
    finally:
        edge.stop()
        up.close()


# ----------------------------------------------------------------------------- integrity
def test_kill_9_during_a_large_fill_leaves_nothing_servable_and_temp_files_are_cleaned(tmp_path):
    up = Upstream()
    size = 24 * 1024 * 1024
    path = "/media/crash/video.mp4"
    up.routes[path] = Route(size=size, chunk_delay=0.01, headers={"X-Media-Revision": "k1"})
    edge = Edge(str(tmp_path), upstream=up.url).start()
    tmp_dir = os.path.join(edge.cache_dir, "tmp")
    got = {"n": 0}

    def client() -> None:
        try:
            with requests.get(edge.url + path, stream=True, timeout=30) as r:
                for chunk in r.iter_content(65536):
                    got["n"] += len(chunk)
        except requests.RequestException:
            pass

    t = threading.Thread(target=client, daemon=True)
    try:
        t.start()

        def partial() -> list[str]:
            return [f for f in os.listdir(tmp_dir) if os.path.getsize(os.path.join(tmp_dir, f)) > 2 << 20]

        strays = wait_until(partial, 20, 0.05, "a partial fill on disk")
        edge.kill9()
        t.join(10)
        assert got["n"] < size
        assert all(os.path.exists(os.path.join(tmp_dir, f)) for f in strays)  # left behind by the crash
        edge.start()
        assert not any(os.path.exists(os.path.join(tmp_dir, f)) for f in strays), "stray temp files survived a start"
        assert cache_rows(edge.cache_dir, path) == []
        hits_before = up.hits[path]
        up.routes[path] = Route(size=size, headers={"X-Media-Revision": "k1"})
        with requests.get(edge.url + path, stream=True, timeout=60) as r:
            h = hashlib.sha256()
            for chunk in r.iter_content(1 << 20):
                h.update(chunk)
            assert "fwd=miss" in status_of(r)
        assert h.hexdigest() == synthetic_sha(size)
        assert up.hits[path] == hits_before + 1
    finally:
        edge.stop()
        up.close()


@pytest.fixture(scope="module")
def integrity_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("integrity")
    up = Upstream()
    edge = Edge(str(d), upstream=up.url).start()
    yield edge, up
    edge.stop()
    up.close()


def _store(edge: Edge, up: Upstream, path: str, body: bytes, rev: str) -> None:
    up.routes[path] = Route(body=body, headers={"X-Media-Revision": rev})
    r = edge.get(path)
    assert r.content == body and "stored" in status_of(r)
    assert status_of(edge.get(path)).startswith("mediaedge; hit")


def _assert_refetched(edge: Edge, up: Upstream, path: str, body: bytes) -> None:
    """After on-disk damage: never a damaged body; the damage is detected when the entry is
    opened from disk, the entry dropped and fetched again exactly once.

    Small entries may still be served from the node's in-memory copy (proxy/hot.py) with
    the right bytes; a restart empties memory, so the disk copy is opened then."""
    r = edge.get(path)
    assert r.status_code == 200 and sha(r.content) == sha(body), "a damaged entry was served"
    edge.stop()
    edge.start()
    r = edge.get(path)
    assert r.status_code == 200 and sha(r.content) == sha(body), "a damaged entry was served after a restart"
    r = edge.get(path)
    assert status_of(r).startswith("mediaedge; hit") and sha(r.content) == sha(body)
    assert up.hits[path] == 2, "the damaged entry should have been fetched again exactly once"
    assert "dropping damaged cache entry" in edge.log()


def test_damaged_inline_entry_is_detected_dropped_and_fetched_again(integrity_env):
    edge, up = integrity_env
    path = "/media/damage/inline.png"
    body = os.urandom(5_000)  # under 32 KiB: kept in cache.db's value column, and in the hit slab
    _store(edge, up, path, body, "i1")
    damage_inline_entry(edge.cache_dir, path)
    _assert_refetched(edge, up, path, body)


@pytest.mark.parametrize("copy", ["row", "slab"])
def test_one_damaged_copy_of_a_small_entry_is_never_served_and_the_other_answers(integrity_env, copy):
    """A small entry has two stored copies: its cache.db row and its hit slab record
    (proxy/hitslab.py). With one damaged, the other serves the right bytes, no refetch."""
    edge, up = integrity_env
    path = f"/media/damage/one-{copy}.png"
    body = os.urandom(5_000)
    _store(edge, up, path, body, "o1")
    if copy == "row":
        damage_inline_row(edge.cache_dir, path)
    else:
        damage_slab_copy(edge.cache_dir, path)
    edge.stop()
    edge.start()  # memory emptied: the hit reads the disk
    for _ in range(2):
        r = edge.get(path)
        assert r.status_code == 200 and sha(r.content) == sha(body), "a damaged copy was served"
        assert status_of(r).startswith("mediaedge; hit")
    assert up.hits[path] == 1


def damage_inline_entry(cache_dir: str, target: str) -> None:
    """Flip a byte of both stored copies of a small entry, behind the edge's back."""
    damage_inline_row(cache_dir, target)
    damage_slab_copy(cache_dir, target)


def damage_inline_row(cache_dir: str, target: str) -> None:
    """Flip a byte of an entry kept inside cache.db (its value column)."""
    (key, filename, _, value), = cache_rows(cache_dir, target)
    assert filename is None and value is not None
    damaged = bytearray(value)
    damaged[100] ^= 0xFF
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"), timeout=10)
    with conn:
        conn.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(damaged), key))
    conn.close()


def damage_slab_copy(cache_dir: str, target: str) -> None:
    """Flip a body byte of the entry's hit slab record (proxy/hitslab.py), which must exist."""
    from mediaedge import hitslab

    slab = hitslab.existing(cache_dir)
    assert slab is not None and slab.get(target) is not None, "the entry should be in the hit slab"
    g = slab.geometry
    index, fp = hitslab.place(target, g.buckets)
    fd = os.open(slab.path, os.O_RDWR)
    try:
        _, slots = hitslab.parse_bucket(os.pread(fd, hitslab.BUCKET.size, hitslab.HEADER_SIZE + index * hitslab.BUCKET.size))
        (_, _, offset), = [s for s in slots if s[0] == fp]
        at = g.ring_start + offset % g.ring + hitslab.RECORD.size + len(target.encode()) + 100
        os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0xFF]), at)
    finally:
        os.close(fd)
        slab.close()


def test_flipped_byte_in_a_small_entry_file_is_detected(integrity_env):
    edge, up = integrity_env
    path = "/media/damage/flip.jpg"
    body = os.urandom(200_000)  # a *.val file, hashed on open (<= 1 MiB)
    _store(edge, up, path, body, "f1")
    _flip(entry_file(edge.cache_dir, path), 123_456)
    _assert_refetched(edge, up, path, body)


def test_truncated_entry_file_is_detected(integrity_env):
    edge, up = integrity_env
    path = "/media/damage/truncated.bin"
    body = synthetic_chunk(0, 3 * 1024 * 1024)  # above the hashing limit: length checked
    _store(edge, up, path, body, "t1")
    f = entry_file(edge.cache_dir, path)
    os.truncate(f, os.path.getsize(f) // 2)
    _assert_refetched(edge, up, path, body)


def test_deleted_entry_file_is_a_miss(integrity_env):
    edge, up = integrity_env
    path = "/media/damage/deleted.bin"
    body = synthetic_chunk(0, 2 * 1024 * 1024)
    _store(edge, up, path, body, "d1")
    os.unlink(entry_file(edge.cache_dir, path))
    r = edge.get(path)
    assert r.status_code == 200 and sha(r.content) == sha(body) and "fwd=miss" in status_of(r)
    assert up.hits[path] == 2


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def test_flipped_byte_in_a_large_entry_file_is_cut_dropped_and_fetched_again(integrity_env):
    """Over 1 MiB an entry is hashed as it streams: the whole-body hit that meets the damage
    is cut before its end (never presented complete), the entry dropped, the next request
    fetches it again."""
    edge, up = integrity_env
    path = "/media/damage/large-flip.bin"
    body = synthetic_chunk(0, 3 * 1024 * 1024)
    _store(edge, up, path, body, "l1")
    _flip(entry_file(edge.cache_dir, path), 2_000_000)
    try:
        served = edge.get(path).content
    except requests.RequestException:
        served = None  # cut before the end: the bad bytes were not presented as complete
    assert served is None or sha(served) == sha(body), "damaged bytes were served as a complete 200"
    wait_until(lambda: "damaged" in edge.log(), 10, 0.1, "the damage to be logged")
    r = edge.get(path)
    assert r.status_code == 200 and sha(r.content) == sha(body) and "fwd=miss" in status_of(r), status_of(r)
    assert up.hits[path] == 2


def test_range_over_damaged_bytes_of_a_large_entry_is_not_served(integrity_env):
    """Range hits check the CRC-32 of each MiB block they touch (proxy/digest.py): windows
    away from the damage are served; one over it is cut before any of its bytes, the
    entry is dropped, and the next request refetches the object whole."""
    edge, up = integrity_env
    path = "/media/damage/large-range.bin"
    body = synthetic_chunk(0, 3 * 1024 * 1024 + 12345)
    _store(edge, up, path, body, "lr1")
    _flip(entry_file(edge.cache_dir, path), 2_000_000)  # inside block 1
    for lo, hi in ((10, 1_000_000), (2 * 1024 * 1024, len(body) - 1)):  # blocks 0 and 2-3: intact
        r = edge.get(path, headers={"Range": f"bytes={lo}-{hi}"})
        assert r.status_code == 206 and r.content == body[lo:hi + 1], (lo, r.status_code)
        assert status_of(r).startswith("mediaedge; hit"), status_of(r)
    assert up.hits[path] == 1
    try:
        r = edge.get(path, headers={"Range": "bytes=1999990-2000009"})
        served = r.content if r.status_code == 206 else None
    except requests.RequestException:
        served = None
    assert served is None, "a window over damaged bytes was served"
    wait_until(lambda: "damaged on disk (block 1)" in edge.log(), 10, 0.1, "the damage to be logged")
    r = edge.get(path, headers={"Range": "bytes=1999990-2000009"})
    assert r.status_code == 206 and r.content == body[1999990:2000010]
    assert up.hits[path] == 2


# ----------------------------------------------------------------------------- disk faults
def _mount_tmpfs(directory: str, size: str) -> bool:
    os.makedirs(directory, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", directory],
                       capture_output=True, timeout=10)
    return r.returncode == 0


def _umount(directory: str) -> None:
    subprocess.run(["umount", "-l", directory], capture_output=True, timeout=10)


def _fetch_all(edge: Edge, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    with requests.get(edge.url + path, stream=True, timeout=60, headers=headers or {}) as r:
        h = hashlib.sha256()
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
        return r.status_code, h.hexdigest(), status_of(r)


def _degrade_checks(edge: Edge, up: Upstream, sizes: dict[str, int]) -> list[str]:
    """Request every object twice; returns what went wrong (an empty list is a pass)."""
    problems = []
    for path, size in sizes.items():
        up.routes[path] = Route(size=size, headers={"X-Media-Revision": "x"})
    for round_ in range(2):
        for path, size in sizes.items():
            try:
                status, digest, cs = _fetch_all(edge, path)
            except requests.RequestException as e:
                problems.append(f"{path} ({size} B), round {round_}: broken response: {type(e).__name__}")
                continue
            if status != 200 or digest != synthetic_sha(size):
                problems.append(f"{path} ({size} B), round {round_}: status {status}, {cs}")
    return problems


@pytest.mark.full
def test_full_cache_disk_degrades_to_pass_through(tmp_path):
    cache = str(tmp_path / "cache")
    if not _mount_tmpfs(cache, "3m"):
        pytest.skip("cannot mount a tmpfs here (needs root); see the RLIMIT_FSIZE test")
    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url, cache_dir=cache, args=["--cache-size", "1GiB"]).start()
    try:
        problems = _degrade_checks(edge, up, {"/media/full/small.jpg": 40_000, "/media/full/big.bin": 5 << 20})
        # fill the rest of the disk: even small writes fail now
        filler = os.path.join(cache, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        problems += _degrade_checks(edge, up, {"/media/full/after1.jpg": 50_000, "/media/full/after2.bin": 1 << 20,
                                               "/media/full/tiny.jpg": 2_000})
        assert not problems, problems
        assert "No space left on device" in edge.log()
        assert edge.stats()["disk_errors"] >= 1
    finally:
        edge.stop()
        up.close()
        _umount(cache)


@pytest.mark.full
def test_node_stops_cleanly_with_a_full_cache_disk(tmp_path):
    cache = str(tmp_path / "cache")
    if not _mount_tmpfs(cache, "3m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url, cache_dir=cache).start()
    try:
        assert not _degrade_checks(edge, up, {"/media/full/a.jpg": 20_000})
        try:  # fill the disk to the last byte (it may be full already)
            with open(os.path.join(cache, "filler"), "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        except OSError:
            pass
        assert not _degrade_checks(edge, up, {"/media/full/b.jpg": 2_000})
    finally:
        rc = edge.stop()
        up.close()
        _umount(cache)
    assert rc == 0, f"exit status {rc}"
    assert "Traceback" not in edge.log()


def test_file_size_limit_degrades_to_pass_through(tmp_path):
    """Unprivileged stand-in for a full disk: RLIMIT_FSIZE = 1 MiB on the node, so writing a
    temp file past 1 MiB fails (EFBIG) exactly where ENOSPC would."""
    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url)
    edge.cmd = ["prlimit", f"--fsize={1 << 20}", *edge.cmd] if shutil.which("prlimit") else [
        sys.executable, "-c",
        "import os,resource,sys; resource.setrlimit(resource.RLIMIT_FSIZE,(1<<20,1<<20)); "
        "os.execv(sys.executable, [sys.executable] + sys.argv[1:])", *edge.cmd[1:]]
    edge.start()
    try:
        problems = _degrade_checks(edge, up, {"/media/fsize/small.jpg": 40_000, "/media/fsize/big.bin": 3 << 20})
        assert not problems, problems
        assert "File too large" in edge.log()
        assert edge.stats()["disk_errors"] >= 1
    finally:
        edge.stop()
        up.close()


def _chattr(flag: str, path: str) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, path], capture_output=True, timeout=10).returncode == 0


def test_read_only_cache_tmp_dir_degrades_to_pass_through(tmp_path):
    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url).start()
    tmp_dir = os.path.join(edge.cache_dir, "tmp")
    if not _chattr("+i", tmp_dir):
        edge.stop()
        up.close()
        pytest.skip("chattr +i not supported here")
    try:
        problems = _degrade_checks(edge, up, {"/media/ro/small.jpg": 30_000, "/media/ro/big.bin": 2 << 20})
        assert not problems, problems
        assert "WARNING" in edge.log() and "Operation not permitted" in edge.log()
        assert edge.stats()["disk_errors"] >= 1
    finally:
        _chattr("-i", tmp_dir)
        edge.stop()
        up.close()


def _churn(edge: Edge, up: Upstream, sizes: dict[str, int], seconds: float, clients: int = 8,
           min_fetches: int = 0) -> tuple[list[str], list[dict[str, int]]]:
    """`clients` threads cycle through `sizes` for `seconds`, and on (up to 4x as long) until
    the upstream served `min_fetches` (a loaded machine is slower; the test needs the churn,
    not the duration); returns (wrong answers, disk samples).
    A sample splits the cache directory into entries (diskcache's files and cache.db),
    sqlite's WAL/SHM files, state/ and tmp/ (in-flight fills)."""
    expected = {p: synthetic_sha(n, i) for i, (p, n) in enumerate(sizes.items())}
    for i, (p, n) in enumerate(sizes.items()):
        up.routes[p] = Route(size=n, seed=i, headers={"X-Media-Revision": f"c{i}"})
    stop = threading.Event()
    wrong: list[str] = []
    samples: list[dict[str, int]] = []

    def client(k: int) -> None:
        paths = list(sizes)
        j = k
        while not stop.is_set():
            p = paths[(j * 37) % len(paths)]
            j += 1
            try:
                r = requests.get(edge.url + p, timeout=30)
            except requests.RequestException as e:
                wrong.append(f"{p}: {e}")
                continue
            if r.status_code != 200 or sha(r.content) != expected[p]:
                wrong.append(f"{p}: {r.status_code} {len(r.content)}")

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    started = time.monotonic()
    deadline, last = started + seconds, started + 4 * seconds
    try:
        while time.monotonic() < deadline or (up.hits.total() < min_fetches and time.monotonic() < last):
            samples.append(disk_use(edge.cache_dir))
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return wrong, samples


def disk_use(cache_dir: str) -> dict[str, int]:
    use = {"entries": 0, "wal": 0, "state": 0, "tmp": 0}
    for root, _dirs, files in os.walk(cache_dir):
        rel = os.path.relpath(root, cache_dir)
        for name in files:
            try:
                n = os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
            if rel.split(os.sep)[0] in ("state", "tmp"):
                use[rel.split(os.sep)[0]] += n
            elif name.endswith(("-wal", "-shm")):
                use["wal"] += n
            else:
                use["entries"] += n
    return use


CHURN_LIMIT = 4 << 20
CHURN_MAX_OBJ = 400 << 10
CHURN_SIZES = {f"/media/churn/{i}.bin": 40_000 + (i * 7919) % (CHURN_MAX_OBJ - 40_000) for i in range(120)}


@pytest.mark.full
def test_eviction_keeps_entries_within_cache_size_under_churn(tmp_path):
    """8 clients churn through 120 objects (40 KiB to 400 KiB, ~26 MB) with --cache-size 4MiB
    for 20 s. Sampled every 0.1 s: stored entries (diskcache's files and cache.db) stay within
    the bound plus one object (an entry is culled right after the store that overflowed it),
    the node's own accounting never exceeds it, and every answer has the right bytes."""
    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url, args=["--cache-size", "4MiB", "--max-object-size", "512KiB"]).start()
    try:
        wrong, samples = _churn(edge, up, CHURN_SIZES, 20, min_fetches=201)
        assert not wrong, wrong[:5]
        assert up.hits.total() > 200, "the churn should have evicted and refetched"
        peak = max(s["entries"] for s in samples)
        assert peak <= CHURN_LIMIT + CHURN_MAX_OBJ + (64 << 10), f"entries peaked at {peak} B"
        assert edge.stats()["cache_bytes"] <= CHURN_LIMIT
    finally:
        edge.stop()
        up.close()


@pytest.mark.full
def test_whole_cache_directory_stays_within_cache_size_under_churn(tmp_path):
    """The contract calls --cache-size a "bound on the cache's disk use": everything in the
    cache directory except in-flight temp files, including sqlite's WAL and the state cache."""
    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url, args=["--cache-size", "4MiB", "--max-object-size", "512KiB"]).start()
    try:
        wrong, samples = _churn(edge, up, CHURN_SIZES, 15)
        assert not wrong, wrong[:5]
        peak = max(s["entries"] + s["wal"] + s["state"] for s in samples)
        worst = max(samples, key=lambda s: s["entries"] + s["wal"] + s["state"])
        assert peak <= CHURN_LIMIT + CHURN_MAX_OBJ + (64 << 10), f"cache directory peaked at {peak} B: {worst}"
    finally:
        edge.stop()
        up.close()
