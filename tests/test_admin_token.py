"""--admin-token on a real node: which admin routes need it, how it is sent, and the
refusal to start an admin plane beyond loopback without one (serve, check, stats)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests

from edge import REPO, Edge, free_port
from mediaedge.webhook import signed_headers

TOKEN = "t0ken-for-tests"
SECRET = "webhook-secret-for-tests"
GUARDED = ("/stats", "/metrics", "/readyz", "/")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    edge = Edge(str(tmp_path_factory.mktemp("token")), args=["--admin-token", TOKEN],
                env={"MEDIAEDGE_WEBHOOK_SECRET": SECRET}).start()
    yield edge
    edge.stop()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", GUARDED)
def test_guarded_routes_refuse_without_the_token(node, path):
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {TOKEN}"}):
        r = requests.get(node.admin + path, headers=headers, timeout=10)
        assert r.status_code == 401, (path, headers)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="mediaedge admin"'
        assert "admin token required" in r.json()["error"]
        assert TOKEN not in r.text


@pytest.mark.parametrize("path", GUARDED)
def test_guarded_routes_answer_with_the_bearer_token(node, path):
    r = requests.get(node.admin + path, headers=bearer(), timeout=30)
    assert r.status_code == 200, r.text
    assert "WWW-Authenticate" not in r.headers


def test_the_answers_are_the_real_documents(node):
    stats = requests.get(node.admin + "/stats", headers=bearer(), timeout=10).json()
    assert stats["requests"] == stats["hits"] + stats["stale"] + stats["misses"] + stats["passes"] + stats["errors"]
    metrics = requests.get(node.admin + "/metrics", headers=bearer(), timeout=10).text
    assert "mediaedge_requests_total{" in metrics and "process_resident_memory_bytes" in metrics
    assert requests.get(node.admin + "/readyz", headers=bearer(), timeout=30).json()["ready"] is True


def test_the_dashboard_takes_the_token_in_the_query_and_the_others_do_not(node):
    page = requests.get(node.admin + "/", params={"token": TOKEN}, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'id="hit-ratio"' in page.text
    assert TOKEN not in page.text  # the refresh reloads the address; the page never prints the token
    assert requests.get(node.admin + "/", params={"token": "wrong"}, timeout=10).status_code == 401
    for path in ("/stats", "/metrics", "/readyz"):
        assert requests.get(node.admin + path, params={"token": TOKEN}, timeout=10).status_code == 401, path


def test_healthz_stays_open_and_publish_keeps_its_hmac(node):
    r = requests.get(node.admin + "/healthz", timeout=10)
    assert (r.status_code, r.text) == (200, "ok\n")
    body = json.dumps({"events": [{"type": "purge", "path": "/media/x.jpg"}]}).encode()
    headers = {**signed_headers(SECRET, body, time.time()), "Content-Type": "application/json"}
    r = requests.post(node.admin + "/publish", data=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    # the token is not a substitute for the signature
    r = requests.post(node.admin + "/publish", data=body, headers=bearer(), timeout=10)
    assert r.status_code == 401


def test_head_is_guarded_too(node):
    assert requests.head(node.admin + "/stats", timeout=10).status_code == 401
    assert requests.head(node.admin + "/stats", headers=bearer(), timeout=10).status_code == 200


# -- the CLI -------------------------------------------------------------------------

def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAEDGE_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def mediaedge(*args: str, env: dict[str, str] | None = None, cwd: str = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mediaedge", *args], capture_output=True, text=True, timeout=60,
                          env=env or clean_env(), cwd=cwd)


def test_stats_sends_the_token_from_the_flag_or_the_environment(node):
    refused = mediaedge("stats", "--admin", node.admin, "--json")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        f"mediaedge stats: {node.admin}/stats answered 401: the node has an admin token; "
        "give --admin-token or set MEDIAEDGE_ADMIN_TOKEN"]
    by_flag = mediaedge("stats", "--admin", node.admin, "--json", "--admin-token", TOKEN)
    assert by_flag.returncode == 0, by_flag.stderr
    assert "hit_ratio" in json.loads(by_flag.stdout)
    by_env = mediaedge("stats", "--admin", node.admin, "--json", env=clean_env(MEDIAEDGE_ADMIN_TOKEN=TOKEN))
    assert by_env.returncode == 0, by_env.stderr
    wrong = mediaedge("stats", "--admin", node.admin, "--admin-token", "nope")
    assert wrong.returncode == 1 and "(the one given was refused)" in wrong.stderr


@pytest.mark.parametrize("command", ["serve", "check"])
def test_an_admin_plane_beyond_loopback_needs_a_token(tmp_path, command):
    admin = f"0.0.0.0:{free_port()}"
    args = [command, "--admin-listen", admin, "--cache-dir", str(tmp_path / "cache"),
            "--origin-db", f"sqlite:///{tmp_path / 'o.db'}"]
    if command == "serve":
        args += ["--listen", f"127.0.0.1:{free_port()}"]
    p = mediaedge(*args)
    assert p.returncode != 0
    assert p.stdout == ""
    assert p.stderr.splitlines() == [
        f"mediaedge: error: --admin-token: required when --admin-listen ({admin}) is not a loopback address; "
        "set MEDIAEDGE_ADMIN_TOKEN or admin-token in --config"]
    assert not (tmp_path / "cache").exists()  # refused before anything was opened


def test_check_passes_beyond_loopback_with_a_token(tmp_path):
    p = mediaedge("check", "--admin-listen", f"0.0.0.0:{free_port()}", "--cache-dir", str(tmp_path / "cache"),
                  "--origin-db", f"sqlite:///{tmp_path / 'o.db'}", "--cache-size", "1MiB",
                  env=clean_env(MEDIAEDGE_ADMIN_TOKEN=TOKEN))
    assert p.returncode == 0, p.stdout + p.stderr
    assert all(line.endswith(": ok") for line in p.stdout.splitlines())
