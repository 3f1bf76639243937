"""Private media (`--signed-prefix`, `--auth-prefix`): the gate a media request passes
before the engine, as a core service the mitmproxy shell calls.

The rules are pure and live elsewhere: which gate a target is behind and what the app's
answer means (`mediaedge.policy.access`), signed URLs (`mediaedge.policy.signing`). This
module applies them and does the I/O: it verifies signatures, asks the app through
`mediaedge.access` (a remembered answer, else one shared ask), counts refusals as denied
and logs the failures that close the gate. Its answers are plain data, so the shell only
translates: a `Refusal` it sends as a response, or `Admitted` — go on with the engine
with this request, and send the reply through `make_private`. An ask of the app is
`Asking`, whose `answer()` the shell awaits: a request with a remembered answer, and
every request to public media, costs no coroutine here.

An admitted request is served from the shared entry (the bytes of a private file are
cached once for everyone allowed): without exp/kid/sig in its target, and without the
`Cookie` and `Authorization` that allowed it (they would make it uncacheable and
uncoalesced); what goes out says `Cache-Control: private` (RFC 9111 5.2.2.7).
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mediaedge.access import Access
from mediaedge.contract import MediaRequest, Reply
from mediaedge.errors import TargetError
from mediaedge.headers import Headers
from mediaedge.policy.access import DENIED_CACHE_STATUS_DETAIL, PRIVATE_CACHE_CONTROL, AuthAnswer, Gates
from mediaedge.policy.cachestatus import cache_status
from mediaedge.policy.signing import Denied, SigningKey, verify
from mediaedge.policy.target import looks_media, normalize_target
from mediaedge.stats import StatsSink

log = logging.getLogger("mediaedge")

DENIED_CACHE_STATUS = cache_status(fwd="bypass", detail=DENIED_CACHE_STATUS_DETAIL)
AUTH_ERROR_CACHE_STATUS = cache_status(fwd="bypass", detail="auth-error")
CREDENTIALS = ("cookie", "authorization")  # what allowed the request; never sent on to the engine


@dataclass(frozen=True)
class Refusal:
    """An answer made by the gate; no origin is asked. `denied` names the reason a
    refusal is counted and logged under (None: an error, not a denial)."""

    status: int
    text: str  # the plain-text body, one line ending in a newline
    target: str  # the target as sent, for the access log
    denied: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # Cache-Status, Cache-Control, WWW-Authenticate


@dataclass(frozen=True)
class Admitted:
    """Go on with the engine with `request`, and make its reply private (`make_private`)."""

    request: MediaRequest


class Asking:
    """The app must be asked: `answer()` asks it (or joins an ask in flight)."""

    __slots__ = ("_gate", "_key", "_method", "_target", "_headers", "_raw")

    def __init__(self, gate: PrivateMedia, key: bytes, method: str, target: str, headers: Headers,
                 raw: str) -> None:
        self._gate, self._key, self._method, self._target = gate, key, method, target
        self._headers, self._raw = headers, raw

    async def answer(self) -> Refusal | Admitted:
        access = self._gate.access
        assert access is not None  # an Asking is only made with an auth gate
        answer = await access.decide(self._key, self._headers, self._raw, self._method, self._target)
        if not answer.allow:
            return self._gate.refuse(answer, self._raw)
        return Admitted(MediaRequest(self._method, self._target, self._headers.without(*CREDENTIALS)))


class PrivateMedia:
    """The gates of one node: `gated` says whether a media target is behind one, `admit`
    decides a gated request, `in_disguise` refuses a spelling that would slip past them."""

    def __init__(self, gates: Gates, keys: tuple[SigningKey, ...], access: Access | None, stats: StatsSink, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.gates = gates
        self.keys = keys
        self.access = access  # None unless --auth-url and --auth-prefix are both set
        self.stats = stats
        self.clock = clock
        self.any = gates.any  # read on every media request: private media off costs one attribute

    def gated(self, target: str) -> bool:
        return self.gates.needs_signature(target) or self.gates.needs_auth(target)

    def admit(self, method: str, target: str, raw: str, headers: Headers) -> Refusal | Admitted | Asking:
        """A media request under --signed-prefix or --auth-prefix: refused, admitted, or the
        app to ask. `target` is `raw` normalized; the signature is checked first (no round trip)."""
        if self.gates.needs_signature(target):
            verdict = verify(raw, self.keys, self.clock())
            if isinstance(verdict, Denied):
                return self._deny(403, verdict.text, verdict.reason, raw)
            try:
                target = _normalize(verdict.target)
            except TargetError as e:  # the path is the one already accepted; only a query could fail
                return Refusal(e.status, f"{e}\n", raw)
        if self.gates.needs_auth(target):
            assert self.access is not None
            key = self.access.decisions.key(headers, raw)
            answer = self.access.remembered(key)
            if answer is None:
                return Asking(self, key, method, target, headers, raw)
            if not answer.allow:
                return self.refuse(answer, raw)
        return Admitted(MediaRequest(method, target, headers.without(*CREDENTIALS)))

    def in_disguise(self, raw: str) -> Refusal | None:
        """A GET/HEAD whose target is not under a private prefix as written, but is to a
        lenient app (`/MEDIA/P/x`, `/media/%2570/x`: case ignored, decoded until stable,
        as mediaedge.policy.target.looks_media reads it). Forwarded or served as public, it
        would reach the app ungated; it is refused instead (no real link is spelled so)."""
        if _looks_under(raw, self.gates.signed):
            return self._deny(403, "bad signature", "signature", raw)
        if _looks_under(raw, self.gates.auth):
            return self._deny(403, "forbidden", "auth", raw)
        return None

    def refuse(self, answer: AuthAnswer, raw: str) -> Refusal:
        """The app's no (401/403, denied), or no usable answer (503, failing closed)."""
        if answer.refused:
            return self._deny(answer.status, answer.reason, "auth", raw, www_authenticate=answer.www_authenticate)
        log.warning("auth for %s failed closed: %s", raw, answer.reason)
        return Refusal(503, "access check unavailable\n", raw,
                       fields={"Cache-Status": AUTH_ERROR_CACHE_STATUS, "Cache-Control": "no-store"})

    def _deny(self, status: int, text: str, reason: str, raw: str, *,
              www_authenticate: str | None = None) -> Refusal:
        """A refusal of a signature or by the app: counted in denied, logged with its reason."""
        fields = {"Cache-Status": DENIED_CACHE_STATUS, "Cache-Control": "no-store"}
        if www_authenticate:
            fields["WWW-Authenticate"] = www_authenticate
        self.stats.denied(reason)
        return Refusal(status, text + "\n", raw, reason, fields)


def make_private(reply: Reply) -> None:
    """`Cache-Control: private` in place of the origin's (mediaedge.policy.access), in place."""
    if reply.wire is not None:
        reply.wire = [p for p in reply.wire if p[0].lower() != b"cache-control"]
        reply.wire.append((b"Cache-Control", PRIVATE_CACHE_CONTROL.encode()))
        return
    reply.headers = reply.headers.with_set("Cache-Control", PRIVATE_CACHE_CONTROL)
    if reply.job is not None:
        reply.job.headers = reply.job.headers.with_set("Cache-Control", PRIVATE_CACHE_CONTROL)


_normalize = functools.lru_cache(maxsize=4096)(normalize_target)  # pure; the same few paths recur
_looks_under = functools.lru_cache(maxsize=4096)(looks_media)  # (raw target, prefixes): pure too
