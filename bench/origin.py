"""A fast loopback test origin for the benchmarks (asyncio.Protocol, HTTP/1.1 keep-alive).

It must never be the bottleneck: bodies are slices of one pre-built pattern, no
per-request allocation beyond the head, flow control for large bodies. The harness
measures it directly (`origin` contender) so the report shows its headroom.

Paths describe the object they answer, so no catalogue has to be configured:

    /media/<anything>/s<SIZE>/<anything>   a body of SIZE bytes (default 10240)
    .../d<MS>/...                           wait MS milliseconds before the head
    .../nf/...                              answer 404 (e.g. objects only the database has)
    /__counts?prefix=P                      JSON {path: GETs so far} for paths starting with P
    /__total                                JSON {"requests": N, "connections": C} (C: TCP connections accepted)

Every 200 carries `Cache-Control: public, max-age=86400`, a strong ETag and
`X-Media-Revision`, like an app server that versions its media.

Run: `python -m bench.origin --port P` (prints `ready` when listening).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from urllib.parse import parse_qs, urlsplit

PATTERN_SIZE = 1 << 20
CHUNK = 256 * 1024
_rng = random.Random(1234)
PATTERN = bytes(_rng.getrandbits(8) for _ in range(4096)) * (PATTERN_SIZE // 4096)
PATTERN_VIEW = memoryview(PATTERN * 2)  # a window of CHUNK bytes fits at any offset < PATTERN_SIZE


def body_bytes(size: int) -> bytes:
    """The exact body the origin sends for an object of `size` bytes (for checks and imports)."""
    out = bytearray()
    while len(out) < size:
        out += PATTERN[: min(PATTERN_SIZE, size - len(out))]
    return bytes(out)


def parse_spec(path: str) -> tuple[int, float, bool]:
    size, delay, missing = 10240, 0.0, False
    for seg in path.split("?", 1)[0].split("/"):
        if len(seg) > 1 and seg[0] == "s" and seg[1:].isdigit():
            size = int(seg[1:])
        elif len(seg) > 1 and seg[0] == "d" and seg[1:].isdigit():
            delay = int(seg[1:]) / 1000.0
        elif seg == "nf":
            missing = True
    return size, delay, missing


class Origin:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0
        self.connections = 0


class OriginProtocol(asyncio.Protocol):
    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.buf = b""
        self.busy = False
        self.transport: asyncio.Transport | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.origin.connections += 1
        transport.set_write_buffer_limits(high=1 << 20)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._process()

    def _process(self) -> None:
        while not self.busy and not self.closed:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                if len(self.buf) > 65536:
                    self.transport.close()  # type: ignore[union-attr]
                return
            head = self.buf[:i].decode("latin-1")
            self.buf = self.buf[i + 4:]
            lines = head.split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self.transport.close()  # type: ignore[union-attr]
                return
            hdrs = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            n = int(hdrs.get("content-length") or 0)
            if n:  # unsafe methods with a body: skip it (benchmarks send none)
                self.buf = self.buf[n:]
            close = version == "HTTP/1.0" or hdrs.get("connection", "").lower() == "close"
            self._respond(method, target, close)

    def _respond(self, method: str, target: str, close: bool) -> None:
        o = self.origin
        o.total += 1
        t = self.transport
        assert t is not None
        if target.startswith("/__"):
            u = urlsplit(target)
            if u.path == "/__counts":
                prefix = parse_qs(u.query).get("prefix", [""])[0]
                body = json.dumps({p: c for p, c in o.counts.items() if p.startswith(prefix)}).encode()
            elif u.path == "/__total":
                body = json.dumps({"requests": o.total, "connections": o.connections}).encode()
            else:
                body = b"{}"
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body))
            return
        if method == "GET":
            o.counts[target] = o.counts.get(target, 0) + 1
        size, delay, missing = parse_spec(target)
        if missing:
            body = b"not here\n"
            t.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(body), b"Connection: close\r\n" if close else b"", body))
            if close:
                t.close()
            return
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
                b"Cache-Control: public, max-age=86400\r\nETag: \"v1-%d\"\r\nX-Media-Revision: v1-%d\r\n%s\r\n"
                % (size, size, size, b"Connection: close\r\n" if close else b""))
        send_body = method != "HEAD"
        if delay or (send_body and size > CHUNK):
            self.busy = True
            asyncio.get_running_loop().create_task(self._slow(head, size if send_body else 0, delay, close))
            return
        if send_body:
            t.write(head + PATTERN[:size])
        else:
            t.write(head)
        if close:
            t.close()

    async def _slow(self, head: bytes, size: int, delay: float, close: bool) -> None:
        t = self.transport
        assert t is not None
        if delay:
            await asyncio.sleep(delay)
        t.write(head)
        pos = 0
        while pos < size and not self.closed:
            n = min(CHUNK, size - pos)
            off = pos % PATTERN_SIZE
            t.write(PATTERN_VIEW[off:off + n])
            pos += n
            if not self._can_write.is_set():
                await self._can_write.wait()
        if close or self.closed:
            t.close()
            return
        self.busy = False
        self._process()


async def serve(host: str, port: int) -> None:
    origin = Origin()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: OriginProtocol(origin), host, port, backlog=4096, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.origin")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args(argv)
    try:
        asyncio.run(serve(a.host, a.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
