"""mediaedge.dashboard: the admin plane's HTML page.

Unit tests read the HTML as text and through html.parser; one full-tier test
loads it from a real HTTP server in a real headless Chromium, checks the
rendered DOM and saves a screenshot to test-artifacts/dashboard.png.
"""
from __future__ import annotations

import http.server
import os
import random
import re
import shutil
import struct
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mediaedge.dashboard import per_bucket, render_chart, render_dashboard
from mediaedge.stats import Stats

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
EVIL = "/media/<script>alert(1)</script>.jpg"
EVIL_ESCAPED = "/media/&lt;script&gt;alert(1)&lt;/script&gt;.jpg"
IDS = ("hit-chart", "hit-ratio", "byte-hit-ratio", "requests-by-result", "top-missed", "cache-fill", "invalidation-seq")


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def busy_stats() -> Stats:
    """An hour of traffic warming up, with a quiet gap, sampled every 5 s."""
    clock = Clock()
    stats = Stats(clock=clock, prefixes=("/media/", "/media/catalog/"))
    rng = random.Random(3)
    for step in range(720):
        clock.t += 5
        if not 200 <= step < 240:
            warm = min(step / 300, 1.0)
            for _ in range(rng.randint(5, 25)):
                path = f"/media/catalog/product/{int(rng.paretovariate(1.2)) % 300}.jpg"
                r = rng.random()
                if r < 0.5 + 0.4 * warm:
                    stats.record(result="hit", source="cache", body_bytes=rng.randint(2_000, 90_000), duration=0.0004, path=path)
                elif r < 0.97:
                    stats.record(result="miss", source="db", body_bytes=rng.randint(2_000, 300_000), duration=0.03, path=path)
                    stats.origin_fetch("db", "ok")
                else:
                    stats.record(result="error", source=None, body_bytes=40, duration=0.5, path=path)
                    stats.origin_fetch("upstream", "error")
        stats.sample()
    for _ in range(3):
        stats.record(result="miss", source="db", body_bytes=10, duration=0.1, path=EVIL)
    stats.invalidation("publish", 12)
    stats.invalidation("purge", 2)
    return stats


def page_for(stats: Stats, **kw) -> str:
    snap = stats.snapshot(entries=4213, cache_bytes=700 * 2**20, cache_size=2**30, invalidation_seq=1234)
    return render_dashboard(snap, stats.history(), **kw)


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, tuple[str, dict]] = {}
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.by_id[attrs["id"]] = (tag, attrs)


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    return parser


def text_of(page: str, id_: str) -> str:
    m = re.search(rf'id="{id_}"[^>]*>(.*?)<', page, re.S)
    assert m, id_
    return m.group(1)


# -- content ---------------------------------------------------------------------

def test_has_every_element_the_operators_and_tests_look_for():
    stats = busy_stats()
    page = page_for(stats)
    found = parse(page).by_id
    for id_ in IDS:
        assert id_ in found, id_
    assert found["hit-chart"][0] == "svg"
    snap = stats.snapshot(entries=0, cache_bytes=0, cache_size=0)
    assert text_of(page, "hit-ratio") == f"{snap['hit_ratio'] * 100:.1f}%"
    assert text_of(page, "byte-hit-ratio") == f"{snap['byte_hit_ratio'] * 100:.1f}%"
    assert text_of(page, "invalidation-seq") == "1,234"
    assert found["cache-fill"][1]["data-used"] == str(700 * 2**20)
    assert found["cache-fill"][1]["data-size"] == str(2**30)
    assert "68.4%" in page and "700.0 MiB of 1.0 GiB" in page
    assert f"{snap['requests']:,}" in page
    assert snap["since"] in page


def test_requests_by_result_rows():
    stats = Stats(clock=Clock())
    for result, n in (("hit", 6), ("stale", 1), ("miss", 2), ("pass", 0), ("error", 1)):
        for _ in range(n):
            stats.record(result=result, source="cache", body_bytes=1, duration=0.001, path="/media/a")
    page = render_dashboard(stats.snapshot(entries=0, cache_bytes=0, cache_size=0), [])
    table = page[page.index('id="requests-by-result"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'data-result="(\w+)".*?class="num">([\d,]+)</td><td class="num dim">([\d.]+%)', table)
    assert rows == [("hit", "6", "60.0%"), ("stale", "1", "10.0%"), ("miss", "2", "20.0%"),
                    ("pass", "0", "0.0%"), ("error", "1", "10.0%")]


def test_attacker_controlled_strings_are_escaped():
    stats = busy_stats()
    stats.invalidation("<img src=x onerror=alert(2)>")
    snap = stats.snapshot(entries=1, cache_bytes=1, cache_size=1, invalidation_seq=None)
    snap["since"] = "<b>now</b>"
    snap["prefixes"]['/m/"><script>'] = {"requests": 1}
    page = render_dashboard(snap, stats.history())
    assert EVIL_ESCAPED in page
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert text_of(page, "invalidation-seq") == "—"
    assert not any(tag == "script" for tag, _ in parse(page).tags)


def test_self_contained_and_self_refreshing():
    page = page_for(busy_stats(), refresh_seconds=7)
    assert '<meta http-equiv="refresh" content="7">' in page
    tags = parse(page).tags
    assert not any(tag in ("script", "link", "iframe", "img") for tag, _ in tags)
    assert not any(k in ("src", "href") for _tag, attrs in tags for k in attrs)
    assert "@import" not in page and "url(" not in page
    assert "http://" not in page and "https://" not in page


def test_a_bare_contract_snapshot_renders():
    bare = {"requests": 4, "hits": 3, "misses": 1, "stale": 0, "passes": 0, "errors": 0, "hit_ratio": 0.75,
            "byte_hit_ratio": 0.5, "origin_fetches": {"upstream": 0, "db": 1}, "coalesced": 0,
            "bytes_served": {"cache": 10, "upstream": 0, "db": 10}, "entries": 1, "cache_bytes": 20,
            "invalidations": 0, "since": "2025-01-01T00:00:00+00:00"}
    page = render_dashboard(bare, [])
    assert text_of(page, "hit-ratio") == "75.0%"
    for id_ in IDS:
        assert f'id="{id_}"' in page


# -- the chart ---------------------------------------------------------------------

def test_empty_history_draws_axes_and_says_so():
    svg = render_chart([])
    assert svg.startswith('<svg id="hit-chart"')
    assert "No traffic sampled yet" in svg
    assert "<polyline" not in svg and "100%" in svg and "now" in svg and "−60 min" in svg


def test_history_without_traffic_says_so():
    svg = render_chart([{"t": 1000.0 + 5 * i, "hit_ratio": None, "byte_hit_ratio": None, "requests": 0} for i in range(50)])
    assert "No traffic sampled yet" in svg and "<polyline" not in svg


def test_gaps_break_the_line_and_lone_points_are_dots():
    end = 10_000.0
    history = []
    for minute in range(60):  # minutes 0-19 traffic, 20-39 nothing, 40 alone, 41-59 nothing
        has = minute < 20 or minute == 40
        history.append({"t": end - 3540 + 60 * minute, "hit_ratio": 0.5 if has else None,
                        "byte_hit_ratio": 0.25 if has else None, "requests": 2 if has else 0})
    svg = render_chart(history)
    assert svg.count("<polyline") == 2  # one run per series
    assert svg.count("<circle") == 2  # minute 40, per series
    assert "No traffic" not in svg


def test_points_land_where_the_ratios_say():
    # one sample per minute, ratio 1.0 then 0.0: y at the top and bottom of the plot area
    history = [{"t": 3600.0, "hit_ratio": 1.0, "byte_hit_ratio": 0.0, "requests": 1},
               {"t": 3660.0, "hit_ratio": 0.0, "byte_hit_ratio": 1.0, "requests": 1}]
    svg = render_chart(history)
    hit = re.search(r'<polyline class="s-hit" points="([^"]+)"', svg).group(1)
    (x1, y1), (x2, y2) = [tuple(map(float, p.split(","))) for p in hit.split()]
    assert x2 == 940.0 and x2 - x1 == pytest.approx(884 / 60, abs=0.1)
    assert (y1, y2) == (36.0, 264.0)


def test_per_bucket_merges_samples_exactly():
    end = 1000.0
    history = [
        {"t": end - 65, "requests": 4, "hits": 1, "bytes": 100, "bytes_cache": 0, "hit_ratio": 0.25, "byte_hit_ratio": 0.0},
        {"t": end - 10, "requests": 2, "hits": 2, "bytes": 300, "bytes_cache": 300, "hit_ratio": 1.0, "byte_hit_ratio": 1.0},
        {"t": end - 5, "requests": 4, "hits": 1, "bytes": 100, "bytes_cache": 0, "hit_ratio": 0.25, "byte_hit_ratio": 0.0},
        {"t": end, "requests": 0, "hits": 0, "bytes": 0, "bytes_cache": 0, "hit_ratio": None, "byte_hit_ratio": None},
        {"t": end - 4000, "requests": 9, "hits": 9, "bytes": 9, "bytes_cache": 9, "hit_ratio": 1, "byte_hit_ratio": 1},
    ]
    assert per_bucket(history, end, 60) == [
        {"t": end - 65, "hit_ratio": 0.25, "byte_hit_ratio": 0.0},
        {"t": end, "hit_ratio": 0.5, "byte_hit_ratio": 0.75},
    ]
    # points without counts (the brief's minimal shape) weigh ratios by requests
    minimal = [{"t": end - 10, "hit_ratio": 1.0, "byte_hit_ratio": 1.0, "requests": 1},
               {"t": end, "hit_ratio": 0.0, "byte_hit_ratio": 0.0, "requests": 3}]
    assert per_bucket(minimal, end, 60) == [{"t": end, "hit_ratio": 0.25, "byte_hit_ratio": 0.5}]


# -- a real browser -------------------------------------------------------------------

def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "Chromium is not installed (scripts/install-deps.sh installs Debian's chromium)"
    if os.environ.get("MEDIAEDGE_FULL") == "1":
        pytest.fail(message)
    pytest.skip(message)


class ServePage:
    """A real http.server on a free 127.0.0.1 port answering GET / with the page."""

    def __init__(self, page: str) -> None:
        body = page.encode()
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                if self.path != "/":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ServePage:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.full
@pytest.mark.browser
def test_dashboard_in_headless_chromium(tmp_path):
    binary = chromium_binary()
    stats = busy_stats()
    snap = stats.snapshot(entries=4213, cache_bytes=700 * 2**20, cache_size=2**30, invalidation_seq=1234)
    page = render_dashboard(snap, stats.history())
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    full = ARTIFACTS / "dashboard-full.png"
    for old in (shot, full):
        old.unlink(missing_ok=True)

    with ServePage(page) as server:
        dom = chromium(binary, tmp_path / "dom", "--dump-dom", server.url).stdout
        chromium(binary, tmp_path / "shot", f"--screenshot={shot}", "--window-size=1280,900", server.url)
        chromium(binary, tmp_path / "full", f"--screenshot={full}", "--window-size=1280,1900", server.url)
    assert server.requests.count("/") >= 3

    # the chart was parsed as SVG and has its lines
    start = dom.index('<svg id="hit-chart"')
    svg = dom[start:dom.index("</svg>", start)]
    assert svg.count("<polyline") >= 2
    assert 'class="s-hit"' in svg and 'class="s-byte"' in svg
    assert "No traffic" not in svg
    # the numbers are in the rendered page
    assert f'id="hit-ratio">{snap["hit_ratio"] * 100:.1f}%<' in dom
    assert f'id="byte-hit-ratio">{snap["byte_hit_ratio"] * 100:.1f}%<' in dom
    assert 'id="invalidation-seq">1,234<' in dom
    assert f"{snap['requests']:,}" in dom
    for id_ in IDS:
        assert f'id="{id_}"' in dom
    # the hostile path is text, not an element
    assert EVIL_ESCAPED in dom and "<script" not in dom

    assert png_size(shot) == (1280, 900)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert png_size(full)[0] == 1280


def test_denied_line_only_when_there_were_refusals():
    stats = busy_stats()
    assert 'id="denied"' not in page_for(stats)
    stats.denied("signature")
    stats.denied("auth")
    page = page_for(stats)
    assert '<span id="denied">2 denied</span> (signature 1, auth 1)' in page


# -- the operator's view: who the node is, rates and latency, 404s, evictions ----------

from mediaedge.dashboard import fmt_rate, fmt_seconds, fmt_uptime, render_rate_chart  # noqa: E402
from mediaedge.rates import MinuteRing, Snapshot  # noqa: E402
from mediaedge.stats import RESULTS  # noqa: E402

NODE = {"node_id": "edge-1:8080", "version": "0.1.0", "upstream": "http://127.0.0.1:8000",
        "origin_profile": "magento2", "uptime_seconds": 93784.0, "evictions": 321}


def ring_for(stats: Stats, start: float, minutes: int) -> tuple[MinuteRing, Snapshot]:
    """A ring over `minutes` of steady traffic from `stats`' counters (each minute adds what
    the stats had at the end, scaled), and the snapshot for "now"."""
    ring = MinuteRing()
    results, not_found, buckets = stats.cumulative()
    for m in range(minutes + 1):
        ring.observe(Snapshot(start + 60 * m, tuple(results[r] * m for r in RESULTS), not_found * m,
                              tuple(b * m for b in buckets), 2 * m))
    now = Snapshot(start + 60 * minutes, tuple(results[r] * minutes for r in RESULTS), not_found * minutes,
                   tuple(b * minutes for b in buckets), 2 * minutes)
    return ring, now


@pytest.mark.parametrize(("value", "text"), [(0, "0.00/s"), (0.25, "0.25/s"), (12.345, "12.3/s"), (1234.5, "1,234/s")])
def test_fmt_rate(value, text):
    assert fmt_rate(value) == text


@pytest.mark.parametrize(("value", "text"), [(None, "—"), (0.0004, "0.40 ms"), (0.25, "250 ms"), (3, "3.00 s"),
                                             (float("inf"), "—")])
def test_fmt_seconds(value, text):
    assert fmt_seconds(value) == text


@pytest.mark.parametrize(("value", "text"), [(42, "42s"), (60, "1m"), (3720, "1h 2m"), (93784, "1d 2h 3m"), (-5, "0s")])
def test_fmt_uptime(value, text):
    assert fmt_uptime(value) == text


def test_node_rates_latency_404s_and_evictions():
    stats = Stats(clock=Clock())
    for _ in range(50):
        stats.record(result="hit", source="cache", body_bytes=1, duration=0.0004, path="/media/a")
    for _ in range(9):
        stats.record(result="miss", source="db", body_bytes=1, duration=0.03, path="/media/b")
    stats.record(result="miss", source="db", body_bytes=1, duration=0.03, path="/media/gone", status=404)
    ring, now = ring_for(stats, 1_700_000_000.0, 60)
    page = render_dashboard(stats.snapshot(entries=1, cache_bytes=1, cache_size=10), stats.history(), node=NODE,
                            last_hour=ring.last_hour(now), per_minute=ring.per_minute(now))
    for id_, text in (("node-id", "edge-1:8080"), ("version", "0.1.0"), ("upstream", "http://127.0.0.1:8000"),
                      ("origin-profile", "magento2"), ("uptime", "1d 2h 3m"),
                      # 60 requests a minute: 1/s; 50 hits, 10 misses of which one 404
                      ("rate-requests", "1.00/s"), ("rate-hits", "0.83/s"), ("rate-misses", "0.17/s"),
                      ("rate-not-found", "0.02/s"), ("rate-errors", "0.00/s"),
                      # p50: rank 30 of the 50 in (0, 0.0005]; p99: rank 59.4, 9.4 of the 10 in (0.025, 0.05]
                      ("latency-p50", "0.30 ms"), ("latency-p99", "48 ms"),
                      ("rate-evictions", "120/h"), ("evictions", "321"), ("not-found-total", "1")):
        assert text_of(page, id_) == text, id_
    assert "1 not found (404/410)" in page
    assert "Over the last 60 min;" in page
    svg = page[page.index('<svg id="rate-chart"'):]
    assert svg[:svg.index("</svg>")].count('<rect class="bar-rate"') == 60


def test_a_young_node_shows_rates_since_start_and_no_bars_yet():
    page = render_dashboard(busy_stats().snapshot(entries=0, cache_bytes=0, cache_size=1), [], node=NODE)
    assert 'id="last-hour-empty"' in page and text_of(page, "evictions") == "321"
    assert "A bar a minute appears" in render_rate_chart([])


def test_node_facts_are_escaped():
    node = {**NODE, "node_id": "<script>x</script>", "upstream": 'http://a/"><img src=x>'}
    page = render_dashboard({}, [], node=node)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


# -- a real node in a real browser, phone-sized and wide -------------------------------

@pytest.mark.full
@pytest.mark.browser
def test_dashboard_of_a_real_node_on_a_phone_with_a_token(tmp_path):
    from edge import Edge, Route, Upstream, wait_until
    from webdriver import Browser

    chromium_binary()
    if shutil.which("chromedriver") is None:
        pytest.fail("chromedriver is not installed (scripts/install-deps.sh installs chromium-driver)")
    token = "dash-token"
    upstream = Upstream()
    for i in range(8):
        upstream.routes[f"/media/catalog/product/{i}.jpg"] = Route(body=bytes([i]) * 5000,
                                                                   headers={"Cache-Control": "max-age=600"})
    edge = Edge(str(tmp_path), upstream=upstream.url,
                args=["--admin-token", token, "--node-id", "edge-phone-1", "--cache-size", "64MiB"]).start()
    ARTIFACTS.mkdir(exist_ok=True)
    phone_shot, wide_shot = ARTIFACTS / "dashboard-phone.png", ARTIFACTS / "dashboard-wide.png"
    for old in (phone_shot, wide_shot):
        old.unlink(missing_ok=True)
    browser = None
    try:
        for _ in range(3):
            for i in range(8):
                assert edge.get(f"/media/catalog/product/{i}.jpg").status_code == 200
        for _ in range(2):
            assert edge.get("/media/catalog/product/missing.jpg").status_code == 404
        browser = Browser(tmp_path / "profile", width=1280, height=1000)
        browser.emulate_phone(420, 900)  # a desktop window cannot be narrower than 500 px

        # without the token: the admin plane's refusal, not the page
        browser.get(edge.admin + "/")
        assert "admin token required" in browser.run("return document.body.innerText")

        browser.get(f"{edge.admin}/?token={token}")
        assert browser.run("return window.innerWidth") == 420
        text = browser.run("return document.body.innerText")
        assert "edge-phone-1" in text and "http://127.0.0.1:" in text and "native" in text
        ids = browser.run("return [...document.querySelectorAll('[id]')].map(e => e.id)")
        for id_ in (*IDS, "node-id", "uptime", "rate-requests", "latency-p50", "latency-p99", "rate-not-found",
                    "not-found", "evictions", "rate-chart"):
            assert id_ in ids, id_
        got = browser.run("return Object.fromEntries(['requests-total', 'not-found-total', 'node-id', 'origin-profile']"
                          ".map(id => [id, document.getElementById(id).textContent]))")
        assert got == {"requests-total": "26", "not-found-total": "2", "node-id": "edge-phone-1",
                       "origin-profile": "native"}
        # readable on a phone: nothing wider than the screen, no sideways scrolling
        widths = browser.run("return [document.documentElement.scrollWidth, document.body.scrollWidth]")
        assert widths[0] <= 420 and widths[1] <= 420, widths
        browser.screenshot(phone_shot)
        assert png_size(phone_shot)[0] == 420 and phone_shot.stat().st_size > 20_000

        # the page refreshes itself (meta refresh): the reload keeps the token, so it is the page again
        browser.run("window.__before_refresh = true")
        wait_until(lambda: browser.run("return window.__before_refresh === undefined && "
                                       "document.getElementById('hit-ratio') !== null"), 20, 0.2,
                   "the dashboard to reload itself, still authorised")
        assert "token=" + token in browser.run("return location.href")

        browser.emulate_desktop()
        assert browser.run("return document.documentElement.scrollWidth") <= 1280
        browser.screenshot(wide_shot)
        assert png_size(wide_shot)[0] >= 1200
    finally:
        if browser is not None:
            browser.close()
        edge.stop()
        upstream.close()
