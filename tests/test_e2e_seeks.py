"""Seeks into objects the edge will not store: the Range goes to the origin, never the whole object.

A video player seeking near the end of an object over --max-object-size must cost the
app about the window it asked for (the upstream gets the client's Range), and the
database origin must read just that window.
"""
from __future__ import annotations

import io
import os
import random
import time

import pytest
import requests

from mediaedge.origins.db import DatabaseOrigin
from tests.edge import Edge, Route, Upstream, sha, synthetic_chunk, wait_until

MiB = 1 << 20
SIZE = 48 * MiB  # over --max-object-size below: never stored
PATH = "/media/film.mp4"


def _route(**kw: object) -> Route:
    return Route(size=SIZE, ranges=True, headers={"Content-Type": "video/mp4", "ETag": '"f1"'}, **kw)  # type: ignore[arg-type]


def _sent(upstream: Upstream) -> int:
    return upstream.body_bytes[PATH]


def test_seeks_into_an_object_over_max_size_cost_the_window(tmp_path):
    upstream = Upstream()
    upstream.routes[PATH] = _route()
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--max-object-size", "1MiB"]).start()
    try:
        # The first seek learns the object is not stored from the whole answer's head,
        # drops that answer and asks again with the Range.
        start = SIZE - 100
        r = edge.get(PATH, headers={"Range": f"bytes={start}-"})
        assert r.status_code == 206, r.text[:200]
        assert r.content == synthetic_chunk(start, 100)
        assert r.headers["Content-Range"] == f"bytes {start}-{SIZE - 1}/{SIZE}"
        assert "stored" not in r.headers["Cache-Status"]
        first = _sent(upstream)
        assert first < 24 * MiB, f"the first seek cost {first} bytes of a {SIZE}-byte object"
        assert upstream.range_requests[-1] == (PATH, f"bytes={start}-", 206)

        # Later seeks: the Range goes upstream at once, and the app sends the window only.
        rng = random.Random(7)
        for _ in range(8):
            a = rng.randrange(SIZE - 1000)
            before, asked = _sent(upstream), len(upstream.range_requests)
            r = edge.get(PATH, headers={"Range": f"bytes={a}-{a + 999}"})
            assert r.status_code == 206 and r.content == synthetic_chunk(a, 1000)
            assert r.headers["Content-Range"] == f"bytes {a}-{a + 999}/{SIZE}"
            assert "fwd=bypass; fwd-status=206; detail=upstream" in r.headers["Cache-Status"]
            assert _sent(upstream) - before == 1000
            assert len(upstream.range_requests) == asked + 1

        # The suffix form, If-Range passed on, and an unsatisfiable range answered 416.
        r = edge.get(PATH, headers={"Range": "bytes=-10", "If-Range": '"f1"'})
        assert r.status_code == 206 and r.content == synthetic_chunk(SIZE - 10, 10)
        assert upstream.requests[-1][2].get("if-range") == '"f1"'
        r = edge.get(PATH, headers={"Range": f"bytes={SIZE + 5}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{SIZE}"
        assert upstream.hits[PATH] == len(upstream.range_requests) + 1  # one whole GET, dropped after its head
    finally:
        edge.stop()
        upstream.close()


def test_range_on_storable_objects_still_fills_the_cache(tmp_path):
    """Objects the edge stores keep today's behaviour: one whole fetch, ranges from cache."""
    upstream = Upstream()
    upstream.routes["/media/small.mp4"] = Route(size=300_000, ranges=True, headers={"Content-Type": "video/mp4"})
    edge = Edge(str(tmp_path), upstream=upstream.url).start()
    try:
        r = edge.get("/media/small.mp4", headers={"Range": "bytes=1000-1999"})
        assert r.status_code == 206 and r.content == synthetic_chunk(1000, 1000)
        wait_until(lambda: "hit" in edge.get("/media/small.mp4", headers={"Range": "bytes=5-9"}).headers["Cache-Status"],
                   what="the object stored")
        assert upstream.hits["/media/small.mp4"] == 1 and upstream.range_requests == []
    finally:
        edge.stop()
        upstream.close()


def test_publish_forgets_that_an_object_was_too_big(tmp_path):
    """A purge or publish of the target forgets the note: the next Range miss fetches whole again."""
    upstream = Upstream()
    upstream.routes[PATH] = _route()
    edge = Edge(str(tmp_path), upstream=upstream.url,
                args=["--max-object-size", "1MiB", "--allow-purge-from", "127.0.0.1"]).start()
    try:
        edge.get(PATH, headers={"Range": "bytes=0-9"})
        whole = upstream.hits[PATH]
        assert requests.request("PURGE", edge.url + PATH, timeout=10).status_code == 200
        upstream.routes[PATH] = Route(size=500_000, ranges=True, headers={"Content-Type": "video/mp4"})
        r = edge.get(PATH, headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.content == synthetic_chunk(0, 10)
        assert upstream.hits[PATH] == whole + 1  # fetched whole (and stored), not as a range
        assert upstream.range_requests[-1][1] == "bytes=0-9" and len(upstream.range_requests) == 1
    finally:
        edge.stop()
        upstream.close()


def _io(edge: Edge) -> tuple[int, int]:
    """Bytes the edge process has read and written through system calls (rchar, wchar)."""
    assert edge.proc is not None
    with open(f"/proc/{edge.proc.pid}/io") as f:
        fields = dict(line.split(":") for line in f)
    return int(fields["rchar"]), int(fields["wchar"])


def test_database_origin_reads_just_the_window(tmp_path):
    """A native SQLite row over --max-object-size: a Range request reads the window, not the row
    (measured by the bytes the edge process read and wrote, /proc/PID/io: a whole read
    would read the row and spool it through a temp file)."""
    url = f"sqlite:///{tmp_path}/origin.db"
    size = 32 * MiB
    body = os.urandom(MiB) * 32
    o = DatabaseOrigin(url)
    try:
        o.put("/media/big.mp4", io.BytesIO(body), size=size, sha256=sha(body), revision="b1",
              content_type="video/mp4")
    finally:
        o.close()
    edge = Edge(str(tmp_path), origin_db=url, args=["--max-object-size", "1MiB"]).start()
    try:
        edge.get("/media/none.jpg")  # first lookups, imports
        for a, b in ((size - 100, size - 1), (12_345_678, 12_345_678 + 65_535), (0, 99)):
            before = _io(edge)
            r = edge.get("/media/big.mp4", headers={"Range": f"bytes={a}-{b}"})
            assert r.status_code == 206 and r.content == body[a:b + 1]
            assert r.headers["Content-Range"] == f"bytes {a}-{b}/{size}"
            assert r.headers["ETag"] == '"b1"'
            after = _io(edge)
            read, written = after[0] - before[0], after[1] - before[1]
            assert read < 2 * MiB, f"a {b - a + 1}-byte window read {read} bytes"
            assert written < 2 * MiB, f"a {b - a + 1}-byte window wrote {written} bytes"
        r = edge.get("/media/big.mp4", headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
        # an If-Range naming another revision: the whole object, 200
        r = edge.get("/media/big.mp4", headers={"Range": "bytes=0-9", "If-Range": '"old"'})
        assert r.status_code == 200 and sha(r.content) == sha(body)
    finally:
        edge.stop()


def test_an_unstored_fetch_stops_when_its_client_leaves(tmp_path):
    """A player opens a video the edge will not store with `bytes=0-`, reads 1 MiB and seeks
    away: the fetch from the app stops too, it is not read to the end into a temp file."""
    upstream = Upstream()
    upstream.routes[PATH] = _route()
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--max-object-size", "1MiB"]).start()
    try:
        for fields in ({"Range": "bytes=0-"}, {}):  # the seek that learns, then a plain GET
            before = _sent(upstream)
            with requests.get(edge.url + PATH, headers=fields, stream=True, timeout=30) as r:
                assert r.status_code in (200, 206)
                got = 0
                for chunk in r.iter_content(64 * 1024):
                    got += len(chunk)
                    if got >= MiB:
                        break
            # the upstream stops sending once the edge closed its connection
            wait_until(lambda: _quiet(upstream), timeout=20, what="the upstream to stop sending")
            cost = _sent(upstream) - before
            print(f"{fields or 'whole GET'}: 1 MiB read cost the app {cost} bytes")
            assert cost < 24 * MiB, f"{fields}: reading 1 MiB cost the app {cost} bytes of {SIZE}"
    finally:
        edge.stop()
        upstream.close()


def _quiet(upstream: Upstream) -> bool:
    """True when no body byte went out for 0.3 s (the app's sender has stopped or finished)."""
    n = _sent(upstream)
    time.sleep(0.3)
    return _sent(upstream) == n


def test_bench_seeks_reports_the_window(capsys):
    """`python -m bench.seeks` runs and reports what a seek cost (a small object here)."""
    import json

    from bench import seeks

    seeks.main(["--size", "24MB", "--seeks", "3", "--window", "64KiB", "--max-object-size", "1MiB"])
    report = json.loads(capsys.readouterr().out)
    assert report["later_seeks"]["app_bytes_per_seek_max"] == 64 * 1024
    assert report["first_seek"]["app_bytes"] < 16 * MiB


def test_bench_seeks_reports_the_sliced_case(capsys):
    """Sliced (--slice-size under --max-object-size): a later seek costs at most one slice."""
    import json

    from bench import seeks

    seeks.main(["--size", "24MB", "--seeks", "3", "--window", "64KiB", "--max-object-size", "8MiB",
                "--slice-size", "1MiB"])
    report = json.loads(capsys.readouterr().out)
    assert report["slice_size"] == "1MiB"
    assert report["later_seeks"]["app_bytes_per_seek_max"] <= MiB
    assert report["first_seek"]["app_bytes"] < 16 * MiB


@pytest.mark.full
def test_an_unstored_database_read_stops_when_its_client_leaves(tmp_path):
    """`bytes=0-` on a 256 MiB row over --max-object-size, 1 MiB read, then the client leaves:
    the database read stops too (the edge reads far less than the row)."""
    url = f"sqlite:///{tmp_path}/origin.db"
    size = 256 * MiB
    block = os.urandom(MiB)
    o = DatabaseOrigin(url)
    try:
        o.put("/media/huge.mp4", io.BufferedReader(_Repeat(block, size)), size=size,  # type: ignore[arg-type]
              sha256=_repeat_sha(block, size), revision="h1", content_type="video/mp4")
    finally:
        o.close()
    edge = Edge(str(tmp_path), origin_db=url, args=["--max-object-size", "1MiB"]).start()
    try:
        edge.get("/media/none.jpg")
        before = _io(edge)[0]
        with requests.get(edge.url + "/media/huge.mp4", headers={"Range": "bytes=0-"}, stream=True, timeout=30) as r:
            assert r.status_code == 206
            first = next(r.iter_content(MiB))
            assert first == block[:len(first)]
        last = [-1]

        def settled() -> bool:
            now = _io(edge)[0]
            same, last[0] = now == last[0], now
            return same

        wait_until(settled, timeout=30, interval=0.5, what="the edge to stop reading")
        read = _io(edge)[0] - before
        print(f"\nbytes=0- of a 256 MiB row, 1 MiB taken: the edge read {read} bytes")
        assert read < size // 2, read
    finally:
        edge.stop()


class _Repeat(io.RawIOBase):
    def __init__(self, block: bytes, size: int) -> None:
        self.block, self.left = block, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        n = min(len(b), self.left, len(self.block))
        b[:n] = self.block[:n]
        self.left -= n
        return n


def _repeat_sha(block: bytes, size: int) -> str:
    import hashlib

    h = hashlib.sha256()
    for _ in range(size // len(block)):
        h.update(block)
    return h.hexdigest()


@pytest.mark.parametrize("field, value", [("If-None-Match", '"f1"'),
                                          ("If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT")])
def test_client_conditional_for_an_unstored_object_is_forwarded(tmp_path, field, value):
    """A conditional GET for something the edge will not store goes to the app with its
    validators, and the app's 304 is passed on: no whole-object fetch to answer it."""
    upstream = Upstream()
    upstream.routes[PATH] = Route(size=SIZE, ranges=True, not_modified=True, headers={
        "Content-Type": "video/mp4", "ETag": '"f1"', "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"})
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--max-object-size", "1MiB"]).start()
    try:
        # The first one learns the object is not stored from the whole answer's head,
        # drops that answer and asks again with the client's validators.
        r = edge.get(PATH, headers={field: value})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["ETag"] == '"f1"' and "Content-Length" not in r.headers
        assert "fwd=bypass; fwd-status=304" in r.headers["Cache-Status"]
        first = _sent(upstream)
        assert first < 24 * MiB, f"the first conditional cost {first} bytes of a {SIZE}-byte object"
        assert upstream.not_modified[PATH] == 1
        # Later ones go upstream at once with the validators: no body crosses.
        for n in range(2, 6):
            r = edge.get(PATH, headers={field: value})
            assert r.status_code == 304 and r.content == b""
            assert upstream.requests[-1][2].get(field.lower()) == value
            assert upstream.not_modified[PATH] == n
        assert _sent(upstream) == first and upstream.hits[PATH] == 6
        # A validator that no longer matches: the app's 200 is passed on whole (not stored).
        other = {"If-None-Match": '"old"'} if field == "If-None-Match" else {
            "If-Modified-Since": "Tue, 20 Oct 2015 07:28:00 GMT"}
        r = edge.get(PATH, headers=other)
        assert r.status_code == 200 and len(r.content) == SIZE and "stored" not in r.headers["Cache-Status"]
    finally:
        edge.stop()
        upstream.close()
