"""PURGE on the data plane end to end: `--allow-purge-from` (contract section 1).

Before: any loopback client's PURGE was obeyed and written to the shared
invalidation log, with no secret, for any path; PURGE from elsewhere went to the
app. Now: with no --allow-purge-from, 405 (Allow: GET, HEAD); a client outside
the list, 403; never forwarded; only media targets are purged.
"""
from __future__ import annotations

import http.client
import os
import sqlite3

import pytest

from conftest import require
from tests.edge import Edge, Route, Upstream, free_port, get_plain as get, wait_until

BODY = os.urandom(5_000)
PATH = "/media/purge/x.jpg"


def purge(port: int, path: str, source: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """A PURGE from `source` (an address to bind: 127.0.0.2 is another loopback client)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("PURGE", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def logged_events(edge: Edge) -> int:
    """Rows in the shared invalidation log (the state database is the origin database)."""
    path = edge.origin_db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM mediaedge_invalidations").fetchone()[0]
        except sqlite3.OperationalError:  # no table yet: nothing logged
            return 0


def purges_seen(up: Upstream) -> int:
    return sum(1 for method, _, _ in up.requests if method == "PURGE")


@pytest.fixture
def upstream():
    u = Upstream()
    u.routes[PATH] = Route(body=BODY, headers={"Content-Type": "image/jpeg", "X-Media-Revision": "r1"})
    u.routes["/api/thing"] = Route(body=b"api")
    yield u
    u.close()


def start(tmp_path, upstream: Upstream, *allow: str) -> Edge:
    args = [a for net in allow for a in ("--allow-purge-from", net)]
    return Edge(str(tmp_path), upstream=upstream.url, args=args).start()


def cache(edge: Edge, upstream: Upstream) -> None:
    status, cs, body = get(edge.port, PATH)
    assert status == 200 and body == BODY
    assert get(edge.port, PATH)[1].startswith("mediaedge; hit")


def test_default_purge_is_405_not_forwarded_and_purges_nothing(tmp_path, upstream):
    edge = start(tmp_path, upstream)
    try:
        cache(edge, upstream)
        logged = logged_events(edge)
        for path in (PATH, "/api/thing", "/media/../x"):
            status, headers, body = purge(edge.port, path)
            assert status == 405, (path, status, body)
            assert headers["allow"] == "GET, HEAD"
            assert headers["content-type"].startswith("text/plain")
            assert body == b"PURGE is not enabled on this node (--allow-purge-from)\n"
        assert purges_seen(upstream) == 0
        assert logged_events(edge) == logged
        status, cs, body = get(edge.port, PATH)
        assert status == 200 and body == BODY and cs.startswith("mediaedge; hit"), cs
        assert upstream.hits[PATH] == 1
    finally:
        edge.stop()


def test_allowed_loopback_purge_is_obeyed_and_the_next_request_misses(tmp_path, upstream):
    edge = start(tmp_path, upstream, "127.0.0.1/32")
    try:
        cache(edge, upstream)
        logged = logged_events(edge)
        status, headers, body = purge(edge.port, PATH)
        assert status == 200, body
        assert headers["content-type"] == "application/json" and b'"accepted": 1' in body
        assert logged_events(edge) == logged + 1  # every node sharing the log purges too
        status, cs, body = get(edge.port, PATH)
        assert status == 200 and body == BODY
        assert cs == "mediaedge; fwd=miss; fwd-status=200; stored; detail=upstream"
        assert upstream.hits[PATH] == 2
        # non-media targets are never stored here: 404, and the app never sees the PURGE
        status, _, body = purge(edge.port, "/api/thing")
        assert status == 404 and body == b"not a media target: nothing is cached under it\n"
        status, _, _ = purge(edge.port, "/media/..%3B/account")
        assert status == 400
        assert purges_seen(upstream) == 0
        assert logged_events(edge) == logged + 1
    finally:
        edge.stop()


def test_client_outside_the_list_is_403_and_the_entry_stays(tmp_path, upstream):
    """The edge listens on 127.0.0.1 and allows 127.0.0.2 only: a client from 127.0.0.1 is
    refused, one bound to 127.0.0.2 is obeyed (both are loopback, so loopback alone is no key)."""
    edge = start(tmp_path, upstream, "127.0.0.2/32")
    try:
        cache(edge, upstream)
        logged = logged_events(edge)
        for path in (PATH, "/api/thing"):
            status, _, body = purge(edge.port, path)
            assert status == 403 and body == b"PURGE is not allowed from this address\n", (path, status, body)
        assert purges_seen(upstream) == 0 and logged_events(edge) == logged
        assert get(edge.port, PATH)[1].startswith("mediaedge; hit")
        status, _, _ = purge(edge.port, PATH, source="127.0.0.2")
        assert status == 200
        assert get(edge.port, PATH)[1].startswith("mediaedge; fwd=miss")
        assert upstream.hits[PATH] == 2
    finally:
        edge.stop()


# ----------------------------------------------------------------------------- nginx in front
NGINX_CONF = """\
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/client_body;
  proxy_temp_path {tmp}/proxy_temp;
  fastcgi_temp_path {tmp}/fastcgi_temp;
  uwsgi_temp_path {tmp}/uwsgi_temp;
  scgi_temp_path {tmp}/scgi_temp;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://127.0.0.1:{edge_port};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


class Nginx:
    """Debian's nginx on a free loopback port, proxying everything to the edge (as a TLS
    terminator in front of it would); pid, logs and temp files under a tmp dir."""

    def __init__(self, tmp: str, edge_port: int) -> None:
        import subprocess

        from bench.procs import nginx_binary

        binary = nginx_binary()
        if binary is None:
            require("nginx is not installed (bash scripts/install-deps.sh)")
        self.tmp = tmp
        os.makedirs(tmp, exist_ok=True)
        self.port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(user="user root root;" if os.geteuid() == 0 else "", tmp=tmp,
                                      port=self.port, edge_port=edge_port))
        self.proc = subprocess.Popen([binary, "-p", tmp, "-e", os.path.join(tmp, "error.log"), "-c", conf,
                                      "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.proc.poll() is None, self.error_log()
            return get(self.port, PATH)[0] == 200

        wait_until(up, 15, 0.05, "nginx to proxy to the edge")

    def error_log(self) -> str:
        try:
            with open(os.path.join(self.tmp, "error.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.mark.full
@pytest.mark.parametrize("allow", [None, "127.0.0.1/32"], ids=["unset", "loopback-allowed"])
def test_purge_through_nginx_in_front(tmp_path, upstream, allow):
    """Every client of nginx reaches the edge from 127.0.0.1. Unset (the default), a PURGE
    through nginx is 405 and purges nothing. The trade-off: allowing 127.0.0.1/32 with nginx
    in front lets ANY of nginx's clients purge (here one from 127.0.0.2), which is why the
    README says to allow loopback only when nothing else connects through it."""
    (tmp_path / "edge").mkdir()
    edge = start(tmp_path / "edge", upstream, *([allow] if allow else []))
    nginx = None
    try:
        nginx = Nginx(str(tmp_path / "nginx"), edge.port)
        cache(edge, upstream)
        logged = logged_events(edge)
        status, headers, body = purge(nginx.port, PATH, source="127.0.0.2")  # some client of nginx
        assert purges_seen(upstream) == 0
        status_after, cs, body_after = get(nginx.port, PATH)
        assert status_after == 200 and body_after == BODY
        if allow is None:
            assert status == 405 and headers["allow"] == "GET, HEAD", (status, body)
            assert cs.startswith("mediaedge; hit"), cs
            assert logged_events(edge) == logged and upstream.hits[PATH] == 1
        else:
            assert status == 200, (status, body)  # obeyed: nginx's client looks like loopback
            assert cs.startswith("mediaedge; fwd=miss"), cs
            assert logged_events(edge) == logged + 1 and upstream.hits[PATH] == 2
    finally:
        if nginx is not None:
            nginx.stop()
        edge.stop()
