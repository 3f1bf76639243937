import pytest

from mediaedge.headers import Headers
from mediaedge.policy.conditional import entity_tag_list, not_modified, parse_entity_tag

LM = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
AT_LM = "Sun, 06 Nov 1994 08:49:37 GMT"
AFTER_LM = "Sun, 06 Nov 1994 08:49:38 GMT"
BEFORE_LM = "Sun, 06 Nov 1994 08:49:36 GMT"


@pytest.mark.parametrize(
    "request_headers, etag, last_modified, expected",
    [
        # no conditionals
        ([], '"a"', LM, False),
        # If-None-Match: weak comparison, lists, "*"
        ([("If-None-Match", '"a"')], '"a"', None, True),
        ([("If-None-Match", '"b"')], '"a"', None, False),
        ([("If-None-Match", 'W/"a"')], '"a"', None, True),
        ([("If-None-Match", '"a"')], 'W/"a"', None, True),
        ([("If-None-Match", '"x", "y", W/"a"')], '"a"', None, True),
        ([("If-None-Match", '"x"'), ("If-None-Match", '"a"')], '"a"', None, True),
        ([("If-None-Match", '"x,a"')], '"a"', None, False),  # a comma inside an opaque tag
        ([("If-None-Match", '"x,a"')], '"x,a"', None, True),
        ([("If-None-Match", "*")], '"a"', None, True),
        ([("If-None-Match", "*")], None, None, True),  # a stored representation exists
        ([("If-None-Match", '"*"')], '"a"', None, False),  # a tag spelled *, not the wildcard
        ([("If-None-Match", '"A"')], '"a"', None, False),  # case-sensitive
        ([("If-None-Match", "a")], '"a"', None, True),  # unquoted, tolerated
        ([("If-None-Match", '"a"')], None, LM, False),
        ([("If-None-Match", "")], '"a"', LM, False),
        ([("if-none-match", '"a"')], '"a"', None, True),
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
        ([("If-None-Match", '"b"'), ("If-Modified-Since", AFTER_LM)], '"a"', LM, False),
        ([("If-None-Match", '"a"'), ("If-Modified-Since", BEFORE_LM)], '"a"', LM, True),
        ([("If-None-Match", "garbage"), ("If-Modified-Since", AFTER_LM)], '"a"', LM, False),
        # If-Modified-Since: not modified when last_modified <= the date
        ([("If-Modified-Since", AT_LM)], '"a"', LM, True),
        ([("If-Modified-Since", AFTER_LM)], '"a"', LM, True),
        ([("If-Modified-Since", BEFORE_LM)], '"a"', LM, False),
        ([("If-Modified-Since", AT_LM)], None, LM + 0.9, True),  # compared in whole seconds
        ([("If-Modified-Since", AT_LM)], '"a"', None, False),  # unknown Last-Modified
        ([("If-Modified-Since", "Sunday, 06-Nov-94 08:49:37 GMT")], None, LM, True),
        ([("If-Modified-Since", "Sun Nov  6 08:49:37 1994")], None, LM, True),
        # invalid If-Modified-Since is ignored (RFC 9110 13.1.3)
        ([("If-Modified-Since", "yesterday")], '"a"', LM, False),
        ([("If-Modified-Since", "")], '"a"', LM, False),
        ([("If-Modified-Since", AT_LM), ("If-Modified-Since", AT_LM)], '"a"', LM, False),  # two members
        ([("If-Modified-Since", AT_LM)], '"a"', float("nan"), False),
    ],
)
def test_not_modified(request_headers, etag, last_modified, expected):
    assert not_modified(Headers(request_headers), etag=etag, last_modified=last_modified) is expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ('"abc"', (False, "abc")),
        ('W/"abc"', (True, "abc")),
        (' "abc" ', (False, "abc")),
        ('""', (False, "")),
        ("abc", (False, "abc")),  # unquoted, tolerated
        ("W/abc", (True, "abc")),
        (None, None),
        ("", None),
        ('"a"b"', None),
        ('"abc', None),
        ("a b", None),
    ],
)
def test_parse_entity_tag(value, expected):
    assert parse_entity_tag(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ('"a", W/"b", "c,d"', [(False, "a"), (True, "b"), (False, "c,d")]),
        ("*", []),
        ('"a" , , "b"', [(False, "a"), (False, "b")]),
        (None, []),
    ],
)
def test_entity_tag_list(value, expected):
    assert entity_tag_list(value) == expected
