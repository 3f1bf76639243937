"""Plain, immutable HTTP header lists shared by the policy, storage and wiring.

The policy functions take these instead of mitmproxy's `Headers` so they can be
tested without mitmproxy and stored as JSON without pickling.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator


class Headers:
    """An ordered, case-insensitive, immutable list of (name, value) pairs."""

    __slots__ = ("_pairs", "_index")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs: tuple[tuple[str, str], ...] = tuple((str(k), str(v)) for k, v in pairs)
        index: dict[str, tuple[str, ...]] = {}
        for k, v in self._pairs:
            key = k.lower()
            index[key] = (*index[key], v) if key in index else (v,)
        # Tuples of str, not lists: the garbage collector stops tracking them (and then the
        # dict), so the thousands of Headers kept by the memory tier cost no GC time.
        self._index = index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field value, repeated fields joined with ", " (RFC 9110 5.3)."""
        values = self._index.get(name.lower())
        if not values:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._pairs == other._pairs

    def __repr__(self) -> str:
        return f"Headers({list(self._pairs)!r})"

    def pairs(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def without(self, *names: str) -> Headers:
        drop = {n.lower() for n in names}
        return Headers((k, v) for k, v in self._pairs if k.lower() not in drop)

    def with_set(self, name: str, value: str) -> Headers:
        """A copy with every `name` field replaced by one `name: value`."""
        return Headers([*self.without(name), (name, value)])
