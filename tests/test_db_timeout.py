"""--db-timeout: a stuck database origin lookup counts as the database failing, on every dialect;
streaming a blob found by a lookup is never cut by it. Real edges, real databases."""
from __future__ import annotations

import hashlib
import io
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from mediaedge.errors import LookupTimeout
from mediaedge.dbapi import Database
from mediaedge.origins.db import DatabaseOrigin
from tests.edge import Edge, Route, Upstream, sha, status_of, wait_until

BODY = b"row bytes " * 100


def put(db_url: str, path: str, body: bytes, revision: str) -> None:
    with DatabaseOrigin(db_url) as o:
        o.put(path, io.BytesIO(body), size=len(body), sha256=sha(body), revision=revision,
              content_type="image/jpeg")


def timed_get(edge: Edge, path: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    r = edge.get(path, timeout=30)
    return r, time.monotonic() - started


def assert_one_line(r: requests.Response, status: int) -> None:
    assert r.status_code == status, (r.status_code, status_of(r), r.content[:200])
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.content.endswith(b"\n") and r.content.count(b"\n") == 1, r.content


def wait_past(t: float, what: str) -> None:
    wait_until(lambda: time.time() > t, timeout=max(1.0, t - time.time() + 2), interval=0.05, what=what)


# --- SQLite ---------------------------------------------------------------------------------------
#
# mediaedge opens SQLite origins in WAL mode, where readers never wait for writers:
# another connection's BEGIN EXCLUSIVE does not stall a lookup at all (first test).
# What can stall one is a statement that runs on and on (a view over a huge or
# recursive query, a table scan in a hand-made schema), and any lock wait (opening
# a connection to a database some other program holds in rollback-journal mode).
# The stuck lookup here is a Magento table that is a view whose query never ends
# once a switch in another table is set (for a table with rows: the query's
# condition is evaluated per row): the lookup must give up at --db-timeout.

_STUCK_VIEW = """
CREATE TABLE files (file_id INTEGER PRIMARY KEY, content BLOB, upload_time TEXT,
                    filename TEXT, directory_id INTEGER, directory TEXT);
INSERT INTO files VALUES (1, x'00', '2024-05-01 10:00:00', 'other.jpg', 1, 'elsewhere');
CREATE TABLE switch (stuck INTEGER NOT NULL);
INSERT INTO switch VALUES (0);
CREATE VIEW media_storage_file_storage AS
  SELECT * FROM files WHERE (SELECT stuck FROM switch) = 0
     OR (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000000)
         SELECT count(*) FROM n) < 0;
"""


def _stuck_origin(path: str) -> str:
    conn = sqlite3.connect(path)
    conn.executescript(_STUCK_VIEW)
    conn.close()
    return f"sqlite:///{path}"


def _set_stuck(path: str, stuck: bool) -> None:
    conn = sqlite3.connect(path, timeout=10)
    conn.execute("UPDATE switch SET stuck = ?", (int(stuck),))
    conn.commit()
    conn.close()


def test_a_stuck_sqlite_lookup_is_a_503_within_the_db_timeout(tmp_path):
    path = str(tmp_path / "magento.db")
    edge = Edge(str(tmp_path), origin_db=_stuck_origin(path),
                args=["--origin-profile", "magento2", "--db-timeout", "1",
                      "--state-db", f"sqlite:///{tmp_path / 'state.db'}"]).start()
    try:
        r, _ = timed_get(edge, "/media/a/x.jpg")
        assert r.status_code == 404  # the database answers "not found" while it is not stuck
        _set_stuck(path, True)
        r, took = timed_get(edge, "/media/a/y.jpg")
        print(f"\nSQLite, stuck lookup, --db-timeout 1: {r.status_code} after {took:.2f} s")
        assert_one_line(r, 503)
        assert b"--db-timeout (1 s)" in r.content, r.content
        assert 0.9 <= took < 2.5, took
        # the worker thread came back: once unstuck, the database answers again
        _set_stuck(path, False)
        r, took = timed_get(edge, "/media/a/z.jpg")
        assert r.status_code == 404 and took < 1.0
    finally:
        edge.stop()


def test_a_stuck_sqlite_lookup_serves_the_stale_entry_within_the_db_timeout(tmp_path):
    """The upstream fails (5xx) and the database is stuck: the expired entry is served
    stale (grace) once the lookup gives up, not after the lookup would have ended."""
    path = str(tmp_path / "magento.db")
    upstream = Upstream()
    upstream.routes["/media/s.jpg"] = Route(body=b"stale me", headers={"Cache-Control": "max-age=1",
                                                                        "X-Media-Revision": "s1"})
    edge = Edge(str(tmp_path), upstream=upstream.url, origin_db=_stuck_origin(path),
                args=["--origin-profile", "magento2", "--db-timeout", "1",
                      "--state-db", f"sqlite:///{tmp_path / 'state.db'}"]).start()
    try:
        stored = time.time()
        assert edge.get("/media/s.jpg").content == b"stale me"
        upstream.routes["/media/s.jpg"] = Route(status=500, body=b"app down")
        _set_stuck(path, True)
        wait_past(stored + 1.5, "the entry to expire")
        r, took = timed_get(edge, "/media/s.jpg")
        print(f"\nSQLite, stuck lookup behind an upstream 500: {r.status_code} {status_of(r)!r} after {took:.2f} s")
        assert r.status_code == 200 and r.content == b"stale me"
        assert status_of(r).startswith("mediaedge; hit; ttl=-"), status_of(r)
        assert 0.9 <= took < 2.5, took
    finally:
        _set_stuck(path, False)
        edge.stop()
        upstream.close()


def test_an_upstream_timeout_and_a_stuck_lookup_is_a_504(tmp_path):
    """Nothing stale: the status follows what the upstream did (it timed out: 504)."""
    path = str(tmp_path / "magento.db")
    upstream = Upstream()
    upstream.routes["/media/slow.jpg"] = Route(body=b"late", delay=5)
    edge = Edge(str(tmp_path), upstream=upstream.url, origin_db=_stuck_origin(path),
                args=["--origin-profile", "magento2", "--db-timeout", "1", "--upstream-timeout", "1",
                      "--state-db", f"sqlite:///{tmp_path / 'state.db'}"]).start()
    try:
        _set_stuck(path, True)
        r, took = timed_get(edge, "/media/slow.jpg")
        assert_one_line(r, 504)
        assert b"--db-timeout (1 s)" in r.content, r.content
        assert 1.8 <= took < 3.5, took
    finally:
        _set_stuck(path, False)
        edge.stop()
        upstream.close()


def test_begin_exclusive_in_another_process_does_not_stall_sqlite_lookups(tmp_path):
    """WAL: the lookup reads the last committed state while a writer holds its transaction."""
    db_url = f"sqlite:///{tmp_path / 'origin.db'}"
    put(db_url, "/media/w.jpg", BODY, "w1")
    edge = Edge(str(tmp_path), origin_db=db_url, args=["--db-timeout", "1"]).start()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE')\n"
         "c.execute(\"UPDATE media_files SET revision = 'uncommitted'\")\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n",
         str(tmp_path / "origin.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r, took = timed_get(edge, "/media/w.jpg")
        assert r.status_code == 200 and r.content == BODY and r.headers["X-Media-Revision"] == "w1"
        assert took < 1.0, took
    finally:
        holder.stdin.close()
        holder.wait(10)
        edge.stop()


def test_the_lookup_deadline_does_not_reach_the_blob_read(tmp_path):
    """The deadline of a lookup is over by the time its blob is read: the read is not cut."""
    db_url = f"sqlite:///{tmp_path / 'origin.db'}"
    big = hashlib.sha256(b"x").digest() * (1 << 15)  # 1 MiB
    put(db_url, "/media/big.bin", big, "b1")
    with DatabaseOrigin(db_url, lookup_timeout=0.05) as origin:
        obj = origin.lookup("/media/big.bin")
        time.sleep(0.1)  # past the lookup's deadline (setting the scene, not an assertion)
        assert b"".join(origin.read(obj, chunk_size=4096)) == big


def test_a_stuck_sqlite_lookup_raises_lookup_timeout(tmp_path):
    path = str(tmp_path / "magento.db")
    url = _stuck_origin(path)
    with DatabaseOrigin(url, "magento2", lookup_timeout=0.3) as origin:
        assert origin.lookup("/media/a/b.jpg") is None
        _set_stuck(path, True)
        started = time.monotonic()
        with pytest.raises(LookupTimeout) as info:
            origin.lookup("/media/a/b.jpg")
        # bounded by the timeout (a stuck query never ends); ten times it, not a tight absolute
        assert time.monotonic() - started < 0.3 * 10
        assert "--db-timeout (0.3 s)" in str(info.value) and "\n" not in str(info.value)


# --- PostgreSQL and MariaDB: a table locked by another session (full tier) -------------------------


@pytest.mark.full
@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pytest.mark.postgres),
                                  pytest.param("mariadb", marks=pytest.mark.mariadb)])
def test_a_locked_table_is_a_503_or_the_stale_entry_within_the_db_timeout(tmp_path, request, kind):
    server = request.getfixturevalue("pg_server" if kind == "postgres" else "mariadb_server")
    db_url = server.create_database()
    put(db_url, "/media/old.jpg", BODY, "o1")
    put(db_url, "/media/new.jpg", b"never fetched", "n1")
    edge = Edge(str(tmp_path), origin_db=db_url,
                args=["--db-timeout", "1", "--default-ttl", "1",
                      "--state-db", f"sqlite:///{tmp_path / 'state.db'}"]).start()
    lock = Database(db_url).connect()
    try:
        stored = time.time()
        assert edge.get("/media/old.jpg").content == BODY
        cur = lock.cursor()
        if kind == "postgres":
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE media_files IN ACCESS EXCLUSIVE MODE")
        else:
            cur.execute("LOCK TABLES media_files WRITE")
        wait_past(stored + 1.5, "the entry to expire")
        r, took_stale = timed_get(edge, "/media/old.jpg")  # revalidation reads the row: stuck
        assert r.status_code == 200 and r.content == BODY, (r.status_code, status_of(r))
        assert status_of(r).startswith("mediaedge; hit; ttl=-"), status_of(r)
        r, took_503 = timed_get(edge, "/media/new.jpg")
        assert_one_line(r, 503)
        assert b"--db-timeout (1 s)" in r.content, r.content
        print(f"\n{kind}, table locked, --db-timeout 1: stale entry after {took_stale:.2f} s,"
              f" 503 after {took_503:.2f} s")
        for took in (took_stale, took_503):
            assert 0.9 <= took < 2.5, took
    finally:
        if kind == "mariadb":
            lock.cursor().execute("UNLOCK TABLES")
        lock.rollback()
        lock.close()
    try:
        r = edge.get("/media/new.jpg")
        assert r.status_code == 200 and r.content == b"never fetched"
    finally:
        edge.stop()


# --- long blob streams are not cut ---------------------------------------------------------------------


@pytest.fixture
def big_origin(origin_url):
    """50 MB in one row (a MariaDB row must fit max_allowed_packet; 64 MiB by default)."""
    size = 50 * 1000 * 1000
    block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    data = (block * (size // len(block) + 1))[:size]
    put(origin_url, "/media/film.mp4", data, "f1")
    return origin_url, hashlib.sha256(data).hexdigest(), size


def test_a_50_mb_blob_streams_whole_with_a_1_s_db_timeout(tmp_path, big_origin):
    db_url, digest, size = big_origin
    edge = Edge(str(tmp_path), origin_db=db_url,
                args=["--db-timeout", "1", "--cache-size", "512MiB", "--max-object-size", "256MiB",
                      "--state-db", f"sqlite:///{tmp_path / 'state.db'}"]).start()
    try:
        got = hashlib.sha256()
        n = 0
        started = time.monotonic()
        with requests.get(edge.url + "/media/film.mp4", stream=True, timeout=120) as r:
            assert r.status_code == 200 and "detail=db" in status_of(r)
            for chunk in r.iter_content(1 << 20):
                got.update(chunk)
                n += len(chunk)
        took = time.monotonic() - started
        print(f"\n{db_url.split(':')[0]}: 50 MB from the database with --db-timeout 1 in {took:.2f} s")
        assert n == size and got.hexdigest() == digest
    finally:
        edge.stop()
