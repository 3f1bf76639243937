"""Table-driven tests of the revalidation decisions (mediaedge.policy.revalidate)."""
import pytest

from mediaedge.headers import Headers
from mediaedge.policy.revalidate import (
    can_revalidate,
    conditional_fields,
    db_unchanged,
    updated_headers,
    use_not_modified,
)

LM = "Sun, 06 Nov 1994 08:49:37 GMT"
LM2 = "Mon, 07 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize(
    "stored, expected",
    [
        ([("ETag", '"a"')], (("If-None-Match", '"a"'),)),
        ([("ETag", 'W/"a"')], (("If-None-Match", 'W/"a"'),)),
        ([("ETag", '"a"'), ("Last-Modified", LM)], (("If-None-Match", '"a"'),)),  # the tag, not both
        ([("Last-Modified", LM)], (("If-Modified-Since", LM),)),
        ([("ETag", ' "a" ')], (("If-None-Match", '"a"'),)),
        ([("ETag", '"a"'), ("ETag", '"b"')], (("If-None-Match", '"a"'),)),  # the first line
        ([("ETag", 'bad "tag"'), ("Last-Modified", LM)], (("If-Modified-Since", LM),)),  # unparsable tag
        ([("Last-Modified", "yesterday")], ()),  # unparsable date
        ([("Content-Type", "image/jpeg")], ()),
        ([], ()),
    ],
)
def test_conditional_fields(stored, expected):
    assert conditional_fields(Headers(stored)) == expected


@pytest.mark.parametrize(
    "source, negative, soft, headers, probe, ok, reason",
    [
        ("upstream", False, False, [("ETag", '"a"')], False, True, "validator"),
        ("upstream", False, False, [("Last-Modified", LM)], False, True, "validator"),
        ("upstream", False, False, [], False, False, "no-validator"),
        ("upstream", True, False, [("ETag", '"a"')], False, False, "negative"),
        # soft-purged: revalidated like an expired entry (a 304 costs no body)
        ("upstream", False, True, [("ETag", '"a"')], False, True, "validator"),
        ("db", False, True, [], True, True, "db-revision"),
        ("db", False, False, [], True, True, "db-revision"),
        ("db", False, False, [("Last-Modified", LM)], False, False, "no-revision-probe"),
        ("db", True, False, [], True, False, "negative"),
        ("other", False, False, [("ETag", '"a"')], True, False, "source"),
    ],
)
def test_can_revalidate(source, negative, soft, headers, probe, ok, reason):
    d = can_revalidate(source=source, negative=negative, soft_stale=soft, headers=Headers(headers),
                       has_revision_probe=probe)
    assert (d.ok, d.reason) == (ok, reason)


@pytest.mark.parametrize(
    "stored, new, ok, reason",
    [
        ([("ETag", '"a"')], [("ETag", '"a"')], True, "etag-matches"),
        ([("ETag", '"a"')], [("ETag", '"b"')], False, "etag-differs"),
        ([("ETag", 'W/"a"')], [("ETag", 'W/"a"')], True, "etag-matches"),  # weak 304 tag: weak comparison
        ([("ETag", '"a"')], [("ETag", 'W/"a"')], True, "etag-matches"),
        ([("ETag", 'W/"a"')], [("ETag", '"a"')], False, "etag-differs"),  # strong 304 tag: strong comparison
        ([("Last-Modified", LM)], [("ETag", '"a"')], False, "etag-not-stored"),
        ([("Last-Modified", LM)], [("Last-Modified", LM)], True, "last-modified-matches"),
        ([("Last-Modified", LM)], [("Last-Modified", LM2)], False, "last-modified-differs"),
        ([("ETag", '"a"')], [("Last-Modified", LM)], False, "last-modified-differs"),
        ([("ETag", '"a"')], [("Date", LM2), ("Cache-Control", "max-age=60")], True, "no-validator-in-304"),
        ([("ETag", '"a"'), ("X-Media-Revision", "r1")], [("ETag", '"a"'), ("X-Media-Revision", "r2")],
         False, "revision-differs"),
        ([("ETag", '"a"'), ("X-Media-Revision", "r1")], [("ETag", '"a"'), ("X-Media-Revision", "r1")],
         True, "etag-matches"),
    ],
)
def test_use_not_modified(stored, new, ok, reason):
    d = use_not_modified(Headers(stored), Headers(new))
    assert (d.ok, d.reason) == (ok, reason)


STORED = [
    ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ("Content-Type", "image/jpeg"),
    ("Content-Length", "1000"),
    ("Cache-Control", "max-age=1"),
    ("ETag", '"a"'),
    ("X-Custom", "old"),
    ("X-Custom", "older"),
    ("Age", "5"),
]


@pytest.mark.parametrize(
    "new, expected",
    [
        # Cache-Control, custom fields replaced in place; Date replaced; Age dropped (not in the 304)
        ([("Date", LM2), ("Cache-Control", "max-age=600"), ("X-Custom", "new")],
         [("Date", LM2), ("Content-Type", "image/jpeg"), ("Content-Length", "1000"),
          ("Cache-Control", "max-age=600"), ("ETag", '"a"'), ("X-Custom", "new")]),
        # new fields appended; Expires and ETag updated; a 304's Age kept
        ([("ETag", '"a"'), ("Expires", LM2), ("X-New", "1"), ("X-New", "2"), ("Age", "3")],
         [("Content-Type", "image/jpeg"), ("Content-Length", "1000"), ("Cache-Control", "max-age=1"),
          ("ETag", '"a"'), ("X-Custom", "old"), ("X-Custom", "older"), ("Age", "3"), ("Expires", LM2),
          ("X-New", "1"), ("X-New", "2")]),
        # never updated: Content-Length, Content-Encoding, Vary, hop-by-hop, Set-Cookie, fields named in Connection
        ([("Content-Length", "0"), ("Content-Encoding", "gzip"), ("Vary", "Accept"), ("Keep-Alive", "5"),
          ("Set-Cookie", "a=b"), ("Connection", "X-Hop"), ("X-Hop", "1"), ("Transfer-Encoding", "chunked"),
          ("Date", LM2)],
         [("Date", LM2), ("Content-Type", "image/jpeg"), ("Content-Length", "1000"), ("Cache-Control", "max-age=1"),
          ("ETag", '"a"'), ("X-Custom", "old"), ("X-Custom", "older")]),
        # an empty 304: only the age basis goes
        ([], [("Content-Type", "image/jpeg"), ("Content-Length", "1000"), ("Cache-Control", "max-age=1"),
              ("ETag", '"a"'), ("X-Custom", "old"), ("X-Custom", "older")]),
        # names compared without case; the 304's spelling wins
        ([("x-custom", "n"), ("cache-control", "no-cache")],
         [("Content-Type", "image/jpeg"), ("Content-Length", "1000"), ("cache-control", "no-cache"),
          ("ETag", '"a"'), ("x-custom", "n")]),
    ],
)
def test_updated_headers(new, expected):
    assert updated_headers(Headers(STORED), Headers(new)).pairs() == expected


@pytest.mark.parametrize(
    "stored, found, revision, ok, reason",
    [
        ("r1", True, "r1", True, "same-revision"),
        ("r1", True, "r2", False, "revision-differs"),
        ("r1", False, None, False, "row-gone"),
        ("r1", True, None, False, "no-revision"),
    ],
)
def test_db_unchanged(stored, found, revision, ok, reason):
    d = db_unchanged(stored_revision=stored, found=found, revision=revision)
    assert (d.ok, d.reason) == (ok, reason)
