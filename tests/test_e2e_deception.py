"""Web cache deception end to end: a lenient app behind a real `mediaedge serve`.

The app decodes paths as Spring and friends do (percent-decoding until stable,
NFKC, ";params" dropped, backslashes as slashes, merged slashes, ".." resolved),
so every target below reaches it as "/account": the logged-in victim's page,
with no Cache-Control. Before the fix the edge forwarded them and stored the page
under the media URL for a day; now it answers 400 and the app is never asked.
"""
from __future__ import annotations

import http.server
import posixpath
import socket
import threading
import time
import unicodedata
from collections import Counter
from urllib.parse import unquote

import pytest
import requests

from tests.edge import Edge, wait_until

ACCOUNT = b"<html><body>Account of victim@example.com, card ending 4242</body></html>"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8 + b"\xff\xd9"
SESSION = "session=victim-secret"

# At least the targets the hardening issue names; each resolves to /account in the app.
DECEPTION = [
    "/media/..%3B/account",
    "/media/%252e%252e/account",
    "/media/%EF%BC%8E%EF%BC%8E/account",
    "/media/..;/account",
    "/media/%2e%2e/account",
    "/media/%252e%252e%252faccount",
    "/media/x/%252e/%252e%252e/..%3B/account",
    "/media/%25EF%25BC%258E%25EF%25BC%258E/account",
    "/media/..%5caccount",
    "/media/..%255caccount",
    "/media/%EF%BC%BC..%EF%BC%BCaccount",
    "/media/;jsessionid=x/..;/account",
    "/media/%252f..%252faccount",
    "/media/x.jpg/..%3B/..%3B/account",
    "/%6Dedia/..%3B/account",
    "/%256Dedia/..%3B/account",
    "/media/%E2%80%A5/account",
    "http://shop.example/media/..%3B/account",
]


def lenient(raw_path: str) -> str:
    """The app's routing path: what Spring-like decoders make of a request target."""
    path = raw_path
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path = path.partition("?")[0]
    for _ in range(10):
        decoded = unicodedata.normalize("NFKC", unquote(path, errors="replace"))
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/")
    path = "/".join(segment.partition(";")[0] for segment in path.split("/"))
    return posixpath.normpath("/" + path.lstrip("/")).replace("//", "/")


class LenientApp:
    """A real HTTP/1.1 server on loopback: /account for the victim's cookie, a few media routes."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()  # by the raw request target
        self.routed: Counter[str] = Counter()  # by the path the app resolved
        self.media: dict[str, tuple[bytes, dict[str, str]]] = {}
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits[self.path] += 1
                routed = lenient(self.path)
                outer.routed[routed] += 1
                if routed == "/account" and SESSION in (self.headers.get("Cookie") or ""):
                    body, headers = ACCOUNT, {"Content-Type": "text/html; charset=utf-8"}
                elif routed == "/account":
                    body, headers = b"<html>please log in</html>", {"Content-Type": "text/html"}
                elif routed in outer.media:
                    body, headers = outer.media[routed]
                else:
                    body, headers = b"no route\n", {"Content-Type": "text/plain"}
                    self.send_response(404)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def raw_get(port: int, target: str, cookie: str | None = None) -> tuple[int, bytes]:
    """GET a target byte for byte (HTTP clients would resolve or re-encode it); (status, body)."""
    head = f"GET {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n"
    if cookie:
        head += f"Cookie: {cookie}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + b"\r\n")
        out = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    head_bytes, _, body = out.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), body


@pytest.fixture(scope="module")
def app():
    a = LenientApp()
    yield a
    a.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory, app):
    e = Edge(str(tmp_path_factory.mktemp("deception")), upstream=app.url).start()
    yield e
    e.stop()


def test_the_app_resolves_every_target_to_the_account_page():
    """The targets are real deception targets for this app (the test's own premise)."""
    assert len(DECEPTION) >= 12
    for target in DECEPTION:
        assert lenient(target) == "/account", target


@pytest.mark.parametrize("target", DECEPTION)
def test_deception_target_is_400_and_never_reaches_the_app(edge, app, target):
    before = sum(app.hits.values())
    status, body = raw_get(edge.port, target, cookie=SESSION)  # the lured victim
    assert status == 400, (target, body[:200])
    assert b"victim" not in body
    status, body = raw_get(edge.port, target)  # the attacker, a moment later
    assert status == 400 and b"victim" not in body, (target, body[:200])
    assert sum(app.hits.values()) == before, f"{target} reached the app: {app.hits}"
    assert app.routed["/account"] == 0


# ----------------------------------------------------------------------------- armour
def test_html_under_jpg_without_freshness_is_not_stored(edge, app):
    """A catch-all route answers a media URL with the victim's page: forwarded (fwd=bypass),
    never stored, so the attacker's request reaches the app again (and gets no page)."""
    app.media["/media/avatar.jpg"] = (ACCOUNT, {"Content-Type": "text/html; charset=utf-8"})
    r = requests.get(edge.url + "/media/avatar.jpg", headers={"Cookie": SESSION}, timeout=10)
    assert r.status_code == 200 and r.content == ACCOUNT
    assert r.headers["Cache-Status"] == "mediaedge; fwd=bypass; fwd-status=200; detail=upstream"
    r = requests.get(edge.url + "/media/avatar.jpg", timeout=10)
    assert r.headers["Cache-Status"] == "mediaedge; fwd=bypass; fwd-status=200; detail=upstream"
    assert app.hits["/media/avatar.jpg"] == 2
    wait_until(lambda: "deception armour" in edge.log() and "/media/avatar.jpg" in edge.log(), 5,
               what="the reason in the log")
    assert "text/html without explicit freshness under .jpg" in edge.log()


def test_html_with_explicit_max_age_is_stored(edge, app):
    page = b"<html>a published page, cacheable</html>"
    app.media["/media/page.jpg"] = (page, {"Content-Type": "text/html", "Cache-Control": "max-age=600"})
    r = requests.get(edge.url + "/media/page.jpg", timeout=10)
    assert r.headers["Cache-Status"] == "mediaedge; fwd=miss; fwd-status=200; stored; detail=upstream"
    r = requests.get(edge.url + "/media/page.jpg", timeout=10)
    assert r.content == page and r.headers["Cache-Status"].startswith("mediaedge; hit")
    assert app.hits["/media/page.jpg"] == 1


def test_real_jpeg_without_freshness_is_stored(edge, app):
    app.media["/media/photo.jpg"] = (JPEG, {"Content-Type": "image/jpeg"})
    r = requests.get(edge.url + "/media/photo.jpg", timeout=10)
    assert r.headers["Cache-Status"] == "mediaedge; fwd=miss; fwd-status=200; stored; detail=upstream"
    r = requests.get(edge.url + "/media/photo.jpg", timeout=10)
    assert r.content == JPEG and r.headers["Cache-Status"].startswith("mediaedge; hit")
    assert app.hits["/media/photo.jpg"] == 1


def test_json_under_jpg_without_freshness_is_not_stored(edge, app):
    app.media["/media/me.jpg"] = (b'{"email": "victim@example.com"}', {"Content-Type": "application/json"})
    for _ in range(2):
        r = requests.get(edge.url + "/media/me.jpg", timeout=10)
        assert r.headers["Cache-Status"] == "mediaedge; fwd=bypass; fwd-status=200; detail=upstream"
    assert app.hits["/media/me.jpg"] == 2
