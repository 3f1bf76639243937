"""Counting and logging one exchange: a core service the mitmproxy shell calls once per
request it answers (media hits and misses, refusals, errors; not pass-through).

The counters (`mediaedge.stats`) get the result, the origin and the duration; the
access log (`mediaedge.accesslog`), when on, one line in its format. The shell hands
over its view of the exchange (`Exchange`), so nothing here knows mitmproxy.
"""
from __future__ import annotations

import time
from typing import Protocol

from mediaedge.accesslog import AccessLog, format_access_json, format_access_line
from mediaedge.contract import Reply
from mediaedge.stats import StatsSink


class Exchange(Protocol):
    """The client's side of one exchange, as the shell sees it (read only when logging)."""

    def client(self) -> str:
        """The client's address, `-` when unknown."""
        ...

    def method(self) -> str: ...

    def request_field(self, name: str) -> str | None: ...

    def answer_field(self, name: str) -> str | None:
        """A field of a response the shell made itself (refusals, errors), else None."""
        ...


def record(stats: StatsSink, access_log: AccessLog, revision_header: str, reply: Reply, body_bytes: int,
           duration: float, exchange: Exchange, denied: str | None = None) -> None:
    """Count the exchange, and write its access line when the log is on."""
    count(stats, reply, body_bytes, duration)
    if access_log.enabled:
        log_access(access_log, revision_header, reply, body_bytes, duration, exchange, denied)


def count(stats: StatsSink, reply: Reply, body_bytes: int, duration: float) -> None:
    """Count the exchange. A 5xx is counted with no origin: nothing answered it. (Every
    hit passes here: the shell calls this and `log_access` apart, so a hit with the log
    off builds no `Exchange`.)"""
    source = reply.source if reply.status < 500 else None
    stats.record(result=reply.result, source=source, body_bytes=body_bytes, duration=duration,
                 path=reply.target, status=reply.status)


def log_access(access_log: AccessLog, revision_header: str, reply: Reply, body_bytes: int, duration: float,
               exchange: Exchange, denied: str | None = None) -> None:
    """Write the exchange's access line (the log is on)."""
    access_log.write(access_line(access_log.format, revision_header, reply, body_bytes, duration, exchange,
                                 denied, time.time()))


def access_line(fmt: str, revision_header: str, reply: Reply, body_bytes: int, duration: float,
                exchange: Exchange, denied: str | None, now: float) -> str:
    """The access log line of one exchange in `fmt` (combined | json)."""
    if fmt == "json":
        return format_access_json(
            client=exchange.client(), method=exchange.method(), target=reply.target, status=reply.status,
            body_bytes=body_bytes, cache_status=sent_field(reply, "Cache-Status", exchange),
            revision=sent_field(reply, revision_header, exchange), duration=duration, now=now, denied=denied,
        )
    return format_access_line(
        client=exchange.client(), method=exchange.method(), target=reply.target, status=reply.status,
        body_bytes=body_bytes, referer=exchange.request_field("referer"),
        user_agent=exchange.request_field("user-agent"), cache_result=reply.result, origin=reply.source,
        duration=duration, now=now, denied=denied,
    )


def sent_field(reply: Reply, name: str, exchange: Exchange) -> str | None:
    """A response field as the client got it: from the reply's encoded head, its
    streaming job, its headers, else the answer the shell made itself."""
    if reply.wire is not None:
        wanted = name.lower().encode()
        values = [v.decode("latin-1") for k, v in reply.wire if k.lower() == wanted]
        return ", ".join(values) if values else None
    headers = reply.job.headers if reply.job is not None else reply.headers
    value = headers.get(name)
    if value is None:
        value = exchange.answer_field(name)
    return value
