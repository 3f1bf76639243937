"""GET / on the admin plane: a server-rendered HTML dashboard.

One self-contained page: inline CSS, an inline SVG chart, no script, font or
stylesheet from anywhere (the admin plane may have no internet), and a
`<meta http-equiv="refresh">` instead of JavaScript polling.

Everything shown comes from `Stats.snapshot()` and `Stats.history()`, and,
when the runtime passes them, who the node is (`node`) and the last hour's
rates and latency quantiles from `mediaedge.rates` (`last_hour`, `per_minute`):
totals since start say what a node has done, rates say what it is doing. Paths
are attacker-controlled (anyone can request `/media/<script>...`), so every
string is passed through `html.escape` -- `_e()` below -- and every number
through a formatter; nothing from the snapshot reaches the page raw.
"""
from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mediaedge.rates import Window
from mediaedge.stats import INVALIDATION_TYPES, ORIGINS, OUTCOMES, RESULT_FIELDS, RESULTS, SOURCES

CHART_SECONDS = 3600

# Chart geometry, in SVG user units (the SVG scales to its box).
_W, _H = 960, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 20, 36, 36
_PLOT_W, _PLOT_H = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

_SERIES = (  # history key, legend label, CSS class
    ("hit_ratio", "hit ratio", "s-hit"),
    ("byte_hit_ratio", "byte hit ratio", "s-byte"),
)

_RESULT_HELP = {
    "hit": "served from cache, fresh",
    "stale": "served from cache past its freshness (stale-while-revalidate, stale-if-error, soft purge)",
    "miss": "fetched from an origin and stored",
    "pass": "forwarded without storing (not cacheable)",
    "error": "no origin could answer",
}
_SOURCE_LABELS = {"cache": "cache", "upstream": "upstream", "db": "database"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ratio(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return min(max(float(value), 0.0), 1.0)
    return 0.0


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def fmt_rate(per_second: float) -> str:
    """Requests a second, with as many decimals as a small rate needs: 1234.5 -> '1,234/s', 0.25 -> '0.25/s'."""
    if per_second >= 100:
        return f"{per_second:,.0f}/s"
    if per_second >= 10:
        return f"{per_second:.1f}/s"
    return f"{per_second:.2f}/s"


def fmt_seconds(seconds: float | None) -> str:
    """A latency: 0.0004 -> '0.40 ms', 0.25 -> '250 ms', 3 -> '3.00 s'; None -> '—'."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 0.01:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_uptime(seconds: float) -> str:
    """93784 -> '1d 2h 3m'; under a minute '42s'."""
    s = int(max(seconds, 0))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if not (days or hours or minutes):
        return f"{s}s"
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    parts.append(f"{minutes}m")
    return " ".join(parts)


def fmt_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary units, as --cache-size takes)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# -- the chart ----------------------------------------------------------------

def _x(t: float, end: float) -> float:
    return _LEFT + (t - (end - CHART_SECONDS)) / CHART_SECONDS * _PLOT_W


def _y(ratio: float) -> float:
    return _TOP + (1.0 - ratio) * _PLOT_H


def per_bucket(history: Iterable[Mapping[str, Any]], end: float, width: float) -> list[dict[str, Any]]:
    """Merge the samples of the hour before `end` into `width`-second buckets,
    so the chart shows a readable line instead of 5-second noise. Ratios are
    recomputed from the summed counts (a point without counts -- an older
    format -- weighs its ratio by its requests, its byte ratio by 1)."""
    buckets: dict[int, list[float]] = {}  # index -> [t, requests, hits, bytes, bytes_cache, weight]
    for p in history:
        t = p.get("t")
        if not isinstance(t, (int, float)) or not end - CHART_SECONDS < t <= end:
            continue
        b = buckets.setdefault(int((end - t) // width), [t, 0, 0, 0, 0])
        b[0] = max(b[0], t)
        requests = _int(p.get("requests"))
        b[1] += requests
        b[2] += p["hits"] if "hits" in p else _ratio(p.get("hit_ratio")) * requests
        if "bytes" in p:
            b[3] += _int(p.get("bytes"))
            b[4] += _int(p.get("bytes_cache"))
        elif p.get("byte_hit_ratio") is not None:
            b[3] += 1
            b[4] += _ratio(p.get("byte_hit_ratio"))
    return [
        {"t": t, "hit_ratio": hits / req if req else None, "byte_hit_ratio": cache / total if total else None}
        for _i, (t, req, hits, total, cache) in sorted(buckets.items(), reverse=True)
    ]


def _segments(points: Iterable[Mapping[str, Any]], key: str, end: float) -> list[list[tuple[float, float]]]:
    """Runs of consecutive points with a value; a None (no traffic) breaks the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for p in points:
        value = p.get(key)
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((_x(p["t"], end), _y(_ratio(value))))
    return [r for r in runs if r]


def _series_svg(points: Sequence[Mapping[str, Any]], key: str, css: str, label: str, end: float) -> str:
    parts = []
    for run in _segments(points, key, end):
        if len(run) == 1:  # an isolated point: a dot, since a one-point line is invisible
            (x, y), = run
            parts.append(f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="3"/>')
        else:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            parts.append(f'<polyline class="{css}" points="{coords}"/>')
    return f'<g class="series" data-series="{_e(key)}"><title>{_e(label)}</title>{"".join(parts)}</g>'


def _axes_svg() -> str:
    out = []
    for pct in (0, 25, 50, 75, 100):
        y = _y(pct / 100)
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{pct}%</text>')
    for minutes in range(60, -1, -10):
        x = _LEFT + (60 - minutes) / 60 * _PLOT_W
        out.append(f'<line class="grid vgrid" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{_TOP + _PLOT_H}"/>')
        label = "now" if minutes == 0 else f"−{minutes} min"
        out.append(f'<text class="tick" x="{x:.1f}" y="{_H - _BOTTOM + 20}" text-anchor="middle">{label}</text>')
    out.append(f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_TOP + _PLOT_H}" y2="{_TOP + _PLOT_H}"/>')
    out.append(f'<line class="axis" x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_TOP + _PLOT_H}"/>')
    return "".join(out)


def _legend_svg() -> str:
    out, x = [], _W - _RIGHT - 290
    for _key, label, css in _SERIES:
        out.append(f'<line class="{css}" x1="{x}" x2="{x + 26}" y1="16" y2="16"/>')
        out.append(f'<text class="legend" x="{x + 34}" y="20">{_e(label)}</text>')
        x += 150
    return "".join(out)


def render_chart(history: Sequence[Mapping[str, Any]]) -> str:
    """The hit ratio and byte hit ratio of the last hour as an inline SVG,
    one point per minute (or per sample, when samples are further apart)."""
    times = [p["t"] for p in history if isinstance(p.get("t"), (int, float))]
    body = [_axes_svg(), _legend_svg()]
    points: list[dict[str, Any]] = []
    if times:
        end = max(times)
        points = per_bucket(history, end, max(60.0, _sample_step(history)))
        body.extend(_series_svg(points, key, css, label, end) for key, label, css in _SERIES)
    if not any(p[key] is not None for p in points for key, _l, _c in _SERIES):
        body.append(
            f'<text class="empty" x="{_LEFT + _PLOT_W / 2}" y="{_TOP + _PLOT_H / 2}" text-anchor="middle">'
            "No traffic sampled yet: the chart fills in as media requests arrive.</text>"
        )
    return (
        f'<svg id="hit-chart" viewBox="0 0 {_W} {_H}" role="img" preserveAspectRatio="xMidYMid meet" '
        f'aria-label="Hit ratio and byte hit ratio over the last hour">{"".join(body)}</svg>'
    )


def _sample_step(history: Sequence[Mapping[str, Any]]) -> float:
    times = [p["t"] for p in history[-2:] if isinstance(p.get("t"), (int, float))]
    return times[1] - times[0] if len(times) == 2 and times[1] > times[0] else 0.0


# -- the panels ---------------------------------------------------------------

def _bar(ratio: float, css: str = "") -> str:
    return f'<div class="bar {css}"><span style="width:{_ratio(ratio) * 100:.1f}%"></span></div>'


def _requests_table(snap: Mapping[str, Any]) -> str:
    total = _int(snap.get("requests"))
    rows = []
    for result in RESULTS:
        n = _int(snap.get(RESULT_FIELDS[result]))
        share = n / total if total else 0.0
        rows.append(
            f'<tr data-result="{result}" title="{_e(_RESULT_HELP[result])}"><td><i class="dot r-{result}"></i>{result}</td>'
            f'<td class="num">{fmt_count(n)}</td><td class="num dim">{fmt_percent(share)}</td>'
            f'<td class="barcell">{_bar(share, "r-" + result)}</td></tr>'
        )
    rows.append(f'<tr class="total"><td>total</td><td class="num">{fmt_count(total)}</td><td></td><td></td></tr>')
    not_found = _int(snap.get("not_found"))
    rows.append(
        f'<tr data-result="not-found" title="answered 404 or 410 (in whichever result above)">'
        f'<td class="dim">of which 404/410</td><td class="num" id="not-found-total">{fmt_count(not_found)}</td>'
        f'<td class="num dim">{fmt_percent(not_found / total if total else 0.0)}</td><td></td></tr>'
    )
    return f'<table id="requests-by-result">{"".join(rows)}</table>'


def _bytes_table(snap: Mapping[str, Any]) -> str:
    served = snap.get("bytes_served") or {}
    total = sum(_int(served.get(s)) for s in SOURCES)
    rows = []
    for source in SOURCES:
        n = _int(served.get(source))
        share = n / total if total else 0.0
        rows.append(
            f'<tr data-source="{source}"><td><i class="dot b-{source}"></i>{_e(_SOURCE_LABELS[source])}</td>'
            f'<td class="num">{fmt_bytes(n)}</td><td class="num dim">{fmt_percent(share)}</td>'
            f'<td class="barcell">{_bar(share, "b-" + source)}</td></tr>'
        )
    rows.append(f'<tr class="total"><td>total</td><td class="num">{fmt_bytes(total)}</td><td></td><td></td></tr>')
    return f'<table id="bytes-by-source">{"".join(rows)}</table>'


def _origin_table(snap: Mapping[str, Any]) -> str:
    outcomes = snap.get("origin_fetch_outcomes")
    head = "".join(f'<th class="num">{o}</th>' for o in OUTCOMES)
    rows = []
    for origin in ORIGINS:
        if isinstance(outcomes, Mapping) and isinstance(outcomes.get(origin), Mapping):
            cells = "".join(f'<td class="num">{fmt_count(_int(outcomes[origin].get(o)))}</td>' for o in OUTCOMES)
        else:  # a bare contract snapshot: totals only
            cells = f'<td class="num">{fmt_count(_int((snap.get("origin_fetches") or {}).get(origin)))}</td>' + "<td></td>" * (len(OUTCOMES) - 1)
        rows.append(f'<tr data-origin="{origin}"><td>{_e(_SOURCE_LABELS[origin])}</td>{cells}</tr>')
    coalesced = _int(snap.get("coalesced"))
    revalidated = _int(snap.get("revalidated"))
    return (
        f'<table id="origin-fetches"><tr><th></th>{head}</tr>{"".join(rows)}</table>'
        f'<p class="note">{fmt_count(coalesced)} requests joined a fetch already running (coalesced); '
        f'{fmt_count(revalidated)} were served from cache after a 304 revalidation.</p>'
    )


def _top_missed_table(snap: Mapping[str, Any]) -> str:
    entries = [m for m in snap.get("top_missed") or [] if isinstance(m, Mapping)]
    if not entries:
        return '<table id="top-missed"><tr><td class="dim">No misses yet.</td></tr></table>'
    rows = "".join(
        f'<tr><td class="num dim">{i}</td><td class="path"><code>{_e(m.get("path", ""))}</code></td>'
        f'<td class="num">{fmt_count(_int(m.get("count")))}</td></tr>'
        for i, m in enumerate(entries, 1)
    )
    return f'<table id="top-missed"><tr><th class="num">#</th><th>path</th><th class="num">misses</th></tr>{rows}</table>'


def _last_hour(window: Window | None, snap: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    """Rates a second and latency quantiles over the last hour (or since start, when younger)."""
    evictions = _int(node.get("evictions"))
    if window is None:
        return ('<p class="note" id="last-hour-empty">Rates appear a minute after start.</p>'
                f'<div class="kv"><span>evictions since start</span><strong id="evictions">{fmt_count(evictions)}</strong></div>')
    per = window.per_second
    minutes = round(window.seconds / 60)
    span = f"{minutes} min" if minutes >= 1 else f"{window.seconds:.0f} s"
    cells = (
        ("rate-requests", "requests", fmt_rate(per["requests"])),
        ("rate-hits", "hits + stale", fmt_rate(per["hit"] + per["stale"])),
        ("rate-misses", "misses", fmt_rate(per["miss"])),
        ("rate-not-found", "404/410", fmt_rate(per["not_found"])),
        ("rate-errors", "errors", fmt_rate(per["error"])),
        ("latency-p50", "latency p50", fmt_seconds(window.p50)),
        ("latency-p99", "latency p99", fmt_seconds(window.p99)),
        ("rate-evictions", "evictions", f"{per['evictions'] * 3600:,.0f}/h"),
    )
    tiles = "".join(f'<div class="tile"><span>{_e(label)}</span><strong id="{id_}">{_e(value)}</strong></div>'
                    for id_, label, value in cells)
    return (f'<div class="tiles">{tiles}</div><p class="note">Over the last {span}'
            f'{"" if minutes >= 60 else " (since start)"}; '
            f'<span id="evictions">{fmt_count(evictions)}</span> evictions since start.</p>')


def render_rate_chart(per_minute: Sequence[tuple[float, Window]]) -> str:
    """Requests a second, one bar a minute, for the last hour; p99 latency in each bar's title."""
    w, h, left, bottom, top = 960, 160, 56, 24, 12
    plot_w, plot_h = w - left - 20, h - top - bottom
    peak = max((win.per_second["requests"] for _t, win in per_minute), default=0.0)
    scale = peak if peak > 0 else 1.0
    bars = []
    n = max(len(per_minute), 1)
    slot = plot_w / 60
    for i, (_t, win) in enumerate(per_minute[-60:]):
        rate = win.per_second["requests"]
        height = rate / scale * plot_h
        x = left + plot_w - (min(n, 60) - i) * slot
        bars.append(f'<rect class="bar-rate" x="{x + 1:.1f}" y="{top + plot_h - height:.1f}" width="{max(slot - 2, 1):.1f}" '
                    f'height="{height:.1f}"><title>{_e(fmt_rate(rate))}, p99 {_e(fmt_seconds(win.p99))}</title></rect>')
    axis = (f'<line class="axis" x1="{left}" x2="{w - 20}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
            f'<text class="tick" x="{left - 8}" y="{top + 10}" text-anchor="end">{_e(fmt_rate(peak))}</text>'
            f'<text class="tick" x="{left - 8}" y="{top + plot_h}" text-anchor="end">0</text>'
            f'<text class="tick" x="{left}" y="{h - 6}">−60 min</text>'
            f'<text class="tick" x="{w - 20}" y="{h - 6}" text-anchor="end">now</text>')
    empty = "" if bars else (f'<text class="empty" x="{left + plot_w / 2}" y="{top + plot_h / 2}" '
                             'text-anchor="middle">A bar a minute appears as minutes pass.</text>')
    return (f'<svg id="rate-chart" viewBox="0 0 {w} {h}" role="img" aria-label="Requests per second, per minute, '
            f'last hour">{axis}{"".join(bars)}{empty}</svg>')


def _node_line(node: Mapping[str, Any]) -> str:
    if not node:
        return ""
    parts = (
        ("node-id", "node", node.get("node_id") or "—"),
        ("version", "version", node.get("version") or "—"),
        ("upstream", "upstream", node.get("upstream") or "none"),
        ("origin-profile", "origin", node.get("origin_profile") or "—"),
        ("uptime", "up", fmt_uptime(float(node.get("uptime_seconds") or 0))),
    )
    return '<div class="node">' + "".join(
        f'<span>{_e(label)} <strong id="{id_}">{_e(value)}</strong></span>' for id_, label, value in parts) + "</div>"


def _prefix_table(snap: Mapping[str, Any]) -> str:
    prefixes = snap.get("prefixes")
    if not isinstance(prefixes, Mapping) or not prefixes:
        return ""
    rows = []
    for prefix, view in prefixes.items():
        if not isinstance(view, Mapping):
            continue
        rows.append(
            f'<tr><td class="path"><code>{_e(prefix)}</code></td><td class="num">{fmt_count(_int(view.get("requests")))}</td>'
            f'<td class="num">{fmt_percent(_ratio(view.get("hit_ratio")))}</td>'
            f'<td class="num">{fmt_percent(_ratio(view.get("byte_hit_ratio")))}</td>'
            f'<td class="num">{fmt_bytes(_int(view.get("bytes")))}</td></tr>'
        )
    return (
        '<section class="card wide"><h2>By media prefix</h2><div class="scroll"><table id="prefixes"><tr><th>prefix</th>'
        '<th class="num">requests</th><th class="num">hit ratio</th><th class="num">byte hit ratio</th>'
        f'<th class="num">bytes</th></tr>{"".join(rows)}</table></div></section>'
    )


def _denied(snap: Mapping[str, Any]) -> str:
    """Private-media refusals (part of the errors), by reason; nothing when there were none."""
    denied = _int(snap.get("denied"))
    if not denied:
        return ""
    by_reason = snap.get("denied_by_reason")
    parts = ", ".join(f"{_e(str(r))} {fmt_count(_int(n))}" for r, n in by_reason.items() if _int(n)) \
        if isinstance(by_reason, Mapping) else ""
    return f' · <span id="denied">{fmt_count(denied)} denied</span>' + (f" ({parts})" if parts else "")


def _invalidations(snap: Mapping[str, Any]) -> str:
    seq = snap.get("invalidation_seq")
    by_type = snap.get("invalidations_by_type")
    if not isinstance(by_type, Mapping):
        by_type = {}
    types = list(INVALIDATION_TYPES) + sorted(str(t) for t in by_type if t not in INVALIDATION_TYPES)
    rows = "".join(f'<tr><td>{_e(t)}</td><td class="num">{fmt_count(_int(by_type.get(t)))}</td></tr>' for t in types)
    seq_text = fmt_count(seq) if isinstance(seq, int) and not isinstance(seq, bool) else "—"
    return (
        f'<div class="kv"><span>latest log sequence</span><strong id="invalidation-seq">{seq_text}</strong></div>'
        f'<div class="kv"><span>events applied</span><strong>{fmt_count(_int(snap.get("invalidations")))}</strong></div>'
        f'<table class="compact">{rows}</table>'
    )


def _cache_fill(snap: Mapping[str, Any]) -> str:
    used, size = _int(snap.get("cache_bytes")), _int(snap.get("cache_size"))
    entries = _int(snap.get("entries"))
    if size > 0:
        fill = used / size
        text = f"{fmt_bytes(used)} of {fmt_bytes(size)}"
        value = f"{fmt_percent(min(fill, 1.0))}"
    else:
        fill, text, value = 0.0, f"{fmt_bytes(used)} (no bound reported)", fmt_bytes(used)
    return (
        f'<div id="cache-fill" data-used="{used}" data-size="{size}">'
        f'<div class="big">{value}</div>{_bar(fill, "fill")}'
        f'<div class="sub">{text} · {fmt_count(entries)} entries</div></div>'
    )


_CSS = """
:root{--bg:#f4f6f9;--card:#fff;--ink:#1c2430;--dim:#6b7686;--line:#e3e7ee;--grid:#e9edf3;
--hit:#2563eb;--byte:#d97706;--ok:#16a34a;--stale:#0d9488;--miss:#d97706;--pass:#7c8594;--err:#dc2626;
--cache:#2563eb;--up:#8b5cf6;--db:#0891b2}
@media (prefers-color-scheme:dark){:root{--bg:#11151b;--card:#1a2029;--ink:#e6eaf0;--dim:#8d97a5;
--line:#2a323d;--grid:#252c36}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
header{display:flex;align-items:baseline;gap:16px;padding:18px 28px 6px}
header h1{font-size:20px;margin:0;letter-spacing:.2px}
header .meta{color:var(--dim);font-size:13px}
main{display:grid;grid-template-columns:repeat(12,minmax(0,1fr));gap:16px;padding:12px 28px 28px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 18px;
box-shadow:0 1px 2px rgba(16,24,40,.04);min-width:0}
.kpi{grid-column:span 3}.wide{grid-column:span 12}.third{grid-column:span 4}.two-thirds{grid-column:span 8}
h2{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--dim);margin:0 0 8px;font-weight:600}
.big{font-size:32px;font-weight:650;font-variant-numeric:tabular-nums;line-height:1.15}
.sub{color:var(--dim);font-size:12.5px;margin-top:4px}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
td,th{padding:5px 6px;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle}
th{font-weight:600;color:var(--dim);font-size:12px}
tr:last-child td{border-bottom:0}
tr.total td{font-weight:600}
.num{text-align:right;white-space:nowrap}
.dim{color:var(--dim)}
.barcell{width:32%}
td:first-child{white-space:nowrap}
#top-missed td:first-child,#top-missed th:first-child{width:2.5em}
#top-missed td.path{white-space:normal}
.bar{height:8px;background:var(--grid);border-radius:4px;overflow:hidden}
.bar span{display:block;height:100%;background:var(--hit);border-radius:4px}
.fill{height:10px;margin-top:10px}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:8px;background:var(--dim)}
.r-hit span,.dot.r-hit{background:var(--ok)}.r-stale span,.dot.r-stale{background:var(--stale)}
.r-miss span,.dot.r-miss{background:var(--miss)}.r-pass span,.dot.r-pass{background:var(--pass)}
.r-error span,.dot.r-error{background:var(--err)}
.b-cache span,.dot.b-cache{background:var(--cache)}.b-upstream span,.dot.b-upstream{background:var(--up)}
.b-db span,.dot.b-db{background:var(--db)}
.path code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.note{color:var(--dim);font-size:12.5px;margin:8px 0 0}
.kv{display:flex;justify-content:space-between;align-items:baseline;padding:2px 0 6px}
.kv span{color:var(--dim)}.kv strong{font-size:20px;font-variant-numeric:tabular-nums}
.compact td{padding:3px 6px;font-size:13px}
#hit-chart{width:100%;height:auto;display:block}
#hit-chart .grid{stroke:var(--grid);stroke-width:1}
#hit-chart .axis{stroke:var(--dim);stroke-width:1}
#hit-chart .tick,#hit-chart .legend{fill:var(--dim);font-size:12px}
#hit-chart .legend{fill:var(--ink);font-size:13px}
#hit-chart .empty{fill:var(--dim);font-size:14px}
#hit-chart polyline,#hit-chart line.s-hit,#hit-chart line.s-byte{fill:none;stroke-width:2.2;
stroke-linejoin:round;stroke-linecap:round}
#hit-chart .s-hit{stroke:var(--hit)}#hit-chart circle.s-hit{fill:var(--hit);stroke:none}
#hit-chart .s-byte{stroke:var(--byte);stroke-dasharray:7 4}#hit-chart circle.s-byte{fill:var(--byte);stroke:none}
header{flex-wrap:wrap}
.node{display:flex;flex-wrap:wrap;gap:4px 14px;color:var(--dim);font-size:13px;flex-basis:100%}
.node strong{color:var(--ink);font-weight:600;overflow-wrap:anywhere}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:10px}
.tile{display:flex;flex-direction:column;min-width:0}
.tile span{color:var(--dim);font-size:12px}.tile strong{font-size:20px;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
#rate-chart{width:100%;height:auto;display:block;margin-top:10px}
#rate-chart .bar-rate{fill:var(--hit)}
#rate-chart .axis{stroke:var(--dim);stroke-width:1}
#rate-chart .tick{fill:var(--dim);font-size:12px}#rate-chart .empty{fill:var(--dim);font-size:14px}
@media (max-width:900px){.kpi,.third,.two-thirds{grid-column:span 12}}
@media (max-width:600px){header{padding:12px 12px 4px;gap:8px}main{padding:8px 10px 16px;gap:10px}
.card{padding:12px}.big{font-size:26px}.barcell{display:none}td,th{padding:4px 4px}}
"""


def render_dashboard(snapshot: Mapping[str, Any], history: Sequence[Mapping[str, Any]], *, refresh_seconds: int = 5,
                     node: Mapping[str, Any] | None = None, last_hour: Window | None = None,
                     per_minute: Sequence[tuple[float, Window]] = ()) -> str:
    """The whole page. `snapshot` is Stats.snapshot(), `history` Stats.history(); `node`
    the runtime's node_info(), `last_hour` and `per_minute` from mediaedge.rates.MinuteRing."""
    snap = snapshot
    node = node or {}
    requests = _int(snap.get("requests"))
    hits = _int(snap.get("hits")) + _int(snap.get("stale"))
    served = snap.get("bytes_served") or {}
    cache_bytes_served = _int(served.get("cache")) if isinstance(served, Mapping) else 0
    refresh = max(int(refresh_seconds), 1)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>mediaedge · {fmt_percent(_ratio(snap.get("hit_ratio")))} hit ratio</title>
<style>{_CSS}</style></head>
<body>
<header><h1>mediaedge</h1><span class="meta">counting since <time id="since">{_e(snap.get("since", "—"))}</time>
· refreshes every {refresh} s</span>{_node_line(node)}</header>
<main>
<section class="card kpi"><h2>Hit ratio</h2><div class="big" id="hit-ratio">{fmt_percent(_ratio(snap.get("hit_ratio")))}</div>
<div class="sub">{fmt_count(hits)} of {fmt_count(requests)} requests from cache</div></section>
<section class="card kpi"><h2>Byte hit ratio</h2><div class="big" id="byte-hit-ratio">{fmt_percent(_ratio(snap.get("byte_hit_ratio")))}</div>
<div class="sub">{fmt_bytes(cache_bytes_served)} served from cache</div></section>
<section class="card kpi"><h2>Media requests</h2><div class="big" id="requests-total">{fmt_count(requests)}</div>
<div class="sub">{fmt_count(_int(snap.get("misses")))} misses · <span id="not-found">{fmt_count(_int(snap.get("not_found")))} not found (404/410)</span> · {fmt_count(_int(snap.get("errors")))} errors{_denied(snap)}</div></section>
<section class="card kpi"><h2>Cache fill</h2>{_cache_fill(snap)}</section>
<section class="card wide" id="last-hour"><h2>Last hour: rates and latency</h2>{_last_hour(last_hour, snap, node)}{render_rate_chart(per_minute)}</section>
<section class="card wide"><h2>Hit ratio and byte hit ratio, last hour, per minute</h2>{render_chart(history)}</section>
<section class="card third"><h2>Requests by result</h2>{_requests_table(snap)}</section>
<section class="card third"><h2>Bytes by source</h2>{_bytes_table(snap)}</section>
<section class="card third"><h2>Origin fetches</h2><div class="scroll">{_origin_table(snap)}</div></section>
<section class="card two-thirds"><h2>Top missed paths</h2>{_top_missed_table(snap)}</section>
<section class="card third"><h2>Invalidations</h2>{_invalidations(snap)}</section>
{_prefix_table(snap)}
</main>
</body></html>
"""


