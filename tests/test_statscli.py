"""`mediaedge stats`: the real command against a real HTTP server serving a canned /stats."""
from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge import free_port
from mediaedge import statscli
from mediaedge.stats import Stats

REPO = Path(__file__).resolve().parent.parent


def canned_stats() -> dict:
    stats = Stats(clock=lambda: 1_700_000_000.0, prefixes=("/media/", "/media/catalog/"))
    script = [("hit", "cache", 3000)] * 6 + [("stale", "cache", 1000), ("miss", "db", 5000), ("miss", "upstream", 2000),
                                              ("pass", "upstream", 100), ("error", None, 30)]
    for result, source, size in script:
        stats.record(result=result, source=source, body_bytes=size, duration=0.01, path="/media/catalog/a.jpg")
    for path in ["/media/catalog/hot.jpg"] * 5 + ["/media/[bold]markup[/bold].jpg"] * 2:
        stats.record(result="miss", source="db", body_bytes=10, duration=0.01, path=path)
    stats.origin_fetch("db", "ok")
    stats.origin_fetch("upstream", "error")
    stats.coalesced()
    stats.invalidation("purge", 4)
    return stats.snapshot(entries=321, cache_bytes=512 * 2**20, cache_size=2**30, invalidation_seq=77)


CANNED = canned_stats()


class Admin:
    """A real http.server on a free port answering GET /stats with `body`."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                code, payload = (status, body) if self.path == "/stats" else (404, b"not found")
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Admin:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def admin():
    with Admin(json.dumps(CANNED).encode()) as server:
        yield server


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAEDGE_")}
    clean["PYTHONPATH"] = str(REPO) + os.pathsep + clean.get("PYTHONPATH", "")
    clean["COLUMNS"] = "120"
    return clean


def mediaedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mediaedge", "stats", *args], capture_output=True, text=True,
                          timeout=60, env=env(), cwd=REPO)


# -- the real command -----------------------------------------------------------------

def test_json_prints_the_document(admin):
    result = mediaedge("--admin", admin.url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == CANNED
    assert result.stderr == ""


def test_table(admin):
    result = mediaedge("--admin", admin.url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        f"{CANNED['hit_ratio'] * 100:.1f}%",  # hit ratio
        f"{CANNED['byte_hit_ratio'] * 100:.1f}%",  # byte hit ratio
        "512.0 MiB of 1.0 GiB (50.0%), 321 entries",  # cache fill
        "4 (log seq 77)",
        "/media/catalog/hot.jpg",
        "/media/[bold]markup[/bold].jpg",  # printed as text, not rich markup
        "requests by result", "bytes by source", "origin fetches", "top missed paths",
    ):
        assert expected in out, expected
    assert re.search(rf"\bhit +6 +{6 / CANNED['requests'] * 100:.1f}%", out)
    assert re.search(rf"\bmiss +{CANNED['misses']} ", out)
    assert re.search(r"\bcache +18\.6 KiB +", out)  # 19,000 bytes
    assert re.search(r"\bdb +1 +1 +0 +0\b", out)  # origin fetches: total, ok, notfound, error


def test_admin_host_port_without_scheme(admin):
    result = mediaedge("--admin", admin.url.removeprefix("http://"), "--json")
    assert result.returncode == 0, result.stderr


def test_unreachable_admin_is_one_line_and_exit_1():
    result = mediaedge("--admin", f"http://127.0.0.1:{free_port()}", "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mediaedge stats: cannot reach the admin plane"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("body, status, message", [
    (b"{}", 500, "answered 500"),
    (b"<html>", 200, "did not answer JSON"),
    (b"[1, 2]", 200, "did not answer a stats object"),
])
def test_a_bad_answer_is_one_line_and_exit_1(body, status, message):
    with Admin(body, status) as server:
        result = mediaedge("--admin", server.url)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_watch_json_streams_lines_until_interrupted(admin):
    command = [sys.executable, "-m", "mediaedge", "stats", "--admin", admin.url, "--json", "--watch", "0.2"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO) as process:
        try:
            lines = [process.stdout.readline() for _ in range(3)]
            assert [json.loads(line) for line in lines] == [CANNED] * 3
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        stderr = process.stderr.read()
    assert "Traceback" not in stderr


# -- run() in-process --------------------------------------------------------------------

def interrupt_after(n: int):
    calls = []

    def fake_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) >= n:
            raise KeyboardInterrupt

    return fake_sleep, calls


@pytest.mark.parametrize("tty", [True, False])
def test_watch_table_refetches(admin, monkeypatch, capsys, tty):
    fake_sleep, calls = interrupt_after(3)
    monkeypatch.setattr(statscli.time, "sleep", fake_sleep)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    code = statscli.run(argparse.Namespace(admin=admin.url, json=False, watch=2.0))
    assert code == 0
    assert calls == [2.0, 2.0, 2.0]
    assert admin.hits == 3  # the first fetch and two refreshes
    out = capsys.readouterr().out
    assert "top missed paths" in out
    if not tty:  # one whole table per frame, each headed by its time
        assert out.count("top missed paths") == 3 and out.count("--- ") == 3


@pytest.mark.parametrize("tty", [True, False])
def test_watch_table_keeps_going_when_the_admin_goes_away(monkeypatch, capsys, tty):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    with Admin(json.dumps(CANNED).encode()) as server:
        url = server.url
        fake_sleep, _ = interrupt_after(2)

        def sleep_and_stop_server(seconds):
            server.server.shutdown()
            server.server.server_close()
            fake_sleep(seconds)

        monkeypatch.setattr(statscli.time, "sleep", sleep_and_stop_server)
        code = statscli.run(argparse.Namespace(admin=url, json=False, watch=1.0))
    assert code == 0
    out, err = capsys.readouterr()
    if tty:
        assert "(stale) cannot reach the admin plane" in out
    else:
        assert "mediaedge stats: cannot reach the admin plane" in err


def test_watch_table_through_a_pipe_flushes_each_frame(admin):
    """The first frame reaches the pipe while the watch still runs (it used to sit in the
    buffer until exit, and was lost when the watch was stopped)."""
    command = [sys.executable, "-m", "mediaedge", "stats", "--admin", admin.url, "--watch", "500ms"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                          cwd=REPO) as process:
        try:
            first = []
            while not any("top missed paths" in line for line in first):
                line = process.stdout.readline()
                assert line, "stdout closed before the first frame"
                first.append(line)
            assert process.poll() is None  # still watching
            assert first[0].startswith("--- ") and any("hit ratio" in line for line in first)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        assert "Traceback" not in process.stderr.read()


def test_run_defaults_and_error(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(statscli, "fetch_stats", lambda url: seen.append(url) or CANNED)
    assert statscli.run(argparse.Namespace(admin=None, json=True, watch=None)) == 0
    assert seen == ["http://127.0.0.1:8081"]
    assert json.loads(capsys.readouterr().out) == CANNED

    def unavailable(url):
        raise statscli.StatsUnavailable("cannot reach the admin plane at x: connection refused")

    monkeypatch.setattr(statscli, "fetch_stats", unavailable)
    assert statscli.run(argparse.Namespace(admin="http://x", json=False, watch=None)) == 1
    err = capsys.readouterr().err
    assert err == "mediaedge stats: cannot reach the admin plane at x: connection refused\n"


def test_render_tolerates_a_bare_contract_document():
    from rich.console import Console

    bare = {k: CANNED[k] for k in ("requests", "hits", "misses", "stale", "passes", "errors", "hit_ratio",
                                   "byte_hit_ratio", "origin_fetches", "coalesced", "bytes_served", "entries",
                                   "cache_bytes", "invalidations", "since")}
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(statscli.render(bare))
    text = console.export_text()
    assert "no misses yet" in text and "321 entries" in text


def test_fetch_times_out(monkeypatch):
    # a server that accepts and never answers: the 5 s timeout, shortened here
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        start = time.monotonic()
        with pytest.raises(statscli.StatsUnavailable, match="no answer within"):
            statscli.fetch_stats(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
        assert time.monotonic() - start < 5
