"""The pure parts of proxy/http1guard.py (the wrap itself is driven by tests/test_hostile.py)."""
from __future__ import annotations

import pytest

from proxy.http1guard import MAX_REQUEST_HEAD, head_too_large, leading_empty_lines


@pytest.mark.parametrize("data, n", [
    (b"GET / HTTP/1.1\r\n\r\n", 0),
    (b"\r\nGET /", 2),
    (b"\nGET /", 1),
    (b"\r\n\n\r\nGET /", 5),
    (b"\r\n\r\n", 4),
    (b"\r", 0),  # half a CRLF: wait for the rest
    (b"", 0),
])
def test_leading_empty_lines(data: bytes, n: int) -> None:
    assert leading_empty_lines(data) == n


@pytest.mark.parametrize("data, too_large", [
    (b"GET / HTTP/1.1\r\n" + b"a" * 100, False),                          # short, incomplete: wait
    (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_HEAD, True),           # over, no end in sight
    (b"GET / HTTP/1.1\r\n\r\n" + b"b" * (2 * MAX_REQUEST_HEAD), False),   # pipelined body/next request
    (b"X" * (MAX_REQUEST_HEAD - 10) + b"\r\n\r\n" + b"z" * 100, False),    # ends just inside
    (b"X" * (MAX_REQUEST_HEAD - 10) + b"\n\n" + b"z" * 100, False),        # bare-LF end, as h11 reads
    (b"X" * (MAX_REQUEST_HEAD + 10) + b"\r\n\r\n", True),                  # ends past the limit
])
def test_head_too_large(data: bytes, too_large: bool) -> None:
    assert head_too_large(bytearray(data)) is too_large


def test_with_date_adds_one_date_after_the_status_line():
    from proxy.http1guard import with_date

    raw = b"HTTP/1.1 502 Bad Gateway\r\nServer: x\r\ncontent-length: 2\r\n\r\nhi"
    dated = with_date(raw, b"Mon, 30 Nov 2026 12:00:00 GMT")
    assert dated == (b"HTTP/1.1 502 Bad Gateway\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\nServer: x\r\n"
                     b"content-length: 2\r\n\r\nhi")
    assert with_date(dated, b"other") == dated  # already dated: unchanged
