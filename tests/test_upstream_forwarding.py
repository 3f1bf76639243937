"""Which client fields a media fetch sends upstream (`--forward-header`), table-driven."""
import pytest

from mediaedge.headers import Headers
from mediaedge.upstream import forwarding, upstream_request_headers

CLIENT = [
    ("Host", "shop.example"), ("Accept", "image/webp"), ("User-Agent", "UA"), ("X-Original-URL", "/admin"),
    ("X-Device", "tablet"), ("Range", "bytes=0-9"), ("If-None-Match", '"a"'), ("Connection", "X-Hop"),
    ("X-Hop", "1"), ("Keep-Alive", "5"), ("Cookie", "s=1"), ("Content-Length", "0"),
]


@pytest.mark.parametrize("extra, expected", [
    ((), ["accept", "user-agent", "cookie"]),
    (("X-Device",), ["accept", "user-agent", "x-device", "cookie"]),
    (("x-original-url", "X-DEVICE"), ["accept", "user-agent", "x-original-url", "x-device", "cookie"]),
    # '*': every end-to-end field but Host, framing, Range, conditionals, and what Connection names
    (("*",), ["accept", "user-agent", "x-original-url", "x-device", "cookie"]),
    (("X-Device", "*"), ["accept", "user-agent", "x-original-url", "x-device", "cookie"]),
])
def test_forwarded_fields(extra, expected):
    sent = upstream_request_headers(Headers(CLIENT), forwarding(extra))
    assert [name.decode() for name, _ in sent] == expected


def test_star_still_drops_values_with_control_characters():
    sent = upstream_request_headers(Headers([("X-A", "ok"), ("X-B", "bad\x00")]), forwarding(("*",)))
    assert sent == [(b"x-a", b"ok")]
