"""The three worked routes of docs/origins.md as tables on a real database, for the sql profile's tests.

Each layout has its DDL per dialect, a writer, and the TOML route exactly as the
docs give it (MySQL/MariaDB quote the reserved word `Index` with backticks).
"""
from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from mediaedge.dbapi import Database

DJANGO_ROUTE = r"""
[[sql_route]]
match = '^/files/(?:get|download)/\?name=(?P<filename>[^&]+)$'
query = "SELECT filename, bytes, mimetype FROM console_consolepicture WHERE filename = :filename"
body = "bytes"
encoding = "base64"
content_type = "mimetype"
verify = "filename"
"""

SITECORE_ROUTE = r"""
[[sql_route]]
match = '^/-/media/(?P<file>(?P<blobid>[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})\.[A-Za-z0-9]+)$'
query = 'SELECT Data, Created FROM Blobs WHERE BlobId = :blobid ORDER BY "Index"'
body = "Data"
last_modified = "Created"
"""

PLAIN_ROUTE = r"""
[[sql_route]]
match = '^/media/(?P<path>[^?]+)$'
query = "SELECT path, data, rev FROM media WHERE path = :path"
body = "data"
revision = "rev"
verify = "path"
"""


def route_for(dialect: str, route: str) -> str:
    """MySQL reads "Index" as a string: it quotes identifiers with backticks."""
    return route.replace('"Index"', "`Index`") if dialect == "mysql" else route


_DDL = {
    "sqlite": [
        "CREATE TABLE console_consolepicture (id INTEGER PRIMARY KEY, bytes TEXT NOT NULL,"
        " filename VARCHAR(255) NOT NULL, mimetype VARCHAR(50) NOT NULL)",
        'CREATE TABLE Blobs (Id INTEGER PRIMARY KEY, BlobId CHAR(36) NOT NULL, "Index" INTEGER NOT NULL,'
        " Data BLOB, Created TIMESTAMP)",
        "CREATE TABLE media (path VARCHAR(255) PRIMARY KEY, data BLOB, rev VARCHAR(40))",
    ],
    "postgresql": [
        "CREATE TABLE console_consolepicture (id SERIAL PRIMARY KEY, bytes TEXT NOT NULL,"
        " filename VARCHAR(255) NOT NULL, mimetype VARCHAR(50) NOT NULL)",
        'CREATE TABLE Blobs (Id SERIAL PRIMARY KEY, BlobId UUID NOT NULL, "Index" INTEGER NOT NULL,'
        " Data BYTEA, Created TIMESTAMP)",
        "CREATE TABLE media (path VARCHAR(255) PRIMARY KEY, data BYTEA, rev VARCHAR(40))",
    ],
    "mysql": [
        # Django's TextField on MySQL is LONGTEXT; the tables keep MariaDB's default collation.
        "CREATE TABLE console_consolepicture (id INT AUTO_INCREMENT PRIMARY KEY, bytes LONGTEXT NOT NULL,"
        " filename VARCHAR(255) NOT NULL, mimetype VARCHAR(50) NOT NULL) CHARACTER SET utf8mb4",
        "CREATE TABLE Blobs (Id INT AUTO_INCREMENT PRIMARY KEY, BlobId CHAR(36) NOT NULL, `Index` INT NOT NULL,"
        " Data LONGBLOB, Created DATETIME, KEY (BlobId, `Index`))",
        "CREATE TABLE media (path VARCHAR(255) CHARACTER SET utf8 COLLATE utf8_general_ci NOT NULL,"
        " data LONGBLOB, rev VARCHAR(40))",
    ],
}


class Tables:
    """The three layouts on one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database(url)
        self.dialect = self.db.dialect
        self.conn: Any = self.db.connect()
        for ddl in _DDL[self.dialect]:
            self.run(ddl)

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        cur = self.conn.cursor()
        cur.execute(self.db.sql(sql) if params else sql, tuple(params))
        cur.close()
        self.conn.commit()

    def django(self, name: str, data: bytes, mimetype: str, *, wrap: int | None = None) -> str:
        """A file as django-db-file-storage saves it; returns its storage name."""
        full = f"console.ConsolePicture/bytes/filename/mimetype/{name}"
        text = base64.b64encode(data).decode()
        if wrap:  # MIME-style line breaks, which decoders must skip
            text = "\n".join(text[i:i + wrap] for i in range(0, len(text), wrap))
        self.run("INSERT INTO console_consolepicture (bytes, filename, mimetype) VALUES (?, ?, ?)",
                 (text, full, mimetype))
        return full

    def sitecore(self, blob_id: str, chunks: Sequence[bytes], created: str = "2024-01-05 12:30:00") -> None:
        """Chunks written out of order: only ORDER BY "Index" puts them right."""
        col = "`Index`" if self.dialect == "mysql" else '"Index"'
        for index in reversed(range(len(chunks))):
            self.run(f"INSERT INTO Blobs (BlobId, {col}, Data, Created) VALUES (?, ?, ?, ?)",
                     (blob_id, index, chunks[index], created))

    def plain(self, path: str, data: bytes, rev: str | None = None) -> None:
        self.run("INSERT INTO media (path, data, rev) VALUES (?, ?, ?)", (path, data, rev))

    def close(self) -> None:
        self.conn.close()
