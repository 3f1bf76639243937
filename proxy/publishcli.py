"""`mediaedge publish` and `mediaedge purge`: send signed webhooks to a node's admin plane.

The CLI module parses the flags; these two functions build the events, sign
the body with the current time and POST it to `{admin}/publish`. Exit codes:
0 accepted, 1 refused or unreachable (one line on stderr), 2 a usage problem
found before sending.

What was done is printed in words (`purged prefix /media/ (seq 12)`), or, with
`--json`, as the server's JSON answer for scripts.

Many paths are split into several requests of at most 1000 events and well
under 1 MiB each; the answers are then summed into one.

`purge --all` is a purge of the prefix `/`: the edge stores media only, so that
is every entry, whatever media prefixes the node was started with.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import requests

from mediaedge.webhook import MAX_BODY, MAX_EVENTS, signed_headers

DEFAULT_ADMIN = "http://127.0.0.1:8081"
SECRET_ENV = ("MEDIAEDGE_WEBHOOK_SECRET", "MEDIAEDGE_SECRET")  # the server's setting works here too
TIMEOUT = 10.0  # seconds, connect and read
BATCH_BYTES = MAX_BODY - 4096  # headroom for the envelope


class _Refused(Exception):
    """The webhook could not be delivered or was refused; the message is the stderr line."""


class _Usage(Exception):
    """The command line is wrong; nothing was sent."""


def run_publish(args: Any) -> int:
    """Publish a new revision of, or delete, each of `args.paths`."""
    return _main(lambda: _publish_events(args), args)


def run_purge(args: Any) -> int:
    """Purge by exactly one of `args.path`, `args.prefix`, `args.tag`."""
    return _main(lambda: [_purge_event(args)], args)


def _main(build: Any, args: Any) -> int:
    try:
        events = build()
        secret = _secret(args)
        answer = _send_all(events, admin=_admin_url(getattr(args, "admin", None)), secret=secret)
    except _Usage as e:
        print(f"mediaedge: error: {e}", file=sys.stderr)
        return 2
    except _Refused as e:
        print(f"mediaedge: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer) if getattr(args, "json", False) else summary(events, answer))
    return 0


def summary(events: list[dict[str, Any]], answer: dict[str, Any]) -> str:
    """What the accepted events did, in words: `purged prefix /media/ (seq 12)`."""
    first = events[0]
    kind = first["type"]
    many = len(events) > 1
    if kind == "publish":
        what = f"{len(events)} paths" if many else first["path"]
        text = f"published {what} as revision {first['revision']}"
        if first.get("prewarm"):
            text += ", prewarming"
    elif kind == "delete":
        text = f"deleted {len(events)} paths" if many else f"deleted {first['path']}"
        if first.get("abort_inflight"):
            text += ", downloads in flight cut"
    else:
        selector = next(k for k in ("path", "prefix", "tag") if k in first)
        if selector == "prefix" and first["prefix"] == "/":
            text = "purged prefix /, every entry"
        else:
            text = f"purged {selector} {first[selector]}"
        if first.get("soft"):
            text = "soft-" + text + ", marked stale (served while one refetch runs)"
        if first.get("abort_inflight"):
            text += ", downloads in flight cut"
    figures = f"seq {answer.get('seq')}"
    if answer.get("requests"):
        figures += f", {answer['requests']} requests"
    text += f" ({figures})"
    if answer.get("replayed"):
        text += "; a replay of an earlier request: nothing changed"
    return text


def _publish_events(args: Any) -> list[dict[str, Any]]:
    paths = list(getattr(args, "paths", None) or [])
    revision = getattr(args, "revision", None)
    delete = bool(getattr(args, "delete", False))
    prewarm = bool(getattr(args, "prewarm", False))
    if not paths:
        raise _Usage("publish: give at least one PATH")
    if delete and revision is not None:
        raise _Usage("publish: give either --revision R or --delete, not both")
    if delete:
        if prewarm:
            raise _Usage("publish: --prewarm needs --revision, not --delete")
        abort = bool(getattr(args, "abort_inflight", False))
        return [{"type": "delete", "path": p, **({"abort_inflight": True} if abort else {})} for p in paths]
    if not revision:
        raise _Usage("publish: give --revision R (the new current revision) or --delete")
    if getattr(args, "abort_inflight", False):
        raise _Usage("publish: --abort-inflight needs --delete (a new revision never cuts running downloads)")
    extra = {"prewarm": True} if prewarm else {}
    return [{"type": "publish", "path": p, "revision": revision, **extra} for p in paths]


def _purge_event(args: Any) -> dict[str, Any]:
    given = {k: getattr(args, k, None) for k in ("path", "prefix", "tag")}
    given = {k: v for k, v in given.items() if v is not None}
    if getattr(args, "all", False):
        given.setdefault("prefix", "/")  # the edge stores media only: "/" is every entry
        if len(given) != 1 or given["prefix"] != "/":
            raise _Usage("purge: give exactly one of --path, --prefix, --tag, --all")
    if len(given) != 1:
        raise _Usage("purge: give exactly one of --path, --prefix, --tag, --all")
    event: dict[str, Any] = {"type": "purge", **given}
    if getattr(args, "soft", False):
        event["soft"] = True
    if getattr(args, "abort_inflight", False):
        event["abort_inflight"] = True
    return event


def _secret(args: Any) -> str:
    secret = getattr(args, "secret", None)
    if not secret and getattr(args, "secret_file", None):
        try:
            secret = read_secret_file(args.secret_file)
        except ValueError as e:
            raise _Usage(f"--secret-file: {e}") from None
    for name in SECRET_ENV:
        secret = secret or os.environ.get(name)
    if not secret:
        raise _Usage(f"no webhook secret: set {SECRET_ENV[0]}, or give --secret-file PATH")
    return str(secret)


def read_secret_file(path: str) -> str:
    """The secret held in a file (its first line, trailing whitespace dropped), as
    systemd credentials and Kubernetes secrets provide it."""
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.readline().rstrip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path!r}: {getattr(e, 'strerror', None) or e}") from None
    if not secret:
        raise ValueError(f"{path!r} is empty")
    return secret


def _admin_url(admin: str | None) -> str:
    admin = (admin or DEFAULT_ADMIN).rstrip("/")
    return admin if "://" in admin else f"http://{admin}"


def _batches(events: list[dict[str, Any]]) -> list[bytes]:
    """Bodies of at most MAX_EVENTS events and BATCH_BYTES bytes, in order."""
    bodies: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for event in events:
        item = json.dumps(event, separators=(",", ":")).encode()
        if batch and (len(batch) == MAX_EVENTS or size + len(item) + 1 > BATCH_BYTES):
            bodies.append(_body(batch))
            batch, size = [], 0
        batch.append(item)
        size += len(item) + 1
    if batch:
        bodies.append(_body(batch))
    return bodies


def _body(items: list[bytes]) -> bytes:
    return b'{"events":[' + b",".join(items) + b"]}"


def _send_all(events: list[dict[str, Any]], *, admin: str, secret: str) -> dict[str, Any]:
    answers = [_send(body, admin=admin, secret=secret) for body in _batches(events)]
    if len(answers) == 1:
        return answers[0]
    return {
        "accepted": sum(int(a.get("accepted", 0)) for a in answers),
        "seq": answers[-1].get("seq"),
        "requests": len(answers),
    }


def _send(body: bytes, *, admin: str, secret: str) -> dict[str, Any]:
    url = f"{admin}/publish"
    headers = {"Content-Type": "application/json", **signed_headers(secret, body, time.time())}
    try:
        resp = requests.post(url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as e:
        raise _Refused(f"cannot reach {url}: {_reason(e)}") from None
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.status_code == 200 and isinstance(answer, dict):
        return answer
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        message = answer["error"]
    else:
        text = resp.text.strip()
        message = text.splitlines()[0][:200] if text else (resp.reason or "no answer")
    raise _Refused(f"{resp.status_code} {message}")


def _reason(e: requests.RequestException) -> str:
    if isinstance(e, requests.Timeout):
        return f"no answer within {TIMEOUT:.0f} s"
    if isinstance(e, requests.ConnectionError):
        # requests nests urllib3's errors; the innermost message is the useful one
        inner: BaseException = e
        while inner.__context__ is not None or getattr(inner, "reason", None) is not None:
            nxt = getattr(inner, "reason", None) or inner.__context__
            if not isinstance(nxt, BaseException) or nxt is inner:
                break
            inner = nxt
        text = str(inner).strip()
        return text.splitlines()[0] if text else "connection failed"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
