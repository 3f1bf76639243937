"""Invalidations that running fills must answer to: one mechanism for every event type.

The promise to a publisher: once the webhook answers 200, no new request gets what
an event invalidated, on this node and, within a second, on every node. A fill
(an origin fetch being written to disk) can take seconds; an event can arrive
while it runs. Rather than patch each event type into the fill code, every applied
event leaves a `Mark` with the next *epoch* (a counter), and every fill remembers
the epoch at which it began. Two questions then have one answer each:

* may this finished fill be committed as current? (`verdict`, asked at commit time
  under the same lock that applies invalidations to the store, so an event is
  either fully before a commit — the commit sees its mark — or fully after it —
  the event drops what was committed);
* may a new request join this running fill? (`verdict` with what is known of the
  fill so far: a tag purge against a fill whose tags are not known yet counts as
  matching, so after the 200 nobody joins a fill the event might cover).

Later events win, whatever their revision strings say (they are opaque): the marks
newer than the fill are read in epoch order. A publish of R leaves the fill current
only if its revision is R; a purge or delete makes it invalid; a soft purge makes a
current fill stale (stored, served stale while one refetch runs).

Marks are kept only while a fill older than them runs (`prune`), so memory is
bounded by the events applied during the longest running fill.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    CURRENT = "current"  # no event since the fill began covers it
    STALE = "stale"  # a soft purge covers it: store it marked stale
    INVALID = "invalid"  # a purge, delete or publish of another revision covers it


@dataclass(frozen=True)
class Mark:
    """One applied event, as much of it as matching a fill needs."""

    epoch: int
    kind: str  # publish | delete | purge | soft
    path: str | None = None
    prefix: str | None = None
    tag: str | None = None
    revision: str | None = None  # publish: the revision now current

    def covers(self, target: str, tags: tuple[str, ...] | None) -> bool:
        """Whether this event applies to the fill of `target`; `tags` None = not known yet
        (then a tag mark covers it: the safe answer while we cannot tell)."""
        if self.path is not None:
            return self.path == target
        if self.prefix is not None:
            return target.startswith(self.prefix)
        if self.tag is not None:
            return tags is None or self.tag in tags
        return False


def verdict(marks: list[Mark], since: int, target: str, tags: tuple[str, ...] | None,
            revision: str | None) -> tuple[Verdict, Mark | None]:
    """The standing of a fill that began at epoch `since`, with the mark that decided it.

    `revision` None = not known yet (then a publish counts against it)."""
    state, deciding = Verdict.CURRENT, None
    for mark in marks:
        if mark.epoch <= since or not mark.covers(target, tags):
            continue
        if mark.kind == "publish":
            state = Verdict.CURRENT if revision is not None and revision == mark.revision else Verdict.INVALID
        elif mark.kind == "soft":
            if state is Verdict.CURRENT:
                state = Verdict.STALE
        else:
            state = Verdict.INVALID
        deciding = mark
    return state, deciding


class Epochs:
    """The epoch counter and the marks that running fills may still need (thread-safe:
    events are applied in worker threads, fills begin and end on the event loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held for list operations only, never across I/O
        self.epoch = 0
        self._marks: list[Mark] = []

    def record(self, kind: str, *, path: str | None = None, prefix: str | None = None,
               tag: str | None = None, revision: str | None = None) -> int:
        with self._lock:
            self.epoch += 1
            self._marks.append(Mark(self.epoch, kind, path, prefix, tag, revision))
            return self.epoch

    def verdict(self, since: int, target: str, tags: tuple[str, ...] | None,
                revision: str | None) -> tuple[Verdict, Mark | None]:
        with self._lock:
            marks = list(self._marks)
        return verdict(marks, since, target, tags, revision)

    def prune(self, oldest_running: int | None) -> None:
        """Forget marks no running fill can need: those not newer than the oldest fill."""
        with self._lock:
            if oldest_running is None:
                self._marks.clear()
            elif self._marks and self._marks[0].epoch <= oldest_running:
                self._marks = [m for m in self._marks if m.epoch > oldest_running]

    def __len__(self) -> int:
        return len(self._marks)
