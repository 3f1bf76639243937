"""The mitmproxy hooks of a node: thin translation between flows and `mediaedge.engine`.

Media requests (GET/HEAD under a media prefix) are answered here: small bodies as an
answer made here, large ones and fills by pointing the flow at the in-process stream
server (`flow.response.stream = True` in `responseheaders`). Everything else goes to
the upstream untouched. What is not translation lives in core services this calls:
PURGE (`mediaedge.purge`), invalidation after unsafe methods (`mediaedge.unsafe`),
the private-media gate (`mediaedge.privatemedia`), counting and the access log
(`mediaedge.record`). `mediaedge serve` adds `Shell` to
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
from mediaedge.policy.fields import has_control_characters, target_has_control_characters
from mediaedge.policy.hop import connection_options
from mediaedge.policy.target import is_media, looks_media, normalize_target
from mediaedge.privatemedia import Asking, Refusal, make_private
from mediaedge.purge import answer_purge
from mediaedge.record import count, log_access
from mediaedge.respond import HTTP_DATES, wire_pairs
from mediaedge.runtime import Runtime
from mediaedge.unsafe import invalidates, invalidate_after

log = logging.getLogger("mediaedge")

META_STREAM = "mediaedge_stream"
META_UNSAFE = "mediaedge_unsafe_target"
META_PASSED = "mediaedge_passed"  # forwarded to the upstream by mitmproxy (not media)


class Shell:
    """The mitmproxy hooks of a node: flows in, `MediaRequest`s to the engine, `Reply`s
    back out as responses. PURGE, unsafe-method invalidation, the private-media gate and
    counting/logging are core services (`mediaedge.purge`, `.unsafe`, `.privatemedia`,
    `.record`) called from here."""

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
                private = self.rt.private
                if private.any:
                    if private.gated(target):
                        return self._private(flow, method, target, started)
                    if self._private_in_disguise(flow, started):
                        return None
                req = MediaRequest(method, target, Headers(flow.request.headers.items(multi=True)))  # type: ignore[arg-type]
                if self._hot(flow, req, started):
                    return None
        if req is not None:
            return self._media(flow, req, started)
        if self.rt.private.any and method in ("GET", "HEAD") and self._private_in_disguise(flow, started):
            return None
        return self._request(flow, method, started)

    # ------------------------------------------------------------------ private media
    def _private(self, flow: http.HTTPFlow, method: str, target: str, started: float) -> Awaitable[None] | None:
        """A media request under --signed-prefix or --auth-prefix: `mediaedge.privatemedia`
        decides (refused, admitted, or the app to ask); this only answers the flow."""
        assert self.rt is not None
        headers = Headers(flow.request.headers.items(multi=True))  # type: ignore[arg-type]
        verdict = self.rt.private.admit(method, target, flow.request.path, headers)
        if isinstance(verdict, Refusal):
            self._refuse(flow, verdict, started)
            return None
        if isinstance(verdict, Asking):
            return self._private_asked(flow, verdict, started)
        if self._hot(flow, verdict.request, started, private=True):
            return None
        return self._media(flow, verdict.request, started, private=True)

    async def _private_asked(self, flow: http.HTTPFlow, asking: Asking, started: float) -> None:
        verdict = await asking.answer()
        if isinstance(verdict, Refusal):
            self._refuse(flow, verdict, started)
            return
        await self._media(flow, verdict.request, started, private=True)

    def _private_in_disguise(self, flow: http.HTTPFlow, started: float) -> bool:
        """Refused when the target spells a private prefix to a lenient app (`mediaedge.privatemedia`)."""
        assert self.rt is not None
        refusal = self.rt.private.in_disguise(flow.request.path)
        if refusal is None:
            return False
        self._refuse(flow, refusal, started)
        return True

    def _refuse(self, flow: http.HTTPFlow, refusal: Refusal, started: float) -> None:
        self._answer(flow, refusal.status, refusal.text, result="error", started=started, target=refusal.target,
                     extra=refusal.fields, denied=refusal.denied)

    def _hot(self, flow: http.HTTPFlow, req: MediaRequest, started: float, private: bool = False) -> bool:
        """A fresh hit held in memory answered right here (True); False: `_media` answers.
        Guarded as `_media` is: a failure in this sync path would reach mitmproxy's hook
        handler, and the client would get its error page or a dropped connection."""
        assert self.rt is not None
        try:
            reply = self.rt.engine.hot_hit(req)
            if reply is None:
                return False
            self._apply(flow, reply, started, private)
        except Exception as e:  # noqa: BLE001 - never a traceback to the client
            self._failed(flow, req, e, started)
        return True

    async def _media(self, flow: http.HTTPFlow, req: MediaRequest, started: float, private: bool = False) -> None:
        assert self.rt is not None
        try:
            reply = await self.rt.engine.handle(req)
        except Exception as e:  # noqa: BLE001 - never a traceback to the client
            self._failed(flow, req, e, started)
            return
        self._apply(flow, reply, started, private)

    def _failed(self, flow: http.HTTPFlow, req: MediaRequest, e: Exception, started: float) -> None:
        """A media request the engine failed on: a 502 naming the exception, its traceback logged."""
        log.exception("media request %s failed", req.target)
        self._answer(flow, 502, f"internal error: {type(e).__name__}\n", result="error", started=started,
                     target=req.target)

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
            make_private(reply)
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
                                          zerocopy.register(job, rt.settings.idle_timeout), None, now, now)
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


_normalize = functools.lru_cache(maxsize=4096)(normalize_target)  # pure; the same few paths recur


@functools.lru_cache(maxsize=64)
def _reason(status: int) -> bytes:
    return status_codes.RESPONSES.get(status, "").encode()
