"""The durable invalidation log: every accepted webhook event, in order, shared by all nodes.

Tables (created when missing, in the state database):

    mediaedge_invalidations (seq  -- increasing primary key, never reused
                             at   -- unix seconds, float
                             node -- the node that accepted the event
                             event -- the event as JSON, see webhook.event_to_json)
    mediaedge_node_state    (node primary key, last_seq -- the last seq the node applied)
    mediaedge_webhook_replays (signature primary key -- the webhook's MAC, lower-case hex
                             at   -- unix seconds the request was accepted
                             accepted, seq -- the figures of the first answer)

Replays. A signed webhook stays valid for the skew window (300 s either side
of its timestamp), so anyone who captured one could send it again. `append`
with a signature records it in `mediaedge_webhook_replays` in the same
transaction as the events, under the same append lock, so of two requests
carrying one signature (on one node or racing on two) exactly one appends; the
other reads the first one's figures back and appends nothing. The primary key
is the last line of defence should anything bypass the lock. Records older
than `REPLAY_KEEP` are pruned by later appends. The table is created when
missing, so a database made by an older version gains it at the next start.

A node appends before answering the webhook, applies `since(cursor)` as entries
appear and saves its cursor; a node that was down reads everything after its
saved cursor before it serves from cache again. On PostgreSQL an append also
sends `NOTIFY mediaedge_invalidations, '<last seq>'` so followers wake at once;
on SQLite and MySQL they poll.

Blocking code: the caller runs it in a worker thread. Each thread gets its own
connection (DB-API connections are not thread-safe); a connection that fails is
discarded and the operation is retried once on a fresh one when that is safe.
Every failure surfaces as `mediaedge.dbapi.DatabaseError` with a one-line message.

Ordering (why appends take a lock). Followers read `seq > cursor`, so the log
must never let a row with a lower seq become visible after a row with a higher
one: a follower that already moved its cursor past it would skip it for good.
Sequences and auto-increment counters hand out numbers at INSERT time, not at
COMMIT, so two concurrent appenders can commit out of order. We therefore
serialise appenders for the whole transaction:

- SQLite: `BEGIN IMMEDIATE` takes the database's single write lock.
- PostgreSQL: `pg_advisory_xact_lock`, released by the commit itself, after the
  commit is visible. An advisory lock rather than `LOCK TABLE`: it does not
  queue behind autovacuum and does not block readers or other tables' users.
- MySQL/MariaDB: `GET_LOCK` (a named, session-level lock, released after the
  commit; the server drops it if the connection dies). `LOCK TABLES` was the
  alternative, but it commits implicitly and does not mix with transactions.

The cost is one append at a time across the cluster, a few milliseconds each
(a batch of 1000 events is one append), which the webhook's rate never nears.
Other writers that bypass this module would break the guarantee.
"""
from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from mediaedge.errors import DatabaseError
from mediaedge.dbapi import Database, close_quietly, first_line, retry_once, rollback_quietly

T = TypeVar("T")

CHANNEL = "mediaedge_invalidations"
LOCK_NAME = "mediaedge_invalidations"  # MySQL GET_LOCK name
PG_LOCK_KEY = 0x6D65646961656467  # "mediaedg": pg_advisory_xact_lock key
MYSQL_LOCK_TIMEOUT = 30  # seconds an appender waits for another
# Seconds a webhook signature is remembered after it was accepted. A signature is
# valid while its timestamp is within 300 s of the receiver's clock, i.e. up to
# 600 s after an acceptance at the early edge of the window; the rest is slack
# for clocks that differ between nodes.
REPLAY_KEEP = 900.0

_DDL: dict[str, tuple[str, ...]] = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS mediaedge_invalidations ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"  # AUTOINCREMENT: never reuse a seq
        " at REAL NOT NULL, node TEXT NOT NULL, event TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS mediaedge_node_state ("
        " node TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS mediaedge_webhook_replays ("
        " signature TEXT PRIMARY KEY, at REAL NOT NULL, accepted INTEGER NOT NULL, seq INTEGER NOT NULL)",
    ),
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS mediaedge_invalidations ("
        " seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " at DOUBLE PRECISION NOT NULL, node VARCHAR(255) NOT NULL, event TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS mediaedge_node_state ("
        " node VARCHAR(255) PRIMARY KEY, last_seq BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS mediaedge_webhook_replays ("
        " signature VARCHAR(64) PRIMARY KEY, at DOUBLE PRECISION NOT NULL,"
        " accepted INTEGER NOT NULL, seq BIGINT NOT NULL)",
    ),
    "mysql": (
        "CREATE TABLE IF NOT EXISTS mediaedge_invalidations ("
        " seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        " at DOUBLE NOT NULL, node VARCHAR(255) NOT NULL, event MEDIUMTEXT NOT NULL)"
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE IF NOT EXISTS mediaedge_node_state ("
        " node VARCHAR(255) NOT NULL PRIMARY KEY, last_seq BIGINT NOT NULL)"
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS mediaedge_webhook_replays ("
        " signature VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,"
        " at DOUBLE NOT NULL, accepted INT NOT NULL, seq BIGINT NOT NULL)"
        " ENGINE=InnoDB",
    ),
}

_UPSERT_CURSOR = {
    "sqlite": "INSERT INTO mediaedge_node_state (node, last_seq) VALUES (?, ?)"
    " ON CONFLICT (node) DO UPDATE SET last_seq = excluded.last_seq",
    "postgresql": "INSERT INTO mediaedge_node_state (node, last_seq) VALUES (?, ?)"
    " ON CONFLICT (node) DO UPDATE SET last_seq = excluded.last_seq",
    "mysql": "INSERT INTO mediaedge_node_state (node, last_seq) VALUES (?, ?)"
    " ON DUPLICATE KEY UPDATE last_seq = VALUES(last_seq)",
}


class LogEntry(NamedTuple):
    seq: int
    at: float
    node: str
    event: dict[str, Any]


class Accepted(NamedTuple):
    """What a signed append answers: its figures, and whether they are a replay's."""

    accepted: int
    seq: int
    replayed: bool


class InvalidationLog:
    """The shared, ordered log of invalidation events, and each node's cursor into it."""

    def __init__(self, url: str) -> None:
        self._db = Database(url)
        self.dialect = self._db.dialect
        self._local = threading.local()
        self._lock = threading.Lock()  # guards _conns and _closed
        self._conns: list[Any] = []
        self._closed = False
        self._listen_lock = threading.Lock()
        self._listener: Any = None
        self._run(self._create_tables)

    # --- the API ---------------------------------------------------------

    def append(self, events: list[dict[str, Any]], *, node: str, at: float) -> list[int]:
        """Store `events` in one transaction; their seqs, in order."""
        if not events:
            return []
        rows = [(at, node, json.dumps(e, separators=(",", ":"), sort_keys=True)) for e in events]
        return self._run(lambda conn: self._append(conn, rows), phase_safe=True)

    def append_signed(self, events: list[dict[str, Any]], *, signature: str, node: str, at: float) -> Accepted:
        """Append `events` unless `signature` was accepted before (module docstring: Replays).

        A first request appends and records the signature in one transaction:
        `Accepted(len(events), last seq, False)`. A replay appends nothing and
        gets the first request's figures with `replayed=True`.
        """
        if not events:
            raise ValueError("a signed append needs at least one event")
        rows = [(at, node, json.dumps(e, separators=(",", ":"), sort_keys=True)) for e in events]
        return self._run(lambda conn: self._append_signed(conn, rows, signature, at), phase_safe=True)

    def since(self, seq: int, *, limit: int = 10000) -> list[LogEntry]:
        """Entries with a seq above `seq`, ascending, at most `limit`."""
        q = "SELECT seq, at, node, event FROM mediaedge_invalidations WHERE seq > ? ORDER BY seq LIMIT ?"
        rows = self._run(lambda conn: self._read(conn, q, (int(seq), int(limit))))
        return [LogEntry(int(s), float(a), str(n), _decode(e)) for s, a, n, e in rows]

    def latest_seq(self) -> int:
        """The highest seq in the log; 0 when it is empty."""
        rows = self._run(lambda conn: self._read(conn, "SELECT MAX(seq) FROM mediaedge_invalidations", ()))
        return int(rows[0][0] or 0)

    def oldest_seq(self) -> int | None:
        """The lowest seq still in the log; None when it is empty."""
        rows = self._run(lambda conn: self._read(conn, "SELECT MIN(seq) FROM mediaedge_invalidations", ()))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def prune(self, before: float) -> int:
        """Delete entries accepted before `before` (unix seconds); how many went.

        The newest entry is always kept, so the log's lowest seq tells a node whether
        it missed pruned events (its last applied seq is below that seq minus one),
        even after a long quiet spell."""
        def work(conn: Any) -> int:
            cur = conn.cursor()
            cur.execute("SELECT MAX(seq) FROM mediaedge_invalidations")
            newest = cur.fetchone()[0]
            if newest is None:
                conn.commit()
                return 0
            cur.execute(self._db.sql("DELETE FROM mediaedge_invalidations WHERE at < ? AND seq < ?"),
                        (float(before), int(newest)))
            deleted = cur.rowcount or 0
            conn.commit()
            return int(deleted)

        return self._run(work)

    def load_cursor(self, node: str) -> int:
        """The last seq `node` saved as applied; 0 when it never did."""
        q = "SELECT last_seq FROM mediaedge_node_state WHERE node = ?"
        rows = self._run(lambda conn: self._read(conn, q, (node,)))
        return int(rows[0][0]) if rows else 0

    def save_cursor(self, node: str, seq: int) -> None:
        """Record that `node` has applied every entry up to `seq`."""
        q = self._db.sql(_UPSERT_CURSOR[self.dialect])

        def work(conn: Any) -> None:
            cur = conn.cursor()
            cur.execute(q, (node, int(seq)))
            conn.commit()

        self._run(work)

    def wait_for_notify(self, timeout: float) -> bool:
        """PostgreSQL: block up to `timeout` s for an append's NOTIFY; True when one came.

        The first call opens a dedicated connection and LISTENs; notifications
        that arrive between calls wait on it, so none is lost after that.
        Callers read `since()` after every return anyway. Other databases have no
        notifications: False at once, and the caller polls on its own clock.
        """
        if self.dialect != "postgresql":
            return False
        with self._listen_lock:
            self._check_open()
            try:
                if self._listener is None:
                    conn = self._db.connect()
                    conn.autocommit = True
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listener = conn
                got = False
                for _ in self._listener.notifies(timeout=max(0.0, timeout), stop_after=1):
                    got = True
                if got:  # drain the rest so one burst of appends wakes the caller once
                    for _ in self._listener.notifies(timeout=0.001):
                        pass
                return got
            except DatabaseError:
                raise
            except Exception as e:
                close_quietly(self._listener)
                self._listener = None
                raise DatabaseError(f"invalidation log: listening failed: {first_line(e)}") from e

    def close(self) -> None:
        """Close every connection, the other threads' too. The log cannot be used after."""
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            close_quietly(conn)
        with self._listen_lock:
            close_quietly(self._listener)
            self._listener = None

    # --- statements --------------------------------------------------------

    def _create_tables(self, conn: Any) -> None:
        cur = conn.cursor()
        if self.dialect == "postgresql":
            # Two nodes starting together race on CREATE TABLE IF NOT EXISTS
            # (a unique violation in pg_type); the lock makes the second wait.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_KEY,))
        for statement in _DDL[self.dialect]:
            cur.execute(statement)
        conn.commit()

    def _read(self, conn: Any, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cur = conn.cursor()
        cur.execute(self._db.sql(query), params)
        rows = list(cur.fetchall())
        conn.commit()  # end the snapshot: MySQL's REPEATABLE READ would otherwise keep it
        return rows

    def _append(self, conn: Any, rows: list[tuple[float, str, str]]) -> list[int]:
        """Insert under the append lock (module docstring) and read back our seqs."""
        return self._locked(conn, lambda cur: self._insert(cur, rows))

    def _append_signed(self, conn: Any, rows: list[tuple[float, str, str]], signature: str, at: float) -> Accepted:
        """Under the append lock: the first answer if `signature` is known, else append and record it."""
        sql = self._db.sql

        def work(cur: Any) -> Accepted:
            cur.execute(sql("DELETE FROM mediaedge_webhook_replays WHERE at < ?"), (at - REPLAY_KEEP,))
            cur.execute(sql("SELECT accepted, seq FROM mediaedge_webhook_replays WHERE signature = ?"), (signature,))
            first = cur.fetchone()
            if first is not None:
                return Accepted(int(first[0]), int(first[1]), True)
            seqs = self._insert(cur, rows)
            cur.execute(
                sql("INSERT INTO mediaedge_webhook_replays (signature, at, accepted, seq) VALUES (?, ?, ?, ?)"),
                (signature, at, len(seqs), seqs[-1]),
            )
            return Accepted(len(seqs), seqs[-1], False)

        return self._locked(conn, work)

    def _insert(self, cur: Any, rows: list[tuple[float, str, str]]) -> list[int]:
        """Insert `rows` and read back their seqs (the append lock is held).

        Under the lock, every seq above the MAX read first is ours; reading them
        back works on every driver, where lastrowid after a multi-row insert
        does not (pymysql splits long batches, sqlite3 leaves it unset).
        """
        sql = self._db.sql
        cur.execute("SELECT MAX(seq) FROM mediaedge_invalidations")
        before = int(cur.fetchone()[0] or 0)
        cur.executemany(sql("INSERT INTO mediaedge_invalidations (at, node, event) VALUES (?, ?, ?)"), rows)
        cur.execute(sql("SELECT seq FROM mediaedge_invalidations WHERE seq > ? ORDER BY seq"), (before,))
        seqs = [int(r[0]) for r in cur.fetchall()]
        if len(seqs) != len(rows):
            raise DatabaseError(
                f"invalidation log: wrote {len(rows)} entries but found {len(seqs)};"
                " is another program writing mediaedge_invalidations?"
            )
        if self.dialect == "postgresql":
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seqs[-1])))
        return seqs

    def _locked(self, conn: Any, work: Callable[[Any], T]) -> T:
        """`work(cursor)` in one transaction holding the append lock, then COMMIT."""
        cur = conn.cursor()
        if self.dialect == "mysql":
            cur.execute("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, MYSQL_LOCK_TIMEOUT))
            if cur.fetchone()[0] != 1:
                conn.rollback()
                raise DatabaseError("invalidation log: timed out waiting for another node's append")
            conn.commit()  # start the transaction (and its snapshot) after the lock
        try:
            if self.dialect == "sqlite":
                cur.execute("BEGIN IMMEDIATE")
            elif self.dialect == "postgresql":
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_KEY,))
            result = work(cur)
            self._local.committing = True  # from here on a retry could append twice
            conn.commit()
            return result
        except BaseException:
            rollback_quietly(conn)
            raise
        finally:
            if self.dialect == "mysql":
                _release_mysql_lock(conn)

    # --- connections -----------------------------------------------------------

    def _run(self, work: Callable[[Any], T], *, phase_safe: bool = False) -> T:
        """`work(conn)` on this thread's connection; driver errors are translated here, once.

        A failure is retried by `dbapi.retry_once`, the rule every database caller
        follows: once, on a new connection, when the one used was kept from an earlier
        call and is gone. Retrying is safe for reads, the cursor upsert and the table
        creation; an append (`phase_safe`) only when it failed before its COMMIT was
        sent: after that we cannot know whether it landed. SQLite connections are never
        gone (a lock timeout already waited 30 s).
        """
        for attempt in (0, 1):
            conn, fresh = self._connection()
            self._local.committing = False
            try:
                return work(conn)
            except DatabaseError:
                raise
            except Exception as e:
                retry = retry_once(
                    attempt=attempt,
                    fresh=fresh,
                    gone=self.dialect != "sqlite" and _is_connection_error(e),
                    replay_safe=not phase_safe or not self._local.committing,
                )
                self._discard(conn)
                if not retry:
                    raise DatabaseError(f"invalidation log ({self._db.url.redacted()}): {first_line(e)}") from e
        raise AssertionError("unreachable")

    def _connection(self) -> tuple[Any, bool]:
        """(this thread's connection, fresh): fresh when opened by this call."""
        self._check_open()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, False
        conn = self._db.connect()
        if self.dialect == "sqlite":
            conn.isolation_level = None  # we issue BEGIN IMMEDIATE ourselves
        with self._lock:
            self._conns.append(conn)
        self._local.conn = conn
        return conn, True

    def _discard(self, conn: Any) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        close_quietly(conn)

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseError("invalidation log is closed")


def _decode(text: Any) -> dict[str, Any]:
    """The stored event; a damaged row becomes an object no event parser accepts."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"invalid": str(text)[:200]}


def _is_connection_error(e: Exception) -> bool:
    """A dropped or unusable connection (or a deadlock): worth one retry on a new one."""
    kinds: list[type[BaseException]] = [OSError]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        kinds += [psycopg.OperationalError, psycopg.InterfaceError]
    pymysql = sys.modules.get("pymysql")
    if pymysql is not None:
        kinds += [pymysql.err.OperationalError, pymysql.err.InterfaceError]
    return isinstance(e, tuple(kinds))


def _release_mysql_lock(conn: Any) -> None:
    try:
        cur = conn.cursor()
        cur.execute("SELECT RELEASE_LOCK(%s)", (LOCK_NAME,))
        cur.fetchall()
        conn.commit()
    except Exception:  # a dead connection has released it already
        pass
