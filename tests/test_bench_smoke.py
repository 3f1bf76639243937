"""Smoke test of the benchmark harness: `python -m bench --quick` runs and reports numbers.

Not a performance test: it asserts no thresholds, only that every scenario ran and
produced numbers. wrk and nginx are optional for the harness (it falls back to its
Python load generator and skips nginx), so this runs in the quick tier too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_runs_and_reports(tmp_path):
    out = tmp_path / "quick.json"
    p = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    assert "bench: 10KB hits @16:" in p.stdout
    r = json.loads(out.read_text())
    assert r["errors"] == {}, (r["errors"], r.get("logs"))
    sc = r["scenarios"]

    hits = sc["hits"]["by_conns"]["16"]["contenders"]
    for name in ("mediaedge", "mitmdump", "ceiling", "origin"):
        assert hits[name]["median"]["rps"] > 0, name
        assert hits[name]["median"]["p99_ms"] > 0, name
    assert sc["hits"]["mediaedge_stats"]["hits"] > 0
    assert "mediaedge/mitmdump" in sc["hits"]["by_conns"]["16"]["median_of_ratios"]

    misses = sc["misses"]["misses"]
    assert misses["mediaedge (upstream)"]["statuses"] == {"200": sc["misses"]["n_per_contender"]}
    assert misses["mediaedge (db only: sqlite)"]["p50_ms"] > 0
    assert any("detail=db" in k for k in misses["mediaedge (db only: sqlite)"]["cache_status"])

    stampede = sc["stampede"]["contenders"]["mediaedge"]
    assert stampede["statuses"] == {"200": stampede["clients"]}
    assert isinstance(stampede["upstream_fetches"], int)

    assert sc["zipf"]["phases"] and sc["zipf"]["simulated_at_capacity"]["lru_hit_ratio"] is not None
    policies = sc["zipf"]["policies"]["traces"]
    assert set(policies) == {"zipf", "scan", "no-sweep"} and all(0 < policies[t]["tinylfu"] <= 1 for t in policies)
    live = sc["zipf_live"]["traces"]
    assert set(live) == {"zipf", "scan"} and all(0 < live[t]["live"] <= 1 and live[t]["errors"] == 0 for t in live)
    assert sc["memory"]["per_connection"]["mediaedge"]["connections"] > 0
    assert sc["entries"]["levels"][0]["random_c1"]["rps"] > 0
    assert sc["reporting"]["stats_record_us"] > 0
