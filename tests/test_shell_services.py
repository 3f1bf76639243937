"""The core services the mitmproxy shell calls (mediaedge.unsafe, .purge, .record,
.privatemedia), in process: the flows around them are covered end to end in
test_e2e_rfc9111.py, test_e2e_purge.py, test_accesslog.py / test_mitmdump_addon.py and
test_private_media.py."""
from __future__ import annotations

import asyncio
import json

from mediaedge.access import Access, AuthDecisions
from mediaedge.accesslog import AccessLog
from mediaedge.config import load_settings
from mediaedge.engine import Reply
from mediaedge.headers import Headers
from mediaedge.policy.access import AuthAnswer, Gates, auth_answer
from mediaedge.policy.purge import ALLOW
from mediaedge.policy.signing import SigningKey, sign_target
from mediaedge.privatemedia import Admitted, Asking, PrivateMedia, Refusal, make_private
from mediaedge.purge import answer_purge
from mediaedge.record import access_line, record, sent_field
from mediaedge.stats import Stats, StatsSink
from mediaedge.unsafe import invalidate_after, invalidates, same_origin_locations

PREFIXES = ("/media/",)


class FakeInvalidator:
    """Records what it is asked to invalidate; `down` makes the log unavailable."""

    def __init__(self, down: bool = False) -> None:
        self.applied: list[str | None] = []
        self.accepted: list[str | None] = []
        self.down = down

    async def apply(self, event) -> None:
        self.applied.append(event.path)

    async def accept(self, events, *, signature=None):
        if self.down:
            raise OSError("state database unreachable")
        self.accepted += [e.path for e in events]
        return len(events), 41 + len(self.accepted), False


def test_unsafe_methods_invalidate_media_targets_only():
    assert invalidates("POST", "/media/a.jpg", PREFIXES)
    assert invalidates("PROPFIND", "/media/a.jpg", PREFIXES)  # unknown safety counts as unsafe
    assert not invalidates("GET", "/media/a.jpg", PREFIXES)
    assert not invalidates("OPTIONS", "/media/a.jpg", PREFIXES)
    assert not invalidates("POST", "/api/x", PREFIXES)
    assert not invalidates("POST", None, PREFIXES)


def test_same_origin_locations_keep_the_targets_host_and_media_only():
    fields = {"location": "http://App:8000/media/b.jpg?v=2", "content-location": "http://evil.example/media/c.jpg"}
    assert same_origin_locations(fields.get, ("app:8000",), PREFIXES) == ["/media/b.jpg?v=2"]
    # reverse mode: the Host the client sent, or the upstream's the app echoes
    assert same_origin_locations(fields.get, ("edge.example", "app:8000"), PREFIXES) == ["/media/b.jpg?v=2"]
    assert same_origin_locations({"location": "http://edge.example/media/e.jpg"}.get, ("edge.example", "app:8000"),
                                 PREFIXES) == ["/media/e.jpg"]
    assert same_origin_locations(fields.get, ("edge.example", ""), PREFIXES) == []
    assert same_origin_locations({"location": "/media/d.jpg"}.get, ("app",), PREFIXES) == ["/media/d.jpg"]
    assert same_origin_locations({"location": "/api/d"}.get, ("app",), PREFIXES) == []
    assert same_origin_locations({}.get, ("app",), PREFIXES) == []


def test_only_a_non_error_status_invalidates():
    inv = FakeInvalidator()
    fields = {"location": "/media/new.jpg"}.get
    assert asyncio.run(invalidate_after(inv, "/media/a.jpg", 500, fields, ("app",), PREFIXES)) == []
    assert asyncio.run(invalidate_after(inv, "/media/a.jpg", 404, fields, ("app",), PREFIXES)) == []
    assert inv.applied == []
    assert asyncio.run(invalidate_after(inv, "/media/a.jpg", 303, fields, ("app",), PREFIXES)) == [
        "/media/a.jpg", "/media/new.jpg"]
    assert inv.applied == ["/media/a.jpg", "/media/new.jpg"]


def test_purge_answers():
    off = load_settings({"upstream": "http://127.0.0.1:9"}, {}, config_path=None)
    on = load_settings({"upstream": "http://127.0.0.1:9", "allow_purge_from": ["127.0.0.1"]}, {}, config_path=None)
    inv = FakeInvalidator()
    answer = asyncio.run(answer_purge("/media/a.jpg", "127.0.0.1", off, inv))
    assert (answer.status, answer.allow) == (405, ALLOW)
    assert asyncio.run(answer_purge("/media/a.jpg", "10.0.0.1", on, inv)).status == 403
    assert asyncio.run(answer_purge("/api/x", "127.0.0.1", on, inv)).status == 404
    assert inv.accepted == []
    assert asyncio.run(answer_purge("/media//a.jpg", "127.0.0.1", on, inv)).status == 400  # refused target
    ok = asyncio.run(answer_purge("/media/a.jpg", "127.0.0.1", on, inv))
    assert ok.status == 200 and ok.content_type == "application/json"
    assert json.loads(ok.body) == {"accepted": 1, "seq": 42} and inv.accepted == ["/media/a.jpg"]
    down = asyncio.run(answer_purge("/media/a.jpg", "127.0.0.1", on, FakeInvalidator(down=True)))
    assert down.status == 503 and down.body.endswith("\n")


class View:
    def __init__(self, answer: dict[str, str] | None = None) -> None:
        self.answer = answer or {}

    def client(self) -> str:
        return "203.0.113.7"

    def method(self) -> str:
        return "GET"

    def request_field(self, name: str) -> str | None:
        return {"user-agent": "curl/8.5"}.get(name)

    def answer_field(self, name: str) -> str | None:
        return self.answer.get(name.lower())


def test_a_reply_is_counted_and_logged_as_sent(tmp_path):
    stats = Stats()
    sink: StatsSink = stats  # the concrete counters satisfy the protocol
    log_path = tmp_path / "access.log"
    access = AccessLog(str(log_path), "json")
    hot = Reply(200, Headers(), result="hit", source="cache", target="/media/a.jpg",
                wire=[(b"Cache-Status", b"mediaedge; hit"), (b"X-Media-Revision", b"r1")])
    record(sink, access, "X-Media-Revision", hot, 5, 0.001, View())
    refused = Reply(403, Headers(), result="error", source=None, target="/private/x")
    record(sink, access, "X-Media-Revision", refused, 14, 0.001, View({"cache-status": "mediaedge; fwd=bypass"}),
           denied="signature")
    access.close()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(line["status"], line["cache_status"], line["revision"]) for line in lines] == [
        (200, "mediaedge; hit", "r1"), (403, "mediaedge; fwd=bypass", None)]
    assert lines[1]["denied"] == "signature"
    assert stats.cumulative()[0]["hit"] == 1


def test_a_5xx_is_counted_with_no_origin_and_the_combined_line_says_so():
    reply = Reply(502, Headers(), result="error", source="upstream", target="/media/a.jpg")
    calls = []

    class Sink(Stats):
        def record(self, **kw) -> None:  # type: ignore[override]
            calls.append(kw)

    record(Sink(), AccessLog(None), "X-Media-Revision", reply, 0, 0.5, View())
    assert calls[0]["source"] is None and calls[0]["status"] == 502
    line = access_line("combined", "X-Media-Revision", reply, 0, 0.5, View(), None, 0.0)
    assert line.startswith('203.0.113.7 - - [01/Jan/1970:00:00:00 +0000] "GET /media/a.jpg') and "curl/8.5" in line
    assert sent_field(reply, "Cache-Status", View({"cache-status": "x"})) == "x"


# --- mediaedge.privatemedia ----------------------------------------------------------------

KEY = SigningKey(None, b"s3cret")
NOW = 1_800_000_000.0


class AnsweringClient:
    """The app behind --auth-url: answers `status` and counts the asks."""

    def __init__(self, status: int) -> None:
        self.status, self.calls = status, 0

    async def ask(self, headers: Headers, raw_target: str, method: str) -> AuthAnswer:
        self.calls += 1
        return auth_answer(self.status, 'Basic realm="x"' if self.status == 401 else None)

    async def aclose(self) -> None:
        pass


class Denials:
    """The one counter the gate touches (StatsSink.denied)."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def denied(self, reason: str) -> None:
        self.reasons.append(reason)


def gate(app_status: int = 200) -> tuple[PrivateMedia, Denials, AnsweringClient]:
    stats, client = Denials(), AnsweringClient(app_status)
    access = Access(client, AuthDecisions(60, clock=lambda: NOW))  # type: ignore[arg-type]
    return (PrivateMedia(Gates(("/media/s/",), ("/media/p/",)), (KEY,), access, stats,  # type: ignore[arg-type]
                         clock=lambda: NOW),
            stats, client)


def test_private_media_signatures_are_checked_before_the_engine():
    private, stats, _ = gate()
    assert private.any and private.gated("/media/s/a.jpg") and not private.gated("/media/a.jpg")
    refused = private.admit("GET", "/media/s/a.jpg", "/media/s/a.jpg?exp=1&sig=x", Headers())
    assert isinstance(refused, Refusal) and (refused.status, refused.denied) == (403, "signature")
    assert refused.fields["Cache-Control"] == "no-store" and "denied" in refused.fields["Cache-Status"]
    assert stats.reasons == ["signature"]
    signed = sign_target("/media/s/a.jpg?w=1", "s3cret", int(NOW) + 60)
    admitted = private.admit("GET", "/media/s/a.jpg", signed, Headers([("Cookie", "a=1"), ("Accept", "*/*")]))
    assert isinstance(admitted, Admitted)
    assert admitted.request.target == "/media/s/a.jpg?w=1"  # exp/kid/sig dropped
    assert list(admitted.request.headers) == [("Accept", "*/*")]  # credentials never reach the engine


def test_private_media_asks_the_app_once_then_remembers():
    async def main() -> None:
        private, stats, client = gate(200)
        headers = Headers([("Cookie", "session=1")])
        first = private.admit("GET", "/media/p/a.jpg", "/media/p/a.jpg", headers)
        assert isinstance(first, Asking)
        allowed = await first.answer()
        assert isinstance(allowed, Admitted) and allowed.request.headers.get("cookie") is None
        again = private.admit("GET", "/media/p/a.jpg", "/media/p/a.jpg", headers)
        assert isinstance(again, Admitted) and client.calls == 1  # remembered: no coroutine, no ask

        no, _, _ = gate(401)
        asking = no.admit("GET", "/media/p/a.jpg", "/media/p/a.jpg", headers)
        assert isinstance(asking, Asking)
        refused = await asking.answer()
        assert isinstance(refused, Refusal) and (refused.status, refused.denied) == (401, "auth")
        assert refused.fields["WWW-Authenticate"] == 'Basic realm="x"'

        down, down_stats, _ = gate(500)
        asking = down.admit("GET", "/media/p/a.jpg", "/media/p/a.jpg", headers)
        assert isinstance(asking, Asking)
        closed = await asking.answer()
        assert isinstance(closed, Refusal) and (closed.status, closed.denied) == (503, None)  # an error, not denied
        assert down_stats.reasons == []

    asyncio.run(main())


def test_private_media_in_disguise_is_refused_and_replies_are_made_private():
    private, _, _ = gate()
    assert private.in_disguise("/media/a.jpg") is None
    for raw, reason in (("/MEDIA/S/a.jpg", "signature"), ("/media/%2570/a.jpg", "auth")):
        refusal = private.in_disguise(raw)
        assert refusal is not None and (refusal.status, refusal.denied, refusal.target) == (403, reason, raw)
    reply = Reply(200, Headers([("Cache-Control", "public, max-age=60"), ("ETag", '"1"')]))
    make_private(reply)
    assert reply.headers.get_all("cache-control") == ["private"] and reply.headers.get("etag") == '"1"'
    hot = Reply(200, Headers(), wire=[(b"Cache-Control", b"max-age=60"), (b"Age", b"3")])
    make_private(hot)
    assert hot.wire == [(b"Age", b"3"), (b"Cache-Control", b"private")]
