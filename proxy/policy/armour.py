"""Deception armour: a page the app sent without freshness is not stored under a media URL.

Contract section 2: "a response without explicit freshness whose `Content-Type`
does not fit the target's extension (`text/html` under `.jpg`, or any
`text/html`) is not stored on `--default-ttl` (`fwd=bypass`)."

Why: path refusal (mediaedge.policy.target, Rule 2) stops the known ways of making
an app answer a media URL with another page, but apps have more ("/media/x.jpg"
routed by a catch-all to a logged-in home page, "account.php;x.jpg"). What they
send back then is a page with no Cache-Control, which the edge would keep for
a day under the media URL and serve to anyone. Cloudflare's Cache Deception
Armor makes the same check. A response that states its own freshness
(CDN-Cache-Control, s-maxage, max-age, Expires) is the app's decision and is
stored as usual.

Pure; the engine applies it to upstream 200s (database rows are the published
files themselves, fetched by exact path, and carry no such risk).
"""
from __future__ import annotations

import posixpath

from mediaedge.headers import Headers
from mediaedge.origins.contenttype import DEFAULT, guess_content_type
from mediaedge.policy.freshness import freshness
from mediaedge.policy.target import decoded_path

# Media types a browser renders as a page. "any text/html" (the contract), and
# XHTML, which is the same page in another syntax.
PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Freshness sources that are the cache's guess, not the origin's statement
# (mediaedge.policy.freshness: RFC 9111 4.2.2's heuristic, or --default-ttl).
_IMPLICIT = frozenset({"heuristic", "default"})


def deception_armour(*, target: str, status: int, response_headers: Headers) -> str | None:
    """None when the armour lets the response be stored; else why not (one line, for the log).

    Only a 200 is judged: it is the status stored on --default-ttl (404/410 are
    kept for --negative-ttl, and other statuses only with explicit freshness).
    """
    if status != 200:
        return None
    if freshness(response_headers, default_ttl=0, response_time=0).source not in _IMPLICIT:
        return None  # the origin said how long: its decision
    media_type = _media_type(response_headers.get("Content-Type"))
    if media_type is None:
        return None  # nothing to compare; a page always says it is HTML
    extension = _extension(target)
    if media_type in PAGE_TYPES:
        return f"{media_type} without explicit freshness" + (f" under .{extension}" if extension else "")
    if not fits(target, media_type):
        return f"{media_type} without explicit freshness does not fit .{extension}"
    return None


def fits(target: str, media_type: str) -> bool:
    """Whether a response's media type fits what the target's extension names.

    A type family match (image/* for .jpg, audio or video for .mp4, any font
    type for .woff …), with the content-type table of mediaedge.origins.contenttype
    naming what an extension is. An extension it does not know fits every type
    but a page (the caller refuses those), and application/octet-stream (bytes
    to download, never rendered) fits every extension.
    """
    expected = guess_content_type(decoded_path(target))
    if expected == DEFAULT or media_type == DEFAULT:
        return media_type not in PAGE_TYPES
    return _family(media_type) == _family(_media_type(expected) or DEFAULT)


def _family(media_type: str) -> str:
    """A coarse kind of content; the spellings servers use for one kind map to one family."""
    major, _, sub = media_type.partition("/")
    if major == "image":
        return "image"
    if major in ("audio", "video") or "mpegurl" in sub:  # .ogg, .webm, .mp4 are either; HLS playlists
        return "av"
    if major == "font" or sub.startswith(("font-", "x-font")) or sub == "vnd.ms-fontobject":
        return "font"
    if sub in ("javascript", "x-javascript", "ecmascript", "x-ecmascript"):
        return "script"
    if sub == "xml" or sub.endswith("+xml"):
        return "xml"
    if sub == "json" or sub.endswith("+json"):
        return "json"
    return major


def _media_type(value: str | None) -> str | None:
    """RFC 9110 8.3.1: media-type = type "/" subtype parameters; lower-cased, parameters dropped."""
    if value is None:
        return None
    media_type = value.split(";", 1)[0].strip().lower()
    return media_type or None


def _extension(target: str) -> str:
    name = posixpath.basename(decoded_path(target))
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem.strip(".") else ""
