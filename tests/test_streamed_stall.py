"""A client that stops reading a *streamed* body (not the sendfile path: a large hit with
`--sendfile-min-size off`, or a miss tailing its fill) is dropped after `--idle-timeout`
without its acknowledged bytes moving, and releases its socket and cache file; a
coalesced fill it shared goes on for the others, and a slow reader is never cut."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

from tests.edge import Edge, Route, Upstream, status_of, synthetic_sha, wait_until

SIZE = 48 * 1024 * 1024  # far more than the socket buffers and mitmproxy's write buffer hold
STALL = 2


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def _held(edge: Edge) -> tuple[int, int]:
    """The edge's open sockets and cache files (entries `*.val` and fills' temp files; not
    the databases or the hit slab, open for the edge's life)."""
    targets = edge.open_files()
    files = sum(t.startswith(edge.cache_dir)
                and not t.endswith(("-wal", "-shm", "-journal", ".db", ".sqlite", "hits.slab"))
                for t in targets)
    return sum(t.startswith("socket:") for t in targets), files


def _holds_connection(edge: Edge, client_port: int) -> bool:
    """Whether the edge still has a descriptor for its end of this client's connection
    (/proc/PID/net/tcp gives the connection's socket inode; a connection it closed has
    none, or is gone)."""
    assert edge.proc is not None
    inodes = set()
    with open(f"/proc/{edge.proc.pid}/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == edge.port and int(remote.split(":")[1], 16) == client_port:
                inodes.add(inode)
    inodes.discard("0")
    fd_dir = f"/proc/{edge.proc.pid}/fd"
    held = set()
    for fd in os.listdir(fd_dir):
        try:
            held.add(os.readlink(os.path.join(fd_dir, fd)))
        except FileNotFoundError:
            continue
    return any(f"socket:[{inode}]" in held for inode in inodes)


def _stalled_client(edge: Edge, path: str) -> tuple[socket.socket, int]:
    """A GET whose client reads a little, then stops reading (the connection stays open)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", edge.port))
    s.sendall(_get(path))
    return s, len(s.recv(65536))


def _drain_rest(s: socket.socket, got: int) -> int:
    """What the client still receives after the edge dropped it: the end is reset or EOF
    (a timeout here, the connection still open, fails the test)."""
    try:
        while chunk := s.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        pass
    return got


def _wait_released(edge: Edge, s: socket.socket) -> None:
    port = s.getsockname()[1]

    def released() -> bool:
        return not _holds_connection(edge, port) and _held(edge)[1] == 0

    wait_until(released, 20, 0.05, "the stalled client's socket and cache file to be closed")


def test_a_streamed_hit_whose_client_stops_reading_is_dropped(tmp_path):
    path = "/media/st/hit.mp4"
    up = Upstream()
    up.routes[path] = Route(size=SIZE, headers={"Content-Type": "video/mp4", "X-Media-Revision": "h1"})
    edge = Edge(str(tmp_path), upstream=up.url,
                args=["--idle-timeout", str(STALL), "--sendfile-min-size", "off"]).start()
    try:
        assert "stored" in status_of(edge.get(path))
        warm = edge.get(path)
        assert "hit" in status_of(warm) and hashlib.sha256(warm.content).hexdigest() == synthetic_sha(SIZE)
        assert _held(edge)[1] == 0

        s, got = _stalled_client(edge, path)
        try:
            stopped = time.monotonic()
            assert got > 0 and _holds_connection(edge, s.getsockname()[1])
            wait_until(lambda: _held(edge)[1] == 1, 5, 0.02, "the stream to hold the cache file")
            # Another client is served in full while the stalled one is pending.
            assert hashlib.sha256(edge.get(path).content).hexdigest() == synthetic_sha(SIZE)
            _wait_released(edge, s)
            dropped = time.monotonic() - stopped
            assert dropped > STALL * 0.5, dropped  # the stall deadline, not an immediate cut
            assert _drain_rest(s, got) < SIZE
        finally:
            s.close()

        after = edge.get(path)
        assert after.status_code == 200 and hashlib.sha256(after.content).hexdigest() == synthetic_sha(SIZE)

        # A slow client that keeps reading is never cut: 5 s (2.5 stall deadlines) of small reads.
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as slow:
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.sendall(_get(path))
            until = time.monotonic() + 5
            while time.monotonic() < until:
                assert slow.recv(16384), "the edge ended the body of a client still reading"
                time.sleep(0.1)  # pacing the reader, not an assertion
    finally:
        edge.stop()
        up.close()


def test_a_miss_whose_client_stops_reading_is_dropped_and_the_fill_goes_on(tmp_path):
    """The stalled client started the fill (a slow upstream: ~8 s for the body); a second
    client joins it and keeps reading. The stalled client is dropped while the fill is
    still running, and the second client gets the exact bytes of the one fill, which is
    committed."""
    path = "/media/st/miss.mp4"
    up = Upstream()
    up.routes[path] = Route(size=SIZE, headers={"Content-Type": "video/mp4", "X-Media-Revision": "m1"},
                            chunk_delay=0.01)
    edge = Edge(str(tmp_path), upstream=up.url,
                args=["--idle-timeout", str(STALL), "--sendfile-min-size", "off"]).start()
    try:
        assert _held(edge)[1] == 0
        s, got = _stalled_client(edge, path)
        port = s.getsockname()[1]
        try:
            stopped = time.monotonic()
            assert got > 0 and _holds_connection(edge, port)
            result: dict[str, str] = {}

            def second() -> None:
                r = edge.get(path, timeout=60)
                result["status"] = status_of(r)
                result["sha"] = hashlib.sha256(r.content).hexdigest()

            t = threading.Thread(target=second)
            t.start()
            wait_until(lambda: not _holds_connection(edge, port), 20, 0.05, "the stalled client to be dropped")
            assert time.monotonic() - stopped > STALL * 0.5
            assert t.is_alive(), "the fill ended before the stalled client was dropped: the test proves nothing"
            t.join(60)
            assert result.get("sha") == synthetic_sha(SIZE), result
            assert "fwd=miss" in result["status"] and up.hits[path] == 1  # one fill, joined
            _wait_released(edge, s)
            assert _drain_rest(s, got) < SIZE
        finally:
            s.close()
        r = edge.get(path)
        assert "hit" in status_of(r) and hashlib.sha256(r.content).hexdigest() == synthetic_sha(SIZE)
    finally:
        edge.stop()
        up.close()
