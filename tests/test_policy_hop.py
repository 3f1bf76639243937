"""mediaedge.policy.hop: RFC 9110 7.6.1."""
import pytest

from mediaedge.policy.hop import connection_options, end_to_end


@pytest.mark.parametrize("pairs, expected", [
    ([("Content-Type", "image/png")], [("Content-Type", "image/png")]),
    # hop-by-hop by definition
    ([("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"), ("TE", "trailers"), ("Upgrade", "h2c"),
      ("Proxy-Connection", "keep-alive"), ("X-A", "1")], [("X-A", "1")]),
    # named in Connection (any case, several fields, whitespace)
    ([("Connection", "X-Secret , keep-alive"), ("X-Secret", "s"), ("x-secret", "t"), ("X-Kept", "k")],
     [("X-Kept", "k")]),
    ([("Connection", "close"), ("Connection", "x-b"), ("X-B", "1"), ("X-C", "2")], [("X-C", "2")]),
    # order and repeats kept
    ([("X-A", "1"), ("X-B", "2"), ("X-A", "3")], [("X-A", "1"), ("X-B", "2"), ("X-A", "3")]),
    ([("Connection", ""), ("X-A", "1")], [("X-A", "1")]),
])
def test_end_to_end(pairs, expected):
    assert end_to_end(pairs) == expected


def test_connection_options():
    assert connection_options([("connection", "A, b,,"), ("Connection", "C")]) == {"a", "b", "c"}
