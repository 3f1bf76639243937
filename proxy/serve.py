"""`mediaedge serve`: a cut-down mitmproxy master carrying only what a reverse proxy needs.

Why not DumpMaster: most of mitmproxy's per-request time is hook dispatch over its
~35 default addons; a master with core, proxyserver, next_layer, tlsconfig and
errorcheck serves cached hits about twice as fast (docs/BENCHMARKS.md). `connection_strategy`
is `lazy` so a dead upstream never drops a client before the addon answers.

Signals: SIGINT/SIGTERM stop the node (downloads in flight are cut, nothing partial is
stored) within `mediaedge.shutdown.EXIT_DEADLINE` seconds at most; SIGHUP reopens the
access log (logrotate's rename-then-HUP) and the node keeps serving.

Works with mitmproxy 11.0 (Python 3.11) and 12.x (3.12+): `Master`, the five addons
and `http.MessageData.__post_init__` are the same in both; the idle timeout is a module
constant in 11 and the `tcp_timeout` option in 12 (`set_idle_timeout`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import math
import signal
import sys

from mitmproxy import options
from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.proxy import mode_specs
from mitmproxy.master import Master
from mitmproxy.proxy import server as mitm_server

from mediaedge.errors import StartupError
from mediaedge.config import Settings
from mediaedge.shell import Shell
from mediaedge.shutdown import ExitDeadline
from mediaedge.workers import WorkerEnv, WorkerReady, check_free, reuse_port

log = logging.getLogger("mediaedge")

# Where mitmproxy's reverse mode points when there is no upstream. Nothing ever
# connects there: the addon answers every request itself in that case.
NO_UPSTREAM = "http://127.0.0.1:9"


# Fail with one clear line before mitmproxy logs a traceback about the port (a module
# name of its own: tests switch it off to reach the race with mitmproxy's bind).
_check_free = check_free


# mitmproxy closes a connection with no activity for this long (its default: 10 min).
# 30 s, like nginx's client_header_timeout / send_timeout range, reaps slowloris-style
# half-open connections before they exhaust file descriptors. --idle-timeout sets it.
IDLE_TIMEOUT = 30


def reverse_mode(upstream: str, host: str, port: int) -> str:
    """mitmproxy's mode spec for our data plane.

    mitmproxy splits `...@HOST:PORT` at the last colon and binds HOST as written, so an
    IPv6 address goes in bare (`@::1:8080`), not bracketed: `@[::1]:8080` makes it look
    up the host name "[::1]" and fail."""
    spec = f"reverse:{upstream}@{host}:{port}"
    parsed = mode_specs.ProxyMode.parse(spec)
    assert parsed.custom_listen_host == host and parsed.custom_listen_port == port, spec
    return spec


class StartupCheck(errorcheck.ErrorCheck):
    """mitmproxy's start-up error check, ending in our one line instead of its text.

    mitmproxy logs a failed bind (a port taken after our own check, an address this
    host does not have) as a multi-line error and exits; we turn the first error into
    the `StartupError` every other bad setting raises, so `serve` stops with one line
    naming the setting and exit code 1, never half up."""

    name = "errorcheck"  # the name mitmproxy's Master looks the check up by

    async def shutdown_if_errored(self) -> None:
        await asyncio.sleep(0)  # let pending log records arrive, as mitmproxy's check does
        if self.logger.has_errored:
            raise StartupError(startup_error_line(self.logger.has_errored[0].getMessage()))

    def finish(self) -> None:
        super().finish()
        _QUIET_STARTUP.active = False


class _QuietStartup(logging.Filter):
    """Keeps mitmproxy's own start-up errors off stderr: `StartupCheck` says them in one line."""

    active = True

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.active and record.levelno >= logging.ERROR and record.name.startswith("mitmproxy"))


_QUIET_STARTUP = _QuietStartup()


def startup_error_line(message: str) -> str:
    """`--listen: cannot listen on ...` from mitmproxy's failed-bind message, else its first line."""
    first = " ".join(message.splitlines()[0].split()) if message.strip() else "mitmproxy failed to start"
    if " failed to listen on " in first:
        return "--listen: cannot listen on " + first.split(" failed to listen on ", 1)[1]
    return f"--listen: {first}"


class Announce:
    """Prints the listener lines once mitmproxy's servers are really up (its `running`
    hook), so a bind that fails never leaves a "data plane on" line behind it."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def running(self) -> None:
        for line in self.lines:
            print(line, flush=True)


def skip_debug_typechecks() -> None:
    """Turn off mitmproxy's debug-only field type checks on every HTTP message.

    `mitmproxy.http.MessageData.__post_init__` exists only `if __debug__`: it checks each
    field of every request and response built against its annotation, and builds a
    `TypeError` (with the repr of a typing union) for each check whether it fails or not.
    That is ~30 µs and a burst of garbage per message, a tenth of a 10 KB hit, and the
    garbage showed up as p99 latency (docs/BENCHMARKS.md). `python -O` drops it too; we
    drop only this check, not our asserts. The ceiling in bench/ runs with the same."""
    from mitmproxy import http

    http.MessageData.__post_init__ = _no_check  # type: ignore[method-assign]


def _no_check(self: object) -> None:
    return None


def set_idle_timeout(opts: options.Options, seconds: float = IDLE_TIMEOUT) -> None:
    """mitmproxy 12 made the idle timeout the `tcp_timeout` option; mitmproxy 11 reads the
    module constant `mitmproxy.proxy.server.TCP_TIMEOUT` (setting that on 12 would do
    nothing, silently, leaving idle connections open for 10 minutes). Whole seconds: the
    option is an int."""
    seconds = max(1, math.ceil(seconds))
    if "tcp_timeout" in opts:
        opts.update(tcp_timeout=seconds)
    else:
        mitm_server.TCP_TIMEOUT = seconds  # type: ignore[attr-defined]


async def _serve(settings: Settings) -> int:
    skip_debug_typechecks()
    log.debug("settings (--log-level debug):\n%s", settings.describe())
    host, port = settings.listen
    worker = WorkerEnv.from_environ()
    if worker is None:
        _check_free("--listen", host, port)
        _check_free("--admin-listen", *settings.admin_listen)
    else:
        # A worker of --workers N: the port is shared (SO_REUSEPORT; the supervisor checked
        # it), and the admin plane is its private control endpoint (mediaedge.workers).
        settings = dataclasses.replace(settings, admin_listen=("127.0.0.1", 0), admin_token=worker.token)
        reuse_port(asyncio.get_running_loop(), port)
    addon = Shell(settings)
    opts = options.Options()
    set_idle_timeout(opts, settings.idle_timeout)
    master = Master(opts)
    listen_host = f"[{host}]" if ":" in host else host
    announce = Announce([
        f"mediaedge: data plane on http://{listen_host}:{port} "
        f"(upstream {settings.upstream or 'none: database origin only'})",
        f"mediaedge: admin plane on http://{settings.admin_url.split('://', 1)[1]}",
    ])
    needed: list[object] = [core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), StartupCheck(), addon]
    if worker is None:
        needed.append(announce)  # a worker's supervisor prints the node's lines
    else:
        needed.append(WorkerReady(worker, lambda: addon.rt.admin.port if addon.rt and addon.rt.admin else 0))
    if settings.upstream and settings.upstream.startswith("https:"):
        # TLS towards an https app server. Without an https upstream we leave TlsConfig
        # out: then a TLS ClientHello on the plain data port finds no certificate and the
        # handshake fails, instead of being served HTTPS with mitmproxy's own CA.
        needed.insert(3, tlsconfig.TlsConfig())
    master.addons.add(*needed)
    upstream = settings.upstream or NO_UPSTREAM
    opts.update(
        mode=[reverse_mode(upstream, host, port)],
        connection_strategy="lazy",
        stream_large_bodies="1m",
        keep_host_header=False,
    )
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_shutdown_handler)
    deadline = ExitDeadline()

    def stop() -> None:
        deadline.arm()
        master.shutdown()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reopen_logs(addon))
    # Start the runtime ourselves, before the listeners, so startup errors are one line.
    from mediaedge.runtime import Runtime

    addon.rt = Runtime(settings, worker=worker)
    await addon.rt.start()
    gc.collect()
    gc.freeze()  # start-up objects (mitmproxy, policy tables) out of every later full collection
    try:
        await master.run()
    finally:
        await addon.done()
    return 0


def _reopen_logs(addon: Shell) -> None:
    """SIGHUP: reopen the access log (logrotate renamed it); nothing else changes."""
    access_log = getattr(addon.rt, "access_log", None)  # None until the runtime has started
    if access_log is not None and access_log.enabled and access_log.reopen():
        log.info("SIGHUP: access log %s reopened", access_log.path)


def _quiet_shutdown_handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Connections still open at shutdown are cancelled; that is not an error worth a traceback."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


def log_level(name: str) -> int:
    """--log-level's name (debug, info, warning, error) as a logging level."""
    return {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
            "error": logging.ERROR}[name]


def run(settings: Settings) -> int:
    level = log_level(settings.log_level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger().setLevel(level)  # basicConfig leaves an already configured root as it was
    # mitmproxy and httpx say per-connection chatter at info: theirs start at warning whatever --log-level.
    logging.getLogger("mitmproxy").setLevel(max(level, logging.WARNING))
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QUIET_STARTUP)
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    try:
        if settings.workers > 1 and WorkerEnv.from_environ() is None:
            from mediaedge.workers import supervise

            # The supervisor runs this same command (sys.argv) once per worker.
            return asyncio.run(supervise(settings, sys.argv[1:]))
        return asyncio.run(_serve(settings))
    except KeyboardInterrupt:
        return 0
