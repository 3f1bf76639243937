"""The `sql` origin profile: any CMS's own media table, read through routes.

A route (a `[[sql_route]]` table of the `--config` file, parsed once into a
frozen `SqlRoute` by `parse_sql_routes`) maps request targets to one read-only
SELECT. The first route whose `match` regex matches the target is used; its
named groups, percent-decoded, are bound by the driver as the query's `:name`
parameters — never formatted into the SQL.

Streaming a generic column with bounded memory. A generic query gives no
primary key or blob handle, so the user's query is only wrapped as a
subquery `q` (and, on SQLite, given the rowid of a plain table column):

  1. lookup: `SELECT <meta columns>, length(q.body), octet_length(q.body)
     FROM (<query>) q` — one row per part, no body bytes cross the wire;
  2. read, in one read-only snapshot: the lookup again (rows changed since
     step 1 raise RowChanged), then the kept rows' bytes, as each dialect can
     read them in pieces (see `pieces` on each): substring windows
     `... FROM (<query>) q LIMIT 1 OFFSET k` on PostgreSQL bytea;
     PostgreSQL text converted once in a materialised CTE and fetched through a
     server-side cursor; on MariaDB the query itself, its rows read off the wire;
     on SQLite incremental blob I/O on the rowid when the body is a plain column
     of the query's one table (`blob_column`), else substr() windows, which
     load the whole value (SQLite's one unbounded case: an expression as body).

base64 and hex are decoded as the pieces arrive (`StreamDecoder`).

--db-timeout bounds every lookup statement and every lock wait (each dialect's
`setup`); a timeout raises LookupTimeout. Once a read's lookup has run in its
snapshot, its body streams as long as it takes (`streaming`).

Errors: `ValueError` from the pure parsers (the config loader names the route),
`OriginError` for everything the database does, translated once in
`SqlRouteOrigin._translated`.
"""
from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, unquote_plus

from mediaedge.errors import DatabaseError, LookupTimeout, OriginError, RowChanged
from mediaedge.dbapi import _MYSQL_MAX_PACKET, Database, Pool, _mysql_packet_header, first_line
from mediaedge.origins.contenttype import guess_content_type
from mediaedge.origins.db import DbObject, RevisionProbe, _PooledOrigin, _text, to_unix, whole_seconds

T = TypeVar("T")

ENCODINGS = ("raw", "base64", "hex")
ROUTE_KEYS = ("match", "query", "body", "encoding", "content_type", "revision", "last_modified", "verify")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ROWID = "mediaedge_rowid_"  # the column SQLite routes are given for blob I/O


# --- routes: parsed once, pure ----------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """A route's query with `:name` parameters replaced by placeholders, per paramstyle."""

    text: str  # as written
    qmark: str  # `?` placeholders (SQLite)
    pyformat: str  # `%s` placeholders, literal `%` doubled (psycopg, PyMySQL)
    params: tuple[str, ...]  # group names in placeholder order


@dataclass(frozen=True)
class SqlRoute:
    index: int  # 1-based position in the config file, for messages
    match: re.Pattern[str]
    statement: Statement
    body: str
    encoding: str = "raw"
    content_type: str | None = None
    revision: str | None = None
    last_modified: str | None = None
    verify: str | None = None

    @property
    def meta_columns(self) -> tuple[str, ...]:
        """The optional columns the lookup reads, each once, in a fixed order."""
        cols = (self.content_type, self.revision, self.last_modified, self.verify)
        return tuple(dict.fromkeys(c for c in cols if c))


# Keywords that make a SELECT write or lock: `SELECT ... INTO` (a table on
# PostgreSQL, a file or variables on MySQL), row locks. A bare single SELECT
# cannot contain INSERT/UPDATE/DELETE/DDL outside these; the read-only session
# each query runs in is the second guard.
_FORBIDDEN = re.compile(r"\b(INTO|FOR\s+UPDATE|FOR\s+SHARE|FOR\s+NO\s+KEY\s+UPDATE|FOR\s+KEY\s+SHARE|"
                        r"LOCK\s+IN\s+SHARE\s+MODE|INSERT|UPDATE|DELETE|MERGE|CREATE|DROP|ALTER|TRUNCATE|"
                        r"GRANT|REVOKE|CALL|EXEC|EXECUTE|COPY|ATTACH|DETACH|PRAGMA|VACUUM|HANDLER)\b",
                        re.IGNORECASE)

# One token of SQL text: a quoted string or identifier, a comment, a `:name`
# parameter, a `::` cast, or any other character.
_TOKEN = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|--[^\n]*|/\*.*?\*/|::|:([A-Za-z_][A-Za-z0-9_]*)|.""",
    re.DOTALL,
)


def parse_statement(sql: str) -> Statement:
    """Check `sql` is one read-only SELECT and find its `:name` parameters.

    String literals, quoted identifiers and comments are skipped when looking
    for `;`, parameters and forbidden keywords (a `';'` in a literal is fine).
    One trailing `;` is allowed. Raises ValueError naming the problem.
    """
    code: list[str] = []  # the text outside literals and comments, for keyword checks
    qmark: list[str] = []
    pyformat: list[str] = []
    params: list[str] = []
    text = sql.strip()
    if text.endswith(";"):
        text = text[:-1].rstrip()
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if m.group(1):
            params.append(m.group(1))
            qmark.append("?")
            pyformat.append("%s")
            code.append(" ? ")
            continue
        if tok[0] in "'\"`" and len(tok) > 1:
            if tok[0] == "'" and tok.count("'") % 2:
                raise ValueError("unterminated string literal")
            code.append(" x ")
        elif tok.startswith("--") or tok.startswith("/*"):
            code.append(" ")
        else:
            if tok in "'\"`":
                raise ValueError(f"unterminated quote {tok}")
            code.append(tok)
        qmark.append(tok)
        pyformat.append(tok.replace("%", "%%"))
    bare = "".join(code)
    if ";" in bare:
        raise ValueError("only one statement is allowed (found ';')")
    if not re.match(r"\s*(SELECT|WITH)\b", bare, re.IGNORECASE):  # WITH: common table expressions
        raise ValueError("the query must be a single SELECT")
    bad = _FORBIDDEN.search(bare)
    if bad:
        raise ValueError(f"the query must be a read-only SELECT ({' '.join(bad.group(1).upper().split())} is not allowed)")
    return Statement(text, "".join(qmark), "".join(pyformat), tuple(params))


def parse_sql_route(index: int, table: object) -> SqlRoute:
    """One `[[sql_route]]` table; ValueError (without the index) when it is wrong."""
    if not isinstance(table, Mapping):
        raise ValueError("must be a table ([[sql_route]])")
    unknown = sorted(set(table) - set(ROUTE_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (use {', '.join(ROUTE_KEYS)})")
    for key in ("match", "query", "body"):
        if key not in table:
            raise ValueError(f"{key!r} is required")
    values = {k: v for k, v in table.items()}
    for key, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key!r} must be a non-empty string")
    try:
        match = re.compile(values["match"])
    except re.error as e:
        raise ValueError(f"match does not compile: {e}") from None
    statement = parse_statement(values["query"])
    missing = [p for p in statement.params if p not in match.groupindex]
    if missing:
        raise ValueError(f"query parameter :{missing[0]} is not a named group of match")
    for key in ("body", "content_type", "revision", "last_modified", "verify"):
        if key in values and not _IDENT.fullmatch(values[key]):
            raise ValueError(f"{key} must be a plain column name, got {values[key]!r}")
    encoding = values.get("encoding", "raw").lower()
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be raw, base64 or hex, got {values['encoding']!r}")
    if "verify" in values and values["verify"] not in match.groupindex:
        raise ValueError(f"verify column {values['verify']!r} needs a named group of the same name in match")
    return SqlRoute(index, match, statement, values["body"], encoding, values.get("content_type"),
                    values.get("revision"), values.get("last_modified"), values.get("verify"))


def parse_sql_routes(value: object) -> tuple[SqlRoute, ...]:
    """The config file's `sql_route` array; ValueError starts with `sql_route #N`."""
    if not isinstance(value, list):
        raise ValueError("sql_route must be an array of tables ([[sql_route]])")
    routes = []
    for i, table in enumerate(value, 1):
        try:
            routes.append(parse_sql_route(i, table))
        except ValueError as e:
            raise ValueError(f"sql_route #{i}: {e}") from None
    return tuple(routes)


def route_params(route: SqlRoute, target: str) -> dict[str, str] | None:
    """The route's named groups for `target` (path?query, as the client sent it), or None.

    Groups are percent-decoded as UTF-8; in the query part `+` is a space, as in
    form encoding. A group that does not decode (bad UTF-8) or holds a NUL
    fails the match: no row can be named by it (PostgreSQL text cannot hold NUL,
    so binding one would fail as a database error).
    """
    m = route.match.search(target)
    if m is None:
        return None
    query_start = target.find("?")
    out: dict[str, str] = {}
    for name in route.match.groupindex:
        value = m.group(name)
        if value is None:
            continue
        in_query = query_start >= 0 and m.start(name) > query_start
        try:
            out[name] = (unquote_plus if in_query else unquote)(value, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            return None
        if "\0" in out[name]:
            return None
    return out


def first_route(routes: tuple[SqlRoute, ...], target: str) -> tuple[SqlRoute, dict[str, str]] | None:
    for route in routes:
        params = route_params(route, target)
        if params is not None:
            return route, params
    return None


def guessed_type(route: SqlRoute, params: Mapping[str, str]) -> str:
    """Content type from the last path segment of the first named group's value."""
    first = next(iter(route.match.groupindex), None)
    name = params.get(first, "") if first else ""
    return guess_content_type(name.rpartition("/")[2] or name)


# --- SQLite: which table column a route's body is, for incremental blob I/O ----------------


@dataclass(frozen=True)
class BlobColumn:
    """The body is `column` of one row of `table`: the query can be given that row's rowid.

    `ref` is how the query names the table (its alias, or the name as written),
    `insert_at` the offset in the query text where `, <ref>.rowid AS ...` goes
    (just before the top-level FROM, so positional ORDER BY numbers keep their meaning).
    """

    schema: str  # "main" unless the query says `schema.table`
    table: str
    column: str
    ref: str
    insert_at: int


# Identifiers (bare, "double", `back` or [bracket] quoted), literals, comments, parameters.
_LEX = re.compile(r"""\s+|--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]"""
                  r"""|[A-Za-z_][A-Za-z0-9_$]*|\d+(?:\.\d*)?|.""", re.DOTALL)
_CLAUSE_END = {"WHERE", "ORDER", "LIMIT"}
_WHOLE_QUERY_CHANGERS = {"DISTINCT", "GROUP", "HAVING", "WINDOW", "UNION", "INTERSECT", "EXCEPT", "JOIN",
                         "VALUES"}
_KEYWORDS = _CLAUSE_END | _WHOLE_QUERY_CHANGERS | {"FROM", "AS", "SELECT", "ON", "USING", "INDEXED", "NOT",
                                                   "NATURAL", "LEFT", "RIGHT", "FULL", "INNER", "CROSS", "OUTER"}


def _unquote(tok: str) -> str | None:
    """An identifier token's name, or None when the token is not an identifier."""
    if tok[0] in "\"`[" and len(tok) > 1:
        return tok[1:-1].replace('""', '"').replace("``", "`")
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", tok) and tok.upper() not in _KEYWORDS:
        return tok
    return None


def blob_column(sql: str, body: str) -> BlobColumn | None:
    """Where `body` comes from when `sql` is `SELECT <list> FROM <one table> [alias] [WHERE …]
    [ORDER BY …] [LIMIT …]` and the list item named `body` is a plain column of that table
    (or `*`); None for anything else (joins, DISTINCT, GROUP BY, compounds, WITH, an
    expression as the body), which then reads in substr() windows. Pure: the caller checks
    the answer against the database (the table exists, is not a view, has a rowid)."""
    toks = [(m.group(0), m.start()) for m in _LEX.finditer(sql)
            if not m.group(0).isspace() and not m.group(0).startswith(("--", "/*"))]
    words = [t.upper() for t, _ in toks]
    if not words or words[0] != "SELECT":
        return None
    depth, top = 0, []  # indexes of the tokens outside parentheses
    for i, w in enumerate(words):
        if w == "(":
            depth += 1
        elif w == ")":
            depth -= 1
        elif depth == 0:
            top.append(i)
    if depth or any(words[i] in _WHOLE_QUERY_CHANGERS for i in top):
        return None
    froms = [i for i in top if words[i] == "FROM"]
    if len(froms) != 1:
        return None
    f = froms[0]
    # FROM [schema.]table [[AS] alias], then WHERE / ORDER / LIMIT / the end
    rest = [t for t, _ in toks[f + 1:]]
    names = [_unquote(t) for t in rest[:3]]
    schema, n = "main", 1
    if len(rest) >= 3 and rest[1] == "." and names[0] and names[2]:
        schema, table, n = names[0], names[2], 3
    elif rest and names[0]:
        table = names[0]
    else:
        return None
    ref = rest[n - 1]
    if n < len(rest) and rest[n].upper() == "AS":
        n += 1
    if n < len(rest) and _unquote(rest[n]):
        ref = rest[n]
        n += 1
    if n < len(rest) and rest[n].upper() not in _CLAUSE_END:
        return None
    # the select list, split at top-level commas
    items: list[list[str]] = [[]]
    for i in range(1, f):
        if i in top and words[i] == ",":
            items.append([])
        else:
            items[-1].append(toks[i][0])
    if items[0] and items[0][0].upper() == "ALL":
        items[0] = items[0][1:]
    ref_name = (_unquote(ref) or "").lower()
    star = False
    found: list[str | None] = []
    for item in items:
        if item in (["*"], [ref, ".", "*"]) or (len(item) == 3 and item[1:] == [".", "*"]
                                                and (_unquote(item[0]) or "").lower() == ref_name):
            star = True
            continue
        expr, alias = item, None
        if len(item) >= 3 and item[-2].upper() == "AS":
            expr, alias = item[:-2], _unquote(item[-1])
        elif len(item) in (2, 4) and _unquote(item[-1]) and item[-2] != ".":
            expr, alias = item[:-1], _unquote(item[-1])
        column = None
        if len(expr) == 1:
            column = _unquote(expr[0])
        elif len(expr) == 3 and expr[1] == "." and (_unquote(expr[0]) or "").lower() == ref_name:
            column = _unquote(expr[2])
        name = alias or column
        if name is not None and name.lower() == body.lower():
            found.append(column)
    if len(found) > 1 or (not found and not star):
        return None
    column = found[0] if found else body
    if column is None:
        return None
    return BlobColumn(schema, table, column, ref, toks[f][1])


# --- decoding as windows arrive ------------------------------------------------------------


class StreamDecoder:
    """base64 or hex text in pieces -> bytes, holding back at most one unaligned group.

    base64 is decoded in 4-character groups (whitespace and line breaks dropped,
    as MIME writes them), hex in pairs; `finish()` raises ValueError on leftovers.
    """

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        if self.encoding == "raw":
            return data
        data = self._held + b"".join(data.split())
        align = 4 if self.encoding == "base64" else 2
        cut = len(data) - len(data) % align
        self._held = data[cut:]
        return self._decode(data[:cut])

    def finish(self) -> None:
        if self._held:
            raise ValueError(f"{self.encoding} value ends mid-group ({len(self._held)} characters left)")

    def _decode(self, data: bytes) -> bytes:
        try:
            if self.encoding == "hex":
                return binascii.unhexlify(data)
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"bad {self.encoding} in the body column: {e}") from None


# --- dialects -----------------------------------------------------------------------------


class _Dialect:
    """What differs between databases: placeholders, length/substr names, the snapshot."""

    window = 4 << 20

    def sql(self, st: Statement) -> str:
        return st.pyformat

    def execute(self, conn: Any, sql: str, params: tuple[Any, ...], timeout: float) -> Any:
        """Run one statement bounded by `timeout` (each dialect bounds it its own way)."""
        raise NotImplementedError

    def wrap(self, st: Statement, select: str, tail: str = "") -> str:
        inner = self.sql(st)
        return f"SELECT {select} FROM ({inner}) q{tail}"

    def lengths(self, body: str) -> str:
        return f"length(q.{body}), octet_length(q.{body})"

    def substr(self, body: str) -> str:
        return f"substring(q.{body} from %s for %s)"

    def meta_rows(self, conn: Any, route: SqlRoute, values: tuple[Any, ...], timeout: float) -> list[tuple[Any, ...]]:
        """One row per part: the meta columns, the body's length in substr() units, its
        length in bytes, and a rowid for incremental blob I/O (None: read in windows)."""
        cols = ", ".join([*(f"q.{c}" for c in route.meta_columns), self.lengths(route.body)])
        return [(*row, None) for row in self.execute(conn, self.wrap(route.statement, cols), values, timeout).fetchall()]

    def streaming(self, conn: Any) -> None:
        """Called in the read's snapshot once its lookup is done: --db-timeout bounds lookups
        and lock waits, not the time a found body takes to stream."""

    def is_timeout(self, e: BaseException) -> bool:
        return False

    def pieces(self, conn: Any, route: SqlRoute, params: Mapping[str, str], parts: tuple[_Part, ...],
               timeout: float) -> Iterator[bytes]:
        """The kept rows' bodies in order."""
        values = tuple(params[p] for p in route.statement.params)
        for part in parts:
            yield from self.windows(conn, route, values, part, timeout)

    def windows(self, conn: Any, route: SqlRoute, values: tuple[Any, ...], part: _Part, timeout: float) -> Iterator[bytes]:
        """One row's body in substr() windows, each window one statement.
        substr(body, pos, n) is in the outer select: its parameters come first."""
        sql = self.wrap(route.statement, self.substr(route.body), f" LIMIT 1 OFFSET {part.row:d}")
        for pos in range(1, part.units + 1, self.window):
            row = self.execute(conn, sql, (pos, self.window, *values), timeout).fetchone()
            if row is None:
                raise RowChanged("a row disappeared during the read")
            data = row[0] or b""
            yield data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)


class _Sqlite(_Dialect):
    """Incremental blob I/O (`blobopen`) when the body is a plain column of the query's one
    table (`blob_column`): the query is given `, <table>.rowid AS mediaedge_rowid_` and each
    row's value is read through a blob handle, 1 MiB at a time, in the read's snapshot.
    Measured on a 200 MB value: ~1.4 GB/s and +5 MB RSS, where substr() windows ran at
    ~50 MB/s and +226 MB: SQLite evaluates substr() (and length() of text) on a whole
    value it has loaded. Any other query (joins, DISTINCT, an expression as the body)
    falls back to 16 MiB substr() windows, whose memory grows with the largest value."""

    window = 16 << 20

    def __init__(self) -> None:
        import sqlite3

        self.errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        self._deadlines: dict[int, list[float]] = {}  # id(conn) -> [monotonic deadline or 0]
        self._plans: dict[tuple[Statement, str], tuple[BlobColumn, str] | None] = {}

    def blob_plan(self, conn: Any, route: SqlRoute) -> tuple[BlobColumn, str] | None:
        """(where the body lives, the query with the rowid added), or None: read in windows.
        Decided once per route, against the database."""
        key = (route.statement, route.body)
        if key not in self._plans:
            self._plans[key] = self._plan(conn, route)
        return self._plans[key]

    def _plan(self, conn: Any, route: SqlRoute) -> tuple[BlobColumn, str] | None:
        col = blob_column(route.statement.qmark, route.body)
        if col is None:
            return None
        schema = '"' + col.schema.replace('"', '""') + '"'
        table = '"' + col.table.replace('"', '""') + '"'
        try:
            if conn.execute(f"PRAGMA {schema}.encoding").fetchone()[0] != "UTF-8":
                return None  # a blob handle gives text in the database's encoding
            kind = conn.execute(f"SELECT type, sql FROM {schema}.sqlite_schema WHERE name = ? COLLATE NOCASE",
                                (col.table,)).fetchone()
            if kind is None or kind[0] != "table" or str(kind[1]).upper().startswith("CREATE VIRTUAL"):
                return None
            columns = {r[1].lower() for r in conn.execute(f"PRAGMA {schema}.table_info({table})")}
            rowid = next((n for n in ("rowid", "_rowid_", "oid") if n not in columns), None)
            if col.column.lower() not in columns or rowid is None:
                return None
            st = route.statement.qmark
            sql = f"{st[:col.insert_at]}, {col.ref}.{rowid} AS {_ROWID} {st[col.insert_at:]}"
            # compiles (a WITHOUT ROWID table does not) and the body is still that column
            conn.execute(f"SELECT q.{_ROWID}, q.{route.body} FROM ({sql}) q LIMIT 0",
                         tuple(None for _ in route.statement.params)).fetchall()
        except self.errors:
            return None
        return col, sql

    def meta_rows(self, conn: Any, route: SqlRoute, values: tuple[Any, ...], timeout: float) -> list[tuple[Any, ...]]:
        """typeof() and the rowid, not length(): length() of text loads the whole value.
        The byte length is the blob handle's, read in the same transaction."""
        plan = self.blob_plan(conn, route)
        if plan is None:
            return super().meta_rows(conn, route, values, timeout)
        col, sql = plan
        n = len(route.meta_columns)
        cols = ", ".join([*(f"q.{c}" for c in route.meta_columns), f"typeof(q.{route.body})", f"q.{_ROWID}"])
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")
        try:
            out = []
            for row in self.execute(conn, f"SELECT {cols} FROM ({sql}) q", values, timeout).fetchall():
                kind, rowid = row[n], row[n + 1]
                if kind == "null":
                    out.append((*row[:n], 0, 0, None))
                elif kind in ("text", "blob"):
                    with conn.blobopen(col.table, col.column, rowid, readonly=True, name=col.schema) as blob:
                        size = len(blob)
                    out.append((*row[:n], size, size, rowid))
                else:  # a number as the body: substr() windows of its text
                    return super().meta_rows(conn, route, values, timeout)
            return out
        finally:
            if own:
                conn.execute("COMMIT")

    def windows(self, conn: Any, route: SqlRoute, values: tuple[Any, ...], part: _Part, timeout: float) -> Iterator[bytes]:
        plan = self._plans.get((route.statement, route.body))
        if part.rowid is None or plan is None:
            yield from super().windows(conn, route, values, part, timeout)
            return
        col = plan[0]
        with conn.blobopen(col.table, col.column, part.rowid, readonly=True, name=col.schema) as blob:
            if len(blob) != part.units:
                raise RowChanged("a row changed during the read")
            while True:
                data = blob.read(1 << 20)
                if not data:
                    break
                yield data

    def is_timeout(self, e: BaseException) -> bool:
        text = str(e).lower()
        return "interrupted" in text or "locked" in text or "busy" in text

    def sql(self, st: Statement) -> str:
        return st.qmark

    def lengths(self, body: str) -> str:
        # Windows count bytes: substr() of the value as a blob (text: its UTF-8 bytes, never
        # decoded here). length() of a blob reads only its header.
        octets = (f"CASE typeof(q.{body}) WHEN 'blob' THEN length(q.{body})"
                  f" ELSE length(CAST(q.{body} AS BLOB)) END")
        return f"{octets}, {octets}"

    def substr(self, body: str) -> str:
        return f"substr(CAST(q.{body} AS BLOB), ?, ?)"

    def setup(self, conn: Any, timeout: float) -> None:
        conn.isolation_level = None
        conn.execute("PRAGMA query_only = ON")  # the route's query can never write

        # No statement timeout in SQLite: a progress handler interrupts a statement past it.
        deadline = self._deadlines[id(conn)] = [0.0]

        def over() -> int:
            return 1 if deadline[0] and time.monotonic() > deadline[0] else 0

        conn.set_progress_handler(over, 10000)

    def execute(self, conn: Any, sql: str, params: tuple[Any, ...], timeout: float) -> Any:
        """`timeout` 0: no deadline (a read's windows, once its lookup is done)."""
        deadline = self._deadlines[id(conn)]
        deadline[0] = time.monotonic() + timeout if timeout else 0.0
        try:
            return _Rows(conn.execute(sql, params).fetchall())
        finally:
            deadline[0] = 0.0

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def end(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def is_disconnect(self, conn: Any, e: BaseException) -> bool:
        return False


class _Postgres(_Dialect):
    """bytea: substring() windows of 4 MiB; a window reads only its own TOAST chunks when
    the value is stored uncompressed (STORAGE EXTERNAL), so a read costs one pass.

    text (base64/hex columns, as Django's TextField): substring() counts characters,
    and in a UTF-8 database PostgreSQL finds character k by reading the value from its
    start, so windows cost size² (measured, 133 MB of base64 text: 27 s in 4 MiB
    windows). Instead each row is converted to bytes once, in a MATERIALIZED CTE, and
    cut by generate_series into 4 MiB rows fetched one at a time through a server-side
    cursor: one pass, the whole value held by the server (work_mem, spilling to disk),
    one window by us. Sessions are read-only with a statement_timeout of --db-timeout."""

    def __init__(self) -> None:
        import psycopg

        self.errors = (psycopg.Error,)
        self._types: dict[int, str] = {}  # route index -> the body column's type (a query's is fixed)

    def pieces(self, conn: Any, route: SqlRoute, params: Mapping[str, str], parts: tuple[_Part, ...],
               timeout: float) -> Iterator[bytes]:
        values = tuple(params[p] for p in route.statement.params)
        if route.index not in self._types:
            kind = self.execute(conn, self.wrap(route.statement, f"pg_typeof(q.{route.body})::text", " LIMIT 1"),
                                values, timeout).fetchone()
            if kind is None:
                raise RowChanged("rows were deleted during the read")
            self._types[route.index] = kind[0]
        if self._types[route.index] == "bytea":
            yield from super().pieces(conn, route, params, parts, timeout)
            return
        for part in parts:
            inner = self.wrap(route.statement, f"convert_to(q.{route.body}::text, 'UTF8') AS b",
                              f" LIMIT 1 OFFSET {part.row:d}")
            sql = (f"WITH v AS MATERIALIZED ({inner}) SELECT s, substring(v.b from s for %s) FROM v"
                   " CROSS JOIN LATERAL generate_series(1, octet_length(v.b), %s) AS s")
            with conn.cursor(name=f"mediaedge_{part.row:d}", binary=True) as cur:
                cur.itersize = 1
                cur.execute(sql, (*values, self.window, self.window))
                expected = 1
                for pos, data in cur:
                    if pos != expected:  # never seen; a plan that reorders would corrupt the body
                        raise OriginError(f"windows out of order ({pos}, expected {expected})")
                    expected += len(data)
                    yield bytes(data)

    def setup(self, conn: Any, timeout: float) -> None:
        conn.autocommit = True
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET default_transaction_read_only = on")
        ms = max(1, int(timeout * 1000))
        conn.execute(f"SET statement_timeout = {ms}")
        conn.execute(f"SET lock_timeout = {ms}")

    def streaming(self, conn: Any) -> None:
        conn.execute("SET LOCAL statement_timeout = 0")  # lock_timeout stays

    def is_timeout(self, e: BaseException) -> bool:
        import psycopg

        return isinstance(e, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable))

    def execute(self, conn: Any, sql: str, params: tuple[Any, ...], timeout: float) -> Any:
        cur = conn.cursor(binary=True)  # bytea as bytes, not hex text
        return cur.execute(sql, params)

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def end(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def is_disconnect(self, conn: Any, e: BaseException) -> bool:
        return bool(conn.broken or conn.closed)


class _Mysql(_Dialect):
    """The lookup wraps the query like the others (lengths only, no body bytes); the read
    runs the route's query itself, once, and streams its rows off the wire.

    Why not windows: InnoDB materialises a whole off-page value for every SUBSTRING
    (a read in windows of w costs N²/w on the server), and MariaDB drops an ORDER BY
    inside a subquery, so windows addressed by OFFSET would not even come in the
    query's order (measured: a subquery given a LIMIT to keep it was materialised
    and its blob rows came back unordered). One statement streamed through
    `MysqlRows` keeps the order, reads each value once and holds one piece at most.
    Its rows are checked against `verify` as they arrive, so that column must come
    before the body column in the SELECT list (check() says so)."""

    def __init__(self) -> None:
        import pymysql

        self.errors = (pymysql.Error,)

    def lengths(self, body: str) -> str:
        return f"CHAR_LENGTH(q.{body}), LENGTH(q.{body})"

    def setup(self, conn: Any, timeout: float) -> None:
        self.mariadb = "mariadb" in conn.get_server_info().lower()
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            # Lock waits (LOCK TABLES, metadata and row locks), also for the read's one
            # statement, which max_statement_time does not bound: whole seconds.
            s = whole_seconds(timeout)
            cur.execute(f"SET SESSION lock_wait_timeout = {s}, innodb_lock_wait_timeout = {s}")
            if self.mariadb:
                cur.execute(f"SET SESSION max_statement_time = {timeout:.3f}")
            else:  # MySQL bounds SELECTs only, in milliseconds
                cur.execute(f"SET SESSION max_execution_time = {max(1, int(timeout * 1000))}")
        conn.autocommit(True)

    def execute(self, conn: Any, sql: str, params: tuple[Any, ...], timeout: float) -> Any:
        cur = conn.cursor()
        cur.execute(sql, params)
        return cur

    def begin(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")

    def end(self, conn: Any) -> None:
        conn.commit()

    def is_disconnect(self, conn: Any, e: BaseException) -> bool:
        return not conn.open

    # Statement timeouts (MariaDB 1969, MySQL 3024), lock waits (1205; 1317: interrupted).
    _TIMEOUTS = {1969, 3024, 1205, 1317}

    def is_timeout(self, e: BaseException) -> bool:
        import pymysql

        return isinstance(e, pymysql.err.Error) and bool(e.args) and e.args[0] in self._TIMEOUTS

    def column_order_problem(self, conn: Any, route: SqlRoute) -> str | None:
        """The read checks `verify` as rows stream: it must come before the body."""
        if not route.verify:
            return None
        params = tuple(None for _ in route.statement.params)
        cur = self.execute(conn, f"SELECT * FROM ({route.statement.pyformat}) q LIMIT 0", params, 0)
        names = [d[0].lower() for d in cur.description]
        if names.index(route.verify.lower()) > names.index(route.body.lower()):
            return ("on MySQL/MariaDB the verify column must come before the body column in the SELECT list")
        return None

    def pieces(self, conn: Any, route: SqlRoute, params: Mapping[str, str], parts: tuple[_Part, ...],
               timeout: float) -> Iterator[bytes]:
        with conn.cursor() as cur:
            sql = cur.mogrify(route.statement.pyformat, tuple(params[p] for p in route.statement.params))
        # --db-timeout bounds the lookup; a found body streams as long as it takes (MariaDB syntax).
        rows = MysqlRows(conn, f"SET STATEMENT max_statement_time = 0 FOR {sql}" if self.mariadb else sql)
        names = [n.lower() for n in rows.names]
        body = names.index(route.body.lower())
        check = names.index(route.verify.lower()) if route.verify else None
        check_group = route.verify or ""  # the group whose value the verify column must equal
        if check is not None and check > body:
            raise OriginError(f"sql_route #{route.index}: on MySQL/MariaDB the verify column must come "
                              "before the body column in the SELECT list")
        kept = 0
        while rows.next_row():
            skip = False
            for i in range(len(names)):
                if i == body and not skip:
                    yield from rows.value_pieces()
                    kept += 1
                elif i == check:
                    value = rows.value()
                    skip = value is None or value.decode("utf-8", "surrogateescape") != params[check_group]
                else:
                    rows.skip_value()
        if kept != len(parts):
            raise RowChanged("rows were changed or deleted during the read")


class MysqlRows:
    """A result set read off PyMySQL's socket row by row, each value whole or in pieces.

    The text protocol sends a row as length-encoded values in packets of at most
    2**24-1 bytes, a long row continuing in the next packet; PyMySQL would
    assemble the whole row. This speaks the same format (the helpers of
    mediaedge.dbapi) so a body column of any size is never held at once. A reader
    abandoned mid-result leaves the connection unusable: the caller discards it.
    """

    def __init__(self, conn: Any, query: str) -> None:
        from pymysql.constants import COMMAND
        from pymysql.protocol import FieldDescriptorPacket

        self.conn = conn
        conn._execute_command(COMMAND.COM_QUERY, query.encode(conn.encoding, "surrogateescape"))
        count = conn._read_packet().read_length_encoded_integer()  # an error packet raises here
        self.names = [conn._read_packet(FieldDescriptorPacket).name for _ in range(count)]
        conn._read_packet()  # EOF after the column definitions
        self._left = self._plen = 0
        self._head = b""

    def next_row(self) -> bool:
        """Start the next row; False (and the result consumed) at the end."""
        while self._left == 0 and self._plen == _MYSQL_MAX_PACKET:  # a row of exactly full packets
            self._plen = self._left = _mysql_packet_header(self.conn)
        if self._left:
            raise DatabaseError("MySQL row longer than its values")
        self._plen = self._left = _mysql_packet_header(self.conn)
        first = self._read(1)
        if first[0] == 0xFE and self._plen < 9:  # EOF
            self._read(self._left)
            return False
        if first[0] == 0xFF:
            from pymysql.protocol import MysqlPacket

            MysqlPacket(first + self._read(self._left), self.conn.encoding).raise_for_error()
        self._head = first
        return True

    def value(self) -> bytes | None:
        n = self._length()
        return None if n is None else self._read(n)

    def skip_value(self) -> None:
        for _ in self._pieces(self._length() or 0):
            pass

    def value_pieces(self, size: int = 1 << 20) -> Iterator[bytes]:
        return self._pieces(self._length() or 0, size)

    def _pieces(self, n: int, size: int = 1 << 20) -> Iterator[bytes]:
        while n:
            piece = self._read(min(n, size))
            n -= len(piece)
            yield piece

    def _length(self) -> int | None:
        first = self._head or self._read(1)
        self._head = b""
        if first[0] == 0xFB:
            return None
        if first[0] < 0xFB:
            return first[0]
        width = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first[0]]
        return int.from_bytes(self._read(width), "little")

    def _read(self, n: int) -> bytes:
        """n bytes of the row, across packet boundaries."""
        out = bytearray()
        while len(out) < n:
            if self._left == 0:
                if self._plen != _MYSQL_MAX_PACKET:
                    raise DatabaseError("MySQL row shorter than its values")
                self._plen = self._left = _mysql_packet_header(self.conn)
                continue
            take = min(n - len(out), self._left)
            out += self.conn._read_bytes(take)
            self._left -= take
        return bytes(out)


class _Rows:
    """Rows already fetched (SQLite fetches inside its deadline), with a cursor's two reads."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


_DIALECTS: dict[str, Callable[[], Any]] = {"sqlite": _Sqlite, "postgresql": _Postgres, "mysql": _Mysql}


# --- the origin ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """One row of a route's result: its position and length in substr() units."""

    row: int
    units: int
    rowid: int | None = None  # SQLite: the row to open a blob handle on


class SqlRouteOrigin(_PooledOrigin):
    """The `sql` profile: `lookup(target)` and `read(obj)`, as DatabaseOrigin offers them.

    Takes the canonical request target (path and query, not decoded): the routes
    match what the client sent. `DbObject.locator` carries (route index, params,
    parts, revision) so `read` re-runs the same query and checks nothing changed.
    """

    by_target = True  # the engine passes the target, not the decoded path

    def __init__(self, url: str, routes: tuple[SqlRoute, ...], *, timeout: float = 10.0,
                 connect_timeout: float = 5.0) -> None:
        if not routes:
            raise OriginError("the sql profile needs at least one [[sql_route]] in the --config file")
        try:
            self._db = Database(url, connect_timeout=connect_timeout, sqlite_busy_timeout=timeout)
        except DatabaseError as e:
            raise OriginError(str(e)) from e
        self.profile = "sql"
        self.dialect = self._db.dialect
        self.routes = routes
        self.timeout = timeout
        self._drv = _DIALECTS[self.dialect]()
        self._errors = (*self._drv.errors, DatabaseError, OSError)
        self._pool = Pool(self._connect)

    # public API

    def check(self) -> list[tuple[SqlRoute, str | None]]:
        """Each route's query run once against the database with NULL parameters,
        LIMIT 0, in a read-only session: (route, None) when it compiles, else the problem."""
        results: list[tuple[SqlRoute, str | None]] = []
        for route in self.routes:
            cols = ", ".join(f"q.{c}" for c in (route.body, *route.meta_columns))
            sql = self._drv.wrap(route.statement, cols, " LIMIT 0")
            params = tuple(None for _ in route.statement.params)
            try:
                self._call(self._compiles(sql, params))
                order = getattr(self._drv, "column_order_problem", None)
                results.append((route, order and self._call(self._order_problem(order, route))))
            except OriginError as e:
                results.append((route, str(e)))
        return results

    def lookup(self, target: str) -> DbObject | None:
        """The object the first matching route names for `target`, or None."""
        found = first_route(self.routes, target)
        if found is None:
            return None
        route, params = found
        rows = self._call(lambda conn: self._meta(conn, route, params))
        return self._object(target, route, params, rows)

    meta = lookup

    def can_probe_revision(self, target: str) -> bool:
        """Only a route with a `revision` column can say whether a row changed without
        reading its body; entries of other routes are fetched again."""
        found = first_route(self.routes, target)
        return found is not None and found[0].revision is not None

    def revision_of(self, target: str) -> RevisionProbe:
        """The route's query re-run for its revision column only (and `verify`, to skip
        case-folded near misses): the body column is neither selected nor measured."""
        found = first_route(self.routes, target)
        if found is None:
            return RevisionProbe(False, None)
        route, params = found
        if route.revision is None:
            return RevisionProbe(True, None)
        cols = tuple(dict.fromkeys(c for c in (route.revision, route.verify) if c))
        sql = self._drv.wrap(route.statement, ", ".join(f"q.{c}" for c in cols))
        values = tuple(params[p] for p in route.statement.params)
        rows = self._call(lambda conn: list(self._drv.execute(conn, sql, values, self.timeout).fetchall()))
        for row in rows:
            named = dict(zip(cols, row))
            if route.verify and _text(named[route.verify]) != params.get(route.verify):
                continue
            value = named[route.revision]
            return RevisionProbe(True, None if value is None else str(_text(value)))
        return RevisionProbe(False, None)

    def read(self, obj: DbObject, start: int = 0, end: int | None = None,
             chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The decoded body of `obj`, from one read-only snapshot. Only whole reads."""
        if start != 0 or end not in (None, obj.size):
            raise ValueError("the sql profile reads whole bodies only")
        return self._stream(obj)

    def close(self) -> None:
        self._pool.close()

    # queries

    def _meta(self, conn: Any, route: SqlRoute, params: Mapping[str, str]) -> list[tuple[Any, ...]]:
        values = tuple(params[p] for p in route.statement.params)
        rows: list[tuple[Any, ...]] = self._drv.meta_rows(conn, route, values, self.timeout)
        return rows

    def _compiles(self, sql: str, params: tuple[Any, ...]) -> Callable[[Any], object]:
        """A connection call running `sql` once (LIMIT 0): raises when it does not compile."""
        return lambda conn: self._drv.execute(conn, sql, params, self.timeout).fetchall()

    @staticmethod
    def _order_problem(order: Callable[[Any, SqlRoute], str | None], route: SqlRoute) -> Callable[[Any], str | None]:
        return lambda conn: order(conn, route)

    def _object(self, target: str, route: SqlRoute, params: Mapping[str, str], rows: list[tuple[Any, ...]]) -> DbObject | None:
        names = route.meta_columns
        kept: list[tuple[int, dict[str, Any], int, int, int | None]] = []
        for i, row in enumerate(rows):
            values = dict(zip(names, row))
            units, octets, rowid = row[len(names):len(names) + 3]
            if route.verify and _text(values[route.verify]) != params.get(route.verify):
                continue  # a case-folding collation's near miss: not this file
            kept.append((i, values, int(units or 0), int(octets or 0), rowid))
        if not kept:
            return None
        first = kept[0][1]
        ctype = _text(first[route.content_type]) if route.content_type else None
        revision = str(_text(first[route.revision])) if route.revision and first[route.revision] is not None else None
        updated = _unix(first[route.last_modified]) if route.last_modified else None
        size = sum(k[3] for k in kept) if route.encoding == "raw" else None
        parts = tuple(_Part(k[0], k[2], k[4]) for k in kept)
        return DbObject(target, revision, ctype or guessed_type(route, params), size, None, (), updated,
                        (route.index, tuple(sorted(params.items())), parts, revision))

    def _stream(self, obj: DbObject) -> Iterator[bytes]:
        index, params, parts, revision = obj.locator
        route, params = self.routes[index - 1], dict(params)
        conn, _fresh = self._get()
        ok = False
        try:
            with self._translated():
                self._drv.begin(conn)
                again = self._object(obj.path, route, params, self._meta(conn, route, params))
            if again is None or again.locator[2:] != (parts, revision):
                raise RowChanged("rows were changed or deleted since they were looked up")
            with self._translated():
                self._drv.streaming(conn)
            decoder = StreamDecoder(route.encoding)
            pieces = self._drv.pieces(conn, route, params, parts, 0)
            try:
                while True:
                    with self._translated():
                        piece = next(pieces, None)
                    if piece is None:
                        break
                    out = decoder.feed(piece)
                    if out:
                        yield out
                decoder.finish()
            except ValueError as e:
                raise OriginError(f"{obj.path}: {e}", status_hint=500) from None
            finally:
                pieces.close()
            with self._translated():
                self._drv.end(conn)
            ok = True
        finally:
            self._pool.put(conn, ok)

    # connections and errors

    def _connect(self) -> Any:
        return self._db.connect(self._setup)

    def _setup(self, conn: Any) -> None:
        with self._translated():
            self._drv.setup(conn, self.timeout)

    def _timeout_of(self, e: BaseException) -> LookupTimeout | None:
        if not self._drv.is_timeout(e):
            return None
        return LookupTimeout(f"database origin {self._db.url.redacted()}: a query or lock wait took longer than"
                             f" --db-timeout ({self.timeout:g} s): {first_line(e)}")


def _unix(value: Any) -> float | None:
    """A timestamp column or unix seconds (numbers, or digits in text); no zone = UTC."""
    value = _text(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        return float(value)
    try:
        return to_unix(value)
    except (TypeError, ValueError):
        return None

