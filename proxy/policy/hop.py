"""Hop-by-hop header fields: what a proxy must not store or pass on (RFC 9110 7.6.1).

Pure. Used on the upstream's responses before they are stored or forwarded, and on
the client's request fields before a media fetch.
"""
from __future__ import annotations

from collections.abc import Iterable

# RFC 9110 7.6.1: "Connection", plus the fields it says are hop-by-hop by definition
# ("Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, and Upgrade"), and the
# proxy-* authentication fields that concern one hop only (11.7).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "proxy-authenticate", "proxy-authorization"}
)


# RFC 9110 7.6.1: "Connection = #connection-option" and "Intermediaries MUST parse a
# received Connection header field before a message is forwarded and, for each
# connection-option in this field, remove any header or trailer field(s) from the
# message with the same name as the connection-option, and then remove the
# Connection header field itself (or replace it with the intermediary's own
# control options for the forwarded message)."
def connection_options(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The field names (lower-cased) listed in every Connection field."""
    names: set[str] = set()
    for name, value in pairs:
        if name.lower() == "connection":
            names.update(option.strip().lower() for option in value.split(",") if option.strip())
    return frozenset(names)


def end_to_end(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields a proxy keeps, in order and with repeats: hop-by-hop ones and the ones
    named in Connection removed."""
    pairs = list(pairs)
    drop = HOP_BY_HOP | connection_options(pairs)
    return [(k, v) for k, v in pairs if k.lower() not in drop]
