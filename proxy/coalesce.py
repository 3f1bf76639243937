"""Coalescing: one origin fetch per target, shared by every request that may join it.

The `Coalescer` holds the running fetches (`Flight`: a `Fill` and what its joiners
need to know of it) and the downloads streaming from the cache or a fill (`Job`), by
target. It answers who may join (`joinable`: not an invalidated fetch, not one being
stopped), registers and retires fetches, and serves invalidation (`forget`,
`matching`). It fetches nothing itself: the engine runs the fetches.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mediaedge.epochs import Epochs, Verdict
from mediaedge.fill import Fill
from mediaedge.headers import Headers
from mediaedge.origins.db import DbObject
from mediaedge.storage import EntryMeta
from mediaedge.streamserver import Job
from mediaedge.origins.http import UpstreamResponse


class Busy(Exception):
    """A fetch already serves `coalesce_max_waiters` requests."""


@dataclass
class Flight:
    """A registered fill and what the joiners need to know about it."""

    fill: Fill
    leader_headers: Headers
    task: asyncio.Task[None] | None = None
    upstream_failure: str | None = None  # why the upstream was not used (for error lines)
    upstream_status: int | None = None
    db_object: DbObject | None = None  # already looked up (published-revision check)
    upstream_error_kind: str | None = None  # refused | timeout | error
    epoch: int = 0  # Epochs.epoch when the fill began (proxy/epochs.py)
    tags: tuple[str, ...] | None = None  # surrogate keys, once the origin's head is known
    revision: str | None = None  # the revision being fetched, once known
    # The upstream's 404/410/5xx, head read and body not, held while the database is
    # asked: passed on to the client when the database has no row (policy/fallback.py).
    upstream_answer: UpstreamResponse | None = None
    revalidating: EntryMeta | None = None  # the expired entry this fetch revalidates (conditional GET / row revision)
    resident: bool = False  # the target had an entry when the fill began (admission: it replaces it)
    # The database failed this fetch already (its revalidation probe): not asked again, so a
    # locked table costs a request one --db-timeout, not two.
    db_problem: str | None = None
    # A seek into something the edge will not store: the client's Range (and If-Range) go to
    # the upstream and its answer is passed on, never stored (mediaedge.policy.seek).
    forward_range: bool = False


class Coalescer:
    def __init__(self, epochs: Epochs, *, max_waiters: int) -> None:
        self.epochs = epochs
        self.max_waiters = max_waiters
        self.flights: dict[str, Flight] = {}  # shared fetches, by target
        self.jobs: dict[str, set[Job]] = {}  # downloads streaming now, by target
        # every fetch (shared or alone, and slice fetches: proxy/slices.py) -> its epoch
        self.epochs_running: dict[int, int] = {}

    def joinable(self, target: str) -> Flight | None:
        """The running fill a new request may share: none if an event applied since it
        began may cover it (nobody joins an invalidated fetch after the webhook's 200)."""
        flight = self.flights.get(target)
        if flight is None or flight.fill.spilled:
            return None
        if flight.fill.waiting == 0 and not flight.fill.may_store():
            return None  # an unstored fetch nobody reads any more: it is being stopped
        if self.epochs.verdict(flight.epoch, target, flight.tags, flight.revision)[0] is not Verdict.CURRENT:
            return None
        return flight

    def join(self, target: str) -> Flight | None:
        """The fetch to join, or None; raises Busy when it already serves `max_waiters`."""
        flight = self.joinable(target)
        if flight is not None and flight.fill.waiting >= self.max_waiters:
            raise Busy(f"{flight.fill.waiting} requests already wait on this object's fetch")
        return flight

    def begin(self, target: str, fill: Fill, leader_headers: Headers, *, shared: bool,
              revalidating: EntryMeta | None = None, forward_range: bool = False) -> Flight:
        """A new fetch, registered for joiners when `shared`."""
        flight = Flight(fill, leader_headers, epoch=self.epochs.epoch, revalidating=revalidating,
                        forward_range=forward_range)
        self.epochs_running[id(flight)] = flight.epoch
        if shared:
            self.flights[target] = flight
        return flight

    def running(self, target: str) -> bool:
        return target in self.flights

    def close_to_joiners(self, target: str, flight: Flight) -> None:
        """Nobody joins this fetch from now on (it is not stored, or being dropped)."""
        if self.flights.get(target) is flight:
            del self.flights[target]

    def end(self, target: str, flight: Flight) -> None:
        """The fetch is over: retired, and epochs no running fetch needs are pruned."""
        self.close_to_joiners(target, flight)
        self.epochs_running.pop(id(flight), None)
        self.epochs.prune(min(self.epochs_running.values(), default=None))

    def track(self, target: str, job: Job) -> Job:
        """Count a download under its target until it is done (abort_inflight cuts it)."""
        jobs = self.jobs.setdefault(target, set())
        jobs.add(job)
        previous = job.on_done

        def done(sent: int, completed: bool) -> None:
            jobs.discard(job)
            if not jobs:
                self.jobs.pop(target, None)
            if previous is not None:
                previous(sent, completed)

        job.on_done = done
        return job

    def forget(self, targets: list[str], *, abort: bool) -> None:
        """New requests must not join fills that began before an invalidation; `abort`:
        downloads of those targets are cut."""
        for t in targets:
            self.flights.pop(t, None)  # the commit-time check (proxy/epochs.py) keeps it from being stored
            if abort:
                for job in list(self.jobs.get(t, ())):
                    job.abort()

    def matching(self, prefix: str | None, tag: str | None = None) -> list[str]:
        """Targets with a running fill or download under `prefix`, or a running fill
        tagged `tag` (tags of stored entries come from the store)."""
        if prefix is not None:
            running = set(self.flights) | set(self.jobs)
            return [t for t in running if t.startswith(prefix)]
        if tag is not None:
            return [t for t, f in self.flights.items() if f.tags is not None and tag in f.tags]
        return []

    def shared(self) -> list[Flight]:
        return list(self.flights.values())
