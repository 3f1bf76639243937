"""`mediaedge check`: one line per component, `ok` or the problem; exit 0 only when all are ok."""
from __future__ import annotations

import subprocess
import sys

from tests.edge import REPO, Upstream, free_port
from tests.sqlfixtures import PLAIN_ROUTE, SITECORE_ROUTE, Tables


def check(tmp_path, *args: str) -> tuple[int, list[str], str]:
    p = subprocess.run([sys.executable, "-m", "mediaedge", "check", "--cache-dir", str(tmp_path / "cache"),
                        "--cache-size", "64MiB", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout.splitlines(), p.stderr


def test_all_ok_native(tmp_path):
    up = Upstream()
    try:
        code, lines, err = check(tmp_path, "--origin-db", f"sqlite:///{tmp_path}/o.db", "--upstream", up.url)
    finally:
        up.close()
    assert code == 0, (lines, err)
    assert [line.split(": ")[-1] for line in lines] == ["ok"] * 5
    assert lines[0].startswith("origin database sqlite:///") and "(native)" in lines[0]
    assert lines[2].startswith("upstream http://127.0.0.1:")


def test_sql_routes_one_line_each_and_a_broken_one_fails(tmp_path):
    url = f"sqlite:///{tmp_path}/cms.db"
    Tables(url).close()
    config = tmp_path / "edge.toml"
    config.write_text(SITECORE_ROUTE + PLAIN_ROUTE.replace("FROM media", "FROM missing_table"))
    code, lines, err = check(tmp_path, "--origin-db", url, "--origin-profile", "sql", "--config", str(config))
    assert code == 1, (lines, err)
    assert lines[0].endswith(" (sql): ok")
    assert lines[1].startswith("sql_route #1 (") and lines[1].endswith(": ok")
    assert lines[2].startswith("sql_route #2 (") and "missing_table" in lines[2] and not lines[2].endswith("ok")
    assert all(line.endswith(": ok") for line in lines[3:]) and len(lines) == 6


def test_unreachable_upstream_and_database_fail(tmp_path):
    dead = free_port()
    code, lines, _ = check(tmp_path, "--origin-db", f"postgresql://u:secret@127.0.0.1:{free_port()}/x",
                           "--state-db", f"sqlite:///{tmp_path}/state.db", "--upstream", f"http://127.0.0.1:{dead}",
                           "--db-timeout", "2")
    assert code == 1
    assert lines[0].startswith("origin database postgresql://u@127.0.0.1:") and not lines[0].endswith(": ok")
    assert "secret" not in "\n".join(lines)
    assert lines[1].endswith(": ok")  # the state database
    assert lines[2].startswith("upstream ") and "not reachable" in lines[2]


def test_cache_size_larger_than_the_disk(tmp_path):
    code, lines, _ = check(tmp_path, "--origin-db", f"sqlite:///{tmp_path}/o.db", "--cache-size", "1000TiB",
                           "--max-object-size", "1MiB")
    assert code == 1 and lines[-1].startswith("free disk for --cache-size 1000TiB: ") and "available" in lines[-1]


def test_origin_db_none_checks_the_log_in_the_cache_directory(tmp_path):
    up = Upstream()
    try:
        code, lines, err = check(tmp_path, "--origin-db", "none", "--upstream", up.url)
    finally:
        up.close()
    assert code == 0, (lines, err)
    assert lines[0] == "origin database none (--origin-db none: a plain HTTP cache): ok"
    assert lines[1] == f"state database sqlite:///{tmp_path / 'cache' / 'invalidations.db'}: ok"
