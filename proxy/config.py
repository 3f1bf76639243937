"""Settings: every knob of `mediaedge serve`, parsed once into a frozen `Settings`.

Rule: nothing outside this module reads a flag, an environment variable or the
TOML file. Each setting is described once, in `OPTIONS` (its flag, default and
help text); `mediaedge.cli` builds `serve --help` from that table and
`conf/mediaedge.toml` documents the same entries.

Precedence (contract section 1), highest first:

    command-line flag > MEDIAEDGE_<NAME> environment variable > TOML file > default

The TOML file is `--config PATH`, else `$MEDIAEDGE_CONFIG`. Its keys are the flag
names, written `cache-size` or `cache_size`. List settings (`media-prefix`) take
a TOML list, a repeated flag, or a comma-separated environment value.

An empty environment variable counts as unset, except for the settings that
may be off (`upstream`, `state-db`, `webhook-secret`, `access-log`), where an
empty value at any layer means "none" and so can switch off a value set in the
TOML file.

Errors: one `ConfigError`, whose message is one line naming the setting, for
example `--cache-size: malformed size 'abc' (use bytes, 512MiB or 10GB)`. The
pure parsers (`parse_size`, `parse_hostport`, ...) raise `ValueError`; the
loader adds the setting's name and where the value came from.
"""
from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from typing import Any
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

from mediaedge import hitslab
from mediaedge.dbapi import parse_db_url
from mediaedge.origins.sqlroutes import SqlRoute, parse_sql_routes
from mediaedge.policy.signing import SigningKey, parse_signing_key
from mediaedge.errors import ConfigError, DatabaseError

ENV_PREFIX = "MEDIAEDGE_"
CONFIG_ENV = "MEDIAEDGE_CONFIG"
PROFILES = ("native", "magento2", "magento1", "sql")


# --- pure parsers: value in, value out, ValueError with a short reason -------

# Single letters follow nginx and Varnish (`1G` is 1024**3); spelled-out units
# follow IEC: KB = 1000, KiB = 1024.
_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)
_SIZE_HINT = "(use bytes, 512MiB or 10GB)"


def parse_slice_size(text: str | int) -> int:
    """A size, or 0 (slicing off)."""
    if text == 0 or isinstance(text, str) and text.strip() == "0":
        return 0
    return parse_size(text)


def parse_size(text: str | int) -> int:
    """Bytes from `1048576`, `512MiB`, `10GB`, `1.5GiB`, `64k` (fractions round down)."""
    if isinstance(text, bool):
        raise ValueError(f"malformed size {text!r} {_SIZE_HINT}")
    if isinstance(text, int):
        number, factor = Decimal(text), 1
    elif isinstance(text, str):
        if text.strip().startswith("-"):
            raise ValueError(f"size must be positive, got {text!r}")
        m = _SIZE_RE.fullmatch(text)
        if m is None or m.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"malformed size {text!r} {_SIZE_HINT}")
        number, factor = Decimal(m.group(1)), _SIZE_UNITS[m.group(2).lower()]
        if factor == 1 and number != number.to_integral_value():
            raise ValueError(f"malformed size {text!r}: bytes must be a whole number")
    else:
        raise ValueError(f"malformed size {text!r} {_SIZE_HINT}")
    size = int(number * factor)
    if size <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return size


def format_size(size: int) -> str:
    """`1073741824` -> `1GiB`; sizes that are not a whole binary unit stay in bytes."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


_DURATION_UNITS: dict[str, float] = {
    "": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_duration(text: str | float) -> float:
    """Seconds from `86400`, `1.5`, `500ms`, `30s`, `10m`, `12h`, `1d`, `1w` (>= 0)."""
    if isinstance(text, bool):
        raise ValueError(f"malformed duration {text!r} (use seconds, or 30s, 10m, 12h, 1d)")
    if isinstance(text, int | float):
        seconds = float(text)
    elif isinstance(text, str):
        m = _DURATION_RE.fullmatch(text)
        if m is None or m.group(2).lower() not in _DURATION_UNITS:
            if text.strip().startswith("-"):
                raise ValueError(f"must not be negative, got {text!r}")
            raise ValueError(f"malformed duration {text!r} (use seconds, or 30s, 10m, 12h, 1d)")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    else:
        raise ValueError(f"malformed duration {text!r} (use seconds, or 30s, 10m, 12h, 1d)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"must be a finite number of seconds >= 0, got {text!r}")
    return seconds


def parse_hostport(text: str | int | tuple[str, int]) -> tuple[str, int]:
    """`127.0.0.1:8080`, `[::1]:8080`, `:8080` or `8080` (host defaults to 127.0.0.1)."""
    if isinstance(text, tuple) and len(text) == 2:
        return _check_hostport(str(text[0]), str(text[1]), repr(text))
    if isinstance(text, int) and not isinstance(text, bool):
        return _check_hostport("", str(text), repr(text))
    if not isinstance(text, str):
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    s = text.strip()
    if s.startswith("["):
        host, bracket, rest = s[1:].partition("]")
        if not bracket or not rest.startswith(":") or not host:
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address in {text!r}") from None
        return _check_hostport(host, rest[1:], repr(text))
    if s.count(":") > 1:
        raise ValueError(f"put an IPv6 address in brackets, e.g. [::1]:8080, got {text!r}")
    if ":" in s:
        host, _, port = s.rpartition(":")
        return _check_hostport(host, port, repr(text))
    if s.isdigit():
        return _check_hostport("", s, repr(text))
    raise ValueError(f"expected HOST:PORT, got {text!r}")


def _check_hostport(host: str, port: str, shown: str) -> tuple[str, int]:
    if host and (any(c.isspace() for c in host) or "/" in host):
        raise ValueError(f"malformed host in {shown}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535 in {shown}")
    return host or "127.0.0.1", int(port)


def format_hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_http_url(text: object) -> str:
    """An `http://` or `https://` base URL, without its trailing slash."""
    text = _text(text)
    parts = urlsplit(text.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    try:
        _ = parts.port  # parsed lazily: a bad port raises here
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if parts.username or parts.password:
        raise ValueError(f"credentials in the URL are not supported: {_strip_userinfo(text)!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a query or fragment is not allowed, got {text!r}")
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path}".rstrip("/")


def _strip_userinfo(text: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", text)


def parse_media_prefixes(value: object) -> tuple[str, ...]:
    """A list, or a comma-separated string, of path prefixes like `/media/`."""
    items = value if isinstance(value, list | tuple) else _text(value).split(",")
    prefixes: list[str] = []
    for item in items:
        prefix = _text(item).strip()
        if not prefix:
            continue
        check_prefix(prefix)
        if prefix not in prefixes:
            prefixes.append(prefix)
    if not prefixes:
        raise ValueError("at least one prefix is required, e.g. /media/")
    return tuple(prefixes)


def parse_prefix_list(value: object) -> tuple[str, ...]:
    """Like `parse_media_prefixes`, but none is fine (the feature is then off)."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else _text(value).split(",")
    prefixes: list[str] = []
    for item in items:
        prefix = _text(item).strip()
        if prefix:
            check_prefix(prefix)
            if prefix not in prefixes:
                prefixes.append(prefix)
    return tuple(prefixes)


def parse_signing_keys(value: object) -> tuple[SigningKey, ...]:
    """A list, or a comma-separated string, of `[KID:]SECRET` keys (mediaedge.policy.signing)."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else _text(value).split(",")
    keys: list[SigningKey] = []
    for item in items:
        text = _text(item).strip()
        if not text:
            continue
        key = parse_signing_key(text)
        if key.kid is not None and any(k.kid == key.kid for k in keys):
            raise ValueError(f"key id {key.kid!r} is given twice")
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def check_prefix(prefix: str) -> str:
    if not (prefix.startswith("/") and prefix.endswith("/")) or any(c.isspace() for c in prefix):
        hint = "/" + prefix.strip("/") + "/"
        raise ValueError(f"prefix {prefix!r} must start and end with '/' (did you mean {hint!r}?)")
    return prefix


# RFC 9110 5.1: field-name = token; tchar = "!" / "#" / ... / DIGIT / ALPHA
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_name(value: object) -> str:
    name = _text(value).strip()
    if not _TOKEN_RE.fullmatch(name):
        raise ValueError(f"not a valid HTTP header name: {name!r}")
    return name


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _nonempty(value: object) -> str:
    text = _text(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _db_url(value: object) -> str:
    text = _nonempty(value)
    try:
        parse_db_url(text)
    except DatabaseError as e:
        raise ValueError(str(e)) from None
    return text


# `--origin-db none`: no database origin, a plain HTTP cache in front of the upstream.
NO_ORIGIN_DB = "none"
# Where the invalidation log lives when there is neither --state-db nor an origin
# database: a SQLite file in the cache directory (the node's own; nodes that must
# share invalidations give every node the same --state-db).
STATE_DB_FILE = "invalidations.db"


def _origin_db(value: object) -> str | None:
    if isinstance(value, str) and value.strip().lower() == NO_ORIGIN_DB:
        return None
    return _db_url(value)


def parse_forward_headers(value: object) -> tuple[str, ...]:
    """Field names (lower-cased, a list or comma-separated), or `*` for every end-to-end field."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else _text(value).split(",")
    names: list[str] = []
    for item in items:
        text = _text(item).strip().lower()
        if not text:
            continue
        name = "*" if text == "*" else _header_name(text).lower()
        if name not in names:
            names.append(name)
    return tuple(names)


def _cache_name(value: object) -> str:
    from mediaedge.policy.cachestatus import check_cache_name

    return check_cache_name(_nonempty(value))


def _profile(value: object) -> str:
    name = _text(value).strip().lower()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {value!r} (choose native, magento2, magento1 or sql)")
    return name


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)  # type: ignore[arg-type]
    if seconds <= 0:
        raise ValueError(f"must be more than 0 seconds, got {value!r}")
    return seconds


LOG_FORMATS = ("combined", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    """A parser accepting one of `choices` (case-insensitive), naming them all when refused."""

    def parse_choice(value: object) -> str:
        name = _text(value).strip().lower()
        if name not in choices:
            raise ValueError(f"unknown value {value!r} (choose {', '.join(choices)})")
        return name

    return parse_choice


def _positive_int(value: object) -> int:
    text = str(value).strip() if isinstance(value, int) and not isinstance(value, bool) else _text(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"must be a whole number of at least 1, got {value!r}")
    return int(text)


def parse_workers(value: object) -> int:
    """`--workers`: a whole number of at least 1, or `auto` (one per core, os.cpu_count())."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return max(1, os.cpu_count() or 1)
    return _positive_int(value)


def parse_cidrs(value: object) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A list, or a comma-separated string, of networks like `127.0.0.1/32` or `::1`.

    A bare address is a one-address network. Host bits set (`10.0.0.1/8`) are an error,
    not silently masked: a typo in an ACL must not widen it."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else _text(value).split(",")
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for item in items:
        text = _text(item).strip()
        if not text:
            continue
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            raise ValueError(f"not a network or address: {text!r} ({e})") from None
        if net not in nets:
            nets.append(net)
    return tuple(nets)


HIT_SLAB_MIN = hitslab.MIN_RING  # a smaller --hit-slab-size is off


def _size_or_off(value: object) -> int:
    """A size, or off (0): the threshold of a feature that may be turned off."""
    if isinstance(value, str) and value.strip().lower() == "off":
        return 0
    return parse_size(value)  # type: ignore[arg-type]


def _optional(parse: Callable[[object], object]) -> Callable[[object], object]:
    """An empty value means "none" for the settings that may be off."""

    def parse_optional(value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse(value)

    return parse_optional


# --- the table of settings ----------------------------------------------------

COMPUTED = object()  # marks a default derived from other settings


@dataclass(frozen=True)
class Option:
    name: str  # the flag without dashes, also the TOML key: "cache-size"
    field: str  # the Settings attribute
    metavar: str
    default: object  # raw value, parsed like any other; None = off; COMPUTED
    shown_default: str  # the default as the help text says it
    parse: Callable[[Any], object]  # from the raw value (a flag's text, or a TOML value)
    help: str
    optional: bool = False  # may be off (None)
    repeatable: bool = False

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def takes_duration(self) -> bool:
        return self.parse in (parse_duration, _positive_duration)

    @property
    def full_help(self) -> str:
        """The help text, with the duration forms said once for every duration setting."""
        if self.takes_duration:
            return f"{self.help} Takes seconds or a duration: {DURATION_FORMS}."
        return self.help


DURATION_FORMS = "1.5, 500ms, 30s, 10m, 12h, 7d, 1w"


OPTIONS: tuple[Option, ...] = (
    Option(
        "listen", "listen", "HOST:PORT", "127.0.0.1:8080", "127.0.0.1:8080", parse_hostport,
        "Address of the data plane, the reverse proxy that clients and the CDN talk to. "
        "Use 0.0.0.0:PORT or [::]:PORT to listen on every interface; a bare :PORT means 127.0.0.1.",
    ),
    Option(
        "admin-listen", "admin_listen", "HOST:PORT", "127.0.0.1:8081", "127.0.0.1:8081",
        parse_hostport,
        "Address of the admin plane: the publish webhook, /stats, /metrics, /healthz and the "
        "dashboard. Keep it off the public network.",
    ),
    Option(
        "upstream", "upstream", "URL", None, "none", _optional(parse_http_url),
        "The application server asked first for media and sent every other request, e.g. "
        "http://127.0.0.1:8000. Without it the database origin alone serves media and other "
        "requests get 404.",
        optional=True,
    ),
    Option(
        "origin-db", "origin_db", "URL", "sqlite:///var/origin.db", "sqlite:///var/origin.db",
        _origin_db,
        "The database origin, read when the upstream has no answer: sqlite:///PATH (relative; "
        "sqlite:////PATH is absolute), postgresql://USER:PASS@HOST:PORT/DB or "
        "mysql://USER:PASS@HOST:PORT/DB. 'none': no database origin, a plain HTTP cache in front "
        "of --upstream (then required); the invalidation log is then kept in --state-db, else in "
        "the SQLite file invalidations.db in --cache-dir.",
    ),
    Option(
        "origin-profile", "origin_profile", "NAME", "native", "native", _profile,
        "Table layout of the database origin: native (mediaedge's media_files table, created "
        "when missing), magento2 (media_storage_file_storage), magento1 (core_file_storage), "
        "or sql: any table, read through the [[sql_route]] tables of the --config file "
        "(docs/origins.md). All but native are read-only.",
    ),
    Option(
        "state-db", "state_db", "URL", None, "the origin database", _optional(_db_url),
        "Database holding the invalidation log (mediaedge_invalidations) shared by every node. "
        "Set it when the origin database is read-only, such as a Magento database.",
        optional=True,
    ),
    Option(
        "cache-dir", "cache_dir", "DIR", "var/cache", "var/cache", _nonempty,
        "Directory of the on-disk cache; created when missing.",
    ),
    Option(
        "cache-size", "cache_size", "SIZE", "1GiB", "1GiB", parse_size,
        "Bound on the cache's disk use. Accepts bytes or a unit: 512MiB, 10GB, 1.5GiB (KB, MB, GB "
        "are powers of 1000; KiB, MiB, GiB and the single letters k, M, G are powers of 1024).",
    ),
    Option(
        "memory-size", "memory_size", "SIZE", "64MiB", "64MiB", _size_or_off,
        "Bound on the memory tier: small entries (up to 256 KiB) asked for more than once are "
        "also held in memory and served without a disk read. Each entry counts its body plus "
        "4 KiB. Per worker process (--workers): each keeps its own. 'off' serves every "
        "hit from the disk cache.",
    ),
    Option(
        "hit-slab-size", "hit_slab_size", "SIZE", COMPUTED, "a sixteenth of --cache-size, at most 4GiB",
        _size_or_off,
        "Part of --cache-size kept for the hit slab: small entries (under 32 KB) also in one flat "
        "file, so a hit that memory does not hold skips the cache database. It keeps the most "
        "recently stored; shared by the workers. 'off' (or under 1MiB): none.",
    ),
    Option(
        "max-object-size", "max_object_size", "SIZE", COMPUTED, "an eighth of --cache-size",
        parse_size,
        "Largest response stored; larger ones pass through to the client unstored. Must not "
        "exceed --cache-size.",
    ),
    Option(
        "slice-size", "slice_size", "SIZE", 16 << 20, "16MiB", parse_slice_size,
        "Objects from the upstream larger than this are fetched and stored in slices of this "
        "size with Range requests (nginx's slice module): a seek costs one slice, a whole "
        "request streams slice after slice. 0 turns slicing off; slices larger than "
        "--max-object-size are not made (whole-object behaviour).",
    ),
    Option(
        "sendfile-min-size", "sendfile_min_size", "SIZE", "1MiB", "1MiB", _size_or_off,
        "Hits of at least SIZE on a plain-HTTP/1.1 keep-alive connection go from the cache file "
        "to the client socket with sendfile (docs/large-media.md), not through the in-process "
        "stream server and mitmproxy; TLS clients always take the streamed path. 'off' turns it off.",
    ),
    Option(
        "idle-timeout", "idle_timeout", "SECONDS", 30, "30", _positive_duration,
        "A client connection with no activity for this long is closed (half-open and slowloris "
        "connections; mediaedge serve only, mitmdump keeps its own), and a client that takes no "
        "byte of a response waiting for it (sendfile or streamed) for this long is dropped "
        "(nginx's send_timeout).",
    ),
    Option(
        "media-prefix", "media_prefixes", "PREFIX", ("/media/",), "/media/",
        parse_media_prefixes,
        "Path prefix of media requests, starting and ending with '/'. Repeat the flag for "
        "several; the environment variable takes a comma-separated list and the TOML file a list.",
        repeatable=True,
    ),
    Option(
        "revision-header", "revision_header", "NAME", "X-Media-Revision", "X-Media-Revision",
        _header_name,
        "Response header carrying the media revision, read from the origins and always "
        "forwarded to the client.",
    ),
    Option(
        "default-ttl", "default_ttl", "SECONDS", 86400, "86400", parse_duration,
        "Freshness lifetime when the origin's response gives none (no Cache-Control, Expires or "
        "Last-Modified).",
    ),
    Option(
        "negative-ttl", "negative_ttl", "SECONDS", 10, "10", parse_duration,
        "How long a 404 or 410 is remembered before the origins are asked again; 0 disables it.",
    ),
    Option(
        "upstream-timeout", "upstream_timeout", "SECONDS", 10, "10", _positive_duration,
        "Connect and first-byte timeout for the upstream; on expiry the database origin is read.",
    ),
    Option(
        "webhook-secret", "webhook_secret", "SECRET", None, "none",
        _optional(_nonempty),
        "HMAC-SHA256 key for POST /publish on the admin plane; without it publish is refused "
        "with 503. Prefer the environment variable to the flag, which other users can see.",
        optional=True,
    ),
    Option(
        "admin-token", "admin_token", "TOKEN", None, "none", _optional(_nonempty),
        "Bearer token for the admin plane's /stats, /metrics, /readyz and dashboard: clients "
        "send 'Authorization: Bearer TOKEN' (the dashboard page also takes ?token=TOKEN). "
        "Required when --admin-listen is not a loopback address: serve and check refuse to "
        "start without it. /healthz stays open and /publish keeps its HMAC. Prefer the "
        "environment variable to the flag, which other users can see.",
        optional=True,
    ),
    Option(
        "node-id", "node_id", "NAME", COMPUTED, "HOSTNAME:PORT, the port of --listen", _nonempty,
        "Names this node in the invalidation log; give each node sharing a --state-db its own.",
    ),
    Option(
        "grace", "grace", "SECONDS", 86400, "86400", parse_duration,
        "How long past expiry an entry may still be served when both origins fail and the "
        "response gave no stale-if-error (Varnish's grace).",
    ),
    Option(
        "coalesce-timeout", "coalesce_timeout", "SECONDS", 30, "30", _positive_duration,
        "How long a request waits on a fetch it shares with others (coalesced misses) for the "
        "response head, or for the next bytes once they stop coming; then it gets the stale "
        "entry or a 504 while the fetch goes on for the rest.",
    ),
    Option(
        "coalesce-max-waiters", "coalesce_max_waiters", "N", 1000, "1000", _positive_int,
        "Most requests one fetch may serve at once; further ones get the stale entry or a 503 "
        "with Retry-After rather than another origin fetch.",
    ),
    Option(
        "log-retention", "log_retention", "DURATION", "7d", "7d", _positive_duration,
        "Events older than this are deleted from the invalidation log (the newest is always "
        "kept). A node whose last applied event is older than the oldest kept one drops its "
        "whole cache at start, since it cannot know what it missed.",
    ),
    Option(
        "allow-purge-from", "allow_purge_from", "CIDR", (), "none", parse_cidrs,
        "Client networks whose PURGE requests on the data plane are obeyed (Varnish's purge "
        "ACL), e.g. 127.0.0.1/32 or 10.0.0.0/8; repeat the flag for several. With none, PURGE "
        "is answered 405. A proxy in front on the same host makes every client 127.0.0.1: "
        "allow loopback only when nothing else connects through it.",
        repeatable=True,
    ),
    Option(
        "browser-ttl", "browser_ttl", "SECONDS", 0, "0", parse_duration,
        "Cache-Control sent to clients when the origin gave none (database rows): max-age=N "
        "when N > 0, else no-cache, so browsers revalidate with the ETag and a publish reaches "
        "them at once.",
    ),
    Option(
        "db-timeout", "db_timeout", "SECONDS", 10, "10", _positive_duration,
        "Bound on one database origin lookup (a statement timeout, not a cut of a long blob "
        "stream); past it the lookup counts as the database failing.",
    ),
    Option(
        "signing-key", "signing_keys", "[KID:]SECRET", (), "none", parse_signing_keys,
        "Key for signed URLs under --signed-prefix: an HMAC-SHA256 secret, optionally named "
        "by a key id (1-64 letters, digits, '.', '_', '~', '-') that links may carry as kid=. "
        "Repeat the flag for several: all are valid at once, so keys can be rotated. Prefer "
        "the environment variable (comma-separated) to the flag, which other users can see.",
        repeatable=True,
    ),
    Option(
        "signed-prefix", "signed_prefixes", "PREFIX", (), "none", parse_prefix_list,
        "Media under this prefix is served only with a valid signature (exp, optional kid, "
        "sig in the query; docs/private-media.md); others get 403. Must lie under a "
        "--media-prefix and needs a --signing-key. Repeatable.",
        repeatable=True,
    ),
    Option(
        "auth-url", "auth_url", "URL", None, "none", _optional(parse_http_url),
        "Endpoint of the app asked whether a request may see media under --auth-prefix "
        "(like nginx's auth_request): a GET with the client's Cookie and Authorization, "
        "X-Original-URI and X-Original-Method; 2xx allows, 401/403 refuses, anything else "
        "or no answer within --upstream-timeout is 503.",
        optional=True,
    ),
    Option(
        "auth-prefix", "auth_prefixes", "PREFIX", (), "none", parse_prefix_list,
        "Media under this prefix needs the app's yes from --auth-url. Must lie under a "
        "--media-prefix. Repeatable.",
        repeatable=True,
    ),
    Option(
        "auth-ttl", "auth_ttl", "SECONDS", 60, "60", parse_duration,
        "How long a yes or no from --auth-url is remembered per (Cookie and Authorization "
        "values, target); 0 asks the app on every request. An invalidation of a target "
        "forgets its answers at once.",
    ),
    Option(
        "forward-header", "forward_headers", "NAME", (), "none", parse_forward_headers,
        "Request field sent to the upstream on a media fetch besides the built-in allow-list "
        "(Accept, Accept-Encoding, Accept-Language, User-Agent, client hints, Authorization, "
        "Cookie); repeat the flag for several, or give * for every end-to-end field (as Varnish "
        "does; Range, conditionals and hop-by-hop fields never go). A forwarded field the app "
        "answers by but does not name in Vary lets one client poison the entry everyone gets "
        "(Magento honours X-Original-URL): forward only what the app Varies on.",
        repeatable=True,
    ),
    Option(
        "cache-name", "cache_name", "NAME", "mediaedge", "mediaedge", _cache_name,
        "This cache's name in Cache-Status (RFC 9211), so that tiers of mediaedge (an edge in "
        "front of a shield) can be told apart; members the upstream sent are kept before ours.",
    ),
    Option(
        "access-log", "access_log", "PATH", None, "off", _optional(_nonempty),
        "Write one line per request to PATH ('-' for standard output).",
        optional=True,
    ),
    Option(
        "access-log-format", "access_log_format", "FMT", "combined", "combined", _choice(LOG_FORMATS),
        "Format of --access-log: combined (Apache/nginx combined, then cache=, origin=, dur= and "
        "the Cache-Status) or json (one object a line: time, client, method, target, status, "
        "bytes, duration_ms, cache_status, revision).",
    ),
    Option(
        "workers", "workers", "N", 1, "1", parse_workers,
        "Serving processes sharing the --listen port (SO_REUSEPORT) and the --cache-dir; auto is "
        "one per core. With more than one, a supervisor process holds --admin-listen and answers "
        "for the node as a whole (counters summed over the workers, publish and purge applied in "
        "every worker before the answer) and restarts a worker that dies. 1 runs one process, no "
        "supervisor.",
    ),
    Option(
        "log-level", "log_level", "LEVEL", "info", "info", _choice(LOG_LEVELS),
        "Least severe message written to standard error: debug, info, warning or error.",
    ),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
SQL_ROUTE_KEY = "sql_route"  # TOML only: an array of tables, not a setting (mediaedge.origins.sqlroutes)
_ALIASES = {"media-prefixes": "media-prefix"}  # the Settings field name, as a TOML key


@dataclass(frozen=True, repr=False)
class Settings:
    listen: tuple[str, int]
    admin_listen: tuple[str, int]
    upstream: str | None
    origin_db: str | None  # None: --origin-db none
    origin_profile: str
    state_db: str | None
    cache_dir: str
    cache_size: int
    memory_size: int
    hit_slab_size: int
    max_object_size: int
    sendfile_min_size: int
    idle_timeout: float
    media_prefixes: tuple[str, ...]
    revision_header: str
    default_ttl: float
    negative_ttl: float
    upstream_timeout: float
    webhook_secret: str | None
    node_id: str
    grace: float
    coalesce_timeout: float
    coalesce_max_waiters: int
    log_retention: float
    allow_purge_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    browser_ttl: float
    db_timeout: float
    access_log: str | None
    signing_keys: tuple[SigningKey, ...] = ()
    signed_prefixes: tuple[str, ...] = ()
    auth_url: str | None = None
    auth_prefixes: tuple[str, ...] = ()
    auth_ttl: float = 60.0
    admin_token: str | None = None
    access_log_format: str = "combined"
    log_level: str = "info"
    workers: int = 1
    forward_headers: tuple[str, ...] = ()  # lower-cased; ("*",): every end-to-end field
    cache_name: str = "mediaedge"
    slice_size: int = 16 << 20  # 0: slicing off
    config_path: str | None = None
    sql_routes: tuple[SqlRoute, ...] = ()  # [[sql_route]] tables of the config file (the sql profile)

    @property
    def state_db_url(self) -> str:
        """Where the invalidation log lives: --state-db, else the origin database, else
        (--origin-db none) a SQLite file in the cache directory."""
        if self.state_db or self.origin_db:
            return self.state_db or self.origin_db  # type: ignore[return-value]
        return "sqlite:///" + os.path.abspath(os.path.join(self.cache_dir, STATE_DB_FILE))

    @property
    def admin_url(self) -> str:
        """A URL reaching the admin plane from this host (wildcard addresses -> loopback)."""
        host, port = self.admin_listen
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        return "http://" + format_hostport((host, port))

    def as_dict(self) -> dict[str, object]:
        """Settings by flag name, JSON-friendly, with the secret and DB passwords hidden.

        Derived from the table (OPTIONS), so a new setting shows up here, in the startup
        log and in `check` without another list to keep in step.
        """
        shown: dict[str, object] = {}
        for o in OPTIONS:
            value = getattr(self, o.field)
            show = _SHOWN.get(o.name) or (_secret if _is_secret(o) else None)
            shown[o.name] = show(value) if show is not None and value is not None else _plain(value)
        if self.origin_db is None:
            shown["origin-db"] = NO_ORIGIN_DB
        shown["config"] = self.config_path
        return shown

    def describe(self) -> str:
        """One `name = value` line per setting, for a startup log."""
        shown = self.as_dict()
        shown["cache-size"] = format_size(self.cache_size)
        shown["max-object-size"] = format_size(self.max_object_size)
        shown["hit-slab-size"] = format_size(self.hit_slab_size) if self.hit_slab_size else "off"
        shown["media-prefix"] = ", ".join(self.media_prefixes)
        return "\n".join(f"{name} = {'none' if v is None else v}" for name, v in shown.items())

    def __repr__(self) -> str:
        return f"Settings({self.as_dict()!r})"


def _plain(value: object) -> object:
    """A setting's value as JSON: tuples as lists, networks as text."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    return value


def _is_secret(o: Option) -> bool:
    """A secret or token is never shown, whatever a new row forgets to say."""
    return "SECRET" in o.metavar or "TOKEN" in o.metavar


def _secret(_: object) -> str:
    return "***"


def _redact_keys(keys: tuple[SigningKey, ...]) -> list[str]:
    return [f"{k.kid}:***" if k.kid else "***" for k in keys]


# How settings whose plain value would mislead or leak are shown (as_dict, the startup log).
_SHOWN: dict[str, Callable[[Any], object]] = {
    "listen": format_hostport,
    "admin-listen": format_hostport,
    "origin-db": lambda url: _redact_db(url),
    "state-db": lambda url: _redact_db(url),
    "signing-key": _redact_keys,
}
def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a listener on `host`: a loopback address or
    `localhost`. Any other name may resolve to a public address, so it is not."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_token_problem(settings: Settings) -> ConfigError | None:
    """The refusal `serve` and `check` raise when the admin plane would listen beyond
    loopback without --admin-token (its /stats, /metrics and dashboard would be open
    to the network); None when the settings are fine."""
    host, port = settings.admin_listen
    if settings.admin_token or is_loopback(host):
        return None
    return ConfigError("--admin-token", f"required when --admin-listen ({format_hostport((host, port))}) "
                       "is not a loopback address; set MEDIAEDGE_ADMIN_TOKEN or admin-token in --config")


def _redact_db(url: str) -> str:
    try:
        return parse_db_url(url).redacted()
    except DatabaseError:
        return _strip_userinfo(url)


# --- loading ------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    value: object
    source: str  # "" for a flag or the default, else " (from X)" for the error message


def load_settings(
    cli: Mapping[str, object], environ: Mapping[str, str], *, config_path: str | None
) -> Settings:
    """Merge flag > environment > TOML file > default, parse, and cross-check.

    `cli` holds only the flags the user gave, keyed `cache_size` or `cache-size`;
    None values are ignored. Values may be strings or already typed (ints, tuples,
    lists), so tests can write `load_settings({"cache_size": 10_000}, {}, config_path=None)`.
    """
    flags = _normalise_cli(cli)
    path = config_path or _str_or_none(flags.pop("config", None)) or environ.get(CONFIG_ENV) or None
    file_values = _read_toml(path) if path else {}
    routes = _sql_routes(file_values.pop(SQL_ROUTE_KEY, None), path)
    values: dict[str, object] = {}
    for option in OPTIONS:
        raw = _pick(option, flags, environ, file_values, path)
        if raw.value is COMPUTED:
            continue
        try:
            values[option.field] = option.parse(raw.value)
        except ValueError as e:
            raise ConfigError(option.flag, f"{e}{raw.source}") from None
    return _finish(values, path, routes)


def _sql_routes(value: object, path: str | None) -> tuple[SqlRoute, ...]:
    """The `[[sql_route]]` tables, parsed once; errors name the route: `sql_route #2: ...`."""
    if value is None:
        return ()
    try:
        return parse_sql_routes(value)
    except ValueError as e:
        raise ConfigError("--config", f"{path}: {e}") from None


def _finish(values: dict[str, object], path: str | None, routes: tuple[SqlRoute, ...] = ()) -> Settings:
    """Fill the computed defaults and check settings against each other."""
    cache_size = values["cache_size"]
    assert isinstance(cache_size, int)
    values.setdefault("max_object_size", max(1, cache_size // 8))
    values.setdefault("hit_slab_size", hitslab.default_size(cache_size))
    if values["hit_slab_size"] < HIT_SLAB_MIN:  # type: ignore[operator]
        values["hit_slab_size"] = 0  # too small to hold a useful share: off
    if values["hit_slab_size"] > cache_size // 4:  # type: ignore[operator]
        raise ConfigError(
            "--hit-slab-size",
            f"{format_size(values['hit_slab_size'])} is more than a quarter of "  # type: ignore[arg-type]
            f"--cache-size {format_size(cache_size)}",
        )
    if values["max_object_size"] > cache_size:  # type: ignore[operator]
        raise ConfigError(
            "--max-object-size",
            f"{format_size(values['max_object_size'])} is larger than "  # type: ignore[arg-type]
            f"--cache-size {format_size(cache_size)}",
        )
    listen, admin = values["listen"], values["admin_listen"]
    assert isinstance(listen, tuple) and isinstance(admin, tuple)
    if listen == admin and listen[1] != 0:
        raise ConfigError("--admin-listen", f"same address as --listen ({format_hostport(listen)})")
    values.setdefault("node_id", f"{socket.gethostname()}:{listen[1]}")
    if values["origin_db"] is None and not values.get("upstream"):
        raise ConfigError("--origin-db", "none needs --upstream (with no database origin the app is the only origin)")
    if values["origin_profile"] == "sql" and not routes and values["origin_db"] is not None:
        raise ConfigError("--origin-profile", "sql needs at least one [[sql_route]] table in the --config file")
    _check_private(values)
    return Settings(**values, config_path=path, sql_routes=routes)  # type: ignore[arg-type]


def _check_private(values: dict[str, object]) -> None:
    """Private-media prefixes must be media (else their requests would be forwarded,
    ungated) and need their key or endpoint."""
    media = values["media_prefixes"]
    assert isinstance(media, tuple)
    for field, flag in (("signed_prefixes", "--signed-prefix"), ("auth_prefixes", "--auth-prefix")):
        for prefix in values.get(field, ()):  # type: ignore[attr-defined]
            if not prefix.startswith(media):
                raise ConfigError(flag, f"{prefix!r} is not under a --media-prefix ({', '.join(media)})")
    if values.get("signed_prefixes") and not values.get("signing_keys"):
        raise ConfigError("--signed-prefix", "needs at least one --signing-key")
    if values.get("auth_prefixes") and not values.get("auth_url"):
        raise ConfigError("--auth-prefix", "needs --auth-url")


def _pick(
    option: Option,
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    file_values: Mapping[str, object],
    path: str | None,
) -> _Raw:
    if option.name in flags:
        return _Raw(flags[option.name], "")
    env_value = environ.get(option.env)
    if env_value is not None and (env_value.strip() or option.optional):
        return _Raw(env_value, f" (from {option.env})")
    if option.name in file_values:
        return _Raw(file_values[option.name], f" (in {path})")
    return _Raw(option.default, "")


def _normalise_cli(cli: Mapping[str, object]) -> dict[str, object]:
    flags: dict[str, object] = {}
    for key, value in cli.items():
        name = _ALIASES.get(key.replace("_", "-"), key.replace("_", "-"))
        if value is None:
            continue
        if name != "config" and name not in OPTIONS_BY_NAME:
            raise ConfigError(f"--{name}", "unknown setting")
        flags[name] = value
    return flags


def _read_toml(path: str) -> dict[str, object]:
    """The file's settings by flag name; unknown or doubled keys are errors."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path!r}: {e.strerror or e}") from None
    except ValueError as e:  # tomllib.TOMLDecodeError, UnicodeDecodeError
        raise ConfigError("--config", f"{path}: invalid TOML: {e}") from None
    values: dict[str, object] = {}
    for key, value in data.items():
        name = _ALIASES.get(key.replace("_", "-"), key.replace("_", "-"))
        if key == SQL_ROUTE_KEY:
            values[key] = value
            continue
        if name not in OPTIONS_BY_NAME:
            raise ConfigError("--config", f"{path}: unknown setting {key!r}{_suggest(key)}")
        if name in values:
            raise ConfigError("--config", f"{path}: {name!r} is set twice")
        values[name] = value
    return values


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), list(OPTIONS_BY_NAME), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
