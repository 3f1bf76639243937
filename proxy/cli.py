"""The `mediaedge` command: argument parsing and error reporting, nothing else.

Each subcommand resolves its settings through `mediaedge.config.load_settings` and
hands a namespace to the module that does the work, imported only when that
subcommand runs (`serve` -> `mediaedge.serve.run(settings)`, `check` ->
`mediaedge.check.run(settings)`, `import` ->
`mediaedge.importer.run(args)`, `stats` -> `mediaedge.statscli.run(args)`, `publish` /
`purge` -> `mediaedge.publishcli.run_publish(args)` / `run_purge(args)`; `sign` is a few
lines over `mediaedge.signing.sign_target`). Every flag
is defined here, so `--help` works whatever is installed.

Failures the operator can fix print one line, `mediaedge: error: ...`, and no
traceback: bad settings and usage exit 2; any other `MediaedgeError` (the tree is in
`mediaedge.errors`: a `StartupError`, a `DatabaseError`...) exits 1.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

from mediaedge.errors import ConfigError, MediaedgeError
from mediaedge.config import (
    OPTIONS,
    admin_token_problem,
    Settings,
    check_prefix,
    load_settings,
    parse_duration,
    parse_http_url,
)

PROG = "mediaedge"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of this command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


class _Unavailable(MediaedgeError):
    """A subcommand's module is not part of this build."""

    def __init__(self, module: str) -> None:
        super().__init__(f"{module} is not available in this build")


if TYPE_CHECKING:  # the object add_subparsers() returns; generic in typeshed only
    Subcommands = argparse._SubParsersAction[_Parser]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors end here
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as e:
        return _fail(e.one_line, 2)
    except KeyboardInterrupt:
        return 0
    except MediaedgeError as e:
        return _fail(e.one_line, 1)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


# --- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="A reverse caching proxy for media kept in a database.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(commands)
    _add_check(commands)
    _add_import(commands)
    _add_stats(commands)
    _add_publish(commands)
    _add_purge(commands)
    _add_sign(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mediaedge")
    except PackageNotFoundError:
        return "0+unknown"


_PRECEDENCE = (
    "Settings come from, highest first: a flag, the environment variable MEDIAEDGE_<NAME> "
    "(e.g. MEDIAEDGE_CACHE_SIZE), the TOML file of --config or $MEDIAEDGE_CONFIG "
    "(example: conf/mediaedge.toml), then the default."
)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS,
        help="TOML file of settings, keyed by flag name (cache-size = \"10GiB\"); flags and "
        "environment variables override it. Default: $MEDIAEDGE_CONFIG, else none.",
    )


def _add_serve(commands: Subcommands) -> None:
    p = commands.add_parser(
        "serve", help="run the caching proxy and its admin plane",
        description="Run the data plane (reverse proxy) and the admin plane until "
        "SIGINT or SIGTERM.",
        epilog=_PRECEDENCE,
    )
    _add_settings_flags(p)
    p.set_defaults(handler=_serve)


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    """Every setting of OPTIONS as a flag, and --config: serve's flags."""
    for option in OPTIONS:
        p.add_argument(
            option.flag,
            dest=option.name.replace("-", "_"),
            metavar=option.metavar,
            action="append" if option.repeatable else "store",
            default=argparse.SUPPRESS,
            help=_escape(f"{option.full_help} Default: {option.shown_default}. Env: {option.env}."),
        )
    _add_config(p)


def _add_check(commands: Subcommands) -> None:
    p = commands.add_parser(
        "check", help="validate the settings and reach every component, without serving",
        description="Parse the settings as serve does, then reach the origin database and its "
        "tables or sql routes, the state database, the upstream, the cache directory and the "
        "free disk: one line per component, 'ok' or the problem. Exit 0 only when all are ok. "
        "Opens no listener.",
        epilog=_PRECEDENCE,
    )
    _add_settings_flags(p)
    p.set_defaults(handler=_check)


def _add_import(commands: Subcommands) -> None:
    p = commands.add_parser(
        "import", help="load a directory of files into the native origin database",
        description="Load every file under DIR into the native origin database as "
        "<url-prefix><relative path>; unchanged files keep their revision.",
        epilog=_PRECEDENCE,
    )
    p.add_argument("dir", metavar="DIR", help="directory to import")
    p.add_argument(
        "--origin-db", metavar="URL", default=argparse.SUPPRESS,
        help="database to load into. Default: sqlite:///var/origin.db. Env: MEDIAEDGE_ORIGIN_DB.",
    )
    p.add_argument(
        "--url-prefix", metavar="P", default="/media/",
        help="URL path prefix of the imported files. Default: /media/.",
    )
    p.add_argument(
        "--state-db", metavar="URL", default=argparse.SUPPRESS,
        help="invalidation log the running nodes follow; every imported or changed path is "
        "published there. Default: the origin database. Env: MEDIAEDGE_STATE_DB.",
    )
    _add_config(p)
    p.set_defaults(handler=_import)


def _add_stats(commands: Subcommands) -> None:
    p = commands.add_parser(
        "stats", help="print a running node's statistics",
        description="Fetch GET /stats from the admin plane and print it as a table.",
    )
    _add_admin(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON instead of a table")
    p.add_argument(
        "--admin-token", metavar="TOKEN", default=None,
        help="the node's --admin-token, sent as 'Authorization: Bearer TOKEN'. Default: "
        "$MEDIAEDGE_ADMIN_TOKEN, else admin-token in --config.",
    )
    p.add_argument(
        "--watch", metavar="N", type=_watch_seconds, default=None,
        help="refresh every N seconds until interrupted (blocks; Ctrl-C stops it). Takes seconds "
        "or a duration: 500ms, 2s, 1m. Each frame is flushed, so a pipe gets it at once",
    )
    _add_config(p)
    p.set_defaults(handler=_stats)


def _add_publish(commands: Subcommands) -> None:
    p = commands.add_parser(
        "publish", help="send a signed publish (or delete) event for paths",
        description="Tell the edge that PATHs have a new revision (or were deleted), through "
        "the signed POST /publish webhook. Prints what was done (--json: the server's answer).",
    )
    p.add_argument("paths", metavar="PATH", nargs="+", help="request target, e.g. /media/a.jpg")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--revision", metavar="R", help="the revision now current for PATH")
    which.add_argument("--delete", action="store_true", help="PATH was deleted: drop its entries")
    p.add_argument(
        "--abort-inflight", action="store_true",
        help="with --delete: also cut off downloads of PATH already running (revoked access)",
    )
    _add_admin(p)
    _add_secret(p)
    _add_json_answer(p)
    p.add_argument(
        "--prewarm", action="store_true",
        help='mark each publish event "prewarm": the edge fetches the new revision in the background so the first visitor gets a hit',
    )
    _add_config(p)
    p.set_defaults(handler=_publish)


def _add_purge(commands: Subcommands) -> None:
    p = commands.add_parser(
        "purge", help="send a signed purge event",
        description="Drop cached entries by exact path, path prefix, Surrogate-Key tag, or all "
        "of them, through the signed POST /publish webhook. Prints what was done (--json: the "
        "server's answer).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--path", metavar="P", help="exact request target, e.g. /media/a.jpg")
    which.add_argument("--prefix", metavar="X", help="every request target starting with X")
    which.add_argument("--tag", metavar="T", help="every entry tagged T by Surrogate-Key/xkey")
    which.add_argument(
        "--all", action="store_true",
        help="every entry: a purge of the prefix / (the edge stores media only)",
    )
    p.add_argument("--soft", action="store_true", help="mark stale (served while refetched)")
    p.add_argument(
        "--abort-inflight", action="store_true",
        help="also cut off downloads of matching entries already running",
    )
    _add_admin(p)
    _add_secret(p)
    _add_json_answer(p)
    _add_config(p)
    p.set_defaults(handler=_purge)


def _add_sign(commands: Subcommands) -> None:
    p = commands.add_parser(
        "sign", help="print a signed link for media under --signed-prefix",
        description="Sign TARGET (path and optional query, as it will be requested) with a "
        "--signing-key and print it with exp, kid and sig added, on the last line. The key is "
        "the one named by --key-id, else the first configured; a named key adds kid= to the link.",
        epilog=_PRECEDENCE,
    )
    p.add_argument("target", metavar="TARGET", help="request target, e.g. /media/private/a.jpg")
    p.add_argument(
        "--ttl", metavar="DURATION", type=_watch_seconds, default=3600.0,
        help="how long the link stays valid: seconds, or 30s, 10m, 12h, 7d. Default: 1h.",
    )
    p.add_argument("--key-id", metavar="KID", default=None, help="sign with the key of this id")
    p.add_argument(
        "--signing-key", dest="signing_key", metavar="[KID:]SECRET", action="append", default=argparse.SUPPRESS,
        help="key to sign with (repeatable). Default: $MEDIAEDGE_SIGNING_KEY, else signing-key in --config.",
    )
    _add_config(p)
    p.set_defaults(handler=_sign)


def _add_admin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin", metavar="URL", default=None,
        help="admin plane URL. Default: from --admin-listen (http://127.0.0.1:8081).",
    )


def _add_secret(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret-file", metavar="PATH", default=None,
        help="read the webhook HMAC key from the first line of PATH (e.g. a systemd credential).",
    )
    parser.add_argument(
        "--secret", metavar="S", default=None,
        help="webhook HMAC key on the command line, where other users see it in ps: prefer "
        "$MEDIAEDGE_WEBHOOK_SECRET or --secret-file. Default: $MEDIAEDGE_WEBHOOK_SECRET, else "
        "webhook-secret in --config.",
    )


def _add_json_answer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true",
        help="print the server's JSON answer ({\"accepted\": N, \"seq\": S}) instead of a sentence",
    )


def _watch_seconds(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return seconds


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help strings


# --- handlers -----------------------------------------------------------------


def _settings(args: argparse.Namespace, *flags: str) -> Settings:
    """Settings from the given flags (those present on `args`), env and --config."""
    given = {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}
    settings = load_settings(given, os.environ, config_path=getattr(args, "config", None))
    args.settings = settings
    return settings


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args, *(o.name.replace("-", "_") for o in OPTIONS))
    problem = admin_token_problem(settings)
    if problem is not None:
        raise problem
    return int(_module("mediaedge.serve").run(settings))


def _check(args: argparse.Namespace) -> int:
    settings = _settings(args, *(o.name.replace("-", "_") for o in OPTIONS))
    problem = admin_token_problem(settings)
    if problem is not None:
        raise problem
    return int(_module("mediaedge.check").run(settings))


def _import(args: argparse.Namespace) -> int:
    settings = _settings(args, "origin_db", "state_db")
    if settings.origin_db is None:
        raise ConfigError("--origin-db", "import needs a database origin, not none")
    args.origin_db, args.state_db = settings.origin_db, settings.state_db_url
    try:
        check_prefix(args.url_prefix)
    except ValueError as e:
        raise ConfigError("--url-prefix", str(e)) from None
    return _call("mediaedge.importer", "run", args)


def _stats(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _resolve_admin(args, settings)
    args.admin_token = args.admin_token or settings.admin_token
    return _call("mediaedge.statscli", "run", args)


def _publish(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _resolve_admin(args, settings)
    _resolve_secret(args, settings)
    return _call("mediaedge.publishcli", "run_publish", args)


def _purge(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _resolve_admin(args, settings)
    _resolve_secret(args, settings)
    return _call("mediaedge.publishcli", "run_purge", args)


def _sign(args: argparse.Namespace) -> int:
    from mediaedge.signing import sign_target

    keys = _settings(args, "signing_key").signing_keys
    if not keys:
        raise ConfigError("--signing-key", "no key: give --signing-key, set MEDIAEDGE_SIGNING_KEY, "
                          "or signing-key in --config")
    if args.key_id is not None:
        named = [k for k in keys if k.kid == args.key_id]
        if not named:
            raise ConfigError("--key-id", f"no --signing-key has the id {args.key_id!r}")
        key = named[0]
    else:
        key = keys[0]
    exp = int(time.time() + args.ttl) + 1  # rounded up: never shorter than asked
    try:
        link = sign_target(args.target, key.secret, exp, key.kid)
    except ValueError as e:
        raise ConfigError("TARGET", str(e)) from None
    print(f"# valid until {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(exp))}"
          + (f", key {key.kid}" if key.kid else ""))
    print(link)
    return 0


def _resolve_admin(args: argparse.Namespace, settings: Settings) -> None:
    if args.admin is None:
        args.admin = settings.admin_url
        return
    admin = args.admin if "://" in args.admin else f"http://{args.admin}"  # host:port is fine
    try:
        args.admin = parse_http_url(admin)
    except ValueError as e:
        raise ConfigError("--admin", str(e)) from None


def _resolve_secret(args: argparse.Namespace, settings: Settings) -> None:
    """--secret > --secret-file > MEDIAEDGE_WEBHOOK_SECRET > webhook-secret in --config."""
    if args.secret:
        print(f"{PROG}: warning: --secret is visible to other users in ps; prefer "
              "MEDIAEDGE_WEBHOOK_SECRET or --secret-file", file=sys.stderr)
    elif args.secret_file:
        from mediaedge.publishcli import read_secret_file

        try:
            args.secret = read_secret_file(args.secret_file)
        except ValueError as e:
            raise ConfigError("--secret-file", str(e)) from None
    args.secret = args.secret or settings.webhook_secret
    if not args.secret:
        raise ConfigError(
            "--secret",
            "no webhook secret: set MEDIAEDGE_WEBHOOK_SECRET, give --secret-file PATH, "
            "or webhook-secret in --config",
        )


def _call(module: str, function: str, args: argparse.Namespace) -> int:
    run: Callable[[argparse.Namespace], int] = getattr(_module(module), function)
    return int(run(args) or 0)


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise  # a missing dependency inside the module is a bug worth a traceback
        raise _Unavailable(name) from None
