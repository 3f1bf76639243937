"""Private media: what the gates cost, measured on real processes on loopback.

    python -m bench.private [--seconds 5] [--rounds 3] [--cookies 100000]

1. req/s of a 10 KB hit, public vs under --signed-prefix (the same URL, so the
   signature is checked on every request), alternating wrk runs in one edge.
2. 100 requests by 10 users (cookies) to one file under --auth-prefix: calls to the
   auth endpoint and origin fetches.
3. The edge's RSS while N requests with N distinct cookies under --auth-prefix (each one
   a new remembered answer) are made by wrk with a Lua script; nginx answers the auth
   asks (204), so the edge is what is measured.

Prints one JSON object. Needs wrk and nginx.
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import requests

from bench.edge import Edge, Route, Upstream
from bench.ports import free_port
from mediaedge.signing import sign_target

BODY = os.urandom(10240)
HEADERS = {"Content-Type": "image/jpeg", "Cache-Control": "public, max-age=86400"}


class CountingAuth:
    def __init__(self) -> None:
        self.calls = 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.calls += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/auth"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class NginxAuth:
    """A fast auth endpoint (nginx answering 204) for the flood of distinct cookies, so the
    edge, not a Python test server, is what is measured."""

    def __init__(self, work: str) -> None:
        port = free_port()
        conf = os.path.join(work, "nginx-auth.conf")
        with open(conf, "w") as f:
            f.write(f"daemon off; master_process off; worker_processes 1; pid {work}/nginx.pid;\n"
                    f"error_log {work}/nginx-error.log;\nevents {{ worker_connections 1024; }}\n"
                    f"http {{ access_log off; server {{ listen 127.0.0.1:{port}; "
                    f"location / {{ return 204; }} }} }}\n")
        self.proc = subprocess.Popen(["nginx", "-p", work, "-c", conf])
        self.url = f"http://127.0.0.1:{port}/auth"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url, timeout=1).status_code == 204:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def wrk_count(url: str, seconds: float, script: str, connections: int = 8) -> int:
    cmd = ["wrk", "-s", script, "-t1", f"-c{connections}", f"-d{int(seconds)}s", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"wrk saw errors: {out}")
    return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


def wrk(url: str, seconds: float, script: str | None = None, connections: int = 16) -> float:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", url]
    if script:
        cmd[1:1] = ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw errors: {out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cookies", type=int, default=100_000)
    args = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (scripts/install-deps.sh)")
    work = tempfile.mkdtemp(prefix="bench-private-")
    up, auth = Upstream(), CountingAuth()
    for path in ("/media/pub/a.jpg", "/media/p/a.jpg", "/media/m/video.mp4", "/media/m/flood.jpg"):
        up.routes[path] = Route(body=BODY, headers=HEADERS)
    edge = Edge(work, upstream=up.url, args=["--signed-prefix", "/media/p/", "--signing-key", "k1:bench-secret",
                                             "--auth-url", auth.url, "--auth-prefix", "/media/m/"]).start()
    result: dict[str, object] = {}
    try:
        signed = sign_target("/media/p/a.jpg", "bench-secret", int(time.time()) + 3600, "k1")
        for path in ("/media/pub/a.jpg", signed):
            assert edge.get(path).content == BODY and edge.get(path).content == BODY
        public, private = [], []
        for _ in range(args.rounds):
            public.append(wrk(edge.url + "/media/pub/a.jpg", args.seconds))
            private.append(wrk(edge.url + signed, args.seconds))
        result["hit_10k_public_rps"] = public
        result["hit_10k_signed_rps"] = private
        result["signed_vs_public"] = round(sum(private) / sum(public), 3)

        calls, fetches = auth.calls, up.hits["/media/m/video.mp4"]
        for _ in range(10):
            for user in range(10):
                r = requests.get(edge.url + "/media/m/video.mp4", headers={"Cookie": f"session={user}"}, timeout=10)
                assert r.status_code == 200 and r.content == BODY
        result["auth_100_requests_10_users"] = {"auth_calls": auth.calls - calls,
                                                "origin_fetches": up.hits["/media/m/video.mp4"] - fetches}

        if args.cookies:
            result["distinct_cookies"] = flood(up, work, args.cookies)
    finally:
        edge.stop()
        up.close()
        auth.server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


def flood(up: Upstream, work: str, cookies: int) -> dict[str, object]:
    """N requests with N distinct cookies to one file under --auth-prefix, nginx answering yes."""
    nginx = NginxAuth(work)
    os.makedirs(os.path.join(work, "flood"), exist_ok=True)
    edge = Edge(os.path.join(work, "flood"), upstream=up.url,
                args=["--auth-url", nginx.url, "--auth-prefix", "/media/m/"]).start()
    try:
        assert edge.get("/media/m/flood.jpg", headers={"Cookie": "warm"}).content == BODY
        script = os.path.join(work, "cookies.lua")
        with open(script, "w") as f:
            f.write('counter = 0\nrun = os.time()\nrequest = function()\n  counter = counter + 1\n'
                    '  return wrk.format(nil, nil, {["Cookie"] = "session=" .. run .. "-" .. counter})\n'
                    'end\n')
        rss_before = edge.rss_kib()
        sent, started = 0, time.monotonic()
        samples = []
        while sent < cookies and time.monotonic() - started < 900:
            sent += wrk_count(edge.url + "/media/m/flood.jpg", 10, script)
            samples.append((sent, edge.stats()["auth_remembered"]["answers"], edge.rss_kib()))
        return {"requests": sent, "seconds": round(time.monotonic() - started, 1), "rss_before_kib": rss_before,
                "requests_answers_rss_kib": samples, "peak_rss_kib": edge.peak_rss_kib()}
    finally:
        edge.stop()
        nginx.stop()


if __name__ == "__main__":
    main()
