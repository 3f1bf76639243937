"""bench/report.py renders docs/BENCHMARKS.md from a results JSON alone: every section issue 17
asks for is there, from the numbers when the run measured them and as "not measured in this
run" when it did not, never a crash and never numbers the JSON does not hold."""
from __future__ import annotations

import copy
import json
import os
import re
from typing import Any

import pytest

from bench import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A frozen results file (an earlier full run, before the 1 GB case and the --workers shape), so
# the exact-number assertions below do not change each time bench/results/latest.json is re-run.
SAMPLE = os.path.join(REPO, "tests", "data", "bench-results-sample.json")
LATEST = os.path.join(REPO, "bench", "results", "latest.json")
IMAGES = [f"docs/img/bench-{n}.png" for n in ("hits", "large", "hitratio", "entries")]

HEADINGS = ("## Headline: 10 KB hits", "## Large objects: 1 MB, 100 MB and 1 GB hits",
            "## Hit ratio: Zipf catalogue larger than the cache", "### The live edge on the same kind of trace",
            "## Hit latency as the cache grows", "## Past one core: `--workers 2`")


def _latest(path: str = SAMPLE) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)  # type: ignore[no-any-return]


def _section(md: str, heading: str) -> str:
    """The text under the heading line starting with `heading`, up to the next heading."""
    start = md.index("\n", md.index(heading))
    nxt = re.search(r"^#{2,3} ", md[start:], re.M)
    return md[start:start + nxt.start()] if nxt else md[start:]


def test_latest_results_render_every_section() -> None:
    md = report.render(_latest(), IMAGES)
    for h in HEADINGS:
        assert h in md, h
    headline = _section(md, "## Headline: 10 KB hits")
    # the bare mitmproxy's p99 beside mediaedge's, so a host's floor reads as such
    assert "| hit p99 < 2.0 ms at 1 conn | 2.72 ms (the ceiling: 1.94 ms) | **no** |" in headline
    large = _section(md, "## Large objects")
    assert "| 1 MB | nginx proxy_cache (1 worker) | 4 | 2,271 |" in large
    assert "| 100 MB | mediaedge (`mediaedge serve`) | 2 | 225.6 | 916 ms | 0.11× |" in large
    assert "1 GB hits: not measured in this run" in large  # latest.json predates the 1 GB case
    entries = _section(md, "## Hit latency as the cache grows")
    for level in ("10,000", "100,000", "1,000,000"):
        assert f"| {level} | " in entries, level
    assert "not measured" not in entries
    live = _section(md, "### The live edge")
    assert "| Zipf | 100,000 (50,000) | 916 | **0.650** | 0.650 | 0.665 |" in live
    workers = _section(md, "## Past one core")
    assert "| 1,631 req/s | 2,875 req/s | 1.76× |" in workers
    assert "nginx 1 vs 2 workers: not measured in this run" in workers
    for img in ("bench-hits.png", "bench-large.png", "bench-hitratio.png", "bench-entries.png"):
        assert f"(img/{img})" in md, img


def test_the_committed_results_render_every_section_measured() -> None:
    """bench/results/latest.json, whatever run it holds, renders every heading, and a full run
    leaves none of the issue's sections unmeasured."""
    r = _latest(LATEST)
    md = report.render(r, IMAGES)
    for h in HEADINGS:
        assert h in md, h
    if not r["meta"].get("quick"):
        for h in HEADINGS:
            assert "not measured in this run" not in _section(md, h), h


def test_rendering_the_same_results_twice_is_identical() -> None:
    r = _latest()
    assert report.render(r, IMAGES) == report.render(copy.deepcopy(r), IMAGES)


def test_empty_results_say_not_measured_under_every_heading() -> None:
    md = report.render({}, [])
    for h in HEADINGS:
        assert _section(md, h).strip() == report.NOT_MEASURED, h
    assert "![" not in md  # no plot of numbers that were not measured


@pytest.mark.parametrize("scenario, heading", [
    ("large", "## Large objects"), ("entries", "## Hit latency as the cache grows"),
    ("zipf_live", "### The live edge"), ("workers", "## Past one core"), ("hits", "## Headline"),
])
def test_a_missing_scenario_leaves_its_heading_and_says_so(scenario: str, heading: str) -> None:
    r = _latest()
    del r["scenarios"][scenario]
    md = report.render(r, IMAGES)
    assert _section(md, heading).strip().splitlines()[0] == report.NOT_MEASURED


def test_missing_entry_levels_are_named() -> None:
    r = _latest()
    r["scenarios"]["entries"]["levels"] = r["scenarios"]["entries"]["levels"][:1]
    entries = _section(report.render(r, IMAGES), "## Hit latency as the cache grows")
    assert "100,000, 1,000,000 entries: not measured in this run" in entries


def test_the_disk_path_table_compares_levels_with_the_memory_tier_off() -> None:
    r = _latest()
    levels = r["scenarios"]["entries"]["levels"]
    assert "memory tier off" not in _section(report.render(r, IMAGES), "## Hit latency as the cache grows")
    for level, p50 in zip(levels, (0.5, 0.55, 0.6)):
        level["disk_c1"] = {"rps": 1600.0, "p50_ms": p50, "p99_ms": 1.0}
    entries = _section(report.render(r, IMAGES), "## Hit latency as the cache grows")
    assert "| 1,000,000 | 1,600 · 0.60 · 1.00 ms | 1.20× · 1.00× |" in entries
    assert "| 10,000 | 1,600 · 0.50 · 1.00 ms | 1.00× · 1.00× |" in entries
    assert "With the memory tier off (the storage path alone): p50 1.20×, p99 1.00× (within 1.2×)" in entries


def test_level_ratios_compare_the_runs_of_each_round() -> None:
    """The host slowed down in the middle round for every level alike: the per-round ratios
    stay 1.10×, where the ratio of the medians (0.5 against 0.6) would say 1.20×."""
    ten_k = {"random_c1": {"p50_ms": 0.5, "p99_ms": 1.0},
             "random_c1_runs": [{"p50_ms": p, "p99_ms": 1.0} for p in (0.5, 1.0, 0.3)]}
    one_m = {"random_c1": {"p50_ms": 0.6, "p99_ms": 1.1},
             "random_c1_runs": [{"p50_ms": p, "p99_ms": 1.1} for p in (0.55, 1.1, 0.6)]}
    ratios = report.level_ratios(one_m, ten_k)
    assert round(ratios["p50_ms"], 3) == 1.1 and round(ratios["p99_ms"], 3) == 1.1
    r = _latest()
    levels = r["scenarios"]["entries"]["levels"]
    for level, new in ((levels[0], ten_k), (levels[-1], one_m)):
        level.update(new, random_c1={**level["random_c1"], **new["random_c1"]})
    entries = _section(report.render(r, IMAGES), "## Hit latency as the cache grows")
    assert "This run, 1,000,000 against 10,000 entries: p50 1.10×, p99 1.10× (latency target met)" in entries
    del levels[-1]["random_c1_runs"]  # results kept without their rounds: the ratio of the medians
    assert report.level_ratios(levels[-1], levels[0])["p50_ms"] == 0.6 / 0.5


def _median(mbps: float | None = None, rps: float | None = None) -> dict[str, Any]:
    return {"median": {"mbps": mbps, "rps": rps, "p50_ms": 10.0, "p99_ms": 20.0}}


def test_one_gigabyte_hits_and_workers_render_with_their_ratio_to_nginx() -> None:
    r = _latest()
    r["scenarios"]["large"]["1GB"] = {"conns": 1, "contenders": {"mediaedge": _median(250.0),
                                                                 "nginx": _median(2000.0)}}
    r["scenarios"]["workers"] = {
        "note": "workers note", "conns": 16, "worker_requests": [10, 12],
        "contenders": {"mediaedge-workers1": _median(rps=1600.0), "mediaedge-workers2": _median(rps=2800.0),
                       "nginx-1w": _median(rps=40000.0), "nginx-2w": _median(rps=60000.0)},
        "mediaedge_gain": 1.75, "nginx_gain": 1.5}
    md = report.render(r, IMAGES)
    large = _section(md, "## Large objects")
    assert "| 1 GB | mediaedge (`mediaedge serve`) | 1 | 250.0 | 10 ms | 0.12× |" in large
    assert "| 1 GB | nginx proxy_cache (1 worker) | 1 | 2,000 | 10 ms | 1.00× |" in large
    assert "not measured" not in large
    workers = _section(md, "## Past one core")
    assert "| nginx-2w | 60,000 | 10.00 | 20.00 ms |" in workers
    assert "mediaedge 2 workers ÷ 1: 1.75×; nginx 2 workers ÷ 1: 1.50×." in workers


def test_a_skipped_one_gigabyte_case_says_why() -> None:
    r = _latest()
    r["scenarios"]["large"]["1GB_skipped"] = "RuntimeError: priming: Cache-Status 'miss'"
    large = _section(report.render(r, IMAGES), "## Large objects")
    assert "1 GB hits: not measured in this run (skipped: RuntimeError: priming: Cache-Status 'miss')." in large


def test_noise_line_counts_only_this_runs_scenarios() -> None:
    r = _latest()
    r["scenarios"]["entries_baseline"]["levels"][0]["random_c1"]["foreign_cores"] = 99.0
    md = report.render(r, IMAGES)
    assert "max 99.00 cores" not in md
