"""conf/prometheus-alerts.yml and conf/grafana-dashboard.json against Debian's real Prometheus.

`promtool check rules` on the rule file; then a real `prometheus` on a free
loopback port scrapes a real edge (with its --admin-token as the bearer token,
as docs/monitoring.md configures it) with the rule file loaded, and the test
asserts that every rule loads and evaluates without error and that every query
of the Grafana dashboard evaluates as PromQL over metric names the edge exports.
`promtool test rules` runs tests/promtool/alerts_test.yml, where each alert fires
just past its threshold and stays quiet short of it. Static checks of both files
(quick tier) come first.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import require
from edge import REPO, Edge, Route, Upstream, free_port, wait_until

ALERTS = Path(REPO) / "conf" / "prometheus-alerts.yml"
DASHBOARD = Path(REPO) / "conf" / "grafana-dashboard.json"
TOKEN = "prom-scrape-token-1"
# Grafana's variables, as Grafana would fill them with "All" and a 1-minute step.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "${instance}": ".*", "$instance": ".*"}
# Names a query may use that the edge does not export: Prometheus's own.
PROMETHEUS_NAMES = {"up"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard, rows' nested panels included."""
    def panels(items: list[dict]) -> list[dict]:
        out = []
        for p in items:
            out.append(p)
            out.extend(panels(p.get("panels", [])))
        return out

    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(p["title"], t["expr"]) for p in panels(doc["panels"]) for t in p.get("targets", [])]


def with_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers followed by a selector or range,
    or standing alone, minus functions, keywords and label names."""
    stripped = re.sub(r'"[^"]*"', '""', expr)  # label values
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # label matchers
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", stripped))
    keywords = {"and", "or", "unless", "offset", "bool", "inf", "nan", "le", "m", "s", "h", "d"}
    return {n for n in names if n.lower() not in keywords and not re.fullmatch(r"\d.*", n)}


def exported_names(metrics_text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines() if line and not line.startswith("#")}


# -- static checks (quick tier) -----------------------------------------------------

def test_dashboard_is_json_with_queries_on_our_metrics():
    queries = dashboard_queries()
    assert len(queries) >= 25
    used = set().union(*(metric_names(with_variables(e)) for _t, e in queries))
    # the issue's list: rates, hit ratios, latency quantiles, origin outcomes, invalidations, cache fill
    for name in ("mediaedge_requests_total", "mediaedge_served_bytes_total", "mediaedge_request_duration_seconds_bucket",
                 "mediaedge_origin_fetches_total", "mediaedge_invalidations_total", "mediaedge_cache_bytes",
                 "mediaedge_cache_size_bytes", "mediaedge_invalidation_lag_seconds", "mediaedge_evictions_total"):
        assert name in used, name
    assert any("histogram_quantile(0.99" in e for _t, e in queries)


def test_metric_names_parser():
    assert metric_names('sum by (le) (rate(mediaedge_x_bucket{instance=~".*",result="hit"}[1m]))') == {"mediaedge_x_bucket"}
    assert metric_names("a / b and up{job=\"m\"} == 0") == {"a", "b", "up"}
    assert metric_names('histogram_quantile(0.5, sum by (le, result) (rate(x[5m] offset 1d)))') == {"x"}


def test_alert_rules_cover_the_issue():
    text = ALERTS.read_text(encoding="utf-8")
    for alert in ("MediaedgeHitRatioLow", "MediaedgeHitRatioFalling", "MediaedgeOriginErrors", "MediaedgeDiskErrors",
                  "MediaedgeInvalidationLogStalled", "MediaedgeInvalidationLogBacklog"):
        assert f"alert: {alert}" in text, alert
    # every rule says why, in a comment right above it
    blocks = text.split("      - alert: ")[1:]
    before = text.split("      - alert: ")
    for i, block in enumerate(blocks):
        assert before[i].rstrip().splitlines()[-1].strip().startswith("#"), block.splitlines()[0]


# -- the real Prometheus (full tier) --------------------------------------------------

def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        require(f"{name} is not installed (scripts/install-deps.sh installs Debian's prometheus)")
    return path


@pytest.mark.full
def test_promtool_checks_the_rules():
    result = subprocess.run([binary("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


@pytest.mark.full
def test_each_alert_fires_at_its_threshold():
    """tests/promtool/alerts_test.yml: series just over and just under each threshold,
    evaluated by promtool's rule unit tests (labels and rendered annotations included)."""
    cases = Path(REPO) / "tests" / "promtool" / "alerts_test.yml"
    result = subprocess.run([binary("promtool"), "test", "rules", str(cases)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # every alert of the rule file has a case that makes it fire
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", cases.read_text(encoding="utf-8")))
    assert fired == set(re.findall(r"- alert: (\w+)", ALERTS.read_text(encoding="utf-8")))


class Prometheus:
    """A real prometheus on a free loopback port, its data in a temporary directory."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        # The scrape config docs/monitoring.md gives, with a 1 s interval for the test.
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {ALERTS}\n"
            "scrape_configs:\n  - job_name: mediaedge\n    authorization:\n      type: Bearer\n"
            f"      credentials: {TOKEN}\n    static_configs:\n      - targets: ['{target}']\n",
            encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)

    def api(self, path: str, **params: str) -> dict:
        r = requests.get(f"http://127.0.0.1:{self.port}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.mark.full
def test_prometheus_scrapes_an_edge_and_every_rule_and_dashboard_query_works(tmp_path):
    upstream = Upstream()
    for i in range(5):
        upstream.routes[f"/media/p{i}.jpg"] = Route(body=os.urandom(1000) + bytes([i]),
                                                    headers={"Content-Type": "image/jpeg"})
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--admin-token", TOKEN]).start()
    prom = Prometheus(tmp_path, f"127.0.0.1:{edge.admin_port}")
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{prom.port}/-/ready", timeout=1).ok, 60, 0.2,
                   f"prometheus to be ready: {prom.log()}")

        def traffic() -> None:
            for i in range(5):
                assert edge.get(f"/media/p{i}.jpg").status_code == 200
            assert edge.get("/media/missing.jpg").status_code == 404

        # the target is scraped with the token (a refused token would show health "down")
        def target_up() -> bool:
            traffic()
            targets = prom.api("targets")["activeTargets"]
            return len(targets) == 1 and targets[0]["health"] == "up"
        wait_until(target_up, 60, 0.5, f"prometheus to scrape the edge: {prom.log()}")

        # every rule loaded and evaluated without error
        def rules_evaluated() -> list[dict]:
            rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
            return rules if rules and all(r["lastEvaluation"] > "2000" for r in rules) else []
        rules = wait_until(rules_evaluated, 60, 0.5, "every rule to be evaluated")
        assert len(rules) == 8
        assert [(r["name"], r["health"], r.get("lastError", "")) for r in rules] == \
            [(r["name"], "ok", "") for r in rules]
        assert all(r["type"] == "alerting" for r in rules)

        # every dashboard query is valid PromQL over names the edge exports, and has data
        metrics_text = requests.get(f"{edge.admin}/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                                    timeout=10).text
        exported = exported_names(metrics_text)
        queries = dashboard_queries()
        for title, expr in queries:
            missing = metric_names(with_variables(expr)) - exported - PROMETHEUS_NAMES
            assert not missing, f"{title}: {expr} uses {missing}, not exported by the edge"

        def all_answer() -> bool:
            traffic()
            empty = []
            for title, expr in queries:
                data = prom.api("query", query=with_variables(expr))  # asserts status success
                if not data["result"]:
                    empty.append(title)
            assert not empty, f"no data yet for {empty}"
            return True
        wait_until(all_answer, 60, 1.0, "every dashboard query to return data")
    finally:
        prom.stop()
        edge.stop()
        upstream.close()
