"""Content-Type from a file name, for rows that store none (every Magento row).

An explicit table rather than `mimetypes`: the stdlib map reads /etc/mime.types,
so answers would differ between machines (and it lacks avif on Python 3.11).
The table covers what a shop's media folder holds; Magento's get.php answers by
extension the same way.
"""
from __future__ import annotations

import posixpath

DEFAULT = "application/octet-stream"

TYPES: dict[str, str] = {
    # images
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "jpe": "image/jpeg",
    "jfif": "image/jpeg",
    "png": "image/png",
    "apng": "image/apng",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "heic": "image/heic",
    "heif": "image/heif",
    "jxl": "image/jxl",
    "svg": "image/svg+xml",
    "svgz": "image/svg+xml",
    "ico": "image/vnd.microsoft.icon",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    # documents
    "pdf": "application/pdf",
    "txt": "text/plain; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "htm": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "mjs": "text/javascript; charset=utf-8",
    "json": "application/json",
    "map": "application/json",
    "xml": "application/xml",
    "rss": "application/rss+xml",
    "md": "text/markdown; charset=utf-8",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "epub": "application/epub+zip",
    # video
    "mp4": "video/mp4",
    "m4v": "video/x-m4v",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "ogv": "video/ogg",
    "avi": "video/x-msvideo",
    "mpeg": "video/mpeg",
    "mpg": "video/mpeg",
    "mkv": "video/x-matroska",
    "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t",
    # audio
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "weba": "audio/webm",
    # fonts
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
    "otf": "font/otf",
    "eot": "application/vnd.ms-fontobject",
    # archives and models
    "zip": "application/zip",
    "gz": "application/gzip",
    "tgz": "application/gzip",
    "tar": "application/x-tar",
    "7z": "application/x-7z-compressed",
    "rar": "application/vnd.rar",
    "glb": "model/gltf-binary",
    "gltf": "model/gltf+json",
    "usdz": "model/vnd.usdz+zip",
    "wasm": "application/wasm",
}


def guess_content_type(path: str) -> str:
    """The type for the last extension of `path` (case-insensitive), else application/octet-stream.

    Only the last segment counts: '/media/a.jpg/b' has no extension, and a
    query string is the caller's to strip.
    """
    name = posixpath.basename(path)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem.strip("."):  # "README", ".htaccess", "..jpg"-like names
        return DEFAULT
    return TYPES.get(ext.lower(), DEFAULT)
