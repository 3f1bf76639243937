"""Cache-Control (and CDN-Cache-Control) directive parsing.

Pure and forgiving: origins send junk, and a junk directive must not cost us
the valid ones next to it. Nothing here raises.
"""
from __future__ import annotations

import re

# RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "."
#                        / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DIGITS = re.compile(r"^[0-9]+$")

# RFC 9111 1.2.2: "the cache MUST consider the value to be 2147483648 (2^31)
# or the greatest positive integer it can conveniently represent."
DELTA_SECONDS_MAX = 2**31


# RFC 9111 5.2:
#   Cache-Control   = #cache-directive
#   cache-directive = token [ "=" ( token / quoted-string ) ]
# "Cache directives are identified by a token, to be compared case-insensitively"
# and "For the cache directives defined below, no argument is defined (nor
# allowed) unless stated otherwise."
# RFC 9111 4.2.1: "When there is more than one value present for a given
# directive (e.g., two Expires header field lines or multiple Cache-Control:
# max-age directives), either the first occurrence should be used or the
# response should be considered stale." We keep the first.
def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Directive name (lower-cased) to its argument (unquoted), or None when it has none.

    Commas inside quoted arguments (`no-cache="a, b"`) do not split directives;
    names that are not tokens are skipped.
    """
    directives: dict[str, str | None] = {}
    if not isinstance(value, str):
        return directives
    pos, end = 0, len(value)
    while pos < end:
        name_end = _find_any(value, ",=", pos)
        name = value[pos:name_end].strip().lower()
        argument: str | None = None
        pos = name_end
        if pos < end and value[pos] == "=":
            argument, pos = _read_argument(value, pos + 1)
        pos += 1  # past the comma (or the end)
        if name and _TOKEN.match(name) and name not in directives:
            directives[name] = argument
    return directives


def _find_any(text: str, chars: str, start: int) -> int:
    """Index of the first of `chars` at or after `start`, else len(text)."""
    for i in range(start, len(text)):
        if text[i] in chars:
            return i
    return len(text)


def _read_argument(text: str, pos: int) -> tuple[str, int]:
    """The argument starting at `pos` and the index of the comma ending the directive."""
    end = len(text)
    while pos < end and text[pos] in " \t":
        pos += 1
    if pos < end and text[pos] == '"':
        # RFC 9110 5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
        chars: list[str] = []
        pos += 1
        while pos < end and text[pos] != '"':
            if text[pos] == "\\" and pos + 1 < end:
                pos += 1
            chars.append(text[pos])
            pos += 1
        # Anything between the closing quote and the next comma is junk.
        return "".join(chars), _find_any(text, ",", pos + 1)
    comma = _find_any(text, ",", pos)
    return text[pos:comma].strip(), comma


# RFC 9111 1.2.2:
#   delta-seconds = 1*DIGIT
# "A recipient parsing a delta-seconds value and converting it to binary form
# ought to use an arithmetic type of at least 31 bits of non-negative integer
# range. If a cache receives a delta-seconds value greater than the greatest
# integer it can represent, or if any of its subsequent calculations
# overflows, the cache MUST consider the value to be 2147483648 (2^31) or the
# greatest positive integer it can conveniently represent."
def delta_seconds(value: str | None) -> int | None:
    """A non-negative number of seconds (at most 2**31), or None when `value` is not one."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not _DIGITS.match(text):  # not str.isdigit(): that accepts "٣" and "²"
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > 10:  # more digits than 2**31 has: skip a huge int conversion
        return DELTA_SECONDS_MAX
    return min(int(significant), DELTA_SECONDS_MAX)
