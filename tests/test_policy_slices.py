"""mediaedge.policy.slices: which slices a window touches, their keys, and the checks that
keep a body from ever being mixed from two representations."""
from __future__ import annotations

import pytest

from mediaedge.headers import Headers
from mediaedge.policy.slices import (Piece, Validator, check_slice, pieces, range_field, should_slice,
                                     slice_bounds, slice_count, slice_key, validator_of)

MiB = 1 << 20
RH = "X-Media-Revision"
HEAD = [("ETag", '"a"'), ("Accept-Ranges", "bytes"), ("Content-Length", str(40 * MiB))]


def test_pieces_cover_a_window_exactly():
    assert pieces(0, 10, 4) == [Piece(0, 0, 4), Piece(1, 0, 4), Piece(2, 0, 2)]
    assert pieces(5, 6, 4) == [Piece(1, 1, 2)]
    assert pieces(3, 5, 4) == [Piece(0, 3, 4), Piece(1, 0, 1)]  # across a boundary
    assert pieces(4, 8, 4) == [Piece(1, 0, 4)]  # exactly one slice
    assert pieces(7, 7, 4) == []


@pytest.mark.parametrize("size, slice_size", [(10, 4), (12, 4), (1, 16), (40 * MiB + 7, 16 * MiB)])
def test_pieces_of_any_window_add_up(size, slice_size):
    for start in range(0, size, max(1, size // 7)):
        for end in (start + 1, (start + size) // 2 + 1, size):
            if end <= start or end > size:
                continue
            got = pieces(start, end, slice_size)
            assert sum(p.end - p.start for p in got) == end - start
            assert got[0].index * slice_size + got[0].start == start
            assert got[-1].index * slice_size + got[-1].end == end
            assert all(0 <= p.start < p.end <= slice_size for p in got)


def test_bounds_range_field_and_count():
    assert slice_count(10, 4) == 3 and slice_count(8, 4) == 2
    assert slice_bounds(2, 4, 10) == (8, 10)
    assert range_field(0, 4, 10) == "bytes=0-3"
    assert range_field(2, 4, 10) == "bytes=8-9"  # the last, short slice


def test_slice_keys_name_the_representation_size_and_index():
    a = Validator('"a"', None, None)
    assert slice_key(a, 0, MiB) != slice_key(a, 1, MiB)
    assert slice_key(a, 0, MiB) != slice_key(a, 0, 2 * MiB)  # a changed --slice-size never mixes
    assert slice_key(a, 0, MiB) != slice_key(Validator('"b"', None, None), 0, MiB)
    assert slice_key(a, 3, MiB) == slice_key(Validator('"a"', None, None), 3, MiB)


@pytest.mark.parametrize("change, ok, reason", [
    ({}, True, "sliced"),
    ({"slice_size": 0}, False, "off"),
    ({"max_object_size": MiB}, False, "slice-over-max-object-size"),
    ({"status": 206}, False, "status"),
    ({"length": 16 * MiB}, False, "small"),
    ({"length": None}, False, "no-length"),
    ({"storable": False}, False, "not-storable"),
    ({"headers": Headers([*HEAD, ("Vary", "Accept")])}, False, "vary"),
    ({"headers": Headers([("ETag", '"a"')])}, False, "no-accept-ranges"),
    ({"headers": Headers([("Accept-Ranges", "none"), ("ETag", '"a"')])}, False, "no-accept-ranges"),
    ({"headers": Headers([("Accept-Ranges", "bytes")])}, False, "no-validator"),
    ({"headers": Headers([("Accept-Ranges", "bytes"), (RH, "r1")])}, True, "sliced"),
])
def test_should_slice(change, ok, reason):
    args: dict = dict(slice_size=16 * MiB, max_object_size=128 * MiB, status=200, length=40 * MiB,
                      headers=Headers(HEAD), storable=True, revision_header=RH)
    args.update(change)
    d = should_slice(**args)
    assert (d.ok, d.reason) == (ok, reason)


def _check(status: int, headers: list[tuple[str, str]], index: int = 1, expected: Validator | None = None):
    return check_slice(expected=expected or Validator('"a"', "Wed, 21 Oct 2015 07:28:00 GMT", None), size=10,
                       index=index, slice_size=4, status=status, headers=Headers(headers), revision_header=RH)


@pytest.mark.parametrize("status, headers, ok, reason", [
    (206, [("Content-Range", "bytes 4-7/10"), ("ETag", '"a"')], True, "slice"),
    (206, [("Content-Range", "bytes 4-7/10"), ("ETag", '"a"'), ("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")],
     True, "slice"),
    (200, [("ETag", '"a"')], False, "ignored-range"),
    (416, [("Content-Range", "bytes */10")], False, "status"),
    (206, [("ETag", '"a"')], False, "content-range"),
    (206, [("Content-Range", "bytes 4-6/10"), ("ETag", '"a"')], False, "content-range"),
    (206, [("Content-Range", "bytes 4-7/11"), ("ETag", '"a"')], False, "changed"),  # another length
    (206, [("Content-Range", "bytes 4-7/10"), ("ETag", '"b"')], False, "changed"),
    (206, [("Content-Range", "bytes 4-7/10")], False, "changed"),  # the tag is gone
    (206, [("Content-Range", "bytes 4-7/10"), ("ETag", '"a"'), ("Last-Modified", "Thu, 22 Oct 2015 07:28:00 GMT")],
     False, "changed"),
])
def test_check_slice(status, headers, ok, reason):
    d = _check(status, headers)
    assert (d.ok, d.reason) == (ok, reason)


def test_check_slice_by_revision_and_the_last_short_slice():
    v = Validator(None, None, "r1")
    assert _check(206, [("Content-Range", "bytes 8-9/10"), (RH, "r1")], index=2, expected=v).ok
    assert _check(206, [("Content-Range", "bytes 8-9/10"), (RH, "r2")], index=2, expected=v).reason == "changed"


def test_validator_of_reads_the_first_values():
    v = validator_of(Headers([("ETag", ' "x" '), (RH, "r9")]), RH)
    assert v == Validator('"x"', None, "r9") and v.present
    assert not validator_of(Headers([]), RH).present
