"""Signed URLs: checking and making them. Pure; the clock is passed in.

The scheme (docs/private-media.md), for media under a `--signed-prefix`:

    sig = unpadded base64url( HMAC-SHA256( secret, exp + "\\n" + target ) )

`exp` is the expiry in unix seconds, exactly as written in the query; `target` is
the request's path and query *exactly as the client sent them* (nothing
percent-decoded or re-encoded), without the `exp`, `kid` and `sig` parameters:
the other parameters stay in their order, and when none remain there is no `?`.
An optional `kid` names the key; without it every configured key is tried
(rotation: the old and the new key are both valid while links signed with the
old one are still around), with it only that key.

Like nginx's `secure_link` and CloudFront's signed URLs, the signature covers the
expiry, so a link cannot be extended, and the path, so it cannot be moved. Unlike
them, parameters are matched byte for byte: `%65xp=` is not `exp=` (percent-decoding
names before matching would let two spellings of one URL carry different
parameters), so an encoded name is an ordinary parameter and is covered by the
signature like any other. Anything malformed — no signature, a signature of the
wrong length or alphabet, an `exp` that is not 1 to 15 decimal digits, a parameter
given twice, an unknown `kid` — is "bad signature": a refusal never says which
part was wrong. Signatures are compared in constant time (`hmac.compare_digest`).
"""
from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass

SIGNATURE_PARAMS = ("exp", "kid", "sig")
EXPIRED = "expired"
SIGNATURE = "signature"
REFUSAL_TEXT = {EXPIRED: "expired", SIGNATURE: "bad signature"}

_EXP_RE = re.compile(r"[0-9]{1,15}")  # up to year 31 million; a longer one is malformed, never an overflow
_SIG_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding
_KID_RE = re.compile(r"[A-Za-z0-9._~-]{1,64}")  # RFC 3986 unreserved: the same in every URL spelling


@dataclass(frozen=True)
class SigningKey:
    kid: str | None
    secret: bytes


@dataclass(frozen=True)
class Allowed:
    """A valid, unexpired signature; `target` is the request without exp, kid and sig."""

    target: str


@dataclass(frozen=True)
class Denied:
    """`reason` is `signature` or `expired` (the metric label); `text` the 403 body."""

    reason: str

    @property
    def text(self) -> str:
        return REFUSAL_TEXT[self.reason]


def parse_signing_key(text: str) -> SigningKey:
    """`[KID:]SECRET`. A key id is 1-64 unreserved URL characters (letters, digits, `.`,
    `_`, `~`, `-`); text before the first `:` that is not one belongs to the secret."""
    kid, colon, secret = text.partition(":")
    if colon and _KID_RE.fullmatch(kid):
        if not secret:
            raise ValueError(f"key {kid!r} has an empty secret")
        return SigningKey(kid, secret.encode())
    if not text:
        raise ValueError("empty signing key")
    return SigningKey(None, text.encode())


def signature(secret: bytes, exp: str, target: str) -> str:
    """The `sig` value for `target` (path and query without exp, kid and sig) and `exp`."""
    message = exp.encode("ascii") + b"\n" + target.encode("utf-8", "surrogateescape")
    digest = hmac.digest(secret, message, "sha256")  # one-shot, in C: a third of hmac.new's time
    return base64.urlsafe_b64encode(digest)[:43].decode("ascii")


def split_signed(raw_target: str) -> tuple[str, dict[str, str]] | None:
    """The target without exp, kid and sig, and their values; None when one is repeated."""
    path, question, query = raw_target.partition("?")
    if not question or not query:
        return path, {}
    kept: list[str] = []
    found: dict[str, str] = {}
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        if name in SIGNATURE_PARAMS:
            if name in found:
                return None  # which one counts would be a guess: refuse
            found[name] = value
        else:
            kept.append(piece)
    return (path + "?" + "&".join(kept) if kept else path), found


def verify(raw_target: str, keys: tuple[SigningKey, ...], now: float) -> Allowed | Denied:
    """Check the signature of `raw_target` (path and query as sent) against `keys` at `now`."""
    split = split_signed(raw_target)
    if split is None:
        return Denied(SIGNATURE)
    target, params = split
    exp, sig, kid = params.get("exp"), params.get("sig"), params.get("kid")
    if exp is None or sig is None or not _EXP_RE.fullmatch(exp) or not _SIG_RE.fullmatch(sig):
        return Denied(SIGNATURE)
    candidates = keys if kid is None else tuple(k for k in keys if k.kid == kid)
    valid = False
    for key in candidates:  # every candidate is tried: the time taken says nothing about which matched
        valid |= hmac.compare_digest(signature(key.secret, exp, target), sig)
    if not valid:
        return Denied(SIGNATURE)
    if now > int(exp):
        return Denied(EXPIRED)
    return Allowed(target)


def sign_target(target: str, secret: str | bytes, exp: int, kid: str | None = None) -> str:
    """`target` (path and optional query, as it will be requested) with exp, kid and sig added.

    `exp` is the expiry in unix seconds. The target must not carry exp, kid or sig
    already. Parameters are appended after the target's own, so the link is the
    target as given plus `exp=...&kid=...&sig=...`.
    """
    if isinstance(exp, bool) or not isinstance(exp, int) or not _EXP_RE.fullmatch(str(exp)):
        raise ValueError(f"exp must be unix seconds from 0 to 15 digits, got {exp!r}")
    if not isinstance(target, str) or not target.startswith("/") or "#" in target:
        raise ValueError(f"target must be a path starting with '/' (and no fragment), got {target!r}")
    if kid is not None and not _KID_RE.fullmatch(kid):
        raise ValueError(f"key id must be 1-64 letters, digits, '.', '_', '~' or '-', got {kid!r}")
    split = split_signed(target)
    if split is None or split[1]:
        raise ValueError(f"target already has an exp, kid or sig parameter: {target!r}")
    message_target = split[0]
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("empty secret")
    sig = signature(key, str(exp), message_target)
    params = f"exp={exp}" + (f"&kid={kid}" if kid is not None else "") + f"&sig={sig}"
    path, question, query = target.partition("?")
    if question and query:
        return f"{target}&{params}"
    return f"{path}?{params}"
