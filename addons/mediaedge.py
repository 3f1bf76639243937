"""mediaedge as a mitmproxy addon for plain `mitmdump -s addons/mediaedge.py
--mode reverse:http://app:8000`: the options declared the mitmproxy way, turned into
`Settings`, and the node's hooks (`mediaedge.shell.Shell`, which `mediaedge serve`
uses too) on top. Flows become requests and replies responses there; nothing else
happens here.
"""
from __future__ import annotations

import os as _os
import sys as _sys

# `mitmdump -s addons/mediaedge.py` puts this file's folder first on sys.path, where this
# very file would shadow the installed `mediaedge` package it imports from. Drop it.
_HERE = _os.path.dirname(_os.path.abspath(__file__))
_sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _HERE]

import logging
import os
from collections.abc import Sequence

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader
from mitmproxy.exceptions import OptionsError

from mediaedge.config import OPTIONS, Settings, admin_token_problem, load_settings
from mediaedge.errors import ConfigError
from mediaedge.shell import Shell

log = logging.getLogger("mediaedge")

# The mitmdump options: one per setting of the table (`mediaedge_<name>`), except the
# data plane's address, which is mitmproxy's own (--listen-host/--listen-port). Derived
# from OPTIONS, so a new setting needs no edit here; their help is the table's.
_SETTINGS = {o.name: o for o in OPTIONS if o.name != "listen"}
OPTION_FLAGS = {"mediaedge_config": "config"} | {
    "mediaedge_" + name.replace("-", "_"): name for name in _SETTINGS
}
# The repeatable ones: a list option in mitmdump, a repeated flag in `mediaedge serve`.
LIST_FLAGS = {name for name, o in _SETTINGS.items() if o.repeatable}


def _option_help(flag: str) -> str:
    if flag == "config":
        return "A TOML settings file (mediaedge --config); flags and MEDIAEDGE_* variables win over it."
    o = _SETTINGS[flag]
    return f"{o.help} (mediaedge --{flag}; empty: {o.shown_default})"


class MediaEdge(Shell):
    """`Shell` configured from mitmdump options (or from `Settings` given directly)."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self._given = settings is not None

    def load(self, loader: Loader) -> None:
        super().load(loader)
        if self._given:
            return
        for name, flag in OPTION_FLAGS.items():
            if flag in LIST_FLAGS:
                loader.add_option(name, Sequence[str], [], _option_help(flag))
            else:
                loader.add_option(name, str, "", _option_help(flag))

    def configure(self, updated: set[str]) -> None:
        if self._given or self.rt is not None or not updated & (set(OPTION_FLAGS) | {"mode"}):
            return
        cli: dict[str, object] = {}
        for name, flag in OPTION_FLAGS.items():
            value = getattr(ctx.options, name)
            if value:
                cli[flag] = list(value) if flag in LIST_FLAGS else value
        if "upstream" not in cli:
            for mode in ctx.options.mode:
                if mode.startswith("reverse:"):
                    cli["upstream"] = mode[len("reverse:"):].split("@")[0]
        config = cli.pop("config", None)
        try:
            settings = load_settings(cli, os.environ, config_path=config)  # type: ignore[arg-type]
            problem = admin_token_problem(settings)
            if problem is not None:
                raise problem
        except ConfigError as e:
            raise OptionsError(str(e)) from e
        self.settings = settings
        # Under mitmdump, mediaedge_log_level filters our own loggers; mitmdump's own
        # messages keep its termlog_verbosity.
        log.setLevel(settings.log_level.upper())

    async def running(self) -> None:
        if not self._given and ctx.options.connection_strategy != "lazy":
            # eager connects to the upstream when a client connects: with the upstream
            # down, clients are dropped before we can answer even a hit.
            log.info("mediaedge: setting connection_strategy=lazy")
            ctx.options.update(connection_strategy="lazy")
        await super().running()


addons = [MediaEdge()]
