"""The origins the edge reads media from, and what every origin answers.

`http.py` is the upstream (the app server); `MediaDatabase` is what the engine needs of
a database origin: `DatabaseOrigin` (`db.py`: the native table and Magento's) and
`SqlRouteOrigin` (`sqlroutes.py`: any CMS's table through `[[sql_route]]`) provide it.

Each origin's errors are translated once, at its boundary, into these outcomes: an
answer (the upstream's response, its body unread; a database row), `NotFound`, or
`Failed(kind, status_hint)`; the engine never catches an origin library's exceptions.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from mediaedge.origins.db import DbObject, RevisionProbe


class NotFound(NamedTuple):
    """The origin has no such object."""

    reason: str


class Failed(NamedTuple):
    """The origin could not answer: `kind` (refused, timeout, error, database) and the
    status a client gets when nothing else can answer (502, 503, 504)."""

    kind: str
    status_hint: int
    message: str


class MediaDatabase(Protocol):
    def lookup(self, path: str, /) -> DbObject | None:
        """The row serving request target `path`, or None; raises OriginError when the database fails."""
        ...

    def read(self, obj: DbObject, start: int = 0, end: int | None = None,
             chunk_size: int = 1 << 20, /) -> Iterator[bytes]:
        """Bytes [start, end) of `obj`, streamed in pieces; raises OriginError on failure."""
        ...

    def can_probe_revision(self, path: str, /) -> bool:
        """Whether `revision_of` can answer for `path` without reading its body."""
        ...

    def revision_of(self, path: str, /) -> RevisionProbe:
        """The row's revision only (revalidation); raises OriginError when the database fails."""
        ...

    def close(self) -> None:
        ...
