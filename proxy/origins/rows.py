"""The database origin's boundary: a lookup answers a row, `NotFound` or `Failed`.

The database drivers' errors are translated to `OriginError` in db.py / sqlroutes.py;
here, once, into the outcomes every origin gives (mediaedge.origins), so the engine
branches on values instead of catching exceptions.
"""
from __future__ import annotations

from mediaedge.errors import OriginError
from mediaedge.origins import Failed, MediaDatabase, NotFound
from mediaedge.origins.db import DbObject
from mediaedge.pools import in_database_thread


async def find_row(db: MediaDatabase, key: str) -> DbObject | NotFound | Failed:
    """The row serving `key` (looked up in the database pool's threads)."""
    try:
        obj = await in_database_thread(db.lookup, key)
    except OriginError as e:
        return Failed("database", 502, f"database origin: {e}")
    return NotFound("database origin: not found") if obj is None else obj
