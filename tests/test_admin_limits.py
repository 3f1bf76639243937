"""The admin plane's bounds: connections, body bytes in flight, head and body deadlines,
signature checks before the body. Real `mediaedge serve` processes (and, for the
knobs too slow to test at their defaults, a real AdminServer on loopback)."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import requests

from mediaedge.webhook import signed_headers
from tests.adminflood import MIB, PeakRss, flood, publish_head
from tests.edge import Edge, wait_until

SECRET = "s3cret-for-tests"
BUSY_CONNECTIONS = {"error": "admin plane busy: 64 connections open, the limit; retry shortly"}
BUSY_BYTES = {"error": "admin plane busy: request bodies in flight would pass 8388608 bytes; retry shortly"}


@pytest.fixture
def node(tmp_path):
    e = Edge(str(tmp_path), args=["--webhook-secret", SECRET, "--node-id", "a"]).start()
    yield e
    e.stop()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP/1.1 response with a Content-Length body, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """True when the server closes `s` (after any answer) within `seconds`."""
    s.settimeout(seconds)
    try:
        while s.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def _signed_publish(edge: Edge, events: list[dict]) -> requests.Response:
    raw = json.dumps({"events": events}).encode()
    return requests.post(edge.admin + "/publish", data=raw, headers=signed_headers(SECRET, raw, time.time()),
                         timeout=10)


# --- connections ------------------------------------------------------------------------------


def test_connections_past_the_bound_get_503_at_once_and_slots_come_back(node):
    idle = [_connect(node.admin_port) for _ in range(64)]
    try:
        # the 64 are counted as they are accepted; the next one is refused before it is read
        # (a Response is falsy when its status is an error: wrapped in a tuple)
        wait_until(lambda: (lambda r: (r,) if r.status_code == 503 else None)(
            requests.get(node.admin + "/healthz", timeout=5)), 5, what="the 65th connection to be refused")
        started = time.monotonic()
        r = requests.get(node.admin + "/stats", timeout=5)
        assert time.monotonic() - started < 5 / 2  # refused, not left waiting for a slot
        assert r.status_code == 503 and r.json() == BUSY_CONNECTIONS
        assert r.headers["Retry-After"] == "1" and r.headers["Connection"] == "close"
    finally:
        for s in idle:
            s.close()
    r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
        requests.get(node.admin + "/healthz", timeout=5)), 5, what="slots freed by closed connections")
    assert r.text == "ok\n"


def test_request_body_bytes_in_flight_are_bounded(node):
    """Eight requests each reserving 1 MiB (signature headers present, bodies not yet sent)
    spend the 8 MiB budget: a ninth is refused with 503 at once; bodiless requests still pass."""
    held = []
    try:
        for _ in range(8):
            s = _connect(node.admin_port)
            s.sendall(publish_head(node.admin_port, MIB, signed_headers=True) + b"{")
            held.append(s)
        ninth = _connect(node.admin_port)
        held.append(ninth)

        def refused() -> tuple[int, dict, bytes] | None:
            probe = _connect(node.admin_port)
            try:
                probe.sendall(publish_head(node.admin_port, MIB, signed_headers=True))
                status, headers, body = _read_response(probe)
                return (status, headers, body) if status == 503 else None
            finally:
                probe.close()

        status, headers, body = wait_until(refused, 5, what="the budget to be spent")
        assert json.loads(body) == BUSY_BYTES and headers["retry-after"] == "1"
        assert requests.get(node.admin + "/healthz", timeout=5).text == "ok\n"
    finally:
        for s in held:
            s.close()
    # the reservations are released with their connections: a real publish goes through
    r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
        _signed_publish(node, [{"type": "purge", "prefix": "/media/"}])), 5, what="budget released")
    assert r.json()["accepted"] == 1


# --- the signature before the body ---------------------------------------------------------------


@pytest.mark.parametrize("case, message", [
    ("unsigned", "X-Mediaedge-Timestamp: header required"),
    ("expired", "X-Mediaedge-Timestamp: 400 s old, more than 300 s off (check the sender's clock)"),
])
def test_a_bad_signature_head_is_refused_before_the_body_is_sent(node, case, message):
    s = _connect(node.admin_port)
    try:
        head = publish_head(node.admin_port, MIB, signed_headers=False)
        if case == "expired":
            old = int(time.time()) - 400
            head = head.replace(b"\r\n\r\n", f"\r\nX-Mediaedge-Timestamp: {old}\r\n"
                                             f"X-Mediaedge-Signature: sha256={'0' * 64}\r\n\r\n".encode())
        s.sendall(head)  # and not one byte of the megabyte it announces
        s.settimeout(5)
        status, headers, body = _read_response(s)
        assert status == 401 and json.loads(body) == {"error": message}
        assert headers["connection"] == "close"
        assert _closed_within(s, 3)
    finally:
        s.close()


# --- deadlines -------------------------------------------------------------------------------------


def test_a_header_trickle_client_is_cut_by_the_head_deadline(node):
    """One header line a second never trips a per-read timeout; the 10 s deadline for the
    whole head does: 408 and a close, counted from the connection's start."""
    s = _connect(node.admin_port)
    stop = threading.Event()
    started = time.monotonic()

    def trickle() -> None:
        try:
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n")
            i = 0
            while not stop.wait(1.0):
                s.sendall(f"X-Slow-{i}: y\r\n".encode())
                i += 1
        except OSError:
            pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        s.settimeout(20)
        status, headers, body = _read_response(s)
        took = time.monotonic() - started
        assert status == 408 and json.loads(body) == {"error": "request head not received within 10 s"}
        assert 9.5 <= took < 12.0, took
        assert _closed_within(s, 3)
    finally:
        stop.set()
        s.close()
        t.join(5)


def _in_process_server(limits):
    """A real AdminServer on a loopback port, in a thread with its own loop."""
    from mediaedge.admin import AdminResponse, AdminServer

    async def ok(_):
        return AdminResponse.text(200, "ok\n")

    loop = asyncio.new_event_loop()
    server = AdminServer({("GET", "/healthz"): ok, ("POST", "/publish"): ok}, limits=limits)
    loop.run_until_complete(server.start("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def close() -> None:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    return server, close


def test_a_body_trickle_client_is_cut_by_the_body_deadline():
    from mediaedge.admin import Limits

    server, close = _in_process_server(Limits(head_timeout=5.0, body_timeout=1.5))
    s = _connect(server.port)
    try:
        started = time.monotonic()
        s.sendall(publish_head(server.port, 1000, signed_headers=True))
        for _ in range(3):  # a byte every 0.5 s: each read comes well within any per-read timeout
            s.sendall(b" ")
            time.sleep(0.5)  # pacing the client, not an assertion
        s.settimeout(5)
        status, _, body = _read_response(s)
        took = time.monotonic() - started
        assert status == 408 and json.loads(body) == {"error": "request body not received within 1.5 s"}
        assert 1.4 <= took < 3.0, took
        assert _closed_within(s, 3)
        assert server.body_bytes == 0  # the reservation went back
    finally:
        s.close()
        close()


def test_an_idle_keep_alive_connection_is_closed_quietly():
    from mediaedge.admin import Limits

    server, close = _in_process_server(Limits(head_timeout=1.0))
    s = _connect(server.port)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = _read_response(s)
        assert (status, body) == (200, b"ok\n")
        started = time.monotonic()
        s.settimeout(5)
        assert s.recv(100) == b""  # no 408 on a connection that sent nothing more
        assert time.monotonic() - started < 3.0
        wait_until(lambda: server.connections == 0, 3, what="the slot to be released")
    finally:
        s.close()
        close()


# --- floods ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signature-headers"])
def test_a_flood_of_1_mib_bodies_keeps_memory_bounded(node, signed):
    """400 connections at once, each POSTing 1 MiB (before this bound: RSS 78 -> 418 MB)."""
    sampler = PeakRss(node.proc.pid)
    before = sampler.rss_kib()
    with sampler:
        counts = flood(node.admin_port, 400, MIB, signed_headers=signed)
    growth_mb = (sampler.peak_kib - before) / 1024
    print(f"\nadmin flood ({'signature headers' if signed else 'unsigned'}): {dict(counts)};"
          f" RSS {before / 1024:.0f} MB before, peak {sampler.peak_kib / 1024:.0f} MB")
    assert set(counts) <= {"401", "503", "BrokenPipeError", "ConnectionResetError"}, counts
    assert counts["401"] >= 1 and sum(counts.values()) == 400
    assert growth_mb < 64, growth_mb
    # the flood's last connections close on their own schedule: the node answers again once they have
    wait_until(lambda: requests.get(node.admin + "/healthz", timeout=5).text == "ok\n", 10, 0.05, "the admin plane after the flood")


def test_a_normal_publish_gets_through_during_a_flood(node):
    outcome: dict = {}

    def attack() -> None:
        deadline = time.monotonic() + 8
        rounds = 0
        while time.monotonic() < deadline:
            flood(node.admin_port, 200, MIB, signed_headers=False, timeout=10)
            rounds += 1
        outcome["rounds"] = rounds

    t = threading.Thread(target=attack, daemon=True)
    t.start()
    try:
        time.sleep(0.5)  # let the flood start (pacing, not an assertion)

        def publish_once() -> requests.Response | None:
            try:
                r = _signed_publish(node, [{"type": "purge", "prefix": "/media/"}])
            except requests.ConnectionError:
                return None  # refused past the bound while the request was being sent
            return r if r.status_code == 200 else None

        r = wait_until(publish_once, 8, 0.05, "a signed publish to get through the flood")
        assert t.is_alive(), "the flood ended before the publish got through"
        assert r.json() == {"accepted": 1, "seq": r.json()["seq"]}
    finally:
        t.join(30)


def test_a_malformed_or_oversized_head_is_answered_and_closed():
    from mediaedge.admin import Limits

    server, close = _in_process_server(Limits())
    try:
        for head, status in [(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * (200 << 10) + b"\r\n\r\n", 431),
                             (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", 400)]:
            s = _connect(server.port)
            try:
                s.sendall(head)
                got, headers, body = _read_response(s)
                assert (got, json.loads(body)) == (status, {"error": "malformed request"})
                assert headers["connection"] == "close" and _closed_within(s, 3)
            finally:
                s.close()
        wait_until(lambda: server.connections == 0, 3, what="the slots to be released")
    finally:
        close()


def test_a_node_stops_promptly_with_idle_admin_connections_open(tmp_path):
    edge = Edge(str(tmp_path), args=["--webhook-secret", SECRET]).start()
    idle = [_connect(edge.admin_port) for _ in range(3)]
    try:
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(idle[0])[0] == 200  # now an idle keep-alive connection
        started = time.monotonic()
        assert edge.stop() == 0
        assert time.monotonic() - started < 5.0
    finally:
        for s in idle:
            s.close()
