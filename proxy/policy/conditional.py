"""Conditional requests answered from cache (304), and entity-tag parsing.

Pure. The request method is the caller's concern: only GET and HEAD reach
this (RFC 9110 13.1.3 ignores If-Modified-Since on other methods).
"""
from __future__ import annotations

import math
import re

from mediaedge.headers import Headers
from mediaedge.policy.httpdate import parse_http_date

EntityTag = tuple[bool, str]  # (weak, opaque-tag without its quotes)

# RFC 9110 8.8.3:
#   entity-tag = [ weak ] opaque-tag
#   weak       = %s"W/"
#   opaque-tag = DQUOTE *etagc DQUOTE
#   etagc      = %x21 / %x23-7E / obs-text
# Note that etagc allows ",", so a list cannot simply be split on commas.
# Unquoted tags, which some clients and origins send, are accepted as opaque
# tags without their quotes.
_LIST_MEMBER = re.compile(r'(W/)?"([^"]*)"|(W/)?([^\s,"]+)', re.IGNORECASE)


def parse_entity_tag(value: str | None) -> EntityTag | None:
    """(weak, opaque) for one entity-tag such as 'W/"abc"', or None when there is none."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    weak = text[:2] in ("W/", "w/")
    if weak:
        text = text[2:]
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"' and '"' not in text[1:-1]:
        return weak, text[1:-1]
    if text and not any(c in text for c in '", \t'):
        return weak, text
    return None


def entity_tag_list(value: str | None) -> list[EntityTag]:
    """Every entity-tag of a list field such as If-None-Match (a bare `*` is left out)."""
    if not isinstance(value, str):
        return []
    tags: list[EntityTag] = []
    for match in _LIST_MEMBER.finditer(value):
        if match[2] is not None:
            tags.append((match[1] is not None, match[2]))
        elif match[3] is not None or match[4] != "*":
            tags.append((match[3] is not None, match[4]))
    return tags


def is_wildcard(value: str | None) -> bool:
    """True for If-None-Match: * (also when a sloppy client lists it among tags)."""
    if not isinstance(value, str):
        return False
    return any(m[4] == "*" and m[3] is None for m in _LIST_MEMBER.finditer(value))


# RFC 9110 8.8.3.2: "Weak comparison: two entity tags are equivalent if their
# opaque-tags match character-by-character, regardless of either or both being
# tagged as "weak"."
def weak_match(a: EntityTag, b: EntityTag) -> bool:
    return a[1] == b[1]


# RFC 9110 8.8.3.2: "Strong comparison: two entity tags are equivalent if both
# are not weak and their opaque-tags match character-by-character."
def strong_match(a: EntityTag, b: EntityTag) -> bool:
    return not a[0] and not b[0] and a[1] == b[1]


# RFC 9110 13.2.2 (precedence): "3. When If-None-Match is present, evaluate the
# If-None-Match precondition: if true, continue to step 5; if false for GET/HEAD,
# respond 304 (Not Modified) ... 4. When the method is GET or HEAD,
# If-None-Match is not present, and If-Modified-Since is present, evaluate the
# If-Modified-Since precondition: if true, continue to step 5; if false,
# respond 304 (Not Modified)".
def not_modified(request_headers: Headers, *, etag: str | None, last_modified: float | None) -> bool:
    """True when the client's copy is current and a 304 answers the request."""
    if "if-none-match" in request_headers:
        return _none_match_fails(request_headers.get("If-None-Match"), etag)
    return _modified_since_fails(request_headers.get_all("If-Modified-Since"), last_modified)


# RFC 9110 13.1.2: If-None-Match = "*" / #entity-tag
# "1. If the field value is "*", the condition is false if the origin server
#     has a current representation for the target resource.
#  2. If the field value is a list of entity tags, the condition is false if
#     one of the listed tags matches the entity tag of the selected
#     representation." and "A recipient MUST use the weak comparison function
# when comparing entity tags for If-None-Match".
# We are asked about a stored representation, so "*" always matches.
def _none_match_fails(if_none_match: str | None, etag: str | None) -> bool:
    if is_wildcard(if_none_match):
        return True
    current = parse_entity_tag(etag)
    return current is not None and any(weak_match(tag, current) for tag in entity_tag_list(if_none_match))


# RFC 9110 13.1.3: "A recipient MUST ignore the If-Modified-Since header field
# if the received field value is not a valid HTTP-date, the field value has
# more than one member, or if the request method is neither GET nor HEAD."
# "1. If the selected representation's last modification date is earlier or
#     equal to the date provided in the field value, the condition is false."
# HTTP-dates have whole seconds, so our Last-Modified is compared floored.
def _modified_since_fails(values: list[str], last_modified: float | None) -> bool:
    if len(values) != 1 or last_modified is None or not math.isfinite(last_modified):
        return False
    since = parse_http_date(values[0])
    return since is not None and math.floor(last_modified) <= since
