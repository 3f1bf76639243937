"""The on-disk cache: diskcache underneath, typed and pickle-free on top.

Layout of one entry: the body bytes, then a JSON trailer with the entry's metadata
(and, after a newline, the hit record computed from it: proxy/hitrecord.py; entries
written before records have none), then an 8-byte footer (4-byte magic + 4-byte
trailer length). A trailer rather than
a header because a fill writes the body first, while it streams to clients, and
learns the length and hash only at the end; committing is then "append the trailer
and rename the file into diskcache" (no copy, no rewrite).

Keys (one diskcache row each, text keys, `\\x1f`-separated so every key of a target
sorts together and a prefix purge is one range scan):
  - `p\\x1f<target>`: the target's pointer (current revision, Vary names, published revision)
  - `v\\x1f<target>\\x1f<key revision>\\x1f<vary values>`: one stored response

All methods block (SQLite and file I/O): the engine calls them off the event loop.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import struct
import time
import threading
import uuid
from dataclasses import dataclass, field, replace
from collections.abc import Callable
from typing import Any, BinaryIO

import diskcache
from diskcache.core import DBNAME, MODE_BINARY, MODE_PICKLE, MODE_RAW, UNKNOWN

from mediaedge.headers import Headers
from mediaedge import hitslab
from mediaedge.hitslab import HitSlab
from mediaedge.policy.admission import TAIL_SAMPLE, Admission, FrequencySketch, Resident, admit, plan_cull
from mediaedge.policy.lookup import InlineReads, Prewarm, prewarm

log = logging.getLogger("mediaedge.storage")

MAGIC = b"MEG1"
FOOTER = struct.Struct(">4sI")
SEP = "\x1f"
INLINE_LIMIT = 32 * 1024  # diskcache keeps values under this inside SQLite
WAL_LIMIT = 1 << 20  # bytes: SQLite checkpoints and truncates its WAL to this
OVERHEAD_RESERVE = 3 << 20  # bytes of --cache-size kept for the WAL, state and stats.json
ROW_OVERHEAD = 64  # bytes a SQLite row costs besides its key and inline value (estimate for culling)
INLINE_BUSY_TIMEOUT = 0.005  # s: an inline (event-loop) read never waits longer on a locked database
# The inline connection reads the database through a memory map rather than read() calls
# into its own 4 MiB page cache: at 1M entries (2.1 GB) a random lookup's pages are
# rarely in that cache, and copying them in was most of what a disk hit at 1M cost more
# than one at 10k (random-key p50 0.68 -> 0.62 ms at 1M, the same at 10k; bench/entries).
# SQLite caps the size at its build's maximum (2 GB here; past it, read() as before).
# Safe under the other processes' writes: a WAL reader never reads past its snapshot's
# last page, and a checkpoint shrinks the file only below every reader's snapshot
# (tests/test_storage_lookup.py shrinks it under mapped readers). The mapped pages are the
# OS page cache's, shared and reclaimable, but count in the process's RSS (file-backed).
INLINE_MMAP_SIZE = 1 << 31
PREWARM_CHUNK = 1 << 20  # bytes per read of `prewarm`
RECOUNT_EVERY = 4096  # commits between recounts of the entries (sizes the frequency sketch)

# (name, body) of the triggers that keep MediaedgeCount's `entries` (rows keyed `v...`).
# diskcache replaces a value with UPDATE (no trigger), inserts new keys and deletes on
# delete, cull and clear: each of those changes the count by exactly one row.
_V_ROW = "{row}.key >= 'v' AND {row}.key < 'w'"
ENTRY_TRIGGERS = (
    ("mediaedge_entries_insert", "AFTER INSERT ON Cache FOR EACH ROW WHEN " + _V_ROW.format(row="NEW")
     + " BEGIN UPDATE MediaedgeCount SET n = n + 1 WHERE name = 'entries'; END"),
    ("mediaedge_entries_delete", "AFTER DELETE ON Cache FOR EACH ROW WHEN " + _V_ROW.format(row="OLD")
     + " BEGIN UPDATE MediaedgeCount SET n = n - 1 WHERE name = 'entries'; END"),
)


class _Adopt:
    """A finished temp file that `SafeDisk.store` renames into the cache (no copy)."""

    __slots__ = ("path", "size")

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size


class SafeDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache ships no types
    """diskcache's Disk, refusing pickle both ways (CVE-2025-69872) and adopting files.

    Only `str` keys and `bytes`/`_Adopt` values are accepted; a pickled value found on
    disk (written by someone else) is treated as absent rather than unpickled.
    """

    def put(self, key: Any) -> Any:
        if type(key) is not str:
            raise TypeError("mediaedge cache keys are str only")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise KeyError("pickled key refused")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
        if isinstance(value, _Adopt):
            filename, full_path = self.filename(key, value)
            os.makedirs(os.path.dirname(full_path), mode=0o700, exist_ok=True)
            os.rename(value.path, full_path)
            return value.size, MODE_BINARY, filename, None
        if type(value) is bytes:
            return super().store(value, read, key)
        raise TypeError("mediaedge stores bytes and files only")

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise KeyError("pickled value refused")
        return super().fetch(mode, filename, value, read)


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """What we know of one stored response, besides its body."""

    target: str
    revision: str
    status: int
    headers: Headers
    size: int
    sha256: str
    request_time: float
    response_time: float
    source: str  # "upstream" | "db"
    vary: tuple[str, ...] = ()
    vary_values: tuple[str | None, ...] = ()  # None: the request had no such field
    tags: tuple[str, ...] = ()
    negative: bool = False
    soft_stale: bool = False  # soft purge: served stale while one refetch runs
    # The revision in the key: the origin's X-Media-Revision (a resource's version, shared
    # by its Vary variants), or "" when the origin gave none and `revision` was derived
    # per representation (ETag or body hash) — then variants must not displace each other.
    key_revision: str = ""
    # CRC-32 per MiB as hex (proxy/digest.py): lets a Range hit check just its window.
    # Empty for entries written before it existed: their windows are length-checked only.
    blocks: str = ""

    def to_json(self) -> bytes:
        d = {
            "target": self.target,
            "revision": self.revision,
            "status": self.status,
            "headers": self.headers.pairs(),
            "size": self.size,
            "sha256": self.sha256,
            "request_time": self.request_time,
            "response_time": self.response_time,
            "source": self.source,
            "key_revision": self.key_revision,
        }
        # Fields at their defaults are left out (`from_json` reads them back as such): a
        # small entry's row stays under half a SQLite page (proxy/hitrecord.py says why).
        optional = {"vary": list(self.vary), "vary_values": list(self.vary_values), "tags": list(self.tags),
                    "negative": self.negative, "soft_stale": self.soft_stale, "blocks": self.blocks}
        d.update((k, v) for k, v in optional.items() if v)
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> EntryMeta:
        d = json.loads(raw)
        return cls(
            target=d["target"],
            revision=d["revision"],
            status=int(d["status"]),
            headers=Headers((k, v) for k, v in d["headers"]),
            size=int(d["size"]),
            sha256=d["sha256"],
            request_time=float(d["request_time"]),
            response_time=float(d["response_time"]),
            source=d["source"],
            vary=tuple(d.get("vary", ())),
            vary_values=tuple(d.get("vary_values", ())),
            tags=tuple(d.get("tags", ())),
            negative=bool(d.get("negative", False)),
            soft_stale=bool(d.get("soft_stale", False)),
            key_revision=str(d.get("key_revision", "")),
            blocks=str(d.get("blocks", "")),
        )


@dataclass(frozen=True)
class Pointer:
    """Which revision of a target is current, and how its variants are keyed."""

    revision: str
    vary: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        return json.dumps({"revision": self.revision, "vary": list(self.vary)}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Pointer:
        d = json.loads(raw)
        return cls(str(d["revision"]), tuple(d.get("vary") or ()))


@dataclass
class Entry:
    """An open stored response. `body` is either bytes (small) or an open file."""

    meta: EntryMeta
    body: bytes | None = None
    file: BinaryIO | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def pointer_key(target: str) -> str:
    return f"p{SEP}{target}"


def entry_key(target: str, revision: str, vary_values: tuple[str | None, ...]) -> str:
    return f"v{SEP}{target}{SEP}{revision}{SEP}{json.dumps(list(vary_values), separators=(',', ':'))}"


def entry_key_around(target: str) -> tuple[str, str]:
    """What comes before and after the revision in the key of a target's entry without
    Vary: `entry_key(target, revision, ())` is `before + revision + after`."""
    return f"v{SEP}{target}{SEP}", f"{SEP}[]"


def encode_trailer(meta: EntryMeta, record: bytes = b"") -> bytes:
    """The metadata, then (after one newline, which compact JSON never contains) the hit
    record computed from it (proxy/hitrecord.py), then the footer."""
    raw = meta.to_json() + (b"\n" + record if record else b"")
    return raw + FOOTER.pack(MAGIC, len(raw))


def _meta_of(segment: bytes) -> EntryMeta:
    return EntryMeta.from_json(segment.partition(b"\n")[0])


def split_inline_raw(value: bytes) -> tuple[bytes, bytes, bytes]:
    """An inline value's body, metadata JSON and hit record (b"" when it has none), undecoded."""
    magic, n = FOOTER.unpack(value[-FOOTER.size :])
    if magic != MAGIC or n + FOOTER.size > len(value):
        raise ValueError("bad footer")
    meta_json, _, record = value[-FOOTER.size - n : -FOOTER.size].partition(b"\n")
    return value[: len(value) - FOOTER.size - n], meta_json, record


# A target's pointer and its entry's inline value, undecoded (each None: not stored)
InlineValue = tuple[Pointer | None, bytes | None]


def inline_entry(found: InlineValue | None) -> tuple[Pointer | None, Entry | None] | None:
    """`CacheStore.lookup_inline_value`'s answer decoded and checked as `open_entry` checks
    (length and whole SHA-256). None: the thread path reads it again (and drops a damaged entry)."""
    if found is None or found[1] is None:
        return found  # type: ignore[return-value]
    try:
        meta, body = _split_inline(found[1])
    except (ValueError, KeyError, TypeError, struct.error):
        return None
    if len(body) != meta.size or hashlib.sha256(body).hexdigest() != meta.sha256:
        return None
    return found[0], Entry(meta, body=body)


def _split_inline(value: bytes) -> tuple[EntryMeta, bytes]:
    body, meta_json, _ = split_inline_raw(value)
    return EntryMeta.from_json(meta_json), body


def _read_file_meta(f: BinaryIO) -> tuple[EntryMeta, int]:
    f.seek(0, io.SEEK_END)
    total = f.tell()
    if total < FOOTER.size:
        raise ValueError("too short")
    f.seek(total - FOOTER.size)
    magic, n = FOOTER.unpack(f.read(FOOTER.size))
    if magic != MAGIC or n + FOOTER.size > total:
        raise ValueError("bad footer")
    f.seek(total - FOOTER.size - n)
    meta = _meta_of(f.read(n))
    body_len = total - FOOTER.size - n
    f.seek(0)
    return meta, body_len


class CacheStore:
    """Typed, pickle-free cache of media responses over one diskcache directory."""

    def __init__(self, directory: str, *, size_limit: int, small_verify_limit: int = 1 << 20,
                 slab_size: int | None = None) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self.directory = directory
        self.tmp_dir = os.path.join(directory, "tmp")
        # Stray partial files of fills killed mid-write are never servable (they were
        # never renamed into the cache); clear them at start.
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        self.size_limit = size_limit
        self.evictions = 0  # entries evicted for room since start
        self.refused = 0  # responses not stored by admission (mediaedge.policy.admission) since start
        self.small_verify_limit = small_verify_limit
        # A trailer rewritten in place (`update_meta`) must never be read half-written:
        # file trailers are read and rewritten under this lock (one process per cache).
        self._trailer_lock = threading.Lock()
        # Computes the hit record written with each entry's metadata (proxy/hitrecord.py);
        # set by the cache, which knows the settings a plain hit is planned under.
        self.hit_record: Callable[[EntryMeta], bytes] | None = None
        # --cache-size bounds the whole directory: diskcache counts its database and
        # values; SQLite's WAL (capped below), the durable state and stats.json are
        # outside that count, so entries get the limit less a reserve for them.
        reserve = min(size_limit // 4, OVERHEAD_RESERVE)
        # The hit slab (proxy/hitslab.py): small entries' values again, read without SQLite
        # on a disk hit. Its file is carved out of --cache-size too. `slab_size` 0: none
        # (and an old one removed); None: the directory's own, if it has one.
        self.slab = self._open_slab(directory, slab_size)
        if self.slab is not None:
            reserve += self.slab.geometry.file_size
            if reserve >= size_limit:
                raise OSError(errno.EINVAL, f"the hit slab ({self.slab.geometry.file_size} bytes) leaves no room "
                                            f"for entries in {size_limit} bytes")
        # cull_limit=0: never evict inside set(); we evict deliberately after each store,
        # because diskcache's own culling can evict the entry just stored (diskcache 5.6.3,
        # measured: with 300 MB entries and the default size_limit the fourth set() emptied
        # the cache, the entry just stored included).
        # least-recently-stored: reads never write to SQLite (LRU writes on every get).
        self._cache = diskcache.Cache(
            directory,
            disk=SafeDisk,
            size_limit=size_limit - reserve,
            sqlite_journal_size_limit=WAL_LIMIT,
            # One SQLite connection per worker thread: no 64 MiB memory map each, and a
            # 4 MiB page cache each (hot hits are served from memory anyway).
            sqlite_mmap_size=0,
            sqlite_cache_size=1024,
            sqlite_wal_autocheckpoint=WAL_LIMIT // 4096,
            cull_limit=0,
            eviction_policy="least-recently-stored",
            statistics=False,
            tag_index=False,
            disk_min_file_size=INLINE_LIMIT,
        )
        # Facts that must never be evicted (published revisions, the applied log
        # sequence) live in a second, unbounded diskcache beside the first.
        self._state = diskcache.Cache(
            os.path.join(directory, "state"), disk=SafeDisk, size_limit=2**62, cull_limit=0,
            eviction_policy="none", statistics=False, tag_index=False,
            sqlite_journal_size_limit=WAL_LIMIT // 4, sqlite_wal_autocheckpoint=WAL_LIMIT // 16384,
        )
        # Admission and eviction (mediaedge.policy.admission): how often each target is
        # asked for, in memory only (a hit writes nothing), empty at every start; the
        # oldest rows and the volume as of the last commit, so the decision at a
        # response's head reads no SQLite.
        self._install_entry_counter()
        # Inline lookups (`lookup_inline`): one read-only connection per calling thread (the
        # event loop's), and what they have cost lately (mediaedge.policy.lookup).
        self._inline_local = threading.local()
        self._inline_lock = threading.Lock()
        self._inline_cons: list[sqlite3.Connection] = []
        self._inline_pid = os.getpid()
        self._readahead_lock = threading.Lock()
        self._readahead_fds: list[int] = []  # `prewarm`'s descriptors, closed last (see there)
        self._closed = False
        self.inline_reads = InlineReads()  # what reads on the event loop cost lately: run them there?
        self._entries = self.entry_count()
        self._commits = 0
        self.sketch = FrequencySketch(max(1, self._entries))
        self._volume = self.volume()
        self._tail: list[tuple[str, int]] = self._read_tail()

    @staticmethod
    def _open_slab(directory: str, slab_size: int | None) -> HitSlab | None:
        """The hit slab `slab_size` asks for, or None. One that cannot be laid out (a
        file size limit, a full disk) is no reason not to serve: the cache runs without
        it, and a file left from before is removed (nothing would keep it in step)."""
        try:
            if slab_size is None:
                return hitslab.existing(directory)
            if slab_size:
                return HitSlab(directory, slab_size)
        except OSError as e:
            log.warning("hit slab off: cannot lay out %s (%s)", os.path.join(directory, hitslab.FILENAME), e)
        hitslab.remove(directory)
        return None

    # -- durable state --------------------------------------------------------------
    def get_published(self, target: str) -> str | None:
        raw = self._state.get(f"pub{SEP}{target}")
        return raw.decode() if isinstance(raw, bytes) else None

    def set_published(self, target: str, revision: str) -> None:
        self._state.set(f"pub{SEP}{target}", revision.encode())

    def clear_published(self, target: str) -> None:
        self._state.delete(f"pub{SEP}{target}")

    def clear_all_published(self) -> None:
        """Forget every published revision (a node that missed pruned events)."""
        for key in list(self._state.iterkeys()):
            if isinstance(key, str) and key.startswith(f"pub{SEP}"):
                self._state.delete(key)

    def get_applied_seq(self) -> int:
        raw = self._state.get("applied_seq")
        return int(raw) if isinstance(raw, bytes) else 0

    def set_applied_seq(self, seq: int) -> None:
        self._state.set("applied_seq", str(seq).encode())

    # -- pointers -------------------------------------------------------------------
    def get_pointer(self, target: str) -> Pointer | None:
        raw = self._cache.get(pointer_key(target))
        if raw is None:
            return None
        try:
            return Pointer.from_json(raw)
        except (ValueError, TypeError, KeyError):
            return None

    def has_pointer(self, target: str) -> bool:
        return self._cache.get(pointer_key(target)) is not None

    def set_pointer(self, target: str, pointer: Pointer) -> None:
        self._forget_slab(target)
        self._cache.set(pointer_key(target), pointer.to_json())
        self._forget_slab(target)

    # -- entries --------------------------------------------------------------------
    def open_entry(self, target: str, revision: str, vary_values: tuple[str | None, ...]) -> Entry | None:
        """Open a stored response, checking its length (and hash when small).

        A damaged or truncated entry is dropped and reported as absent, so the
        caller fetches it again rather than serving a bad body.
        """
        key = entry_key(target, revision, vary_values)
        try:
            value = self._cache.get(key, read=True)
        except (KeyError, OSError):
            value = None
        if value is None:
            return None
        try:
            if isinstance(value, (bytes, bytearray, memoryview)):
                meta, body = _split_inline(bytes(value))
                if len(body) != meta.size or hashlib.sha256(body).hexdigest() != meta.sha256:
                    raise ValueError("body does not match its recorded length/hash")
                return Entry(meta, body=body)
            with self._trailer_lock:
                meta, body_len = _read_file_meta(value)
            if body_len != meta.size:
                raise ValueError(f"length {body_len} != recorded {meta.size}")
            if meta.size <= self.small_verify_limit:
                body = value.read(meta.size)
                value.close()
                if hashlib.sha256(body).hexdigest() != meta.sha256:
                    raise ValueError("hash mismatch")
                return Entry(meta, body=body)
            return Entry(meta, file=value)
        except (ValueError, KeyError, TypeError, OSError, struct.error) as e:
            if not isinstance(value, (bytes, bytearray, memoryview)):
                value.close()
            log.warning("dropping damaged cache entry %r: %s", key, e)
            self._cache.delete(key)
            self._forget_slab(target)
            return None

    def has_entry(self, target: str, revision: str, vary_values: tuple[str | None, ...]) -> bool:
        """Whether an entry is stored under this key (not opened, not checked: slice caching
        uses it to say whether a window is all in the cache)."""
        return entry_key(target, revision, vary_values) in self._cache

    def trailer(self, meta: EntryMeta) -> bytes:
        """What follows a stored body: `meta` and the hit record computed from it."""
        return encode_trailer(meta, b"" if self.hit_record is None else self.hit_record(meta))

    def lookup_inline(self, target: str, values_for: Callable[[tuple[str, ...]], tuple[str | None, ...]]
                      ) -> tuple[Pointer | None, Entry | None] | None:
        """`get_pointer` then `open_entry`, cheap enough for the event loop, or None: ask on a
        worker thread (the entry is a file, the row looks damaged, the database is busy, or
        inline lookups have lately been slow: mediaedge.policy.lookup)."""
        return inline_entry(self.lookup_inline_value(target, values_for))

    def lookup_inline_value(self, target: str, values_for: Callable[[tuple[str, ...]], tuple[str | None, ...]]
                            ) -> InlineValue | None:
        """`lookup_inline` before the entry's value is decoded or checked: the pointer and
        the inline value (body, metadata, hit record: `split_inline_raw`), None as there.

        Two indexed row reads on this thread's own read-only connection (short busy
        timeout, statements finished at once so no read snapshot outlives the call); the
        caller makes the length and SHA-256 check `open_entry` makes. Nothing is cached in memory:
        each call reads the committed rows, so a purge, publish, eviction or another
        process's write is seen by the next lookup, exactly as on the thread path.
        `values_for(vary names)`: the request's Vary values."""
        if not self.inline_reads.allowed():
            return None
        t0 = time.perf_counter()
        try:
            return self.inline_rows(target, values_for)
        finally:
            self.inline_reads.took((time.perf_counter() - t0) * 1e6)

    def inline_rows(self, target: str, values_for: Callable[[tuple[str, ...]], tuple[str | None, ...]]
                    ) -> InlineValue | None:
        """`lookup_inline_value` whatever reads have cost lately: for a caller that placed
        (and times) a larger read itself, `Cache.probe_stored`."""
        try:
            return self._lookup_rows(target, values_for)
        except (sqlite3.Error, ValueError, KeyError, TypeError, struct.error):
            return None  # the thread path reads it again, and drops a damaged entry

    def _lookup_rows(self, target: str, values_for: Callable[[tuple[str, ...]], tuple[str | None, ...]]
                     ) -> InlineValue | None:
        """The pointer and, in the same statement, the entry its revision names when the
        target has no Vary (`_POINTER_AND_ENTRY`); a target with Vary asks once more with
        the request's values. One statement rather than two: on a request path whose
        CPU caches mitmproxy has just filled with its own work, each statement's setup
        was as dear as its row reads (measured in process with 6 MiB touched between
        lookups: 85 µs for two statements, 50 µs for one)."""
        con = self._inline_con()
        now = time.time()
        before, after = entry_key_around(target)
        rows = con.execute(_POINTER_AND_ENTRY, (before, after, now, pointer_key(target), now)).fetchall()
        if not rows:
            return None, None
        mode, filename, raw, *joined = rows[0]
        if mode != MODE_RAW or filename is not None:
            return None
        pointer = Pointer.from_json(raw)
        if pointer.vary:
            row = _inline_row(con, entry_key(target, pointer.revision, values_for(pointer.vary)))
        else:
            row = None if joined[0] is None else (joined[0], joined[1], joined[2])
        if row is None:
            return pointer, None
        mode, filename, raw = row
        if mode != MODE_RAW or filename is not None:
            return None  # a file: opened, read and hashed on a worker thread
        return pointer, bytes(raw)

    def _inline_con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._inline_local, "con", None)
        if con is None or self._inline_pid != os.getpid():
            con = sqlite3.connect(os.path.join(self.directory, DBNAME), timeout=INLINE_BUSY_TIMEOUT,
                                  isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA query_only = 1")
            con.execute("PRAGMA cache_size = 1024")  # as diskcache's connections: 4 MiB of pages
            con.execute(f"PRAGMA mmap_size = {INLINE_MMAP_SIZE}")
            self._inline_local.con = con
            self._inline_pid = os.getpid()
            with self._inline_lock:
                self._inline_cons.append(con)
        return con

    def prewarm(self) -> Prewarm:
        """Read the hit slab, then the database (and its WAL), once and sequentially, as
        far as they fit (mediaedge.policy.lookup.prewarm), so their pages are in the OS
        page cache: one sequential pass now rather than random page reads on the request
        path later. The slab first: it is what serves small hits. Only the parts of a file
        holding data are read (the slab is sparse until its ring has gone round once).
        Read, not advised: `posix_fadvise(WILLNEED)` was measured to warm nothing here."""
        files: dict[str, list[str]] = {}
        if self.slab is not None:
            files["hit slab"] = [self.slab.path]
        files["cache database"] = [os.path.join(self.directory, DBNAME + suffix) for suffix in ("", "-wal")]
        decision = prewarm([(name, sum(_allocated(p) for p in paths)) for name, paths in files.items()],
                           _available_memory())
        buf = bytearray(PREWARM_CHUNK)
        for path in (p for name in decision.parts for p in files[name]):
            with self._readahead_lock:
                if self._closed:
                    break
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                # Kept open until `close`, after SQLite's connections: closing any
                # descriptor of a file drops every POSIX lock this process holds on it,
                # SQLite's included (measured: another process's purge was then not seen).
                self._readahead_fds.append(fd)
            try:
                _read_data(fd, buf, lambda: self._closed)
            except OSError as e:
                log.debug("could not read %s ahead: %s", path, e)
        return decision

    def prewarm_in_background(self) -> threading.Thread:
        """`prewarm` on a thread of its own: a start never waits for it (2.1 GB took 4.3 s)."""
        def run() -> None:
            t0 = time.monotonic()
            decision = self.prewarm()
            log.info("cache read-ahead %s in %.1f s: %s", "done" if decision.warm else "skipped",
                     time.monotonic() - t0, decision.reason)
        thread = threading.Thread(target=run, name="mediaedge-prewarm", daemon=True)
        thread.start()
        return thread

    def new_temp_path(self) -> str:
        return os.path.join(self.tmp_dir, uuid.uuid4().hex)

    def commit(self, temp_path: str, meta: EntryMeta) -> list[str]:
        """Append the trailer to a finished temp file and make it the entry (atomic).

        Returns the targets whose entries were evicted to make room, so the memory
        tier can drop them too (it must never serve what the disk no longer holds)."""
        self._forget_slab(meta.target)
        return self._commit_entry(temp_path, meta)[0]

    def commit_current(self, temp_path: str, meta: EntryMeta) -> list[str]:
        """`commit`, then point the target at the new entry and drop the revision it
        replaces (readers of it keep their open files to the end); a small entry without
        Vary is also written to the hit slab. Returns the evicted targets, as `commit`."""
        target = meta.target
        stamp = None
        if self.slab is not None:
            self.slab.forget([target])
            stamp = self.slab.stamp(target)  # taken before the rows change: see hitslab.HitSlab.put
        evicted, value = self._commit_entry(temp_path, meta)
        old = self.get_pointer(target)
        self._cache.set(pointer_key(target), Pointer(meta.key_revision, meta.vary).to_json())
        if old is not None and old.revision != meta.key_revision:
            for k in self._keys_with_prefix(f"v{SEP}{target}{SEP}{old.revision}{SEP}"):
                self._cache.delete(k)
        if self.slab is not None and stamp is not None and value is not None and not meta.vary:
            self.slab.put(target, value, stamp)
        return evicted

    def _commit_entry(self, temp_path: str, meta: EntryMeta) -> tuple[list[str], bytes | None]:
        """The entry's row (and file), then eviction; the inline value when it is small."""
        key = entry_key(meta.target, meta.key_revision, meta.vary_values)
        with open(temp_path, "ab") as f:
            f.write(self.trailer(meta))
            size = f.tell()
        data = None
        if size < INLINE_LIMIT:
            with open(temp_path, "rb") as f:
                data = f.read()
            os.unlink(temp_path)
            self._cache.set(key, data, tag=_tag_field(meta.tags))
        else:
            self._cache.set(key, _Adopt(temp_path, size), tag=_tag_field(meta.tags))
        return self._cull(), data

    def update_meta(self, meta: EntryMeta) -> bool:
        """Replace a stored response's metadata, keeping its body where it is (revalidation).

        The entry must still be the one `meta` describes (same SHA-256); False when it is
        gone or was replaced. A large entry's trailer is rewritten in place: the body bytes
        are never read or copied, and readers with the file open keep reading them. A small
        (inline) entry is one SQLite value, rewritten whole."""
        self._forget_slab(meta.target)
        try:
            return self._update_meta(meta)
        finally:
            self._forget_slab(meta.target)

    def _update_meta(self, meta: EntryMeta) -> bool:
        key = entry_key(meta.target, meta.key_revision, meta.vary_values)
        try:
            value = self._cache.get(key, read=True)
        except (KeyError, OSError):
            return False
        if value is None:
            return False
        try:
            if isinstance(value, (bytes, bytearray, memoryview)):
                old, body = _split_inline(bytes(value))
                if old.sha256 != meta.sha256 or old.size != meta.size:
                    return False
                self._cache.set(key, body + self.trailer(meta), tag=_tag_field(meta.tags))
                return True
            path = value.name
            value.close()
            trailer = self.trailer(meta)
            with self._trailer_lock, open(path, "r+b") as f:
                old, body_len = _read_file_meta(f)
                if old.sha256 != meta.sha256 or body_len != meta.size:
                    return False
                f.seek(body_len)
                f.write(trailer)
                f.truncate()
                size = f.tell()
            self._cache._sql("UPDATE Cache SET size = ? WHERE key = ? AND raw = 1", (size, key))  # noqa: SLF001
            return True
        except (ValueError, OSError, struct.error) as e:
            log.warning("could not renew cache entry %r: %s", key, e)
            return False
        finally:
            if not isinstance(value, (bytes, bytearray, memoryview)):
                value.close()

    def mark_soft_stale(self, target: str) -> int:
        """Soft purge: rewrite each stored variant's metadata with soft_stale set."""
        n = 0
        for key in self._keys_with_prefix(f"v{SEP}{target}{SEP}"):
            n += self._rewrite_soft(key)
        return n

    def _rewrite_soft(self, key: str) -> int:
        """Mark one stored variant soft-stale through `update_meta`: a large body (a 4 GB
        video, every slice of it) stays in its file and only the trailer is rewritten."""
        try:
            value = self._cache.get(key, read=True)
        except (KeyError, OSError):
            return 0
        if value is None:
            return 0
        try:
            if isinstance(value, (bytes, bytearray, memoryview)):
                meta, _ = _split_inline(bytes(value))
            else:
                with self._trailer_lock:
                    meta, _ = _read_file_meta(value)
        except (ValueError, OSError, struct.error):
            self._cache.delete(key)
            self._forget_slab(_target_of(key))
            return 0
        finally:
            if not isinstance(value, (bytes, bytearray, memoryview)):
                value.close()
        if meta.soft_stale:
            return 0
        return int(self.update_meta(replace(meta, soft_stale=True)))

    # -- invalidation ---------------------------------------------------------------
    def delete_target(self, target: str) -> int:
        """Drop every stored variant and revision of a target (open readers keep their files)."""
        self._forget_slab(target)
        n = 0
        for key in self._keys_with_prefix(f"v{SEP}{target}{SEP}"):
            n += bool(self._cache.delete(key))
        self._cache.delete(pointer_key(target))
        self._forget_slab(target)
        return n

    def delete_revision(self, target: str, revision: str) -> int:
        """Drop every Vary variant of one revision of a target."""
        self._forget_slab(target)
        n = sum(bool(self._cache.delete(k)) for k in self._keys_with_prefix(f"v{SEP}{target}{SEP}{revision}{SEP}"))
        self._forget_slab(target)
        return n

    def _forget_slab(self, target: str) -> None:
        """The hit slab forgets a target whose rows change: called before the change (a
        crash in between leaves nothing to serve) and after it (a value read from the
        rows meanwhile is not put back: hitslab.HitSlab.put)."""
        if self.slab is not None:
            self.slab.forget([target])

    def targets_with_prefix(self, prefix: str) -> list[str]:
        seen: dict[str, None] = {}
        for kind in ("p", "v"):
            for key in self._keys_with_prefix(f"{kind}{SEP}{prefix}"):
                seen[key.split(SEP)[1]] = None
        return list(seen)

    def targets_with_tag(self, tag: str) -> list[str]:
        rows = self._cache._sql(  # noqa: SLF001 - diskcache 5.6.3 pinned; range/tag scans
            "SELECT key FROM Cache WHERE raw = 1 AND tag LIKE ? ESCAPE '\\'",
            (f"% {_like_escape(tag)} %",),
        ).fetchall()
        return list({r[0].split(SEP)[1]: None for r in rows})

    def _keys_with_prefix(self, prefix: str) -> list[str]:
        rows = self._cache._sql(  # noqa: SLF001
            "SELECT key FROM Cache WHERE raw = 1 AND key >= ? AND key < ?",
            (prefix, prefix + "\U0010ffff"),
        ).fetchall()
        return [r[0] for r in rows]

    # -- admission and eviction -------------------------------------------------------
    def touch(self, target: str) -> None:
        """One request for `target`: counted in memory only (never a disk write)."""
        self.sketch.record(hash(target))

    def frequency(self, target: str) -> int:
        return self.sketch.estimate(hash(target))

    def admission(self, target: str, size: int | None, *, resident: bool = False) -> Admission:
        """Would a response for `target` of `size` bytes (None: not yet known) be stored?
        `resident`: the target has an entry already (this one would replace it).

        Decided when its head arrives, from memory only: the counts, the oldest rows and
        the volume as of the last commit."""
        tail = [Resident(k, n, self.frequency(_target_of(k))) for k, n in self._tail]
        need = max(1, size or 1) + ROW_OVERHEAD
        decision = admit(self.frequency(target), need, self._cache.size_limit - self._volume, tail,
                         self._cache.size_limit, resident=resident)
        if not decision.admit:
            self.refused += 1
        return decision

    def _read_tail(self) -> list[tuple[str, int]]:
        """The oldest entries (`v` rows, diskcache's store_time index) and the bytes each holds.

        Entries only: a target's pointer row is stored just after its entry, so a sample of
        all rows was half pointers (8 entries weighed, not `TAIL_SAMPLE`), and evicting a
        pointer alone left its entry unreachable yet taking room. Pointers go with their
        target's last entry (`_drop_pointer_if_bare`). `substr`, not a key range: the scan
        stays on the store_time index (a range on the key index would sort every entry)."""
        rows = self._cache._sql(  # noqa: SLF001 - diskcache 5.6.3 pinned
            "SELECT key, size, length(value) FROM Cache WHERE substr(key, 1, 2) = ? ORDER BY store_time LIMIT ?",
            ("v" + SEP, TAIL_SAMPLE)).fetchall()
        return [(k, (size or 0) + (inline or 0) + len(k) + ROW_OVERHEAD)
                for k, size, inline in rows if isinstance(k, str)]

    # -- accounting -----------------------------------------------------------------
    def _cull(self) -> list[str]:
        """Evict until the volume is within the limit, as `plan_cull` says: the least
        frequently asked of the oldest rows go, the most frequently asked of them are
        moved to the head (store time renewed), the rest wait at the tail.

        Ours rather than `Cache.cull()`, which evicts by store time only and does not say
        what it evicted: the memory tier and the eviction counter need the targets."""
        evicted: list[str] = []
        self._commits += 1
        self._entries += 1
        if self._commits % RECOUNT_EVERY == 0:
            self._entries = self.entry_count()
        self.sketch.ensure_capacity(self._entries)
        try:
            volume = self._cache.volume()
            while volume > self._cache.size_limit:
                tail = [Resident(k, n, self.frequency(_target_of(k))) for k, n in self._read_tail()]
                if not tail:
                    break
                plan = plan_cull(tail, volume - self._cache.size_limit)
                deleted = 0
                for key in plan.evict:
                    if not self._cache.delete(key):
                        continue
                    deleted += 1
                    if key.startswith("v" + SEP):
                        self.evictions += 1
                        self._entries -= 1
                        evicted.append(_target_of(key))
                        self._drop_pointer_if_bare(_target_of(key))
                now = time.time()
                for key in plan.reinsert:
                    self._cache._sql(  # noqa: SLF001 - back to the FIFO's head, value untouched
                        "UPDATE Cache SET store_time = ? WHERE key = ? AND raw = 1", (now, key))
                if not deleted:
                    break  # nothing could be deleted: never spin
                volume = self._cache.volume()
        except diskcache.Timeout:
            pass
        finally:
            self._volume = self._cache.volume()
            self._tail = self._read_tail()
            if self.slab is not None and evicted:
                self.slab.forget(evicted)
        return evicted

    def _drop_pointer_if_bare(self, target: str) -> None:
        """An evicted target's pointer goes with its last entry: left behind, it would make
        the next fill a "resident" refresh, stored past admission (`admit(resident=True)`).

        One statement, so the check and the delete see the same rows: checked first and
        deleted after, an entry committed in between (another thread or process storing
        the target again) would lose its pointer and never be served. A pointer row is
        inline (no file), and diskcache's triggers keep its count and size."""
        prefix = f"v{SEP}{target}{SEP}"
        self._cache._sql(  # noqa: SLF001
            "DELETE FROM Cache WHERE key = ? AND raw = 1 AND NOT EXISTS "
            "(SELECT 1 FROM Cache WHERE raw = 1 AND key >= ? AND key < ?)",
            (pointer_key(target), prefix, prefix + "\U0010ffff"),
        )

    def volume(self) -> int:
        return int(self._cache.volume())

    def entry_count(self) -> int:
        """Stored responses (`v` rows), exact, in O(1): SQLite triggers keep the count.

        `COUNT(*)` over the key range took 145 ms at 1M entries (every 5 s for /stats, and
        twice at start); the triggers count every insert and delete of a `v` row by any
        process sharing the directory, in the same transaction."""
        row = self._cache._sql("SELECT n FROM MediaedgeCount WHERE name = 'entries'").fetchone()  # noqa: SLF001
        return int(row[0]) if row else self._count_entries()

    def _count_entries(self) -> int:
        return int(self._cache._sql(  # noqa: SLF001
            "SELECT COUNT(*) FROM Cache WHERE key >= 'v' AND key < 'w'").fetchone()[0])

    def _install_entry_counter(self) -> None:
        """Create the count and its triggers once per cache directory (the first start of
        this version counts the rows once). Our own table: diskcache rewrites its Settings
        rows from what it read at open, which would lose counts made meanwhile."""
        sql = self._cache._sql  # noqa: SLF001
        if sql("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?",
               (ENTRY_TRIGGERS[-1][0],)).fetchone():
            return
        with self._cache.transact():  # BEGIN IMMEDIATE: no row changes between count and triggers
            sql("CREATE TABLE IF NOT EXISTS MediaedgeCount (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            for name, ddl in ENTRY_TRIGGERS:
                sql(f"CREATE TRIGGER IF NOT EXISTS {name} {ddl}")
            sql("INSERT OR REPLACE INTO MediaedgeCount VALUES ('entries', ?)", (self._count_entries(),))

    def clear(self) -> None:
        if self.slab is not None:
            self.slab.wipe()
        self._cache.clear()
        if self.slab is not None:
            self.slab.wipe()

    def close(self) -> None:
        with self._inline_lock:
            for con in self._inline_cons:
                con.close()
            self._inline_cons.clear()
        self._inline_local = threading.local()
        self._cache.close()
        self._state.close()
        if self.slab is not None:
            self.slab.close()
        with self._readahead_lock:
            self._closed = True
            for fd in self._readahead_fds:
                os.close(fd)
            self._readahead_fds.clear()


# A target's pointer row and the entry row of the revision it names, as `_inline_row`
# selects each (the entry's key built by `entry_key_around`; only right for a target
# without Vary, which the caller checks in the pointer). Two lookups of the unique
# (key, raw) index in one statement.
_POINTER_AND_ENTRY = (
    "SELECT p.mode, p.filename, p.value, e.mode, e.filename, e.value FROM Cache AS p "
    "LEFT JOIN Cache AS e ON e.key = (? || json_extract(CAST(p.value AS TEXT), '$.revision') || ?) "
    "AND e.raw = 1 AND (e.expire_time IS NULL OR e.expire_time > ?) "
    "WHERE p.key = ? AND p.raw = 1 AND (p.expire_time IS NULL OR p.expire_time > ?)")


def _inline_row(con: sqlite3.Connection, key: str) -> tuple[int, str | None, bytes] | None:
    """One row as diskcache's `get` selects it; `fetchall` ends the statement (and its read
    snapshot, which would otherwise hold back WAL checkpoints) before returning."""
    rows = con.execute("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1 "
                       "AND (expire_time IS NULL OR expire_time > ?)", (key, time.time())).fetchall()
    return rows[0] if rows else None


def _allocated(path: str) -> int:
    """Bytes a file holds on disk (a sparse file's holes not counted); 0 if there is none."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def _read_data(fd: int, buf: bytearray, stop: Callable[[], bool]) -> None:
    """Read every data extent of `fd` once (holes skipped: SEEK_DATA/SEEK_HOLE), until `stop()`."""
    end = os.fstat(fd).st_size
    at = 0
    while at < end and not stop():
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError:  # ENXIO: no data past `at`
            return
        hole = os.lseek(fd, start, os.SEEK_HOLE)
        os.lseek(fd, start, os.SEEK_SET)
        while start < hole and not stop():
            n = os.readv(fd, [buf])
            if n <= 0:
                return
            start += n
        at = start


def _available_memory() -> int | None:
    """MemAvailable (Linux), in bytes; None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _target_of(key: str) -> str:
    """The target of a pointer (`p`) or entry (`v`) key."""
    parts = key.split(SEP, 2)
    return parts[1] if len(parts) > 1 else key


def _tag_field(tags: tuple[str, ...]) -> str | None:
    return f" {' '.join(tags)} " if tags else None


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def is_disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
