"""Origins the edge reads media from when the upstream has none.

`MediaDatabase` is what the engine needs of a database origin; `DatabaseOrigin`
(`db.py`: the native table and Magento's) and `SqlRouteOrigin` (`sqlroutes.py`: any
CMS's table through `[[sql_route]]`) both provide it.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mediaedge.origins.db import DbObject, RevisionProbe


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
