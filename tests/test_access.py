"""mediaedge.access: the memory of the app's answers (bounds, expiry, invalidation) and the
auth client (one shared ask, no state between clients); mediaedge.policy.access's table."""
from __future__ import annotations

import asyncio
import gc
import http.server
import threading
import tracemalloc

import pytest

from mediaedge.access import MAX_BYTES, Access, AuthClient, AuthDecisions
from mediaedge.headers import Headers
from mediaedge.policy.access import AuthAnswer, Gates, auth_answer, auth_failed

YES = auth_answer(200)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cookie(value: str) -> Headers:
    return Headers([("Cookie", value)])


# --- mediaedge.policy.access ---------------------------------------------------------------


@pytest.mark.parametrize("status,allow,sent", [
    (200, True, 200), (204, True, 200), (299, True, 200),
    (401, False, 401), (403, False, 403),
    (301, False, 503), (302, False, 503), (304, False, 503), (307, False, 503),
    (400, False, 503), (404, False, 503), (418, False, 503), (500, False, 503), (502, False, 503),
    (100, False, 503),
])
def test_auth_answer(status: int, allow: bool, sent: int) -> None:
    answer = auth_answer(status, 'Bearer realm="x"')
    assert (answer.allow, answer.status) == (allow, sent)
    assert answer.refused == (sent in (401, 403))
    assert answer.www_authenticate == ('Bearer realm="x"' if status == 401 else None)


def test_gates() -> None:
    assert not Gates().any and not Gates().needs_auth("/media/x") and not Gates().needs_signature("/media/x")
    g = Gates(("/media/p/",), ("/media/m/", "/media/n/"))
    assert g.any and g.needs_signature("/media/p/a") and not g.needs_signature("/media/pa")
    assert g.needs_auth("/media/n/a") and not g.needs_auth("/media/p/a")


# --- AuthDecisions ---------------------------------------------------------------------


def test_key_names_both_fields_and_the_target_without_keeping_them() -> None:
    d = AuthDecisions(60, clock=Clock())
    keys = {
        d.key(cookie("a=1"), "/m/x"),
        d.key(cookie("a=1"), "/m/y"),
        d.key(cookie("a=2"), "/m/x"),
        d.key(Headers([("Authorization", "a=1")]), "/m/x"),  # the same value in the other field
        d.key(Headers([("Cookie", "a=1"), ("Cookie", "b=2")]), "/m/x"),
        d.key(Headers([("Cookie", "a=1; b=2")]), "/m/x"),
        d.key(Headers(), "/m/x"),
    }
    assert len(keys) == 7 and all(len(k) == 16 for k in keys)
    assert d.key(cookie("a=1"), "/m/x") == d.key(Headers([("cookie", "a=1"), ("Accept", "*")]), "/m/x")
    assert AuthDecisions(60, clock=Clock()).key(cookie("a=1"), "/m/x") != d.key(cookie("a=1"), "/m/x")  # salted


def test_expiry_lru_and_bounds() -> None:
    clock = Clock()
    d = AuthDecisions(60, max_entries=3, clock=clock)
    for i in range(3):
        d.put(bytes([i]) * 16, YES, f"/m/{i}")
    assert d.get(b"\x00" * 16) is YES  # now the most recent
    d.put(b"\x03" * 16, YES, "/m/3")
    assert len(d) == 3 and d.get(b"\x01" * 16) is None and d.get(b"\x00" * 16) is YES
    clock.now += 59.9
    assert d.get(b"\x00" * 16) is YES
    clock.now += 0.1
    assert d.get(b"\x00" * 16) is None
    small = AuthDecisions(60, max_bytes=2000, clock=clock)
    for i in range(100):
        small.put(i.to_bytes(16, "big"), YES, f"/m/{i}")
    assert 0 < len(small) < 5 and small.bytes <= 2000
    off = AuthDecisions(0, clock=clock)
    off.put(b"k" * 16, YES, "/m/x")
    assert len(off) == 0


def test_invalidation_drops_targets_and_prefixes() -> None:
    d = AuthDecisions(60, clock=Clock())
    for i, target in enumerate(["/m/a", "/m/a", "/m/b", "/n/c"]):
        d.put(bytes([i]) * 16, YES, target)
    generation = d.generation
    d.drop(["/m/a"])
    assert len(d) == 2 and d.get(b"\x00" * 16) is None and d.generation > generation
    d.drop_prefix("/m/")
    assert len(d) == 1 and d.get(b"\x03" * 16) is YES
    d.clear()
    assert len(d) == 0 and d.bytes == 0


def test_memory_stays_bounded_under_100k_distinct_cookies() -> None:
    """A flood of made-up cookies costs a fixed amount of memory (~31 MiB measured)."""
    d = AuthDecisions(60, clock=Clock())
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        used = []
        for round_ in range(3):
            for i in range(round_ * 100_000, (round_ + 1) * 100_000):
                d.put(d.key(cookie(f"session={i:032x}"), "/media/m/video.mp4"), YES, "/media/m/video.mp4")
            used.append(tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert len(d) == 100_000 and d.bytes <= MAX_BYTES
    assert used[0] < 40 << 20, used
    assert used[2] < used[1] * 1.05, used  # 300,000 cookies cost what 200,000 did


# --- Access and AuthClient ---------------------------------------------------------------


class FakeClient:
    def __init__(self, answer: AuthAnswer) -> None:
        self.answer = answer
        self.calls = 0
        self.gate = asyncio.Event()

    async def ask(self, headers: Headers, raw_target: str, method: str) -> AuthAnswer:
        self.calls += 1
        await self.gate.wait()
        return self.answer

    async def aclose(self) -> None:
        pass


def test_concurrent_asks_share_one_request_and_failures_are_not_remembered() -> None:
    async def main() -> None:
        client = FakeClient(YES)
        access = Access(client, AuthDecisions(60, clock=Clock()))  # type: ignore[arg-type]
        tasks = [asyncio.create_task(access.decide(b"k" * 16, Headers(), "/m/x", "GET", "/m/x")) for _ in range(20)]
        await asyncio.sleep(0)
        client.gate.set()
        assert all(a is YES for a in await asyncio.gather(*tasks))
        assert client.calls == 1 and access.remembered(b"k" * 16) is YES
        client.answer, client.calls = auth_failed("down"), 0
        for _ in range(2):
            assert (await access.decide(b"f" * 16, Headers(), "/m/y", "GET", "/m/y")).status == 503
        assert client.calls == 2 and access.remembered(b"f" * 16) is None

    asyncio.run(main())


def test_an_answer_asked_before_an_invalidation_is_not_remembered() -> None:
    async def main() -> None:
        client = FakeClient(YES)
        access = Access(client, AuthDecisions(60, clock=Clock()))  # type: ignore[arg-type]
        task = asyncio.create_task(access.decide(b"k" * 16, Headers(), "/m/x", "GET", "/m/x"))
        await asyncio.sleep(0)
        access.decisions.drop(["/m/x"])
        client.gate.set()
        assert (await task) is YES  # this request was allowed...
        assert access.remembered(b"k" * 16) is None  # ...but the next one asks again

    asyncio.run(main())


def test_auth_client_keeps_no_cookie_and_adds_no_field() -> None:
    seen: list[dict[str, str]] = []

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Set-Cookie", "stolen=1; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def main() -> None:
        client = AuthClient(f"http://127.0.0.1:{server.server_address[1]}/auth", timeout=2)
        try:
            assert (await client.ask(cookie("s=1"), "/m/a?x", "GET")).allow
            assert (await client.ask(Headers([("User-Agent", "x")]), "/m/b", "HEAD")).allow
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        server.shutdown()
        server.server_close()
    assert [{k: v for k, v in s.items() if k != "host"} for s in seen] == [
        {"cookie": "s=1", "x-original-uri": "/m/a?x", "x-original-method": "GET"},
        {"x-original-uri": "/m/b", "x-original-method": "HEAD"},
    ]
