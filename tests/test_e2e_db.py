"""The database origin end to end: fallback rules, headers, negative caching, dead origins, paths."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import sqlite3
import threading
import time

import pytest
import requests

from mediaedge.dbapi import Database
from mediaedge.origins.db import DatabaseOrigin
from tests.edge import Edge, Route, Upstream, free_port, sha, wait_until

PNG = os.urandom(12_345)


def put(db_url: str, path: str, body: bytes, revision: str, content_type: str | None = None,
        tags: str | None = None, updated_at: float | None = 1_700_000_000.0) -> None:
    o = DatabaseOrigin(db_url)
    try:
        o.put(path, io.BytesIO(body), size=len(body), sha256=sha(body), revision=revision,
              content_type=content_type, tags=tags, updated_at=updated_at)
    finally:
        o.close()


def _fill(url: str) -> str:
    put(url, "/media/logo.png", PNG, "rev1")
    put(url, "/media/docs/Manual.PDF", b"%PDF-1.7 manual", "m1", content_type=None)
    put(url, "/media/caf\u00e9/cr\u00e8me br\u00fbl\u00e9e.jpg", b"utf8 name", "u1")
    put(url, "/media/Case.jpg", b"upper", "c1")
    put(url, "/media/case.jpg", b"lower", "c2")
    return url


@pytest.fixture
def db_url(origin_url):
    """The same origin tests on SQLite, PostgreSQL and MariaDB (the latter two in the full tier)."""
    return _fill(origin_url)


@pytest.fixture
def sqlite_url(tmp_path):
    return _fill(f"sqlite:///{tmp_path}/origin.db")


def status(r: requests.Response) -> str:
    return r.headers.get("Cache-Status", "")


def test_database_alone_serves_media_with_headers(tmp_path, db_url):
    e = Edge(str(tmp_path), origin_db=db_url).start()
    try:
        r = e.get("/media/logo.png")
        assert r.status_code == 200 and sha(r.content) == sha(PNG)
        assert status(r) == "mediaedge; fwd=miss; fwd-status=200; stored; detail=db"
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["Content-Length"] == str(len(PNG))
        assert r.headers["ETag"] == '"rev1"'
        assert r.headers["X-Media-Revision"] == "rev1"
        assert r.headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
        r = e.get("/media/logo.png")
        assert status(r).startswith("mediaedge; hit; ttl=") and r.content == PNG
        ttl = int(status(r).split("ttl=")[1])
        assert 86000 < ttl <= 86400  # --default-ttl: the database says nothing about freshness
        r = e.get("/media/logo.png", headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == PNG[10:20]
        assert e.get("/media/docs/Manual.PDF").headers["Content-Type"] == "application/pdf"
        r = e.get("/media/caf%C3%A9/cr%C3%A8me%20br%C3%BBl%C3%A9e.jpg")
        assert r.status_code == 200 and r.content == b"utf8 name"
        # byte-exact, case-sensitive
        assert e.get("/media/Case.jpg").content == b"upper"
        assert e.get("/media/case.jpg").content == b"lower"
        assert e.get("/media/CASE.jpg").status_code == 404
        assert e.stats()["origin_fetches"]["db"] >= 5
    finally:
        e.stop()


def test_range_on_a_database_miss_stores_the_whole_object(tmp_path, db_url):
    e = Edge(str(tmp_path), origin_db=db_url).start()
    try:
        r = e.get("/media/logo.png", headers={"Range": "bytes=-100"})
        assert r.status_code == 206 and r.content == PNG[-100:]
        r = e.get("/media/logo.png")
        assert status(r).startswith("mediaedge; hit") and r.content == PNG
    finally:
        e.stop()


def test_absent_is_negative_cached_for_negative_ttl(tmp_path, db_url):
    e = Edge(str(tmp_path), origin_db=db_url, args=["--negative-ttl", "1"]).start()
    try:
        r = e.get("/media/nope.jpg")
        assert r.status_code == 404 and "fwd=miss" in status(r)
        r = e.get("/media/nope.jpg")
        assert r.status_code == 404 and status(r).startswith("mediaedge; hit")
        assert e.stats()["origin_fetches"]["db"] == 1
        put(db_url, "/media/nope.jpg", b"now it exists", "n1")
        wait_until(lambda: e.get("/media/nope.jpg").status_code == 200, 5, 0.1, "negative entry to expire")
    finally:
        e.stop()


@pytest.mark.parametrize("route", [Route(status=404, body=b"app 404"), Route(status=410, body=b"gone"),
                                   Route(status=500, body=b"boom"), Route(status=503, body=b"busy")],
                         ids=["404", "410", "500", "503"])
def test_upstream_miss_falls_back_to_database(tmp_path, db_url, route):
    up = Upstream()
    up.routes["/media/logo.png"] = route
    e = Edge(str(tmp_path), upstream=up.url, origin_db=db_url).start()
    try:
        r = e.get("/media/logo.png")
        assert r.status_code == 200 and r.content == PNG and "detail=db" in status(r)
        assert status(e.get("/media/logo.png")).startswith("mediaedge; hit")
        assert up.hits["/media/logo.png"] == 1
    finally:
        e.stop()
        up.close()


def test_refused_upstream_falls_back_fast(tmp_path, db_url):
    """A refused connection falls back at once, not after --upstream-timeout: measured
    against that timeout (half of it), not an absolute a loaded machine can overrun."""
    dead = f"http://127.0.0.1:{free_port()}"
    timeout = 10.0
    e = Edge(str(tmp_path), upstream=dead, origin_db=db_url, args=["--upstream-timeout", str(timeout)]).start()
    try:
        t0 = time.perf_counter()
        r = e.get("/media/logo.png")
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200 and r.content == PNG and "detail=db" in status(r)
        assert elapsed < timeout / 2, elapsed
        assert e.stats()["origin_fetches"]["upstream"] == 1
    finally:
        e.stop()


def test_upstream_timeout_falls_back(tmp_path, db_url):
    up = Upstream()
    up.routes["/media/logo.png"] = Route(body=b"late", delay=3)
    e = Edge(str(tmp_path), upstream=up.url, origin_db=db_url, args=["--upstream-timeout", "0.5"]).start()
    try:
        t0 = time.perf_counter()
        r = e.get("/media/logo.png")
        assert r.content == PNG and "detail=db" in status(r)
        assert time.perf_counter() - t0 < 2.0
    finally:
        e.stop()
        up.close()


def _break_sqlite(path: str) -> None:
    """Overwrite the database in place: every connection, open or new, now fails."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            size = os.path.getsize(path + suffix)
            with open(path + suffix, "r+b") as f:
                f.write(b"\xff" * max(size, 100))


def test_both_origins_down(tmp_path, sqlite_url):
    db_url = sqlite_url
    db_path = db_url[len("sqlite:///"):]
    e = Edge(str(tmp_path), origin_db=db_url, args=["--state-db", f"sqlite:///{tmp_path}/state.db",
                                                     "--default-ttl", "1", "--grace", "3600"]).start()
    try:
        assert e.get("/media/logo.png").status_code == 200
        _break_sqlite(db_path)
        # expired but within grace: served stale
        r = wait_until(lambda: (lambda r: r if "ttl=-" in status(r) else None)(e.get("/media/logo.png")), 5, 0.2)
        assert r.status_code == 200 and r.content == PNG
        # never cached: the database is the only origin → 503, one plain-text line
        r = e.get("/media/never-seen.jpg")
        assert r.status_code == 503
        assert r.headers["Content-Type"].startswith("text/plain")
        assert r.text.count("\n") == 1 and "Traceback" not in r.text
    finally:
        e.stop()


def test_both_origins_down_with_upstream_is_502(tmp_path, sqlite_url):
    db_url = sqlite_url
    dead = f"http://127.0.0.1:{free_port()}"
    e = Edge(str(tmp_path), upstream=dead, origin_db=db_url,
             args=["--state-db", f"sqlite:///{tmp_path}/state.db"]).start()
    try:
        _break_sqlite(db_url[len("sqlite:///"):])
        r = e.get("/media/x.jpg")
        assert r.status_code == 502 and r.text.count("\n") == 1
        assert "upstream" in r.text and "database" in r.text
    finally:
        e.stop()


@pytest.mark.full
@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pytest.mark.postgres),
                                  pytest.param("mariadb", marks=pytest.mark.mariadb)])
def test_a_slow_database_query_does_not_delay_hits(tmp_path, request, kind):
    server = request.getfixturevalue("pg_server" if kind == "postgres" else "mariadb_server")
    db_url = _fill(server.create_database())
    e = Edge(str(tmp_path), origin_db=db_url).start()
    try:
        e.get("/media/logo.png")  # now a hit
        lock = Database(db_url).connect()
        cur = lock.cursor()
        # every read of media_files now waits on this lock
        cur.execute("LOCK TABLE media_files IN ACCESS EXCLUSIVE MODE" if kind == "postgres" else "LOCK TABLES media_files WRITE")
        slow: dict = {}

        def miss() -> None:
            t0 = time.perf_counter()
            slow["status"] = e.get("/media/docs/Manual.PDF", timeout=60).status_code
            slow["took"] = time.perf_counter() - t0

        t = threading.Thread(target=miss)
        t.start()
        time.sleep(0.3)  # let the miss reach the database (not an assertion)
        t0 = time.perf_counter()
        for _ in range(20):
            r = e.get("/media/logo.png")
            assert r.content == PNG
        hits_took = time.perf_counter() - t0
        assert "took" not in slow  # the query is still blocked
        if kind == "mariadb":
            cur.execute("UNLOCK TABLES")
        lock.rollback()
        lock.close()
        t.join(60)
        assert slow["status"] == 200
        assert hits_took < 1.0, hits_took  # 20 hits served while the query waited
    finally:
        e.stop()


@pytest.mark.parametrize("raw,code", [
    ("/media/../origin.db", 400), ("/media/%2e%2e/origin.db", 400), ("/media/a%2fb.jpg", 400),
    ("/media/a%00.jpg", 400), ("/media/" + "x" * 5000, 414),
])
def test_paths_outside_the_prefix_never_reach_a_row(tmp_path, sqlite_url, raw, code):
    db_url = sqlite_url
    put(db_url, "/origin.db", b"secret row outside the prefix", "s")
    e = Edge(str(tmp_path), origin_db=db_url).start()
    try:
        with socket.create_connection(("127.0.0.1", e.port), timeout=5) as s:
            s.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.split(b" ", 2)[1] == str(code).encode()
        assert b"secret row" not in data
    finally:
        e.stop()


def _magento_sqlite(path: str, table: str, rows: list[tuple[str, str, bytes]]) -> None:
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE {table} (file_id INTEGER PRIMARY KEY, content BLOB, upload_time TEXT, "
                "filename TEXT, directory_id INTEGER, directory TEXT)")
    for i, (directory, filename, content) in enumerate(rows, 1):
        con.execute(f"INSERT INTO {table} VALUES (?, ?, '2024-05-01 10:00:00', ?, ?, ?)",
                    (i, content, filename, i, directory))
    con.commit()
    con.close()


@pytest.mark.parametrize("profile,table", [("magento2", "media_storage_file_storage"),
                                           ("magento1", "core_file_storage")])
def test_magento_profiles(tmp_path, profile, table):
    path = str(tmp_path / "magento.db")
    _magento_sqlite(path, table, [("catalog/product/a/b", "shoe.jpg", b"shoe bytes"),
                                  ("catalog/product/a/b", "Shoe.JPG", b"other case")])
    state = f"sqlite:///{tmp_path}/state.db"
    e = Edge(str(tmp_path), origin_db=f"sqlite:///{path}",
             args=["--origin-profile", profile, "--state-db", state]).start()
    try:
        r = e.get("/media/catalog/product/a/b/shoe.jpg")
        assert r.status_code == 200 and r.content == b"shoe bytes"
        assert r.headers["Content-Type"] == "image/jpeg" and r.headers["X-Media-Revision"]
        assert e.get("/media/catalog/product/a/b/Shoe.JPG").content == b"other case"
        assert e.get("/media/catalog/product/a/b/SHOE.jpg").status_code == 404
    finally:
        e.stop()


@pytest.mark.full
def test_large_blob_from_database_streams_with_bounded_memory(tmp_path):
    size = 500 * 1024 * 1024
    url = f"sqlite:///{tmp_path}/big.db"
    block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    h = hashlib.sha256()
    for _ in range(size // len(block)):
        h.update(block)

    class Gen(io.RawIOBase):
        def __init__(self) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # type: ignore[override]
            n = min(len(b), self.left, len(block))
            b[:n] = block[:n]
            self.left -= n
            return n

    o = DatabaseOrigin(url)
    o.put("/media/film.mp4", io.BufferedReader(Gen()), size=size, sha256=h.hexdigest(), revision="f1",
          content_type="video/mp4")
    o.close()
    e = Edge(str(tmp_path), origin_db=url, args=["--cache-size", "2GiB", "--max-object-size", "1GiB"]).start()
    try:
        e.get("/media/none.jpg")
        base = e.peak_rss_kib()
        for expect in ("fwd=miss", "hit"):
            got = hashlib.sha256()
            n = 0
            t0 = time.perf_counter()
            with requests.get(e.url + "/media/film.mp4", stream=True, timeout=300) as r:
                assert expect in status(r)
                for chunk in r.iter_content(1 << 20):
                    got.update(chunk)
                    n += len(chunk)
            took = time.perf_counter() - t0
            assert n == size and got.hexdigest() == h.hexdigest()
            growth = e.peak_rss_kib() - base
            print(f"\n500 MiB from the database ({expect}): {size / took / 1e6:.0f} MB/s, peak RSS +{growth >> 10} MiB")
            assert growth < 100 * 1024
    finally:
        e.stop()
