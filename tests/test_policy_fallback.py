"""mediaedge.policy.fallback: what a client gets after the upstream did X and the database said Y."""
import pytest

from mediaedge.policy.fallback import Fallback, after_origins, asks_database, next_origin, origin_chain


@pytest.mark.parametrize("status, failed, expected", [
    (200, False, False),
    (301, False, False),
    (403, False, False),
    (404, False, True),
    (410, False, True),
    (500, False, True),
    (503, False, True),
    (None, True, True),  # refused, reset, timed out
])
def test_asks_database(status, failed, expected):
    assert asks_database(status, upstream_failed=failed) is expected


@pytest.mark.parametrize("upstream_status, failure, database, expected", [
    # the row wins whatever the upstream did
    (404, None, "found", ("database", None, False, False)),
    (503, None, "found", ("database", None, False, False)),
    (None, "timeout", "found", ("database", None, False, False)),
    # the upstream's own 404/410: not found, database failing, no database
    (404, None, "notfound", ("upstream", None, False, False)),
    (410, None, "failed", ("upstream", None, False, False)),
    (404, None, "none", ("upstream", None, False, False)),
    # the upstream's 5xx: stale first, else its own answer, stored only with explicit freshness
    (503, None, "notfound", ("upstream", None, True, True)),
    (500, None, "failed", ("upstream", None, True, True)),
    (502, None, "none", ("upstream", None, True, True)),
    # the upstream failed: stale first, else 502 (504 after a timeout)
    (None, "refused", "notfound", ("error", 502, True, False)),
    (None, "error", "failed", ("error", 502, True, False)),
    (None, "timeout", "notfound", ("error", 504, True, False)),
    (None, "timeout", "none", ("error", 504, True, False)),
])
def test_after_origins_with_an_upstream(upstream_status, failure, database, expected):
    d = after_origins(has_upstream=True, upstream_status=upstream_status, upstream_failure=failure, database=database)
    assert (d.action, d.status, d.stale_first, d.explicit_only) == expected
    assert d.reason


@pytest.mark.parametrize("database, expected", [
    ("found", Fallback("database", "database row")),
    ("notfound", Fallback("not-found", "no upstream, database not found", 404)),
    ("failed", Fallback("error", "no upstream, database failed", 503, stale_first=True)),
])
def test_after_origins_without_an_upstream(database, expected):
    assert after_origins(has_upstream=False, upstream_status=None, upstream_failure=None, database=database) == expected


@pytest.mark.parametrize("has_upstream, has_database, chain", [
    (True, True, ("upstream", "db")),
    (False, True, ("db",)),  # no --upstream
    (True, False, ("upstream",)),  # --origin-db none
    (False, False, ()),
])
def test_origin_chain_from_the_settings(has_upstream, has_database, chain):
    assert origin_chain(has_upstream=has_upstream, has_database=has_database) == chain


@pytest.mark.parametrize("chain, first", [(("upstream", "db"), "upstream"), (("db",), "db"), ((), None)])
def test_the_first_origin_is_the_head_of_the_chain(chain, first):
    assert next_origin(chain) == first


@pytest.mark.parametrize("status, failed, row_found, expected", [
    (200, False, False, None),  # the upstream's answer is the client's
    (304, False, False, None),
    (403, False, False, None),
    (404, False, False, "db"),
    (410, False, False, "db"),
    (503, False, False, "db"),
    (None, True, False, "db"),  # refused, reset, timed out
    (200, False, True, "db"),  # published revision wins: the row found for it is served
])
def test_after_the_upstream(status, failed, row_found, expected):
    chain = origin_chain(has_upstream=True, has_database=True)
    assert next_origin(chain, "upstream", upstream_status=status, upstream_failed=failed,
                       row_found=row_found) == expected


@pytest.mark.parametrize("status, failed", [(404, False), (503, False), (None, True)])
def test_without_a_database_the_chain_ends_after_the_upstream(status, failed):
    assert next_origin(("upstream",), "upstream", upstream_status=status, upstream_failed=failed) is None


def test_the_database_is_the_last_word():
    assert next_origin(("upstream", "db"), "db") is None
    assert next_origin(("db",), "db") is None
