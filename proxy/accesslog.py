"""The access log (--access-log PATH, `-` for stdout, off by default).

Two formats (--access-log-format). `combined`, the default: one line per
request in the NCSA combined format, so goaccess, awstats and every log shipper
read it, followed by mediaedge's own key=value fields (the result class of
this cache's Cache-Status member, the origin that answered, the duration in
seconds), as nginx users append `$upstream_cache_status` to theirs:

    203.0.113.7 - - [02/Jan/2025:10:04:05 +0000] "GET /media/a.jpg HTTP/1.1" 200 5120 "-" "curl/8.5" cache=hit origin=- dur=0.0004

A request refused by a signed-URL or auth check adds its reason:

    203.0.113.7 - - [02/Jan/2025:10:04:06 +0000] "GET /private/a.jpg?exp=1&sig=x HTTP/1.1" 403 14 "-" "curl/8.5" cache=error origin=- dur=0.0001 denied=signature

`json`: one JSON object a line, for log pipelines that index fields (Loki,
Elasticsearch, `jq`); `time` is ISO 8601 in UTC with milliseconds, `bytes` the
body bytes sent, `cache_status` the Cache-Status field as sent (this cache's
member last), `revision` the X-Media-Revision sent (null when none), and
`denied` is present only on a refusal:

    {"time":"2025-01-02T10:04:05.120Z","client":"203.0.113.7","method":"GET","target":"/media/a.jpg","status":200,"bytes":5120,"duration_ms":0.4,"cache_status":"mediaedge; hit; ttl=86399","revision":"4aff13e1e832d59f"}

Times are in UTC. Every field comes from the client or the network and may be
hostile. In `combined`, a `"` or `\\` inside a quoted field is backslash-escaped,
and any unprintable character (control characters, DEL, line separators)
becomes `\\xHH` (`\\uHHHH` above U+00FF), as nginx does, so one request is always
one parseable line; in the unquoted fields a space is escaped too. In `json`,
the encoder escapes every control character and every non-ASCII character
(`\\uHHHH`), so a line is always one line of ASCII.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

log = logging.getLogger(__name__)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _escape_char(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02X}" if code <= 0xFF else f"\\u{code:04X}"


def escape_field(value: str, *, quoted: bool = True) -> str:
    """`value` made safe for one field of one log line ("-" when empty)."""
    if not value:
        return "-"
    if value.isprintable() and '"' not in value and "\\" not in value and (quoted or " " not in value):
        return value  # the common case: nothing to do
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif not c.isprintable() or (c == " " and not quoted):
            out.append(_escape_char(c))
        else:
            out.append(c)
    return "".join(out)


def clf_time(now: float) -> str:
    """`[02/Jan/2025:10:04:05 +0000]`, in UTC."""
    t = time.gmtime(now)
    return f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000]"


def format_access_line(
    *,
    client: str,
    method: str,
    target: str,
    status: int,
    body_bytes: int,
    referer: str | None,
    user_agent: str | None,
    cache_result: str,
    origin: str | None,
    duration: float,
    now: float,
    http_version: str = "HTTP/1.1",
    denied: str | None = None,
) -> str:
    """One combined-format line, without the newline; a refused private-media request
    (docs/private-media.md) ends with `denied=signature|expired|auth`."""
    request = f"{method} {target} {http_version}"
    return (
        f"{escape_field(client, quoted=False)} - - {clf_time(now)} "
        f'"{escape_field(request)}" {int(status)} {int(body_bytes) if body_bytes else "-"} '
        f'"{escape_field(referer or "")}" "{escape_field(user_agent or "")}" '
        f"cache={escape_field(cache_result, quoted=False)} origin={escape_field(origin or '', quoted=False)} "
        f"dur={duration:.4f}" + (f" denied={escape_field(denied, quoted=False)}" if denied else "")
    )


def iso_time(now: float) -> str:
    """`2025-01-02T10:04:05.120Z`: ISO 8601 in UTC, to the millisecond."""
    seconds, ms = divmod(int(round(now * 1000, 3)), 1000)  # round(..., 3): 0.12 is 119.99999 in binary
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{ms:03d}Z"


def format_access_json(
    *,
    client: str,
    method: str,
    target: str,
    status: int,
    body_bytes: int,
    cache_status: str | None,
    revision: str | None,
    duration: float,
    now: float,
    denied: str | None = None,
) -> str:
    """One JSON object (contract section 1's fields), without the newline."""
    record: dict[str, object] = {
        "time": iso_time(now),
        "client": client,
        "method": method,
        "target": target,
        "status": int(status),
        "bytes": int(body_bytes),
        "duration_ms": round(duration * 1000, 3),
        "cache_status": cache_status,
        "revision": revision,
    }
    if denied:
        record["denied"] = denied
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


class AccessLog:
    """Where access lines go: None is off, "-" is stdout, else a file appended
    to, line-buffered so a crash loses at most the line being written.

    A failed write (disk full, closed stdout) is logged once and the line
    dropped: the log never fails a response. Opening a file that cannot be
    opened raises OSError at construction, so a bad --access-log fails the start.
    """

    def __init__(self, path: str | None, fmt: str = "combined") -> None:
        self.path = path
        self.format = fmt  # combined | json: which formatter the addon calls
        self._stream: TextIO | None = None
        self._failed = False
        self._open()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def write(self, line: str) -> None:
        if self._stream is None:
            return
        try:
            self._stream.write(line + "\n")
            if self._stream is sys.stdout:
                self._stream.flush()  # a pipe is block-buffered; keep it line by line
        except (OSError, ValueError) as e:  # ValueError: write to a closed file
            if not self._failed:
                log.warning("access log %s: %s; dropping lines", self.path, e)
                self._failed = True
        else:
            self._failed = False

    def reopen(self) -> bool:
        """Open the path again and switch to it (SIGHUP, after logrotate renamed the file).

        The new file is opened before the old one is closed: if it cannot be opened
        (directory gone, permissions), lines keep going to the old file and the
        failure is logged; a reopen never stops the node or loses the log."""
        if self.path is None or self.path == "-":
            return True
        try:
            new = open(self.path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
        except OSError as e:
            log.warning("access log %s: cannot reopen (%s); still writing to the old file",
                        self.path, e.strerror or e)
            return False
        self.close()
        self._stream = new
        self._failed = False
        return True

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            if stream is sys.stdout:
                stream.flush()
            else:
                stream.close()
        except (OSError, ValueError):
            pass

    def _open(self) -> None:
        if self.path is None:
            self._stream = None
        elif self.path == "-":
            self._stream = sys.stdout
        else:
            self._stream = open(self.path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")

    def __enter__(self) -> AccessLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
