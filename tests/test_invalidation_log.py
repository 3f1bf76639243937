"""mediaedge.invalidation_log on SQLite, PostgreSQL and MariaDB (the last two: full tier, real servers)."""
from __future__ import annotations

import sqlite3
import threading
import time
import uuid

import pytest

from mediaedge.errors import DatabaseError
from mediaedge.dbapi import parse_db_url
from mediaedge.invalidation_log import InvalidationLog, LogEntry

PURGE = {"type": "purge", "tag": "t", "soft": False, "abort_inflight": False}


def ev(i: int) -> dict:
    return {"type": "delete", "path": f"/media/{i}.jpg", "abort_inflight": False}


# --- fixtures: a fresh, empty database per test -------------------------------------


def _server_url(request: pytest.FixtureRequest, fixture: str) -> str:
    try:
        return request.getfixturevalue(fixture)
    except pytest.FixtureLookupError:
        pytest.skip(f"no {fixture} fixture (tests/conftest.py)")


def _fresh_pg(url: str) -> str:
    import psycopg

    u = parse_db_url(url)
    name = "log_" + uuid.uuid4().hex[:12]
    with psycopg.connect(
        host=u.host, port=u.port, user=u.user, password=u.password, dbname=u.database, autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def _fresh_mysql(url: str) -> str:
    import pymysql

    u = parse_db_url(url)
    name = "log_" + uuid.uuid4().hex[:12]
    conn = pymysql.connect(host=u.host, port=u.port or 3306, user=u.user or "root", password=u.password or "")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()
    return url.rsplit("/", 1)[0] + "/" + name


SERVERS = {
    "postgresql": pytest.param("postgresql", marks=[pytest.mark.full, pytest.mark.postgres]),
    "mysql": pytest.param("mysql", marks=[pytest.mark.full, pytest.mark.mariadb]),
}


@pytest.fixture(params=["sqlite", SERVERS["postgresql"], SERVERS["mysql"]])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    if request.param == "postgresql":
        return _fresh_pg(_server_url(request, "pg_url"))
    return _fresh_mysql(_server_url(request, "mariadb_url"))


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> str:
    return _fresh_pg(_server_url(request, "pg_url"))


@pytest.fixture
def logs(url):
    """Open InvalidationLogs on `url`; all closed at the end."""
    opened: list[InvalidationLog] = []

    def open_log() -> InvalidationLog:
        log = InvalidationLog(url)
        opened.append(log)
        return log

    yield open_log
    for log in opened:
        log.close()


# --- append, since, latest ------------------------------------------------------------


def test_empty_log(logs):
    log = logs()
    assert log.latest_seq() == 0
    assert log.since(0) == []
    assert log.load_cursor("node-a") == 0
    assert log.append([], node="a", at=1.0) == []


def test_append_and_since(logs):
    log = logs()
    first = log.append([ev(1), ev(2)], node="node-a", at=1700000000.25)
    second = log.append([PURGE], node="node-b", at=1700000001.5)
    assert len(first) == 2 and len(second) == 1
    assert first[0] < first[1] < second[0]
    assert log.latest_seq() == second[0]
    assert log.since(0) == [
        LogEntry(first[0], 1700000000.25, "node-a", ev(1)),
        LogEntry(first[1], 1700000000.25, "node-a", ev(2)),
        LogEntry(second[0], 1700000001.5, "node-b", PURGE),
    ]
    assert [e.seq for e in log.since(first[0])] == [first[1], second[0]]
    assert log.since(second[0]) == []
    assert [e.seq for e in log.since(0, limit=2)] == first


def test_events_keep_their_json(logs):
    log = logs()
    event = {"type": "publish", "path": "/media/%C3%A9 \"q\"?x=1", "revision": "2024-01-01 00:00:00", "prewarm": True}
    (seq,) = log.append([event], node="nöde", at=0.0)
    (entry,) = log.since(seq - 1)
    assert entry.event == event and entry.node == "nöde"
    assert isinstance(entry.seq, int) and isinstance(entry.at, float)


def test_big_batch_in_one_append(logs):
    log = logs()
    seqs = log.append([ev(i) for i in range(1000)], node="a", at=1.0)
    assert len(seqs) == 1000 and seqs == sorted(seqs) and len(set(seqs)) == 1000
    entries = log.since(0)
    assert [e.seq for e in entries] == seqs
    assert [e.event for e in entries] == [ev(i) for i in range(1000)]


# --- cursors ----------------------------------------------------------------------------


def test_cursor_upsert_per_node(logs):
    log = logs()
    log.save_cursor("node-a", 5)
    log.save_cursor("node-b", 7)
    log.save_cursor("node-a", 9)
    assert log.load_cursor("node-a") == 9
    assert log.load_cursor("node-b") == 7
    assert log.load_cursor("Node-A") == 0  # node names are exact


def test_two_nodes_share_the_database(logs):
    a, b = logs(), logs()  # the second finds the tables made by the first
    seqs = a.append([ev(1)], node="a", at=1.0)
    assert [e.event for e in b.since(b.load_cursor("b"))] == [ev(1)]
    b.save_cursor("b", seqs[-1])
    b.append([ev(2)], node="b", at=2.0)
    fresh = a.since(seqs[-1])
    assert [(e.node, e.event) for e in fresh] == [("b", ev(2))]
    assert a.load_cursor("b") == seqs[-1]
    assert a.latest_seq() == b.latest_seq() == fresh[-1].seq


def test_reopening_keeps_everything(url):
    log = InvalidationLog(url)
    seqs = log.append([ev(1)], node="a", at=1.0)
    log.save_cursor("a", seqs[0])
    log.close()
    log = InvalidationLog(url)
    try:
        assert log.latest_seq() == seqs[0]
        assert log.load_cursor("a") == seqs[0]
        # seqs keep growing after a restart
        assert log.append([ev(2)], node="a", at=2.0)[0] > seqs[0]
    finally:
        log.close()


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_appends_keep_every_seq_and_a_follower_skips_none(logs):
    """Two nodes, four threads each, append while a follower polls `seq > cursor`.

    The follower never rereads below its cursor, so a row committed late with a
    lower seq would be missed for good: the lock in append must prevent that.
    """
    nodes = [logs(), logs()]
    follower = logs()
    written: list[int] = []
    batches: list[list[int]] = []
    lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []

    def appender(node: InvalidationLog, name: str) -> None:
        try:
            for i in range(15):
                seqs = node.append([ev(i), ev(i + 100), PURGE], node=name, at=float(i))
                with lock:
                    written.extend(seqs)
                    batches.append(seqs)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    seen: list[int] = []

    def follow() -> None:
        cursor = 0
        while True:
            finished = done.is_set()  # read before polling: one more full pass after the end
            entries = follower.since(cursor)
            seen.extend(e.seq for e in entries)
            if entries:
                cursor = entries[-1].seq
            if finished and not entries:
                return

    threads = [threading.Thread(target=appender, args=(nodes[i % 2], f"n{i % 2}")) for i in range(8)]
    poller = threading.Thread(target=follow)
    poller.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    poller.join(60)
    assert not errors
    assert len(written) == 8 * 15 * 3 == len(set(written))
    assert seen == sorted(written)  # every seq, in order, none skipped
    order = {seq: i for i, seq in enumerate(sorted(written))}
    for seqs in batches:  # each append is contiguous in the log
        assert [order[s] for s in seqs] == list(range(order[seqs[0]], order[seqs[0]] + 3))


# --- failures ------------------------------------------------------------------------------


def test_closed_log_refuses(logs):
    log = logs()
    log.close()
    with pytest.raises(DatabaseError, match="closed"):
        log.latest_seq()
    log.close()  # twice is fine


def test_unopenable_sqlite_is_one_line(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(DatabaseError) as info:
        InvalidationLog(f"sqlite:///{tmp_path}/dir.db")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_unreachable_server_is_one_line(scheme):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatabaseError) as info:
        InvalidationLog(f"{scheme}://u:secret-pw@127.0.0.1:{port}/db")
    message = str(info.value)
    assert "\n" not in message and "secret-pw" not in message and "cannot open" in message


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)  # the raw insert is SQLite's
def test_damaged_row_reads_as_an_invalid_event(logs, url):
    log = logs()
    conn = sqlite3.connect(url[len("sqlite:///"):])
    conn.execute("INSERT INTO mediaedge_invalidations (at, node, event) VALUES (1, 'x', 'not json')")
    conn.commit()
    conn.close()
    (entry,) = log.since(0)
    assert "type" not in entry.event and entry.event["invalid"] == "not json"


def _kill_other_connections(url: str) -> None:
    """Drop every connection to the test database but this one, as a server restart would."""
    u = parse_db_url(url)
    if u.dialect == "postgresql":
        import psycopg

        with psycopg.connect(
            host=u.host, port=u.port, user=u.user, password=u.password, dbname=u.database, autocommit=True
        ) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        return
    import pymysql

    conn = pymysql.connect(host=u.host, port=u.port, user=u.user or "root", password=u.password or "")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()", (u.database,))
            for (pid,) in cur.fetchall():
                cur.execute(f"KILL {int(pid)}")
    finally:
        conn.close()


@pytest.mark.parametrize("url", [SERVERS["postgresql"], SERVERS["mysql"]], indirect=True)  # SQLite has none to drop
def test_reconnects_after_the_connection_drops(logs, url):
    log = logs()
    seqs = log.append([ev(1)], node="a", at=1.0)
    _kill_other_connections(url)
    time.sleep(0.2)  # let the server finish closing them
    assert log.latest_seq() == seqs[0]  # a read: retried on a new connection
    _kill_other_connections(url)
    time.sleep(0.2)
    assert log.append([ev(2)], node="a", at=2.0)[0] > seqs[0]  # failed before COMMIT: retried
    _kill_other_connections(url)
    time.sleep(0.2)
    log.save_cursor("a", 2)
    assert log.load_cursor("a") == 2


# --- notifications -----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["sqlite", SERVERS["mysql"]], indirect=True)  # PostgreSQL notifies
def test_without_postgres_wait_for_notify_returns_at_once(logs, url):
    log = logs()
    wait = 10.0
    start = time.monotonic()
    assert log.wait_for_notify(wait) is False
    assert time.monotonic() - start < wait / 2  # not the wait it was given (no absolute: CI is loaded)


@pytest.mark.full
@pytest.mark.postgres
def test_postgres_notify_wakes_another_node_within_a_second(pg):
    follower, leader = InvalidationLog(pg), InvalidationLog(pg)
    try:
        assert follower.wait_for_notify(0.05) is False  # LISTEN is set up; nothing yet
        woke: list[float] = []
        waiter = threading.Thread(target=lambda: woke.append(time.monotonic()) if follower.wait_for_notify(10) else None)
        waiter.start()
        time.sleep(0.3)  # let it block
        appended = time.monotonic()
        seqs = leader.append([ev(1), ev(2)], node="leader", at=1.0)
        waiter.join(10)
        assert woke and woke[0] - appended < 1.0
        assert [e.seq for e in follower.since(0)] == seqs
        # one wake-up per burst: the second append's notification was drained or is the next one
        leader.append([ev(3)], node="leader", at=2.0)
        assert follower.wait_for_notify(5) is True  # queued while nobody waited: not lost
        start = time.monotonic()
        assert follower.wait_for_notify(0.3) is False
        assert 0.25 <= time.monotonic() - start < 2
    finally:
        follower.close()
        leader.close()


@pytest.mark.full
@pytest.mark.postgres
def test_postgres_listener_survives_a_dropped_connection(pg):
    log, leader = InvalidationLog(pg), InvalidationLog(pg)
    try:
        log.wait_for_notify(0.01)
        _kill_other_connections(pg)
        time.sleep(0.2)
        with pytest.raises(DatabaseError):  # the caller backs off, then calls again
            log.wait_for_notify(0.5)
        assert log.wait_for_notify(0.01) is False  # listening again on a new connection
        leader.append([ev(1)], node="leader", at=1.0)
        assert log.wait_for_notify(5) is True
    finally:
        log.close()
        leader.close()


def test_prune_deletes_old_events_but_keeps_the_newest(tmp_path):
    from mediaedge.invalidation import missed_pruned_events

    log_ = InvalidationLog(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        old = log_.append([{"type": "purge", "path": f"/media/{i}"} for i in range(5)], node="a", at=1000.0)
        new = log_.append([{"type": "purge", "path": "/media/new"}], node="a", at=5000.0)
        assert log_.prune(before=2000.0) == 5
        assert log_.oldest_seq() == new[0] and [e.seq for e in log_.since(0)] == new
        assert missed_pruned_events(old[-1], log_.oldest_seq()) is False  # applied everything up to it
        assert missed_pruned_events(old[2], log_.oldest_seq()) is True
        assert log_.prune(before=10_000.0) == 0  # the newest stays, whatever its age
        assert log_.oldest_seq() == new[0]
    finally:
        log_.close()


def test_missed_pruned_events_rule():
    from mediaedge.invalidation import missed_pruned_events

    assert missed_pruned_events(0, None) is False  # empty log: nothing lost
    assert missed_pruned_events(0, 1) is False  # a fresh node, nothing pruned yet
    assert missed_pruned_events(0, 2) is True
    assert missed_pruned_events(41, 42) is False
    assert missed_pruned_events(40, 42) is True


# --- replayed webhooks ---------------------------------------------------------------------------

SIG = "ab" * 32


def _count_rows(log: InvalidationLog) -> int:
    return len(log.since(0))


def test_signed_append_records_the_signature_and_a_replay_appends_nothing(logs):
    from mediaedge.invalidation_log import Accepted

    a, b = logs(), logs()  # b: another node sharing the database
    first = a.append_signed([ev(1), ev(2)], signature=SIG, node="a", at=1000.0)
    assert first.replayed is False and first.accepted == 2 and first.seq == a.latest_seq()
    assert b.append_signed([ev(1), ev(2)], signature=SIG, node="b", at=1001.0) == Accepted(2, first.seq, True)
    assert a.append_signed([ev(1), ev(2)], signature=SIG, node="a", at=1002.0) == Accepted(2, first.seq, True)
    assert _count_rows(a) == 2
    other = a.append_signed([ev(3)], signature="cd" * 32, node="a", at=1003.0)
    assert other == Accepted(1, first.seq + 1, False)


def test_replay_records_are_pruned_after_the_window(logs):
    from mediaedge.invalidation_log import REPLAY_KEEP

    log = logs()
    log.append_signed([ev(1)], signature=SIG, node="a", at=1000.0)
    # long after: the old record is pruned, so the same signature counts as new
    # (verify refuses its timestamp by then; this only shows the table stays small)
    later = log.append_signed([ev(2)], signature="cd" * 32, node="a", at=1000.0 + REPLAY_KEEP + 1)
    assert later.replayed is False
    again = log.append_signed([ev(1)], signature=SIG, node="a", at=1000.0 + REPLAY_KEEP + 2)
    assert again.replayed is False


def test_racing_replays_append_once(logs):
    """Eight connections (as eight nodes) send one signed request at once: one append."""
    opened = [logs() for _ in range(8)]
    results: list = []
    barrier = threading.Barrier(len(opened))

    def send(log: InvalidationLog, i: int) -> None:
        barrier.wait()
        results.append(log.append_signed([ev(1), ev(2), ev(3)], signature=SIG, node=f"n{i}", at=1000.0 + i))

    threads = [threading.Thread(target=send, args=(log, i)) for i, log in enumerate(opened)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8
    assert sum(not r.replayed for r in results) == 1
    assert {(r.accepted, r.seq) for r in results} == {(3, opened[0].latest_seq())}
    assert _count_rows(opened[0]) == 3


def test_a_database_made_before_replays_gains_the_table(url):
    """Migration: a state database with only the old tables (and rows in them), as an
    older version left it, gains mediaedge_webhook_replays at the next open."""
    from mediaedge.dbapi import Database

    old = InvalidationLog(url)
    (first_seq,) = old.append([ev(0)], node="old", at=1.0)
    old.close()
    conn = Database(url).connect()
    try:
        conn.cursor().execute("DROP TABLE mediaedge_webhook_replays")
        conn.commit()
    finally:
        conn.close()
    log = InvalidationLog(url)
    try:
        first = log.append_signed([ev(1)], signature=SIG, node="a", at=1000.0)
        assert first.seq > first_seq and not first.replayed
        assert log.append_signed([ev(1)], signature=SIG, node="a", at=1001.0).replayed
        assert [e.event for e in log.since(0)] == [ev(0), ev(1)]
    finally:
        log.close()
