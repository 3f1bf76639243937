"""The ceiling: a bare mitmproxy master whose only addon answers from memory.

The fastest any cache built as a mitmproxy addon can be on this machine: the same
cut-down `Master` mediaedge uses (core, proxyserver, next_layer, tlsconfig,
errorcheck; `connection_strategy=lazy`; mitmproxy's debug-only message type checks off,
`mediaedge.serve.skip_debug_typechecks`), plus one synchronous `request` hook that
sets a prebuilt response. No lookup, no policy, no counters. The response carries
the same number of headers a mediaedge hit does, so the bytes on the wire match.

Run: `python -m bench.ceiling --port P [--size 10240]` (prints `ready`).
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from mitmproxy import http, options
from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master


class FromMemory:
    def __init__(self, size: int) -> None:
        from bench.origin import PATTERN

        self.body = PATTERN[:size]
        self.headers = [
            (b"Content-Type", b"application/octet-stream"),
            (b"Cache-Control", b"public, max-age=86400"),
            (b"ETag", b'"v1"'),
            (b"X-Media-Revision", b"v1"),
            (b"Age", b"0"),
            (b"Cache-Status", b"mediaedge; hit; ttl=86400"),
            (b"Accept-Ranges", b"bytes"),
            (b"Content-Length", str(size).encode()),
        ]

    def request(self, flow: http.HTTPFlow) -> None:
        resp = http.Response.make(200, b"")
        resp.headers = http.Headers(self.headers)
        resp.raw_content = self.body
        flow.response = resp


async def _main(host: str, port: int, size: int) -> None:
    from mediaedge.serve import skip_debug_typechecks

    skip_debug_typechecks()  # as `mediaedge serve` does: the ratio measures the addon alone
    opts = options.Options()
    master = Master(opts)
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                      errorcheck.ErrorCheck(), FromMemory(size))
    opts.update(mode=[f"reverse:http://127.0.0.1:9@{host}:{port}"], connection_strategy="lazy",
                keep_host_header=False)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)

    async def announce() -> None:
        # `ready` once the listener accepts connections.
        for _ in range(200):
            try:
                _, w = await asyncio.open_connection(host, port)
                w.close()
                print("ready", flush=True)
                return
            except OSError:
                await asyncio.sleep(0.02)

    loop.create_task(announce())
    await master.run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ceiling")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, default=10240)
    a = p.parse_args(argv)
    try:
        asyncio.run(_main(a.host, a.port, a.size))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
