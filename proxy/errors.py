"""Every error mediaedge raises on purpose, in one tree.

```
MediaedgeError              one line for the operator or the client (`one_line`), and
 │                          `status_hint`: the HTTP status to answer with, if a client waits
 ├── ConfigError            a setting has a bad value; the line starts with the setting (CLI exit 2)
 ├── StartupError           a setting that cannot work once tried, e.g. a port in use (exit 1)
 ├── DatabaseError          a database could not be opened or used (exit 1 at start)
 ├── OriginError            the database origin failed or answered inconsistently (503)
 │    ├── RowChanged        the row changed since its lookup: look it up again
 │    └── LookupTimeout     a lookup ran past --db-timeout (counts as the database failing)
 ├── UpstreamError          the upstream could not be asked; `kind`: refused, reset, timeout (502/504)
 ├── FillFailed             a fetch could not complete; readers cut their response short (502)
 │    └── DamagedEntry      a cache file does not match the sums recorded at fill: response cut
 ├── WebhookError           a refused webhook request (401, 400, 413, 503); `body()` is its JSON
 ├── TargetError            a request target we refuse (400, 404, 414); also a ValueError
 └── StatsUnavailable       `mediaedge stats` could not reach the admin plane
```

Pure code raises `ValueError`; these are raised at the boundaries, and foreign errors
(drivers, httpx, OS) are translated into them once, where they are caught (the database
driver's in `origins/db.py`'s translator, httpx's in `upstream.py`). The CLI prints any
`MediaedgeError` as `mediaedge: error: <one_line>` without a traceback. A message never
echoes a request target or a secret, so it is safe in a log line or a plain-text body.
"""
from __future__ import annotations

import json


class MediaedgeError(Exception):
    """The root of the tree: one operator-facing line, and the status to answer with."""

    status_hint: int = 500

    def __init__(self, message: str = "", status_hint: int | None = None) -> None:
        super().__init__(message)
        if status_hint is not None:
            self.status_hint = status_hint

    @property
    def one_line(self) -> str:
        return " ".join(str(self).split()) or type(self).__name__

    @property
    def status(self) -> int:
        """The same as `status_hint` (the name the HTTP-facing callers read)."""
        return self.status_hint


class ConfigError(MediaedgeError):
    """A setting has a bad value; `str(error)` is one line starting with the setting."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.detail = message


class StartupError(MediaedgeError):
    """A setting that cannot work; `one_line` names it (the CLI prints it, exit 1)."""


class DatabaseError(MediaedgeError):
    """A database could not be opened or used; the message is one line for the operator."""


class OriginError(MediaedgeError):
    """The database failed or answered inconsistently; the message is one line."""

    status_hint = 503

    def __init__(self, message: str, status_hint: int | None = None) -> None:
        super().__init__(" ".join(message.split()), status_hint)


class RowChanged(OriginError):
    """The row was replaced or deleted since `lookup`: look it up again."""


class LookupTimeout(OriginError):
    """A lookup ran past `--db-timeout` (a lock, a slow plan, a server that does not answer).

    It counts as the database failing, and is never retried: a retry would
    double the time a request waits for an answer that is not coming.
    """


class UpstreamError(MediaedgeError):
    """The upstream could not be asked: refused, reset or timed out (`kind` says which)."""

    status_hint = 502

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message, 504 if kind == "timeout" else 502)
        self.kind = kind


class FillFailed(MediaedgeError):
    """The fill could not complete; readers must cut their response short.

    `status_hint` is what a client that has not yet got a head should be answered.
    """

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message, status)


class DamagedEntry(FillFailed):
    """A cache file does not match the sums recorded at fill (`where`: "SHA-256" or
    "block N"): the entry is dropped and the response cut, never finished wrong."""

    def __init__(self, where: str) -> None:
        super().__init__("damaged cache entry", 502)
        self.where = where


class SliceUnusable(FillFailed):
    """A sliced object's slice could not be had as a slice of the same representation
    (the upstream ignored Range, answered another ETag, failed): before a response's head
    the request falls back to a whole fetch; after it the response is cut, never mixed.

    `reason` is `ignored-range`, `changed`, `status`, `content-range` or `upstream`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, 502)
        self.reason = reason


class WebhookError(MediaedgeError):
    """A refused webhook request; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status)
        self.message = message

    def body(self) -> bytes:
        return json.dumps({"error": self.message}).encode()

    def __repr__(self) -> str:
        return f"WebhookError({self.status_hint}, {self.message!r})"


class TargetError(MediaedgeError, ValueError):
    """A request target we refuse; `status` is what to answer (400, 404 or 414).

    The message is one line and never echoes the target, so it is safe to put
    in a log line or a plain-text response body.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status)


class StatsUnavailable(MediaedgeError):
    """The admin plane could not be reached or did not answer a /stats document."""
