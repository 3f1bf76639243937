"""`mediaedge import DIR` (proxy/importer.py): real files into real databases."""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from mediaedge import importer
from mediaedge.origins.db import DatabaseOrigin

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FILES = {
    "a.jpg": b"\xff\xd8jpeg bytes",
    "catalog/product/b.PNG": b"\x89PNG" + bytes(range(256)) * 40,
    "catalog/product/deeper/c.txt": b"plain text\n",
    "ünïcödé/日本語 ファイル.webp": b"RIFF....WEBP",
    "empty.css": b"",
}


def make_tree(root, files=FILES) -> None:
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def run_import(capsys, *argv: str) -> tuple[int, list[str], str]:
    """(exit code, stdout lines, stderr) of `mediaedge import ARGV`."""
    parser = argparse.ArgumentParser()
    importer.add_arguments(parser)
    code = importer.run(parser.parse_args(list(argv)))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.full, pytest.mark.postgres])])
def db(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'origin.db'}"
    return request.getfixturevalue("pg_server").create_database()


def test_import_loads_every_file_then_is_idempotent(tmp_path, db, capsys):
    src = tmp_path / "src"
    make_tree(src)
    total = sum(map(len, FILES.values()))
    code, out, err = run_import(capsys, str(src), "--origin-db", db)
    assert (code, out[-1], err) == (0, f"imported 5, unchanged 0, failed 0 ({total} bytes)", "")

    with DatabaseOrigin(db) as origin:
        before = {}
        for rel, data in FILES.items():
            obj = origin.lookup("/media/" + rel)
            assert b"".join(origin.read(obj)) == data, rel
            digest = hashlib.sha256(data).hexdigest()
            assert (obj.sha256, obj.revision, obj.size, obj.tags) == (digest, digest[:16], len(data), ())
            before[rel] = obj
        assert before["a.jpg"].content_type == "image/jpeg"
        assert before["catalog/product/b.PNG"].content_type == "image/png"
        assert before["a.jpg"].updated_at == pytest.approx(os.stat(src / "a.jpg").st_mtime)

    code, out, _ = run_import(capsys, str(src), "--origin-db", db)
    assert (code, out[-1]) == (0, "imported 0, unchanged 5, failed 0 (0 bytes)")

    (src / "a.jpg").write_bytes(b"changed")
    code, out, _ = run_import(capsys, str(src), "--origin-db", db)
    assert (code, out[-1]) == (0, "imported 1, unchanged 4, failed 0 (7 bytes)")
    with DatabaseOrigin(db) as origin:
        assert origin.lookup("/media/a.jpg").revision == hashlib.sha256(b"changed").hexdigest()[:16]
        for rel in FILES:  # unchanged rows are untouched, down to their timestamps
            if rel != "a.jpg":
                assert origin.lookup("/media/" + rel) == before[rel]


def test_url_prefix(tmp_path, capsys):
    make_tree(tmp_path / "src", {"x/y.gif": b"GIF89a"})
    db = f"sqlite:///{tmp_path / 'o.db'}"
    code, out, _ = run_import(capsys, str(tmp_path / "src"), "--origin-db", db, "--url-prefix", "pub/media")
    assert code == 0
    with DatabaseOrigin(db, media_prefixes=("/pub/media/",)) as origin:
        assert origin.lookup("/pub/media/x/y.gif").size == 6


def test_failing_files_give_exit_1_and_the_rest_is_imported(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    make_tree(src, {"ok.jpg": b"fine", "vanishing.jpg": b"here at scan time"})
    os.symlink("missing-target.jpg", src / "broken.jpg")  # a dangling link inside DIR
    with open(os.path.join(os.fsencode(src), b"bad-\xff-name.jpg"), "wb") as f:  # not UTF-8: no URL for it
        f.write(b"x")

    real_scan = importer.scan

    def scan_then_delete(root, prefix):
        found = real_scan(root, prefix)
        os.unlink(src / "vanishing.jpg")  # gone between the scan and the import (root reads everything)
        return found

    monkeypatch.setattr(importer, "scan", scan_then_delete)
    code, out, err = run_import(capsys, str(src), "--origin-db", f"sqlite:///{tmp_path / 'o.db'}")
    assert code == 1
    assert out[-1] == "imported 1, unchanged 0, failed 3 (4 bytes)"
    assert "failed: /media/vanishing.jpg: No such file or directory" in err
    assert "failed: /media/broken.jpg: broken symlink" in err
    assert "failed: /media/bad-\ufffd-name.jpg: file name is not valid UTF-8" in err


def test_file_changing_between_hash_and_insert_fails(tmp_path, capsys, monkeypatch):
    make_tree(tmp_path / "src", {"grow.bin": b"0123456789"})
    real_sha = importer.sha256_of

    def sha_then_append(f):
        result = real_sha(f)
        with open(tmp_path / "src" / "grow.bin", "ab") as g:
            g.write(b"appended while importing")
        return result

    monkeypatch.setattr(importer, "sha256_of", sha_then_append)
    db = f"sqlite:///{tmp_path / 'o.db'}"
    code, out, err = run_import(capsys, str(tmp_path / "src"), "--origin-db", db)
    assert (code, out[-1]) == (1, "imported 0, unchanged 0, failed 1 (0 bytes)")
    assert "failed: /media/grow.bin: file is longer than its size 10" in err
    with DatabaseOrigin(db) as origin:
        assert origin.lookup("/media/grow.bin") is None  # nothing half-written


def test_case_collisions_are_warned_per_pair(tmp_path, capsys):
    make_tree(tmp_path / "src", {"img/Foo.jpg": b"1", "img/foo.jpg": b"2", "img/FOO.jpg": b"3", "Straße.png": b"4",
                                 "STRASSE.png": b"5", "other.jpg": b"6"})
    db = f"sqlite:///{tmp_path / 'o.db'}"
    code, out, err = run_import(capsys, str(tmp_path / "src"), "--origin-db", db)
    assert (code, out[-1]) == (0, "imported 6, unchanged 0, failed 0 (6 bytes)")
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4  # three pairs among Foo/foo/FOO, one for Straße/STRASSE
    assert "warning: /media/img/FOO.jpg and /media/img/Foo.jpg differ only in case" in err
    assert any("/media/STRASSE.png and /media/Straße.png" in w for w in warnings)
    with DatabaseOrigin(db) as origin:  # all stored, distinct, on a case-sensitive target
        assert b"".join(origin.read(origin.lookup("/media/img/foo.jpg"))) == b"2"


def test_case_collisions_pure():
    assert importer.case_collisions(["/a/B", "/a/b", "/a/c", "/A/b"]) == [
        ("/A/b", "/a/B"), ("/A/b", "/a/b"), ("/a/B", "/a/b")]
    assert importer.case_collisions(["/x", "/y"]) == []


def test_symlinks_inside_are_followed_outside_are_not(tmp_path, capsys):
    outside = tmp_path / "outside"
    make_tree(outside, {"secret.txt": b"do not import", "dir/also.txt": b"nor this"})
    src = tmp_path / "src"
    make_tree(src, {"real/one.jpg": b"one"})
    os.symlink(outside / "secret.txt", src / "leak.txt")
    os.symlink(outside / "dir", src / "leakdir")
    os.symlink("one.jpg", src / "real" / "alias.jpg")  # stays inside: served under both names
    os.symlink(src, src / "real" / "loop")  # a loop back to the root: entered once only
    os.mkfifo(src / "pipe.jpg")  # not a regular file: skipped, and never opened (it would block)
    db = f"sqlite:///{tmp_path / 'o.db'}"
    code, out, err = run_import(capsys, str(src), "--origin-db", db)
    assert (code, out[-1]) == (0, "imported 2, unchanged 0, failed 0 (6 bytes)")
    assert "skipped: /media/leak.txt: symlink leads outside the directory" in err
    assert "skipped: /media/leakdir: symlink leads outside the directory" in err
    assert "skipped: /media/pipe.jpg: not a regular file" in err
    with DatabaseOrigin(db) as origin:
        assert origin.lookup("/media/real/alias.jpg").size == 3
        assert origin.lookup("/media/leak.txt") is None


def test_bad_directory_and_unreachable_database_exit_2(tmp_path, capsys):
    code, out, err = run_import(capsys, str(tmp_path / "nope"), "--origin-db", f"sqlite:///{tmp_path / 'o.db'}")
    assert code == 2 and out == [] and err.count("\n") == 1
    (tmp_path / "src").mkdir()
    (tmp_path / "file").write_text("x")
    code, out, err = run_import(capsys, str(tmp_path / "src"), "--origin-db", f"sqlite:///{tmp_path}/file/o.db")
    assert code == 2 and err.startswith("mediaedge import: --origin-db:") and err.count("\n") == 1


def test_progress_line_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    p = importer.Progress(tty, 2, 3 << 20)
    p.advance(1 << 20)
    p.advance(2 << 20)
    p.done()
    assert "\r2/2 files  3.0 MiB/3.0 MiB  100.0%" in tty.getvalue()
    assert tty.getvalue().endswith("\r\033[K")  # the bar is erased before the summary
    plain = io.StringIO()
    q = importer.Progress(plain, 1, 1)
    q.advance(1)
    q.done()
    assert plain.getvalue() == ""


def test_prefix_normalization():
    assert [importer.normalize_prefix(p) for p in ["/media/", "/media", "media", "/pub/media//", "/"]] == [
        "/media/", "/media/", "/media/", "/pub/media/", "/"]


# A file far larger than the memory bound, imported in a fresh interpreter.
IMPORTER = textwrap.dedent("""
    import argparse, json, sys
    sys.path.insert(0, sys.argv[1])
    from mediaedge import importer
    parser = argparse.ArgumentParser()
    importer.add_arguments(parser)
    args = parser.parse_args(sys.argv[2:])
    code = importer.run(args)
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({"code": code, "peak_kib": peak}))
""")


@pytest.mark.full
def test_large_file_is_streamed_in(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    size = 300 * 1000 * 1000
    with open(src / "video.mp4", "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size // len(block)):
            f.write(block)
        f.write(block[: size % len(block)])
    db = f"sqlite:///{tmp_path / 'o.db'}"
    out = subprocess.run([sys.executable, "-c", IMPORTER, REPO, str(src), "--origin-db", db],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-2] == f"imported 1, unchanged 0, failed 0 ({size} bytes)"
    assert json.loads(lines[-1])["peak_kib"] < 100 * 1024  # a whole-file read would be 300 MB


# --- publish events for running nodes ----------------------------------------------------------

def test_imported_and_changed_paths_are_published(tmp_path, db, capsys):
    from mediaedge.invalidation_log import InvalidationLog

    src = tmp_path / "src"
    make_tree(src)
    assert run_import(capsys, str(src), "--origin-db", db)[0] == 0
    (src / "a.jpg").write_bytes(b"changed")
    assert run_import(capsys, str(src), "--origin-db", db)[0] == 0
    log = InvalidationLog(db)
    try:
        events = [entry.event for entry in log.since(0)]
    finally:
        log.close()
    rev = lambda data: hashlib.sha256(data).hexdigest()[:16]  # noqa: E731
    assert len(events) == 6  # five new files, then the one that changed; unchanged ones are not published
    assert events[-1] == {"type": "publish", "path": "/media/a.jpg", "revision": rev(b"changed"), "prewarm": False}
    paths = {e["path"] for e in events}
    # keyed as requests are: percent-encoded, canonical
    assert "/media/%C3%BCn%C3%AFc%C3%B6d%C3%A9/%E6%97%A5%E6%9C%AC%E8%AA%9E%20%E3%83%95%E3%82%A1%E3%82%A4%E3%83%AB.webp" in paths


def test_events_are_appended_in_batches_of_at_most_1000():
    class Log:
        def __init__(self) -> None:
            self.batches: list[int] = []

        def append(self, events, *, node, at):
            self.batches.append(len(events))
            return list(range(len(events)))

    log = Log()
    progress = importer.Progress(io.StringIO(), 0, 0)
    publisher = importer.Publisher(log, node="import@test")  # type: ignore[arg-type]
    for i in range(2500):
        publisher.add(f"/media/{i}.jpg", "r", progress)
    assert publisher.flush(progress) is True
    assert log.batches == [1000, 1000, 500]


def test_a_running_edge_stops_serving_the_old_bytes_within_a_second(tmp_path, capsys):
    import time

    import requests

    from tests.edge import Edge, wait_until

    db = f"sqlite:///{tmp_path / 'origin.db'}"
    src = tmp_path / "src"
    make_tree(src, {"a.jpg": b"old bytes"})
    assert run_import(capsys, str(src), "--origin-db", db)[0] == 0
    edge = Edge(str(tmp_path), origin_db=db).start()
    try:
        assert edge.get("/media/a.jpg").content == b"old bytes"
        r = edge.get("/media/a.jpg")
        assert r.content == b"old bytes" and "hit" in r.headers["Cache-Status"]
        (src / "a.jpg").write_bytes(b"new bytes!")
        assert run_import(capsys, str(src), "--origin-db", db)[0] == 0
        t0 = time.monotonic()
        wait_until(lambda: requests.get(f"{edge.url}/media/a.jpg", timeout=5).content == b"new bytes!", 5, 0.02,
                   "the new bytes")
        assert time.monotonic() - t0 < 1.0
    finally:
        edge.stop()


def test_a_404_remembered_before_an_import_is_dropped_by_it(tmp_path, capsys):
    """The edge remembers a 404 for --negative-ttl; importing the file publishes its path,
    and the running node drops the remembered 404 within a second (not after the TTL)."""
    import time

    import requests

    from tests.edge import Edge, wait_until

    db = f"sqlite:///{tmp_path / 'origin.db'}"
    src = tmp_path / "src"
    make_tree(src, {"a.jpg": b"first"})
    assert run_import(capsys, str(src), "--origin-db", db)[0] == 0
    edge = Edge(str(tmp_path), origin_db=db, args=["--negative-ttl", "1h"]).start()
    try:
        for _ in range(2):
            r = edge.get("/media/late.jpg")
            assert r.status_code == 404
        assert r.headers["Cache-Status"].startswith("mediaedge; hit")  # remembered
        (src / "late.jpg").write_bytes(b"late bytes")
        code, out, _ = run_import(capsys, str(src), "--origin-db", db)
        assert code == 0 and out[-1].startswith("imported 1, unchanged 1, failed 0")
        t0 = time.monotonic()
        wait_until(lambda: requests.get(f"{edge.url}/media/late.jpg", timeout=5).status_code == 200, 5, 0.02,
                   "the imported file")
        assert time.monotonic() - t0 < 1.0
        assert edge.get("/media/late.jpg").content == b"late bytes"
    finally:
        edge.stop()
