"""The publish webhook's pure pieces: signature check and event parsing.

Charter: no IO here and no clock reads. The admin plane reads the headers and
the body, calls `verify(...)` with `now` and then `parse_events(body)`, and
answers a `WebhookError` with `err.status` and `err.body()`. Because both run
before anything is applied, every refusal leaves the cache untouched.

Wire format (docs/webhooks.md):

    X-Mediaedge-Timestamp: <unix seconds>
    X-Mediaedge-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

    {"events": [{"type": "publish", "path": P, "revision": R, "prewarm"?: bool},
                {"type": "delete", "path": P, "abort_inflight"?: bool},
                {"type": "purge", "path": P | "prefix": X | "tag": T,
                 "soft"?: bool, "abort_inflight"?: bool}, ...]}     1 to 1000 events

Replays. A signed request stays valid for the whole skew window, and applying
one again is not harmless: a captured purge would empty every node's cache as
often as it is sent. `replay_key` names a request by its MAC; the invalidation
log records each accepted one with its figures, in the same transaction as its
events (mediaedge.invalidation_log), and a replay gets those figures back with
`"replayed": true` and changes nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any
from mediaedge.errors import WebhookError

MAX_BODY = 1 << 20  # bytes; larger bodies are refused with 413 before any HMAC work
MAX_SKEW = 300  # seconds between the sender's timestamp and our clock, either way
MAX_EVENTS = 1000
MAX_REVISION = 256  # characters
MAX_TAG = 1024  # characters, like Fastly's surrogate keys

TIMESTAMP_HEADER = "X-Mediaedge-Timestamp"
SIGNATURE_HEADER = "X-Mediaedge-Signature"


# --- signature ---------------------------------------------------------------

# Unix seconds, optionally with a fraction (Python's str(time.time()) is common).
_TIMESTAMP = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
# The hex is compared case-insensitively: it names the same MAC either way.
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """The `X-Mediaedge-Signature` value for `body` sent at `timestamp`."""
    message = f"{timestamp}.".encode() + body
    # surrogateescape: a secret read from a non-UTF-8 environment keeps its bytes
    key = secret.encode("utf-8", "surrogateescape")
    return "sha256=" + hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: float) -> dict[str, str]:
    """Both webhook headers for `body` sent at `now` (used by the CLI and tests)."""
    timestamp = str(int(now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(
    secret: str | None,
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
) -> None:
    """Raise `WebhookError` unless the request is signed with `secret` within the window.

    Checks run cheapest first: no secret (503), body size (413, before hashing
    up to a megabyte), header presence and shape (401), clock skew (401), and
    last the constant-time MAC comparison (401). An empty secret counts as none:
    an empty HMAC key would let anyone sign.
    """
    if not secret:
        raise WebhookError(503, "publish is disabled: no webhook secret configured")
    if len(body) > MAX_BODY:
        raise WebhookError(413, f"body is {len(body)} bytes, over the {MAX_BODY} byte limit")
    timestamp, mac = verify_head(secret, timestamp=timestamp, signature=signature, now=now)
    expected = sign(secret, timestamp, body)[len("sha256="):]
    if not hmac.compare_digest(expected, mac):
        raise WebhookError(401, f"{SIGNATURE_HEADER}: does not match the body and timestamp")


def verify_head(
    secret: str | None, *, timestamp: str | None, signature: str | None, now: float
) -> tuple[str, str]:
    """Every check `verify` makes that needs no body; (timestamp as signed, MAC in lower-case hex).

    The admin plane runs it on the request head, before reading a byte of the
    body: an unsigned or expired request is refused without buffering up to a
    megabyte of it.
    """
    if not secret:
        raise WebhookError(503, "publish is disabled: no webhook secret configured")
    if timestamp is None:
        raise WebhookError(401, f"{TIMESTAMP_HEADER}: header required")
    if signature is None:
        raise WebhookError(401, f"{SIGNATURE_HEADER}: header required")
    timestamp = timestamp.strip(" \t")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise WebhookError(401, f"{TIMESTAMP_HEADER}: must be unix seconds")
    match = _SIGNATURE.fullmatch(signature.strip(" \t"))
    if match is None:
        raise WebhookError(401, f"{SIGNATURE_HEADER}: must be sha256=<64 hex digits>")
    skew = now - float(timestamp)
    if abs(skew) > MAX_SKEW:
        off = f"{int(skew)} s old" if skew > 0 else f"{int(-skew)} s in the future"
        raise WebhookError(
            401, f"{TIMESTAMP_HEADER}: {off}, more than {MAX_SKEW} s off (check the sender's clock)"
        )
    return timestamp, match.group(1).lower()


def replay_key(signature: str) -> str:
    """The name under which a verified request is remembered: its MAC in lower-case hex.

    The hex is compared case-insensitively by `verify`, so `sha256=AB..` and
    `sha256=ab..` are one request; keying on the raw header would let a replay
    through by changing the case. Only call this after `verify` accepted it.
    """
    match = _SIGNATURE.fullmatch(signature.strip(" \t"))
    if match is None:
        raise ValueError("not a verified signature")
    return match.group(1).lower()


# --- events ------------------------------------------------------------------


@dataclass(frozen=True)
class PublishEvent:
    """`revision` is now current for `path`; `prewarm` asks to fetch it in the background."""

    path: str
    revision: str
    prewarm: bool = False


@dataclass(frozen=True)
class DeleteEvent:
    """Drop `path`'s entries; the next request asks the origins."""

    path: str
    abort_inflight: bool = False


@dataclass(frozen=True)
class PurgeEvent:
    """Drop (or, `soft`, mark stale) entries matching exactly one of path, prefix, tag."""

    path: str | None = None
    prefix: str | None = None
    tag: str | None = None
    soft: bool = False
    abort_inflight: bool = False


Event = PublishEvent | DeleteEvent | PurgeEvent

# Which keys each type accepts; the order is the canonical order of event_to_json.
_FIELDS: dict[str, tuple[str, ...]] = {
    "publish": ("type", "path", "revision", "prewarm"),
    "delete": ("type", "path", "abort_inflight"),
    "purge": ("type", "path", "prefix", "tag", "soft", "abort_inflight"),
}
_ALL_FIELDS = frozenset(k for keys in _FIELDS.values() for k in keys)
_SELECTORS = ("path", "prefix", "tag")

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_REVISION = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")  # printable ASCII, no edge spaces
_TAG = re.compile(r"[\x21-\x7e]+")  # one Surrogate-Key token: visible ASCII, no whitespace
_PARTIAL_ESCAPE = re.compile(r"%[0-9A-Fa-f]?\Z")


class _Object(dict):  # type: ignore[type-arg]
    """A JSON object that remembers keys given twice (JSON allows it; we refuse it)."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicates: list[str] = []
        for key, _ in pairs:
            if key in seen:
                duplicates.append(key)
            seen.add(key)
        obj.duplicates = tuple(duplicates)
    return obj


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _quote(value: str, limit: int = 64) -> str:
    """A user-supplied string made safe and short for an error message."""
    return json.dumps(value[:limit] + ("…" if len(value) > limit else ""), ensure_ascii=True)


def _field(where: str, key: str) -> str:
    return f"{where}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{where}[{_quote(key)}]"


def parse_events(body: bytes) -> list[Event]:
    """The events of a webhook body, or a 400 `WebhookError` naming the first problem."""
    try:
        doc = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_object_pairs,
            parse_constant=_refuse_constant,
        )
    except UnicodeDecodeError:
        raise WebhookError(400, "body is not valid JSON: not UTF-8") from None
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError, NaN/Infinity and over-long integers;
        # RecursionError a hostile nesting depth.
        raise WebhookError(400, "body is not valid JSON") from None
    try:
        return _events(doc)
    except ValueError as e:
        raise WebhookError(400, str(e)) from None


def _events(doc: Any) -> list[Event]:
    if not isinstance(doc, dict):
        raise ValueError('body: must be a JSON object {"events": [...]}')
    _check_keys(doc, "body", allowed=("events",))
    if "events" not in doc:
        raise ValueError("events: required")
    events = doc["events"]
    if not isinstance(events, list):
        raise ValueError("events: must be a list")
    if not 1 <= len(events) <= MAX_EVENTS:
        raise ValueError(f"events: 1 to {MAX_EVENTS} events, got {len(events)}")
    return [_event(item, f"events[{i}]") for i, item in enumerate(events)]


def _check_keys(obj: dict[str, Any], where: str, allowed: tuple[str, ...], kind: str = "") -> None:
    duplicates = getattr(obj, "duplicates", ())
    if duplicates:
        raise ValueError(f"{_field(where, duplicates[0])}: given twice")
    for key in obj:
        if key not in allowed:
            if kind and key in _ALL_FIELDS:
                raise ValueError(f"{_field(where, key)}: not allowed on {kind}")
            raise ValueError(f"{_field(where, key)}: unknown key")


def _event(obj: Any, where: str, *, normalize: bool = True) -> Event:
    """One event from its JSON object, or ValueError naming the field at `where`."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: must be an object")
    if "type" not in obj:
        raise ValueError(f"{where}.type: required")
    kind = obj["type"]
    if not isinstance(kind, str):
        raise ValueError(f"{where}.type: must be a string")
    if kind not in _FIELDS:
        raise ValueError(f"{where}.type: unknown type {_quote(kind)} (publish, delete or purge)")
    _check_keys(obj, where, allowed=_FIELDS[kind], kind=kind)
    if kind == "publish":
        return PublishEvent(
            path=_path(obj, where, normalize),
            revision=_revision(obj, where),
            prewarm=_flag(obj, where, "prewarm"),
        )
    if kind == "delete":
        return DeleteEvent(
            path=_path(obj, where, normalize),
            abort_inflight=_flag(obj, where, "abort_inflight"),
        )
    given = [k for k in _SELECTORS if k in obj]
    if len(given) != 1:
        got = f" (got {', '.join(given)})" if given else ""
        raise ValueError(f"{where}: purge needs exactly one of path, prefix, tag{got}")
    return PurgeEvent(
        path=_path(obj, where, normalize) if "path" in obj else None,
        prefix=_prefix(obj, where, normalize) if "prefix" in obj else None,
        tag=_tag(obj, where) if "tag" in obj else None,
        soft=_flag(obj, where, "soft"),
        abort_inflight=_flag(obj, where, "abort_inflight"),
    )


def _string(obj: dict[str, Any], where: str, key: str) -> str:
    if key not in obj:
        raise ValueError(f"{where}.{key}: required")
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key}: must be a string")
    return value


def _flag(obj: dict[str, Any], where: str, key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key}: must be true or false")
    return value


def _normalize(value: str, where: str, key: str) -> str:
    from mediaedge.policy.target import normalize_target  # at call time: a sibling module

    try:
        return normalize_target(value)
    except ValueError as e:  # TargetError, and any other refusal of a hostile string
        raise ValueError(f"{where}.{key}: {e}") from None


def _path(obj: dict[str, Any], where: str, normalize: bool) -> str:
    value = _string(obj, where, "path")
    if not value:
        raise ValueError(f"{where}.path: must not be empty")
    return _normalize(value, where, "path") if normalize else value


def _prefix(obj: dict[str, Any], where: str, normalize: bool) -> str:
    """A prefix of canonical targets, in the canonical form of its own characters.

    It is normalised like a path, so `/media/a%7e` meets the key `/media/a~`.
    A prefix may stop where a target may not: inside a percent-escape
    (`/media/a%2`) or on a dot (`/media/.`). The escape's tail is kept as
    sent (hex upper-cased), and a sentinel character appended before
    normalising, then removed, keeps a trailing dot from reading as a segment.
    """
    value = _string(obj, where, "prefix")
    if not value.startswith("/"):
        raise ValueError(f"{where}.prefix: must start with '/'")
    if not normalize:
        return value
    partial = _PARTIAL_ESCAPE.search(value)
    tail = partial.group().upper() if partial else ""
    head = value[: len(value) - len(tail)]
    return _normalize(head + "x", where, "prefix")[:-1] + tail


def _revision(obj: dict[str, Any], where: str) -> str:
    value = _string(obj, where, "revision")
    if not value:
        raise ValueError(f"{where}.revision: must not be empty")
    if len(value) > MAX_REVISION:
        raise ValueError(f"{where}.revision: longer than {MAX_REVISION} characters")
    if not _REVISION.fullmatch(value):
        raise ValueError(
            f"{where}.revision: printable ASCII only, without leading or trailing spaces"
            " (it is compared with the X-Media-Revision header)"
        )
    return value


def _tag(obj: dict[str, Any], where: str) -> str:
    value = _string(obj, where, "tag")
    if not value:
        raise ValueError(f"{where}.tag: must not be empty")
    if len(value) > MAX_TAG:
        raise ValueError(f"{where}.tag: longer than {MAX_TAG} characters")
    if not _TAG.fullmatch(value):
        raise ValueError(f"{where}.tag: one Surrogate-Key token: visible ASCII, no whitespace")
    return value


# --- the log's form ------------------------------------------------------------


def event_to_json(e: Event) -> dict[str, Any]:
    """The canonical JSON object of an event, as stored in the invalidation log.

    Every field of the type is present (defaults included) except the two
    unused purge selectors, so a reader never has to know the defaults.
    """
    if isinstance(e, PublishEvent):
        return {"type": "publish", "path": e.path, "revision": e.revision, "prewarm": e.prewarm}
    if isinstance(e, DeleteEvent):
        return {"type": "delete", "path": e.path, "abort_inflight": e.abort_inflight}
    if isinstance(e, PurgeEvent):
        d: dict[str, Any] = {"type": "purge"}
        for key in _SELECTORS:
            if getattr(e, key) is not None:
                d[key] = getattr(e, key)
        d["soft"] = e.soft
        d["abort_inflight"] = e.abort_inflight
        return d
    raise TypeError(f"not an event: {e!r}")


def event_from_json(d: dict[str, Any]) -> Event:
    """The event stored by `event_to_json`; ValueError when `d` is not one.

    Paths are taken as stored, not normalised again: every node must apply a
    log entry to exactly the key the accepting node applied it to, even if a
    later version normalises differently.
    """
    return _event(d, "event", normalize=False)
