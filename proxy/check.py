"""`mediaedge check [serve's flags]`: can a node start and serve with these settings?

Settings are parsed exactly as `serve` parses them (a bad one fails before this
runs, with serve's one-line error). Then every configured component is reached,
one line each, `<component>: ok` or `<component>: <problem>`; exit 0 only when
all are ok. No listener is opened. The checks do what `serve` would do at start
and no more: the native table and the invalidation log are created when missing,
as `serve` creates them; nothing else is written except a probe file in the
cache directory, removed at once.

Each check is a function returning None (ok) or the problem as one line, so the
list of checks reads as a table and a test can call any of them alone.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import TextIO

from mediaedge.errors import DatabaseError, OriginError
from mediaedge.config import Settings, format_size
from mediaedge.dbapi import parse_db_url

Check = tuple[str, Callable[[], str | None]]


def origin_checks(s: Settings) -> list[Check]:
    """The origin database; for the sql profile, one line per route."""
    if s.origin_db is None:
        return [("origin database none (--origin-db none: a plain HTTP cache)", lambda: None)]
    url = parse_db_url(s.origin_db).redacted()
    if s.origin_profile != "sql":
        return [(f"origin database {url} ({s.origin_profile})", lambda: _native_origin(s))]
    from mediaedge.origins.sqlroutes import SqlRouteOrigin

    try:
        origin = SqlRouteOrigin(s.origin_db, s.sql_routes, timeout=s.db_timeout)
        results = origin.check()
        origin.close()
    except (OriginError, DatabaseError) as e:
        return [(f"origin database {url} (sql)", _constant(str(e)))]
    checks: list[Check] = [(f"origin database {url} (sql)", lambda: None)]
    for route, problem in results:
        checks.append((f"sql_route #{route.index} ({route.match.pattern})", _constant(problem)))
    return checks


def _native_origin(s: Settings) -> str | None:
    from mediaedge.origins.db import DatabaseOrigin

    assert s.origin_db is not None  # asked only when there is a database origin
    try:
        DatabaseOrigin(s.origin_db, s.origin_profile, media_prefixes=s.media_prefixes,
                       create=s.origin_profile == "native", connect_timeout=s.db_timeout).close()
    except (OriginError, DatabaseError) as e:
        return str(e)
    return None


def state_db(s: Settings) -> str | None:
    from mediaedge.invalidation_log import InvalidationLog

    try:
        if s.origin_db is None and s.state_db is None:
            os.makedirs(s.cache_dir, exist_ok=True)  # the log's SQLite file lives in the cache directory
        InvalidationLog(s.state_db_url).close()
    except DatabaseError as e:
        return str(e)
    return None


def upstream(s: Settings) -> str | None:
    """Reachable and answering HTTP (any status: the app decides what a path means)."""
    import httpx

    try:
        httpx.get(s.upstream or "", timeout=s.upstream_timeout)
    except httpx.HTTPError as e:
        return f"not reachable: {str(e) or type(e).__name__}"
    return None


def cache_dir_writable(s: Settings) -> str | None:
    try:
        os.makedirs(s.cache_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=s.cache_dir, prefix=".check-"):
            pass
    except OSError as e:
        return f"not writable: {e.strerror or e}"
    return None


def free_disk(s: Settings, held: Callable[[], int] | None = None) -> str | None:
    """Room for --cache-size: free space plus what the cache already holds (`held`:
    a running node's own count, cheaper than walking the directory)."""
    try:
        free = shutil.disk_usage(s.cache_dir).free
    except OSError as e:
        return f"cannot measure: {e.strerror or e}"
    used = _tree_bytes(s.cache_dir) if held is None else held()
    if free + used < s.cache_size:
        return (f"{format_size(free + used)} available for the cache but --cache-size is "
                f"{format_size(s.cache_size)}")
    return None


def _tree_bytes(root: str) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def checks(s: Settings, *, held: Callable[[], int] | None = None) -> list[Check]:
    """The checks, in order; /readyz (mediaedge.readiness) runs the same list."""
    out = origin_checks(s)
    state = parse_db_url(s.state_db_url).redacted()
    out.append((f"state database {state}", lambda: state_db(s)))
    if s.upstream:
        out.append((f"upstream {s.upstream}", lambda: upstream(s)))
    out.append((f"cache directory {s.cache_dir}", lambda: cache_dir_writable(s)))
    out.append((f"free disk for --cache-size {format_size(s.cache_size)}", lambda: free_disk(s, held)))
    return out


def run(settings: Settings, out: TextIO = sys.stdout) -> int:
    failed = 0
    for name, check in checks(settings):
        problem = check()
        failed += problem is not None
        print(f"{name}: {'ok' if problem is None else ' '.join(problem.split())}", file=out, flush=True)
    return 1 if failed else 0


def _constant(problem: str | None) -> Callable[[], str | None]:
    """A check whose answer is already known (a route probed together with the others)."""
    return lambda: problem
