"""The database origin: media kept in SQLite, PostgreSQL or MySQL/MariaDB.

Profiles (contract section 6):
  native    our table `media_files`, keyed by the decoded request path; created
            when missing; written by `put` (the importer).
  magento2  Magento 2's `media_storage_file_storage`, read-only.
  magento1  Magento 1's `core_file_storage`, read-only.

Blocking by design. Callers run every call in a worker thread and may resume a
`read()` iterator on a different thread each time, so a read owns one pooled
connection for its whole life (a thread-local connection would be shared by two
reads resumed on one thread). Connections live in a small lock-protected pool;
a pooled connection found broken is replaced once, then the error surfaces.

Reads never hold a whole blob. Each database streams differently, measured on
a 500 MB blob (see the notes on each dialect): SQLite through incremental blob
I/O, PostgreSQL through `substring()` windows over uncompressed out-of-line
storage, MySQL through one statement whose single value is streamed off the
wire (InnoDB reads the entire blob for every SUBSTRING, so windows cost size²).
Reads are snapshot-consistent: one read transaction per read, and every window
names the row's key and its stamp (revision / upload_time), so a row replaced
or deleted between `lookup` and `read` raises `RowChanged`, and a row replaced
during a read keeps yielding the bytes of the version the read began with.

Errors: `OriginError` (one line, with an HTTP status hint) for everything the
database does wrong; `ValueError` for a caller's impossible range.
"""
from __future__ import annotations

import calendar
import hashlib
import itertools
import math
import struct
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, TypeVar
from collections.abc import Callable, Iterable, Iterator

from mediaedge.dbapi import (
    Database,
    Pool,
    first_line,
    mysql_escape_bytes,
    mysql_open_value,
    mysql_send_query,
    rollback_quietly,
)
from mediaedge.errors import DatabaseError, LookupTimeout, OriginError, RowChanged

# Longest path `media_files` can hold: the primary key of a MySQL VARBINARY
# column must stay under InnoDB's 3072-byte index limit; 1024 leaves room.
MAX_PATH_BYTES = 1024

PUT_CHUNK = 4 << 20  # bytes read from the file per write during `put`

T = TypeVar("T")


@dataclass(frozen=True)
class DbObject:
    path: str  # decoded request path, e.g. '/media/catalog/a.jpg' (the sql profile: the target)
    revision: str | None  # None: the body's hash, known once read (the sql profile without a revision column)
    content_type: str | None  # stored type; None: the caller guesses from the name
    size: int | None  # None: known once read (the sql profile's base64/hex columns)
    sha256: str | None
    tags: tuple[str, ...]
    updated_at: float | None  # unix seconds
    locator: tuple[Any, ...]  # (key, stamp): how read() finds this version of the row


@dataclass(frozen=True)
class RevisionProbe:
    """What revalidating a database entry learns: is there a row, and its revision
    (None: the row exists but its revision cannot be read without its body)."""

    found: bool
    revision: str | None


def whole_seconds(timeout: float) -> int:
    """A timeout for settings that take whole seconds (at least 1): rounded up, never shorter."""
    return max(1, math.ceil(timeout))


# --- profiles -------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    name: str
    key: str  # primary key the locator carries (SQLite uses rowid instead, for blob I/O)
    stamp: str  # a column that changes whenever the content does
    native: bool


PROFILES = {
    "native": _Table("media_files", "path", "revision", native=True),
    "magento2": _Table("media_storage_file_storage", "file_id", "upload_time", native=False),
    "magento1": _Table("core_file_storage", "file_id", "upload_time", native=False),
}

_NATIVE_COLUMNS = "path, revision, content_type, size, sha256, tags, updated_at"


# --- pure helpers -----------------------------------------------------------------


def relative_media_path(path: str, prefixes: Iterable[str]) -> str | None:
    """The part of `path` after its (longest) media prefix, or None.

    None also for anything that is not a plain file path below the prefix: an
    empty, '.' or '..' segment, or a NUL. The data plane rejects these first;
    this keeps the origin from ever being asked for a row outside the media tree.
    """
    for prefix in sorted(prefixes, key=len, reverse=True):
        if path.startswith(prefix):
            rel = path[len(prefix) :]
            break
    else:
        return None
    if "\0" in rel or any(seg in ("", ".", "..") for seg in rel.split("/")):
        return None
    return rel


def split_magento_path(rel: str) -> tuple[str, str]:
    """'catalog/product/a/b.jpg' -> ('catalog/product/a', 'b.jpg'); a top-level file has directory ''."""
    directory, _, filename = rel.rpartition("/")
    return directory, filename


def same_magento_directory(stored: str | None, wanted: str) -> bool:
    """Byte-exact directory match; Magento stores NULL for top-level files ('.' and '' seen too)."""
    if wanted == "":
        return stored in (None, "", ".")
    return stored == wanted


def magento_revision(upload_time: float | None, file_id: int, size: int) -> str:
    """Stable across nodes: upload time in UTC, row id and length, e.g. '20240105123000-42-5120'."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(upload_time)) if upload_time is not None else "0"
    return f"{stamp}-{file_id}-{size}"


def to_unix(value: Any) -> float | None:
    """Seconds since the epoch from a DB value; naive datetimes are UTC (sessions are set to UTC)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (bytes, str)):
        value = datetime.fromisoformat(_text(value))
    if value.tzinfo is None:
        return float(calendar.timegm(value.timetuple()) + value.microsecond / 1e6)
    return float(value.timestamp())


def _text(value: Any) -> Any:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, (bytes, bytearray)) else value


def _pieces(block: bytes, size: int) -> Iterator[bytes]:
    if not block:
        return
    if len(block) <= size:
        yield block
        return
    view = memoryview(block)
    for i in range(0, len(block), size):
        yield bytes(view[i : i + size])


def _checked_chunks(fileobj: BinaryIO, size: int, sha256: str, chunk: int) -> Iterator[bytes]:
    """Exactly `size` bytes of `fileobj`; raises, before the last byte is consumed, if they are not as promised."""
    digest = hashlib.sha256()
    left = size
    while left:
        data = fileobj.read(min(chunk, left))
        if not data:
            raise OriginError(f"file ended {left} bytes short of its size {size}", status_hint=500)
        digest.update(data)
        left -= len(data)
        yield data
    if fileobj.read(1):
        raise OriginError(f"file is longer than its size {size}", status_hint=500)
    if digest.hexdigest() != sha256.lower():
        raise OriginError("file content does not match its sha256", status_hint=500)


def _window_reads(fetch: Callable[[int, int], Iterable[bytes] | None], start: int, end: int,
                  size: int, window: int) -> Iterator[bytes]:
    """Bytes [start, end) of a row in windows of at most `window` bytes.

    `fetch(offset, n)` returns the window's bytes (one or more pieces), or None
    when no row has the locator's key and stamp. The first window is fetched
    before this returns, so a stale connection or a changed row shows at once.
    A read that reaches the end asks for one byte more, so a row longer than
    its recorded size is caught.
    """
    stop = end + 1 if end == size else end
    first = fetch(start, min(window, stop - start)) if start < stop else ()
    if first is None:
        raise RowChanged("row was replaced or deleted since it was looked up")
    return _window_rest(fetch, first, start, end, stop, size, window)


def _window_rest(fetch: Callable[[int, int], Iterable[bytes] | None], pieces: Iterable[bytes] | None,
                 pos: int, end: int, stop: int, size: int, window: int) -> Iterator[bytes]:
    while pos < stop:
        n = min(window, stop - pos)
        if pieces is None:
            pieces = fetch(pos, n)
            if pieces is None:
                raise RowChanged("row was replaced or deleted during the read")
        got = 0
        for piece in pieces:
            got += len(piece)
            if pos + got > end:
                raise OriginError(f"row content is longer than its recorded size {size}")
            yield piece
        if got < n:
            if pos + got == end:
                return
            raise OriginError(f"row content is shorter than its recorded size {size}")
        pos += got
        pieces = None


def _then(blocks: Iterator[bytes], finish: Callable[[], None]) -> Iterator[bytes]:
    yield from blocks
    finish()


# --- dialects: what differs between the three databases ------------------------------
#
# How each bounds one lookup by --db-timeout (`setup`, `bound_sql`, `bounded`,
# `is_timeout`). What is bounded is the lookup's statements, and any wait for a
# lock; never the streaming of a blob found by it, which may take minutes:
#
#   SQLite      busy timeout (the wait for another connection's lock, opening
#               included) = the timeout; the lookup runs in one read transaction,
#               so it waits for a lock once; a progress handler interrupts a
#               statement past the deadline. The handler is removed afterwards.
#   PostgreSQL  session statement_timeout and lock_timeout = the timeout. Blob
#               windows are statements of 4 MiB; a read of several windows sets
#               statement_timeout to 0 for its own transaction (SET LOCAL).
#   MySQL       session lock_wait_timeout (table/metadata locks: LOCK TABLES) and
#   MariaDB     innodb_lock_wait_timeout (row locks) = the timeout in whole seconds;
#               each lookup statement carries its own limit (MariaDB's
#               SET STATEMENT max_statement_time=S FOR ..., MySQL's
#               MAX_EXECUTION_TIME(ms) hint), and PyMySQL's read timeout is set
#               for the lookup alone (a server that stops answering). A blob is
#               one statement streamed off the wire; it carries no limit.


# SQLite's own ceiling for a memory map is 2 GB by default (SQLITE_MAX_MMAP_SIZE); a
# larger value is capped there, and offsets past it are reached with reads.
SEEK_MMAP_SIZE = 1 << 31


class _Sqlite:
    """Incremental blob I/O (`blobopen`) inside one read transaction: WAL gives the snapshot."""

    def __init__(self) -> None:
        import sqlite3

        self.errors = (sqlite3.Error,)

    def is_disconnect(self, conn: Any, e: BaseException) -> bool:
        return False

    def is_unstorable_name(self, e: BaseException) -> bool:
        return False

    def key_column(self, table: _Table) -> str:
        return "rowid"

    def native_ddl(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS media_files ("
            " path TEXT NOT NULL PRIMARY KEY,"  # default BINARY collation: byte-exact, case-sensitive
            " revision TEXT NOT NULL, content_type TEXT, size INTEGER NOT NULL, sha256 TEXT,"
            " tags TEXT, updated_at REAL, content BLOB NOT NULL)"
        ]

    def setup(self, conn: Any, timeout: float | None) -> None:
        conn.isolation_level = None  # explicit transactions only; busy timeout: mediaedge.dbapi

    def bound_sql(self, sql: str, timeout: float) -> str:
        return sql

    @contextmanager
    def bounded(self, conn: Any, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        # Called every 1000 VM instructions; a true result interrupts the statement.
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
        try:
            conn.execute("BEGIN")  # the first SELECT takes the read lock for all of them
            try:
                yield
            finally:
                rollback_quietly(conn)  # read-only: nothing to keep
        finally:
            conn.set_progress_handler(None, 0)

    def is_timeout(self, e: BaseException) -> bool:
        import sqlite3

        text = str(e).lower()
        return isinstance(e, sqlite3.OperationalError) and ("interrupted" in text or "locked" in text)

    def path_param(self, path: str) -> Any:
        return path

    def reader(self, conn: Any, table: _Table, locator: tuple[Any, ...], start: int, end: int,
               size: int, chunk: int) -> Iterator[bytes]:
        """Checks the row now, in a read transaction that the returned iterator ends."""
        key, stamp = locator
        if start > 0:
            # Byte N of a blob is reached by following its chain of overflow pages from the
            # first (SQLite's file format). Through a memory map that costs a touch of each
            # page's 4-byte link; through read() a copy of every page up to N (a seek near
            # the end of a 32 MiB row: 32 MiB read, 6x slower). Set once per connection.
            conn.execute(f"PRAGMA mmap_size = {SEEK_MMAP_SIZE}")
        conn.execute("BEGIN")
        row = conn.execute(
            f"SELECT length(content) FROM {table.name} WHERE rowid = ? AND {table.stamp} IS ?", (key, stamp)
        ).fetchone()
        if row is None:
            raise RowChanged("row was replaced or deleted since it was looked up")
        if (row[0] or 0) != size:
            raise OriginError(f"row content is {row[0] or 0} bytes, its recorded size {size}")
        return _then(self._blob(conn, table, key, start, end, chunk), lambda: conn.execute("COMMIT"))

    def _blob(self, conn: Any, table: _Table, key: int, start: int, end: int, chunk: int) -> Iterator[bytes]:
        if start == end:
            return
        with conn.blobopen(table.name, "content", key, readonly=True) as blob:
            blob.seek(start)
            pos = start
            while pos < end:
                data = blob.read(min(chunk, end - pos))
                if not data:
                    raise OriginError("row content ended early")
                pos += len(data)
                yield data

    def insert(self, conn: Any, row: tuple[Any, ...], chunks: Iterator[bytes]) -> None:
        size = row[3]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM media_files WHERE path = ?", (row[0],))
            cur = conn.execute(
                f"INSERT INTO media_files ({_NATIVE_COLUMNS}, content) VALUES (?, ?, ?, ?, ?, ?, ?, zeroblob(?))",
                (*row, size),
            )
            if size:
                with conn.blobopen("media_files", "content", cur.lastrowid) as blob:
                    for data in chunks:
                        blob.write(data)
            else:
                for _ in chunks:  # still run the checks
                    pass
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise


class _Postgres:
    """`substring()` windows; more than one window runs in a REPEATABLE READ transaction.

    The native `content` column is STORAGE EXTERNAL (out of line, uncompressed),
    so a window reads only its own TOAST chunks. 4 MiB windows: ~195 MB/s on a
    500 MB blob with ~12 MB RSS growth; 1 MiB 176 MB/s; 16 MiB no faster and
    60 MB more memory (the value is copied several times on its way to Python).
    Writes stream through COPY ... FROM STDIN (FORMAT BINARY): one pass.
    """

    window = 4 << 20

    def __init__(self) -> None:
        import psycopg

        self.errors = (psycopg.Error,)

    def is_disconnect(self, conn: Any, e: BaseException) -> bool:
        return bool(conn.broken or conn.closed)

    def is_unstorable_name(self, e: BaseException) -> bool:
        return False

    def key_column(self, table: _Table) -> str:
        return table.key

    def native_ddl(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS media_files ("
            ' path TEXT COLLATE "C" PRIMARY KEY,'  # deterministic collation: equality is byte-exact
            " revision TEXT NOT NULL, content_type TEXT, size BIGINT NOT NULL, sha256 TEXT,"
            " tags TEXT, updated_at DOUBLE PRECISION, content BYTEA NOT NULL)",
            "ALTER TABLE media_files ALTER COLUMN content SET STORAGE EXTERNAL",
        ]

    def setup(self, conn: Any, timeout: float | None) -> None:
        conn.autocommit = True
        conn.execute("SET TIME ZONE 'UTC'")
        if timeout is not None:
            ms = max(1, round(timeout * 1000))
            conn.execute(f"SET statement_timeout = {ms}")
            conn.execute(f"SET lock_timeout = {ms}")

    def bound_sql(self, sql: str, timeout: float) -> str:
        return sql

    def bounded(self, conn: Any, timeout: float) -> AbstractContextManager[None]:
        return nullcontext()  # the session's statement_timeout and lock_timeout (setup)

    def is_timeout(self, e: BaseException) -> bool:
        import psycopg

        return isinstance(e, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable))

    def path_param(self, path: str) -> Any:
        return path

    def reader(self, conn: Any, table: _Table, locator: tuple[Any, ...], start: int, end: int,
               size: int, chunk: int) -> Iterator[bytes]:
        """Runs the first window now. A read of one window is one statement, its own
        snapshot; a longer one runs in a REPEATABLE READ transaction."""
        key, stamp = locator
        cur = conn.cursor(binary=True)  # bytea as raw bytes, not hex text (2x faster)
        sql = (
            f"SELECT substring(content from %s for %s) FROM {table.name}"
            f" WHERE {table.key} = %s AND {table.stamp} IS NOT DISTINCT FROM %s"
        )

        def fetch(offset: int, n: int) -> Iterable[bytes] | None:
            row = cur.execute(sql, (offset + 1, n, key, stamp)).fetchone()
            return None if row is None else (row[0] or b"",)

        if end - start + 1 <= self.window:
            return _window_reads(fetch, start, end, size, self.window)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SET LOCAL statement_timeout = 0")  # --db-timeout bounds lookups, not streams
        return _then(_window_reads(fetch, start, end, size, self.window), lambda: conn.execute("COMMIT"))

    def insert(self, conn: Any, row: tuple[Any, ...], chunks: Iterator[bytes]) -> None:
        conn.execute("BEGIN")
        try:
            conn.execute("DELETE FROM media_files WHERE path = %s", (row[0],))
            with conn.cursor().copy(
                f"COPY media_files ({_NATIVE_COLUMNS}, content) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(_pg_copy_header(row))
                for data in chunks:
                    copy.write(data)
                copy.write(struct.pack("!h", -1))  # end of data
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise


def _pg_copy_header(row: tuple[Any, ...]) -> bytes:
    """COPY BINARY file header, then one tuple up to the content's length word (the bytes follow)."""
    path, revision, content_type, size, sha256, tags, updated_at = row
    out = [b"PGCOPY\n\xff\r\n\x00", struct.pack("!iih", 0, 0, 8)]

    def text(v: str | None) -> bytes:
        if v is None:
            return struct.pack("!i", -1)
        b = v.encode("utf-8")
        return struct.pack("!i", len(b)) + b

    out += [text(path), text(revision), text(content_type), struct.pack("!iq", 8, size), text(sha256), text(tags)]
    out.append(struct.pack("!id", 8, updated_at) if updated_at is not None else struct.pack("!i", -1))
    out.append(struct.pack("!i", size))
    return b"".join(out)


class _Mysql:
    """One streamed statement per read; windows only beyond max_allowed_packet.

    InnoDB materialises the whole blob for every SUBSTRING(), so a window of w
    bytes over a blob of s bytes costs s: 16 MiB windows over 256 MB ran at
    13 MB/s. A single `SELECT SUBSTRING(content, start, length)` streamed off
    the wire (mediaedge.dbapi.mysql_open_value) reads the blob once: ~130 MB/s.
    The server refuses to send a value larger than max_allowed_packet, so longer
    ranges fall back to windows of that size inside one consistent snapshot.
    Writes send the blob as one escaped literal, streamed (mysql_send_query):
    the blob must fit in max_allowed_packet, as it must for Magento itself.
    """

    def __init__(self) -> None:
        import pymysql

        self.errors = (pymysql.err.Error,)
        self.max_packet = 16 << 20  # replaced by the server's value at the first connection
        self.mariadb = True  # replaced at the first connection: the statement limits differ

    # PyMySQL raises OperationalError for most server errors; these codes mean the
    # connection is gone: server gone away / lost (2006, 2013, 2055), killed (1927),
    # closed for inactivity (MariaDB 4031).
    _GONE = {2006, 2013, 2055, 1927, 4031}

    def is_disconnect(self, conn: Any, e: BaseException) -> bool:
        import pymysql

        code = e.args[0] if isinstance(e, pymysql.err.Error) and e.args else None
        return not conn.open or isinstance(e, pymysql.err.InterfaceError) or code in self._GONE

    def is_unstorable_name(self, e: BaseException) -> bool:
        """Illegal mix of collations: e.g. an emoji asked of Magento's utf8mb3 columns,
        which cannot hold it, so no row has that name."""
        return bool(e.args) and e.args[0] in (1267, 1270, 1271)

    def key_column(self, table: _Table) -> str:
        return table.key

    def native_ddl(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS media_files ("
            " path VARBINARY(1024) NOT NULL PRIMARY KEY,"  # binary: byte-exact, case-sensitive
            " revision VARCHAR(255) NOT NULL, content_type VARCHAR(255) NULL, size BIGINT NOT NULL,"
            " sha256 CHAR(64) CHARACTER SET ascii NULL, tags TEXT NULL, updated_at DOUBLE NULL,"
            " content LONGBLOB NOT NULL"
            ") ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ]

    # Statement timeouts (MariaDB 1969, MySQL 3024), lock waits (1205; 1317: interrupted).
    _TIMEOUTS = {1969, 3024, 1205, 1317}

    def setup(self, conn: Any, timeout: float | None) -> None:
        conn.autocommit(True)  # else every SELECT opens a REPEATABLE READ snapshot that pooling keeps alive
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("SELECT @@max_allowed_packet, VERSION()")
            packet, version = cur.fetchone()
            self.max_packet = int(packet)
            self.mariadb = "mariadb" in str(version).lower()
            if timeout is not None:
                s = whole_seconds(timeout)
                cur.execute(f"SET SESSION lock_wait_timeout = {s}, innodb_lock_wait_timeout = {s}")

    def bound_sql(self, sql: str, timeout: float) -> str:
        if self.mariadb:
            return f"SET STATEMENT max_statement_time = {timeout:.3f} FOR {sql}"
        ms = max(1, round(timeout * 1000))
        return sql.replace("SELECT ", f"SELECT /*+ MAX_EXECUTION_TIME({ms}) */ ", 1)

    @contextmanager
    def bounded(self, conn: Any, timeout: float) -> Iterator[None]:
        """PyMySQL's read timeout for the lookup alone: the server's own limits answer
        first; this one catches a server (or network) that does not answer at all."""
        before = conn._read_timeout
        conn._read_timeout = timeout + 1.0
        try:
            yield
        finally:
            conn._read_timeout = before

    def is_timeout(self, e: BaseException) -> bool:
        import pymysql

        if not isinstance(e, pymysql.err.Error) or not e.args:
            return False
        return e.args[0] in self._TIMEOUTS or (e.args[0] == 2013 and "timed out" in str(e))

    def path_param(self, path: str) -> Any:
        return path.encode("utf-8")

    def reader(self, conn: Any, table: _Table, locator: tuple[Any, ...], start: int, end: int,
               size: int, chunk: int) -> Iterator[bytes]:
        """Runs the first statement now; more than one only beyond max_allowed_packet,
        then inside one consistent snapshot."""
        key, stamp = locator
        cur = conn.cursor()
        sql = (
            f"SELECT SUBSTRING(content, %s, %s) FROM {table.name}"
            f" WHERE {table.key} = %s AND {table.stamp} <=> %s"
        )
        window = max(1 << 20, self.max_packet - (64 << 10))

        def fetch(offset: int, n: int) -> Iterable[bytes] | None:
            opened = mysql_open_value(conn, cur.mogrify(sql, (offset + 1, n, key, stamp)), chunk)
            return None if opened is None else opened[1]

        if end - start + 1 <= window:
            return _window_reads(fetch, start, end, size, window)
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        return _then(_window_reads(fetch, start, end, size, window), conn.commit)

    def insert(self, conn: Any, row: tuple[Any, ...], chunks: Iterator[bytes]) -> None:
        size = row[3]
        if size + (64 << 10) > self.max_packet:
            raise OriginError(
                f"{size} bytes do not fit in the server's max_allowed_packet ({self.max_packet}); raise it",
                status_hint=500,
            )
        no_backslash = bool(conn.server_status & 512)  # SERVER_STATUS_NO_BACKSLASH_ESCAPES
        with conn.cursor() as cur:
            head = cur.mogrify(
                f"REPLACE INTO media_files ({_NATIVE_COLUMNS}, content) VALUES (%s, %s, %s, %s, %s, %s, %s, _binary'",
                (self.path_param(row[0]), *row[1:]),
            )
            # The server's lexer scans a long binary literal ~2.5x faster when the
            # client character set is binary (70 vs 23-31 MB/s): no charset checks.
            cur.execute("SET NAMES binary")
            # One autocommitted statement: if `chunks` raises, the statement is
            # never completed, the caller closes the connection, nothing changes.
            mysql_send_query(
                conn,
                itertools.chain(
                    (head.encode("utf-8", "surrogateescape"),),
                    (mysql_escape_bytes(c, no_backslash_escapes=no_backslash) for c in chunks),
                    (b"')",),
                ),
            )
            cur.execute("SET NAMES utf8mb4")


_DIALECTS: dict[str, Callable[[], Any]] = {"sqlite": _Sqlite, "postgresql": _Postgres, "mysql": _Mysql}


# --- connections ------------------------------------------------------------------------


# --- the origin ----------------------------------------------------------------------------


class _PooledOrigin:
    """What both database origins (this one and `sqlroutes.SqlRouteOrigin`) share: pooled
    connections (`dbapi.Pool`, its one retry rule) and driver errors translated into one
    OriginError here and nowhere else."""

    _db: Database
    _drv: Any
    _pool: Pool
    _errors: tuple[type[BaseException], ...]

    def _timeout_of(self, e: BaseException) -> LookupTimeout | None:
        """The driver error `e` as a LookupTimeout when it means a time limit ran out."""
        return None

    def _is_timeout(self, e: BaseException) -> bool:
        return isinstance(e, LookupTimeout) or self._timeout_of(e) is not None

    def _get(self) -> tuple[Any, bool]:
        with self._translated():
            try:
                return self._pool.get()
            except DatabaseError as e:  # one line naming the database (SQLite: a locked file's busy timeout)
                timeout = self._timeout_of(e.__cause__) if e.__cause__ is not None else None
                if timeout is not None:
                    raise timeout from e
                raise OriginError(str(e)) from e

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Driver errors become one OriginError, translated here and nowhere else."""
        try:
            yield
        except OriginError:
            raise
        except self._errors as e:
            timeout = self._timeout_of(e)
            if timeout is not None:
                raise timeout from e
            raise OriginError(f"database origin {self._db.url.redacted()}: {first_line(e)}") from e

    def _call(self, fn: Callable[[Any], T]) -> T:
        """fn(conn) on a pooled connection, which goes back to the pool afterwards."""
        with self._translated():
            return self._pool.call(fn, gone=self._drv.is_disconnect, timeout=self._is_timeout, get=self._get)

    def _attempt(self, fn: Callable[[Any], T]) -> tuple[T, Any]:
        """(fn(conn), conn); a pooled connection found broken (server restarted, idle
        timeout, killed) is replaced by a fresh one once (`dbapi.retry_once`), then the
        error surfaces."""
        with self._translated():
            return self._pool.attempt(fn, gone=self._drv.is_disconnect, timeout=self._is_timeout, get=self._get)


class DatabaseOrigin(_PooledOrigin):
    """Media rows of one database and profile, for the data plane and the importer."""

    def __init__(self, url: str, profile: str = "native", *, media_prefixes: tuple[str, ...] = ("/media/",),
                 create: bool = True, connect_timeout: float = 5.0, lookup_timeout: float | None = None) -> None:
        """`lookup_timeout` (--db-timeout): the bound on one lookup, past which it raises
        `LookupTimeout`; None leaves lookups unbounded (the importer's writes)."""
        if profile not in PROFILES:
            raise OriginError(f"unknown origin profile {profile!r}: use native, magento2 or magento1")
        self._lookup_timeout = lookup_timeout
        try:
            self._db = Database(url, connect_timeout=connect_timeout,
                                sqlite_busy_timeout=30.0 if lookup_timeout is None else lookup_timeout)
        except DatabaseError as e:
            raise OriginError(str(e)) from e
        self.profile = profile
        self.dialect = self._db.dialect
        self._table = PROFILES[profile]
        self._prefixes = tuple(media_prefixes)
        self._drv = _DIALECTS[self.dialect]()
        self._errors = (*self._drv.errors, DatabaseError, OSError)
        self._pool = Pool(self._connect)
        self._call(lambda conn: self._check_schema(conn, create))

    # public API

    def lookup(self, path: str) -> DbObject | None:
        """The row serving request path `path` (already percent-decoded), or None."""
        rel = relative_media_path(path, self._prefixes)
        try:
            too_long = len(path.encode("utf-8")) > MAX_PATH_BYTES
        except UnicodeEncodeError:  # lone surrogates: no row can have this name
            return None
        if rel is None or too_long:
            return None
        found: DbObject | None
        if self._table.native:
            found = self._call(lambda conn: self._bounded(conn, lambda: self._lookup_native(conn, path)))
        else:
            found = self._call(lambda conn: self._bounded(conn, lambda: self._lookup_magento(conn, path, rel)))
        return found

    meta = lookup

    def can_probe_revision(self, path: str) -> bool:
        """Every profile of this origin knows a row's revision without reading its blob."""
        return True

    def revision_of(self, path: str) -> RevisionProbe:
        """The revision of the row serving `path`, its blob unread (revalidation).

        Native rows: the `revision` column alone. Magento rows: their revision is made
        of upload time, id and length, which the (blob-free) lookup reads."""
        if not self._table.native:
            obj = self.lookup(path)
            return RevisionProbe(obj is not None, obj.revision if obj is not None else None)
        rel = relative_media_path(path, self._prefixes)
        try:
            too_long = len(path.encode("utf-8")) > MAX_PATH_BYTES
        except UnicodeEncodeError:
            return RevisionProbe(False, None)
        if rel is None or too_long:
            return RevisionProbe(False, None)
        sql = self._lookup_sql("SELECT path, revision FROM media_files WHERE path = ?")
        row = self._call(lambda conn: self._bounded(
            conn, lambda: _fetchone(conn, sql, (self._drv.path_param(path),))))
        if row is None or _text(row[0]) != path:
            return RevisionProbe(False, None)
        return RevisionProbe(True, _text(row[1]))

    def read(self, obj: DbObject, start: int = 0, end: int | None = None,
             chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Bytes [start, end) of `obj` in pieces of at most `chunk_size`, from one snapshot.

        A full read of a native row with a sha256 is verified; on a mismatch the
        last piece is withheld and OriginError raised, so no consumer sees a
        complete body. Close the iterator if you stop early.
        """
        if obj.size is None:  # only the sql profile makes these, and reads them itself
            raise ValueError(f"{obj.path}: size unknown")
        stop = obj.size if end is None else end
        if not 0 <= start <= stop <= obj.size or chunk_size <= 0:
            raise ValueError(f"bad range [{start}, {stop}) for {obj.size} bytes")
        return self._stream(obj, start, stop, chunk_size)

    def put(self, path: str, fileobj: BinaryIO, *, size: int, sha256: str, revision: str,
            content_type: str | None, tags: str | None = None, updated_at: float | None = None) -> None:
        """Insert or replace the native row for `path`, streaming `size` bytes from `fileobj`.

        The bytes are checked against `size` and `sha256` on the way in; on a
        mismatch nothing is written and OriginError is raised.
        """
        if not self._table.native:
            raise OriginError(f"the {self.profile} profile is read-only", status_hint=500)
        if not path.startswith("/") or "\0" in path or len(path.encode("utf-8")) > MAX_PATH_BYTES:
            raise OriginError(f"path not storable (must start with '/', at most {MAX_PATH_BYTES} bytes)",
                              status_hint=500)
        row = (path, revision, content_type, size, sha256.lower(), tags,
               time.time() if updated_at is None else float(updated_at))
        chunks = _checked_chunks(fileobj, size, sha256, PUT_CHUNK)
        conn, _fresh = self._get()
        ok = False
        try:
            with self._translated():
                self._drv.insert(conn, row, chunks)
            ok = True
        finally:
            self._pool.put(conn, ok)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> DatabaseOrigin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # connections and errors

    def _connect(self) -> Any:
        return self._db.connect(lambda conn: self._drv.setup(conn, self._lookup_timeout))

    def _bounded(self, conn: Any, lookup: Callable[[], T]) -> T:
        """`lookup()` within --db-timeout on `conn` (the dialect's way, see the dialects' notes)."""
        timeout = self._lookup_timeout
        if timeout is None:
            return lookup()
        try:
            with self._drv.bounded(conn, timeout):
                return lookup()
        except self._drv.errors as e:
            if self._drv.is_timeout(e):
                raise LookupTimeout(
                    f"database origin {self._db.url.redacted()}: lookup took longer than"
                    f" --db-timeout ({timeout:g} s): {first_line(e)}"
                ) from e
            raise

    def _lookup_sql(self, sql: str) -> str:
        """A lookup statement in the driver's placeholder style, with the dialect's time limit."""
        sql = self._db.sql(sql)
        return sql if self._lookup_timeout is None else self._drv.bound_sql(sql, self._lookup_timeout)

    # schema

    def _check_schema(self, conn: Any, create: bool) -> None:
        t = self._table
        columns = _NATIVE_COLUMNS + ", content" if t.native else "file_id, filename, directory, upload_time, content"
        probe = f"SELECT {columns} FROM {t.name} WHERE 1 = 0"
        try:
            _execute(conn, probe)
            return
        except self._drv.errors as e:
            missing = e
        if not (t.native and create):
            what = "create it with `mediaedge import` or `serve`" if t.native else f"is this a {self.profile} database?"
            raise OriginError(f"table {t.name} not usable in {self._db.url.redacted()} ({first_line(missing)}); {what}")
        for statement in self._drv.native_ddl():
            try:
                _execute(conn, statement)
            except self._drv.errors as e:  # e.g. another process created it first, or no privilege
                missing = e
        try:
            _execute(conn, probe)
        except self._drv.errors:
            raise OriginError(f"cannot create table media_files in {self._db.url.redacted()}: {first_line(missing)}") from None

    # lookups

    def _lookup_native(self, conn: Any, path: str) -> DbObject | None:
        key = self._drv.key_column(self._table)
        row = _fetchone(conn, self._lookup_sql(f"SELECT {key}, {_NATIVE_COLUMNS} FROM media_files WHERE path = ?"),
                        (self._drv.path_param(path),))
        if row is None:
            return None
        key_value, stored_path, revision, content_type, size, sha256, tags, updated_at = row
        if _text(stored_path) != path:  # a hand-made table with a case-insensitive path column
            return None
        return DbObject(path, _text(revision), content_type, int(size), sha256,
                        tuple(tags.split()) if tags else (), to_unix(updated_at), (key_value, revision))

    def _lookup_magento(self, conn: Any, path: str, rel: str) -> DbObject | None:
        t, key = self._table, self._drv.key_column(self._table)
        directory, filename = split_magento_path(rel)
        params: tuple[str, ...]
        if directory:
            where, params = "filename = ? AND directory = ?", (filename, directory)
        else:
            where, params = "filename = ? AND (directory IS NULL OR directory IN ('', '.'))", (filename,)
        # utf8_general_ci matches 'Foo.jpg' for 'foo.jpg' (and ignores trailing
        # spaces): keep only byte-exact rows. Names first, the blob length after,
        # so case-colliding rows' blobs are never read (LENGTH reads a whole InnoDB blob).
        try:
            rows = _fetchall(conn, self._lookup_sql(f"SELECT {key}, filename, directory FROM {t.name} WHERE {where}"),
                             params)
        except self._drv.errors as e:
            if self._drv.is_unstorable_name(e):
                return None
            raise
        exact = [r[0] for r in rows if _text(r[1]) == filename and same_magento_directory(_text(r[2]), directory)]
        if not exact:
            return None
        row = _fetchone(conn, self._lookup_sql(f"SELECT file_id, upload_time, LENGTH(content) FROM {t.name} WHERE {key} = ?"),
                        (max(exact),))
        if row is None:
            return None
        file_id, upload_time, size = row
        size = int(size or 0)
        updated = to_unix(upload_time)
        return DbObject(path, magento_revision(updated, file_id, size), None, size, None, (), updated,
                        (max(exact), upload_time))

    # reads

    def _stream(self, obj: DbObject, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        expected = obj.sha256 if self._table.native and obj.sha256 and start == 0 and end == obj.size else None
        digest = hashlib.sha256() if expected else None
        blocks, conn = self._attempt(
            lambda conn: self._drv.reader(conn, self._table, obj.locator, start, end, obj.size, chunk_size)
        )
        ok = False
        try:
            held = None  # the last piece waits until the hash is known
            with self._translated():
                for block in blocks:
                    for piece in _pieces(block, chunk_size):
                        if digest is not None:
                            digest.update(piece)
                        if held is not None:
                            yield held
                        held = piece
            if digest is not None and expected is not None and digest.hexdigest() != expected.lower():
                raise OriginError(f"{obj.path}: stored content does not match its sha256")
            ok = True
            if held is not None:
                yield held
        finally:
            try:
                blocks.close()  # an abandoned read: release its blob handle / result while the connection is open
            except Exception:
                ok = False
            self._pool.put(conn, ok)


def _execute(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> None:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
    finally:
        cur.close()


def _fetchone(conn: Any, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        row: tuple[Any, ...] | None = cur.fetchone()
        return row
    finally:
        cur.close()


def _fetchall(conn: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return list(cur.fetchall())
    finally:
        cur.close()
