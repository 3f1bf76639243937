"""The one retry rule and the pool every database caller uses (mediaedge.dbapi)."""
from __future__ import annotations

import sqlite3

import pytest

from mediaedge.dbapi import Pool, retry_once


def test_retry_once_only_a_kept_connection_that_is_gone():
    assert retry_once(attempt=0, fresh=False, gone=True)
    assert not retry_once(attempt=1, fresh=False, gone=True)  # once
    assert not retry_once(attempt=0, fresh=True, gone=True)  # a new one failing: the server is unwell
    assert not retry_once(attempt=0, fresh=False, gone=False)  # a statement error, the connection alive
    assert not retry_once(attempt=0, fresh=False, gone=True, timeout=True)  # would double the wait
    assert not retry_once(attempt=0, fresh=False, gone=True, replay_safe=False)  # could write twice


def _counting_pool(tmp_path) -> tuple[Pool, list[sqlite3.Connection]]:
    opened: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(tmp_path / "x.db", check_same_thread=False)
        opened.append(conn)
        return conn

    return Pool(connect), opened


def test_gone_is_asked_before_the_connection_is_closed(tmp_path):
    pool, opened = _counting_pool(tmp_path)
    pool.call(lambda c: c.execute("SELECT 1").fetchall(), gone=lambda c, e: False)  # one pooled connection
    seen_open = []

    def gone(conn: sqlite3.Connection, e: BaseException) -> bool:
        try:
            conn.execute("SELECT 1")
            seen_open.append(True)
        except sqlite3.ProgrammingError:  # closed already
            seen_open.append(False)
        return True

    calls = []

    def fail_then_work(conn: sqlite3.Connection) -> int:
        calls.append(conn)
        if len(calls) == 1:
            raise sqlite3.OperationalError("server closed the connection")
        return 7

    assert pool.call(fail_then_work, gone=gone) == 7
    assert seen_open == [True]
    assert len(opened) == 2 and calls[0] is opened[0] and calls[1] is opened[1]


def test_a_statement_error_on_a_live_pooled_connection_is_raised_at_once(tmp_path):
    pool, opened = _counting_pool(tmp_path)
    pool.call(lambda c: c.execute("SELECT 1").fetchall(), gone=lambda c, e: False)
    runs = []

    def bad(conn: sqlite3.Connection) -> None:
        runs.append(1)
        conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(sqlite3.OperationalError):
        pool.call(bad, gone=lambda c, e: False)
    assert runs == [1] and len(opened) == 1
    pool.close()
