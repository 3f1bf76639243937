"""The mitmproxy hooks of a node: thin translation between flows and `mediaedge.engine`.

Media requests (GET/HEAD under a media prefix) are answered here: small bodies as an
answer made here, large ones and fills by pointing the flow at the in-process stream
server (`flow.response.stream = True` in `responseheaders`). Everything else goes to
the upstream untouched. What is not translation lives in core services this calls:
PURGE (`mediaedge.purge`), invalidation after unsafe methods (`mediaedge.unsafe`),
counting and the access log (`mediaedge.record`). `mediaedge serve` adds `Shell` to
its master; `addons/mediaedge.py` adds the mitmdump options on top of it.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable

from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.net.http import status_codes

from mediaedge import clienthost, http1guard, zerocopy
from mediaedge.config import Settings
from mediaedge.contract import MediaRequest, Reply
from mediaedge.errors import TargetError
from mediaedge.headers import Headers
from mediaedge.policy.access import DENIED_CACHE_STATUS_DETAIL, PRIVATE_CACHE_CONTROL, AuthAnswer
from mediaedge.policy.cachestatus import cache_status
from mediaedge.policy.fields import has_control_characters, target_has_control_characters
from mediaedge.policy.hop import connection_options
from mediaedge.policy.signing import Denied, verify
from mediaedge.policy.target import is_media, looks_media, normalize_target
from mediaedge.purge import answer_purge
from mediaedge.record import count, log_access
from mediaedge.respond import HTTP_DATES, wire_pairs
from mediaedge.runtime import Runtime
from mediaedge.unsafe import invalidates, invalidate_after

log = logging.getLogger("mediaedge")

META_STREAM = "mediaedge_stream"
META_UNSAFE = "mediaedge_unsafe_target"
META_PASSED = "mediaedge_passed"  # forwarded to the upstream by mitmproxy (not media)

DENIED_CACHE_STATUS = cache_status(fwd="bypass", detail=DENIED_CACHE_STATUS_DETAIL)
AUTH_ERROR_CACHE_STATUS = cache_status(fwd="bypass", detail="auth-error")


class Shell:
    """The mitmproxy hooks of a node: flows in, `MediaRequest`s to the engine, `Reply`s
    back out as responses. PURGE, unsafe-method invalidation and counting/logging are
    core services (`mediaedge.purge`, `.unsafe`, `.record`) called from here."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings  # given by `mediaedge serve`; by the options under mitmdump
        self.rt: Runtime | None = None

    # ------------------------------------------------------------------ lifecycle
    def load(self, loader: Loader) -> None:
        http1guard.install()  # head limits, leading empty lines, chunk footers (docs in the module)
        clienthost.install()  # the client's Host, before reverse mode rewrites it (RFC 9111 4.4)
        zerocopy.install()  # large plain-HTTP hits sendfile()d to the client (mediaedge.zerocopy)

    async def running(self) -> None:
        if self.rt is None and self.settings is not None:
            self.rt = Runtime(self.settings)
            await self.rt.start()

    async def done(self) -> None:
        if self.rt is not None:
            await self.rt.stop()
            self.rt = None

    # ------------------------------------------------------------------ hooks
    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Sync on purpose: a fresh small hit held in memory is answered right here, with
        no coroutine (mitmproxy awaits what a hook returns, so the rest is async)."""
        if flow.response or flow.error or not flow.live or self.rt is None:
            return None
        started = time.perf_counter()
        if has_control_characters(flow.request.data.headers.fields):
            # RFC 9110 5.5: refused, never forwarded, on any request (media or not).
            self._answer(flow, 400, "control character in a request header field\n", result="error",
                         started=started, target="-")
            return None
        method = flow.request.method.upper()
        req = None
        if method in ("GET", "HEAD"):
            try:
                target = _normalize(flow.request.path)
            except TargetError:
                target = None
            if target is not None and is_media(target, self.rt.settings.media_prefixes):
                gates = self.rt.gates
                if gates.any:
                    if gates.needs_signature(target) or gates.needs_auth(target):
                        return self._private(flow, method, target, started)
                    if self._private_in_disguise(flow, started):
                        return None
                req = MediaRequest(method, target, Headers(flow.request.headers.items(multi=True)))  # type: ignore[arg-type]
                reply = self.rt.engine.hot_hit(req)
                if reply is not None:
                    self._apply(flow, reply, started)
                    return None
        if req is not None:
            return self._media(flow, req, started)
        if self.rt.gates.any and method in ("GET", "HEAD") and self._private_in_disguise(flow, started):
            return None
        return self._request(flow, method, started)

    # ------------------------------------------------------------------ private media
    def _private(self, flow: http.HTTPFlow, method: str, target: str, started: float) -> Awaitable[None] | None:
        """A media request under --signed-prefix or --auth-prefix (mediaedge.policy.access).

        Refusals are answered here and reach no origin. An allowed request is served
        like any other from the shared entry: without exp/kid/sig in its target, and
        without the Cookie and Authorization that allowed it (they would make it
        uncacheable and uncoalesced); what goes out says `Cache-Control: private`."""
        rt = self.rt
        assert rt is not None
        raw = flow.request.path
        if rt.gates.needs_signature(target):
            verdict = verify(raw, rt.settings.signing_keys, time.time())
            if isinstance(verdict, Denied):
                self._deny(flow, 403, verdict.text, verdict.reason, started, raw)
                return None
            try:
                target = _normalize(verdict.target)
            except TargetError as e:  # the path is the one already accepted; only a query could fail
                self._answer(flow, e.status, f"{e}\n", result="error", started=started, target=raw)
                return None
        headers = Headers(flow.request.headers.items(multi=True))  # type: ignore[arg-type]
        if rt.gates.needs_auth(target):
            assert rt.access is not None
            key = rt.access.decisions.key(headers, raw)
            answer = rt.access.remembered(key)
            if answer is None:
                return self._ask_app(flow, method, target, headers, raw, key, started)
            if not answer.allow:
                self._refuse(flow, answer, started, raw)
                return None
        req = MediaRequest(method, target, headers.without("cookie", "authorization"))
        reply = rt.engine.hot_hit(req)
        if reply is not None:
            self._apply(flow, reply, started, private=True)
            return None
        return self._media(flow, req, started, private=True)

    def _private_in_disguise(self, flow: http.HTTPFlow, started: float) -> bool:
        """A GET/HEAD whose target is not under a private prefix as written, but is to a
        lenient app (`/MEDIA/P/x`, `/media/%2570/x`: case ignored, decoded until stable,
        as mediaedge.policy.target.looks_media reads it). Forwarded or served as public, it
        would reach the app ungated; it is refused instead (no real link is spelled so)."""
        assert self.rt is not None
        raw, gates = flow.request.path, self.rt.gates
        if _looks_under(raw, gates.signed):
            self._deny(flow, 403, "bad signature", "signature", started, raw)
            return True
        if _looks_under(raw, gates.auth):
            self._deny(flow, 403, "forbidden", "auth", started, raw)
            return True
        return False

    async def _ask_app(self, flow: http.HTTPFlow, method: str, target: str, headers: Headers, raw: str,
                       key: bytes, started: float) -> None:
        rt = self.rt
        assert rt is not None and rt.access is not None
        answer = await rt.access.decide(key, headers, raw, method, target)
        if not answer.allow:
            self._refuse(flow, answer, started, raw)
            return
        await self._media(flow, MediaRequest(method, target, headers.without("cookie", "authorization")), started,
                          private=True)

    def _refuse(self, flow: http.HTTPFlow, answer: AuthAnswer, started: float, raw: str) -> None:
        if answer.refused:
            self._deny(flow, answer.status, answer.reason, "auth", started, raw,
                       www_authenticate=answer.www_authenticate)
            return
        log.warning("auth for %s failed closed: %s", raw, answer.reason)
        self._answer(flow, 503, "access check unavailable\n", result="error", started=started, target=raw,
                     extra={"Cache-Status": AUTH_ERROR_CACHE_STATUS,
                            "Cache-Control": "no-store"})

    def _deny(self, flow: http.HTTPFlow, status: int, text: str, reason: str, started: float, raw: str, *,
              www_authenticate: str | None = None) -> None:
        """A refusal of a signature or by the app: counted in errors and denied, logged with its reason."""
        assert self.rt is not None
        extra = {"Cache-Status": DENIED_CACHE_STATUS,
                 "Cache-Control": "no-store"}
        if www_authenticate:
            extra["WWW-Authenticate"] = www_authenticate
        self.rt.stats.denied(reason)
        self._answer(flow, status, text + "\n", result="error", started=started, target=raw, extra=extra,
                     denied=reason)

    async def _media(self, flow: http.HTTPFlow, req: MediaRequest, started: float, private: bool = False) -> None:
        assert self.rt is not None
        try:
            reply = await self.rt.engine.handle(req)
        except Exception as e:  # noqa: BLE001 - never a traceback to the client
            log.exception("media request %s failed", req.target)
            self._answer(flow, 502, f"internal error: {type(e).__name__}\n", result="error", started=started,
                         target=req.target)
            return
        self._apply(flow, reply, started, private)

    async def _request(self, flow: http.HTTPFlow, method: str, started: float) -> None:
        """Everything but a media GET/HEAD: bad media paths, PURGE, unsafe methods, pass-through."""
        rt = self.rt
        assert rt is not None
        if target_has_control_characters(flow.request.data.path):
            self._answer(flow, 400, "control character in the request target\n", result="error", started=started,
                         target="-")
            return
        _origin_form(flow)
        raw = flow.request.path
        if method == "PURGE":
            await self._purge(flow, raw)
            return
        try:
            target = _normalize(raw)
        except TargetError as e:
            # Rule 2 of mediaedge.policy.target: a refused target that could name media to
            # some app is answered here, never forwarded (web cache deception).
            if looks_media(raw, rt.settings.media_prefixes):
                self._answer(flow, e.status, f"{e}\n", result="error", started=started, target=raw)
                return
            target = None
        if invalidates(method, target, rt.settings.media_prefixes):
            flow.metadata[META_UNSAFE] = target
        flow.metadata[META_PASSED] = True
        if rt.settings.upstream is None:
            flow.response = http.Response.make(404, "not found: no upstream for non-media requests\n",
                                               {"Content-Type": "text/plain; charset=utf-8",
                                                "Date": HTTP_DATES.text(time.time())})

    async def _purge(self, flow: http.HTTPFlow, raw: str) -> None:
        """PURGE is answered here, never forwarded (`mediaedge.purge` decides and applies)."""
        assert self.rt is not None
        peer = flow.client_conn.peername
        answer = await answer_purge(raw, peer[0] if peer else None, self.rt.settings, self.rt.invalidator)
        headers = {"Content-Type": answer.content_type, "Date": HTTP_DATES.text(time.time())}
        if answer.allow is not None:
            headers["Allow"] = answer.allow
        flow.response = http.Response.make(answer.status, answer.body, headers)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Responses from a server: our stream server (streamed, Date already set) or the
        upstream passed through, which keeps its own Date and gets ours when it sent none
        (RFC 9110 6.6.1: a recipient forwarding a response without Date adds one)."""
        response = flow.response
        if response is None:
            return
        if flow.metadata.get(META_STREAM):
            response.stream = True
            return
        if "date" not in response.headers:
            response.headers["Date"] = HTTP_DATES.text(time.time())
        if META_PASSED in flow.metadata:
            _drop_connection_options(response)

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if META_UNSAFE not in flow.metadata or self.rt is None or flow.response is None:
            return None  # every media hit and miss: no coroutine
        return self._after_unsafe(flow, flow.metadata[META_UNSAFE])

    async def _after_unsafe(self, flow: http.HTTPFlow, target: str) -> None:
        assert self.rt is not None and flow.response is not None
        await invalidate_after(self.rt.invalidator, target, flow.response.status_code, flow.response.headers.get,
                               (clienthost.client_host(flow) or "", flow.request.host_header or ""),
                               self.rt.settings.media_prefixes)

    def error(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path
        if flow.response is not None and flow.response.raw_content:  # a zero-copy token never written
            zerocopy.discard(flow.response.raw_content)
        if flow.metadata.get(META_STREAM) and self.rt is not None and flow.response is None:
            self.rt.stream.discard(path)

    # ------------------------------------------------------------------ replies
    def _apply(self, flow: http.HTTPFlow, reply: Reply, started: float, private: bool = False) -> None:
        assert self.rt is not None
        rt = self.rt
        if private:
            _make_private(reply)
        pairs = reply.wire if reply.wire is not None else wire_pairs(reply.headers)
        if reply.job is None:
            now = time.time()
            # Our headers, Content-Length included (HEAD: the full size); the body as is.
            flow.response = http.Response(b"HTTP/1.1", reply.status, _reason(reply.status), http.Headers(pairs),
                                          reply.body, None, now, now)
            self._record(flow, reply, len(reply.body), started)
            return

        job = reply.job
        previous = job.on_done

        def on_done(sent: int, completed: bool) -> None:
            if previous is not None:
                previous(sent, completed)
            self._record(flow, reply, sent, started)

        job.on_done = on_done
        if "content-length" in reply.headers and zerocopy.eligible(flow, job.source, rt.settings.sendfile_min_size):
            now = time.time()  # the head planned; the token stands for the body mitmproxy will write
            flow.response = http.Response(b"HTTP/1.1", reply.status, _reason(reply.status), http.Headers(pairs),
                                          zerocopy.register(job), None, now, now)
            return
        path = rt.stream.register(job)
        _origin_form(flow)
        flow.request.scheme = "http"
        flow.request.host = "127.0.0.1"
        flow.request.port = rt.stream.port
        flow.request.path = path
        flow.metadata[META_STREAM] = True

    def _answer(self, flow: http.HTTPFlow, status: int, text: str, *, result: str, started: float,
                target: str, extra: dict[str, str] | None = None, denied: str | None = None) -> None:
        flow.response = http.Response.make(status, text, {"Content-Type": "text/plain; charset=utf-8",
                                                          "Date": HTTP_DATES.text(time.time()), **(extra or {})})
        reply = Reply(status, Headers(), result=result, source=None, target=target)
        self._record(flow, reply, len(text), started, denied)

    def _record(self, flow: http.HTTPFlow, reply: Reply, body_bytes: int, started: float,
                denied: str | None = None) -> None:
        rt = self.rt
        if rt is None:
            return
        duration = time.perf_counter() - started
        count(rt.stats, reply, body_bytes, duration)
        if rt.access_log.enabled:
            log_access(rt.access_log, rt.settings.revision_header, reply, body_bytes, duration, _FlowView(flow),
                       denied)


class _FlowView:
    """A flow as `mediaedge.record.Exchange`: read only when the access log is on."""

    __slots__ = ("flow",)

    def __init__(self, flow: http.HTTPFlow) -> None:
        self.flow = flow

    def client(self) -> str:
        peer = self.flow.client_conn.peername
        return peer[0] if peer else "-"

    def method(self) -> str:
        return self.flow.request.method

    def request_field(self, name: str) -> str | None:
        return self.flow.request.headers.get(name)

    def answer_field(self, name: str) -> str | None:
        return self.flow.response.headers.get(name) if self.flow.response is not None else None


def _origin_form(flow: http.HTTPFlow) -> None:
    """Send the request on in origin-form ("GET /x"), whatever form the client used.

    mitmproxy's reverse mode keeps an absolute-form target (`GET http://evil.example/x`)
    as it came: it replaces the host and port it connects to with the upstream's, but
    writes the client's authority back into the request line, and apps build links
    from it. RFC 9112 3.2.2 lets a server ignore that authority; we drop it. The Host
    field is the upstream's already (reverse mode rewrites it).
    """
    if flow.request.data.authority and not flow.request.is_http2:
        flow.request.authority = ""


def _drop_connection_options(response: http.Response) -> None:
    """RFC 9110 7.6.1 on a passed-through response: the fields named in Connection go
    (mitmproxy passes them on). Media responses are rebuilt by the engine already."""
    for name in connection_options(response.headers.items(multi=True)):
        if name not in ("close", "keep-alive", "upgrade"):  # mitmproxy's own connection handling reads these
            del response.headers[name]


def _make_private(reply: Reply) -> None:
    """`Cache-Control: private` in place of the origin's (mediaedge.policy.access)."""
    if reply.wire is not None:
        reply.wire = [p for p in reply.wire if p[0].lower() != b"cache-control"]
        reply.wire.append((b"Cache-Control", PRIVATE_CACHE_CONTROL.encode()))
        return
    reply.headers = reply.headers.with_set("Cache-Control", PRIVATE_CACHE_CONTROL)
    if reply.job is not None:
        reply.job.headers = reply.job.headers.with_set("Cache-Control", PRIVATE_CACHE_CONTROL)


_normalize = functools.lru_cache(maxsize=4096)(normalize_target)  # pure; the same few paths recur
_looks_under = functools.lru_cache(maxsize=4096)(looks_media)  # (raw target, prefixes): pure too


@functools.lru_cache(maxsize=64)
def _reason(status: int) -> bytes:
    return status_codes.RESPONSES.get(status, "").encode()
