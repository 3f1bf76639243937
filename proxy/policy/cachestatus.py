"""The Cache-Status member this edge adds to every media response (RFC 9211).

Pure string building. Parameters come in the order RFC 9211 defines them
(2.1 hit, 2.2 fwd, 2.3 fwd-status, 2.4 ttl, 2.5 stored, 2.6 collapsed,
2.8 detail); the RFC does not require an order, and this one reads like its
examples ("hit; ttl=376", "fwd=stale; fwd-status=304").
"""
from __future__ import annotations

import re

CACHE_NAME = "mediaedge"  # the default of --cache-name
_name = CACHE_NAME

# RFC 8941 3.3.4 (Structured Field Values, which RFC 9211 builds on):
#   sf-token = ( ALPHA / "*" ) *( tchar / ":" / "/" )
_SF_TOKEN = re.compile(r"^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*$")
_TCHAR_OR_EXTRA = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z:/]")


# RFC 9211 2: "Cache-Status   = sf-list" ... "Each member of the List
# represents a cache that has handled the request." and "Each List member
# identifies the cache that inserted it, and this identifier MUST be a String
# or Token."
# RFC 9211 2.1 hit (Boolean), 2.2 fwd (Token), 2.3 fwd-status (Integer),
# 2.4 ttl (Integer, "It can be negative, to indicate that the response is
# stale"), 2.5 stored (Boolean), 2.6 collapsed (Boolean), 2.8 detail (String
# or Token).
def cache_status(
    *,
    hit: bool = False,
    ttl: int | None = None,
    fwd: str | None = None,
    fwd_status: int | None = None,
    stored: bool = False,
    collapsed: bool = False,
    detail: str | None = None,
) -> str:
    """Our Cache-Status member, e.g. "mediaedge; fwd=miss; fwd-status=200; stored; detail=db"."""
    params: list[str] = []
    if hit:
        params.append("hit")
    fwd_token = _token(fwd) if fwd is not None else ""
    if fwd_token:
        params.append(f"fwd={fwd_token}")
    if fwd_status is not None:
        params.append(f"fwd-status={int(fwd_status)}")
    if ttl is not None:
        params.append(f"ttl={int(ttl)}")
    if stored:
        params.append("stored")
    if collapsed:
        params.append("collapsed")
    if detail is not None:
        params.append(f"detail={_token_or_string(detail)}")
    return "; ".join([_name, *params])


def set_cache_name(name: str) -> None:
    """`--cache-name`, set once when a node starts (every reply of the process names the
    same cache; threading the name through each of the many places that build a member
    would buy nothing). Raises ValueError when `name` is not an sf-token."""
    global _name
    _name = check_cache_name(name)


# RFC 9211 2: "this identifier MUST be a String or Token"; we keep it a Token, so it
# reads as in the RFC's examples ("ExampleCache; hit").
def check_cache_name(name: str) -> str:
    if not _SF_TOKEN.match(name):
        raise ValueError(f"{name!r} is not a token (a letter first, then letters, digits or !#$%&'*+-.^_`|~:/)")
    return name


def _token(value: str) -> str:
    """`value` as an sf-token, dropping characters a token cannot hold ('' if nothing is left)."""
    cleaned = _TCHAR_OR_EXTRA.sub("", value)
    while cleaned and not (cleaned[0].isascii() and (cleaned[0].isalpha() or cleaned[0] == "*")):
        cleaned = cleaned[1:]
    return cleaned


# RFC 8941 3.3.3: sf-string = DQUOTE *( unescaped / "%" / bs-escaped ) DQUOTE
# with only printable ASCII (%x20-7E); '"' and "\" are escaped with "\".
def _token_or_string(value: str) -> str:
    if _SF_TOKEN.match(value):
        return value
    printable = "".join(c for c in value if " " <= c <= "~")
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'
