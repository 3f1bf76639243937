"""Private media: which gate a target is behind and what the app's answer means. Pure.

Two gates, both off unless their prefixes are configured (docs/private-media.md):

  - `--signed-prefix`: the query must carry a valid signature (`mediaedge.policy.signing`);
  - `--auth-prefix`: the app is asked, as nginx's `auth_request` does: one
    `GET --auth-url` with the client's `Cookie` and `Authorization`, `X-Original-URI`
    and `X-Original-Method`. A 2xx allows; 401 and 403 are the client's answer; any
    other status, a redirect (never followed: a login page is not a yes) or no answer
    within `--upstream-timeout` is 503, failing closed.

A target under both prefixes passes both gates, the signature first (it costs no
round trip). Once a request is allowed it is served from the shared entry: the
bytes of a private file are cached once for everyone allowed, while what is sent
to clients carries `Cache-Control: private` in place of the origin's, so no shared
cache beyond the edge keeps a copy (RFC 9111 5.2.2.7).
"""
from __future__ import annotations

from dataclasses import dataclass, field

PRIVATE_CACHE_CONTROL = "private"
# What refusals carry (RFC 9211): the edge did not use the cache, and says why.
DENIED_CACHE_STATUS_DETAIL = "denied"
AUTH_FIELDS = ("cookie", "authorization")  # what the app decides on, and what the decision is remembered by


@dataclass(frozen=True)
class Gates:
    """The configured prefixes; `any` is false when private media is off (no work per request)."""

    signed: tuple[str, ...] = ()
    auth: tuple[str, ...] = ()
    any: bool = field(init=False)  # read on every media request: computed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "any", bool(self.signed or self.auth))

    def needs_signature(self, target: str) -> bool:
        return target.startswith(self.signed) if self.signed else False

    def needs_auth(self, target: str) -> bool:
        return target.startswith(self.auth) if self.auth else False


@dataclass(frozen=True)
class AuthAnswer:
    """What the app's answer means for the client: `allow`, or `status` to send."""

    allow: bool
    status: int  # 200 when allowed; 401 / 403 refused; 503 failed closed
    reason: str  # one line for logs and the 503 body
    www_authenticate: str | None = None  # passed on with a 401 (RFC 9110 11.6.1)

    @property
    def refused(self) -> bool:
        """The app said no (401/403): counted as denied, and remembered like a yes."""
        return self.status in (401, 403)


def auth_answer(status: int, www_authenticate: str | None = None) -> AuthAnswer:
    """The meaning of the auth endpoint's status code (nginx auth_request's rules)."""
    if 200 <= status < 300:
        return AuthAnswer(True, 200, "allowed")
    if status in (401, 403):
        return AuthAnswer(False, status, "unauthorized" if status == 401 else "forbidden",
                          www_authenticate if status == 401 else None)
    if 300 <= status < 400:
        return AuthAnswer(False, 503, f"the auth endpoint answered a redirect ({status}); it is not followed")
    return AuthAnswer(False, 503, f"the auth endpoint answered {status}")


def auth_failed(why: str) -> AuthAnswer:
    """No usable answer (timeout, refused connection): fail closed."""
    return AuthAnswer(False, 503, why)
