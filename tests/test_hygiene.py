"""What reaches the app and what reaches the client, through a real `mediaedge serve`.

- The upstream client shares no state between clients (no cookie jar) and adds no
  fields of its own (httpx's default Accept / Accept-Encoding / User-Agent).
- An empty request field is not an absent one when matching Vary (RFC 9110 12.5.3).
- Every response carries a Date (RFC 9110 6.6.1); `--browser-ttl` sets the
  Cache-Control a client sees when the origin gave none.
- Control characters in request fields are refused; the app always gets origin-form.

Requests go over raw sockets where the exact bytes matter (what `requests` would add
on its own would hide what the edge adds).
"""
from __future__ import annotations

import io
import re
import hashlib
import socket
import sqlite3
import time
from email.utils import parsedate_to_datetime

import pytest

from tests.edge import Edge, Route, Upstream, sha

IMAGE = b"\xff\xd8\xff-hygiene-image-" * 500
DB_BODY = b"\x89PNG-from-the-database-" * 300


# ----------------------------------------------------------------------------- raw HTTP/1.1
class Reply:
    """One response read off a socket: status, header fields as sent, body."""

    def __init__(self, status: int, fields: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.fields = fields
        self.body = body

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k.lower() == name.lower()]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.fields!r}, {self.body[:80]!r})"


def exchange(port: int, head: bytes, *, method_head: bool = False, timeout: float = 15.0) -> Reply:
    """Send one request head (ending in CRLF CRLF) on a new connection; read one response.
    The body is read by Content-Length or chunked framing, else to the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError(f"closed before a response head: {buf!r}")
            buf += chunk
        raw_head, _, rest = buf.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        fields = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        reply = Reply(status, fields, b"")
        if method_head or status in (204, 304) or 100 <= status < 200:
            return reply
        length = reply.get("content-length")
        if length is not None:
            while len(rest) < int(length):
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            reply.body = rest[: int(length)]
            return reply
        if "chunked" in (reply.get("transfer-encoding") or "").lower():
            body = b""
            while True:
                while b"\r\n" not in rest:
                    rest += s.recv(65536)
                size_line, _, rest = rest.partition(b"\r\n")
                n = int(size_line.split(b";")[0], 16)
                while len(rest) < n + 2:
                    rest += s.recv(65536)
                body += rest[:n]
                rest = rest[n + 2:]
                if n == 0:
                    break
            reply.body = body
            return reply
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        reply.body = rest
        return reply


def get(port: int, target: str, *fields: str, method: str = "GET") -> Reply:
    """A request with exactly these fields (plus Host), nothing else."""
    lines = [f"{method} {target} HTTP/1.1", "Host: shop.example", *fields, "Connection: close"]
    return exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), method_head=method == "HEAD")


def upstream_requests(up: Upstream, path: str) -> list[dict[str, str]]:
    """The header fields the app received for each request to `path`, names lower-cased."""
    return [{k.lower(): v for k, v in headers.items()} for _, p, headers in up.requests if p == path]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("hygiene")
    up = Upstream()
    db_url = f"sqlite:///{d / 'origin.db'}"
    from mediaedge.origins.db import DatabaseOrigin

    with DatabaseOrigin(db_url) as db:
        for path in ("/media/db/row.png", "/media/db/row304.png"):
            db.put(path, io.BytesIO(DB_BODY), size=len(DB_BODY), sha256=hashlib.sha256(DB_BODY).hexdigest(),
                   revision="r1", content_type="image/png")
    edge = Edge(str(d), upstream=up.url, origin_db=db_url).start()
    yield edge, up
    edge.stop()
    up.close()


# ----------------------------------------------------------------------------- A: no shared state upstream
def test_one_clients_cookie_never_reaches_the_app_on_anothers_request(env):
    """The victim's fetch makes the app set a session cookie; an attacker with no cookie then
    asks for a private file: the app must see no cookie on the attacker's request."""
    edge, up = env
    up.routes["/media/avatar.jpg"] = Route(body=IMAGE, headers={
        "Content-Type": "image/jpeg", "Set-Cookie": "session=VICTIM; Path=/", "Cache-Control": "max-age=300"})
    up.routes["/media/private/invoice.pdf"] = Route(
        body=b"%PDF-invoice for whoever the session says", reflect=("Cookie",),
        headers={"Content-Type": "application/pdf", "Cache-Control": "private"})

    victim = get(edge.port, "/media/avatar.jpg")
    assert victim.status == 200 and sha(victim.body) == sha(IMAGE)
    assert victim.get("set-cookie") == "session=VICTIM; Path=/"  # forwarded to its client, not kept

    attacker = get(edge.port, "/media/private/invoice.pdf")
    assert attacker.status == 200
    seen = upstream_requests(up, "/media/private/invoice.pdf")
    assert len(seen) == 1
    assert "cookie" not in seen[0], seen[0]
    assert b"VICTIM" not in attacker.body and attacker.body == b"%PDF-invoice for whoever the session says"
    assert all("VICTIM" not in v for _, v in attacker.fields)


def test_the_edge_adds_no_fields_of_its_own_upstream(env):
    """A client that sent only Host: the app receives only Host (no Accept, Accept-Encoding,
    User-Agent or Connection made up by the edge's HTTP client)."""
    edge, up = env
    up.routes["/media/bare.jpg"] = Route(body=IMAGE, headers={"Content-Type": "image/jpeg"})
    r = exchange(edge.port, b"GET /media/bare.jpg HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    assert r.status == 200 and sha(r.body) == sha(IMAGE)
    seen = upstream_requests(up, "/media/bare.jpg")
    assert len(seen) == 1
    assert sorted(seen[0]) == ["host"], seen[0]


def test_the_clients_own_fields_still_go_upstream(env):
    edge, up = env
    up.routes["/media/own.jpg"] = Route(body=IMAGE, headers={"Content-Type": "image/jpeg"})
    r = get(edge.port, "/media/own.jpg", "Accept: image/avif", "User-Agent: Browser/1.0", "Accept-Encoding: br")
    assert r.status == 200
    seen = upstream_requests(up, "/media/own.jpg")[0]
    assert (seen["accept"], seen["user-agent"], seen["accept-encoding"]) == ("image/avif", "Browser/1.0", "br")


def test_an_empty_accept_encoding_is_neither_a_value_nor_absent_for_vary(env):
    """RFC 9110 12.5.3: an empty Accept-Encoding asks for identity only; no field accepts
    anything. A Vary: Accept-Encoding response stored for `gzip` is served to neither; the
    one stored for the empty value is not served to a client that sent no field."""
    edge, up = env
    path = "/media/vary/enc.jpg"
    up.routes[path] = Route(body=IMAGE, reflect=("Accept-Encoding",), headers={
        "Content-Type": "image/jpeg", "Vary": "Accept-Encoding", "Cache-Control": "max-age=300"})

    def fetch(*fields: str) -> Reply:
        r = get(edge.port, path, *fields)
        assert r.status == 200, r
        return r

    gzip = fetch("Accept-Encoding: gzip")
    assert gzip.body == IMAGE + b"\nAccept-Encoding: gzip"
    assert up.hits[path] == 1

    empty = fetch("Accept-Encoding:")
    assert up.hits[path] == 2, "the gzip variant was served to a client that accepts no encoding"
    assert empty.body == IMAGE + b"\nAccept-Encoding: ", "the empty field did not reach the app as empty"
    assert upstream_requests(up, path)[-1].get("accept-encoding") == ""

    absent = fetch()
    assert up.hits[path] == 3, "the empty-Accept-Encoding variant was served to a client that sent none"
    assert absent.body == IMAGE
    assert "accept-encoding" not in upstream_requests(up, path)[-1]

    # each variant is now a hit for its own kind of client
    assert fetch("Accept-Encoding:").body == empty.body
    assert fetch().body == IMAGE
    assert fetch("Accept-Encoding: gzip").body == gzip.body
    assert up.hits[path] == 3


# ----------------------------------------------------------------------------- 9: odd inputs
BAD_VALUES = {"nul": b"a\x00b", "soh": b"a\x01b", "esc": b"\x1b[31m", "del": b"a\x7fb", "bare-cr": b"a\rb"}


@pytest.mark.parametrize("kind", list(BAD_VALUES))
@pytest.mark.parametrize("target", ["/api/echo", "/media/odd/field.jpg"])
def test_a_control_character_in_a_field_value_is_400_and_never_forwarded(env, kind, target):
    edge, up = env
    up.routes["/api/echo"] = Route(body=b"api")
    up.routes["/media/odd/field.jpg"] = Route(body=IMAGE, headers={"Content-Type": "image/jpeg"})
    before = len(up.requests)
    head = b"GET " + target.encode() + b" HTTP/1.1\r\nHost: shop.example\r\nX-Note: " + BAD_VALUES[kind] + \
        b"\r\nConnection: close\r\n\r\n"
    r = exchange(edge.port, head)
    assert r.status == 400, r
    assert b"\x00" not in r.body and b"Traceback" not in r.body
    assert len(up.requests) == before, f"forwarded: {up.requests[before:]}"


def test_a_control_character_in_a_post_field_is_400_and_never_forwarded(env):
    edge, up = env
    up.routes["/api/form"] = Route(body=b"posted")
    before = len(up.requests)
    r = exchange(edge.port, b"POST /api/form HTTP/1.1\r\nHost: shop.example\r\nX-Note: a\x00b\r\n"
                            b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
    assert r.status == 400 and len(up.requests) == before


@pytest.mark.parametrize("target", [b"/api/a\x01b", b"/api/a\x00b", b"/api/a\x7fb", b"/api/a?q=\x1b", b"/api/a\tb",
                                    b"/media/a\x01b.jpg"])
def test_a_control_character_in_the_request_target_is_400_and_never_forwarded(env, target):
    edge, up = env
    before = len(up.requests)
    r = exchange(edge.port, b"GET " + target + b" HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
    assert r.status == 400, r
    assert len(up.requests) == before, f"forwarded: {up.request_lines[before:]}"


def test_a_tab_in_a_field_value_is_allowed(env):
    edge, up = env
    up.routes["/api/tab"] = Route(body=b"tab", reflect=("X-Note",))
    r = exchange(edge.port, b"GET /api/tab HTTP/1.1\r\nHost: shop.example\r\nX-Note: a\tb\r\nConnection: close\r\n\r\n")
    assert r.status == 200 and r.body == b"tab\nX-Note: a\tb"


def test_an_absolute_form_target_reaches_the_app_in_origin_form_at_the_configured_upstream(env):
    """`GET http://other/x`: the app gets `GET /x` (apps build links from the target), and it
    is our configured upstream that gets it, not the host named in the target."""
    edge, up = env
    other = Upstream()
    try:
        other.routes["/api/links"] = Route(body=b"WRONG-HOST")
        up.routes["/api/links"] = up.routes["/api/links?page=2"] = Route(body=b"links", reflect=("Host",))
        before = len(up.request_lines)
        r = exchange(edge.port, f"GET http://127.0.0.1:{other.port}/api/links?page=2 HTTP/1.1\r\n"
                                f"Host: 127.0.0.1:{other.port}\r\nConnection: close\r\n\r\n".encode())
        assert r.status == 200 and r.body == f"links\nHost: 127.0.0.1:{up.port}".encode(), r
        assert up.request_lines[before:] == ["GET /api/links?page=2 HTTP/1.1"]
        assert other.requests == []

        r = exchange(edge.port, b"GET http://evil.example/api/links HTTP/1.1\r\nHost: evil.example\r\n"
                                b"Connection: close\r\n\r\n")
        assert r.status == 200 and r.body.startswith(b"links"), r
        assert up.request_lines[-1] == "GET /api/links HTTP/1.1"
    finally:
        other.close()


def test_an_absolute_form_post_is_forwarded_in_origin_form(env):
    edge, up = env
    up.routes["/api/order"] = Route(body=b"ordered")
    r = exchange(edge.port, b"POST http://evil.example/api/order HTTP/1.1\r\nHost: evil.example\r\n"
                            b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
    assert r.status == 200 and r.body == b"ordered"
    assert up.request_lines[-1] == "POST /api/order HTTP/1.1"


@pytest.mark.parametrize("size", [len(IMAGE), 600_000], ids=["small", "streamed"])
def test_an_absolute_form_media_request_is_served_from_the_configured_upstream(env, size):
    edge, up = env
    path = f"/media/abs/{size}.jpg"
    up.routes[path] = Route(size=size, headers={"Content-Type": "image/jpeg", "Cache-Control": "max-age=300"})
    from tests.edge import synthetic_sha

    for _ in range(2):  # miss, then hit
        r = exchange(edge.port, f"GET http://evil.example{path} HTTP/1.1\r\nHost: evil.example\r\n"
                                f"Connection: close\r\n\r\n".encode())
        assert r.status == 200 and sha(r.body) == synthetic_sha(size), r
    assert up.hits[path] == 1
    assert [line for line in up.request_lines if path in line] == [f"GET {path} HTTP/1.1"]


# ----------------------------------------------------------------------------- 4: Date, browser Cache-Control
IMF_FIXDATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                         r"\d{4} \d\d:\d\d:\d\d GMT$")


def assert_dated(r: Reply, *, within: float = 5.0) -> None:
    """Exactly one Date, an IMF-fixdate (RFC 9110 5.6.7) within `within` s of now."""
    dates = r.all("date")
    assert len(dates) == 1, r
    assert IMF_FIXDATE.match(dates[0]), dates[0]
    assert abs(parsedate_to_datetime(dates[0]).timestamp() - time.time()) <= within, dates[0]


def test_every_kind_of_media_response_carries_a_date(env):
    edge, up = env
    small, large = "/media/dated/small.jpg", "/media/dated/large.bin"
    up.routes[small] = Route(body=IMAGE, headers={"Content-Type": "image/jpeg", "ETag": '"s1"',
                                                  "Cache-Control": "max-age=300"})
    up.routes[large] = Route(size=600_000, headers={"Content-Type": "application/octet-stream",
                                                    "Cache-Control": "max-age=300"})
    kinds = {
        "miss": get(edge.port, small),
        "hit (memory)": get(edge.port, small),
        "HEAD hit": get(edge.port, small, method="HEAD"),
        "304": get(edge.port, small, 'If-None-Match: "s1"'),
        "206": get(edge.port, small, "Range: bytes=0-9"),
        "416": get(edge.port, small, "Range: bytes=999999-"),
        "streamed miss": get(edge.port, large),
        "streamed hit": get(edge.port, large),
        "streamed 206": get(edge.port, large, "Range: bytes=100-199"),
        "db miss": get(edge.port, "/media/db/row.png"),
        "db hit": get(edge.port, "/media/db/row.png"),
        "negative 404": get(edge.port, "/media/dated/nowhere.jpg"),
        "400 (bad media path)": get(edge.port, "/media/%2e%2e/secret.jpg"),
        "400 (control character)": exchange(edge.port, b"GET /media/x.jpg HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n"
                                                       b"Connection: close\r\n\r\n"),
    }
    expected = {"miss": 200, "hit (memory)": 200, "HEAD hit": 200, "304": 304, "206": 206, "416": 416,
                "streamed miss": 200, "streamed hit": 200, "streamed 206": 206, "db miss": 200, "db hit": 200,
                "negative 404": 404, "400 (bad media path)": 400, "400 (control character)": 400}
    for kind, r in kinds.items():
        assert r.status == expected[kind], (kind, r)
        assert_dated(r)
    assert kinds["hit (memory)"].get("cache-status").startswith("mediaedge; hit")
    assert kinds["streamed hit"].get("cache-status").startswith("mediaedge; hit")
    assert sha(kinds["db hit"].body) == sha(DB_BODY)


def test_a_hit_gets_the_current_date_not_the_stored_one(env):
    """Served from cache, the response is the edge's: Date is now and Age says how old the
    content is (a downstream cache computes the same age either way, RFC 9111 4.2.3)."""
    edge, up = env
    path = "/media/dated/old.jpg"
    up.routes[path] = Route(body=IMAGE, date=False, headers={
        "Date": "Sun, 06 Nov 1994 08:49:37 GMT", "Cache-Control": "max-age=1500000000", "Content-Type": "image/jpeg"})
    first = get(edge.port, path)
    assert first.all("date") == ["Sun, 06 Nov 1994 08:49:37 GMT"]  # passed on as the upstream sent it
    hit = get(edge.port, path)
    assert hit.get("cache-status").startswith("mediaedge; hit") and int(hit.get("age")) > 10**8
    assert_dated(hit)


def test_pass_through_keeps_the_upstreams_date_and_adds_one_when_it_sent_none(env):
    edge, up = env
    up.routes["/api/dated"] = Route(body=b"dated", date=False, headers={"Date": "Sun, 06 Nov 1994 08:49:37 GMT"})
    up.routes["/api/undated"] = Route(body=b"undated", date=False)
    r = get(edge.port, "/api/dated")
    assert r.status == 200 and r.all("date") == ["Sun, 06 Nov 1994 08:49:37 GMT"]
    r = get(edge.port, "/api/undated")
    assert r.status == 200 and r.body == b"undated"
    assert_dated(r)
    # an upstream media response without Date: the edge dates it too
    up.routes["/media/dated/undated.jpg"] = Route(body=IMAGE, date=False, headers={"Content-Type": "image/jpeg"})
    assert_dated(get(edge.port, "/media/dated/undated.jpg"))


def test_a_database_row_tells_browsers_no_cache_by_default(env):
    edge, up = env
    for _ in range(2):  # miss, then hit
        r = get(edge.port, "/media/db/row304.png")
        assert r.status == 200 and r.all("cache-control") == ["no-cache"], r
    r = get(edge.port, "/media/db/row304.png", f'If-None-Match: {r.get("etag")}')
    assert r.status == 304 and r.all("cache-control") == ["no-cache"], r  # RFC 9110 15.4.5
    up.routes["/media/nocc.jpg"] = Route(body=IMAGE, headers={"Content-Type": "image/jpeg"})
    for _ in range(2):
        assert get(edge.port, "/media/nocc.jpg").all("cache-control") == ["no-cache"]


def test_an_upstream_cache_control_is_kept(env):
    edge, up = env
    up.routes["/media/cc.jpg"] = Route(body=IMAGE, headers={"Content-Type": "image/jpeg",
                                                            "Cache-Control": "public, max-age=600"})
    for _ in range(2):
        r = get(edge.port, "/media/cc.jpg")
        assert r.all("cache-control") == ["public, max-age=600"], r


@pytest.fixture(scope="module")
def browser_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("hygiene-browser-ttl")
    up = Upstream()
    db_url = f"sqlite:///{d / 'origin.db'}"
    from mediaedge.origins.db import DatabaseOrigin

    with DatabaseOrigin(db_url) as db:
        db.put("/media/db/row.png", io.BytesIO(DB_BODY), size=len(DB_BODY),
               sha256=hashlib.sha256(DB_BODY).hexdigest(), revision="r1", content_type="image/png")
    edge = Edge(str(d), upstream=up.url, origin_db=db_url, args=["--browser-ttl", "60"]).start()
    yield edge, up
    edge.stop()
    up.close()


def test_browser_ttl_sets_max_age_for_what_the_origin_left_open(browser_env):
    edge, up = browser_env
    up.routes["/media/cc.jpg"] = Route(body=IMAGE, headers={"Content-Type": "image/jpeg",
                                                            "Cache-Control": "max-age=5"})
    up.routes["/media/nocc.jpg"] = Route(body=IMAGE, headers={"Content-Type": "image/jpeg"})
    for _ in range(2):  # miss, then hit
        r = get(edge.port, "/media/db/row.png")
        assert r.status == 200 and sha(r.body) == sha(DB_BODY) and r.all("cache-control") == ["max-age=60"], r
        assert get(edge.port, "/media/nocc.jpg").all("cache-control") == ["max-age=60"]
        assert get(edge.port, "/media/cc.jpg").all("cache-control") == ["max-age=5"]
    # only the client's view: the edge still keeps the row for --default-ttl, not 60 s
    assert up.hits["/media/nocc.jpg"] == 1


@pytest.fixture(scope="module")
def dead_env(tmp_path_factory):
    """An edge whose upstream refuses connections, and whose database origin is broken."""
    d = tmp_path_factory.mktemp("hygiene-dead")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: nothing listens there
    edge = Edge(str(d), upstream=f"http://127.0.0.1:{dead}").start()
    conn = sqlite3.connect(d / "origin.db")  # not a database any more: every lookup fails
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.close()
    with open(d / "origin.db", "r+b") as f:
        size = len(f.read())
        f.seek(0)
        f.write(b"\xa5" * size)
    yield edge
    edge.stop()


def test_error_answers_carry_a_date(dead_env):
    edge = dead_env
    media = get(edge.port, "/media/gone.jpg")  # the engine's 502: upstream refused, database failing
    assert media.status == 502 and media.body.endswith(b"\n"), media
    assert_dated(media)
    passed = get(edge.port, "/api/anything")  # mitmproxy's own 502 for a passed-through request
    assert passed.status == 502, passed
    assert_dated(passed)
