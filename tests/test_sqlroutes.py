"""The sql profile (proxy/origins/sqlroutes.py): routes parsed once, queries bound never formatted,
bodies streamed in windows and decoded as they come, on SQLite (quick tier), PostgreSQL and MariaDB."""
from __future__ import annotations

import base64
import hashlib
import os
import tomllib

import pytest

from mediaedge.errors import ConfigError, OriginError
from mediaedge.config import load_settings
from mediaedge.origins.sqlroutes import (
    BlobColumn,
    SqlRouteOrigin,
    StreamDecoder,
    blob_column,
    first_route,
    parse_sql_routes,
    parse_statement,
    route_params,
)
from tests.sqlfixtures import DJANGO_ROUTE, PLAIN_ROUTE, SITECORE_ROUTE, Tables, route_for


def routes(text: str):
    return parse_sql_routes(tomllib.loads(text)["sql_route"])


# --- parse_statement: one read-only SELECT, parameters found outside literals ------------

@pytest.mark.parametrize("sql, qmark, pyformat, params", [
    ("SELECT a FROM t WHERE k = :k", "SELECT a FROM t WHERE k = ?", "SELECT a FROM t WHERE k = %s", ("k",)),
    ("select a from t where k = :k and j = :j;", "select a from t where k = ? and j = ?",
     "select a from t where k = %s and j = %s", ("k", "j")),
    # literals, quoted identifiers, comments and casts are not parameters
    ("SELECT ':no', \"a:b\", x::text FROM t WHERE k = :k -- :c\n", "SELECT ':no', \"a:b\", x::text FROM t WHERE k = ? -- :c",
     "SELECT ':no', \"a:b\", x::text FROM t WHERE k = %s -- :c", ("k",)),
    ("SELECT a FROM t WHERE k LIKE '5%' AND n = :n", "SELECT a FROM t WHERE k LIKE '5%' AND n = ?",
     "SELECT a FROM t WHERE k LIKE '5%%' AND n = %s", ("n",)),
    ("SELECT a FROM t WHERE note = 'it''s; fine' AND k = :k", "SELECT a FROM t WHERE note = 'it''s; fine' AND k = ?",
     "SELECT a FROM t WHERE note = 'it''s; fine' AND k = %s", ("k",)),
])
def test_statement_parameters(sql, qmark, pyformat, params):
    st = parse_statement(sql)
    assert (st.qmark, st.pyformat, st.params) == (qmark, pyformat, params)


@pytest.mark.parametrize("sql, problem", [
    ("SELECT a FROM t; DELETE FROM t", "only one statement"),
    ("SELECT a FROM t;;", "only one statement"),
    ("DELETE FROM t WHERE k = :k", "single SELECT"),
    ("UPDATE t SET a = 1", "single SELECT"),
    ("DROP TABLE t", "single SELECT"),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "DELETE is not allowed"),
    ("SELECT a INTO new_table FROM t", "INTO is not allowed"),
    ("SELECT a FROM t INTO OUTFILE '/tmp/x'", "INTO is not allowed"),
    ("SELECT a FROM t WHERE k = :k FOR UPDATE", "FOR UPDATE is not allowed"),
    ("SELECT a FROM t FOR SHARE", "FOR SHARE is not allowed"),
    ("SELECT a FROM t LOCK IN SHARE MODE", "LOCK IN SHARE MODE is not allowed"),
    ("SELECT a FROM t WHERE k = 'open", "unterminated"),
])
def test_statement_refusals(sql, problem):
    with pytest.raises(ValueError, match=problem):
        parse_statement(sql)


# --- routes: one-line errors naming the route -----------------------------------------------

@pytest.mark.parametrize("route, problem", [
    ({"query": "SELECT a FROM t", "body": "a"}, "sql_route #1: 'match' is required"),
    ({"match": "(", "query": "SELECT a FROM t", "body": "a"}, "sql_route #1: match does not compile"),
    ({"match": "^/(?P<k>.*)$", "query": "SELECT a FROM t WHERE k = :other", "body": "a"},
     "sql_route #1: query parameter :other is not a named group of match"),
    ({"match": "^/(?P<k>.*)$", "query": "SELECT a FROM t WHERE k = :k", "body": "a", "encoding": "rot13"},
     "sql_route #1: encoding must be raw, base64 or hex"),
    ({"match": "^/(?P<k>.*)$", "query": "SELECT a FROM t WHERE k = :k", "body": "a; DROP TABLE t"},
     "sql_route #1: body must be a plain column name"),
    ({"match": "^/(?P<k>.*)$", "query": "SELECT a FROM t WHERE k = :k", "body": "a", "verify": "name"},
     "sql_route #1: verify column 'name' needs a named group"),
    ({"match": "^/(?P<k>.*)$", "query": "SELECT a FROM t WHERE k = :k", "body": "a", "typo": "x"},
     "sql_route #1: unknown key 'typo'"),
    ({"match": "^/(?P<k>.*)$", "query": "SELECT a FROM t WHERE k = :k; DELETE FROM t", "body": "a"},
     "sql_route #1: only one statement"),
])
def test_route_errors(route, problem):
    with pytest.raises(ValueError) as e:
        parse_sql_routes([route])
    assert str(e.value).startswith(problem)
    assert "\n" not in str(e.value)


def test_second_route_is_named_and_config_error_is_one_line(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(PLAIN_ROUTE + '\n[[sql_route]]\nmatch = "^/x/(?P<k>.*)$"\nquery = "SELECT a FROM t INTO x"\nbody = "a"\n')
    with pytest.raises(ConfigError) as e:
        load_settings({"origin_profile": "sql"}, {}, config_path=str(path))
    assert str(e.value).startswith("--config: ") and "sql_route #2: " in str(e.value) and "INTO" in str(e.value)


def test_sql_profile_needs_a_route(tmp_path):
    with pytest.raises(ConfigError, match="^--origin-profile: sql needs at least one"):
        load_settings({"origin_profile": "sql"}, {}, config_path=None)


def test_settings_carry_parsed_routes(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text("cache-size = '64MiB'\n" + DJANGO_ROUTE + PLAIN_ROUTE)
    s = load_settings({"origin_profile": "sql"}, {}, config_path=str(path))
    assert [r.index for r in s.sql_routes] == [1, 2]
    assert s.sql_routes[0].encoding == "base64" and s.sql_routes[1].verify == "path"


# --- matching and decoding the target ---------------------------------------------------------

@pytest.mark.parametrize("target, expected", [
    ("/media/a%20b.jpg", {"path": "a b.jpg"}),
    ("/media/caf%C3%A9/x+y.jpg", {"path": "café/x+y.jpg"}),  # `+` is literal in the path
    ("/media/%27%3B--.jpg", {"path": "';--.jpg"}),
    ("/media/%FF.jpg", None),  # not UTF-8: no row can be named by it
    ("/media/a%00.jpg", None),  # nor by a NUL
])
def test_path_groups_are_percent_decoded(target, expected):
    (route,) = routes(PLAIN_ROUTE)
    assert route_params(route, target) == expected


def test_query_groups_decode_plus_as_space_and_first_route_wins():
    both = routes(DJANGO_ROUTE + PLAIN_ROUTE)
    route, params = first_route(both, "/files/get/?name=console.ConsolePicture%2Fbytes%2Ffilename%2Fmimetype%2Fmy+cat.jpg")
    assert route.index == 1 and params == {"filename": "console.ConsolePicture/bytes/filename/mimetype/my cat.jpg"}
    assert first_route(both, "/media/a.jpg")[0].index == 2
    assert first_route(both, "/other/a.jpg") is None


# --- StreamDecoder: any split of the text gives the same bytes --------------------------------

@pytest.mark.parametrize("encoding", ["base64", "hex"])
@pytest.mark.parametrize("piece", [1, 3, 5, 7, 4096])
def test_decoder_any_split(encoding, piece):
    data = os.urandom(5000)
    text = base64.encodebytes(data) if encoding == "base64" else data.hex().encode()  # MIME lines of 76
    d = StreamDecoder(encoding)
    out = b"".join(d.feed(text[i:i + piece]) for i in range(0, len(text), piece))
    d.finish()
    assert out == data


def test_decoder_refuses_garbage_and_truncation():
    with pytest.raises(ValueError, match="bad base64"):
        StreamDecoder("base64").feed(b"ab*d")
    d = StreamDecoder("hex")
    d.feed(b"abc")
    with pytest.raises(ValueError, match="mid-group"):
        d.finish()


# --- blob_column: where a SQLite route's body lives, for incremental blob I/O ------------------


@pytest.mark.parametrize("sql, body, expected", [
    ("SELECT filename, bytes, mimetype FROM console_consolepicture WHERE filename = ?", "bytes",
     ("main", "console_consolepicture", "bytes", "console_consolepicture", 33)),
    ('SELECT Data, Created FROM Blobs WHERE BlobId = ? ORDER BY "Index"', "data", ("main", "Blobs", "Data", "Blobs", 21)),
    ("SELECT m.data AS body FROM main.media AS m WHERE m.path = ?", "body", ("main", "media", "data", "m", 22)),
    ("SELECT * FROM media m WHERE path = ?", "data", ("main", "media", "data", "m", 9)),
    ("SELECT m.* FROM media m", "data", ("main", "media", "data", "m", 11)),
    ('SELECT "d" "x" FROM [my t] -- FROM u\n WHERE k = ?', "x", ("main", "my t", "d", "[my t]", 15)),
    ("SELECT x AS data, data AS y FROM t", "data", ("main", "t", "x", "t", 28)),
    ("SELECT data FROM t WHERE k IN (SELECT k FROM u GROUP BY k) LIMIT 1", "data", ("main", "t", "data", "t", 12)),
    ("SELECT ALL data, 1 FROM t ORDER BY 2", "data", ("main", "t", "data", "t", 19)),
    # anything else reads in substr() windows
    ("SELECT DISTINCT data FROM t", "data", None),
    ("SELECT a.data FROM t a JOIN u ON a.k = u.k", "data", None),
    ("SELECT data FROM t, u", "data", None),
    ("SELECT upper(data) AS data FROM t", "data", None),
    ("SELECT CAST(data AS BLOB) data FROM t", "data", None),
    ("SELECT data FROM t UNION ALL SELECT data FROM u", "data", None),
    ("SELECT data FROM t GROUP BY k", "data", None),
    ("WITH c AS (SELECT data FROM t) SELECT data FROM c", "data", None),
    ("SELECT data FROM (SELECT data FROM t)", "data", None),
    ("SELECT data FROM t INDEXED BY i", "data", None),
    ("SELECT u.data FROM t", "data", None),
    ("SELECT data, data FROM t", "data", None),
    ("SELECT other FROM t", "data", None),
])
def test_blob_column(sql, body, expected):
    assert blob_column(sql, body) == (BlobColumn(*expected) if expected else None)


# --- the origin against real databases ---------------------------------------------------------

@pytest.fixture
def tables(origin_url):
    t = Tables(origin_url)
    yield t
    t.close()


def _origin(tables: Tables, *texts: str, window: int | None = None) -> SqlRouteOrigin:
    o = SqlRouteOrigin(tables.url, routes("".join(route_for(tables.dialect, t) for t in texts)), timeout=5)
    if window:
        o._drv.window = window  # many small windows: every boundary case in a few bytes
    return o


def _read(o: SqlRouteOrigin, target: str) -> bytes | None:
    obj = o.lookup(target)
    return None if obj is None else b"".join(o.read(obj))


@pytest.mark.parametrize("window", [None, 5])
def test_three_layouts_stream_exact_bytes(tables, window):
    photo, doc = os.urandom(3001), os.urandom(10_000)
    name = tables.django("cat photo.jpg", photo, "image/jpeg", wrap=76)
    tables.sitecore("0b6d2a4e-54a1-4c8e-9a39-8f0e4a1f3a11", [doc[:4000], doc[4000:9000], doc[9000:]])
    tables.plain("img/a.png", b"\x89PNG" + photo, "r1")
    o = _origin(tables, DJANGO_ROUTE, SITECORE_ROUTE, PLAIN_ROUTE, window=window)
    try:
        from urllib.parse import quote_plus

        for form in ("get", "download"):
            obj = o.lookup(f"/files/{form}/?name={quote_plus(name)}")
            assert obj is not None and obj.content_type == "image/jpeg" and obj.revision is None
            assert hashlib.sha256(b"".join(o.read(obj))).digest() == hashlib.sha256(photo).digest()
        obj = o.lookup("/-/media/0b6d2a4e-54a1-4c8e-9a39-8f0e4a1f3a11.pdf")
        assert obj.size == len(doc) and obj.content_type == "application/pdf"
        assert obj.updated_at == 1704457800.0  # 2024-01-05 12:30:00, no zone: UTC
        assert b"".join(o.read(obj)) == doc
        obj = o.lookup("/media/img/a.png")
        assert (obj.revision, obj.content_type, obj.size) == ("r1", "image/png", len(photo) + 4)
        assert _read(o, "/media/img/a.png") == b"\x89PNG" + photo
        assert o.lookup("/media/img/missing.png") is None
        assert o.lookup("/elsewhere/a.png") is None
    finally:
        o.close()


@pytest.mark.parametrize("target", [
    "/media/x'", "/media/x';--", "/media/x%27%20OR%201=1", "/media/x%27%20OR%20%271%27=%271",
    "/media/x%22;%20DROP%20TABLE%20media;--", "/media/%25", "/media/x%5C%27",
    "/files/get/?name=x%27%20OR%201=1--", "/files/get/?name=%27+UNION+SELECT+1,2,3--",
])
def test_injection_is_inert(tables, target):
    tables.plain("x", b"secret")
    tables.django("y.jpg", b"y", "image/jpeg")
    o = _origin(tables, DJANGO_ROUTE, PLAIN_ROUTE)
    try:
        assert o.lookup(target) is None
        assert _read(o, "/media/x") == b"secret"  # the table is still there, unchanged
    finally:
        o.close()


def test_rows_changed_between_lookup_and_read(tables):
    from mediaedge.origins.db import RowChanged

    tables.plain("a.jpg", b"one", "r1")
    o = _origin(tables, PLAIN_ROUTE)
    try:
        obj = o.lookup("/media/a.jpg")
        tables.run("UPDATE media SET data = ?, rev = ? WHERE path = ?", (b"two!", "r2", "a.jpg"))
        with pytest.raises(RowChanged):
            b"".join(o.read(obj))
        assert _read(o, "/media/a.jpg") == b"two!"
    finally:
        o.close()


def test_check_names_missing_tables_and_columns(tables):
    bad = routes(PLAIN_ROUTE.replace("FROM media", "FROM no_such_table")
                 + PLAIN_ROUTE.replace("rev FROM", "nope FROM").replace('revision = "rev"', 'revision = "nope"')
                 + PLAIN_ROUTE)
    o = SqlRouteOrigin(tables.url, bad, timeout=5)
    try:
        results = o.check()
        assert [problem is None for _, problem in results] == [False, False, True]
        assert "no_such_table" in results[0][1] and "\n" not in results[0][1]
        assert "nope" in results[1][1]
    finally:
        o.close()


def test_sessions_are_read_only(tables):
    """A query that slipped past the checks still could not write: every session is read-only."""
    tables.plain("a", b"x")
    o = _origin(tables, PLAIN_ROUTE)
    try:
        conn, _ = o._get()
        with pytest.raises(OriginError, match="(?i)read.?only|readonly"):
            with o._translated():
                o._drv.execute(conn, "UPDATE media SET data = NULL", (), 5)
        o._pool.put(conn, False)
        assert _read(o, "/media/a") == b"x"
    finally:
        o.close()


@pytest.mark.full
@pytest.mark.mariadb
def test_verify_skips_case_folded_rows_on_mariadb(mariadb_server):
    tables = Tables(mariadb_server.create_database())
    try:
        tables.plain("Foo.jpg", b"upper")
        tables.plain("foo.jpg", b"lower")
        url = tables.url
        o = SqlRouteOrigin(url, routes(PLAIN_ROUTE), timeout=5)
        try:
            assert _read(o, "/media/foo.jpg") == b"lower"
            assert _read(o, "/media/Foo.jpg") == b"upper"
            assert o.lookup("/media/FOO.jpg") is None  # the collation matches both; neither is byte-exact
            unverified = routes(PLAIN_ROUTE.replace('verify = "path"\n', ""))
            o2 = SqlRouteOrigin(url, unverified, timeout=5)
            assert _read(o2, "/media/FOO.jpg") in (b"upperlower", b"lowerupper")  # what verify prevents
            o2.close()
        finally:
            o.close()
    finally:
        tables.close()


def test_statement_timeout_bounds_a_lookup(tables):
    """--db-timeout: a query running past it fails as the database failing."""
    slow = {
        "sqlite": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) "
                  "SELECT path, data FROM media WHERE path = :path AND (SELECT max(n) FROM c) > 0",
        "postgresql": "SELECT path, data FROM media WHERE path = :path AND pg_sleep(3) IS NOT NULL",
        "mysql": "SELECT path, data FROM media WHERE path = :path AND SLEEP(3) = 0",
    }[tables.dialect]
    tables.plain("a", b"x")
    route = parse_sql_routes([{"match": "^/media/(?P<path>.+)$", "query": slow, "body": "data"}])
    o = SqlRouteOrigin(tables.url, route, timeout=0.5)
    try:
        import time

        t0 = time.monotonic()
        with pytest.raises(OriginError):
            o.lookup("/media/a")
        assert time.monotonic() - t0 < 2.5
    finally:
        o.close()


def test_verify_after_the_body_is_refused_on_mysql_only(tables):
    """MariaDB's read checks `verify` as rows stream, so it must come first in the select list."""
    tables.plain("a", b"x")
    o = SqlRouteOrigin(tables.url, routes(PLAIN_ROUTE.replace("SELECT path, data, rev", "SELECT data, path, rev")),
                       timeout=5)
    try:
        ((_, problem),) = o.check()
        if tables.dialect == "mysql":
            assert problem is not None and "verify column must come before the body column" in problem
        else:
            assert problem is None and _read(o, "/media/a") == b"x"
    finally:
        o.close()


def test_verify_skips_case_folded_rows_on_sqlite_nocase(tmp_path):
    """The quick tier's case-folding collation: SQLite's NOCASE, as MariaDB's utf8_general_ci."""
    import sqlite3

    db = tmp_path / "ci.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE media (path TEXT COLLATE NOCASE, data BLOB, rev TEXT)")
    conn.executemany("INSERT INTO media VALUES (?, ?, NULL)", [("Foo.jpg", b"upper"), ("foo.jpg", b"lower")])
    conn.commit()
    conn.close()
    o = SqlRouteOrigin(f"sqlite:///{db}", routes(PLAIN_ROUTE.replace('revision = "rev"\n', "")), timeout=5)
    try:
        assert _read(o, "/media/foo.jpg") == b"lower" and _read(o, "/media/Foo.jpg") == b"upper"
        assert o.lookup("/media/FOO.jpg") is None
    finally:
        o.close()


def test_sqlite_reads_plain_columns_through_blob_handles_and_the_rest_in_windows(tmp_path):
    """Plain columns of one table: blob handles on the rowid (memory bounded, see the full-tier
    test); an expression as the body: substr() windows. Same bytes either way, raw TEXT included."""
    import sqlite3

    db = tmp_path / "cms.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE files (name TEXT PRIMARY KEY, data BLOB, note TEXT, b64 TEXT)")
    blob = os.urandom(5000)
    note = "né à Zürich ✓ " * 300  # raw text: its UTF-8 bytes, whatever the window boundaries
    conn.execute("INSERT INTO files VALUES ('a', ?, ?, ?)", (blob, note, base64.b64encode(blob).decode()))
    conn.execute("INSERT INTO files VALUES ('empty', NULL, '', '')")
    conn.commit()
    conn.close()
    plain = """
[[sql_route]]
match = '^/raw/(?P<name>.+)$'
query = "SELECT name, data FROM files WHERE name = :name"
body = "data"
verify = "name"
[[sql_route]]
match = '^/note/(?P<name>.+)$'
query = "SELECT f.note AS body FROM files f WHERE f.name = :name"
body = "body"
[[sql_route]]
match = '^/b64/(?P<name>.+)$'
query = "SELECT * FROM files WHERE name = :name"
body = "b64"
encoding = "base64"
"""
    windowed = (plain.replace("SELECT name, data FROM", "SELECT name, CAST(data AS BLOB) AS data FROM")
                .replace("SELECT f.note AS body", "SELECT f.note || '' AS body")
                .replace("SELECT * FROM", "SELECT DISTINCT * FROM"))
    for config, by_rowid in ((plain, True), (windowed, False)):
        o = SqlRouteOrigin(f"sqlite:///{db}", routes(config), timeout=5)
        o._drv.window = 7  # windows cut UTF-8 characters in two: bytes still exact
        try:
            for target, expected in (("/raw/a", blob), ("/note/a", note.encode()), ("/b64/a", blob),
                                     ("/raw/empty", b""), ("/note/empty", b""), ("/b64/empty", b"")):
                obj = o.lookup(target)
                assert b"".join(o.read(obj)) == expected, (target, by_rowid)
                parts = obj.locator[2]
                if expected:
                    assert [p.rowid is not None for p in parts] == [by_rowid], (target, parts)
                if obj.size is not None:
                    assert obj.size == len(expected)
        finally:
            o.close()


def test_a_sqlite_without_rowid_table_or_a_view_reads_in_windows(tmp_path):
    import sqlite3

    db = tmp_path / "cms.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE w (name TEXT PRIMARY KEY, data BLOB) WITHOUT ROWID")
    conn.execute("CREATE TABLE t (name TEXT PRIMARY KEY, data BLOB, rowid TEXT, _rowid_ TEXT, oid TEXT)")
    conn.execute("CREATE VIEW v AS SELECT name, data FROM w")
    for table in ("w", "t"):
        conn.execute(f"INSERT INTO {table} (name, data) VALUES ('a', x'0102030405')")
    conn.commit()
    conn.close()
    for table in ("w", "t", "v"):
        o = SqlRouteOrigin(f"sqlite:///{db}", parse_sql_routes([{
            "match": "^/(?P<name>.+)$", "query": f"SELECT data FROM {table} WHERE name = :name", "body": "data"}]),
            timeout=5)
        try:
            obj = o.lookup("/a")
            assert b"".join(o.read(obj)) == b"\x01\x02\x03\x04\x05"
            assert obj.locator[2][0].rowid is None, table
        finally:
            o.close()


def test_a_locked_sqlite_database_is_a_lookup_timeout(tmp_path):
    """A CMS's SQLite file in rollback-journal mode, held by BEGIN EXCLUSIVE in another
    connection: the lookup waits the busy timeout (= --db-timeout), not the lock's length."""
    import sqlite3
    import time

    from mediaedge.origins.db import LookupTimeout

    db = tmp_path / "cms.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE media (path TEXT PRIMARY KEY, data BLOB, rev TEXT)")
    conn.execute("INSERT INTO media VALUES ('a', x'61', 'r1')")
    conn.commit()
    conn.close()
    o = SqlRouteOrigin(f"sqlite:///{db}", routes(PLAIN_ROUTE), timeout=0.5)
    try:
        assert _read(o, "/media/a") == b"a"
        o._pool.close()  # the next connection opens while the file is locked
        o._pool = type(o._pool)(o._connect)
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("PRAGMA journal_mode=DELETE")
        lock.execute("BEGIN EXCLUSIVE")
        try:
            t0 = time.monotonic()
            with pytest.raises(LookupTimeout, match=r"--db-timeout \(0.5 s\)"):
                o.lookup("/media/a")
            assert time.monotonic() - t0 < 2.0
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert _read(o, "/media/a") == b"a"
    finally:
        o.close()


def test_a_long_read_is_not_cut_by_the_db_timeout(tables):
    """--db-timeout bounds lookups and lock waits; a found body streams as long as it takes
    (PostgreSQL converts a text value in one statement of the read: not bounded by it)."""
    import time

    data = os.urandom(20_000_000)
    name = tables.django("film.mp4", data, "video/mp4")
    o = _origin(tables, DJANGO_ROUTE)
    o.timeout = 0.3
    try:
        from urllib.parse import quote_plus

        obj = o.lookup(f"/files/get/?name={quote_plus(name)}")
        t0 = time.monotonic()
        digest = hashlib.sha256()
        for piece in o.read(obj):
            digest.update(piece)
        print(f"\n{tables.dialect}: 20 MB as base64 text read in {time.monotonic() - t0:.2f} s, --db-timeout 0.3")
        assert digest.digest() == hashlib.sha256(data).digest()
    finally:
        o.close()
