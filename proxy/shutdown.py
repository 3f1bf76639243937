"""Stopping within the contract's 10 s of SIGTERM/SIGINT, whatever is in flight.

Two things used to hold a stopped node alive:

* `asyncio.Server.wait_closed()` waits, since Python 3.12.1, until every connection the
  server accepted has closed (3.11 returned at once). The in-process stream server
  holds mitmproxy's connection for a download in flight, so `stop()` waited for the
  download to end. `close_server` aborts the accepted connections itself (Python
  3.13's `Server.abort_clients()`, for every version) and bounds the wait.
* worker threads the interpreter joins at exit (see proxy/pools.py).

`ExitDeadline` is the last resort: if a stop still takes longer than it may, the
process exits anyway. Nothing partial can be stored by that: entries are committed
by a rename only after their body is complete, and temp files are removed at start.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading

log = logging.getLogger("mediaedge")

SERVER_CLOSE_GRACE = 2.0
"""How long a closed server may take to see its aborted connections go."""

EXIT_DEADLINE = 8.0
"""Seconds from the stop signal to a forced exit: under the contract's 10 s."""


async def close_server(server: asyncio.AbstractServer, writers: set[asyncio.StreamWriter],
                       grace: float = SERVER_CLOSE_GRACE) -> None:
    """Stop listening, abort every connection still open, and wait (bounded) for them."""
    server.close()
    for writer in list(writers):
        writer.transport.abort()
    try:
        await asyncio.wait_for(server.wait_closed(), grace)
    except TimeoutError:
        log.warning("a server's connections did not close within %.0f s; stopping anyway", grace)


class ExitDeadline:
    """A daemon timer, armed by the first stop signal, that ends the process with `code`
    if the orderly stop has not finished `seconds` later."""

    def __init__(self, seconds: float = EXIT_DEADLINE, code: int = 0) -> None:
        self.seconds = seconds
        self.code = code
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is not None:
            return
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        log.warning("stop took longer than %.0f s; exiting now (nothing partial is stored)", self.seconds)
        logging.shutdown()
        os._exit(self.code)
