"""proxy/origins/db.py against real SQLite, PostgreSQL and MariaDB (origin_url runs each test on all three)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, UTC

import pytest

import dbservers
from conftest import require
from mediaedge.errors import OriginError, RowChanged
from mediaedge.dbapi import Database
from mediaedge.origins.contenttype import guess_content_type
from mediaedge.origins.db import (
    DatabaseOrigin,
    DbObject,
    magento_revision,
    relative_media_path,
    split_magento_path,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store(origin: DatabaseOrigin, path: str, data: bytes, **kw) -> None:
    kw.setdefault("content_type", guess_content_type(path))
    origin.put(path, io.BytesIO(data), size=len(data), sha256=sha(data), revision=sha(data)[:16], **kw)


def read_all(origin: DatabaseOrigin, obj: DbObject, *args, **kw) -> bytes:
    return b"".join(origin.read(obj, *args, **kw))


def run_sql(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on its own connection, committed (test set-up and tampering)."""
    db = Database(url)
    conn = db.connect()
    try:
        cur = conn.cursor()
        if db.dialect == "mysql":
            cur.execute("SET time_zone = '+00:00'")  # TIMESTAMP literals below are UTC
        cur.execute(db.sql(statement), params)
        rows = list(cur.fetchall()) if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


@pytest.fixture
def origin(origin_url):
    o = DatabaseOrigin(origin_url)
    yield o
    o.close()


# --- pure helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/media/a.jpg", "a.jpg"),
        ("/media/catalog/product/a/b.jpg", "catalog/product/a/b.jpg"),
        ("/pub/media/x.png", "x.png"),  # the longest prefix wins
        ("/static/a.jpg", None),  # outside every prefix
        ("/media/", None),
        ("/media/a//b.jpg", None),  # empty segment
        ("/media/a/../b.jpg", None),
        ("/media/./b.jpg", None),
        ("/media/a/", None),  # a directory
        ("/media/a\0.jpg", None),
    ],
)
def test_relative_media_path(path, expected):
    assert relative_media_path(path, ("/media/", "/pub/media/")) == expected


@pytest.mark.parametrize(
    "rel, expected",
    [
        ("catalog/product/a/b/c.jpg", ("catalog/product/a/b", "c.jpg")),
        ("c.jpg", ("", "c.jpg")),  # Magento stores NULL for a top-level file
        ("wysiwyg/Ünï.png", ("wysiwyg", "Ünï.png")),
    ],
)
def test_split_magento_path(rel, expected):
    assert split_magento_path(rel) == expected


def test_magento_revision_is_utc_stamp_id_and_size():
    t = datetime(2024, 1, 5, 12, 30, 0, tzinfo=UTC).timestamp()
    assert magento_revision(t, 42, 5120) == "20240105123000-42-5120"
    assert magento_revision(None, 7, 0) == "0-7-0"


# --- native profile on all three databases -----------------------------------------------


def test_put_lookup_read_exact_bytes(origin):
    data = os.urandom(5 << 20) + b"tail"  # crosses PostgreSQL's 4 MiB window and the 1 MiB chunk
    store(origin, "/media/catalog/a.jpg", data, tags="product-1 catalog", updated_at=1700000000.5)
    obj = origin.lookup("/media/catalog/a.jpg")
    assert obj is not None
    assert (obj.path, obj.size, obj.sha256, obj.revision) == ("/media/catalog/a.jpg", len(data), sha(data), sha(data)[:16])
    assert obj.content_type == "image/jpeg"
    assert obj.tags == ("product-1", "catalog")
    assert obj.updated_at == pytest.approx(1700000000.5)
    assert origin.meta("/media/catalog/a.jpg") == obj
    pieces = list(origin.read(obj))
    assert max(len(p) for p in pieces) <= 1 << 20
    assert sha(b"".join(pieces)) == sha(data)


def test_replace_and_empty_content(origin):
    store(origin, "/media/a.txt", b"first")
    store(origin, "/media/a.txt", b"")
    obj = origin.lookup("/media/a.txt")
    assert (obj.size, obj.revision, obj.tags) == (0, sha(b"")[:16], ())
    assert list(origin.read(obj)) == []


def test_paths_are_case_sensitive_and_distinct(origin):
    store(origin, "/media/Foo.jpg", b"upper")
    store(origin, "/media/foo.jpg", b"lower")
    assert read_all(origin, origin.lookup("/media/Foo.jpg")) == b"upper"
    assert read_all(origin, origin.lookup("/media/foo.jpg")) == b"lower"
    assert origin.lookup("/media/FOO.jpg") is None
    assert origin.lookup("/media/foo.JPG") is None


@pytest.mark.parametrize(
    "path",
    ["/media/ünïcödé/日本語 ファイル.jpg", "/media/emoji/😀.png", "/media/space name+plus%25.gif"],
)
def test_utf8_names(origin, path):
    store(origin, path, path.encode())
    obj = origin.lookup(path)
    assert obj.path == path
    assert read_all(origin, obj) == path.encode()


def test_missing_and_unservable_paths_are_none(origin):
    store(origin, "/media/a.jpg", b"x")
    assert origin.lookup("/media/b.jpg") is None
    assert origin.lookup("/other/a.jpg") is None  # outside the media prefix
    assert origin.lookup("/media/x/../a.jpg") is None
    assert origin.lookup("/media/" + "a" * 2000) is None  # longer than any storable path
    assert origin.lookup("/media/\udcff.jpg") is None  # undecodable name


RANGES = [(0, 1), (5, 100), (1000, 1000), ((3 << 20) - 7, 3 << 20), (1 << 20, (1 << 20) + 1), (0, 3 << 20)]


def test_ranges(origin):
    data = os.urandom(3 << 20)
    store(origin, "/media/r.bin", data)
    obj = origin.lookup("/media/r.bin")
    for start, end in RANGES:
        assert read_all(origin, obj, start, end) == data[start:end], (start, end)
    assert read_all(origin, obj, 10) == data[10:]
    pieces = list(origin.read(obj, 3, 200_003, chunk_size=4096))
    assert b"".join(pieces) == data[3:200_003] and max(map(len, pieces)) <= 4096
    for bad in [(-1, 5), (10, 5), (0, len(data) + 1)]:
        with pytest.raises(ValueError):
            origin.read(obj, *bad)


def test_sha_mismatch_is_detected_and_last_piece_withheld(origin, origin_url):
    data = os.urandom(300_000)
    store(origin, "/media/s.bin", data)
    run_sql(origin_url, "UPDATE media_files SET sha256 = ? WHERE revision = ?", ("0" * 64, sha(data)[:16]))
    obj = origin.lookup("/media/s.bin")
    got = []
    with pytest.raises(OriginError, match="sha256"):
        for piece in origin.read(obj, chunk_size=65536):
            got.append(piece)
    assert 0 < len(b"".join(got)) < len(data)  # never a complete body
    assert read_all(origin, obj, 0, 1000) == data[:1000]  # ranges are not hashed


def test_size_column_disagreeing_with_content_is_an_error(origin, origin_url):
    store(origin, "/media/z.bin", b"0123456789")
    run_sql(origin_url, "UPDATE media_files SET size = 12 WHERE revision = ?", (sha(b"0123456789")[:16],))
    with pytest.raises(OriginError):
        read_all(origin, origin.lookup("/media/z.bin"))
    run_sql(origin_url, "UPDATE media_files SET size = 8 WHERE revision = ?", (sha(b"0123456789")[:16],))
    with pytest.raises(OriginError):
        read_all(origin, origin.lookup("/media/z.bin"))


def test_row_replaced_between_lookup_and_read(origin):
    store(origin, "/media/c.jpg", b"old")
    obj = origin.lookup("/media/c.jpg")
    store(origin, "/media/c.jpg", b"new!")
    with pytest.raises(RowChanged) as e:
        read_all(origin, obj)
    assert e.value.status_hint == 503
    assert read_all(origin, origin.lookup("/media/c.jpg")) == b"new!"


def test_row_deleted_between_lookup_and_read(origin, origin_url):
    store(origin, "/media/d.jpg", b"doomed")
    obj = origin.lookup("/media/d.jpg")
    run_sql(origin_url, "DELETE FROM media_files WHERE revision = ?", (sha(b"doomed")[:16],))
    with pytest.raises(RowChanged):
        read_all(origin, obj)
    assert origin.lookup("/media/d.jpg") is None


def test_row_replaced_mid_read_never_mixes_bytes(origin, origin_url):
    old, new = os.urandom(6 << 20), os.urandom(6 << 20)
    store(origin, "/media/m.bin", old)
    obj = origin.lookup("/media/m.bin")
    it = origin.read(obj, chunk_size=64 << 10)
    got = [next(it)]
    with DatabaseOrigin(origin_url) as writer:  # another connection, as another node would
        store(writer, "/media/m.bin", new)
    try:
        got.extend(it)
    except OriginError:
        return  # refusing is allowed; mixing is not
    assert sha(b"".join(got)) == sha(old)  # the snapshot the read began with
    assert read_all(origin, origin.lookup("/media/m.bin")) == new


def test_abandoned_read_releases_its_connection(origin):
    store(origin, "/media/big.bin", os.urandom(3 << 20))
    obj = origin.lookup("/media/big.bin")
    for _ in range(20):  # more than the pool keeps idle
        it = origin.read(obj, chunk_size=4096)
        next(it)
        it.close()
    assert len(read_all(origin, obj)) == 3 << 20


def test_threads_share_one_origin(origin):
    blobs = {f"/media/t/{i}.bin": os.urandom(200_000 + i) for i in range(8)}
    for path, data in blobs.items():
        store(origin, path, data)

    def work(i: int) -> bool:
        path = f"/media/t/{i % 8}.bin"
        obj = origin.lookup(path)
        return read_all(origin, obj, chunk_size=16384) == blobs[path]

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(64)))


def test_read_resumed_on_other_threads(origin):
    """asyncio.to_thread(next, it) may run each step on a different worker thread."""
    data = os.urandom(1 << 20)
    store(origin, "/media/hop.bin", data)
    it = origin.read(origin.lookup("/media/hop.bin"), chunk_size=50_000)
    got = []
    with ThreadPoolExecutor(4) as pool:
        while (piece := pool.submit(next, it, None).result()) is not None:
            got.append(piece)
    assert b"".join(got) == data


def test_create_false_requires_the_table(origin_url):
    with pytest.raises(OriginError, match="media_files"):
        DatabaseOrigin(origin_url, create=False)
    DatabaseOrigin(origin_url).close()  # creates it
    DatabaseOrigin(origin_url, create=False).close()


def test_unknown_profile_is_one_line():
    with pytest.raises(OriginError, match="unknown origin profile 'magento3'") as e:
        DatabaseOrigin("sqlite:///unused.db", "magento3")
    assert "\n" not in str(e.value)


def test_unopenable_sqlite_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OriginError) as e:
        DatabaseOrigin(f"sqlite:///{blocker}/sub/origin.db")
    assert "\n" not in str(e.value) and e.value.status_hint == 503


# --- server databases: unreachable, dying, restarting -------------------------------------


@pytest.mark.full
@pytest.mark.postgres
@pytest.mark.mariadb
@pytest.mark.parametrize("url", ["postgresql://u:secret@127.0.0.1:{port}/db", "mysql://u:secret@127.0.0.1:{port}/db"])
def test_unreachable_server_is_one_line(url):
    t0 = time.monotonic()
    with pytest.raises(OriginError) as e:
        DatabaseOrigin(url.format(port=dbservers.free_port()), connect_timeout=2)
    message = str(e.value)
    assert "\n" not in message and "secret" not in message and "127.0.0.1" in message
    assert time.monotonic() - t0 < 5


def _own_server(kind: str):
    cls = dbservers.PostgresServer if kind == "postgres" else dbservers.MariaDbServer
    try:
        return cls().start()
    except dbservers.ServerUnavailable as e:
        require(str(e))


SERVER_KINDS = [
    pytest.param("postgres", marks=[pytest.mark.full, pytest.mark.postgres]),
    pytest.param("mariadb", marks=[pytest.mark.full, pytest.mark.mariadb]),
]


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_database_going_down_is_a_one_line_503(kind):
    server = _own_server(kind)
    try:
        origin = DatabaseOrigin(server.url(), connect_timeout=2)
        store(origin, "/media/a.jpg", b"alive")
        obj = origin.lookup("/media/a.jpg")
        it = origin.read(obj)
        server.proc.kill()
        server.proc.wait()
        for call in (lambda: origin.lookup("/media/a.jpg"), lambda: list(it), lambda: read_all(origin, obj)):
            with pytest.raises(OriginError) as e:
                call()
            assert "\n" not in str(e.value) and e.value.status_hint == 503
        origin.close()
    finally:
        server.stop()


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_broken_pooled_connections_are_replaced(kind, request):
    server = request.getfixturevalue("pg_server" if kind == "postgres" else "mariadb_server")
    url = server.create_database()
    with DatabaseOrigin(url) as origin:
        store(origin, "/media/a.jpg", b"x")
        assert origin.lookup("/media/a.jpg") is not None  # leaves a connection in the pool
        database = url.rsplit("/", 1)[1]
        if kind == "postgres":
            run_sql(server.url(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ?", (database,))
        else:
            for (cid,) in run_sql(server.url(), "SELECT id FROM information_schema.processlist WHERE db = ?", (database,)):
                run_sql(server.url(), f"KILL {int(cid)}")
        assert read_all(origin, origin.lookup("/media/a.jpg")) == b"x"


# --- Magento profiles ---------------------------------------------------------------------------

# Magento's own DDL, trimmed to the columns we read; utf8_general_ci as shipped.
MAGENTO_MARIADB = {
    "magento2": (
        "CREATE TABLE media_storage_file_storage ("
        " file_id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, content MEDIUMBLOB NOT NULL,"
        " upload_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, filename VARCHAR(100) NOT NULL,"
        " directory_id INT UNSIGNED NULL, directory VARCHAR(255) NULL,"
        " UNIQUE KEY MEDIA_STORAGE_FILE_STORAGE_FILENAME_DIRECTORY_ID (filename, directory_id),"
        " KEY (directory_id)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8 COLLATE=utf8_general_ci"
    ),
    "magento1": (
        "CREATE TABLE core_file_storage ("
        " file_id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, content LONGBLOB NOT NULL,"
        " upload_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, filename VARCHAR(255) NOT NULL,"
        " directory_id INT UNSIGNED NULL, directory VARCHAR(255) NULL,"
        " UNIQUE KEY IDX_CORE_FILE_STORAGE_FILENAME (filename, directory_id), KEY (directory_id)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8 COLLATE=utf8_general_ci"
    ),
}
# SQLite stand-in for the quick tier: NOCASE mimics the case-insensitive matching.
MAGENTO_SQLITE = (
    "CREATE TABLE {table} (file_id INTEGER PRIMARY KEY, content BLOB NOT NULL,"
    " upload_time TEXT NOT NULL, filename TEXT NOT NULL COLLATE NOCASE, directory_id INTEGER,"
    " directory TEXT COLLATE NOCASE, UNIQUE (filename, directory_id))"
)
TABLES = {"magento2": "media_storage_file_storage", "magento1": "core_file_storage"}

# (file_id, directory, directory_id, filename, content, upload_time)
MAGENTO_ROWS = [
    (1, "catalog/product/f/o", 1, "Foo.jpg", b"upper Foo", "2024-01-05 12:30:00"),
    (2, "catalog/product/F/O", 2, "foo.jpg", b"lower foo in upper dir", "2024-01-05 12:31:00"),
    (3, "catalog/product/f/o", 1, "bar.jpg", b"bar", "2024-01-05 12:32:00"),
    (4, None, None, "top.png", b"top level", "2024-02-01 00:00:00"),
    (5, "wysiwyg", 3, "Ünï 日本.svg", b"<svg/>", "2024-02-02 00:00:00"),
]


@pytest.fixture(params=[
    "sqlite",
    pytest.param("mariadb", marks=[pytest.mark.full, pytest.mark.mariadb]),
])
def magento_url(request, tmp_path):
    """(url, profile) of a database holding MAGENTO_ROWS in both Magento tables."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'magento.db'}"
        for table in TABLES.values():
            run_sql(url, MAGENTO_SQLITE.format(table=table))
    else:
        url = request.getfixturevalue("mariadb_server").create_database()
        for ddl in MAGENTO_MARIADB.values():
            run_sql(url, ddl)
    for table in TABLES.values():
        for row in MAGENTO_ROWS:
            run_sql(url, f"INSERT INTO {table} (file_id, directory, directory_id, filename, content, upload_time)"
                         " VALUES (?, ?, ?, ?, ?, ?)", row)
    return url


@pytest.mark.parametrize("profile", ["magento2", "magento1"])
def test_magento_lookup_is_byte_exact(magento_url, profile):
    with DatabaseOrigin(magento_url, profile, media_prefixes=("/media/", "/pub/media/")) as origin:
        for _file_id, directory, _, filename, content, _ in MAGENTO_ROWS:
            path = "/media/" + (f"{directory}/" if directory else "") + filename
            obj = origin.lookup(path)
            assert obj is not None, path
            assert read_all(origin, obj) == content
            assert (obj.content_type, obj.sha256, obj.tags, obj.size) == (None, None, (), len(content))
        # case-insensitive collation matches these in SQL; they must not be served
        for wrong in ["/media/catalog/product/f/o/foo.jpg", "/media/catalog/product/F/O/Foo.jpg",
                      "/media/catalog/product/f/o/FOO.JPG", "/media/Top.png", "/media/catalog/product/f/o/bar.jpg ",
                      "/media/wysiwyg/ünï 日本.svg", "/media/catalog/product/f/o/missing.jpg", "/media/😀.png"]:
            assert origin.lookup(wrong) is None, wrong
        assert read_all(origin, origin.lookup("/pub/media/top.png")) == b"top level"


def test_magento_revision_and_time(magento_url):
    with DatabaseOrigin(magento_url, "magento2") as origin:
        obj = origin.lookup("/media/catalog/product/f/o/Foo.jpg")
        stamp = datetime(2024, 1, 5, 12, 30, tzinfo=UTC).timestamp()
        assert obj.updated_at == stamp
        assert obj.revision == "20240105123000-1-9"
        assert read_all(origin, obj, 6, 9) == b"Foo"


def test_magento_reupload_changes_revision_and_stops_old_reads(magento_url):
    with DatabaseOrigin(magento_url, "magento2") as origin:
        old = origin.lookup("/media/top.png")
        run_sql(magento_url, "UPDATE media_storage_file_storage SET content = ?, upload_time = ? WHERE file_id = 4",
                (b"new top", "2024-03-01 00:00:00"))
        new = origin.lookup("/media/top.png")
        assert new.revision != old.revision
        with pytest.raises(RowChanged):
            read_all(origin, old)
        assert read_all(origin, new) == b"new top"


def test_magento_is_read_only_and_never_created(magento_url, tmp_path):
    with DatabaseOrigin(magento_url, "magento2") as origin:
        with pytest.raises(OriginError, match="read-only"):
            store(origin, "/media/x.jpg", b"x")
    with pytest.raises(OriginError, match="media_storage_file_storage"):
        DatabaseOrigin(f"sqlite:///{tmp_path / 'empty.db'}", "magento2")
    assert not run_sql(f"sqlite:///{tmp_path / 'empty.db'}", "SELECT name FROM sqlite_master")


@pytest.mark.full
@pytest.mark.mariadb
@pytest.mark.parametrize("magento_url", ["mariadb"], indirect=True)
def test_mariadb_magento_collation_really_collides(magento_url):
    """The premise (checked here): utf8_general_ci makes 'foo.jpg' a duplicate of 'Foo.jpg' in one directory."""
    import pymysql

    with pytest.raises(pymysql.err.IntegrityError):
        run_sql(magento_url, "INSERT INTO media_storage_file_storage (directory, directory_id, filename, content)"
                             " VALUES ('catalog/product/f/o', 1, 'foo.jpg', 'x')")
    rows = run_sql(magento_url, "SELECT file_id FROM media_storage_file_storage WHERE filename = 'FOO.JPG'")
    assert sorted(r[0] for r in rows) == [1, 2]


# --- large blobs: streamed, bounded memory ---------------------------------------------------------

LARGE = 500 * 1000 * 1000

# Run in a fresh interpreter so the parent's buffers do not count: baseline RSS
# after connecting and looking up, peak (VmHWM, reset first) after reading.
READER = textwrap.dedent("""
    import hashlib, json, sys, time
    sys.path.insert(0, sys.argv[1])
    from mediaedge.origins.db import DatabaseOrigin

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    origin = DatabaseOrigin(sys.argv[2])
    obj = origin.lookup(sys.argv[3])
    baseline = status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    digest, n, t0 = hashlib.sha256(), 0, time.perf_counter()
    for piece in origin.read(obj):
        digest.update(piece)
        n += len(piece)
    seconds = time.perf_counter() - t0
    print(json.dumps({"bytes": n, "seconds": seconds, "sha256": digest.hexdigest(),
                      "baseline": baseline, "peak": status("VmHWM")}))
""")


@pytest.mark.full
def test_large_blob_streams_with_bounded_memory(origin_url, tmp_path, capsys):
    blob = tmp_path / "large.bin"
    digest = hashlib.sha256()
    with open(blob, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(LARGE // (1 << 20) + 1):
            piece = (block[i % 97:] + block[: i % 97])[: min(1 << 20, LARGE - i * (1 << 20))]
            digest.update(piece)
            f.write(piece)
    expected = digest.hexdigest()
    with DatabaseOrigin(origin_url) as origin, open(blob, "rb") as f:
        t0 = time.perf_counter()
        origin.put("/media/large.bin", f, size=LARGE, sha256=expected, revision=expected[:16], content_type=None)
        put_seconds = time.perf_counter() - t0
    blob.unlink()
    out = subprocess.run([sys.executable, "-c", READER, REPO, origin_url, "/media/large.bin"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    growth = (r["peak"] - r["baseline"]) / (1 << 20)
    with capsys.disabled():
        print(f"\n[large blob] {origin_url.split(':')[0]}: read {LARGE / r['seconds'] / 1e6:.0f} MB/s, "
              f"peak RSS +{growth:.1f} MiB (baseline {r['baseline'] / (1 << 20):.0f} MiB); "
              f"put {LARGE / put_seconds / 1e6:.0f} MB/s")
    assert (r["bytes"], r["sha256"]) == (LARGE, expected)
    assert growth < 100


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_failing_statement_on_a_pooled_connection_is_not_retried(kind, request):
    """A pooled connection that is alive but whose statement fails (here: the table is
    gone) is not reopened and the statement not run again: only a gone connection is.
    The driver used to be asked after the connection was closed, so every error on a
    pooled connection looked like a disconnect and cost a second connection and query."""
    server = request.getfixturevalue("pg_server" if kind == "postgres" else "mariadb_server")
    url = server.create_database()
    with DatabaseOrigin(url) as origin:
        store(origin, "/media/a.jpg", b"x")
        assert origin.lookup("/media/a.jpg") is not None  # leaves a connection in the pool
        run_sql(url, "DROP TABLE media_files")
        opened = []
        real_connect = origin._db.connect
        origin._db.connect = lambda setup=None: opened.append(1) or real_connect(setup)
        with pytest.raises(OriginError) as e:
            origin.lookup("/media/a.jpg")
        assert "\n" not in str(e.value)
        assert opened == []  # the error surfaced from the pooled connection, no second try
