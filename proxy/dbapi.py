"""One way to open SQLite, PostgreSQL and MySQL/MariaDB from a URL.

Every database module (origins, the invalidation log, import) opens connections
here, so URL parsing, driver choice and the placeholder style live in one place.
Queries are written with `?` placeholders and converted with `Database.sql`.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit


class DatabaseError(Exception):
    """A database could not be opened or used; the message is one line for the operator."""


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

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = parse_db_url(url)
        self.dialect = self.url.dialect
        self.connect_timeout = connect_timeout

    def sql(self, query: str) -> str:
        """Convert `?` placeholders to the driver's style."""
        return query if self.dialect == "sqlite" else query.replace("?", "%s")

    def connect(self) -> Any:
        u = self.url
        try:
            if u.dialect == "sqlite":
                parent = os.path.dirname(u.path)
                if parent:
                    os.makedirs(parent, exist_ok=True)
                conn = sqlite3.connect(u.path, timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA busy_timeout=30000")
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
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DatabaseError(f"cannot open {u.redacted()}: {first}") from e
