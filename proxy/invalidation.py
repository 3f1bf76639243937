"""Applying invalidation events: from this node's webhook, and from every other node.

Order of an accepted webhook: append every event to the durable log (one
transaction) → apply them to this node's cache → answer 200. Other nodes poll the
log (or wake on PostgreSQL NOTIFY) and apply what they have not applied yet. The
last applied sequence lives in the cache directory's durable state, next to the
entries it describes, so a node that was down catches up before it serves any
cached entry (the engine's `ready` gate).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mediaedge.contract import MediaRequest
from mediaedge.engine import Engine
from mediaedge.headers import Headers
from mediaedge.invalidation_log import Accepted, InvalidationLog
from mediaedge.pools import in_database_thread
from mediaedge.stats import StatsSink
from mediaedge.webhook import DeleteEvent, Event, PublishEvent, PurgeEvent, event_from_json, event_to_json

log = logging.getLogger("mediaedge.invalidation")

POLL_INTERVAL = 0.1  # seconds between log polls (SQLite, MySQL); PostgreSQL wakes on NOTIFY
PRUNE_EVERY = 60.0  # seconds between deletions of events older than --log-retention


def missed_pruned_events(applied: int, oldest_kept: int | None) -> bool:
    """Whether events this node never applied were deleted from the log (retention).

    The log keeps every seq from `oldest_kept` up; a node that applied up to `applied`
    needs `applied + 1` onwards, so it missed events when `applied + 1 < oldest_kept`.
    An empty log (None) lost nothing: pruning always keeps the newest event."""
    return oldest_kept is not None and applied + 1 < oldest_kept


def invalidation_lag(*, now: float, applied: int, log_latest: int, caught_up_at: float | None) -> tuple[float, int]:
    """(seconds, events) this node is behind the invalidation log.

    Events: the log's highest seq minus the highest this node applied. Seconds: time
    since the node last read the log to its end with everything applied (None: not
    yet), rather than the age of the oldest unapplied event, because a node that cannot
    read the log at all cannot see that event; this way an outage of the state database
    or a failing apply shows as a lag that grows, and a healthy node stays under a
    poll interval."""
    seconds = 0.0 if caught_up_at is None else max(0.0, now - caught_up_at)
    return seconds, max(0, log_latest - applied)


LAG_QUERY_TIMEOUT = 2.0  # seconds /metrics waits for the log's highest seq


def event_kind(e: Event) -> str:
    if isinstance(e, PublishEvent):
        return "publish"
    if isinstance(e, DeleteEvent):
        return "delete"
    return "soft-purge" if e.soft else "purge"


class Invalidator:
    def __init__(
        self, engine: Engine, log_: InvalidationLog, *, node: str, stats: StatsSink | None = None,
        clock: Callable[[], float] = time.time, retention: float = 7 * 86400.0,
        auth_decisions: Any | None = None,
    ) -> None:
        self.engine = engine
        # mediaedge.access.AuthDecisions: the app's remembered answers for a target are
        # forgotten with it, so a change of who may see a file applies at once.
        self.auth_decisions = auth_decisions
        self.retention = retention
        self._pruned_at = 0.0
        self.store = engine.store
        # The invalidator talks to the cache facade and the coalescer, never to engine internals.
        self.cache = engine.cache
        self.flights = engine.flights
        self.log = log_
        self.node = node
        self.stats = stats
        self.clock = clock
        self._apply_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.latest_seq = 0
        self._cursor_saved = 0
        self._cursor_saved_at = 0.0
        self._applied: int | None = None  # last sequence this process applied
        self.caught_up_at: float | None = None  # clock time the log was last read to its end
        self._log_latest = 0  # the log's highest seq, as last read

    # ------------------------------------------------------------------ webhook
    async def accept(self, events: list[Event], *, signature: str | None = None) -> Accepted:
        """Log, then apply; returns the answer's figures. Raises if the log is down.

        With `signature` (the webhook's replay key) a request already accepted
        by any node sharing the log changes nothing: its first figures come
        back with `replayed` set, and nothing is applied.
        """
        records = [event_to_json(e) for e in events]
        if signature is None:
            seqs = await in_database_thread(self.log.append, records, node=self.node, at=self.clock())
            result = Accepted(len(seqs), seqs[-1], False)
        else:
            result = await in_database_thread(
                self.log.append_signed, records, signature=signature, node=self.node, at=self.clock()
            )
            if result.replayed and (self._applied or 0) >= result.seq:
                return result
        # A replay adds nothing to the log, but its 200 still means "applied here": a
        # sender retrying on another node must not get an answer before that node has
        # caught up with the first request's events.
        async with self._apply_lock:
            # Apply everything up to and including ours, in log order.
            await self._catch_up_locked()
        return result

    # ------------------------------------------------------------------ followers
    async def catch_up(self) -> int:
        async with self._apply_lock:
            return await self._catch_up_locked()

    async def _catch_up_locked(self) -> int:
        if self._applied is None:
            # Read once: afterwards this process knows what it applied. Kept per process on
            # purpose: processes sharing a cache directory each hold their own memory tier
            # and running downloads, so each must apply every event itself.
            self._applied = await asyncio.to_thread(self.store.get_applied_seq)
            await self._drop_cache_if_events_were_missed()
        applied = self._applied
        count = 0
        while True:
            entries = await in_database_thread(self.log.since, applied, limit=1000)
            if not entries:
                break
            events: list[Event] = []
            for entry in entries:
                try:
                    events.append(event_from_json(entry.event))
                except Exception as e:  # noqa: BLE001 - a bad row must not stop the log
                    log.warning("skipping unreadable invalidation seq %s: %s", entry.seq, e)
            applied = entries[-1].seq
            # Cache side of the whole batch in one worker-thread call, the applied
            # sequence recorded in the same step; then the loop side, in log order.
            targets = await asyncio.to_thread(self._apply_to_store, events, applied)
            for event, t in zip(events, targets):
                self._apply_on_loop(event, t)
            self._applied = applied
            count += len(entries)
        self.latest_seq = max(self.latest_seq, applied)
        self._log_latest = max(self._log_latest, applied)
        self.caught_up_at = self.clock()
        await self._record_cursor(applied)
        return count

    async def lag(self) -> tuple[float, int]:
        """(seconds, events) behind the log, for /metrics: asks the log its highest seq,
        waiting at most LAG_QUERY_TIMEOUT (a log that does not answer keeps the last
        figure, and the seconds behind grow)."""
        try:
            latest = await asyncio.wait_for(in_database_thread(self.log.latest_seq), LAG_QUERY_TIMEOUT)
            self._log_latest = max(self._log_latest, latest)
        except Exception as e:  # noqa: BLE001 - reporting: the growing seconds say it
            log.debug("invalidation lag: cannot read the log's latest seq: %s", e)
        return invalidation_lag(now=self.clock(), applied=self._applied or 0, log_latest=self._log_latest,
                                caught_up_at=self.caught_up_at)

    async def _drop_cache_if_events_were_missed(self) -> None:
        """At start: events older than --log-retention are gone from the log. A node whose
        last applied event is older than the oldest kept one cannot know what it missed,
        so it drops every entry (and every published revision) and reads on from there."""
        assert self._applied is not None
        oldest = await in_database_thread(self.log.oldest_seq)
        if not missed_pruned_events(self._applied, oldest):
            return
        assert oldest is not None
        entries = await asyncio.to_thread(self.store.entry_count)
        log.warning("invalidation log: this node last applied seq %d, but the oldest kept is %d "
                    "(--log-retention); dropping the whole cache (%d entries)", self._applied, oldest, entries)
        def drop_all() -> None:
            self.cache.epochs.record("purge", prefix="")
            self.store.clear()
            self.store.clear_all_published()
            self.store.set_applied_seq(oldest - 1)

        await asyncio.to_thread(self.cache.locked, drop_all)
        self.cache.forget(everything=True, keep_unstored=True)
        if self.auth_decisions is not None:
            self.auth_decisions.clear()
        self._applied = oldest - 1

    async def prune(self) -> int:
        """Delete events older than --log-retention; any node may, all nodes do (idempotent)."""
        deleted = await in_database_thread(self.log.prune, self.clock() - self.retention)
        if deleted:
            log.info("invalidation log: deleted %d event(s) older than %gs", deleted, self.retention)
        return deleted

    async def _record_cursor(self, applied: int) -> None:
        """Progress visible to operators in mediaedge_node_state (at most once a second)."""
        now = time.monotonic()
        if applied == self._cursor_saved or now - self._cursor_saved_at < 1.0:
            return
        try:
            await in_database_thread(self.log.save_cursor, self.node, applied)
            self._cursor_saved, self._cursor_saved_at = applied, now
        except Exception as e:  # noqa: BLE001 - informational only; the cache's own copy rules
            log.debug("could not record cursor: %s", e)

    async def run(self) -> None:
        """Follow the log until cancelled (polling; NOTIFY wakes us early on PostgreSQL)."""
        while True:
            try:
                await self.catch_up()
                if time.monotonic() - self._pruned_at >= PRUNE_EVERY:
                    self._pruned_at = time.monotonic()
                    await self.prune()
                # One thread hop per poll when polling: they compete with hits for the GIL.
                if self.log_is_polling():
                    await asyncio.sleep(POLL_INTERVAL)
                elif not await in_database_thread(self.log.wait_for_notify, POLL_INTERVAL):
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep following after a database outage
                log.warning("invalidation log unavailable: %s", str(e).splitlines()[0] if str(e) else e)
                await asyncio.sleep(1.0)

    def log_is_polling(self) -> bool:
        return getattr(self.log, "dialect", None) != "postgresql"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    # ------------------------------------------------------------------ applying
    async def apply(self, event: Event) -> None:
        """Apply one event outside the log (RFC 9111 4.4 invalidation by unsafe requests)."""
        [targets] = await asyncio.to_thread(self._apply_to_store, [event], None)
        self._apply_on_loop(event, targets)

    def _apply_to_store(self, events: list[Event], applied: int | None) -> list[list[str]]:
        """The blocking half (worker thread): change the cache, return each event's targets.

        Each event also leaves its mark for running fills (proxy/epochs.py) in the same
        locked step as its change to the store, so no commit can slip in between."""
        out: list[list[str]] = []
        with self.cache.lock:
            for event in events:
                self._mark(event)
                if isinstance(event, PublishEvent):
                    self._publish(event.path, event.revision)
                    out.append([event.path])
                elif isinstance(event, DeleteEvent):
                    self._delete(event.path)
                    out.append([event.path])
                else:
                    targets = self._purge_targets(event)
                    if event.soft:
                        self._soft(targets)
                    else:
                        self._drop(targets)
                    out.append(targets)
            if applied is not None:
                self.store.set_applied_seq(applied)
        return out

    def _apply_on_loop(self, event: Event, targets: list[str]) -> None:
        """The loop half: running fills, downloads, the hot tier, prewarm, counters."""
        if isinstance(event, PublishEvent):
            self.cache.forget(targets)
            self.flights.forget(targets, abort=False)
            if event.prewarm:
                self.engine.prewarm(MediaRequest("GET", event.path, Headers()))
        elif isinstance(event, DeleteEvent):
            self.cache.forget(targets)
            self.flights.forget(targets, abort=event.abort_inflight)
        elif event.soft:
            self.cache.forget(targets, tag=event.tag, keep_unstored=True)
        else:
            running = self.flights.matching(event.prefix, event.tag)
            self.cache.forget(targets + running, prefix=event.prefix, tag=event.tag)
            self.flights.forget(targets + running, abort=event.abort_inflight)
        if self.auth_decisions is not None:
            self.auth_decisions.drop(targets)
            if isinstance(event, PurgeEvent) and event.prefix is not None:
                self.auth_decisions.drop_prefix(event.prefix)
        if self.stats is not None:
            self.stats.invalidation(event_kind(event))

    def _mark(self, event: Event) -> None:
        epochs = self.cache.epochs
        if isinstance(event, PublishEvent):
            epochs.record("publish", path=event.path, revision=event.revision)
        elif isinstance(event, DeleteEvent):
            epochs.record("delete", path=event.path)
        else:
            epochs.record("soft" if event.soft else "purge", path=event.path, prefix=event.prefix, tag=event.tag)

    def _publish(self, target: str, revision: str) -> None:
        self.store.set_published(target, revision)
        pointer = self.store.get_pointer(target)
        if pointer is None or pointer.revision != revision:
            self.store.delete_target(target)

    def _delete(self, target: str) -> None:
        self.store.clear_published(target)
        self.store.delete_target(target)

    def _purge_targets(self, event: PurgeEvent) -> list[str]:
        if event.path is not None:
            return [event.path]
        if event.prefix is not None:
            return self.store.targets_with_prefix(event.prefix)
        assert event.tag is not None
        return self.store.targets_with_tag(event.tag)

    def _drop(self, targets: list[str]) -> None:
        for t in targets:
            self.store.delete_target(t)

    def _soft(self, targets: list[str]) -> None:
        for t in targets:
            self.store.mark_soft_stale(t)
