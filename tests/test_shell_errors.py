"""The shell's synchronous hit path fails as its async path does: a 502 naming the
exception, logged and counted as an error, never a traceback from mitmproxy's hook
handler (the client would get mitmproxy's error page or a dropped connection). In
process: a real Runtime in front of a real loopback app, flows from mitmproxy's test
helpers, the engine's `hot_hit` made to raise."""
from __future__ import annotations

import asyncio
import logging
import time

import pytest
from mitmproxy.http import HTTPFlow
from mitmproxy.test import tflow

from mediaedge.config import load_settings
from mediaedge.contract import MediaRequest
from mediaedge.headers import Headers
from mediaedge.policy.signing import sign_target
from mediaedge.shell import Shell
from tests.edge import Route, Upstream

BODY = b"jpeg" * 64
FIELDS = {"Content-Type": "image/jpeg", "Cache-Control": "max-age=600"}


def flow_for(path: str) -> HTTPFlow:
    return tflow.tflow(req=tflow.treq(method=b"GET", path=path.encode(), headers=[], content=b""))


async def ask(shell: Shell, path: str) -> HTTPFlow:
    """`path` through the request hook, awaited when the hook returns a coroutine (as mitmproxy does)."""
    flow = flow_for(path)
    pending = shell.request(flow)
    if pending is not None:
        await pending
    return flow


async def until_hot(shell: Shell, target: str, path: str) -> None:
    """Ask for `path` until the memory tier holds `target` (a fill commits, then a disk hit admits it)."""
    assert shell.rt is not None
    deadline = time.monotonic() + 10
    while shell.rt.engine.hot_hit(MediaRequest("GET", target, Headers())) is None:
        assert time.monotonic() < deadline, f"{target} never reached the memory tier"
        await ask(shell, path)
        await asyncio.sleep(0.02)


def boom(req: MediaRequest) -> None:
    raise KeyError(req.target)


@pytest.mark.parametrize("signed", [False, True], ids=["public", "signed"])
def test_a_failing_hot_hit_is_a_502_and_the_next_request_is_served(tmp_path, monkeypatch, caplog, signed):
    up = Upstream()
    target = "/media/s/a.jpg" if signed else "/media/a.jpg"
    up.routes[target] = Route(body=BODY, headers=FIELDS)
    flags: dict[str, object] = {"upstream": up.url, "origin_db": "none", "cache_dir": str(tmp_path / "cache")}
    if signed:
        flags |= {"signed_prefix": ["/media/s/"], "signing_key": ["s3cret"]}
    path = sign_target(target, "s3cret", int(time.time()) + 600) if signed else target

    async def main() -> None:
        shell = Shell(load_settings(flags, {}, config_path=None))
        await shell.running()
        rt = shell.rt
        assert rt is not None
        try:
            await until_hot(shell, target, path)
            errors = rt.snapshot()["errors"]
            with monkeypatch.context() as m, caplog.at_level(logging.ERROR, logger="mediaedge"):
                m.setattr(rt.engine, "hot_hit", boom)
                failed = flow_for(path)
                assert shell.request(failed) is None  # answered in the sync path, no coroutine
            assert failed.response is not None
            assert (failed.response.status_code, failed.response.content) == (502, b"internal error: KeyError\n")
            assert failed.response.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert rt.snapshot()["errors"] == errors + 1
            assert f"media request {target} failed" in caplog.text and "KeyError" in caplog.text
            served = flow_for(path)
            assert shell.request(served) is None  # the memory tier answers again
            assert served.response is not None
            assert (served.response.status_code, served.response.content) == (200, BODY)
            assert rt.snapshot()["errors"] == errors + 1
        finally:
            await shell.done()

    try:
        asyncio.run(main())
    finally:
        up.close()
