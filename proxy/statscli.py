"""`mediaedge stats [--admin URL] [--json] [--watch N]`: a running node's /stats.

The table shows what the dashboard does (hit ratio, byte hit ratio, requests
by result, bytes by source, origin fetches, cache fill, top missed paths);
`--json` prints the document as the admin plane sent it; `--watch N` fetches
again every N seconds until Ctrl-C: in place on a terminal (rich Live); through
a pipe or into a file, one whole table per frame, each headed by its time and
flushed at once (a pipe would otherwise hold frames in its buffer, and a
stopped watch lose them); and one JSON document per line with --json. An admin plane that cannot be reached
is one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import requests
from rich import box
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mediaedge.dashboard import fmt_bytes, fmt_count, fmt_percent
from mediaedge.stats import ORIGINS, OUTCOMES, RESULT_FIELDS, RESULTS, SOURCES
from mediaedge.errors import StatsUnavailable

DEFAULT_ADMIN = "http://127.0.0.1:8081"
TIMEOUT = 5.0


def fetch_stats(admin: str, *, timeout: float = TIMEOUT, token: str | None = None) -> dict[str, Any]:
    """GET /stats, with `Authorization: Bearer TOKEN` when the node has an --admin-token."""
    url = admin.rstrip("/") + "/stats"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(url, timeout=timeout, headers=headers)
    except requests.RequestException as e:
        raise StatsUnavailable(f"cannot reach the admin plane at {url}: {_reason(e, timeout)}") from None
    if response.status_code == 401:
        raise StatsUnavailable(f"{url} answered 401: the node has an admin token; give --admin-token "
                               "or set MEDIAEDGE_ADMIN_TOKEN" + (" (the one given was refused)" if token else ""))
    if response.status_code != 200:
        raise StatsUnavailable(f"{url} answered {response.status_code} {response.reason}")
    try:
        data = response.json()
    except ValueError:
        raise StatsUnavailable(f"{url} did not answer JSON") from None
    if not isinstance(data, dict):
        raise StatsUnavailable(f"{url} did not answer a stats object")
    return data


def _reason(e: requests.RequestException, timeout: float) -> str:
    if isinstance(e, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(e, requests.ConnectionError):
        return "connection refused or host unreachable"
    return type(e).__name__


def _n(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _r(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def render(stats: Mapping[str, Any], *, admin: str = "") -> RenderableType:
    """The stats document as rich tables."""
    requests_total = _n(stats.get("requests"))
    served_raw = stats.get("bytes_served")
    served: Mapping[str, Any] = served_raw if isinstance(served_raw, Mapping) else {}
    bytes_total = sum(_n(served.get(s)) for s in SOURCES)

    summary = Table(box=box.SIMPLE_HEAD, show_header=False, title=f"mediaedge {escape(admin)}".strip(), title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("hit ratio", fmt_percent(_r(stats.get("hit_ratio"))))
    summary.add_row("byte hit ratio", fmt_percent(_r(stats.get("byte_hit_ratio"))))
    summary.add_row("media requests", fmt_count(requests_total))
    summary.add_row("cache fill", _cache_fill(stats))
    summary.add_row("invalidations", _invalidations(stats))
    summary.add_row("since", escape(str(stats.get("since", "-"))))

    by_result = Table("result", "requests", "share", box=box.SIMPLE_HEAD, title="requests by result", title_justify="left")
    for result in RESULTS:
        n = _n(stats.get(RESULT_FIELDS[result]))
        by_result.add_row(result, fmt_count(n), fmt_percent(n / requests_total if requests_total else 0.0))
    _right(by_result)

    by_source = Table("source", "bytes", "share", box=box.SIMPLE_HEAD, title="bytes by source", title_justify="left")
    for source in SOURCES:
        n = _n(served.get(source))
        by_source.add_row(source, fmt_bytes(n), fmt_percent(n / bytes_total if bytes_total else 0.0))
    _right(by_source)

    return Group(summary, _side_by_side(by_result, by_source, _origins(stats)), _top_missed(stats))


def _side_by_side(*tables: Table) -> Columns:
    """Next to each other when the terminal is wide enough, else one under another."""
    return Columns(tables, padding=(0, 4))


def _right(table: Table) -> None:
    table.columns[0].no_wrap = True
    for column in table.columns[1:]:
        column.justify = "right"
        column.no_wrap = True


def _cache_fill(stats: Mapping[str, Any]) -> str:
    used, size, entries = _n(stats.get("cache_bytes")), _n(stats.get("cache_size")), _n(stats.get("entries"))
    if size:
        return f"{fmt_bytes(used)} of {fmt_bytes(size)} ({fmt_percent(used / size)}), {fmt_count(entries)} entries"
    return f"{fmt_bytes(used)}, {fmt_count(entries)} entries"


def _invalidations(stats: Mapping[str, Any]) -> str:
    text = fmt_count(_n(stats.get("invalidations")))
    seq = stats.get("invalidation_seq")
    return f"{text} (log seq {seq})" if isinstance(seq, int) and not isinstance(seq, bool) else text


def _origins(stats: Mapping[str, Any]) -> Table:
    outcomes = stats.get("origin_fetch_outcomes")
    fetches_raw = stats.get("origin_fetches")
    fetches: Mapping[str, Any] = fetches_raw if isinstance(fetches_raw, Mapping) else {}
    table = Table("origin", "fetches", *OUTCOMES, box=box.SIMPLE_HEAD, title="origin fetches", title_justify="left")
    for origin in ORIGINS:
        detail = outcomes.get(origin) if isinstance(outcomes, Mapping) else None
        cells = [fmt_count(_n(detail.get(o))) for o in OUTCOMES] if isinstance(detail, Mapping) else ["-"] * len(OUTCOMES)
        table.add_row(origin, fmt_count(_n(fetches.get(origin))), *cells)
    table.add_row(Text("coalesced", style="dim"), fmt_count(_n(stats.get("coalesced"))))
    table.add_row(Text("revalidated", style="dim"), fmt_count(_n(stats.get("revalidated"))))
    _right(table)
    return table


def _top_missed(stats: Mapping[str, Any]) -> Table:
    table = Table("#", "path", "misses", box=box.SIMPLE_HEAD, title="top missed paths", title_justify="left")
    table.columns[0].justify = table.columns[2].justify = "right"
    table.columns[1].overflow = "fold"
    entries = [m for m in stats.get("top_missed") or [] if isinstance(m, Mapping)]
    for i, m in enumerate(entries, 1):
        # Paths are client-supplied: print them as text, never as rich markup.
        table.add_row(str(i), Text(str(m.get("path", ""))), fmt_count(_n(m.get("count"))))
    if not entries:
        table.add_row("", Text("no misses yet", style="dim"), "")
    return table


def run(args: argparse.Namespace) -> int:
    admin = getattr(args, "admin", None) or DEFAULT_ADMIN
    token = getattr(args, "admin_token", None)
    as_json = bool(getattr(args, "json", False))
    watch = getattr(args, "watch", None)
    try:
        stats = _fetch(admin, token)
    except StatsUnavailable as e:
        print(f"mediaedge stats: {e}", file=sys.stderr)
        return 1
    try:
        if watch is None:
            _print(stats, admin, as_json)
        elif as_json:
            _watch_json(stats, admin, watch, token)
        else:
            _watch_table(stats, admin, watch, token)
    except KeyboardInterrupt:
        pass
    return 0


def _watch_frames(stats: dict[str, Any], admin: str, every: float, token: str | None = None) -> None:
    """Not a terminal: one table after another, each flushed as soon as it is printed."""
    console = Console(file=sys.stdout)
    while True:
        console.print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}", markup=False, highlight=False)
        console.print(render(stats, admin=admin))
        sys.stdout.flush()
        stats = _next_frame(admin, every, token)


def _fetch(admin: str, token: str | None) -> dict[str, Any]:
    return fetch_stats(admin, token=token) if token else fetch_stats(admin)


def _next_frame(admin: str, every: float, token: str | None) -> dict[str, Any]:
    """The next /stats document, `every` seconds on; a failed fetch is a line on stderr
    and is tried again after the same pause."""
    while True:
        time.sleep(every)
        try:
            return _fetch(admin, token)
        except StatsUnavailable as e:
            print(f"mediaedge stats: {e}", file=sys.stderr, flush=True)


def _print(stats: Mapping[str, Any], admin: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(stats, indent=2))
    else:
        Console().print(render(stats, admin=admin))


def _watch_json(stats: dict[str, Any], admin: str, every: float, token: str | None = None) -> None:
    """One JSON document per line; a failed fetch is a line on stderr."""
    while True:
        print(json.dumps(stats, separators=(",", ":")), flush=True)
        stats = _next_frame(admin, every, token)


def _watch_table(stats: dict[str, Any], admin: str, every: float, token: str | None = None) -> None:
    if not sys.stdout.isatty():
        _watch_frames(stats, admin, every, token)
        return
    with Live(render(stats, admin=admin), auto_refresh=False, screen=False) as live:
        while True:
            time.sleep(every)
            try:
                stats = _fetch(admin, token)
                live.update(render(stats, admin=admin), refresh=True)
            except StatsUnavailable as e:
                live.update(Group(render(stats, admin=admin), Text(f"(stale) {e}", style="bold red")), refresh=True)
