"""Slice caching (nginx's slice module): which slices a window touches, their keys, and
whether an upstream answer may be a slice of an object.

Pure. Why: a seek into a 4 GB video must cost one slice from the app, not 4 GB, and a
whole-object request must not need 4 GB of one cache entry. An object from the upstream
larger than `--slice-size` is stored as slices of that size, each an entry of its own
under the object's target (so purge, publish and tags cover every slice), each fetched
with a `Range` request and checked against the validator the object was first seen with:
a slice of another representation must never be served next to one of this one.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mediaedge.headers import Headers


@dataclass(frozen=True)
class Decision:
    """A yes/no with the reason (for logs and tests)."""

    ok: bool
    reason: str


@dataclass(frozen=True)
class Validator:
    """What names one representation of an object: its ETag, Last-Modified and revision."""

    etag: str | None
    last_modified: str | None
    revision: str | None

    @property
    def present(self) -> bool:
        return bool(self.etag or self.last_modified or self.revision)

    def ident(self) -> str:
        """A short name for the representation, part of every slice's key."""
        raw = "\n".join(v or "" for v in (self.etag, self.last_modified, self.revision))
        return hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()[:16]


@dataclass(frozen=True)
class Piece:
    """The part of slice `index` a window needs: bytes [start, end) within the slice."""

    index: int
    start: int
    end: int


def validator_of(headers: Headers, revision_header: str) -> Validator:
    def first(name: str) -> str | None:
        values = headers.get_all(name)
        return values[0].strip() if values and values[0].strip() else None

    return Validator(first("etag"), first("last-modified"), first(revision_header))


def should_slice(*, slice_size: int, max_object_size: int, status: int, length: int | None,
                 headers: Headers, storable: bool, revision_header: str) -> Decision:
    """Is this whole 200 from the upstream an object to store slice by slice?

    Only when slices are on and fit under --max-object-size, the object is known to be
    larger than a slice (Content-Length), the upstream says it serves ranges
    (`Accept-Ranges: bytes`), it carries a validator to check every slice against, and
    nothing else keeps it out of the cache (storable, no `Vary`)."""
    if slice_size <= 0:
        return Decision(False, "off")
    if slice_size > max_object_size:
        return Decision(False, "slice-over-max-object-size")
    if status != 200:
        return Decision(False, "status")
    if length is None or length <= slice_size:
        return Decision(False, "small" if length is not None else "no-length")
    if not storable:
        return Decision(False, "not-storable")
    if headers.get_all("vary"):
        return Decision(False, "vary")
    if not any(v.strip().lower() == "bytes" for value in headers.get_all("accept-ranges") for v in value.split(",")):
        return Decision(False, "no-accept-ranges")
    if not validator_of(headers, revision_header).present:
        return Decision(False, "no-validator")
    return Decision(True, "sliced")


def slice_count(size: int, slice_size: int) -> int:
    return -(-size // slice_size)


def slice_bounds(index: int, slice_size: int, size: int) -> tuple[int, int]:
    """Bytes [first, end) of the object that slice `index` holds."""
    first = index * slice_size
    return first, min(first + slice_size, size)


def range_field(index: int, slice_size: int, size: int) -> str:
    """The `Range` request field that fetches slice `index`."""
    first, end = slice_bounds(index, slice_size, size)
    return f"bytes={first}-{end - 1}"


def pieces(start: int, end: int, slice_size: int) -> list[Piece]:
    """The slices a window [start, end) of the object touches, in order, each with the
    part of it the window needs (end exclusive; an empty window touches none)."""
    out: list[Piece] = []
    pos = start
    while pos < end:
        index = pos // slice_size
        base = index * slice_size
        stop = min(end, base + slice_size)
        out.append(Piece(index, pos - base, stop - base))
        pos = stop
    return out


def slice_key(validator: Validator, index: int, slice_size: int) -> str:
    """The key revision a slice is stored under, beside the object's target: the
    representation, the slice size (a changed --slice-size never mixes slices) and the index."""
    return f"slice:{validator.ident()}:{slice_size}:{index}"


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$", re.I)


def check_slice(*, expected: Validator, size: int, index: int, slice_size: int, status: int,
                headers: Headers, revision_header: str) -> Decision:
    """Does the upstream's answer to slice `index`'s Range request hold exactly that slice
    of the same representation? 'ignored-range': a 200 (the upstream does not do ranges
    after all); 'changed': another representation (its slices must all go)."""
    if status == 200:
        return Decision(False, "ignored-range")
    if status != 206:
        return Decision(False, "status")
    m = _CONTENT_RANGE.match(headers.get("content-range") or "")
    first, end = slice_bounds(index, slice_size, size)
    if m is None:
        return Decision(False, "content-range")
    if int(m.group(3)) != size:
        return Decision(False, "changed")
    if (int(m.group(1)), int(m.group(2)) + 1) != (first, end):
        return Decision(False, "content-range")
    got = validator_of(headers, revision_header)
    for name in ("etag", "last_modified", "revision"):
        mine, theirs = getattr(expected, name), getattr(got, name)
        if mine is not None and theirs is not None and mine != theirs:
            return Decision(False, "changed")
        if mine is not None and theirs is None and name == "etag":
            return Decision(False, "changed")  # the tag is what names the representation
    return Decision(True, "slice")
