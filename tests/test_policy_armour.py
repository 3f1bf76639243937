"""Deception armour (contract section 2): what is not stored on --default-ttl."""
import pytest

from mediaedge.headers import Headers
from mediaedge.policy.armour import deception_armour, fits


@pytest.mark.parametrize(
    "target, headers, refused",
    [
        # a page under a media extension, no freshness: the attack's shape
        ("/media/a.jpg", [("Content-Type", "text/html; charset=utf-8")], True),
        ("/media/a.jpg", [("Content-Type", "TEXT/HTML")], True),
        ("/media/a.jpg", [("Content-Type", "application/xhtml+xml")], True),
        ("/media/a.jpg", [("Content-Type", "text/html"), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")], True),
        ("/media/a.jpg", [("Content-Type", "text/html"), ("Cache-Control", "public")], True),
        ("/media/a.jpg", [("Content-Type", "text/html"), ("CDN-Cache-Control", "public")], True),
        # any text/html, whatever the extension
        ("/media/doc.html", [("Content-Type", "text/html")], True),
        ("/media/get/?name=a.jpg", [("Content-Type", "text/html")], True),
        ("/media/README", [("Content-Type", "text/html")], True),
        # other types that do not fit the extension
        ("/media/a.jpg", [("Content-Type", "application/json")], True),
        ("/media/a.jpg", [("Content-Type", "text/plain")], True),
        ("/media/a.pdf", [("Content-Type", "image/png")], True),
        ("/media/a.mp4", [("Content-Type", "application/pdf")], True),
        # explicit freshness: the origin's decision, stored
        ("/media/a.jpg", [("Content-Type", "text/html"), ("Cache-Control", "max-age=60")], False),
        ("/media/a.jpg", [("Content-Type", "text/html"), ("Cache-Control", "s-maxage=60")], False),
        ("/media/a.jpg", [("Content-Type", "text/html"), ("CDN-Cache-Control", "max-age=60")], False),
        ("/media/a.jpg", [("Content-Type", "text/html"), ("Expires", "Mon, 01 Jan 2035 00:00:00 GMT")], False),
        # fitting types
        ("/media/a.jpg", [("Content-Type", "image/jpeg")], False),
        ("/media/a.jpg", [("Content-Type", "image/webp")], False),  # a family match (format negotiation)
        ("/media/A.JPG", [("Content-Type", "image/jpeg")], False),
        ("/media/a.svg", [("Content-Type", "image/svg+xml")], False),
        ("/media/a.mp4", [("Content-Type", "video/mp4")], False),
        ("/media/a.ogg", [("Content-Type", "video/ogg")], False),
        ("/media/a.woff2", [("Content-Type", "application/font-woff2")], False),
        ("/media/a.js", [("Content-Type", "application/javascript")], False),
        ("/media/a.xml", [("Content-Type", "text/xml")], False),
        ("/media/a.css", [("Content-Type", "text/css")], False),
        ("/media/a.pdf", [("Content-Type", "application/pdf")], False),
        ("/media/a.jpg", [("Content-Type", "application/octet-stream")], False),
        ("/media/a.jpg", [], False),  # no type: nothing to compare
        ("/media/a.jpg?v=3.html", [("Content-Type", "image/jpeg")], False),  # the query does not count
        # unknown or no extension: only pages are refused
        ("/media/blob", [("Content-Type", "application/json")], False),
        ("/media/a.weird", [("Content-Type", "text/plain")], False),
        ("/media/get/?name=a.jpg", [("Content-Type", "image/jpeg")], False),
    ],
)
def test_deception_armour(target, headers, refused):
    reason = deception_armour(target=target, status=200, response_headers=Headers(headers))
    assert (reason is not None) is refused, reason
    if reason is not None:
        assert "\n" not in reason and "freshness" in reason


@pytest.mark.parametrize("status", [404, 410, 206, 301])
def test_only_200_is_judged(status):
    assert deception_armour(target="/media/a.jpg", status=status,
                            response_headers=Headers([("Content-Type", "text/html")])) is None


def test_reason_names_type_and_extension():
    reason = deception_armour(target="/media/a.jpg", status=200,
                              response_headers=Headers([("Content-Type", "text/html; charset=utf-8")]))
    assert reason == "text/html without explicit freshness under .jpg"
    reason = deception_armour(target="/media/a.jpg", status=200,
                              response_headers=Headers([("Content-Type", "application/json")]))
    assert reason == "application/json without explicit freshness does not fit .jpg"


@pytest.mark.parametrize(
    "target, media_type, expected",
    [
        ("/media/a.png", "image/png", True),
        ("/media/a.png", "image/jpeg", True),
        ("/media/a.png", "text/html", False),
        ("/media/x", "text/html", False),
        ("/media/x", "image/png", True),
        ("/media/a.m3u8", "audio/mpegurl", True),
    ],
)
def test_fits(target, media_type, expected):
    assert fits(target, media_type) is expected
