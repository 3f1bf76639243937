"""One way to open SQLite, PostgreSQL and MySQL/MariaDB from a URL, and one way to keep them.

Every database module (the database origins in `origins/db.py` and
`origins/sqlroutes.py`, the invalidation log, import) opens connections here, so URL
parsing, driver choice and the placeholder style live in one place. Queries are
written with `?` placeholders and converted with `Database.sql`.

The connection manager lives here too: `Pool` (idle connections shared by threads)
and `retry_once`, the one retry rule every caller follows: a failed call is run again
once, on a new connection, only when the connection it used was an old one that the
driver says is gone (server restarted, idle timeout, killed), never after a timeout
and never when running it again could apply a write twice. The driver is asked
*before* the connection is closed: a closed connection always looks gone.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any, TypeVar
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit
from mediaedge.errors import DatabaseError

T = TypeVar("T")


@dataclass(frozen=True)
class DbUrl:
    dialect: str  # "sqlite" | "postgresql" | "mysql"
    path: str = ""  # sqlite file path
    host: str = "127.0.0.1"
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str = ""
    raw: str = ""

    def redacted(self) -> str:
        """The URL without its password, for log lines and errors."""
        if self.dialect == "sqlite":
            return self.raw
        auth = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.dialect}://{auth}{self.host}{port}/{self.database}"


_SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mysql+pymysql": "mysql",
}


def parse_db_url(url: str) -> DbUrl:
    """Parse `sqlite:///path`, `postgresql://u:p@h:port/db` or `mysql://u:p@h:port/db`."""
    scheme, sep, rest = url.partition("://")
    dialect = _SCHEMES.get(scheme.lower()) if sep else None
    if dialect is None:
        raise DatabaseError(
            f"unsupported database URL {url!r}: use sqlite:///PATH, postgresql://… or mysql://…"
        )
    if dialect == "sqlite":
        # sqlite:///var/x.db -> relative "var/x.db"; sqlite:////abs/x.db -> "/abs/x.db"
        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise DatabaseError(f"sqlite URL {url!r} names no file")
        return DbUrl("sqlite", path=path, raw=url)
    parts = urlsplit(url)
    database = parts.path.lstrip("/")
    if not database:
        raise DatabaseError(f"database URL {url!r} names no database")
    try:
        port = parts.port
    except ValueError as e:
        raise DatabaseError(f"database URL {url!r}: bad port") from e
    return DbUrl(
        dialect,
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        database=unquote(database),
        raw=url,
    )


class Database:
    """Connection factory for one URL. Connections are not shared across threads."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0, sqlite_busy_timeout: float = 30.0) -> None:
        self.url = parse_db_url(url)
        self.dialect = self.url.dialect
        self.connect_timeout = connect_timeout
        # SQLite waits this long for another connection's lock, opening included
        # (setting WAL reads the file header); the origin passes its --db-timeout.
        self.sqlite_busy_timeout = sqlite_busy_timeout

    def sql(self, query: str) -> str:
        """Convert `?` placeholders to the driver's style."""
        return query if self.dialect == "sqlite" else query.replace("?", "%s")

    def connect(self, setup: Callable[[Any], None] | None = None) -> Any:
        """A new connection; `setup(conn)` (session settings) runs on it, and a
        connection whose setup fails is closed before the error goes on."""
        conn = self._open()
        if setup is not None:
            try:
                setup(conn)
            except BaseException:
                close_quietly(conn)
                raise
        return conn

    def _open(self) -> Any:
        u = self.url
        try:
            if u.dialect == "sqlite":
                parent = os.path.dirname(u.path)
                if parent:
                    os.makedirs(parent, exist_ok=True)
                busy = self.sqlite_busy_timeout
                conn = sqlite3.connect(u.path, timeout=busy, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
                return conn
            if u.dialect == "postgresql":
                import psycopg

                return psycopg.connect(
                    host=u.host,
                    port=u.port or 5432,
                    user=u.user,
                    password=u.password,
                    dbname=u.database,
                    connect_timeout=max(1, int(self.connect_timeout)),
                )
            import pymysql

            return pymysql.connect(
                host=u.host,
                port=u.port or 3306,
                user=u.user or "root",
                password=u.password or "",
                database=u.database,
                connect_timeout=self.connect_timeout,
                charset="utf8mb4",
                binary_prefix=True,
            )
        except DatabaseError:
            raise
        except Exception as e:  # driver errors differ per database; translate once, here
            raise DatabaseError(f"cannot open {u.redacted()}: {first_line(e)}") from e


# --- connections: one pool, one retry rule ---------------------------------------------


def retry_once(*, attempt: int, fresh: bool, gone: bool, timeout: bool = False, replay_safe: bool = True) -> bool:
    """Whether a failed database call is run again, once, on a new connection.

    Only the first attempt (`attempt` 0), only on a connection that was not just opened
    (a fresh one failing says the server is unwell: another would too), only when the
    driver says the connection is gone (asked before it is closed), never after a
    timeout (it would double the wait for an answer that is not coming) and never when
    running the call again could apply a write twice (`replay_safe`)."""
    return attempt == 0 and not fresh and gone and not timeout and replay_safe


class Pool:
    """Idle connections shared by all threads; a connection is used by one caller at a time."""

    def __init__(self, connect: Callable[[], Any], max_idle: int = 8) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> tuple[Any, bool]:
        """(connection, fresh): fresh is False for one taken from the pool."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), False
        return self._connect(), True

    def put(self, conn: Any, healthy: bool) -> None:
        """Back to the pool when healthy and there is room; else closed."""
        if healthy:
            with self._lock:
                if not self._closed and len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                    return
        close_quietly(conn)

    def attempt(self, fn: Callable[[Any], T], *, gone: Callable[[Any, BaseException], bool],
                timeout: Callable[[BaseException], bool] = lambda e: False,
                get: Callable[[], tuple[Any, bool]] | None = None) -> tuple[T, Any]:
        """(fn(conn), conn), the connection still taken (the caller `put`s it back);
        `retry_once` decides whether a failure is tried again on a new connection.
        `get` replaces `self.get` for callers that translate opening errors."""
        take = get or self.get
        for n in range(2):
            conn, fresh = take()
            try:
                return fn(conn), conn
            except BaseException as e:
                again = retry_once(attempt=n, fresh=fresh, gone=not fresh and gone(conn, e), timeout=timeout(e))
                self.put(conn, False)  # after asking `gone`: a closed connection always looks gone
                if not again:
                    raise
        raise AssertionError("unreachable")

    def call(self, fn: Callable[[Any], T], *, gone: Callable[[Any, BaseException], bool],
             timeout: Callable[[BaseException], bool] = lambda e: False,
             get: Callable[[], tuple[Any, bool]] | None = None) -> T:
        """fn(conn) on a pooled connection, which goes back to the pool afterwards."""
        result, conn = self.attempt(fn, gone=gone, timeout=timeout, get=get)
        self.put(conn, True)
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            close_quietly(conn)


def rollback_quietly(conn: Any) -> None:
    """Undo a failed write; the caller discards the connection either way, so errors here do not matter."""
    try:
        conn.rollback()
    except Exception:
        pass


def close_quietly(conn: Any) -> None:
    """Close a connection that may be broken already (nothing to release then)."""
    if conn is None:
        return
    try:
        conn.close()
    except Exception:
        pass


def first_line(e: BaseException) -> str:
    """A driver error in one line (drivers add context lines), for messages and logs."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --- MySQL/MariaDB: one large value through the wire protocol, in pieces ------
#
# PyMySQL (like libmysqlclient) assembles a whole row, and a whole query, in
# memory. For a LONGBLOB of hundreds of MB the alternatives are worse: InnoDB
# materialises the entire blob for every SUBSTRING(), so reading in windows of w
# bytes costs size²/w (measured on MariaDB 10.11, 256 MB blob: 1 MiB windows
# 1 MB/s, 16 MiB windows 13 MB/s), and appending with CONCAT() rewrites the blob
# each time (5-8 MB/s). One statement streamed here: 131 MB/s out, ~70 MB/s in.
# Both still need the value to fit in the server's max_allowed_packet; MySQL
# offers no way around that (CONCAT and long data are capped by it too).
#
# These helpers speak the documented packet format (3-byte length, 1-byte
# sequence number, payloads of 2**24-1 bytes continued in the next packet) on
# PyMySQL's socket, and use its own _read_bytes/_write_bytes/_read_packet so
# errors come out as PyMySQL errors. Pinned PyMySQL 1.1.x; tested in
# tests/test_origin_db.py against a real MariaDB across packet boundaries.

_MYSQL_MAX_PACKET = 2**24 - 1
_MYSQL_ESCAPES = (  # backslash first, so the escapes added later are not doubled
    (b"\\", b"\\\\"), (b"\0", b"\\0"), (b"\n", b"\\n"), (b"\r", b"\\r"),
    (b"'", b"\\'"), (b'"', b'\\"'), (b"\x1a", b"\\Z"),
)


def mysql_escape_bytes(data: bytes, *, no_backslash_escapes: bool = False) -> bytes:
    """`data` escaped for the inside of a '...' literal (the same escapes as PyMySQL)."""
    if no_backslash_escapes:
        return data.replace(b"'", b"''")
    for raw, escaped in _MYSQL_ESCAPES:
        data = data.replace(raw, escaped)
    return data


def mysql_send_query(conn: Any, parts: Iterable[bytes]) -> int:
    """Send one COM_QUERY whose text is the concatenation of `parts`, without joining them.

    Returns the affected row count. If iterating `parts` raises, the statement is
    left half-sent: the caller must close the connection (the server then
    discards the statement and rolls back its open transaction).
    """
    from pymysql.constants import COMMAND

    buf = bytearray([COMMAND.COM_QUERY])
    seq = 0

    def send(payload: bytes | bytearray) -> None:
        nonlocal seq
        conn._write_bytes(len(payload).to_bytes(3, "little") + bytes([seq]) + payload)
        seq = (seq + 1) % 256

    for part in parts:
        buf += part
        while len(buf) >= _MYSQL_MAX_PACKET:
            send(buf[:_MYSQL_MAX_PACKET])
            del buf[:_MYSQL_MAX_PACKET]
    send(buf)  # the last packet is shorter than the maximum, possibly empty
    conn._next_seq_id = seq
    return int(conn._read_query_result())


def mysql_open_value(conn: Any, query: str, chunk_size: int = 1 << 20) -> tuple[int, Iterator[bytes]] | None:
    """Run `query` (one column, at most one row) and stream that value.

    Returns None when there is no row, else (length, chunks); NULL reads as
    length 0. The column count, definition and row header are read before this
    returns, so errors in the query raise here. Until `chunks` is exhausted the
    connection is busy; a partly read value leaves it unusable, so closing the
    iterator early closes the connection.
    """
    from pymysql.constants import COMMAND

    # As PyMySQL's own query(): _binary'...' literals carry raw bytes as surrogates.
    conn._execute_command(COMMAND.COM_QUERY, query.encode(conn.encoding, "surrogateescape"))
    columns = conn._read_packet().read_length_encoded_integer()
    if columns != 1:
        conn._force_close()
        raise DatabaseError(f"expected one column, got {columns}")
    conn._read_packet()  # column definition
    conn._read_packet()  # EOF (PyMySQL does not negotiate CLIENT_DEPRECATE_EOF)
    length = _mysql_packet_header(conn)
    head = conn._read_bytes(min(length, 9))
    if head[0] == 0xFE and length < 9:  # EOF: no row
        return None
    if head[0] == 0xFF:  # error packet in place of the row (e.g. the query was killed)
        from pymysql.protocol import MysqlPacket

        MysqlPacket(head + conn._read_bytes(length - len(head)), conn.encoding).raise_for_error()
    size, used = _mysql_lenenc(head)
    body = _mysql_value_chunks(conn, head[used:], length - len(head), length, size, chunk_size)
    return size, body


def _mysql_packet_header(conn: Any) -> int:
    header = conn._read_bytes(4)
    if header[3] != conn._next_seq_id:
        conn._force_close()
        raise DatabaseError("MySQL protocol out of sync")
    conn._next_seq_id = (conn._next_seq_id + 1) % 256
    return int.from_bytes(header[:3], "little")


def _mysql_lenenc(head: bytes) -> tuple[int, int]:
    """(value length, bytes used) of a length-encoded string header; NULL (0xFB) is 0."""
    first = head[0]
    if first < 0xFB:
        return first, 1
    if first == 0xFB:
        return 0, 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(head[1 : 1 + width], "little"), 1 + width


def _mysql_value_chunks(
    conn: Any, first: bytes, left_in_packet: int, packet_len: int, size: int, chunk_size: int
) -> Iterator[bytes]:
    done = False
    try:
        remaining = size
        if first:
            remaining -= len(first)
            yield first
        while remaining:
            if left_in_packet == 0:  # a full packet ended: the row continues in the next one
                packet_len = left_in_packet = _mysql_packet_header(conn)
                continue
            n = min(chunk_size, left_in_packet, remaining)
            data = conn._read_bytes(n)
            left_in_packet -= n
            remaining -= n
            yield data
        while left_in_packet == 0 and packet_len == _MYSQL_MAX_PACKET:  # trailing empty packet
            packet_len = left_in_packet = _mysql_packet_header(conn)
        if left_in_packet:
            conn._force_close()
            raise DatabaseError("MySQL row longer than its value")
        if not conn._read_packet().is_eof_packet():
            conn._force_close()
            raise DatabaseError("MySQL query returned more than one row")
        done = True
    finally:
        if not done and conn._sock is not None:
            conn._force_close()
