"""Signals to a real `mediaedge serve` process, under whatever Python runs pytest
(contract section 1): SIGINT/SIGTERM stop it within 10 s even with downloads in flight,
which are cut and never stored partial; SIGHUP reopens the access log and it keeps
serving.

Python 3.12 made `asyncio.Server.wait_closed()` wait for every accepted connection, so
a download in flight through the in-process stream server held a stopped node alive
(proxy/shutdown.py); a database copy blocked on the loop could do the same at
interpreter exit (proxy/pools.py, proxy/fill.py).
"""
from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import time

import pytest

from tests.edge import REPO, Edge, Route, Upstream, sha, synthetic_sha, wait_until

STOP_LIMIT = 10.0  # contract section 1
ARTIFACTS = os.path.join(REPO, "test-artifacts")


def start_download(port: int, path: str, at_least: int = 256 * 1024) -> socket.socket:
    """A client that asks for `path`, reads `at_least` bytes of it, then stops reading
    (its socket left open): a download in flight."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = b""
    while len(got) < at_least:
        chunk = s.recv(65536)
        assert chunk, f"closed after {len(got)} bytes: {got[:200]!r}"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    return s


def stop_timed(edge: Edge, sig: int) -> tuple[float, int]:
    """Send `sig`; seconds until the process is gone (killed after the limit) and its exit code.
    The time is also appended to test-artifacts/stop-times.txt with the Python version."""
    assert edge.proc is not None
    proc = edge.proc
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        rc = proc.wait(STOP_LIMIT + 5)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait(5)
    took = time.monotonic() - t0
    edge.stop()  # bookkeeping only: the process is gone
    record_stop_time(signal.Signals(sig).name, took)
    return took, rc


def record_stop_time(what: str, seconds: float) -> None:
    """Keep the measurement per Python version (the README quotes them)."""
    import platform

    import mitmproxy.version

    os.makedirs(ARTIFACTS, exist_ok=True)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    with open(os.path.join(ARTIFACTS, "stop-times.txt"), "a") as f:
        f.write(f"python {platform.python_version()} mitmproxy {mitmproxy.version.VERSION} "
                f"{what} {seconds:.3f}s {test}\n")


def leftover_temp_files(cache_dir: str, before: set[str]) -> set[str]:
    found = set()
    for root, _, files in os.walk(cache_dir):
        found.update(os.path.join(root, f) for f in files)
    return found - before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_with_an_upstream_download_in_flight_is_prompt_and_stores_nothing_partial(tmp_path, sig):
    size = 24 << 20
    up = Upstream()
    # 64 KiB every 50 ms: the fetch would take ~20 s; the client has its first bytes at once
    up.routes["/media/slow.bin"] = Route(size=size, chunk_delay=0.05, seed=1,
                                         headers={"Content-Type": "application/octet-stream"})
    edge = Edge(str(tmp_path), upstream=up.url).start()
    client = None
    try:
        client = start_download(edge.port, "/media/slow.bin")
        took, rc = stop_timed(edge, sig)
        log = edge.log()
        assert took < STOP_LIMIT, f"{signal.Signals(sig).name} to exit took {took:.2f} s: {log}"
        assert rc == 0 and "Traceback" not in log, (rc, log)
        assert "stop took longer" not in log, "an orderly stop failed; proxy/shutdown.py's deadline ended it"
        # the client's download was cut, not completed
        client.settimeout(5)
        rest = b""
        try:
            while chunk := client.recv(1 << 20):
                rest += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        assert len(rest) < size

        # next start: the entry is fetched again whole, never served from the cut fill
        up.routes["/media/slow.bin"].chunk_delay = 0.0
        edge = Edge(str(tmp_path), upstream=up.url, cache_dir=edge.cache_dir, origin_db=edge.origin_db).start()
        r = edge.get("/media/slow.bin")
        assert r.status_code == 200 and len(r.content) == size
        assert sha(r.content) == synthetic_sha(size, seed=1)
        assert "fwd=miss" in r.headers["Cache-Status"], r.headers["Cache-Status"]
        assert up.hits["/media/slow.bin"] == 2
    finally:
        if client is not None:
            client.close()
        edge.stop()
        up.close()


def test_stop_while_a_large_database_row_streams_is_prompt_and_stores_nothing_partial(tmp_path):
    from mediaedge.origins.db import DatabaseOrigin

    size = 96 << 20
    body = hashlib.sha256(b"row").digest() * (size // 32)
    db_url = f"sqlite:///{tmp_path / 'origin.db'}"
    with DatabaseOrigin(db_url) as db:
        db.put("/media/big.bin", io.BytesIO(body), size=size, sha256=hashlib.sha256(body).hexdigest(),
               revision="r1", content_type="application/octet-stream")
    edge = Edge(str(tmp_path), origin_db=db_url).start()
    client = None
    try:
        client = start_download(edge.port, "/media/big.bin")
        took, rc = stop_timed(edge, signal.SIGTERM)
        log = edge.log()
        assert took < STOP_LIMIT, f"SIGTERM to exit took {took:.2f} s: {log}"
        assert rc == 0 and "Traceback" not in log, (rc, log)
        assert "stop took longer" not in log, "an orderly stop failed; proxy/shutdown.py's deadline ended it"

        edge = Edge(str(tmp_path), origin_db=db_url, cache_dir=edge.cache_dir).start()
        r = edge.get("/media/big.bin")
        assert r.status_code == 200 and len(r.content) == size
        assert sha(r.content) == sha(body)
        # whatever was stored before the stop was whole; a second read agrees
        r = edge.get("/media/big.bin")
        assert r.status_code == 200 and sha(r.content) == sha(body)
    finally:
        if client is not None:
            client.close()
        edge.stop()


def test_stop_with_idle_keep_alive_connections_on_both_planes_is_prompt(tmp_path):
    """Kept-alive connections (a dashboard polling /stats, a browser) and a half-sent
    request: with 3.12's `wait_closed()` they held the stop until their idle timeout."""
    edge = Edge(str(tmp_path)).start()
    socks = []
    try:
        for port, path in ((edge.port, "/media/x.jpg"), (edge.admin_port, "/healthz")):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 "), path
            socks.append(s)
        s = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
        s.sendall(b"GET /media/y.jpg HTTP/1.1\r\n")
        socks.append(s)
        took, rc = stop_timed(edge, signal.SIGTERM)
        log = edge.log()
        assert took < STOP_LIMIT, f"SIGTERM to exit took {took:.2f} s: {log}"
        assert rc == 0 and "Traceback" not in log and "stop took longer" not in log, (rc, log)
    finally:
        for s in socks:
            s.close()
        edge.stop()


def test_sighup_reopens_the_access_log_and_keeps_serving(tmp_path):
    log_path = tmp_path / "access.log"
    # no upstream, empty database: every request is a 404, and every request is a line
    edge = Edge(str(tmp_path), args=["--access-log", str(log_path)]).start()
    try:
        assert edge.get("/media/a.jpg?before").status_code == 404
        wait_until(lambda: log_path.exists() and "?before" in log_path.read_text(), 10, what="the first line")
        rotated = tmp_path / "access.log.1"
        os.rename(log_path, rotated)  # logrotate: rename, then HUP
        assert edge.proc is not None
        edge.proc.send_signal(signal.SIGHUP)

        n = iter(range(10_000))

        def new_file_gets_lines() -> bool:
            assert edge.get(f"/media/a.jpg?after{next(n)}").status_code == 404
            return log_path.exists() and "?after" in log_path.read_text()

        wait_until(new_file_gets_lines, 10, 0.05, "lines in the new access log")
        assert edge.proc.poll() is None, f"SIGHUP stopped the node: {edge.log()}"
        assert "?before" in rotated.read_text() and "?before" not in log_path.read_text()
        # from now on every line goes to the new file only
        rotated_size = rotated.stat().st_size
        assert edge.get("/media/a.jpg?later").status_code == 404
        wait_until(lambda: "?later" in log_path.read_text(), 10, what="a later line")
        assert rotated.stat().st_size == rotated_size
        # a second rotation works the same
        os.rename(log_path, tmp_path / "access.log.2")
        edge.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: edge.get("/media/a.jpg?third").status_code == 404 and log_path.exists()
                   and "?third" in log_path.read_text(), 10, 0.05, "lines after a second rotation")
        assert edge.proc.poll() is None
    finally:
        rc = edge.stop()
    assert rc == 0
