"""Request targets, cache keys, Vary and revisions.

Rule 1: every request target becomes a cache key, a database path and a
publish/purge match only through `normalize_target`. One canonical string per
resource means one entry per resource: "/media/a%41.jpg" and "/media/aA.jpg"
are the same key, and a target that could climb out of a directory
("/media/%2e%2e/secret", "/media/a%2Fb", "/media/a\\b") never becomes one.

Rule 2 (web cache deception, contract section 2 "Targets refused"): "a media
target whose path, after percent-decoding repeatedly (`%25` included), NFKC
normalisation and dropping `;` parameters from each segment, has a `.`, `..`
or empty segment, a backslash or a control character is answered `400` and
never forwarded". Apps decode leniently (Spring decodes twice and drops
";params", others apply NFKC or resolve ".."), so "/media/..%3B/account" or
"/media/%252e%252e/account" reaches them as "/account", and the victim's page
would be stored under a media URL. `normalize_target` refuses such targets, so
none of them is ever a cache key, a fetch or a database lookup.

Pure. `normalize_target` raises `TargetError`, carrying the status to answer
with; nothing else here raises.
"""
from __future__ import annotations

import json
import re
import string
import unicodedata
from urllib.parse import unquote, unquote_to_bytes

from mediaedge.headers import Headers
from mediaedge.policy.conditional import parse_entity_tag
from mediaedge.errors import TargetError

# RFC 3986 2.3: unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# RFC 3986 3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@"
#               sub-delims = "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "="
_PATH_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
# Rule 2: at most this many rounds of percent-decoding; a path still changing
# after them is refused (nobody encodes a real file name eight times over).
_MAX_DECODE_ROUNDS = 8
# RFC 3986 3.4: query = *( pchar / "/" / "?" )
_QUERY_SAFE = _PATH_SAFE | frozenset("?")
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 9112 3.2.2: absolute-form = absolute-URI; we keep only its path and query.
_SCHEME_AND_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")
_SLASH, _BACKSLASH, _NUL = 0x2F, 0x5C, 0x00
# RFC 9110 8.8.3: etagc = %x21 / %x23-7E / obs-text (we keep to ASCII)
_ETAGC = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"'}
_WHITESPACE = re.compile(r"\s+")
_COMMA = re.compile(r"\s*,\s*")


# RFC 9112 3.2: request-target = origin-form / absolute-form / authority-form / asterisk-form
#               origin-form    = absolute-path [ "?" query ]
# RFC 3986 6.2.2: case normalisation of percent-escapes (upper-case hex) and
# percent-encoding normalisation ("URIs should be normalized by decoding any
# percent-encoded octet that corresponds to an unreserved character").
# Letter case elsewhere is significant (media paths are byte-exact) and
# "//" is kept: RFC 3986 gives empty segments meaning.
# Dot segments are refused rather than resolved (RFC 3986 5.2.4 would resolve
# them): a client that sends them is probing, and resolving them is how
# "/media/../admin" ends up somewhere else.
def normalize_target(raw: str, *, max_length: int = 4096) -> str:
    """The canonical "/path?query" of a request target, or TargetError.

    Idempotent: a canonical target normalises to itself. The length limit
    applies to `raw` and to the result, so that stays true for long targets.
    """
    if not isinstance(raw, str):
        raise TargetError("request target is not text")
    if len(raw) > max_length:
        raise TargetError(f"request target longer than {max_length} characters", 414)
    if any(unicodedata.category(c) == "Cc" for c in raw):
        raise TargetError("request target contains a control character")
    path, question, query = _origin_form(raw).partition("?")
    if not path.startswith("/"):
        raise TargetError("request target must start with '/'")
    canonical = _canonical_path(path) + question + _canonical_query(query)
    if len(canonical) > max_length:
        raise TargetError(f"request target longer than {max_length} characters", 414)
    return canonical


def _origin_form(raw: str) -> str:
    """Path and query of an absolute-form target ("http://h/p?q" -> "/p?q"); others as given.

    RFC 9112 3.2.2: "If the target URI's path component is empty, the client
    MUST send "/" as the path within the origin-form".
    """
    if raw.startswith("/"):
        return raw
    match = _SCHEME_AND_AUTHORITY.match(raw)
    if not match:
        return raw
    rest = raw[match.end() :]
    return rest if rest.startswith("/") else "/" + rest


def _canonical_path(path: str) -> str:
    pieces: list[str] = []
    octets = bytearray()  # the fully decoded path, to check it as UTF-8
    i = 0
    while i < len(path):
        char = path[i]
        if char == "%":
            octet = _escape_at(path, i)
            if octet is None:
                raise TargetError("malformed percent-escape in the path")
            if octet == _SLASH:
                raise TargetError("encoded slash (%2F) in the path")
            if octet == _BACKSLASH:
                raise TargetError("backslash in the path")
            pieces.append(chr(octet) if chr(octet) in _UNRESERVED else f"%{octet:02X}")
            octets.append(octet)
            i += 3
            continue
        if char == "\\":
            raise TargetError("backslash in the path")
        encoded = _utf8(char)
        pieces.append(char if char in _PATH_SAFE else _percent_encode(encoded))
        octets += encoded
        i += 1
    _check_decoded_path(octets)
    canonical = "".join(pieces)
    _check_segments(canonical)
    _check_lenient_segments(canonical)
    return canonical


def _canonical_query(query: str) -> str:
    """Escapes upper-cased, unsafe characters encoded, nothing decoded: the
    application owns its query syntax ("a+b" and "a%20b" may differ to it)."""
    pieces: list[str] = []
    i = 0
    while i < len(query):
        char = query[i]
        if char == "%":
            octet = _escape_at(query, i)
            if octet is None:  # a stray "%" is data: encode it
                pieces.append("%25")
                i += 1
                continue
            if octet == _NUL:
                raise TargetError("NUL (%00) in the query")
            pieces.append(f"%{octet:02X}")
            i += 3
            continue
        pieces.append(char if char in _QUERY_SAFE else _percent_encode(_utf8(char)))
        i += 1
    return "".join(pieces)


def _escape_at(text: str, i: int) -> int | None:
    """The octet of the escape "%XX" at `i`, or None when it is not one."""
    digits = text[i + 1 : i + 3]
    if len(digits) != 2 or not (digits[0] in _HEX and digits[1] in _HEX):
        return None
    return int(digits, 16)


def _utf8(char: str) -> bytes:
    """UTF-8 of one character; a surrogate-escaped byte (how mitmproxy keeps
    undecodable request bytes) becomes that byte again."""
    try:
        return char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise TargetError("invalid character in the request target") from None


def _percent_encode(octets: bytes) -> str:
    return "".join(f"%{octet:02X}" for octet in octets)


def _check_decoded_path(octets: bytearray) -> None:
    """The path the database is asked for must be clean UTF-8 without control characters."""
    try:
        text = octets.decode("utf-8")
    except UnicodeDecodeError:
        raise TargetError("path is not valid UTF-8") from None
    if "\x00" in text:
        raise TargetError("NUL (%00) in the path")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise TargetError("control character in the path")


# RFC 3986 3.3: 'The path segments "." and "..", also known as dot-segments,
# are defined for relative reference within the path name hierarchy.'
# A segment is also refused when its part before ";" is a dot segment: some
# servers (Tomcat, Jetty) strip path parameters first, turning "..;x" into "..".
def _check_segments(canonical_path: str) -> None:
    for segment in canonical_path.split("/"):
        if segment.partition(";")[0] in (".", ".."):
            raise TargetError("dot segment ('.' or '..') in the path")


def lenient_path(path: str) -> str:
    """The path as the most lenient app server may read it: percent-decoded until
    stable (`%25` included), NFKC-normalised, `;` parameters dropped from each segment.

    Raises TargetError when the decoding does not settle within
    `_MAX_DECODE_ROUNDS` rounds or yields bytes that are not UTF-8 (an overlong
    "%c0%ae" hidden under "%25" is a dot to some decoders).
    """
    text = path
    if "%" not in text and text.isascii():  # the common case: nothing to decode, NFKC is identity on ASCII
        return "/".join(segment.partition(";")[0] for segment in text.split("/")) if ";" in text else text
    for _ in range(_MAX_DECODE_ROUNDS):
        try:
            decoded = unquote_to_bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise TargetError("path is not UTF-8 once percent-decoded again") from None
        # NFKC: fullwidth "．．" (U+FF0E), "％２ｅ", "／" and "＼" become ASCII,
        # as they do in apps that normalise before routing.
        decoded = unicodedata.normalize("NFKC", decoded)
        if decoded == text:
            break
        text = decoded
    else:
        raise TargetError(f"path still percent-encoded after {_MAX_DECODE_ROUNDS} rounds of decoding")
    return "/".join(segment.partition(";")[0] for segment in text.split("/"))


# Rule 2 (contract section 2, "Targets refused"), checked on what a lenient app
# would route. Choices where the rule is silent:
#  - the LAST segment may be empty: "/media/get/?name=a.jpg" is a media target
#    in the contract's own words (section 4); a trailing "/" names a directory-
#    style resource, it does not climb. Every other empty segment ("//") is refused.
#  - a segment of dots only ("...", ". .") is refused with "." and "..": Windows
#    servers trim trailing dots and spaces, turning "... " into "..".
def _check_lenient_segments(canonical_path: str) -> None:
    text = lenient_path(canonical_path)
    # Without "%", the canonical path is the ASCII pchars it was checked as: no
    # backslash or control character can appear; skip the scan (the common case).
    if "%" in canonical_path:
        if "\\" in text:
            raise TargetError("backslash in the path once decoded")
        if any(unicodedata.category(c) == "Cc" for c in text):
            raise TargetError("control character in the path once decoded")
    segments = text.split("/")[1:]
    for i, segment in enumerate(segments):
        if not segment:
            if i != len(segments) - 1:
                raise TargetError("empty segment ('//') in the path once decoded")
        elif not segment.strip(". "):
            raise TargetError("dot segment ('.' or '..') in the path once decoded")


def looks_media(raw: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a target that `normalize_target` refused could name media to some app.

    Such a request is answered 400 rather than forwarded (Rule 2: "never
    forwarded"). Lenient on purpose, since refusing a malformed target costs no
    real client anything: absolute-form is reduced to its path, the path decoded
    as `lenient_path` does (but never refusing), backslashes read as slashes,
    repeated slashes merged (nginx's merge_slashes) and case ignored, so
    "/%256Dedia/..", "/MEDIA/..;/x" and "//media\\..\\x" all look media.
    """
    path = _origin_form(raw).partition("?")[0]
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unicodedata.normalize("NFKC", unquote(path, encoding="utf-8", errors="replace"))
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/")
    path = "/".join(segment.partition(";")[0] for segment in path.split("/"))
    path = re.sub("/{2,}", "/", path).casefold()
    return any(prefix and path.startswith(prefix.casefold()) for prefix in prefixes)


def decoded_path(canonical: str) -> str:
    """The path of a canonical target, fully percent-decoded, for database lookups."""
    path = canonical.partition("?")[0]
    return unquote(path, encoding="utf-8", errors="replace")


def is_media(canonical: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the path starts with a media prefix (case-sensitive, canonical form).

    Prefixes are compared with the canonical path, so one with non-ASCII
    characters must itself be normalised. Empty prefixes are ignored: an empty
    entry in a list setting should not make everything media; "/" does that.
    """
    path = canonical.partition("?")[0]
    return any(prefix and path.startswith(prefix) for prefix in prefixes)


# RFC 9110 12.5.5: Vary = #( "*" / field-name )
# "A Vary field value containing a member "*" signals that other aspects of the
# request might have played a role in selecting the response representation"
# RFC 9111 4.1: "A stored response with a Vary header field value containing a
# member "*" always fails to match."
def vary_names(response_headers: Headers) -> tuple[str, ...] | None:
    """Lower-cased, sorted, unique field names from every Vary field; None for "*"."""
    names: set[str] = set()
    for value in response_headers.get_all("Vary"):
        for member in value.split(","):
            name = member.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


# RFC 9111 4.1: "the header fields match ... if all of the following are true:
# ... header fields ... can be normalized ... by: adding or removing whitespace
# where allowed in the field's syntax; combining multiple field lines with the
# same field name ...". An absent field is kept distinct from an empty one.
def variant_key(target: str, revision: str, vary: tuple[str, ...], request_headers: Headers) -> str:
    """The cache key: a JSON array of target, revision and [name, value] per Vary name.

    JSON makes it unambiguous whatever the values contain (no separator can be
    forged), and it is ASCII-only, which suits diskcache keys and logs.
    """
    names = sorted({name.lower() for name in vary})
    selected = [[name, _normalised_value(request_headers.get(name), name)] for name in names]
    return json.dumps([target, revision, selected], separators=(",", ":"))


def vary_values(vary: tuple[str, ...], request_headers: Headers) -> tuple[str | None, ...]:
    """The request's value for each name in `vary` (in order), normalised; None when absent.

    RFC 9110 12.5.3: an empty `Accept-Encoding` means "no encoding is acceptable"
    (identity only), while no field means "any": the two select different
    representations, so they must select different stored responses. None stays
    distinct from "" in the JSON of a storage key (null vs "").
    """
    return tuple(_normalised_value(request_headers.get(name), name) for name in vary)


# RFC 9111 4.1: selecting fields match when normalised "by ... adding or removing
# whitespace where allowed in the field's syntax; combining multiple field lines
# with the same field name ...; normalizing both header field values in a way
# that is known to have identical semantics, according to the header field's
# specification (e.g., reordering field values when order is not significant;
# case-normalization, where values are defined to be case-insensitive)."
# These fields are lists whose order carries no meaning (preference is the
# q-value, RFC 9110 12.4.2) and whose tokens are case-insensitive: content-codings
# (8.4.1), media types (8.3.1), language ranges (RFC 4647 2), charsets (8.3.2).
SET_FIELDS = frozenset({"accept-encoding", "accept", "accept-language", "accept-charset"})
_PARAM_SPACE = re.compile(r"\s*([;=])\s*")


def _normalised_value(value: str | None, name: str = "") -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())  # str.split: the common, already-tidy value costs no regex
    if name in SET_FIELDS:
        members = {_PARAM_SPACE.sub(r"\1", m.strip().lower()) for m in value.split(",")}
        return ",".join(sorted(m for m in members if m))
    return _COMMA.sub(",", value) if " ," in value or ", " in value else value


def revision_from(headers: Headers, header_name: str = "X-Media-Revision") -> str | None:
    """The origin's revision: its revision header, else the opaque-tag of a strong ETag.

    A weak ETag is not a revision: RFC 9110 8.8.1 lets it stay the same across
    changes in the bytes.
    """
    for value in headers.get_all(header_name):
        if value.strip():
            return value.strip()
    etags = headers.get_all("ETag")
    tag = parse_entity_tag(etags[0]) if etags else None
    if tag is None or tag[0] or not tag[1]:
        return None
    return tag[1]


# RFC 9110 8.8.3: entity-tag = [ weak ] opaque-tag; opaque-tag = DQUOTE *etagc DQUOTE
def etag_for_revision(rev: str) -> str:
    """A strong ETag naming the revision, e.g. '"3f2a"'; characters an ETag cannot hold are dropped."""
    return '"' + "".join(c for c in rev if c in _ETAGC) + '"'
