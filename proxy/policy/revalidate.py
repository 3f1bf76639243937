"""Revalidating an expired entry instead of fetching it again (RFC 9111 4.3).

Pure. Four decisions, each over plain values:
  - `conditional_fields`: which validators a conditional GET sends for a stored response;
  - `use_not_modified`: whether a 304 answers for the stored response (4.3.4's selection);
  - `updated_headers`: the stored header fields after a 304 (4.3.4, 3.2);
  - `db_unchanged`: whether a database row's revision says the stored entry is current.

Why: an expired 2 GB video that has not changed should cost the app one small request,
not 2 GB. The engine (proxy/engine.py) does the I/O and rewrites only the entry's
metadata (proxy/storage.py `update_meta`); the body on disk is never copied.
"""
from __future__ import annotations

from dataclasses import dataclass

from mediaedge.headers import Headers
from mediaedge.policy.conditional import parse_entity_tag
from mediaedge.policy.httpdate import parse_http_date

# RFC 9110 7.6.1 hop-by-hop fields: never stored, so never updated either (RFC 9111 3.1).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization"})

# Fields a 304 must not change in the stored response, and why:
#  - content-length: RFC 9111 3.2 excepts it by name;
#  - content-encoding, content-range: the stored bytes were produced under them
#    ("header fields that the cache's stored response depends upon", 3.2);
#  - vary: the entry's storage key depends on it (same rule);
#  - set-cookie and the surrogate fields: never stored (contract section 2).
NOT_UPDATED = frozenset({"content-length", "content-encoding", "content-range", "vary", "set-cookie",
                         "set-cookie2", "surrogate-key", "xkey", "surrogate-control"})

# The age basis of the stored response (RFC 9111 4.2.3): after a 304 the entry is as old
# as the 304 says, so the old values go even when the 304 carries none.
AGE_BASIS = ("date", "age")


@dataclass(frozen=True)
class Decision:
    """A yes/no with the reason (for logs and tests)."""

    ok: bool
    reason: str


def can_revalidate(*, source: str, negative: bool, soft_stale: bool, headers: Headers,
                   has_revision_probe: bool) -> Decision:
    """May this expired entry be revalidated rather than fetched again?

    Upstream entries need a validator to send; database entries need an origin that can
    read a row's revision without its body. Negative entries (our own "not found") are
    fetched again. A soft-purged entry (marked stale by the operator) is revalidated like
    an expired one: a changed object comes back whole, an unchanged one costs a 304.
    `soft_stale` is kept in the signature so callers say what they know."""
    if negative:
        return Decision(False, "negative")
    if source == "db":
        return Decision(has_revision_probe, "db-revision" if has_revision_probe else "no-revision-probe")
    if source != "upstream":
        return Decision(False, "source")
    if not conditional_fields(headers):
        return Decision(False, "no-validator")
    return Decision(True, "validator")


# RFC 9111 4.3.1: "When generating a conditional request for validation, a cache ...
#  - MUST send the relevant entity tags (using If-Match, If-None-Match, or If-Range) if
#    the entity tags were provided in the stored response(s) being validated.
#  - SHOULD send the Last-Modified value (using If-Modified-Since) if the request is
#    not for a subrange, a single stored response is being validated, and that response
#    contains a Last-Modified value."
# The contract asks for If-None-Match from the ETag, else If-Modified-Since: an origin
# that has both compares the tag (RFC 9110 13.1.3: If-Modified-Since is ignored when
# If-None-Match is present), so sending the date too would change nothing.
def conditional_fields(stored: Headers) -> tuple[tuple[str, str], ...]:
    """The request fields of a conditional GET for `stored` (empty: no validator)."""
    etags = stored.get_all("etag")
    if etags and parse_entity_tag(etags[0]) is not None:
        return (("If-None-Match", etags[0].strip()),)
    modified = stored.get_all("last-modified")
    if modified and parse_http_date(modified[0]) is not None:
        return (("If-Modified-Since", modified[0].strip()),)
    return ()


# RFC 9111 4.3.4: "the cache determines which stored responses to update ...:
#  - If the new response contains one or more strong validators (see Section 8.8.1 of
#    [HTTP]), then each of those strong validators identifies a selected representation
#    for update. ...
#  - If the new response contains no strong validators but does contain one or more
#    weak validators, and those validators correspond to one of the cache's stored
#    responses, then the most recent of those matching stored responses is identified
#    for update.
#  - If the new response does not include any form of validator ..., and there is only
#    one stored response, and that stored response also lacks a validator, then that
#    stored response is identified for update.
#  If none is identified, the cache "MUST NOT use the 304 to update"; we then fetch again.
# Deviation, on purpose: a 304 carrying no validator at all, in answer to the one
# validator we sent for the one stored response, is taken as being about that response
# (as nginx and Varnish do); the origin said "not modified" to exactly our question.
def use_not_modified(stored: Headers, new: Headers, *, revision_header: str = "X-Media-Revision") -> Decision:
    """Does the 304 `new` identify the stored response `stored` for update?"""
    mine, theirs = _revision(stored, revision_header), _revision(new, revision_header)
    if theirs is not None and mine is not None and theirs != mine:
        return Decision(False, "revision-differs")
    new_tag = parse_entity_tag(_first(new, "etag"))
    old_tag = parse_entity_tag(_first(stored, "etag"))
    if new_tag is not None:
        if old_tag is None:
            return Decision(False, "etag-not-stored")
        # strong comparison when the 304's tag is strong, weak comparison otherwise
        same = new_tag[1] == old_tag[1] and (new_tag[0] or not old_tag[0])
        return Decision(same, "etag-matches" if same else "etag-differs")
    new_lm = _first(new, "last-modified")
    if new_lm is not None:
        old_lm = _first(stored, "last-modified")
        same = old_lm is not None and parse_http_date(new_lm) is not None and \
            parse_http_date(new_lm) == parse_http_date(old_lm)
        return Decision(same, "last-modified-matches" if same else "last-modified-differs")
    return Decision(True, "no-validator-in-304")


# RFC 9111 4.3.4: "For each stored response identified, the cache MUST update its header
# fields with the header fields provided in the 304 (Not Modified) response, as per
# Section 3.2."
# RFC 9111 3.2: "the cache MUST add each header field in the provided response to the
# stored response, replacing field values that are already present, with the following
# exceptions: Header fields excepted from storage in Section 3.1, Header fields that the
# cache's stored response depends upon, as described below, Header fields that are
# automatically processed and removed by the recipient, as described below, and The
# Content-Length header field."
def updated_headers(stored: Headers, new: Headers, *, connection_named: frozenset[str] = frozenset()) -> Headers:
    """The stored response's fields after a 304 with fields `new`.

    A field the 304 carries replaces every stored line of that name, in the place of the
    first; new names are appended in the 304's order. Date and Age (the age basis) are
    dropped when the 304 has none. `connection_named`: fields named in the 304's
    `Connection` (hop-by-hop for that message, RFC 9110 7.6.1)."""
    skip = HOP_BY_HOP | NOT_UPDATED | {n.lower() for n in connection_named}
    for value in new.get_all("connection"):
        skip |= {t.strip().lower() for t in value.split(",") if t.strip()}
    incoming: dict[str, list[tuple[str, str]]] = {}
    for name, value in new:
        if name.lower() not in skip:
            incoming.setdefault(name.lower(), []).append((name, value))
    dropped = {n for n in AGE_BASIS if n not in incoming}
    out: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name, value in stored:
        key = name.lower()
        if key in dropped:
            continue
        if key in incoming:
            if key not in placed:
                out.extend(incoming[key])
                placed.add(key)
            continue
        out.append((name, value))
    for key, lines in incoming.items():
        if key not in placed:
            out.extend(lines)
    return Headers(out)


def db_unchanged(*, stored_revision: str, found: bool, revision: str | None) -> Decision:
    """Is the database row still the stored entry's (its revision read, not its blob)?"""
    if not found:
        return Decision(False, "row-gone")
    if revision is None:
        return Decision(False, "no-revision")
    if revision != stored_revision:
        return Decision(False, "revision-differs")
    return Decision(True, "same-revision")


def _revision(headers: Headers, name: str) -> str | None:
    value = (headers.get(name) or "").strip()
    return value or None


def _first(headers: Headers, name: str) -> str | None:
    values = headers.get_all(name)
    return values[0] if values else None
