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
def test_serve_refuses_a_route_that_does_not_compile(tmp_path, tables, route, expected):
    line = _serve_fails(tmp_path, tables.url, route_for(tables.dialect, SITECORE_ROUTE + route))
    assert all(part in line for part in expected), line
