"""Hostile input against a real `mediaedge serve`: raw sockets, bad bytes, smuggling shapes,
slowloris, TLS on the plain port, cache poisoning through unkeyed headers, path tricks.

The bar (issue 6, contract §2): the proxy answers 400 (or 414/431) or closes, never
forwards a smuggled request, never lets one client's headers change what another
client gets, never reads a file or row outside the media prefix, and keeps serving
everyone else meanwhile — every test ends by checking that a normal client is served.
"""
from __future__ import annotations

import io
import hashlib
import os
import random
import shutil
import socket
import time

import pytest
import requests

from tests.edge import Edge, Route, Upstream, sha, wait_until

NORMAL = "/media/hostile/normal.jpg"
NORMAL_BODY = os.urandom(30_000)
SECRET_UP = b"UPSTREAM-SECRET-outside-the-media-prefix"
SECRET_DB = b"DATABASE-SECRET-outside-the-media-prefix"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    up = Upstream()
    up.routes[NORMAL] = Route(body=NORMAL_BODY, headers={"X-Media-Revision": "n1", "Content-Type": "image/jpeg"})
    up.routes["/api/echo"] = Route(body=b"api")
    up.routes["/secret.txt"] = Route(body=SECRET_UP)
    db_url = f"sqlite:///{d / 'origin.db'}"
    edge = Edge(str(d), upstream=up.url, origin_db=db_url).start()
    from mediaedge.origins.db import DatabaseOrigin

    with DatabaseOrigin(db_url) as db:
        for path in ("/secret.txt", "/media/../secret.txt", "/etc/passwd"):
            db.put(path, io.BytesIO(SECRET_DB), size=len(SECRET_DB),
                   sha256=hashlib.sha256(SECRET_DB).hexdigest(), revision="s", content_type="text/plain")
    yield edge, up
    edge.stop()
    up.close()


def assert_serving(edge: Edge) -> None:
    """A normal client is served, with the right bytes, promptly."""
    t0 = time.monotonic()
    r = requests.get(edge.url + NORMAL, timeout=10)
    assert r.status_code == 200 and sha(r.content) == sha(NORMAL_BODY), (r.status_code, r.headers)
    assert time.monotonic() - t0 < 5
    assert edge.proc is not None and edge.proc.poll() is None, "the node died"


def raw(port: int, data: bytes, timeout: float = 5.0, idle: float = 0.3) -> tuple[bytes, str]:
    """Send bytes and read what comes back; (bytes, how it ended): "closed"/"reset" by the
    server, "idle" (complete responses, then nothing for `idle` s on a kept-alive
    connection), or "timeout" (nothing usable within `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b"", "reset"
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            complete = bool(out) and parse_responses(out)[1] == len(out)
            s.settimeout(idle if complete else max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return out, "idle" if complete else "timeout"
            except ConnectionResetError:
                return out, "reset"
            if not chunk:
                return out, "closed"
            out += chunk
        return out, "timeout"


def parse_responses(out: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The complete HTTP/1.1 responses at the start of a raw byte stream, as (status, body),
    and how many bytes they span (Content-Length or chunked bodies)."""
    found: list[tuple[int, bytes]] = []
    pos = 0
    while True:
        end = out.find(b"\r\n\r\n", pos)
        if end < 0 or not out.startswith(b"HTTP/1.", pos):
            return found, pos
        head = out[pos:end].decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        body_at = end + 4
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body, i = b"", body_at
            while True:
                eol = out.find(b"\r\n", i)
                if eol < 0:
                    return found, pos
                n = int(out[i:eol].split(b";")[0], 16)
                if len(out) < eol + 2 + n + 2:
                    return found, pos
                body += out[eol + 2:eol + 2 + n]
                i = eol + 2 + n + 2
                if n == 0:
                    break
            found.append((status, body))
            pos = i
        else:
            n = int(fields.get("content-length", "0"))
            if len(out) < body_at + n:
                return found, pos
            found.append((status, out[body_at:body_at + n]))
            pos = body_at + n


def statuses(out: bytes) -> list[int]:
    """Status codes of the complete responses in a raw byte stream."""
    return [status for status, _ in parse_responses(out)[0]]


# ----------------------------------------------------------------------------- malformed input
MALFORMED = {
    "junk": b"\x00\x01\x02\xff garbage \r\n\r\n",
    "no-target": b"GET\r\n\r\n",
    "http-0.9": b"GET /media/hostile/normal.jpg\r\n\r\n",
    "space-in-target": b"GET /media/a b.jpg HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-without-colon": b"GET /media/a.jpg HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "space-before-colon": b"GET /media/a.jpg HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
    "negative-content-length": b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "non-numeric-content-length": b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
    "connect": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    "overlong-target": b"GET /media/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-target": b"GET /media/a\x00b.jpg HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_requests_get_4xx_or_a_close(env, name):
    edge, up = env
    before = len(up.requests)
    out, how = raw(edge.port, MALFORMED[name])
    codes = statuses(out)
    # closed (after a 4xx or not), or a 4xx answered on a kept-alive connection
    assert how in ("closed", "reset") or (how == "idle" and codes), f"{name}: no answer ({how}): {out[:120]!r}"
    assert codes == [] or all(400 <= c < 500 for c in codes), f"{name}: {out[:200]!r}"
    assert b"Traceback" not in out
    assert len(up.requests) == before, f"{name} reached the upstream: {up.requests[before:]}"
    assert_serving(edge)


def test_random_junk_bytes_never_break_the_node(env):
    edge, up = env
    rng = random.Random(6)
    for i in range(40):
        blob = bytes(rng.randrange(256) for _ in range(rng.choice((1, 7, 64, 512, 4096))))
        blob = blob.lstrip(b"\r\n") or b"x"  # a leading empty line is its own test below
        out, how = raw(edge.port, blob + b"\r\n\r\n", timeout=5)
        codes = statuses(out)
        assert how in ("closed", "reset", "idle"), (i, blob[:40], how, out[:100])
        assert all(400 <= c < 500 for c in codes), (i, blob[:40], out[:200])
    assert_serving(edge)


def test_tls_on_the_plain_port_is_refused(env):
    """A real TLS client (Python's ssl) on the plain HTTP port: refused, not served over TLS."""
    edge, _ = env
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    served = None
    try:
        with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as sock:
            with ctx.wrap_socket(sock, server_hostname="shop.example") as tls:
                tls.sendall(b"GET " + NORMAL.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                served = tls.recv(64)
    except (ssl.SSLError, OSError):
        pass
    assert_serving(edge)
    assert not served, f"the plain port served over TLS: {served!r}"


def test_tls_client_hello_bytes_on_the_plain_port_get_no_http_answer(env):
    edge, _ = env
    # a ClientHello record header with a truncated, random body
    out, how = raw(edge.port, bytes.fromhex("16030100a5010000a10303") + os.urandom(64), timeout=1.5)
    assert how in ("closed", "reset", "timeout") and statuses(out) in ([], [400]), (how, out[:100])
    assert_serving(edge)


def test_http2_preface_on_the_plain_port_is_refused_or_closed(env):
    edge, _ = env
    out, how = raw(edge.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    assert how in ("closed", "reset") or statuses(out)[:1] == [400], (how, out[:200])
    assert b"Traceback" not in out
    assert_serving(edge)


def test_request_after_leading_empty_lines_is_answered(env):
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
    mitmproxy 11 never answered such a request (proxy/http1guard.py); now it gets its bytes,
    and so does a keep-alive request that follows a stray CRLF."""
    edge, _ = env
    req = b"GET " + NORMAL.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    out, how = raw(edge.port, b"\r\n\n\r\n" + req + b"\r\n" + req, timeout=5)
    found = parse_responses(out)[0]
    assert [st for st, _ in found] == [200, 200], (how, out[:300])
    assert all(sha(body) == sha(NORMAL_BODY) for _, body in found)
    assert_serving(edge)


# ----------------------------------------------------------------------------- request smuggling
SMUGGLING = {
    "CL.TE": b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "TE.CL": b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
             b"1c\r\nGET /smuggled HTTP/1.1\r\n\r\n\r\n0\r\n\r\n",
    "two-content-lengths": b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n"
                           b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "TE-obfuscated": b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n"
                     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "TE-space-before-colon": b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
                             b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "TE-chunked-identity": b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n"
                           b"Content-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "CL.TE-on-media": b"GET /media/hostile/normal.jpg HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggling_shapes_are_refused_and_nothing_is_smuggled(env, name):
    edge, up = env
    out, how = raw(edge.port, SMUGGLING[name])
    codes = statuses(out)
    assert how in ("closed", "reset"), (name, how, out[:200])
    # a 400 then close; the 400 may be lost to the RST of a close with unread bytes
    assert codes[:1] == [400] or (codes == [] and how in ("closed", "reset")), (name, out[:300])
    assert not any(p == "/smuggled" for _, p, _ in up.requests), f"{name}: a smuggled request reached the upstream"
    assert_serving(edge)


def test_get_with_a_body_is_not_split_into_two_requests(env):
    """A body on a media GET is read as a body (Content-Length), never as a second request;
    the pipelined request after it is answered normally."""
    edge, up = env
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    data = (b"GET " + NORMAL.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
            + smuggled + b"GET " + NORMAL.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out, how = raw(edge.port, data)
    responses = parse_responses(out)[0]
    assert [st for st, _ in responses] == [200, 200], out[:300]
    assert all(body == NORMAL_BODY for _, body in responses)
    assert not any(p == "/smuggled" for _, p, _ in up.requests)
    assert_serving(edge)


def test_pipelined_requests_are_answered_in_order(env):
    edge, up = env
    up.routes["/media/hostile/p1.txt"] = Route(body=b"first-body", headers={"X-Media-Revision": "p1"})
    up.routes["/media/hostile/p2.txt"] = Route(body=b"second-body", headers={"X-Media-Revision": "p2"})
    data = (b"GET /media/hostile/p1.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /media/hostile/p2.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /media/hostile/p1.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out, _ = raw(edge.port, data)
    assert parse_responses(out)[0] == [(200, b"first-body"), (200, b"second-body"), (200, b"first-body")]


# ----------------------------------------------------------------------------- oversized heads
@pytest.mark.parametrize("size", [100_000, 1_000_000])
def test_large_request_header_does_not_affect_other_clients(env, size):
    edge, up = env
    path = f"/media/hostile/big-header-{size}.jpg"
    up.routes[path] = Route(body=b"real-bytes", headers={"X-Media-Revision": "b1"})
    try:
        r = requests.get(edge.url + path, headers={"X-Big": "a" * size}, timeout=30)
        assert r.status_code in (200, 400, 413, 431) or r.status_code >= 500
    except requests.RequestException:
        pass  # closed on us: fine
    r = requests.get(edge.url + path, timeout=10)
    assert r.status_code == 200 and r.content == b"real-bytes", (r.status_code, r.headers.get("Cache-Status"))
    assert_serving(edge)




@pytest.mark.parametrize("header", [
    "X-Big",
    "User-Agent",
    "Accept",
    "Cookie",
])
def test_oversized_header_cannot_negative_cache_a_404_for_others(env, header):
    edge, up = env
    path = f"/media/hostile/hho-{header}.jpg"
    up.routes[path] = Route(body=b"real-bytes", headers={"X-Media-Revision": "h1"})
    try:
        requests.get(edge.url + path, headers={header: "a" * 8_000_000}, timeout=30)
    except requests.RequestException:
        pass
    r = requests.get(edge.url + path, timeout=10)
    assert r.status_code == 200 and r.content == b"real-bytes", (r.status_code, r.headers.get("Cache-Status"))


def test_oversized_request_head_is_refused_without_buffering_it(env):
    """A 16 MiB head is cut with 431 after 64 KiB instead of being buffered whole."""
    edge, _ = env
    rss_before = edge.rss_kib()
    refused = False
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as s:
        try:
            s.sendall(b"GET " + NORMAL.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(16):
                s.sendall(b"a" * (1 << 20))
            s.sendall(b"\r\n\r\n")
            out = s.recv(64)
            refused = out == b"" or statuses(out)[:1] in ([400], [413], [431])
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            refused = True
    growth_mib = (edge.rss_kib() - rss_before) / 1024
    assert_serving(edge)
    assert refused, f"a 16 MiB request head was accepted (RSS +{growth_mib:.0f} MiB)"
    assert growth_mib < 32


def test_request_head_limit_is_64_kib(env):
    """A head just under the limit (big shop cookies) is served; one just over gets 431
    and a close, with nothing sent upstream."""
    edge, up = env
    base = b"GET " + NORMAL.encode() + b" HTTP/1.1\r\nHost: x\r\nCookie: "
    under = base + b"c" * (64 * 1024 - len(base) - 8) + b"\r\n\r\n"
    out, _ = raw(edge.port, under)
    found = parse_responses(out)[0]
    assert [st for st, _ in found] == [200] and sha(found[0][1]) == sha(NORMAL_BODY), out[:200]
    before = len(up.requests)
    out, how = raw(edge.port, base + b"c" * (64 * 1024) + b"\r\n\r\n")
    assert statuses(out) == [431] and how in ("closed", "reset"), (how, out[:200])
    assert len(up.requests) == before
    assert_serving(edge)


# ----------------------------------------------------------------------------- slowloris
def test_slowloris_half_open_connections_do_not_stop_normal_clients(env):
    """300 connections trickle a request head a byte at a time; normal clients are served
    meanwhile, each within 5 s."""
    edge, _ = env
    socks: list[socket.socket] = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
            s.sendall(b"GET " + NORMAL.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for s in socks:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            assert_serving(edge)
            time.sleep(0.3)
    finally:
        for s in socks:
            s.close()
    assert_serving(edge)


@pytest.mark.full
def test_half_open_connections_are_reaped_so_clients_are_served_again(tmp_path):
    """The node runs with RLIMIT_NOFILE 256 and an attacker holds 300 half-open connections.
    Expected: the node closes idle half-open connections (a header timeout, like nginx's
    client_header_timeout) and serves normal clients again within 40 s."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit not available")
    up = Upstream()
    up.routes[NORMAL] = Route(body=NORMAL_BODY, headers={"X-Media-Revision": "n1"})
    edge = Edge(str(tmp_path), upstream=up.url)
    edge.cmd = ["prlimit", "--nofile=256", *edge.cmd]
    edge.start()
    socks: list[socket.socket] = []
    try:
        for _ in range(300):
            try:
                s = socket.create_connection(("127.0.0.1", edge.port), timeout=2)
                s.sendall(b"GET /media/x HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            except OSError:
                break

        def served() -> bool:
            return requests.get(edge.url + NORMAL, timeout=3).status_code == 200

        wait_until(served, 40, 1.0, "a normal client to be served while half-open connections are held")
    finally:
        for s in socks:
            s.close()
        edge.stop()
        up.close()


# ----------------------------------------------------------------------------- cache poisoning
def test_host_header_variations_cannot_change_what_others_get(env):
    """The Host is not part of the key and is not forwarded to the upstream (it gets its own
    host), so no Host variation can make the upstream answer differently for the key."""
    edge, up = env
    path = "/media/hostile/host.txt"
    up.routes[path] = Route(body=b"host-route", reflect=("Host",), headers={"X-Media-Revision": "h1"})
    variants = [
        b"GET %s HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        b"GET %s HTTP/1.1\r\nHost: evil.example:8443\r\nConnection: close\r\n\r\n",
        b"GET http://evil.example%s HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    ]
    for v in variants:
        out, _ = raw(edge.port, v % path.encode())
        assert all(b"evil" not in body for _, body in parse_responses(out)[0]), out[:400]
    r = requests.get(edge.url + path, timeout=10)
    assert r.content == b"host-route\nHost: 127.0.0.1:%d" % up.port
    assert all(h.get("Host") == f"127.0.0.1:{up.port}" for m, p, h in up.requests if p == path)


@pytest.mark.parametrize("header", ["X-Forwarded-Host", "X-Forwarded-Scheme", "Forwarded"])
def test_forwarded_headers_cannot_poison_the_cache(env, header):
    edge, up = env
    path = f"/media/hostile/reflect-{header}.svg"
    up.routes[path] = Route(body=b"<svg/>", reflect=(header,), headers={"X-Media-Revision": "x1"})
    requests.get(edge.url + path, headers={header: "evil.example"}, timeout=10)
    r = requests.get(edge.url + path, timeout=10)
    assert b"evil.example" not in r.content, f"the victim got {r.content!r} ({r.headers.get('Cache-Status')})"


def test_vary_on_a_header_keys_the_variants_apart(env):
    """A header the app reflects and names in Vary (Accept-Language here) keys the variants:
    one client's value is stored apart from another's."""
    edge, up = env
    path = "/media/hostile/varied.svg"
    up.routes[path] = Route(body=b"<svg/>", reflect=("Accept-Language",),
                            headers={"X-Media-Revision": "v1", "Vary": "Accept-Language"})
    requests.get(edge.url + path, headers={"Accept-Language": "xx-evil"}, timeout=10)
    r = requests.get(edge.url + path, timeout=10)
    assert r.content == b"<svg/>"
    r = requests.get(edge.url + path, headers={"Accept-Language": "xx-evil"}, timeout=10)
    assert r.content.endswith(b"xx-evil") and r.headers["Cache-Status"].startswith("mediaedge; hit")


@pytest.mark.parametrize("header", ["X-Original-URL", "X-Rewrite-URL"])
def test_url_override_header_cannot_store_another_paths_content(env, header):
    edge, up = env
    path = f"/media/hostile/override-{header}.jpg"
    up.routes[path] = Route(body=b"this-is-the-real-file", headers={"X-Media-Revision": "o1"})
    up.routes["/media/hostile/other.jpg"] = Route(body=b"OTHER-FILE", headers={"X-Media-Revision": "x9"})
    up.path_override_headers = ("X-Original-URL", "X-Rewrite-URL")
    try:
        requests.get(edge.url + path, headers={header: "/media/hostile/other.jpg"}, timeout=10)
        r = requests.get(edge.url + path, timeout=10)
    finally:
        up.path_override_headers = ()
    assert r.content == b"this-is-the-real-file", f"the victim got {r.content!r} ({r.headers.get('Cache-Status')})"


def test_header_that_makes_the_app_answer_404_cannot_deny_others(env):
    edge, up = env
    path = "/media/hostile/cpdos.jpg"
    up.routes[path] = Route(body=b"real", headers={"X-Media-Revision": "c1"})
    up.path_override_headers = ("X-Original-URL",)
    try:
        requests.get(edge.url + path, headers={"X-Original-URL": "/nothing-here"}, timeout=10)
        r = requests.get(edge.url + path, timeout=10)
    finally:
        up.path_override_headers = ()
    assert r.status_code == 200 and r.content == b"real", (r.status_code, r.headers.get("Cache-Status"))


@pytest.mark.parametrize("header", [b"X-A: b\rX-B: c", b"X-A: b\x00c", b"X-A: a\r\n folded"],
                         ids=["bare-cr", "nul", "obs-fold"])
def test_invalid_header_characters_cannot_negative_cache_a_404(env, header):
    edge, up = env
    path = f"/media/hostile/hmc-{abs(hash(header))}.jpg"
    up.routes[path] = Route(body=b"real", headers={"X-Media-Revision": "m1"})
    raw(edge.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nConnection: close\r\n\r\n")
    r = requests.get(edge.url + path, timeout=10)
    assert r.status_code == 200 and r.content == b"real", (r.status_code, r.headers.get("Cache-Status"))


def test_obs_text_header_value_is_not_a_502(env):
    edge, up = env
    path = "/media/hostile/obs-text.jpg"
    up.routes[path] = Route(body=b"real", headers={"X-Media-Revision": "u1"})
    out, _ = raw(edge.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Note: caf\xe9\r\n"
                 b"Connection: close\r\n\r\n")
    assert parse_responses(out)[0] == [(200, b"real")], out[:200]


# ----------------------------------------------------------------------------- path tricks
TRICKS = [
    "/media/../secret.txt",
    "/media/%2e%2e/secret.txt",
    "/media/%2E%2E/secret.txt",
    "/media/.%2e/secret.txt",
    "/media/..%2fsecret.txt",
    "/media/%2e%2e%2fsecret.txt",
    "/media/a/../../secret.txt",
    "/media/..;/secret.txt",
    "/media/..%5csecret.txt",
    "/media/..\\secret.txt",
    "/media/%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 dots
    "/media/%252e%252e/secret.txt",  # double encoded: a literal "%2e%2e" segment, not a climb
    "/media//../secret.txt",
    "/media/./../secret.txt",
    "/media/a%00/../../secret.txt",
    "/media/%00",
    "/media/x?/../../secret.txt",
    "/media/" + "a/" * 3000 + "x.jpg",  # overlong
    "/MEDIA/../secret.txt",
    "/Media/%2e%2e/secret.txt",
]


@pytest.mark.parametrize("target", TRICKS)
def test_path_tricks_never_reach_outside_the_media_prefix(env, target):
    edge, up = env
    before = len(up.requests)
    out, _ = raw(edge.port, b"GET " + target.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    codes = statuses(out)
    assert codes, out[:200]
    assert SECRET_UP not in out and SECRET_DB not in out, f"{target} served a secret: {out[:300]!r}"
    assert codes[0] in (400, 404, 414), (target, out[:200])
    for _, p, _ in up.requests[before:]:
        assert p.startswith("/media/") and ".." not in p.split("?")[0].split("/"), f"upstream asked for {p!r}"


def test_odd_case_prefix_is_not_media_and_is_forwarded_unstored(env):
    edge, up = env
    up.routes["/MEDIA/hostile/upper.jpg"] = Route(body=b"app-answer")
    for _ in range(2):
        r = requests.get(edge.url + "/MEDIA/hostile/upper.jpg", timeout=10)
        assert r.content == b"app-answer" and "Cache-Status" not in r.headers
    assert up.hits["/MEDIA/hostile/upper.jpg"] == 2
    assert_serving(edge)
