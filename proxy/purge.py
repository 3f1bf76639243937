"""PURGE on the data plane: a core service the mitmproxy shell calls, never forwarded.

`mediaedge.policy.purge` decides (the ACL --allow-purge-from, then media targets only);
an obeyed PURGE goes through the invalidation log like a webhook purge, so every node
sharing it drops the entries. The answer is plain data; the shell makes the response.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from mediaedge.config import Settings
from mediaedge.errors import TargetError
from mediaedge.invalidation import Invalidator
from mediaedge.policy.purge import ALLOW, purge_decision
from mediaedge.policy.target import is_media, looks_media, normalize_target
from mediaedge.webhook import PurgeEvent

log = logging.getLogger("mediaedge")

PLAIN = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class PurgeAnswer:
    """What the edge answers a PURGE: status, body, its type, and Allow on a 405."""

    status: int
    body: str
    content_type: str = PLAIN
    allow: str | None = None


async def answer_purge(raw: str, peer: str | None, settings: Settings, invalidator: Invalidator) -> PurgeAnswer:
    """Decide a PURGE of the request target `raw` from the client address `peer` and,
    when obeyed, append it to the invalidation log (a 503 when the log is down)."""
    try:
        target: str | None = normalize_target(raw)
    except TargetError:
        target = None
    prefixes = settings.media_prefixes
    decision = purge_decision(peer, settings.allow_purge_from,
                              media=target is not None and is_media(target, prefixes),
                              refused=target is None and looks_media(raw, prefixes))
    if decision.status == 200 and target is not None:
        try:
            accepted, seq, _ = await invalidator.accept([PurgeEvent(path=target)])
        except Exception as e:  # noqa: BLE001 - the state database is down: say so, never a traceback
            log.warning("PURGE %s from %s failed: %s", target, peer or "-", e)
            return PurgeAnswer(503, "PURGE failed: the invalidation log is unavailable\n")
        log.info("PURGE %s from %s: seq %d", target, peer or "-", seq)
        return PurgeAnswer(200, json.dumps({"accepted": accepted, "seq": seq}) + "\n", "application/json")
    return PurgeAnswer(decision.status, decision.reason + "\n", allow=ALLOW if decision.status == 405 else None)
