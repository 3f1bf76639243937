"""Loopback ports for the bench and the tests (bench/edge.py and bench/dbservers.py import
this one): one implementation, one record per process of the ports handed out."""
from __future__ import annotations

import socket

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on now and that this process has not handed out
    before: the kernel may give the same ephemeral port to two binds in a row, and two
    calls for one command line (`--listen` and `--admin-listen`) must not collide."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh loopback port after 100 tries")
