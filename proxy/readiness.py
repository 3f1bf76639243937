"""GET /readyz: can this node serve? The components of `mediaedge check`, for load balancers.

`/healthz` answers "the process is up" and costs nothing, so it can be probed
every second. `/readyz` reaches every configured component as `mediaedge check`
does (origin database and its tables or routes, state database, upstream, cache
directory writable, free disk against --cache-size) and answers 200 only when all
are ok, else 503, so a load balancer stops sending traffic to a node whose
database went away. Its answer is remembered for `TTL` seconds: however many load
balancers poll, the databases see at most one round of checks per TTL, and
concurrent requests share the round that is running.

The decision (`readiness`) and the memory (`Remembered`) are pure; the runtime
runs the checks off the event loop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TTL = 2.0  # seconds a round of checks is reused


@dataclass(frozen=True)
class Readiness:
    ready: bool
    components: dict[str, dict[str, Any]]

    def body(self) -> dict[str, Any]:
        return {"ready": self.ready, "components": self.components}

    @property
    def status(self) -> int:
        return 200 if self.ready else 503


_KEYS = (  # the start of a `mediaedge check` line -> its /readyz key
    ("origin database", "origin_db"),
    ("state database", "state_db"),
    ("upstream", "upstream"),
    ("cache directory", "cache_dir"),
    ("free disk", "free_disk"),
)


def component_key(name: str) -> str:
    """A stable JSON key for a check line's name: `origin database sqlite:///x (native)`
    -> `origin_db`, `sql_route #2 (^/media/(.*)$)` -> `sql_route_2`."""
    for start, key in _KEYS:
        if name.startswith(start):
            return key
    m = re.match(r"sql_route #(\d+)", name)
    if m:
        return f"sql_route_{m.group(1)}"
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def readiness(results: list[tuple[str, str | None]]) -> Readiness:
    """The /readyz answer from (check name, problem or None) pairs: ready when none failed."""
    components: dict[str, dict[str, Any]] = {}
    for name, problem in results:
        entry: dict[str, Any] = {"ok": problem is None, "check": name}
        if problem is not None:
            entry["problem"] = " ".join(problem.split())
        components[component_key(name)] = entry
    return Readiness(bool(components) and all(c["ok"] for c in components.values()), components)


class Remembered:
    """The last Readiness and when it was taken; fresh for `ttl` seconds."""

    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._value: Readiness | None = None
        self._at = 0.0

    def get(self, now: float) -> Readiness | None:
        if self._value is not None and 0 <= now - self._at < self.ttl:
            return self._value
        return None

    def put(self, value: Readiness, now: float) -> None:
        self._value, self._at = value, now
