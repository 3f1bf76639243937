"""The sql profile measured: large bodies streamed from each database, and small misses.

    python -m bench.sqlorigin [--size-mb 200] [--databases sqlite,postgres,mariadb] [--misses 200]

For each database (real servers, started like the tests start them: tests/dbservers.py)
it stores one random row of SIZE MB in a binary column and the same bytes as base64 text
in another table, starts a real `mediaedge serve --origin-profile sql`, and streams each
through it once (a miss: the bytes come from the database), reporting MB/s of decoded
body and the edge's peak RSS (VmHWM) against its RSS before the request. Objects above
--max-object-size pass through unstored, so only the database read and the proxy are
measured. Then the miss latency of 10 KB rows: the same `media_files` rows served by the
native profile and by an sql route over that table, each request a distinct path.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import requests

from mediaedge.dbapi import Database, mysql_escape_bytes, mysql_send_query
from mediaedge.origins.db import DatabaseOrigin
from tests import dbservers
from tests.edge import Edge

ROUTES = """
[[sql_route]]
match = '^/media/raw/(?P<name>[^/?]+)$'
query = "SELECT name, data FROM big WHERE name = :name"
body = "data"
verify = "name"

[[sql_route]]
match = '^/media/b64/(?P<name>[^/?]+)$'
query = "SELECT name, data FROM big64 WHERE name = :name"
body = "data"
encoding = "base64"
verify = "name"

[[sql_route]]
match = '^(?P<path>/media/small/[^?]+)$'
query = "SELECT path, content, revision, content_type FROM media_files WHERE path = :path"
body = "content"
revision = "revision"
content_type = "content_type"
verify = "path"
"""

DDL = {
    "sqlite": ["CREATE TABLE big (name TEXT PRIMARY KEY, data BLOB)",
               "CREATE TABLE big64 (name TEXT PRIMARY KEY, data TEXT)"],
    "postgresql": ["CREATE TABLE big (name TEXT PRIMARY KEY, data BYTEA)",
                   "ALTER TABLE big ALTER COLUMN data SET STORAGE EXTERNAL",
                   "CREATE TABLE big64 (name TEXT PRIMARY KEY, data TEXT)",
                   "ALTER TABLE big64 ALTER COLUMN data SET STORAGE EXTERNAL"],
    "mysql": ["CREATE TABLE big (name VARCHAR(100) PRIMARY KEY, data LONGBLOB)",
              "CREATE TABLE big64 (name VARCHAR(100) PRIMARY KEY, data LONGTEXT CHARACTER SET ascii)"],
}


def populate(url: str, body: bytes) -> None:
    db = Database(url)
    conn = db.connect()
    try:
        cur = conn.cursor()
        for ddl in DDL[db.dialect]:
            cur.execute(ddl)
        text = base64.b64encode(body)
        if db.dialect == "mysql":
            # One statement streamed to the server: PyMySQL would build the whole literal.
            mysql_send_query(conn, [b"INSERT INTO big VALUES ('a', _binary'", mysql_escape_bytes(body), b"')"])
            mysql_send_query(conn, [b"INSERT INTO big64 VALUES ('a', '", text, b"')"])
        else:
            cur.execute(db.sql("INSERT INTO big VALUES ('a', ?)"), (body,))
            cur.execute(db.sql("INSERT INTO big64 VALUES ('a', ?)"), (text.decode(),))
        conn.commit()
    finally:
        conn.close()


def put_small(url: str, count: int) -> list[str]:
    import io

    paths = []
    with DatabaseOrigin(url) as origin:
        for i in range(count):
            data = hashlib.sha256(str(i).encode()).digest() * 320  # 10,240 bytes
            path = f"/media/small/{i}.jpg"
            origin.put(path, io.BytesIO(data), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       revision=f"r{i}", content_type="image/jpeg")
            paths.append(path)
    return paths


def stream(edge: Edge, path: str, expected_sha: str) -> dict[str, Any]:
    before = edge.rss_kib()
    h = hashlib.sha256()
    n = 0
    t0 = time.perf_counter()
    with requests.get(f"{edge.url}{path}", stream=True, timeout=600) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
            n += len(chunk)
    seconds = time.perf_counter() - t0
    if h.hexdigest() != expected_sha:
        raise SystemExit(f"{path}: wrong bytes")
    return {"bytes": n, "seconds": round(seconds, 2), "mb_per_s": round(n / 1e6 / seconds, 1),
            "rss_before_mib": round(before / 1024), "peak_rss_mib": round(edge.peak_rss_kib() / 1024)}


def misses(edge: Edge, paths: list[str]) -> dict[str, float]:
    lat = []
    session = requests.Session()
    for path in paths:
        t0 = time.perf_counter()
        r = session.get(f"{edge.url}{path}", timeout=30)
        lat.append(time.perf_counter() - t0)
        if r.status_code != 200 or len(r.content) != 10_240:
            raise SystemExit(f"{path}: {r.status_code}")
    lat.sort()
    return {"median_ms": round(statistics.median(lat) * 1000, 2), "p90_ms": round(lat[int(len(lat) * 0.9)] * 1000, 2)}


def run_database(kind: str, url: str, body: bytes, n_misses: int, work: str) -> dict[str, Any]:
    populate(url, body)
    small = put_small(url, 2 * n_misses)
    config = os.path.join(work, f"{kind}.toml")
    with open(config, "w") as f:
        f.write(ROUTES)
    digest = hashlib.sha256(body).hexdigest()
    result: dict[str, Any] = {}
    for name, path in (("raw", "/media/raw/a"), ("base64", "/media/b64/a")):
        edge = Edge(tempfile.mkdtemp(dir=work), origin_db=url,
                    args=["--origin-profile", "sql", "--config", config]).start()
        try:
            result[name] = stream(edge, path, digest)
        finally:
            edge.stop()
    for profile, paths, args in (("native", small[:n_misses], []),
                                 ("sql", small[n_misses:], ["--origin-profile", "sql", "--config", config])):
        edge = Edge(tempfile.mkdtemp(dir=work), origin_db=url, args=args).start()
        try:
            misses(edge, paths[:5])  # warm the connection pools and imports
            result[f"miss_10kb_{profile}"] = misses(edge, paths[5:])
        finally:
            edge.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sqlorigin", description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=200)
    p.add_argument("--databases", default="sqlite,postgres,mariadb")
    p.add_argument("--misses", type=int, default=200)
    args = p.parse_args(argv)
    body = os.urandom(args.size_mb * 1_000_000)
    report: dict[str, Any] = {"size_bytes": len(body)}
    with tempfile.TemporaryDirectory(prefix="sqlorigin-") as work:
        for kind in args.databases.split(","):
            server = None
            if kind == "sqlite":
                url = f"sqlite:///{work}/origin.db"
            else:
                server = (dbservers.PostgresServer if kind == "postgres" else dbservers.MariaDbServer)().start()
                url = server.create_database()
            try:
                report[kind] = run_database(kind, url, body, args.misses, work)
            finally:
                if server is not None:
                    server.stop()
            print(json.dumps({kind: report[kind]}), flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
