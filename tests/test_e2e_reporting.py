"""Reporting end to end: known traffic through a real node reconciles exactly with /stats and /metrics."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.edge import REPO, Edge, Route, Upstream, wait_until

BODY = os.urandom(5000)


def metric(text: str, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError((name, labels))


def test_scripted_traffic_reconciles(tmp_path):
    up = Upstream()
    up.routes["/media/a.jpg"] = Route(body=BODY, headers={"X-Media-Revision": "a"})
    up.routes["/media/priv.jpg"] = Route(body=b"p" * 100, headers={"Cache-Control": "private"})
    up.routes["/media/gone.jpg"] = Route(status=404, body=b"no")
    log_path = tmp_path / "access.log"
    e = Edge(str(tmp_path), upstream=up.url, args=["--access-log", str(log_path)]).start()
    try:
        e.get("/media/a.jpg")  # miss, upstream, 5000 bytes
        e.get("/media/a.jpg")  # hit, cache
        e.get("/media/a.jpg", headers={"Range": "bytes=0-99"})  # hit, 100 bytes
        e.get("/media/priv.jpg")  # pass (not storable), upstream, 100 bytes
        e.get("/media/gone.jpg")  # miss: upstream 404 → db (empty) → the app's own 404, negative entry
        e.get("/media/gone.jpg")  # hit (negative cache)
        e.get("/media/a%00b.jpg")  # error 400 (media-looking)
        e.get("/api/not-media")  # not a media request: not counted
        s = e.stats()
        assert s["requests"] == 7
        assert (s["hits"], s["misses"], s["passes"], s["stale"], s["errors"]) == (3, 2, 1, 0, 1)
        assert s["requests"] == s["hits"] + s["stale"] + s["misses"] + s["passes"] + s["errors"]
        assert s["hit_ratio"] == pytest.approx(3 / 7)
        assert s["origin_fetches"]["upstream"] == 3
        nf = len(b"no")  # the app's own 404 body (mediaedge.policy.fallback)
        assert s["bytes_served"] == {"cache": 5000 + 100 + nf, "upstream": 5000 + 100 + nf, "db": 0}
        total = sum(s["bytes_served"].values())
        assert s["byte_hit_ratio"] == pytest.approx((5100 + nf) / total)
        assert s["entries"] == 2
        m = requests.get(e.admin + "/metrics", timeout=5).text
        assert metric(m, "mediaedge_requests_total", result="hit") == 3
        assert metric(m, "mediaedge_requests_total", result="error") == 1
        assert metric(m, "mediaedge_served_bytes_total", source="cache") == 5100 + nf
        assert metric(m, "mediaedge_origin_fetches_total", origin="upstream", outcome="ok") == 2
        assert metric(m, "mediaedge_origin_fetches_total", origin="upstream", outcome="notfound") == 1
        assert metric(m, "mediaedge_origin_fetches_total", origin="db", outcome="notfound") == 1
        assert metric(m, "mediaedge_cache_entries") == 2
        assert metric(m, "mediaedge_request_duration_seconds_count", result="hit") == 3
        lines = wait_until(lambda: log_path.read_text().splitlines() if log_path.exists() else None, 5)
        assert len(lines) == 7 and any("cache=hit" in line for line in lines)
        # the CLI table and JSON read the same numbers
        out = subprocess.run([sys.executable, "-m", "mediaedge", "stats", "--admin", e.admin, "--json"], cwd=REPO,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and '"hits": 3' in out.stdout.replace('"hits":3', '"hits": 3')
        table = subprocess.run([sys.executable, "-m", "mediaedge", "stats", "--admin", e.admin], cwd=REPO,
                               capture_output=True, text=True, timeout=30)
        assert table.returncode == 0 and "42.9" in table.stdout  # hit ratio 3/7
    finally:
        e.stop()
        up.close()
    # counters survive a restart (stats file written at shutdown)
    e = Edge(str(tmp_path)).start()
    try:
        assert e.stats()["hits"] == 3
    finally:
        e.stop()


@pytest.mark.full
@pytest.mark.browser
def test_dashboard_of_a_live_node_in_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("MEDIAEDGE_FULL") == "1":
            pytest.fail("chromium missing in the full tier (scripts/install-deps.sh installs it)")
        pytest.skip("chromium not installed")
    # an hour's history as a node that ran before would have saved it
    import time as _time

    from mediaedge.stats import Stats

    now = _time.time()
    clock = {"t": now - 3000}
    past = Stats(clock=lambda: clock["t"])
    for i in range(600):
        clock["t"] = now - 3000 + i * 5
        for j in range(10):
            hit = (i * 10 + j) % 10 < 5 + (i // 60) % 5
            past.record(result="hit" if hit else "miss", source="cache" if hit else "db", body_bytes=1000 + j * 500,
                        duration=0.001, path=f"/media/p{j}.jpg")
        past.sample()
    (tmp_path / "cache").mkdir(mode=0o700)
    past.save(str(tmp_path / "cache" / "stats.json"))
    up = Upstream()
    up.routes["/media/d.jpg"] = Route(body=BODY)
    e = Edge(str(tmp_path), upstream=up.url).start()
    try:
        for _ in range(5):
            e.get("/media/d.jpg")
        e.get("/media/missing-<b>.jpg")
        artifacts = os.path.join(REPO, "test-artifacts")
        os.makedirs(artifacts, exist_ok=True)
        shot = os.path.join(artifacts, "dashboard-live.png")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1280,1000"]
        dom = subprocess.run([chromium, *flags, "--dump-dom", e.admin + "/"], capture_output=True, text=True,
                             timeout=60).stdout
        assert 'id="hit-chart"' in dom and "<svg" in dom
        assert 'id="hit-ratio"' in dom
        assert "<polyline" in dom or "<path" in dom  # the restored hour is drawn
        assert "<b>.jpg" not in dom  # attacker-controlled paths are escaped
        subprocess.run([chromium, *flags, f"--screenshot={shot}", e.admin + "/"], capture_output=True, timeout=60)
        assert os.path.getsize(shot) > 10_000
    finally:
        e.stop()
        up.close()
