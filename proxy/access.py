"""App-decided access (`--auth-url`): the auth client and the memory of its answers.

The rules are in `mediaedge.policy.access`; this module does the I/O and keeps state.

`AuthDecisions` remembers each answer for `--auth-ttl` seconds per (the client's
`Cookie` and `Authorization` values, target as sent). It is an LRU bounded both in
entries and in (estimated) bytes, so a flood of requests with made-up cookies
costs a fixed amount of memory and evicts the oldest answers, never grows the
process. Credentials are not kept: the key is a keyed BLAKE2b digest of them and
the target (the key is random per process, so nobody can aim a collision), and a
dump of the process shows no session cookie. An invalidation of a target (publish,
delete, purge) drops the answers remembered for it, so a change of who may see a
file reaches clients at once, not `--auth-ttl` later.

`AuthClient` asks the app. Like the upstream client (`mediaedge.upstream`) it keeps no
cookie jar and adds no field of its own, never follows a redirect, and bounds the
whole exchange by `--upstream-timeout`. Concurrent asks with the same key share one
request to the app.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Callable

import httpx

from mediaedge.headers import Headers
from mediaedge.policy.access import AUTH_FIELDS, AuthAnswer, auth_answer, auth_failed
from mediaedge.upstream import stateless_client

log = logging.getLogger("mediaedge.access")

MAX_ENTRIES = 100_000
MAX_BYTES = 32 << 20
# Estimated bytes (CPython 3.11, 64-bit; tests/test_access.py measures them): one
# remembered answer (OrderedDict node, 16-byte key, value tuple, float, its slot in the
# index set), and one target in the index (its set, dict slot, string header) plus its
# length. 100,000 answers for one file cost ~31 MiB; for distinct files the byte
# bound stops them near 50,000.
ENTRY_COST = 320
TARGET_COST = 320


class AuthDecisions:
    """An LRU of the app's answers: key -> (expires_at, answer, canonical target)."""

    def __init__(self, ttl: float, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self._salt = os.urandom(16)
        self._entries: OrderedDict[bytes, tuple[float, AuthAnswer, str]] = OrderedDict()
        self._by_target: dict[str, set[bytes]] = {}
        self.bytes = 0
        # Bumped by every invalidation: an answer asked for before one is not remembered
        # (the app may have answered from the permissions the invalidation replaced).
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, headers: Headers, raw_target: str) -> bytes:
        """The digest naming (Cookie values, Authorization values, target as sent)."""
        h = hashlib.blake2b(digest_size=16, key=self._salt)
        for name in AUTH_FIELDS:
            for value in headers.get_all(name):
                h.update(name.encode() + b"\x00" + value.encode("utf-8", "surrogateescape") + b"\x00")
            h.update(b"\x01")
        h.update(raw_target.encode("utf-8", "surrogateescape"))
        return h.digest()

    def get(self, key: bytes) -> AuthAnswer | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if self.clock() >= found[0]:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: bytes, answer: AuthAnswer, target: str) -> None:
        """Remember `answer` for `key`; `target` is the canonical one invalidations name."""
        if self.ttl <= 0:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (self.clock() + self.ttl, answer, target)
        keys = self._by_target.get(target)
        if keys is None:
            keys = self._by_target[target] = set()
            self.bytes += TARGET_COST + len(target)
        keys.add(key)
        self.bytes += ENTRY_COST
        while self._entries and (len(self._entries) > self.max_entries or self.bytes > self.max_bytes):
            self._remove(next(iter(self._entries)))

    def drop(self, targets: list[str]) -> None:
        self.generation += 1
        for target in targets:
            for key in self._by_target.get(target, set()).copy():
                self._remove(key)

    def drop_prefix(self, prefix: str) -> None:
        self.drop([t for t in self._by_target if t.startswith(prefix)])

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_target.clear()
        self.bytes = 0

    def _remove(self, key: bytes) -> None:
        _, _, target = self._entries.pop(key)
        self.bytes -= ENTRY_COST
        keys = self._by_target.get(target)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_target[target]
                self.bytes -= TARGET_COST + len(target)


class AuthClient:
    """Asks `--auth-url` whether a request may see a target."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._client = stateless_client(timeout=timeout)

    async def ask(self, headers: Headers, raw_target: str, method: str) -> AuthAnswer:
        fields = [(name.encode(), value.encode("utf-8", "surrogateescape"))
                  for name, value in headers if name.lower() in AUTH_FIELDS]
        fields += [(b"X-Original-URI", raw_target.encode("utf-8", "surrogateescape")),
                   (b"X-Original-Method", method.encode("ascii"))]
        try:
            return await asyncio.wait_for(self._ask(fields), self.timeout)
        except TimeoutError:
            return auth_failed(f"the auth endpoint gave no answer within {self.timeout:g} s")
        except (httpx.HTTPError, OSError, ValueError) as e:
            return auth_failed(f"the auth endpoint failed: {type(e).__name__}")

    async def _ask(self, fields: list[tuple[bytes, bytes]]) -> AuthAnswer:
        request = self._client.build_request("GET", self.url, headers=fields)
        response = await self._client.send(request, stream=True)
        try:
            # The body means nothing (nginx ignores it too) and is never sent on; a short
            # one is read so the connection can be reused, a long one is not waited for.
            if int(response.headers.get("content-length") or "-1") in range(0, 65537):
                await response.aread()
        finally:
            await response.aclose()
        return auth_answer(response.status_code, response.headers.get("www-authenticate"))

    async def aclose(self) -> None:
        await self._client.aclose()


class Access:
    """The auth gate for the addon: a remembered answer, or one (shared) ask of the app."""

    def __init__(self, client: AuthClient, decisions: AuthDecisions) -> None:
        self.client = client
        self.decisions = decisions
        self._asking: dict[bytes, asyncio.Future[AuthAnswer]] = {}

    def remembered(self, key: bytes) -> AuthAnswer | None:
        return self.decisions.get(key)

    async def decide(self, key: bytes, headers: Headers, raw_target: str, method: str, target: str) -> AuthAnswer:
        pending = self._asking.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[AuthAnswer] = asyncio.get_running_loop().create_future()
        self._asking[key] = future
        generation = self.decisions.generation
        try:
            answer = await self.client.ask(headers, raw_target, method)
        except BaseException as e:  # cancelled: whoever shares this ask must not hang
            future.set_result(auth_failed(f"the ask was cancelled ({type(e).__name__})"))
            raise
        finally:
            self._asking.pop(key, None)
        if (answer.allow or answer.refused) and generation == self.decisions.generation:
            # (a failure is not remembered: the next request asks again)
            self.decisions.put(key, answer, target)
        future.set_result(answer)
        return answer

    async def aclose(self) -> None:
        await self.client.aclose()
