"""The sql profile end to end: docs/origins.md's three worked routes through a real `mediaedge serve`,
on SQLite (quick tier), PostgreSQL and MariaDB (full tier); hostile targets; start-up refusals."""
from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import quote_plus

import pytest

from tests.edge import REPO, Edge, sha
from tests.sqlfixtures import DJANGO_ROUTE, PLAIN_ROUTE, SITECORE_ROUTE, Tables, route_for

PHOTO = os.urandom(300_001)  # base64 text of ~400 KB: several windows on every database
DOC = os.urandom(70_000)
BLOB_ID = "7f0c1a52-9b3e-4d1f-8a6c-2e5b9d4c3a10"
PREFIXES = ["--media-prefix", "/files/", "--media-prefix", "/-/media/", "--media-prefix", "/media/"]


def _config(tmp_path, dialect: str, routes: str) -> str:
    path = tmp_path / "edge.toml"
    path.write_text(route_for(dialect, routes))
    return str(path)


@pytest.fixture
def tables(origin_url):
    t = Tables(origin_url)
    yield t
    t.close()


@pytest.fixture
def edge(tmp_path, tables):
    config = _config(tmp_path, tables.dialect, DJANGO_ROUTE + SITECORE_ROUTE + PLAIN_ROUTE)
    e = Edge(str(tmp_path), origin_db=tables.url,
             args=["--origin-profile", "sql", "--config", config, *PREFIXES]).start()
    yield e
    e.stop()


def test_worked_routes_serve_exact_bytes(tables, edge):
    name = tables.django("holiday photo.jpg", PHOTO, "image/jpeg", wrap=76)
    tables.sitecore(BLOB_ID, [DOC[:30_000], DOC[30_000:60_000], DOC[60_000:]])
    tables.plain("img/logo.png", PHOTO[:1000], "rev-7")
    revision = "sha256:" + sha(PHOTO)[:16]
    for form in ("get", "download"):
        r = edge.get(f"/files/{form}/?name={quote_plus(name)}")
        assert r.status_code == 200 and sha(r.content) == sha(PHOTO)
        assert r.headers["Content-Type"] == "image/jpeg"
        r2 = edge.get(f"/files/{form}/?name={quote_plus(name)}")
        assert sha(r2.content) == sha(PHOTO) and "hit" in r2.headers["Cache-Status"]
        assert r2.headers["X-Media-Revision"] == revision and r2.headers["Content-Length"] == str(len(PHOTO))

    r = edge.get(f"/-/media/{BLOB_ID}.pdf")
    assert r.status_code == 200 and sha(r.content) == sha(DOC)
    assert r.headers["Content-Type"] == "application/pdf"
    assert r.headers["Last-Modified"] == "Fri, 05 Jan 2024 12:30:00 GMT"
    assert r.headers["X-Media-Revision"] == "sha256:" + sha(DOC)[:16]  # small: hashed before the head

    r = edge.get("/media/img/logo.png")
    assert r.status_code == 200 and r.content == PHOTO[:1000]
    assert r.headers["Content-Type"] == "image/png" and r.headers["X-Media-Revision"] == "rev-7"
    assert r.headers["ETag"] == '"rev-7"'

    assert edge.get("/media/img/missing.png").status_code == 404
    assert edge.get(f"/-/media/{BLOB_ID[:-1]}f.pdf").status_code == 404


@pytest.mark.parametrize("target", [
    "/media/x'", "/media/x';--", "/media/x%27%20OR%201=1", "/media/x%27%20OR%20%27a%27=%27a",
    "/media/x%22;DROP%20TABLE%20media;--", "/media/%25", "/media/x%5C%27--",
    "/files/get/?name=x%27%20OR%201=1--", "/files/get/?name=%27+UNION+SELECT+1,2,3--",
    "/files/download/?name=%27%3B+DELETE+FROM+console_consolepicture%3B--",
    "/files/get/?name=a%00b", "/-/media/00000000-0000-0000-0000-00000000000%27.pdf",
])
def test_injection_targets_are_inert(tables, edge, target):
    tables.plain("x", b"the only row")
    name = tables.django("y.jpg", b"jpeg bytes", "image/jpeg")
    r = edge.get(target)
    assert r.status_code in (400, 404), (r.status_code, r.text)
    assert edge.get("/media/x").content == b"the only row"
    assert edge.get(f"/files/get/?name={quote_plus(name)}").content == b"jpeg bytes"


def _serve_fails(tmp_path, db_url: str, config_text: str) -> str:
    config = tmp_path / "bad.toml"
    config.write_text(config_text)
    p = subprocess.run([sys.executable, "-m", "mediaedge", "serve", "--listen", "127.0.0.1:0", "--admin-listen",
                        "127.0.0.1:0", "--cache-dir", str(tmp_path / "c"), "--origin-db", db_url,
                        "--origin-profile", "sql", "--config", str(config)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("route, expected", [
    (PLAIN_ROUTE.replace("FROM media", "FROM no_such_table"), ["sql_route #2", "no_such_table"]),
    (PLAIN_ROUTE.replace("rev FROM", "nope FROM").replace('"rev"', '"nope"'), ["sql_route #2", "nope"]),
    (PLAIN_ROUTE.replace("WHERE path", "WHERE WHERE path"), ["sql_route #2"]),
    (PLAIN_ROUTE.replace("(?P<path>", "(?P<path"), ["sql_route #2", "match does not compile"]),
    (PLAIN_ROUTE.replace(":path", ":path; DELETE FROM media"), ["sql_route #2", "only one statement"]),
    (PLAIN_ROUTE.replace(":path", ":path FOR UPDATE"), ["sql_route #2", "FOR UPDATE"]),
])
def test_serve_and_check_refuse_a_route_that_does_not_compile(tmp_path, tables, route, expected):
    config_text = route_for(tables.dialect, SITECORE_ROUTE + route)
    line = _serve_fails(tmp_path, tables.url, config_text)
    assert all(part in line for part in expected), line
    # `mediaedge check`: the same problem on one line naming the route (a config error on
    # stderr, a query the database refuses as that route's line on stdout), exit non-zero
    p = subprocess.run([sys.executable, "-m", "mediaedge", "check", "--cache-dir", str(tmp_path / "c"),
                        "--cache-size", "64MiB", "--origin-db", tables.url, "--origin-profile", "sql",
                        "--config", str(tmp_path / "bad.toml")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "Traceback" not in p.stderr, (p.stdout, p.stderr)
    named = [ln for ln in (p.stdout + p.stderr).splitlines() if "sql_route #2" in ln]
    assert len(named) == 1 and all(part in named[0] for part in expected), (p.stdout, p.stderr)
    assert not named[0].endswith(": ok")


# --- a 200 MB row from SQLite through the edge: memory bounded (full tier) -------------------------

BIG_ROUTES = """
[[sql_route]]
match = '^/media/raw/(?P<name>[^?]+)$'
query = "SELECT name, data FROM big WHERE name = :name"
body = "data"
verify = "name"

[[sql_route]]
match = '^/media/b64/(?P<name>[^?]+)$'
query = "SELECT name, bytes, mimetype FROM big64 WHERE name = :name"
body = "bytes"
encoding = "base64"
content_type = "mimetype"
verify = "name"
"""


def _big_sqlite(path, size: int) -> None:
    """A raw BLOB row and a base64 TEXT row (as Django's TextField) of `size` decoded bytes,
    written through blob handles so this process never holds them either."""
    import base64
    import sqlite3

    from tests.edge import synthetic_chunk

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE big (name TEXT PRIMARY KEY, data BLOB)")
    conn.execute("CREATE TABLE big64 (name TEXT PRIMARY KEY, bytes TEXT NOT NULL, mimetype TEXT)")
    raw = conn.execute("INSERT INTO big VALUES ('film.mp4', zeroblob(?))", (size,)).lastrowid
    text = conn.execute("INSERT INTO big64 VALUES ('film.mp4', CAST(zeroblob(?) AS TEXT), 'video/mp4')",
                        ((size + 2) // 3 * 4,)).lastrowid
    step = 3 << 20  # a multiple of 3: base64 pieces concatenate
    with conn.blobopen("big", "data", raw) as b, conn.blobopen("big64", "bytes", text) as t:
        for pos in range(0, size, step):
            chunk = synthetic_chunk(pos, min(step, size - pos))
            b.write(chunk)
            t.write(base64.b64encode(chunk))
    conn.commit()
    conn.close()


@pytest.mark.full
def test_a_200_mb_sqlite_row_streams_through_the_edge_in_bounded_memory(tmp_path):
    import hashlib
    import time

    import requests

    from tests.edge import synthetic_sha

    size = 200_000_000
    db = tmp_path / "cms.db"
    _big_sqlite(str(db), size)
    config = tmp_path / "big.toml"
    config.write_text(BIG_ROUTES)
    expected = synthetic_sha(size)
    edge = Edge(str(tmp_path), origin_db=f"sqlite:///{db}",
                args=["--origin-profile", "sql", "--config", str(config)]).start()
    try:
        assert edge.get("/media/raw/none.mp4").status_code == 404  # routes planned, pool warm
        for kind in ("raw", "b64"):
            before = edge.rss_kib()
            digest, n, t0 = hashlib.sha256(), 0, time.monotonic()
            with requests.get(f"{edge.url}/media/{kind}/film.mp4", stream=True, timeout=300) as r:
                assert r.status_code == 200, r.text
                for chunk in r.iter_content(1 << 20):
                    digest.update(chunk)
                    n += len(chunk)
            took = time.monotonic() - t0
            growth = (edge.peak_rss_kib() - before) / 1024
            print(f"\nSQLite {kind} 200 MB through the edge: {n / 1e6 / took:.1f} MB/s, peak RSS +{growth:.0f} MiB")
            assert n == size and digest.hexdigest() == expected, kind
            assert growth < 100, (kind, growth)
    finally:
        edge.stop()


# --- the CMS table locked by another session ----------------------------------------------------


class TableLock:
    """Another client holding an exclusive lock on a table until `release()`: PostgreSQL
    ACCESS EXCLUSIVE in an open transaction, MariaDB LOCK TABLES ... WRITE, SQLite BEGIN
    EXCLUSIVE with an uncommitted write."""

    def __init__(self, tables: Tables, table: str) -> None:
        self.dialect = tables.dialect
        if self.dialect == "sqlite":
            import sqlite3

            self.conn = sqlite3.connect(tables.url.removeprefix("sqlite:///"), isolation_level=None)
            self.conn.execute("BEGIN EXCLUSIVE")
            self.conn.execute(f"UPDATE {table} SET rev = 'uncommitted'")
            return
        from mediaedge.dbapi import Database

        self.conn = Database(tables.url).connect()
        cur = self.conn.cursor()
        if self.dialect == "postgresql":
            cur.execute("BEGIN")
            cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        else:
            cur.execute(f"LOCK TABLES {table} WRITE")

    def release(self) -> None:
        if self.dialect == "mysql":
            self.conn.cursor().execute("UNLOCK TABLES")
        self.conn.rollback()
        self.conn.close()


def test_a_locked_cms_table_gives_stale_or_503_within_the_db_timeout_and_hits_go_on(tmp_path, tables):
    """While another client holds the route's table locked, a miss waits at most --db-timeout
    (then the stale entry within grace, or a 503), hits are served as before, and once the
    lock is released the next request is answered from the table. SQLite databases are
    opened in WAL mode, where readers never wait for a writer: nothing waits at all."""
    import time

    from tests.edge import wait_until

    for name in ("old.jpg", "hit.jpg", "new.jpg"):
        tables.plain(name, name.encode() * 100, "r1")
    config = _config(tmp_path, tables.dialect, PLAIN_ROUTE)
    e = Edge(str(tmp_path), origin_db=tables.url,
             args=["--origin-profile", "sql", "--config", config, "--db-timeout", "1", "--default-ttl", "4"]).start()
    lock = None
    try:
        stored = time.time()
        assert e.get("/media/old.jpg").status_code == 200
        wait_until(lambda: time.time() > stored + 4.3, timeout=8, what="old.jpg to expire")
        assert e.get("/media/hit.jpg").status_code == 200  # fresh for 4 s
        lock = TableLock(tables, "media")
        timings = {}
        for name in ("hit.jpg", "old.jpg", "new.jpg", "hit.jpg"):
            t0 = time.monotonic()
            r = e.get(f"/media/{name}")
            took = timings[name] = time.monotonic() - t0
            status = r.headers.get("Cache-Status", "")
            print(f"\n{tables.dialect}, table locked, --db-timeout 1: {name} {r.status_code} {status!r} {took:.2f} s")
            if name == "hit.jpg":
                assert r.status_code == 200 and "hit" in status and took < 0.5, (status, took)
            elif tables.dialect == "sqlite":
                assert r.status_code == 200 and r.content == name.encode() * 100 and took < 0.9, (status, took)
            elif name == "old.jpg":
                assert r.status_code == 200 and r.content == name.encode() * 100, (r.status_code, status)
                assert status.startswith("mediaedge; hit; ttl=-"), status
                assert 0.9 <= took < 1.9, took
            else:
                assert r.status_code == 503 and b"--db-timeout (1 s)" in r.content, (r.status_code, r.content)
                assert 0.9 <= took < 1.9, took
        lock.release()
        lock = None
        r = e.get("/media/new.jpg")
        assert r.status_code == 200 and r.content == b"new.jpg" * 100
    finally:
        if lock is not None:
            lock.release()
        e.stop()


# --- the Django route against a real django-db-file-storage site -----------------------------------


def test_the_django_route_serves_what_a_real_django_db_file_storage_site_serves(tmp_path, origin_url):
    """docs/origins.md's Django route, checked against the package itself: a tiny Django site
    (tests/djangosite) saves a file through a FileField on DatabaseFileStorage; the URL the
    storage gives (download/) and its get/ twin, served by the edge from the same table, are
    the bytes and type the package's own views answer."""
    import json

    from mediaedge.dbapi import Database

    data = os.urandom(300_001)
    upload = tmp_path / "photo.bin"
    upload.write_bytes(data)
    p = subprocess.run([sys.executable, "-m", "tests.djangosite", origin_url, str(upload), "Ferienfoto März.jpg",
                        "image/jpeg"], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    site = json.loads(p.stdout.splitlines()[-1])
    assert site["url"].startswith("/files/download/?name=console.ConsolePicture%2Fbytes%2F"), site["url"]
    assert site["get"]["sha256"] == site["download"]["sha256"] == sha(data)
    config = _config(tmp_path, Database(origin_url).dialect, DJANGO_ROUTE)
    e = Edge(str(tmp_path), origin_db=origin_url,
             args=["--origin-profile", "sql", "--config", config, *PREFIXES]).start()
    try:
        for url in (site["url"], site["url"].replace("/files/download/", "/files/get/")):
            r = e.get(url)
            assert r.status_code == 200, (url, r.status_code, r.text[:200])
            assert sha(r.content) == site["get"]["sha256"]
            assert r.headers["Content-Type"] == site["get"]["content_type"]
    finally:
        e.stop()
