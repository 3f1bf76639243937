"""Shared pytest fixtures. Add yours in a new section; keep each section self-contained.

Tiers (scripts/test): the quick tier deselects tests marked `full` (real
database servers, large objects, browsers); the full tier (.ci/run) runs them
all with MEDIAEDGE_FULL=1, where a missing prerequisite FAILS a test instead of
skipping it, so CI never counts an unrun test as passed (see `require`).
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/dbservers.py and other helpers
sys.path.insert(1, os.path.dirname(os.path.dirname(__file__)))  # the repo: bench/edge.py, bench/dbservers.py, bench/ports.py

import dbservers  # noqa: E402

FULL = os.environ.get("MEDIAEDGE_FULL") == "1"


# --- tiers ----------------------------------------------------------------------


def require(reason: str) -> None:
    """A prerequisite is missing: skip in the quick tier, fail in the full tier."""
    if FULL:
        pytest.fail(f"{reason} (MEDIAEDGE_FULL=1: missing prerequisites fail)", pytrace=False)
    pytest.skip(reason)


# --- database servers ---------------------------------------------------------------
#
# One PostgreSQL and one MariaDB per test session, started on first use from a
# temporary data directory on a free 127.0.0.1 port, stopped at the end.
# `pg_url` / `mariadb_url` name a shared database `mediaedge`; tests that need
# an empty database call `server.create_database()` on `pg_server` /
# `mariadb_server`, or use `origin_url`.


def _start(server_cls: type) -> object:
    try:
        return server_cls().start()
    except dbservers.ServerUnavailable as e:
        require(str(e))
    except dbservers.ServerFailed as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def pg_server():
    server = _start(dbservers.PostgresServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb_server():
    server = _start(dbservers.MariaDbServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server) -> str:
    return pg_server.url()


@pytest.fixture(scope="session")
def mariadb_url(mariadb_server) -> str:
    return mariadb_server.url()


DATABASES = [
    "sqlite",
    pytest.param("postgres", marks=[pytest.mark.full, pytest.mark.postgres]),
    pytest.param("mariadb", marks=[pytest.mark.full, pytest.mark.mariadb]),
]


@pytest.fixture(params=DATABASES)
def origin_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """URL of an empty database, once per kind: SQLite file, PostgreSQL, MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'origin.db'}"
    server = request.getfixturevalue("pg_server" if request.param == "postgres" else "mariadb_server")
    return server.create_database()


# --- an edge in front of an app ---------------------------------------------------------
#
# A fresh app server (tests.edge.Upstream) and a fresh `mediaedge serve` in front of it,
# per test. A module defining its own `upstream` or `edge` (module scope, other options)
# overrides these.


@pytest.fixture
def upstream():
    from tests.edge import Upstream

    u = Upstream()
    yield u
    u.close()


@pytest.fixture
def edge(tmp_path, upstream):
    from tests.edge import Edge

    e = Edge(str(tmp_path), upstream=upstream.url).start()
    yield e
    e.stop()


# --- signals ---------------------------------------------------------------------------
#
# A shell without job control starts background commands (`bash scripts/test &`, some CI
# runners) with SIGINT ignored, and an ignored signal stays ignored in every child: the
# processes the tests start would never see the SIGINT they send them (a handler, unlike
# SIG_IGN, is reset on exec). Restore the default here, once, for the whole session.


def pytest_configure(config: pytest.Config) -> None:
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
