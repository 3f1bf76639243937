"""Private media end to end (docs/private-media.md): signed URLs and app-decided access
through a real `mediaedge serve`, a real upstream and a real auth endpoint on loopback."""
from __future__ import annotations

import http.client
import http.server
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from edge import Edge, Route, Upstream, wait_until
from mediaedge.signing import sign_target

DENIED = "mediaedge; fwd=bypass; detail=denied"
BODY = bytes(range(256)) * 40  # 10 KiB
PUBLIC = {"Content-Type": "image/jpeg", "Cache-Control": "public, max-age=600", "ETag": '"v1"'}


class AuthServer:
    """The app's auth endpoint: `decide(headers)` -> (status, headers, body, delay); counts calls."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.decide: Callable[[dict[str, str]], tuple[int, dict[str, str], bytes, float]] = self.by_cookie
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    outer.calls.append({"path": self.path, **headers})
                status, extra, body, delay = outer.decide(headers)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    # the edge gave up waiting (the hang case): nothing to answer. Without this,
                    # socketserver prints a traceback to stderr from a daemon thread, seconds
                    # later, into whichever test captures stderr then (test_publishcli did).
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/auth"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def by_cookie(headers: dict[str, str]) -> tuple[int, dict[str, str], bytes, float]:
        cookie = headers.get("cookie", "")
        if "session=ok" in cookie or headers.get("authorization") == "Bearer good":
            return 200, {}, b"", 0.0
        if not cookie and "authorization" not in headers:
            return 401, {"WWW-Authenticate": 'Bearer realm="media"'}, b"", 0.0
        return 403, {}, b"", 0.0

    def count(self, uri: str | None = None) -> int:
        with self.lock:
            return sum(1 for c in self.calls if uri is None or c.get("x-original-uri") == uri)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    workdir = str(tmp_path_factory.mktemp("private"))
    up, auth = Upstream(), AuthServer()
    access_log = os.path.join(workdir, "access.log")
    edge = Edge(workdir, upstream=up.url, args=[
        "--signed-prefix", "/media/p/", "--signing-key", "k1:secret-one", "--signing-key", "secret-zero",
        "--auth-url", auth.url, "--auth-prefix", "/media/m/", "--upstream-timeout", "3",
        "--allow-purge-from", "127.0.0.1/32", "--access-log", access_log,
    ]).start()
    edge.access_log = access_log  # type: ignore[attr-defined]
    yield edge, up, auth
    edge.stop()
    up.close()
    auth.close()


def raw_request(edge: Edge, method: str, target: str, headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
    """The target sent byte for byte (requests would unquote %65 to e before sending)."""
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        conn.request(method, target, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def signed(target: str, *, ttl: int = 600, kid: str | None = "k1", secret: str = "secret-one") -> str:
    return sign_target(target, secret, int(time.time()) + ttl, kid)


def denied_count(edge: Edge) -> tuple[int, int]:
    s = edge.stats()
    return s["denied"], s["errors"]


# --- signed URLs -----------------------------------------------------------------------


def test_many_signed_urls_are_one_entry_and_one_fetch(env) -> None:
    edge, up, _ = env
    up.routes["/media/p/one.jpg"] = Route(body=BODY, headers=PUBLIC)
    entries = edge.stats()["entries"]
    # rotation: the unnamed key, the named one by kid, the named one without kid
    variants = [("secret-zero", None), ("secret-one", "k1"), ("secret-one", None)]
    urls = [signed("/media/p/one.jpg", ttl=600 + i, secret=variants[i % 3][0], kid=variants[i % 3][1])
            for i in range(1000)]
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(lambda u: edge.get(u), urls[:40]))  # concurrent: coalesced
    with requests.Session() as s:
        rest = [s.get(edge.url + u, timeout=10) for u in urls[40:]]
    for r in first + rest:
        assert (r.status_code, r.content) == (200, BODY)
        assert r.headers["Cache-Control"] == "private"
    assert up.hits["/media/p/one.jpg"] == 1  # exp/kid/sig never reach the app
    assert [p for p in up.hits if p.startswith("/media/p/one")] == ["/media/p/one.jpg"]
    assert edge.stats()["entries"] == entries + 1


def test_signature_keeps_other_parameters_and_strips_cookies(env) -> None:
    edge, up, _ = env
    up.routes["/media/p/q.jpg?w=100&h=5"] = Route(body=b"resized", headers=PUBLIC)
    r = edge.get(signed("/media/p/q.jpg?w=100&h=5"), headers={"Cookie": "session=x", "Authorization": "Basic eA=="})
    assert (r.status_code, r.content) == (200, b"resized")
    assert up.hits["/media/p/q.jpg?w=100&h=5"] == 1
    sent = [h for m, p, h in up.requests if p == "/media/p/q.jpg?w=100&h=5"][0]
    assert "Cookie" not in sent and "Authorization" not in sent


def _refusals(target: str) -> list[str]:
    good = signed(target)
    sig = good.rsplit("sig=", 1)[1]
    exp = re.search(r"exp=(\d+)", good).group(1)  # type: ignore[union-attr]
    return [
        target,
        good.replace("sig=" + sig, "sig="),
        good.replace("sig=" + sig, "sig=" + sig[::-1]),
        good + "&sig=" + sig,
        good.replace("exp=", f"exp={exp}&exp="),
        good.replace("exp=", "%65xp="),
        good.replace("kid=k1", "kid=nope"),
        good.replace("exp=" + exp, "exp=" + "9" * 300),
        good.replace("exp=" + exp, "exp=-5"),
        good.replace("exp=" + exp, f"exp={int(exp) + 1}"),
        signed(target, secret="another-secret", kid=None),
        good.replace(target, target.replace(".jpg", ".png")),
    ] + [good.replace("sig=" + sig, "sig=" + "A" * n) for n in (1, 42, 44, 64, 2000)]


def test_refusals_are_403_and_reach_no_origin(env) -> None:
    edge, up, _ = env
    up.routes["/media/p/secret.jpg"] = Route(body=b"top secret", headers=PUBLIC)
    up.routes["/media/p/secret.png"] = Route(body=b"top secret", headers=PUBLIC)
    before = edge.stats()
    urls = _refusals("/media/p/secret.jpg")
    for url in urls:
        for method in ("GET", "HEAD"):
            status, headers, body = raw_request(edge, method, url)
            assert status == 403, url
            assert headers["cache-status"] == DENIED
            assert body == (b"bad signature\n" if method == "GET" else b""), url
    expired = signed("/media/p/secret.jpg", ttl=-10)
    r = edge.get(expired)
    assert (r.status_code, r.content, r.headers["Cache-Status"]) == (403, b"expired\n", DENIED)
    assert up.hits["/media/p/secret.jpg"] == up.hits["/media/p/secret.png"] == 0
    after = edge.stats()
    assert after["denied"] - before["denied"] == 2 * len(urls) + 1
    assert after["errors"] - before["errors"] == 2 * len(urls) + 1
    assert after["denied_by_reason"]["expired"] - before["denied_by_reason"]["expired"] == 1
    metrics = requests.get(edge.admin + "/metrics", timeout=5).text
    assert re.search(r'^mediaedge_denied_total\{reason="expired"\} [1-9]', metrics, re.M)
    assert re.search(r'^mediaedge_denied_total\{reason="signature"\} [1-9]', metrics, re.M)
    log = wait_until(lambda: "denied=expired" in open(edge.access_log).read() and open(edge.access_log).read(),
                     what="the refusal in the access log")
    assert re.search(r'"GET /media/p/secret.jpg\?exp=\d+&kid=k1&sig=\S+ HTTP/1.1" 403 8 .* denied=expired', log)
    # the valid URL is still served afterwards
    r = edge.get(signed("/media/p/secret.jpg"))
    assert (r.status_code, r.content) == (200, b"top secret")


@pytest.mark.parametrize("target,body", [
    ("/MEDIA/P/secret.jpg", b"bad signature\n"),  # a case-insensitive app would serve it
    ("/Media/p/secret.jpg", b"bad signature\n"),
    ("/media/P/secret.jpg", b"bad signature\n"),  # media, but not under the prefix as written
    ("/media/%2570/secret.jpg", b"bad signature\n"),  # an app decoding twice reads /media/p/
    ("/media/%EF%BD%90/secret.jpg", b"bad signature\n"),  # fullwidth p, NFKC
    ("/media/p;x=1/secret.jpg", b"bad signature\n"),
    ("/MEDIA/M/secret.jpg", b"forbidden\n"),
    ("/media/%256d/secret.jpg", b"forbidden\n"),
])
def test_private_paths_in_disguise_are_refused(env, target: str, body: bytes) -> None:
    edge, up, auth = env
    up.routes[target] = Route(body=b"leaked", headers=PUBLIC)
    calls = auth.count()
    for method in ("GET", "HEAD"):
        status, headers, got = raw_request(edge, method, target, {"Cookie": "session=ok"})
        assert (status, headers["cache-status"]) == (403, DENIED)
        assert got == (body if method == "GET" else b"")
    assert up.hits[target] == 0 and auth.count() == calls
    assert raw_request(edge, "POST", target)[0] == 200  # other methods are the app's, forwarded as before
    assert up.hits[target] == 1


def test_range_conditionals_and_purge_under_a_signed_prefix(env) -> None:
    edge, up, _ = env
    up.routes["/media/p/r.jpg"] = Route(body=BODY, headers=PUBLIC)
    r = edge.get(signed("/media/p/r.jpg"), headers={"Range": "bytes=10-19"})
    assert (r.status_code, r.content, r.headers["Cache-Control"]) == (206, BODY[10:20], "private")
    r = edge.get(signed("/media/p/r.jpg"), headers={"Range": "bytes=100-"})
    assert (r.status_code, r.content) == (206, BODY[100:])
    r = edge.get(signed("/media/p/r.jpg"), headers={"If-None-Match": '"v1"'})
    assert r.status_code == 304 and r.headers["Cache-Control"] == "private"
    assert up.hits["/media/p/r.jpg"] == 1
    assert requests.request("PURGE", edge.url + "/media/p/r.jpg", timeout=5).status_code == 200
    r = edge.get(signed("/media/p/r.jpg"))
    assert (r.status_code, r.content) == (200, BODY)
    assert up.hits["/media/p/r.jpg"] == 2


# --- app-decided access ----------------------------------------------------------------


def test_ten_members_cost_ten_auth_answers_and_one_fetch(env) -> None:
    edge, up, auth = env
    up.routes["/media/m/video.mp4"] = Route(body=BODY, headers={"Content-Type": "video/mp4",
                                                                "Cache-Control": "public, max-age=600"})
    calls = auth.count()

    def member(i: int) -> list[requests.Response]:
        with requests.Session() as s:
            return [s.get(edge.url + "/media/m/video.mp4", headers={"Cookie": f"session=ok; user={i}"}, timeout=10)
                    for _ in range(10)]

    with ThreadPoolExecutor(10) as pool:
        responses = [r for rs in pool.map(member, range(10)) for r in rs]
    assert len(responses) == 100
    for r in responses:
        assert (r.status_code, r.content, r.headers["Cache-Control"]) == (200, BODY, "private")
    assert auth.count() - calls == 10
    assert up.hits["/media/m/video.mp4"] == 1
    sent = [h for m, p, h in up.requests if p == "/media/m/video.mp4"][0]
    assert "Cookie" not in sent and "Authorization" not in sent
    ask = [c for c in auth.calls if c.get("x-original-uri") == "/media/m/video.mp4"][0]
    assert set(ask) == {"path", "host", "cookie", "x-original-uri", "x-original-method"}
    assert ask["path"] == "/auth" and ask["x-original-method"] == "GET"
    assert edge.stats()["auth_remembered"]["answers"] >= 10  # extra in /stats: the memory's size


def test_range_and_conditionals_under_an_auth_prefix(env) -> None:
    edge, up, auth = env
    up.routes["/media/m/r.mp4"] = Route(body=BODY, headers=PUBLIC)
    member = {"Cookie": "session=ok; u=range"}
    r = edge.get("/media/m/r.mp4", headers={**member, "Range": "bytes=5-9"})
    assert (r.status_code, r.content, r.headers["Cache-Control"]) == (206, BODY[5:10], "private")
    r = edge.get("/media/m/r.mp4", headers={**member, "If-None-Match": '"v1"'})
    assert (r.status_code, r.headers["Cache-Control"]) == (304, "private")
    r = edge.get("/media/m/r.mp4", headers={"Cookie": "session=bad", "Range": "bytes=5-9"})
    assert (r.status_code, r.headers["Cache-Status"]) == (403, DENIED) and BODY[5:10] not in r.content
    assert up.hits["/media/m/r.mp4"] == 1 and auth.count("/media/m/r.mp4") == 2


def test_auth_fields_sent_exactly(env) -> None:
    edge, up, auth = env
    up.routes["/media/m/f.jpg?a=%2F&b"] = Route(body=b"f", headers=PUBLIC)
    r = edge.get("/media/m/f.jpg?a=%2F&b", headers={"Authorization": "Bearer good", "Cookie": "c=1",
                                                    "User-Agent": "ua", "X-Secret": "no"})
    assert (r.status_code, r.content) == (200, b"f")
    ask = [c for c in auth.calls if c.get("x-original-uri") == "/media/m/f.jpg?a=%2F&b"][-1]
    assert {k: v for k, v in ask.items() if k != "host"} == {
        "path": "/auth", "authorization": "Bearer good", "cookie": "c=1",
        "x-original-uri": "/media/m/f.jpg?a=%2F&b", "x-original-method": "GET"}
    r = requests.head(edge.url + "/media/m/f.jpg?a=%2F&b", headers={"Authorization": "Bearer good", "Cookie": "c=2"},
                      timeout=10)
    assert r.status_code == 200
    assert [c for c in auth.calls if c.get("cookie") == "c=2"][-1]["x-original-method"] == "HEAD"


def test_app_refusals_are_remembered_and_reach_no_origin(env) -> None:
    edge, up, auth = env
    up.routes["/media/m/no.jpg"] = Route(body=b"members only", headers=PUBLIC)
    before, calls = edge.stats(), auth.count("/media/m/no.jpg")
    for _ in range(3):
        r = edge.get("/media/m/no.jpg")
        assert (r.status_code, r.headers["Cache-Status"]) == (401, DENIED)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="media"'
        assert b"members only" not in r.content
        r = edge.get("/media/m/no.jpg", headers={"Cookie": "session=bad"})
        assert (r.status_code, r.headers["Cache-Status"]) == (403, DENIED)
    assert auth.count("/media/m/no.jpg") - calls == 2  # one answer each, remembered
    assert up.hits["/media/m/no.jpg"] == 0
    after = edge.stats()
    assert after["denied"] - before["denied"] == 6
    assert after["denied_by_reason"]["auth"] - before["denied_by_reason"]["auth"] == 6
    wait_until(lambda: "denied=auth" in open(edge.access_log).read(), what="auth refusal logged")


@pytest.mark.parametrize("behaviour", ["hang", "redirect", "error", "teapot"])
def test_auth_failures_fail_closed(env, behaviour: str) -> None:
    edge, up, auth = env
    path = f"/media/m/closed-{behaviour}.jpg"
    up.routes[path] = Route(body=b"members only", headers=PUBLIC)
    answers = {"hang": (200, {}, b"", 8.0), "redirect": (302, {"Location": "/login"}, b"", 0.0),
               "error": (500, {}, b"oops", 0.0), "teapot": (418, {}, b"", 0.0)}
    auth.decide = lambda headers: answers[behaviour]
    try:
        before = edge.stats()
        started = time.monotonic()
        r = edge.get(path, headers={"Cookie": "session=ok"})
        took = time.monotonic() - started
        assert r.status_code == 503 and b"members only" not in r.content
        assert took < 5  # --upstream-timeout 3 (the app hangs 8 s): the timeout, not the app, ends it
        after = edge.stats()
        assert after["errors"] - before["errors"] == 1 and after["denied"] == before["denied"]
        assert up.hits[path] == 0
        calls = auth.count(path)
        edge.get(path, headers={"Cookie": "session=ok"})
        assert auth.count(path) == calls + 1  # a failure is not remembered
    finally:
        auth.decide = auth.by_cookie


def test_auth_200_with_a_body_serves_the_media(env) -> None:
    edge, up, auth = env
    up.routes["/media/m/body.jpg"] = Route(body=b"the media", headers=PUBLIC)
    auth.decide = lambda headers: (200, {"Content-Type": "text/html"}, b"<html>welcome</html>" * 100, 0.0)
    try:
        r = edge.get("/media/m/body.jpg", headers={"Cookie": "whatever"})
        assert (r.status_code, r.content) == (200, b"the media")
    finally:
        auth.decide = auth.by_cookie


def test_invalidation_forgets_the_apps_answers(env) -> None:
    edge, up, auth = env
    up.routes["/media/m/rev.jpg"] = Route(body=b"v1", headers=PUBLIC)
    cookie = {"Cookie": "session=ok; u=rev"}
    assert edge.get("/media/m/rev.jpg", headers=cookie).status_code == 200
    assert edge.get("/media/m/rev.jpg", headers=cookie).status_code == 200
    assert auth.count("/media/m/rev.jpg") == 1
    auth.decide = lambda headers: (403, {}, b"", 0.0)  # access revoked in the app...
    try:
        assert edge.get("/media/m/rev.jpg", headers=cookie).status_code == 200  # ...remembered yes
        assert requests.request("PURGE", edge.url + "/media/m/rev.jpg", timeout=5).status_code == 200
        r = edge.get("/media/m/rev.jpg", headers=cookie)
        assert (r.status_code, r.headers["Cache-Status"]) == (403, DENIED)
        assert auth.count("/media/m/rev.jpg") == 2
    finally:
        auth.decide = auth.by_cookie


def test_remembered_answers_expire(tmp_path) -> None:
    up, auth = Upstream(), AuthServer()
    up.routes["/media/m/t.jpg"] = Route(body=b"t", headers=PUBLIC)
    edge = Edge(str(tmp_path), upstream=up.url, args=["--auth-url", auth.url, "--auth-prefix", "/media/m/",
                                                      "--auth-ttl", "1"]).start()
    try:
        assert edge.get("/media/m/t.jpg", headers={"Cookie": "session=ok"}).status_code == 200
        assert auth.count() == 1

        def asked_again() -> bool:
            edge.get("/media/m/t.jpg", headers={"Cookie": "session=ok"})
            return auth.count() >= 2

        wait_until(asked_again, timeout=5, interval=0.2, what="a second ask after --auth-ttl")
        assert up.hits["/media/m/t.jpg"] == 1
    finally:
        edge.stop()
        up.close()
        auth.close()


def test_public_media_is_untouched(env) -> None:
    edge, up, auth = env
    up.routes["/media/pub.jpg?exp=1&sig=x"] = Route(body=b"pub", headers=PUBLIC)  # forwarded as is
    calls = auth.count()
    r = edge.get("/media/pub.jpg?exp=1&sig=x")
    assert (r.status_code, r.content, r.headers["Cache-Control"]) == (200, b"pub", "public, max-age=600")
    assert auth.count() == calls
