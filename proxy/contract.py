"""The contract between the shell (the mitmproxy addon) and the core (the engine): what a
media request is, what the engine answers, and the slice of the settings the engine reads.

Kept apart from proxy/engine.py so the shell, the invalidator and tests name these types
without importing the data path.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from mediaedge.headers import Headers
from mediaedge.streamserver import Job

if TYPE_CHECKING:
    from mediaedge.config import Settings


@dataclass(frozen=True)
class EngineConfig:
    """The engine's slice of `Settings` (same names; `from_settings` takes them over)."""

    revision_header: str = "X-Media-Revision"
    default_ttl: float = 86400.0
    negative_ttl: float = 10.0
    grace: float = 86400.0
    max_object_size: int = 128 << 20
    upstream_timeout: float = 10.0
    coalesce_timeout: float = 30.0  # a request's wait for a shared fetch's head, or its next bytes
    coalesce_max_waiters: int = 1000  # requests one fetch serves at once
    browser_ttl: float = 0.0  # Cache-Control max-age for clients when the origin gave none; 0: no-cache
    memory_size: int = 64 << 20  # bound on the memory tier (proxy/hot.py); 0: off
    slice_size: int = 0  # objects from the upstream over this are served slice by slice (proxy/slices.py); 0: off

    @classmethod
    def from_settings(cls, s: Settings) -> EngineConfig:
        """The slice of the node's settings the engine reads (one spelling: the field names)."""
        return cls(**{f.name: getattr(s, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class MediaRequest:
    method: str  # GET or HEAD
    target: str  # canonical path?query (mediaedge.policy.target.normalize_target)
    headers: Headers

    @property
    def private(self) -> bool:
        """Sent with credentials: its fetch is its own (joins no one's, shares no slices)."""
        return "authorization" in self.headers or "cookie" in self.headers


@dataclass
class Reply:
    """What the addon sends: an in-memory body, or a streaming job."""

    status: int
    headers: Headers
    body: bytes = b""
    job: Job | None = None
    result: str = "miss"  # hit | stale | miss | pass | error
    source: str | None = None  # cache | upstream | db
    target: str = ""
    wire: list[tuple[bytes, bytes]] | None = None  # headers already encoded (hot hits); then `headers` is unused
