"""The pure parts of proxy/http1guard.py and its chunk-footer patch (the wraps on mitmproxy are
driven through a real edge by tests/test_hostile.py and tests/test_hostile_http1.py)."""
from __future__ import annotations

import pytest

from mediaedge.http1guard import (MAX_REQUEST_HEAD, footer_mismatch, h11_checks_chunk_footer, head_too_large,
                              leading_empty_lines)


@pytest.mark.parametrize("data, n", [
    (b"GET / HTTP/1.1\r\n\r\n", 0),
    (b"\r\nGET /", 2),
    (b"\nGET /", 1),
    (b"\r\n\n\r\nGET /", 5),
    (b"\r\n\r\n", 4),
    (b"\r", 0),  # half a CRLF: wait for the rest
    (b"", 0),
])
def test_leading_empty_lines(data: bytes, n: int) -> None:
    assert leading_empty_lines(data) == n


@pytest.mark.parametrize("data, too_large", [
    (b"GET / HTTP/1.1\r\n" + b"a" * 100, False),                          # short, incomplete: wait
    (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_HEAD, True),           # over, no end in sight
    (b"GET / HTTP/1.1\r\n\r\n" + b"b" * (2 * MAX_REQUEST_HEAD), False),   # pipelined body/next request
    (b"X" * (MAX_REQUEST_HEAD - 10) + b"\r\n\r\n" + b"z" * 100, False),    # ends just inside
    (b"X" * (MAX_REQUEST_HEAD - 10) + b"\n\n" + b"z" * 100, False),        # bare-LF end, as h11 reads
    (b"X" * (MAX_REQUEST_HEAD + 10) + b"\r\n\r\n", True),                  # ends past the limit
])
def test_head_too_large(data: bytes, too_large: bool) -> None:
    assert head_too_large(bytearray(data)) is too_large


def test_with_date_adds_one_date_after_the_status_line():
    from mediaedge.http1guard import with_date

    raw = b"HTTP/1.1 502 Bad Gateway\r\nServer: x\r\ncontent-length: 2\r\n\r\nhi"
    dated = with_date(raw, b"Mon, 30 Nov 2026 12:00:00 GMT")
    assert dated == (b"HTTP/1.1 502 Bad Gateway\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\nServer: x\r\n"
                     b"content-length: 2\r\n\r\nhi")
    assert with_date(dated, b"other") == dated  # already dated: unchanged


@pytest.mark.parametrize("pending, data, mismatch", [
    (2, b"\r\n0\r\n", False),
    (2, b"", False),          # nothing yet: wait
    (2, b"\r", False),        # half the footer yet
    (1, b"\n0\r\n", False),   # the rest of a footer split across reads
    (2, b"XX0\r\n", True),    # CVE-2025-43859's example
    (2, b"\rX", True),
    (2, b"\n\r", True),
    (1, b"X", True),
    (2, b"0\r\n", True),      # no footer: the next chunk header
])
def test_footer_mismatch(pending: int, data: bytes, mismatch: bool) -> None:
    assert footer_mismatch(pending, bytearray(data)) is mismatch


@pytest.mark.parametrize("version, checks", [
    ("0.14.0", False), ("0.15.0", False), ("0.16.0", True), ("0.17.1", True), ("1.0.0", True)])
def test_h11_checks_chunk_footer(version: str, checks: bool) -> None:
    assert h11_checks_chunk_footer(version) is checks


def test_installed_h11_refuses_a_malformed_chunk_footer() -> None:
    """Whatever h11 this Python has, once the guard is installed its chunked reader raises
    on chunk data followed by anything but CRLF (CVE-2025-43859), as h11 0.16 does."""
    import h11
    from h11._readers import ChunkedReader
    from h11._receivebuffer import ReceiveBuffer

    from mediaedge import http1guard

    http1guard.install()

    def read_all(body: bytes) -> list[object]:
        buf, reader, events = ReceiveBuffer(), ChunkedReader(), []
        buf += body
        while (event := reader(buf)) is not None:
            events.append(event)
            if isinstance(event, h11.EndOfMessage):
                break
        return events

    assert isinstance(read_all(b"5\r\nhello\r\n0\r\n\r\n")[-1], h11.EndOfMessage)
    with pytest.raises(h11.LocalProtocolError, match="malformed chunk footer"):
        read_all(b"5\r\nhelloXX0\r\n\r\n")


def test_a_connection_whose_handler_is_cancelled_outside_its_read_is_closed() -> None:
    """mitmproxy's `handle_connection` closes a socket only when its cancellation lands in
    `reader.read()`; landing in `await server_event(...)` (the lock it queues for behind a
    hook task on mitmproxy 12) left the socket open. Here the cancellation lands there on
    purpose, with a real loopback peer: the peer must see the close."""
    import asyncio
    import socket

    from mitmproxy import connection, options
    from mitmproxy.proxy import context, events, server

    from mediaedge import http1guard

    http1guard.install()

    class Handler(server.ConnectionHandler):
        async def handle_hook(self, hook: object) -> None:
            pass

        async def server_event(self, event: events.Event) -> None:
            if isinstance(event, events.DataReceived):
                raise asyncio.CancelledError("closed by command")  # as from the lock's await

    async def run() -> bytes:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            peer, _ = await loop.sock_accept(listener)
            client = connection.Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=0)
            handler = Handler(context.Context(client, options.Options()))
            conn = connection.Server(address=listener.getsockname())
            task = asyncio.current_task()
            handler.transports[conn] = server.ConnectionIO(handler=task, reader=reader, writer=writer)
            await loop.sock_sendall(peer, b"HTTP/1.1 200 OK\r\n")
            with pytest.raises(asyncio.CancelledError):
                await handler.handle_connection(conn)
            assert conn not in handler.transports
            got = await asyncio.wait_for(loop.sock_recv(peer, 100), 5)  # b"" once closed
            peer.close()
            return got
        finally:
            listener.close()

    assert asyncio.run(run()) == b""
