"""Real processes for the end-to-end tests and the bench: a loopback upstream app server and
`mediaedge serve` (tests/edge.py re-exports them under the names the tests use).

Every server binds 127.0.0.1 on a free port; every wait polls a condition with a
deadline (no bare sleeps as assertions).
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import requests

from bench.ports import free_port  # one implementation for the tests and the bench
from mediaedge.webhook import signed_headers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def venv_executable(name: str) -> str | None:
    """`name` from the bin directory of the Python running the tests (the venv's
    `mitmdump`), else from PATH: on a fresh machine only the venv has it, and the venv's
    bin is not on PATH when its python is run directly (scripts/test)."""
    own = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(own) and os.access(own, os.X_OK):
        return own
    import shutil

    return shutil.which(name)


def wait_until(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as e:  # noqa: BLE001
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or cond}: {last_exc!r}")


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@dataclass
class Route:
    status: int = 200
    body: bytes | Callable[[], bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the head
    chunk_delay: float = 0.0  # between 64 KiB chunks
    cut_after: int | None = None  # send only this many body bytes, then close
    size: int | None = None  # synthetic body of this many bytes (deterministic), streamed
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length (a cut omits the last chunk)
    reflect: tuple[str, ...] = ()  # request headers whose "name: value" the app appends to the body
    # Hold the body at byte `hold_at` until `hold` is set (at most 30 s), setting `held` on
    # arrival: lets a test apply an event at a chosen point of a fill, deterministically.
    hold_at: int | None = None
    hold: threading.Event | None = None
    held: threading.Event | None = None
    seed: int = 0  # which synthetic body
    date: bool = True  # send the server's Date (and Server) field, as http.server does by default
    fields: list[tuple[str, str]] = field(default_factory=list)  # sent after `headers`, repeats allowed
    # Answer a conditional GET whose If-None-Match names the route's ETag (else whose
    # If-Modified-Since is not before its Last-Modified) with a 304 carrying the route's
    # current headers and no body, as an app server or nginx does.
    not_modified: bool = False
    # Answer one-range `Range: bytes=...` requests with 206 (416 when unsatisfiable), as
    # nginx does for a static file; an If-Range other than the route's ETag gets the 200.
    ranges: bool = False


def synthetic_chunk(offset: int, n: int, seed: int = 0) -> bytes:
    """Deterministic bytes for large synthetic bodies, generated on the fly (seed: a revision)."""
    def block(i: int) -> bytes:
        return hashlib.sha256(f"{seed}:{i}".encode()).digest() * 128  # 4096 bytes

    start = offset % 4096
    out = bytearray(block(offset // 4096)[start:])
    while len(out) < n:
        out += block((offset + len(out)) // 4096)
    return bytes(out[:n])


def synthetic_sha(size: int, seed: int = 0) -> str:
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        n = min(1 << 20, size - pos)
        h.update(synthetic_chunk(pos, n, seed))
        pos += n
    return h.hexdigest()


def _byte_range(value: str | None, if_range: str | None, etag: str | None, size: int) -> tuple[int, int] | str | None:
    """[start, end) of a one-range request, 'unsatisfiable', or None (the whole body)."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    if if_range is not None and if_range != etag:
        return None
    first, _, last = value[6:].strip().partition("-")
    try:
        if not first:
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size else "unsatisfiable"
        a = int(first)
        b = size - 1 if not last else min(int(last), size - 1)
    except ValueError:
        return None
    return (a, b + 1) if a < size and a <= b else "unsatisfiable"


def _unmodified(route_headers: dict[str, str], request_headers: object) -> bool:
    """RFC 9110 13.1.2/13.1.3 as a simple origin applies them (weak comparison for tags)."""
    from email.utils import parsedate_to_datetime

    fields = {k.lower(): v for k, v in route_headers.items()}
    inm = request_headers.get("If-None-Match")  # type: ignore[attr-defined]
    if inm is not None:
        etag = fields.get("etag")
        if etag is None:
            return False
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag.removeprefix("W/") in tags
    ims = request_headers.get("If-Modified-Since")  # type: ignore[attr-defined]
    if ims is not None and "last-modified" in fields:
        try:
            return parsedate_to_datetime(fields["last-modified"]) <= parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
    return False


class Upstream:
    """A real HTTP/1.1 app server on loopback with scripted routes and request counts."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        # the request line of each request exactly as received ("GET /x HTTP/1.1")
        self.request_lines: list[str] = []
        # monotonic times per path at which a body was fully sent (tests/test_coalescing.py)
        self.finished_at: dict[str, list[float]] = {}
        # Emulates apps that route by a header (IIS URL Rewrite, old Symfony): when a request
        # carries one of these, the route is looked up by its value instead of the path.
        self.path_override_headers: tuple[str, ...] = ()
        self.not_modified: Counter[str] = Counter()  # 304s answered, per path
        self.body_bytes: Counter[str] = Counter()  # response body bytes sent, per path
        self.header_bytes: Counter[str] = Counter()  # status line and header bytes sent, per path
        self.range_requests: list[tuple[str, str | None, int]] = []  # (path, Range, status) answered as ranges
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def flush_headers(self) -> None:
                buffered = getattr(self, "_headers_buffer", None)
                if buffered:
                    outer.header_bytes[self.path] += sum(len(b) for b in buffered)
                super().flush_headers()

            def _handle(self) -> None:
                outer.hits[self.path] += 1
                outer.request_lines.append(self.requestline)
                outer.requests.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                route_path = self.path
                for name in outer.path_override_headers:
                    if self.headers.get(name):
                        route_path = self.headers[name]
                        break
                route = outer.routes.get(route_path)
                if route is None:
                    body = b"no route\n"
                    self.send_response(404)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if route.delay:
                    time.sleep(route.delay)
                if route.not_modified and self.command in ("GET", "HEAD") and _unmodified(route.headers, self.headers):
                    outer.not_modified[self.path] += 1
                    self.send_response(304)
                    for k, v in route.headers.items():
                        if k.lower() != "content-length":
                            self.send_header(k, v)
                    self.end_headers()
                    return
                body = route.body() if callable(route.body) else route.body
                if route.reflect:
                    body = body + b"".join(
                        f"\n{name}: {self.headers.get(name)}".encode() for name in route.reflect if name in self.headers)
                size = route.size if route.size is not None else len(body)
                status, offset, content_range = route.status, 0, None
                if route.ranges and route.status == 200 and self.command == "GET":
                    window = _byte_range(self.headers.get("Range"), self.headers.get("If-Range"),
                                         route.headers.get("ETag"), size)
                    if window == "unsatisfiable":
                        outer.range_requests.append((self.path, self.headers.get("Range"), 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if isinstance(window, tuple):
                        outer.range_requests.append((self.path, self.headers.get("Range"), 206))
                        status, offset = 206, window[0]
                        content_range = f"bytes {window[0]}-{window[1] - 1}/{size}"
                        size = window[1] - window[0]
                if route.date:
                    self.send_response(status)
                else:
                    self.log_request(status)
                    self.send_response_only(status)
                for k, v in [*route.headers.items(), *route.fields]:
                    self.send_header(k, v)
                if route.ranges and "Accept-Ranges" not in route.headers:
                    self.send_header("Accept-Ranges", "bytes")  # as nginx says for a static file
                if content_range is not None:
                    self.send_header("Content-Range", content_range)
                if route.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                elif "Content-Length" not in route.headers:
                    self.send_header("Content-Length", str(size))
                self.end_headers()
                if self.command == "HEAD":
                    return
                limit = size if route.cut_after is None else route.cut_after
                pos = 0
                try:
                    while pos < limit:
                        if route.hold_at is not None and pos == route.hold_at and route.hold is not None:
                            self.wfile.flush()
                            if route.held is not None:
                                route.held.set()
                            route.hold.wait(30)
                        n = min(65536, limit - pos)
                        if route.hold_at is not None and pos < route.hold_at:
                            n = min(n, route.hold_at - pos)
                        at = offset + pos
                        chunk = body[at:at + n] if route.size is None else synthetic_chunk(at, n, route.seed)
                        # counted before the write: a client can finish reading before this
                        # thread runs again, and tests read the count right after their client
                        outer.body_bytes[self.path] += len(chunk)
                        try:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if route.chunked else chunk)
                        except OSError:
                            outer.body_bytes[self.path] -= len(chunk)
                            raise
                        pos += n
                        if route.chunk_delay and pos < limit:
                            time.sleep(route.chunk_delay)
                    if route.chunked and route.cut_after is None:
                        self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                outer.finished_at.setdefault(self.path, []).append(time.monotonic())
                if route.cut_after is not None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_PURGE = _handle
            do_PROPFIND = do_FOO = _handle

        setattr(H, "do_M-SEARCH", H._handle)  # methods that are tokens but not identifiers

        # Port 0: the kernel picks a free port at bind time (no window for another socket
        # to take one we picked earlier).
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port: int = self.server.server_address[1]
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Edge:
    """`mediaedge serve` as a real subprocess on free ports."""

    def __init__(self, workdir: str, *, upstream: str | None = None, args: list[str] | None = None,
                 env: dict[str, str] | None = None, origin_db: str | None = None,
                 cache_dir: str | None = None, port: int | None = None, admin_port: int | None = None) -> None:
        self.workdir = workdir
        self._auto_ports = port is None and admin_port is None
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        while self.admin_port == self.port and admin_port is None:  # the kernel may hand out one port twice
            self.admin_port = free_port()
        self.origin_db = origin_db or f"sqlite:///{os.path.join(workdir, 'origin.db')}"
        self.cache_dir = cache_dir or os.path.join(workdir, "cache")
        cmd = [sys.executable, "-m", "mediaedge", "serve", "--listen", f"127.0.0.1:{self.port}",
               "--admin-listen", f"127.0.0.1:{self.admin_port}", "--cache-dir", self.cache_dir,
               "--origin-db", self.origin_db]
        if upstream:
            cmd += ["--upstream", upstream]
        cmd += args or []
        self.cmd = cmd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = os.path.join(workdir, f"edge-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Edge:
        def up() -> str | bool:
            if self.proc is not None and self.proc.poll() is not None:
                return "exited"
            requests.get(f"{self.admin}/healthz", timeout=1).raise_for_status()
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        for attempt in range(3):
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=self._log,
                                         stderr=subprocess.STDOUT)
            if wait_until(up, timeout, 0.05, "mediaedge to listen") is True:
                return self
            # A port picked by free_port() can be taken (say, as some connection's source
            # port) before the node binds it (our own check, or mitmproxy's bind a moment
            # later); mediaedge then exits with an error line. Retry on
            # new ports, unless the test chose the ports itself.
            taken = "cannot listen on" in self.log() or "address already in use" in self.log()
            if not (self._auto_ports and taken and attempt < 2):
                raise AssertionError(f"mediaedge exited {self.proc.returncode}: {self.log()}")
            self._log.close()
            old = (f"127.0.0.1:{self.port}", f"127.0.0.1:{self.admin_port}")
            self.port, self.admin_port = free_port(), free_port()
            new = {old[0]: f"127.0.0.1:{self.port}", old[1]: f"127.0.0.1:{self.admin_port}"}
            self.cmd = [new.get(a, a) for a in self.cmd]
        raise AssertionError("unreachable")

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def get(self, path: str, **kw: object) -> requests.Response:
        kw.setdefault("timeout", 30)
        return requests.get(self.url + path, **kw)  # type: ignore[arg-type]

    def stats(self) -> dict:
        return requests.get(self.admin + "/stats", timeout=5).json()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def open_files(self) -> list[str]:
        """What the edge's descriptors point at now (`socket:[N]`, paths), from /proc."""
        assert self.proc is not None
        fd_dir = f"/proc/{self.proc.pid}/fd"
        targets = []
        for fd in os.listdir(fd_dir):
            try:
                targets.append(os.readlink(os.path.join(fd_dir, fd)))
            except FileNotFoundError:  # closed meanwhile
                continue
        return targets

    def rss_kib(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def get_plain(port: int, path: str) -> tuple[int, str, bytes]:
    """One GET on a fresh connection with no fields of the client's own (http.client, not
    requests): the status, the Cache-Status and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Cache-Status") or "", r.read()
    finally:
        conn.close()


def status_of(r: object) -> str:
    """The Cache-Status of an answer: a requests Response, or tests.test_hygiene's raw one."""
    headers = getattr(r, "headers", None)
    if headers is not None:
        return str(headers.get("Cache-Status", ""))
    return str(r.get("cache-status") or "")  # type: ignore[attr-defined]


@contextlib.contextmanager
def edge_with_upstream(workdir: object, **kw: object) -> Iterator[tuple[Edge, Upstream]]:
    """A started edge in front of a fresh app (`Edge` keywords in `kw`), both closed after:
    what module-scoped fixtures share."""
    up = Upstream()
    try:
        edge = Edge(str(workdir), upstream=up.url, **kw).start()  # type: ignore[arg-type]
        try:
            yield edge, up
        finally:
            edge.stop()
    finally:
        up.close()


SECRET = "s3cret-for-tests"  # the --webhook-secret of the nodes `publish` is sent to


def publish(edge: Edge, events: list[dict], *, secret: str = SECRET, now: float | None = None,
            body: bytes | None = None) -> requests.Response:
    """POST `events` to the edge's /publish, signed with `secret` at `now`."""
    raw = body if body is not None else json.dumps({"events": events}).encode()
    headers = signed_headers(secret, raw, time.time() if now is None else now)
    headers["Content-Type"] = "application/json"
    return requests.post(edge.admin + "/publish", data=raw, headers=headers, timeout=10)
