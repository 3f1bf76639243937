"""HTTP/1 framing attacks on forwarded (non-media) traffic, against a real `mediaedge serve`,
as raw bytes on sockets (proxy/http1guard.py):

* CVE-2025-43859: chunk data followed by two bytes other than CRLF. h11 0.14 (mitmproxy
  11, Python 3.11) accepted it; it must be a 400 and a close on every Python, and never
  reach the app. The same reader parses the app's chunked responses: a bad footer there
  is a 502, not a body passed on as valid.
* an upstream that sends a response head without end: 502 once it passes 64 KiB, the
  upstream connection closed, the node unharmed.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.edge import Edge, wait_until
from tests.test_hostile import parse_responses, raw, statuses


class RawUpstream:
    """A loopback app server that hands each accepted connection to `serve(conn, request)`,
    where `request` is the raw request (head and any body read so far), and records
    complete bodies of chunked requests it decoded."""

    def __init__(self, serve: Callable[[socket.socket, bytes], None], keep_alive: bool = False) -> None:
        self.serve = serve
        # keep_alive: serve request after request on a connection, as an app server does.
        # A handler that answers and closes without `Connection: close` leaves a proxy a
        # connection it may reuse just as it closes: a 502 race, not a finding.
        self.keep_alive = keep_alive
        self.requests: list[bytes] = []
        self.closed_by_peer = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            while self._one(conn) and self.keep_alive:
                pass

    def _one(self, conn: socket.socket) -> bool:
        """Read one request (requests arrive one at a time) and serve it; False when done."""
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return False
                data += chunk
            if b"chunked" in data.split(b"\r\n\r\n", 1)[0].lower():
                while not data.endswith(b"0\r\n\r\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        return False
                    data += chunk
            self.requests.append(data)
            self.serve(conn, data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.closed_by_peer.set()
        except OSError:
            pass
        return False

    def close(self) -> None:
        self.sock.close()


def dechunk(body: bytes) -> bytes:
    """The data of a well-formed chunked body."""
    out, pos = b"", 0
    while True:
        eol = body.index(b"\r\n", pos)
        n = int(body[pos:eol].split(b";")[0], 16)
        if n == 0:
            return out
        out += body[eol + 2:eol + 2 + n]
        assert body[eol + 2 + n:eol + 4 + n] == b"\r\n"
        pos = eol + 4 + n


def echo(conn: socket.socket, request: bytes) -> None:
    """Answer with the decoded request body (chunked) or `ok`."""
    head, _, body = request.partition(b"\r\n\r\n")
    data = dechunk(body) if b"chunked" in head.lower() else b"ok"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))


@pytest.fixture(scope="module")
def echo_env(tmp_path_factory):
    up = RawUpstream(echo, keep_alive=True)
    edge = Edge(str(tmp_path_factory.mktemp("http1")), upstream=up.url).start()
    yield edge, up
    edge.stop()
    up.close()


def chunked_post(body: bytes) -> bytes:
    return b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body


@pytest.mark.parametrize("body", [
    b"5\r\nhelloXX0\r\n\r\n",      # the CVE's example
    b"5\r\nhello\rX0\r\n\r\n",     # CR, then not LF
    b"5\r\nhello\n\r0\r\n\r\n",    # the two bytes swapped
    b"5\r\nhello0\r\n\r\n\r\n",     # no footer at all: the next chunk's header eaten as one
    b"2\r\nhi\r\n5\r\nhelloXX0\r\n\r\n",  # a good chunk first
])
def test_chunk_data_not_followed_by_crlf_is_400_and_a_close(echo_env, body):
    edge, up = echo_env
    before = len(up.requests)
    out, how = raw(edge.port, chunked_post(body))
    assert statuses(out) == [400], (how, out[:300])
    assert how in ("closed", "reset"), how
    assert b"chunk" in out, out  # the cause is named
    assert len(up.requests) == before, f"a malformed body reached the app: {up.requests[before:]}"


def test_well_formed_chunked_post_is_forwarded_whole(echo_env):
    edge, up = echo_env
    out, how = raw(edge.port, chunked_post(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
    assert parse_responses(out)[0] == [(200, b"hello world")], (how, out[:300])
    # kept alive, and the next request on the connection is answered too
    out, how = raw(edge.port, chunked_post(b"3\r\nabc\r\n0\r\n\r\n") + chunked_post(b"1\r\nd\r\n0\r\n\r\n"))
    assert parse_responses(out)[0] == [(200, b"abc"), (200, b"d")], (how, out[:300])


def _bad_chunked_response(conn: socket.socket, request: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n")
    time.sleep(1)


def test_upstream_chunk_data_not_followed_by_crlf_is_502(tmp_path):
    up = RawUpstream(_bad_chunked_response)
    edge = Edge(str(tmp_path), upstream=up.url).start()
    try:
        out, how = raw(edge.port, b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(out) == [502], (how, out[:300])
        assert b"hello" not in out
        assert how in ("closed", "reset"), how
    finally:
        edge.stop()
        up.close()


def _endless_head(conn: socket.socket, request: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for i in range(200_000):  # 200 MB of header fields, unless the edge hangs up
        conn.sendall(b"X-Junk-%d: %s\r\n" % (i, b"a" * 1000))


def test_endless_upstream_response_head_is_502_and_the_upstream_closed(tmp_path):
    up = RawUpstream(_endless_head)
    edge = Edge(str(tmp_path), upstream=up.url).start()
    try:
        rss_before = edge.rss_kib()
        t0 = time.monotonic()
        out, how = raw(edge.port, b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n", timeout=20)
        assert statuses(out) == [502], (how, out[:300])
        assert b"head over 65536 bytes" in out
        assert time.monotonic() - t0 < 10
        wait_until(up.closed_by_peer.is_set, 10, what="the edge to close the upstream connection")
        assert edge.rss_kib() - rss_before < 32 * 1024, "the head was buffered"
        assert edge.proc is not None and edge.proc.poll() is None
        # a head just under the limit is still read
        up.serve = lambda conn, req: conn.sendall(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 60_000 + b"\r\nContent-Length: 2\r\n\r\nok")
        out, how = raw(edge.port, b"GET /api/y HTTP/1.1\r\nHost: x\r\n\r\n")
        assert parse_responses(out)[0] == [(200, b"ok")], (how, out[:200])
    finally:
        edge.stop()
        up.close()
