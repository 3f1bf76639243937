"""`mediaedge import DIR`: load a directory of media files into the native table.

The migration path from files to the database (contract section 6). Every
regular file under DIR becomes the row '<url-prefix><relative path>', with
revision = the first 16 hex digits of its SHA-256. Files whose row already has
that SHA-256 are left untouched, so a second run is cheap and changes nothing.

Files are streamed twice (hash, then insert) and never held in memory; the
insert re-checks the hash, so a file that changes in between fails instead of
being stored under the wrong revision. Symlinks are followed only when they
stay inside DIR. Non-regular files (FIFOs, sockets, devices) are skipped with a
warning; entries that cannot be read, or whose names are not UTF-8, fail.

Output: warnings and failures on stderr; a progress line on a terminal; last
line on stdout `imported N, unchanged M, failed K (B bytes)`, B being the bytes
imported. Exit 0, 1 when K > 0, 2 when DIR or the database cannot be used.

Running nodes learn of every imported or changed path through the invalidation
log (`--state-db`, by default the origin database): a `publish` event naming
its new revision, appended in batches of at most 1000 (one transaction each) as
the import goes, so a node that held the old bytes stops serving them within a
second, as after a webhook. A log that cannot be written fails the run (exit 1):
the rows are in, but nodes may keep the old bytes until they expire.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import socket
import stat
import sys
import time
from urllib.parse import quote
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO
from collections.abc import Iterable

from mediaedge.errors import DatabaseError, OriginError
from mediaedge.origins.contenttype import guess_content_type
from mediaedge.invalidation_log import InvalidationLog
from mediaedge.origins.db import MAX_PATH_BYTES, DatabaseOrigin
from mediaedge.policy.target import normalize_target
from mediaedge.webhook import PublishEvent, event_to_json

HASH_CHUNK = 1 << 20
PUBLISH_BATCH = 1000  # events per append: the webhook's own limit per request


@dataclass(frozen=True)
class Candidate:
    url_path: str  # '/media/a/b.jpg'
    fs_path: str
    size: int  # at scan time, for the progress line


@dataclass
class Scan:
    candidates: list[Candidate] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (url path or name, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Tally:
    imported: int = 0
    unchanged: int = 0
    failed: int = 0
    bytes: int = 0

    def summary(self) -> str:
        return f"imported {self.imported}, unchanged {self.unchanged}, failed {self.failed} ({self.bytes} bytes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="directory whose files are loaded (recursively)")
    parser.add_argument("--origin-db", default="sqlite:///var/origin.db",
                        help="database to load into: sqlite:///PATH, postgresql://… or mysql://… "
                             "(the native table media_files is created when missing)")
    parser.add_argument("--url-prefix", default="/media/",
                        help="URL path the files are served under: DIR/a/b.jpg becomes <prefix>a/b.jpg")
    parser.add_argument("--state-db", default=None,
                        help="database of the invalidation log the running nodes follow (default: --origin-db)")


def run(args: argparse.Namespace) -> int:
    prefix = normalize_prefix(args.url_prefix)
    if not os.path.isdir(args.dir):
        print(f"mediaedge import: {args.dir}: not a directory", file=sys.stderr)
        return 2
    found = scan(args.dir, prefix)
    progress = Progress(sys.stdout, len(found.candidates), sum(c.size for c in found.candidates))
    for a, b in case_collisions(c.url_path for c in found.candidates):
        progress.note(f"warning: {a} and {b} differ only in case; a case-insensitive target would merge them")
    for name, reason in found.skipped:
        progress.note(f"skipped: {name}: {reason}")
    try:
        origin = DatabaseOrigin(args.origin_db, "native", media_prefixes=(prefix,))
    except OriginError as e:
        print(f"mediaedge import: --origin-db: {e}", file=sys.stderr)
        return 2
    state_db = getattr(args, "state_db", None) or args.origin_db
    try:
        publisher = Publisher(InvalidationLog(state_db), node=f"import@{socket.gethostname()}")
    except DatabaseError as e:
        origin.close()
        print(f"mediaedge import: --state-db: invalidation log: {e}", file=sys.stderr)
        return 2
    tally = Tally(failed=len(found.failures))
    for name, reason in found.failures:
        progress.note(f"failed: {name}: {reason}")
    published = False
    try:
        import_all(origin, found.candidates, tally, progress, publisher)
        published = publisher.flush(progress)
    finally:
        origin.close()
        publisher.close()
        progress.done()
    print(tally.summary(), flush=True)
    return 1 if tally.failed or not published else 0


def publish_event(url_path: str, revision: str) -> dict[str, object]:
    """The log's JSON for "`url_path` (a decoded path) is now at `revision`", keyed as
    requests are: the path percent-encoded and normalised like a request target."""
    target = normalize_target(quote(url_path, safe="/!$&'()*+,;=:@~"))
    return event_to_json(PublishEvent(path=target, revision=revision))


class Publisher:
    """Publish events for imported paths, appended to the log in batches as they fill."""

    def __init__(self, log: InvalidationLog, *, node: str) -> None:
        self.log = log
        self.node = node
        self.pending: list[dict[str, object]] = []
        self.failed = False

    def add(self, url_path: str, revision: str, progress: Progress) -> None:
        self.pending.append(publish_event(url_path, revision))
        if len(self.pending) >= PUBLISH_BATCH:
            self.flush(progress)

    def flush(self, progress: Progress) -> bool:
        """Append what is pending; False once any append has failed."""
        if self.pending and not self.failed:
            try:
                self.log.append(self.pending, node=self.node, at=time.time())
            except DatabaseError as e:
                self.failed = True
                progress.note(f"failed: invalidation log: {e}; running nodes may serve old bytes until they expire")
            self.pending = []
        return not self.failed

    def close(self) -> None:
        self.log.close()


def import_all(origin: DatabaseOrigin, candidates: list[Candidate], tally: Tally, progress: Progress,
               publisher: Publisher | None = None) -> None:
    for i, c in enumerate(candidates):
        try:
            imported, size = import_one(origin, c, publisher, progress)
        except OriginError as e:
            tally.failed += 1
            progress.note(f"failed: {c.url_path}: {e}")
            if e.status_hint == 503:  # the database itself failed: the rest would fail the same way
                rest = len(candidates) - i - 1
                tally.failed += rest
                progress.note(f"stopping: database unavailable, {rest} files not attempted")
                return
        except OSError as e:
            tally.failed += 1
            progress.note(f"failed: {c.url_path}: {e.strerror or e}")
        else:
            if imported:
                tally.imported += 1
                tally.bytes += size
            else:
                tally.unchanged += 1
        progress.advance(c.size)


def import_one(origin: DatabaseOrigin, c: Candidate, publisher: Publisher | None = None,
               progress: Progress | None = None) -> tuple[bool, int]:
    """(True, bytes) when the row was written, (False, 0) when it already held this content."""
    # O_NONBLOCK: if the entry was swapped for a FIFO since the scan, open() must not hang.
    fd = os.open(c.fs_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "no longer a regular file")
        digest, size = sha256_of(f)
        existing = origin.lookup(c.url_path)
        if existing is not None and existing.sha256 == digest and existing.size == size:
            return False, 0
        f.seek(0)
        origin.put(c.url_path, f, size=size, sha256=digest, revision=digest[:16],
                   content_type=guess_content_type(c.url_path), tags=None, updated_at=st.st_mtime)
        if publisher is not None and progress is not None:
            publisher.add(c.url_path, digest[:16], progress)
        return True, size


def sha256_of(f: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while data := f.read(HASH_CHUNK):
        digest.update(data)
        size += len(data)
    return digest.hexdigest(), size


# --- pure-ish helpers ----------------------------------------------------------------


def normalize_prefix(prefix: str) -> str:
    """'/media' and 'media/' both mean '/media/'."""
    return "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"


def case_collisions(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of paths equal under Unicode case folding, each pair sorted, in path order."""
    groups: dict[str, list[str]] = {}
    for p in sorted(paths):
        groups.setdefault(p.casefold(), []).append(p)
    return [pair for group in groups.values() if len(group) > 1 for pair in itertools.combinations(group, 2)]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def scan(root: str, prefix: str) -> Scan:
    """Every regular file under `root` as a Candidate, plus what was skipped or failed.

    Symlinks (to files or directories) are followed when their target is inside
    `root`; each real directory is entered once, which also breaks loops.
    """
    out = Scan()
    real_root = os.path.realpath(root)
    seen = {real_root}
    stack = [(root, "")]
    while stack:
        directory, rel = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as e:
            out.failures.append((prefix + rel or ".", e.strerror or str(e)))
            continue
        for entry in entries:
            url_path = prefix + rel + entry.name
            name = url_path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            try:
                url_path.encode("utf-8")
            except UnicodeEncodeError:
                out.failures.append((name, "file name is not valid UTF-8"))
                continue
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not _inside(target, real_root):
                    out.skipped.append((url_path, "symlink leads outside the directory"))
                    continue
                if not os.path.exists(target):
                    out.failures.append((url_path, "broken symlink"))
                    continue
            try:
                if entry.is_dir():
                    real = os.path.realpath(entry.path)
                    if real not in seen:
                        seen.add(real)
                        stack.append((entry.path, rel + entry.name + "/"))
                    continue
                st = entry.stat()
            except OSError as e:
                out.failures.append((url_path, e.strerror or str(e)))
                continue
            if not stat.S_ISREG(st.st_mode):
                out.skipped.append((url_path, "not a regular file"))
            elif len(url_path.encode("utf-8")) > MAX_PATH_BYTES:
                out.failures.append((url_path, f"path longer than {MAX_PATH_BYTES} bytes"))
            else:
                out.candidates.append(Candidate(url_path, entry.path, st.st_size))
    out.candidates.sort(key=lambda c: c.url_path)
    return out


class Progress:
    """A one-line progress display on a terminal; silent otherwise. Notes go to stderr."""

    def __init__(self, out: TextIO, total_files: int, total_bytes: int) -> None:
        self.out = out
        self.live = out.isatty()
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.bytes = 0
        self.last = 0.0

    def advance(self, size: int) -> None:
        self.files += 1
        self.bytes += size
        now = time.monotonic()
        if self.live and (now - self.last >= 0.1 or self.files == self.total_files):
            self.last = now
            pct = 100 * self.bytes / self.total_bytes if self.total_bytes else 100.0
            self.out.write(f"\r{self.files}/{self.total_files} files  {_mib(self.bytes)}/{_mib(self.total_bytes)}  {pct:5.1f}%")
            self.out.flush()

    def note(self, line: str) -> None:
        self._clear()
        print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self.live:
            self.out.write("\r\033[K")
            self.out.flush()
            self.last = 0.0


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
