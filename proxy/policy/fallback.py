"""What a client gets for a media miss, from what the upstream did and what the database said.

Pure. The origins a miss asks are data, composed once from the settings by
`origin_chain` (`("upstream", "db")`; no `--upstream`: `("db",)`; `--origin-db none`:
`("upstream",)`); the engine's driver asks `next_origin` which one is next given
what the previous one answered (`asks_database` says whether the upstream's answer
sends us on); once the chain is spent, `after_origins` says what the client gets
(contract section 2, "Fallback"):

| upstream                  | database            | client gets                                          |
|---------------------------|---------------------|------------------------------------------------------|
| any                       | found               | the row (stored)                                     |
| 404 / 410                 | not found / failing | the upstream's own response, stored for its explicit |
|                           | / none              | freshness, else for --negative-ttl                   |
| 5xx                       | not found / failing | a stale entry within its grace, else the upstream's  |
|                           | / none              | own response (stored only with explicit freshness)   |
| failed (refused, reset)   | not found / failing | a stale entry within its grace, else 502             |
| timed out                 | not found / failing | a stale entry within its grace, else 504             |
| none configured           | not found           | 404, negative-cached                                 |
| none configured           | failing             | a stale entry within its grace, else 503             |

Why the app's own 404 rather than ours: it is the app's page (its layout, its links,
its `Cache-Control`), and an edge must not change what a missing file looks like.
Why a 5xx is not "absent": the app failing says nothing about the file; storing a 404
then (as mediaedge once did) outlived the outage and dropped the stale entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Database = Literal["found", "notfound", "failed", "none"]
Origin = Literal["upstream", "db"]
Action = Literal["database", "upstream", "not-found", "error"]

# Statuses after which the database origin is read (RFC 9110 15.5.5, 15.5.11, 15.6).
NOT_THERE = frozenset({404, 410})


@dataclass(frozen=True)
class Fallback:
    """The decision. `status` is the error status (action "error") or our 404 ("not-found");
    `stale_first`: serve a stale entry within its grace instead, when there is one;
    `explicit_only`: the upstream's answer is stored only with explicit freshness."""

    action: Action
    reason: str
    status: int | None = None
    stale_first: bool = False
    explicit_only: bool = False


def asks_database(upstream_status: int | None, upstream_failed: bool) -> bool:
    """Whether the upstream's answer sends the request on to the database origin."""
    if upstream_failed:
        return True
    return upstream_status is not None and (upstream_status in NOT_THERE or upstream_status >= 500)


def origin_chain(*, has_upstream: bool, has_database: bool) -> tuple[Origin, ...]:
    """The origins a miss asks, in order: the app first (it knows its own media best),
    then the database (the source of truth for files the app no longer serves)."""
    chain: tuple[Origin, ...] = ("upstream",) if has_upstream else ()
    return chain + (("db",) if has_database else ())


def next_origin(chain: tuple[Origin, ...], previous: Origin | None = None, *, upstream_status: int | None = None,
                upstream_failed: bool = False, row_found: bool = False) -> Origin | None:
    """The origin to ask after `previous` (None: the first), or None when the chain is
    spent and `after_origins` decides.

    After the upstream: on only when its answer is not the client's, i.e. it failed,
    said 404/410/5xx (`asks_database`), or a published revision it does not have was
    found as a database row (`row_found`: published revision wins). The database is
    the last origin: its answer, row or not, is final.
    """
    if previous is None:
        return chain[0] if chain else None
    if previous == "upstream" and not (row_found or asks_database(upstream_status, upstream_failed)):
        return None
    rest = chain[chain.index(previous) + 1:] if previous in chain else ()
    return rest[0] if rest else None


def after_origins(*, has_upstream: bool, upstream_status: int | None, upstream_failure: str | None,
                  database: Database) -> Fallback:
    """What the client gets once both origins have been asked.

    `upstream_status`: the status the upstream answered (None: it did not answer);
    `upstream_failure`: 'refused', 'timeout' or 'error' when it could not be asked;
    `database`: 'found', 'notfound', 'failed', or 'none' without a database origin.
    """
    if database == "found":
        return Fallback("database", "database row")
    if upstream_status is not None and upstream_status in NOT_THERE:
        return Fallback("upstream", f"upstream {upstream_status}, database {database}")
    if upstream_status is not None and upstream_status >= 500:
        return Fallback("upstream", f"upstream {upstream_status}, database {database}", stale_first=True,
                        explicit_only=True)
    if has_upstream:
        status = 504 if upstream_failure == "timeout" else 502
        return Fallback("error", f"upstream {upstream_failure or 'failed'}, database {database}", status,
                        stale_first=True)
    if database == "notfound":
        return Fallback("not-found", "no upstream, database not found", 404)
    return Fallback("error", f"no upstream, database {database}", 503, stale_first=True)
