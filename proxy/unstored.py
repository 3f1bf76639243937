"""Targets whose last fetch was not stored, remembered in memory (bounded, least recent out).

The engine asks it on a Range miss (mediaedge.policy.seek): a target known not to be
stored gets the client's Range forwarded instead of a whole-object fetch. Memory only:
a restart forgets it, which costs one whole fetch per target at most.
"""
from __future__ import annotations

from collections import OrderedDict

from mediaedge.policy.seek import Unstored

MAX_TARGETS = 4096


class UnstoredTargets:
    def __init__(self, limit: int = MAX_TARGETS) -> None:
        self.limit = limit
        self._notes: OrderedDict[str, Unstored] = OrderedDict()

    def get(self, target: str) -> Unstored | None:
        note = self._notes.get(target)
        if note is not None:
            self._notes.move_to_end(target)
        return note

    def put(self, target: str, note: Unstored) -> None:
        self._notes[target] = note
        self._notes.move_to_end(target)
        while len(self._notes) > self.limit:
            self._notes.popitem(last=False)

    def drop(self, target: str) -> None:
        self._notes.pop(target, None)

    def drop_prefix(self, prefix: str) -> None:
        for target in [t for t in self._notes if t.startswith(prefix)]:
            del self._notes[target]

    def __len__(self) -> int:
        return len(self._notes)
