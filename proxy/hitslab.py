"""The hit slab: small entries' stored values kept beside SQLite, read with two `pread`s.

Why: a plain hit on a small entry that the memory tier does not hold (random keys over a
cache far larger than memory) used to cost one SQL statement. On the request path that
statement runs with CPU caches full of mitmproxy's own work, and it cost about 50 µs and
made the rest of the request slower too: measured end to end at 1M entries, 0.51 ms per
hit through SQLite against 0.45 ms with the same values read from a flat file (the memory
tier's hit: 0.40 ms). So the value a plain hit needs (body, metadata, hit record: exactly
the bytes SQLite holds, `storage.split_inline_raw`) is also written here.

One file per cache directory, shared by every process using it, kept across restarts:

    header (4 KiB) | buckets (64 B each) | ring of records

- A *record* is one target's value, appended at the ring's head: `RECORD` (its own
  logical offset, the wipe epoch, lengths), the target, the value. The ring overwrites
  its oldest records; its size bounds the file.
- A *bucket* is where a target's slots live (a stable hash picks it): a sequence number
  and `WAYS` slots of (fingerprint, length, logical offset).

Reads take no lock and trust nothing: the record must name its own offset, the current
epoch and the target asked for, and the caller checks the body against the hit record's
SHA-256 prefix. A record overwritten by the ring, a slot torn by a concurrent write, or a
file damaged on disk is a slab miss, never wrong bytes.

What keeps the slab from serving what SQLite no longer holds is the writers' discipline
(proxy/storage.py calls these at every change of a target's entry, in whichever process
makes it): `forget` a target *before* its rows change and again after, `wipe` on a clear,
and `put` only with the bucket's sequence number read before the SQLite read or write
the value came from (`put` refuses if anything touched the bucket since). Writers hold an
exclusive `flock` on the file and a thread lock (a flock does not exclude threads sharing
the descriptor).

Every process on one cache directory must run a version that knows the slab: an older one
would purge rows without forgetting their slots.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

log = logging.getLogger("mediaedge.hitslab")

MAGIC = b"MEHS"
VERSION = 1
FILENAME = "hits.slab"
HEADER_SIZE = 4096
HEADER = struct.Struct("<4sIQQQQ")  # magic, version, buckets, ring size, head (logical), epoch
HEAD_AT, EPOCH_AT = 24, 32  # where HEADER keeps the two fields writers change
U64 = struct.Struct("<Q")
WAYS = 3
SLOT = struct.Struct("<IIQ")  # fingerprint (0: empty), value length, logical offset of the record
BUCKET = struct.Struct("<Q" + "IIQ" * WAYS + "8x")  # sequence number, WAYS slots
RECORD = struct.Struct("<QQIH")  # logical offset, epoch, value length, target length
BYTES_PER_BUCKET = 1024  # ring bytes per bucket: 3 slots per KiB of ring, room for records down to ~340 B
MIN_RING = 1 << 20


class Geometry(NamedTuple):
    buckets: int
    ring: int

    @property
    def ring_start(self) -> int:
        return HEADER_SIZE + self.buckets * BUCKET.size

    @property
    def file_size(self) -> int:
        return self.ring_start + self.ring


def geometry(size: int) -> Geometry:
    """The layout a slab of `size` bytes gets: most of it ring, the rest buckets."""
    ring = max(MIN_RING, size * BYTES_PER_BUCKET // (BYTES_PER_BUCKET + BUCKET.size))
    return Geometry(max(1, ring // BYTES_PER_BUCKET), ring)


def place(target: str, buckets: int) -> tuple[int, int]:
    """A target's bucket and fingerprint (never 0: 0 marks an empty slot). Stable across
    processes and runs (Python's own `hash` of a str is not)."""
    h = int.from_bytes(hashlib.blake2b(target.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return h % buckets, (h >> 32) | 1


def choose_way(slots: list[tuple[int, int, int]], fp: int) -> int:
    """Which of a bucket's slots a new record of fingerprint `fp` takes: its own, else an
    empty one, else the one whose record is oldest (the ring overwrites it first)."""
    for i, (f, _, _) in enumerate(slots):
        if f == fp:
            return i
    for i, (f, _, _) in enumerate(slots):
        if f == 0:
            return i
    return min(range(len(slots)), key=lambda i: slots[i][2])


def parse_bucket(raw: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    fields = BUCKET.unpack(raw)
    return fields[0], [(fields[1 + 3 * i], fields[2 + 3 * i], fields[3 + 3 * i]) for i in range(WAYS)]


def remove(directory: str) -> None:
    """No slab for this directory (--hit-slab-size off): an old one's records would go
    stale while nothing keeps them, and be served when it is turned on again."""
    try:
        os.unlink(os.path.join(directory, FILENAME))
    except FileNotFoundError:
        pass


def existing(directory: str) -> HitSlab | None:
    """The directory's slab if it has one (a tool opening the cache keeps it in step)."""
    return HitSlab(directory, None) if os.path.exists(os.path.join(directory, FILENAME)) else None


def default_size(cache_size: int) -> int:
    """--hit-slab-size's default: a sixteenth of --cache-size, at most 4 GiB."""
    return min(cache_size // 16, 4 << 30)


class HitSlab:
    """The slab file of one cache directory (see the module docstring)."""

    def __init__(self, directory: str, size: int | None) -> None:
        """Open the directory's slab, laid out for `size` bytes (afresh when its file was
        laid out for another size, or is not a slab); `size` None: as its file is."""
        self.path = os.path.join(directory, FILENAME)
        self.geometry = geometry(size or MIN_RING)
        self._adopt = size is None
        self._lock = threading.Lock()
        self._fd = -1
        self._pid = -1
        self.failed = False  # a write failed (a full disk): writes stop, reads go on
        self._open()

    # ------------------------------------------------------------------ file
    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, HEADER.size, 0)
                if len(raw) == HEADER.size:
                    magic, version, buckets, ring, _, _ = HEADER.unpack(raw)
                    found = Geometry(buckets, ring)
                    if magic == MAGIC and version == VERSION and buckets and ring >= MIN_RING and (
                            self._adopt or found == self.geometry):
                        self.geometry = found
                        return self._opened(fd)
                # New, or not one we can read: lay it out afresh. Other processes of this
                # directory wait on the lock above and then read the new header.
                os.ftruncate(fd, 0)
                os.ftruncate(fd, self.geometry.file_size)  # sparse: disk is used as records are written
                os.pwrite(fd, HEADER.pack(MAGIC, VERSION, self.geometry.buckets, self.geometry.ring, 0, 1), 0)
                return self._opened(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise

    def _opened(self, fd: int) -> None:
        self._fd, self._pid = fd, os.getpid()

    def _descriptor(self) -> int:
        """This process's descriptor (a forked child opens its own: a flock is shared by
        every process holding the same open file)."""
        if self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1

    def _header(self, fd: int) -> tuple[int, int]:
        _, _, _, _, head, epoch = HEADER.unpack(os.pread(fd, HEADER.size, 0))
        return head, epoch

    def _bucket_at(self, index: int) -> int:
        return HEADER_SIZE + index * BUCKET.size

    # ------------------------------------------------------------------ reads
    def get(self, target: str) -> bytes | None:
        """The value last put for `target`, or None. Not checked against its hit record:
        the caller does that (`hitrecord.body_matches`) before serving it."""
        if self.failed:
            return None
        fd = self._descriptor()
        g = self.geometry
        index, fp = place(target, g.buckets)
        _, slots = parse_bucket(os.pread(fd, BUCKET.size, self._bucket_at(index)))
        found = next(((n, o) for f, n, o in slots if f == fp), None)
        if found is None:
            return None
        length, offset = found
        name = target.encode("utf-8", "surrogatepass")
        total = RECORD.size + len(name) + length
        if total > g.ring:
            return None
        raw = os.pread(fd, total, g.ring_start + offset % g.ring)
        if len(raw) != total:
            return None
        at, epoch, vlen, tlen = RECORD.unpack_from(raw)
        if at != offset or vlen != length or tlen != len(name) or raw[RECORD.size:RECORD.size + tlen] != name:
            return None  # overwritten by the ring, or the slot was torn mid-write
        if epoch != self._header(fd)[1]:
            return None  # written before a wipe
        return raw[RECORD.size + tlen:]

    def stamp(self, target: str) -> tuple[int, int]:
        """What `put` must still find to write a value read or written now: the target's
        bucket sequence number and the wipe epoch."""
        fd = self._descriptor()
        index, _ = place(target, self.geometry.buckets)
        seq, _ = parse_bucket(os.pread(fd, BUCKET.size, self._bucket_at(index)))
        return seq, self._header(fd)[1]

    # ------------------------------------------------------------------ writes
    def put(self, target: str, value: bytes, stamp: tuple[int, int], *, wait: bool = True) -> bool:
        """Append `value` as `target`'s and point its slot at it, unless the target's bucket
        or the epoch changed since `stamp` was taken (something was forgotten or wiped
        meanwhile: the value may be what it forgot). False: not written. `wait=False`
        (the event loop): not written either when another writer holds the lock, such as
        a purge forgetting a whole prefix."""
        name = target.encode("utf-8", "surrogatepass")
        total = RECORD.size + len(name) + len(value)
        g = self.geometry
        if self.failed or total > g.ring // 4:
            return False
        index, fp = place(target, g.buckets)
        with self._locked(wait=wait) as fd:
            if fd < 0:
                return False
            head, epoch = self._header(fd)
            seq, slots = parse_bucket(os.pread(fd, BUCKET.size, self._bucket_at(index)))
            if (seq, epoch) != stamp:
                return False
            if head % g.ring + total > g.ring:
                head += g.ring - head % g.ring  # a record never wraps: start the next lap
            try:
                os.pwrite(fd, RECORD.pack(head, epoch, len(value), len(name)) + name + value,
                          g.ring_start + head % g.ring)
                slots[choose_way(slots, fp)] = (fp, len(value), head)
                os.pwrite(fd, BUCKET.pack(seq + 1, *[x for s in slots for x in s]), self._bucket_at(index))
                os.pwrite(fd, U64.pack(head + total), HEAD_AT)
            except OSError as e:
                self._fail(e)
                return False
        return True

    def forget(self, targets: list[str]) -> None:
        """These targets' slots are emptied and their buckets' sequence numbers moved on (a
        `put` stamped before this refuses). Called before a target's rows change and again
        after, so a value read from SQLite in between is never put back."""
        if not targets:
            return
        g = self.geometry
        with self._locked() as fd:
            if fd < 0:
                self._fail(OSError("the slab could not be locked to forget"))
                return
            try:
                for target in targets:
                    index, fp = place(target, g.buckets)
                    at = self._bucket_at(index)
                    seq, slots = parse_bucket(os.pread(fd, BUCKET.size, at))
                    slots = [(0, 0, 0) if f == fp else (f, n, o) for f, n, o in slots]
                    os.pwrite(fd, BUCKET.pack(seq + 1, *[x for s in slots for x in s]), at)
            except OSError as e:
                self._fail(e)

    def wipe(self) -> None:
        """Nothing written so far is served again (the cache was cleared): the epoch moves on."""
        with self._locked() as fd:
            if fd < 0:
                self._fail(OSError("the slab could not be locked to wipe"))
                return
            _, epoch = self._header(fd)
            try:
                os.pwrite(fd, U64.pack(epoch + 1), EPOCH_AT)
            except OSError as e:
                self._fail(e)

    def _fail(self, e: OSError) -> None:
        """A write failed (a full disk, an I/O error): this process stops using the slab.
        A slot left unforgotten could serve a purged entry to the other processes, so
        every record is dropped by truncating the ring away (needs no new disk space,
        and a truncated ring reads as zeros, which no record check accepts). Truncating
        is safe with or without the writers' lock: it only takes records away. The
        epoch then moves on (a rewrite of the header's first block, already on disk), so
        a put another process stamped before the failed forget is refused too: it may
        carry the value that forget was for."""
        log.warning("hit slab %s: write failed (%s); small entries are read from the cache database from now on",
                    self.path, e)
        self.failed = True
        try:
            fd = self._descriptor()
            os.ftruncate(fd, self.geometry.ring_start)
            os.ftruncate(fd, self.geometry.file_size)
            _, epoch = self._header(fd)
            os.pwrite(fd, U64.pack(epoch + 1), EPOCH_AT)
        except OSError as again:
            log.error("hit slab %s: could not drop its records either (%s)", self.path, again)

    @contextmanager
    def _locked(self, *, wait: bool = True) -> Iterator[int]:
        """The writers' lock: this process's threads, then every process (flock). Yields
        the descriptor, or -1 when the lock was not taken (nothing is written): busy and
        not `wait`, or failing."""
        if not self._lock.acquire(blocking=wait):
            yield -1
            return
        try:
            try:
                fd = self._descriptor()
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield -1
                return
            except OSError as e:
                log.warning("hit slab %s: cannot lock (%s)", self.path, e)
                yield -1
                return
            try:
                yield fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()
