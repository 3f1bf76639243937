"""Byte ranges: parse Range, resolve it against a length, and If-Range.

Pure. One satisfiable range is answered 206; several ranges are answered with
the full 200 (RFC 9110 14.2 lets a server ignore Range), which spares us
multipart/byteranges and the many-small-ranges abuse of RFC 9110 17.15.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mediaedge.policy.conditional import parse_entity_tag
from mediaedge.policy.httpdate import parse_http_date

RangeSpec = tuple[int | None, int | None]
MAX_POSITION = 2**63 - 1

# RFC 9110 14.1.1:
#   int-range     = first-pos "-" [ last-pos ]
#   suffix-range  = "-" suffix-length
# Whitespace around the "-" is tolerated.
_RANGE_SPEC = re.compile(r"^([0-9]*)[ \t]*-[ \t]*([0-9]*)$")


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range within a representation: bytes start..end."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


# RFC 9110 14.1.1:
#   ranges-specifier = range-unit "=" range-set
#   range-set        = 1#range-spec
#   range-spec       = int-range / suffix-range / other-range
#   int-range        = first-pos "-" [ last-pos ]
#   first-pos        = 1*DIGIT
#   last-pos         = 1*DIGIT
#   suffix-range     = "-" suffix-length
#   suffix-length    = 1*DIGIT
# "An int-range is invalid if the last-pos value is present and less than the
# first-pos." RFC 9110 14.1: "Range unit names are case-insensitive".
# RFC 9110 14.2: "A server MAY ignore the Range header field." and "An origin
# server MUST ignore a Range header field that contains a range unit it does
# not understand."
# RFC 9110 5.6.1: empty list elements ("bytes=0-1,,5-") are accepted.
def parse_range(value: str | None) -> list[RangeSpec] | None:
    """The range-set of a `bytes` Range as (first, last) pairs, or None to ignore the header.

    `(a, b)` is bytes=a-b, `(a, None)` is bytes=a-, `(None, n)` is the last n bytes.
    """
    if not isinstance(value, str):
        return None
    unit, equals, range_set = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs: list[RangeSpec] = []
    for element in range_set.split(","):
        element = element.strip(" \t")
        if not element:
            continue
        spec = _parse_spec(element)
        if spec is None:
            return None
        specs.append(spec)
    return specs or None


def _parse_spec(element: str) -> RangeSpec | None:
    match = _RANGE_SPEC.match(element)
    if not match:
        return None
    first, last = _position(match[1]), _position(match[2])
    if first is None and last is None:
        return None
    if first is not None and last is not None and _magnitude(match[1]) > _magnitude(match[2]):
        return None
    return first, last


def _magnitude(digits: str) -> tuple[int, str]:
    """Orders digit strings numerically without converting them (they may be huge)."""
    significant = digits.lstrip("0")
    return len(significant), significant


def _position(digits: str) -> int | None:
    """The number, capped at 2**63 - 1: int() refuses strings over 4300 digits,
    and no representation is that long anyway."""
    if not digits:
        return None
    significant = digits.lstrip("0") or "0"
    return MAX_POSITION if len(significant) > 18 else min(int(significant), MAX_POSITION)


# RFC 9110 14.1.1: "A range request is satisfiable ... For byte ranges, ...
# the first-pos is less than the current length of the representation, or
# a suffix-range with a non-zero suffix-length" and "If the last-pos value is
# absent, or if the value is greater than or equal to the current length of
# the representation data, the byte range is interpreted as the remainder of
# the representation". "If the selected representation is shorter than the
# specified suffix-length, the entire representation is used."
# RFC 9110 15.5.17: 416 when "the set of ranges requested has been rejected
# ... or the set of ranges requested has no overlap with the current extent".
def resolve_range(spec: list[RangeSpec], length: int) -> ByteRange | str:
    """One satisfiable range as a ByteRange, 'unsatisfiable' (416), or 'full' (200).

    Several ranges get 'full' (a plain 200 with the whole body) unless none of
    them is satisfiable, which is still 'unsatisfiable'. We never answer
    multipart/byteranges.
    """
    if not spec:
        return "full"
    resolved = [r for r in (_resolve_one(s, length) for s in spec) if r is not None]
    if not resolved:
        return "unsatisfiable"
    if len(spec) > 1:
        return "full"
    return resolved[0]


def _resolve_one(spec: RangeSpec, length: int) -> ByteRange | None:
    first, last = spec
    if length <= 0:
        return None
    if first is None:
        if last is None or last <= 0:
            return None
        return ByteRange(max(0, length - last), length - 1)
    if first < 0 or first >= length or (last is not None and last < first):
        return None
    end = length - 1 if last is None else min(last, length - 1)
    return ByteRange(first, end)


# RFC 9110 14.4:
#   Content-Range       = range-unit SP ( range-resp / unsatisfied-range )
#   range-resp          = incl-range "/" ( complete-length / "*" )
#   incl-range          = first-pos "-" last-pos
def content_range(r: ByteRange, length: int) -> str:
    """The Content-Range of a 206, e.g. "bytes 0-99/1000"."""
    return f"bytes {r.start}-{r.end}/{length}"


# RFC 9110 14.4:
#   unsatisfied-range   = "*/" complete-length
# RFC 9110 15.5.17: "a server generating a 416 (Range Not Satisfiable) response
# to a byte-range request SHOULD send a Content-Range header field with an
# unsatisfied-range value".
def unsatisfied_content_range(length: int) -> str:
    """The Content-Range of a 416, e.g. "bytes */1000"."""
    return f"bytes */{length}"


# RFC 9110 13.1.5:
#   If-Range = entity-tag / HTTP-date
# "1. If the validator given in the If-Range header field is an entity-tag,
#     the condition is true if the entity-tag is a strong match for the
#     current entity tag of the selected representation ...
#  2. If the validator is an HTTP-date, the condition is true if the
#     Last-Modified field value ... is an exact match for the HTTP-date ...
#  3. Otherwise, the condition is false."
# "A client MUST NOT generate an If-Range header field containing an entity
# tag that is marked as weak." So a weak tag never matches.
# We do not check that Last-Modified is a strong validator (RFC 9110 8.8.2.2):
# our entries' Last-Modified comes from the origin and a revision change also
# changes the ETag, so a date match only ever serves the bytes it names.
def if_range_allows(if_range: str | None, *, etag: str | None, last_modified: float | None) -> bool:
    """True when a Range may be honoured: no If-Range, or it names the current representation."""
    if if_range is None:
        return True
    text = if_range.strip()
    if text.startswith(('"', "W/", "w/")):
        theirs = parse_entity_tag(text)
        ours = parse_entity_tag(etag) if etag is not None else None
        return (
            theirs is not None and ours is not None and not theirs[0] and not ours[0] and theirs[1] == ours[1]
        )
    date = parse_http_date(text)
    if date is None or last_modified is None or not math.isfinite(last_modified):
        return False
    return date == math.floor(last_modified)
