"""docs/reference.md: its generated tables are what `python -m mediaedge.docgen` writes
(so the file cannot go stale), `serve --help` lists the same flags, and everything a
running node exports (each /stats field, each metric, each admin route) is named in it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mediaedge import docgen
from mediaedge.config import OPTIONS
from tests.edge import REPO, Edge

REFERENCE = Path(REPO) / "docs" / "reference.md"


def text() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def test_the_committed_reference_is_what_docgen_generates():
    assert docgen.render(text()) == text(), "docs/reference.md is stale: run python -m mediaedge.docgen"


def test_docgen_check_and_rewrite(tmp_path):
    stale = tmp_path / "reference.md"
    stale.write_text(text().replace("`MEDIAEDGE_CACHE_SIZE`", "`MEDIAEDGE_OLD_NAME`"), encoding="utf-8")
    run = [sys.executable, "-m", "mediaedge.docgen"]
    check = subprocess.run(run + ["--check", str(stale)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "is stale" in check.stderr
    assert subprocess.run(run + [str(stale)], capture_output=True, text=True, timeout=60).returncode == 0
    assert stale.read_text(encoding="utf-8") == text()
    assert subprocess.run(run + ["--check", str(stale)], timeout=60).returncode == 0


def test_docgen_refuses_a_file_without_its_markers(tmp_path):
    with pytest.raises(ValueError, match="no marker"):
        docgen.render("# nothing generated here\n")


def test_serve_help_and_the_reference_list_the_same_flags():
    shown = subprocess.run([sys.executable, "-m", "mediaedge", "serve", "--help"], capture_output=True,
                           text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    in_help = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", shown)) - {"--help", "--config"}
    table = re.search(r"<!-- BEGIN GENERATED: settings .*?<!-- END GENERATED: settings -->", text(), re.S).group()
    in_reference = set(re.findall(r"^\| `(--[a-z-]+) ", table, re.M))
    assert in_reference == {o.flag for o in OPTIONS}
    assert in_help >= in_reference  # help texts may mention other flags, but none is missing
    assert {f for f in in_help if f not in in_reference} <= {o.flag for o in OPTIONS}
    for option in OPTIONS:
        assert f"`{option.env}`" in table and f"`{option.name}`" in table


def test_every_route_of_the_admin_plane_is_documented():
    source = (Path(REPO) / "proxy" / "runtime.py").read_text(encoding="utf-8")
    routes = re.findall(r'\("(GET|POST)", "(/[^"]*)"\)', source)
    assert ("GET", "/stats") in routes
    for method, path in routes:
        assert f"`{method} {path}`" in text(), f"{method} {path} is not in docs/reference.md"


def test_every_stats_field_and_metric_of_a_node_is_documented(tmp_path):
    edge = Edge(str(tmp_path)).start()
    try:
        edge.get("/media/none.jpg")
        stats = edge.stats()
        metrics = requests.get(edge.admin + "/metrics", timeout=10).text
    finally:
        edge.stop()
    doc = text()
    missing = [f for f in stats if f"| `{f}` |" not in doc]
    assert missing == [], f"/stats fields not in docs/reference.md: {missing}"
    names = set()
    for family in text_string_to_metric_families(metrics):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert missing == [], f"metrics not in docs/reference.md: {missing}"
