"""The sql profile measured: large bodies streamed from each database, and small misses.

    python -m bench.sqlorigin [--size-mb 200] [--databases sqlite,postgres,mariadb] [--misses 200]
                              [--parts stream,miss,lock] [--lock-seconds 30] [--db-timeout 10]

For each database (real servers, started like the tests start them: bench/dbservers.py)
it stores one random row of SIZE MB in a binary column and the same bytes as base64 text
in another table, starts a real `mediaedge serve --origin-profile sql`, and streams each
through it once (a miss: the bytes come from the database), reporting MB/s of decoded
body and the edge's peak RSS (VmHWM) against its RSS before the request. Objects above
--max-object-size pass through unstored, so only the database read and the proxy are
measured. Then the miss latency of 10 KB rows: the same `media_files` rows served by the
native profile and by an sql route over that table (two edges, requests alternating
between them), each request a distinct path.

`lock`: another client holds the route's table locked for --lock-seconds (PostgreSQL
LOCK TABLE ... IN ACCESS EXCLUSIVE MODE in an open transaction, MariaDB LOCK TABLES
... WRITE, SQLite BEGIN EXCLUSIVE with an uncommitted write) while, every second, a
request for a fresh entry (hit), one for an expired entry (stale within grace, or not)
and one for a row never fetched (miss) go out, each on its own thread; reported: the
statuses and the slowest answer of each kind, and the first miss after the release.
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
import threading
import time
from typing import Any

import requests

from bench import dbservers
from bench.edge import Edge
from mediaedge.dbapi import Database, mysql_escape_bytes, mysql_send_query
from mediaedge.origins.db import DatabaseOrigin

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


def misses(edges: dict[str, Edge], paths: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Distinct-path misses, one edge after the other in turn, so that load from elsewhere
    on the machine falls on both profiles alike."""
    lat: dict[str, list[float]] = {name: [] for name in edges}
    sessions = {name: requests.Session() for name in edges}
    for i in range(min(len(p) for p in paths.values())):
        for name, edge in edges.items():
            path = paths[name][i]
            t0 = time.perf_counter()
            r = sessions[name].get(f"{edge.url}{path}", timeout=30)
            lat[name].append(time.perf_counter() - t0)
            if r.status_code != 200 or len(r.content) != 10_240:
                raise SystemExit(f"{name} {path}: {r.status_code}")
    out = {}
    for name, values in lat.items():
        values.sort()
        out[name] = {"median_ms": round(statistics.median(values) * 1000, 2),
                     "p90_ms": round(values[int(len(values) * 0.9)] * 1000, 2)}
    return out


class Lock:
    """Another client holding `table` exclusively until release()."""

    def __init__(self, url: str, table: str) -> None:
        db = Database(url)
        self.dialect = db.dialect
        self.conn = db.connect()
        if self.dialect == "sqlite":
            self.conn.isolation_level = None
            self.conn.execute("BEGIN EXCLUSIVE")
            self.conn.execute(f"UPDATE {table} SET revision = revision || 'x'")
        elif self.dialect == "postgresql":
            self.conn.execute("BEGIN")
            self.conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        else:
            self.conn.cursor().execute(f"LOCK TABLES {table} WRITE")

    def release(self) -> None:
        if self.dialect == "mysql":
            self.conn.cursor().execute("UNLOCK TABLES")
        self.conn.rollback()
        self.conn.close()


def locked(url: str, config: str, paths: list[str], seconds: float, db_timeout: float, work: str) -> dict[str, Any]:
    """Requests while the table is locked: see the module's docstring. 40 s TTL: entries
    stored before a 40 s wait are expired (stale), those stored just before the lock fresh."""
    ttl = seconds + 10
    expired, fresh, never = paths[:3], paths[3:6], paths[6:]
    edge = Edge(tempfile.mkdtemp(dir=work), origin_db=url,
                args=["--origin-profile", "sql", "--config", config, "--db-timeout", f"{db_timeout:g}",
                      "--default-ttl", f"{ttl:g}"]).start()
    results: dict[str, list[tuple[float, int, str]]] = {"hit": [], "stale": [], "miss": []}
    guard = threading.Lock()

    def get(kind: str, path: str) -> None:
        t0 = time.perf_counter()
        try:
            r = requests.get(f"{edge.url}{path}", timeout=seconds + 60)
            status, cache = r.status_code, r.headers.get("Cache-Status", "")
        except requests.RequestException as e:
            status, cache = 0, type(e).__name__
        with guard:
            results[kind].append((time.perf_counter() - t0, status, cache))

    try:
        for path in expired:
            get("stale", path)
        time.sleep(ttl + 0.5)  # the first three expire
        for path in fresh:
            get("hit", path)
        for kind in results:
            results[kind].clear()
        lock = Lock(url, "media_files")
        threads = []
        t0 = time.monotonic()
        try:
            for i in range(int(seconds)):
                for kind, path in (("hit", fresh[i % 3]), ("stale", expired[i % 3]), ("miss", never[i])):
                    t = threading.Thread(target=get, args=(kind, path))
                    t.start()
                    threads.append(t)
                time.sleep(max(0.0, t0 + i + 1 - time.monotonic()))
        finally:
            lock.release()
        released = time.monotonic()
        get("miss", never[int(seconds)])
        after = results["miss"].pop()
        for t in threads:
            t.join()
        report: dict[str, Any] = {"locked_s": round(released - t0, 1), "db_timeout_s": db_timeout}
        for kind, rows in results.items():
            statuses: dict[str, int] = {}
            for _, status, cache in rows:
                key = f"{status} {'stale' if 'ttl=-' in cache else 'hit' if '; hit' in cache else 'fetch'}"
                statuses[key] = statuses.get(key, 0) + 1
            lat = sorted(r[0] for r in rows)
            report[kind] = {"statuses": statuses, "median_s": round(statistics.median(lat), 2),
                            "max_s": round(lat[-1], 2)}
        report["first_miss_after_release"] = {"status": after[1], "seconds": round(after[0], 3)}
        return report
    finally:
        edge.stop()


def run_database(kind: str, url: str, body: bytes, n_misses: int, work: str, parts: set[str],
                 lock_seconds: float, db_timeout: float) -> dict[str, Any]:
    populate(url, body)  # the routes' tables (empty rows when not streaming)
    small = put_small(url, max(2 * n_misses, int(lock_seconds) + 10))
    config = os.path.join(work, f"{kind}.toml")
    with open(config, "w") as f:
        f.write(ROUTES)
    result: dict[str, Any] = {}
    if "lock" in parts:
        result["locked_table"] = locked(url, config, small[-int(lock_seconds) - 8:], lock_seconds, db_timeout, work)
        print(json.dumps({kind: result["locked_table"]}), flush=True)
    if "stream" in parts:
        result.update(streams(kind, url, body, config, work))
    if "miss" in parts:
        result.update(miss_latency(url, config, small, n_misses, work))
    return result


def streams(kind: str, url: str, body: bytes, config: str, work: str) -> dict[str, Any]:
    digest = hashlib.sha256(body).hexdigest()
    result: dict[str, Any] = {}
    for name, path in (("raw", "/media/raw/a"), ("base64", "/media/b64/a")):
        edge = Edge(tempfile.mkdtemp(dir=work), origin_db=url,
                    args=["--origin-profile", "sql", "--config", config]).start()
        try:
            result[name] = stream(edge, path, digest)
        finally:
            edge.stop()
        print(json.dumps({kind: {name: result[name]}}), flush=True)
    return result


WARM = 5  # misses per edge before the measured ones


def miss_latency(url: str, config: str, small: list[str], n_misses: int, work: str) -> dict[str, Any]:
    edges = {"native": Edge(tempfile.mkdtemp(dir=work), origin_db=url).start(),
             "sql": Edge(tempfile.mkdtemp(dir=work), origin_db=url,
                         args=["--origin-profile", "sql", "--config", config]).start()}
    paths = {"native": small[:n_misses], "sql": small[n_misses:2 * n_misses]}
    try:
        misses(edges, {k: v[:WARM] for k, v in paths.items()})  # warm the connection pools and imports
        measured = misses(edges, {k: v[WARM:] for k, v in paths.items()})
    finally:
        for edge in edges.values():
            edge.stop()
    return {f"miss_10kb_{name}": values for name, values in measured.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sqlorigin", description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=200)
    p.add_argument("--databases", default="sqlite,postgres,mariadb")
    p.add_argument("--misses", type=int, default=200, help=f"distinct misses per edge (more than the {WARM} warm-up ones)")
    p.add_argument("--parts", default="stream,miss,lock", help="which measurements (default: all)")
    p.add_argument("--lock-seconds", type=float, default=30)
    p.add_argument("--db-timeout", type=float, default=10, help="the edge's --db-timeout for `lock` (10: the default)")
    args = p.parse_args(argv)
    if args.misses <= WARM:
        p.error(f"--misses must be more than {WARM}: the first {WARM} warm the connection pools and are not measured")
    parts = set(args.parts.split(","))
    body = os.urandom(args.size_mb * 1_000_000) if "stream" in parts else b""
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
                report[kind] = run_database(kind, url, body, args.misses, work, parts, args.lock_seconds,
                                            args.db_timeout)
            finally:
                if server is not None:
                    server.stop()
            print(json.dumps({kind: report[kind]}), flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
