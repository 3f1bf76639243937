"""mediaedge as a mitmproxy addon: thin wiring between flows and `mediaedge.engine`.

Media requests (GET/HEAD under a media prefix) are answered here: small bodies as
an addon-made response, large ones and fills by pointing the flow at the in-process
stream server (`flow.response.stream = True` in `responseheaders`). Everything
else goes to the upstream untouched. Loads in plain `mitmdump -s addons/mediaedge.py
--mode reverse:http://app:8000` too, with its options declared the mitmproxy way.
"""
from __future__ import annotations

import os as _os
import sys as _sys

# `mitmdump -s addons/mediaedge.py` puts this file's folder first on sys.path, where this
# very file would shadow the installed `mediaedge` package it imports from. Drop it.
_HERE = _os.path.dirname(_os.path.abspath(__file__))
_sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _HERE]

import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Sequence

from mitmproxy import ctx, http
from mitmproxy.net.http import status_codes
from mitmproxy.addonmanager import Loader
from mitmproxy.exceptions import OptionsError

from mediaedge.errors import ConfigError, TargetError
from mediaedge.config import OPTIONS, Settings, admin_token_problem, load_settings
from mediaedge import clienthost, http1guard, zerocopy
from mediaedge.engine import MediaRequest, Reply
from mediaedge.headers import Headers
from mediaedge.invalidation import Invalidator
from mediaedge.policy.access import DENIED_CACHE_STATUS_DETAIL, PRIVATE_CACHE_CONTROL, AuthAnswer
from mediaedge.policy.cachestatus import cache_status
from mediaedge.policy.fields import has_control_characters, target_has_control_characters
from mediaedge.policy.hop import connection_options
from mediaedge.policy.purge import ALLOW, purge_decision
from mediaedge.policy.signing import Denied, verify
from mediaedge.policy.target import is_media, looks_media, normalize_target
from mediaedge.respond import HTTP_DATES, wire_pairs
from mediaedge.runtime import Runtime
from mediaedge.webhook import PurgeEvent
from mediaedge.accesslog import format_access_json, format_access_line

log = logging.getLogger("mediaedge")

# RFC 9110 9.2.1: the safe methods. RFC 9111 4.4: "A cache MUST invalidate the target
# URI ... when it receives a non-error status code in response to an unsafe request
# method (including methods whose safety is unknown)": every other method (PROPFIND,
# M-SEARCH, FOO ...) invalidates. PURGE is answered by the edge, never forwarded.
SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
META_STREAM = "mediaedge_stream"
META_MEDIA = "mediaedge_media"
META_UNSAFE = "mediaedge_unsafe_target"
META_PASSED = "mediaedge_passed"  # forwarded to the upstream by mitmproxy (not media)

# mitmdump option name -> mediaedge setting flag
# The mitmdump options: one per setting of the table (`mediaedge_<name>`), except the
# data plane's address, which is mitmproxy's own (--listen-host/--listen-port). Derived
# from OPTIONS, so a new setting needs no edit here; their help is the table's.
_SETTINGS = {o.name: o for o in OPTIONS if o.name != "listen"}
OPTION_FLAGS = {"mediaedge_config": "config"} | {
    "mediaedge_" + name.replace("-", "_"): name for name in _SETTINGS
}
# The repeatable ones: a list option in mitmdump, a repeated flag in `mediaedge serve`.
LIST_FLAGS = {name for name, o in _SETTINGS.items() if o.repeatable}


def _option_help(flag: str) -> str:
    if flag == "config":
        return "A TOML settings file (mediaedge --config); flags and MEDIAEDGE_* variables win over it."
    o = _SETTINGS[flag]
    return f"{o.help} (mediaedge --{flag}; empty: {o.shown_default})"


DENIED_CACHE_STATUS = cache_status(fwd="bypass", detail=DENIED_CACHE_STATUS_DETAIL)
AUTH_ERROR_CACHE_STATUS = cache_status(fwd="bypass", detail="auth-error")


class MediaEdge:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings  # given by `mediaedge serve`; else built from options
        self.rt: Runtime | None = None

    # ------------------------------------------------------------------ options
    def load(self, loader: Loader) -> None:
        http1guard.install()  # head limits, leading empty lines, chunk footers (docs in the module)
        zerocopy.install()  # zerocopy hook: large plain-HTTP hits sendfile()d to the client (proxy/zerocopy.py)
        clienthost.install()  # the client's Host, before reverse mode rewrites it (RFC 9111 4.4)
        if self.settings is not None:
            return
        for name, flag in OPTION_FLAGS.items():
            if flag in LIST_FLAGS:
                loader.add_option(name, Sequence[str], [], _option_help(flag))
            else:
                loader.add_option(name, str, "", _option_help(flag))

    def configure(self, updated: set[str]) -> None:
        if self.settings is not None and self.rt is not None:
            return
        if self.settings is None and updated & (set(OPTION_FLAGS) | {"mode"}):
            cli: dict[str, object] = {}
            for name, flag in OPTION_FLAGS.items():
                value = getattr(ctx.options, name)
                if value:
                    cli[flag] = list(value) if flag in LIST_FLAGS else value
            if "upstream" not in cli:
                for mode in ctx.options.mode:
                    if mode.startswith("reverse:"):
                        cli["upstream"] = mode[len("reverse:"):].split("@")[0]
            config = cli.pop("config", None)
            try:
                self._standalone = load_settings(cli, os.environ, config_path=config)  # type: ignore[arg-type]
                problem = admin_token_problem(self._standalone)
                if problem is not None:
                    raise problem
            except ConfigError as e:
                raise OptionsError(str(e)) from e
            # Under mitmdump, mediaedge_log_level filters our own loggers; mitmdump's own
            # messages keep its termlog_verbosity.
            log.setLevel(self._standalone.log_level.upper())

    async def running(self) -> None:
        if self.settings is None and ctx.options.connection_strategy != "lazy":
            # eager connects to the upstream when a client connects: with the upstream
            # down, clients are dropped before we can answer even a hit.
            log.info("mediaedge: setting connection_strategy=lazy")
            ctx.options.update(connection_strategy="lazy")
        if self.rt is None:
            settings = self.settings or self._standalone
            self.rt = Runtime(settings)
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
                     extra={"Cache-Status": cache_status(fwd="bypass", detail="auth-error"),
                            "Cache-Control": "no-store"})

    def _deny(self, flow: http.HTTPFlow, status: int, text: str, reason: str, started: float, raw: str, *,
              www_authenticate: str | None = None) -> None:
        """A refusal of a signature or by the app: counted in errors and denied, logged with its reason."""
        assert self.rt is not None
        extra = {"Cache-Status": cache_status(fwd="bypass", detail=DENIED_CACHE_STATUS_DETAIL),
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
        media = target is not None and is_media(target, rt.settings.media_prefixes)
        if media and method not in SAFE:
            flow.metadata[META_UNSAFE] = target
        flow.metadata[META_PASSED] = True
        if rt.settings.upstream is None:
            flow.response = http.Response.make(404, "not found: no upstream for non-media requests\n",
                                               {"Content-Type": "text/plain; charset=utf-8",
                                                "Date": HTTP_DATES.text(time.time())})

    async def _purge(self, flow: http.HTTPFlow, raw: str) -> None:
        """PURGE is answered here, never forwarded: mediaedge.policy.purge decides (the ACL
        --allow-purge-from, then media targets only); an obeyed one goes through the
        invalidation log like a webhook purge, so every node sharing it drops the entries."""
        rt = self.rt
        assert rt is not None
        try:
            target: str | None = _normalize(raw)
        except TargetError:
            target = None
        peer = flow.client_conn.peername
        prefixes = rt.settings.media_prefixes
        decision = purge_decision(peer[0] if peer else None, rt.settings.allow_purge_from,
                                  media=target is not None and is_media(target, prefixes),
                                  refused=target is None and looks_media(raw, prefixes))
        if decision.status == 200 and target is not None:
            try:
                accepted, seq, _ = await rt.invalidator.accept([PurgeEvent(path=target)])
            except Exception as e:  # noqa: BLE001 - the state database is down: say so, never a traceback
                log.warning("PURGE %s from %s failed: %s", target, peer[0] if peer else "-", e)
                flow.response = _plain(503, "PURGE failed: the invalidation log is unavailable\n")
                return
            log.info("PURGE %s from %s: seq %d", target, peer[0] if peer else "-", seq)
            body = json.dumps({"accepted": accepted, "seq": seq}) + "\n"
            flow.response = http.Response.make(200, body, {"Content-Type": "application/json",
                                                           "Date": HTTP_DATES.text(time.time())})
            return
        flow.response = _plain(decision.status, decision.reason + "\n")
        if decision.status == 405:
            flow.response.headers["Allow"] = ALLOW

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
        if 200 <= flow.response.status_code < 400:
            # RFC 9111 4.4: a successful unsafe request invalidates the target and its
            # same-origin Location / Content-Location.
            targets = [target, *_same_origin_locations(flow, self.rt.settings.media_prefixes)]
            inv: Invalidator = self.rt.invalidator
            for t in targets:
                await inv.apply(PurgeEvent(path=t))

    def error(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path
        if flow.response is not None and flow.response.raw_content:  # zerocopy hook: a token never written
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
        if "content-length" in reply.headers and zerocopy.eligible(flow, job.source, rt.settings.sendfile_min_size):  # zerocopy hook
            now = time.time()
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
        source = reply.source if reply.status < 500 else None
        rt.stats.record(result=reply.result, source=source, body_bytes=body_bytes, duration=duration,
                        path=reply.target, status=reply.status)
        if rt.access_log.enabled:
            rt.access_log.write(self._access_line(flow, reply, body_bytes, duration, denied))

    def _access_line(self, flow: http.HTTPFlow, reply: Reply, body_bytes: int, duration: float,
                     denied: str | None) -> str:
        client = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
        if self.rt is not None and self.rt.access_log.format == "json":
            return format_access_json(
                client=client, method=flow.request.method, target=reply.target, status=reply.status,
                body_bytes=body_bytes, cache_status=_sent_field(flow, reply, "Cache-Status"),
                revision=_sent_field(flow, reply, self.rt.settings.revision_header),
                duration=duration, now=time.time(), denied=denied,
            )
        return format_access_line(
            client=client, method=flow.request.method, target=reply.target, status=reply.status,
            body_bytes=body_bytes, referer=flow.request.headers.get("referer"),
            user_agent=flow.request.headers.get("user-agent"), cache_result=reply.result, origin=reply.source,
            duration=duration, now=time.time(), denied=denied,
        )


def _sent_field(flow: http.HTTPFlow, reply: Reply, name: str) -> str | None:
    """A response field as the client got it (for the JSON access log): from the reply's
    encoded head, its streaming job, its headers, else the answer the addon made itself."""
    if reply.wire is not None:
        wanted = name.lower().encode()
        values = [v.decode("latin-1") for k, v in reply.wire if k.lower() == wanted]
        return ", ".join(values) if values else None
    headers = reply.job.headers if reply.job is not None else reply.headers
    value = headers.get(name)
    if value is None and flow.response is not None:
        value = flow.response.headers.get(name)
    return value


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


def _plain(status: int, text: str) -> http.Response:
    return http.Response.make(status, text, {"Content-Type": "text/plain; charset=utf-8",
                                             "Date": HTTP_DATES.text(time.time())})


def _same_origin_locations(flow: http.HTTPFlow, prefixes: tuple[str, ...]) -> list[str]:
    out = []
    assert flow.response is not None
    for name in ("location", "content-location"):
        value = flow.response.headers.get(name)
        if not value:
            continue
        if value.startswith(("http://", "https://")):
            host = value.split("/", 3)[2]
            # RFC 9111 4.4: only URIs whose host is the target URI's: the Host the client
            # sent, or the one the app was sent (reverse mode: the upstream's) and echoes.
            if host.lower() not in {h.lower() for h in (clienthost.client_host(flow), flow.request.host_header) if h}:
                continue
            parts = value.split("/", 3)
            value = "/" + (parts[3] if len(parts) > 3 else "")  # its path and query
        try:
            t = normalize_target(value)
        except TargetError:
            continue
        if is_media(t, prefixes):
            out.append(t)
    return out


addons = [MediaEdge()]
