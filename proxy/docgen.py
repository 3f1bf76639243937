"""`python -m mediaedge.docgen`: the generated parts of docs/reference.md.

The settings table (`mediaedge.config.OPTIONS`) and the command-line parser
(`mediaedge.cli.build_parser`) are the single source of every flag; this module
renders them as Markdown between the markers

    <!-- BEGIN GENERATED: NAME (python -m mediaedge.docgen) -->
    <!-- END GENERATED: NAME -->

and leaves the hand-written text around them alone. `--check` exits 1 when the
file differs from what would be generated (tests/test_reference.py runs it, so
the reference cannot go stale); without it, the file is rewritten in place.

Rendering reads the parser's actions, never argparse's formatted help, whose
layout changes between Python versions.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mediaedge.config import OPTIONS, Option

REFERENCE = Path("docs") / "reference.md"
_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z-]+) \(python -m mediaedge\.docgen\) -->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.S,
)


def cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def settings_table(options: Sequence[Option] = OPTIONS) -> str:
    """One row per setting: flag, default, environment variable, TOML key, meaning."""
    rows = ["| flag | default | environment | TOML key | meaning |", "|---|---|---|---|---|"]
    for o in options:
        flag = f"`{o.flag} {o.metavar}`" + (" (repeatable)" if o.repeatable else "")
        toml = f"`{o.name}`" + (" (a list)" if o.repeatable else "")
        rows.append(f"| {flag} | {cell(o.shown_default)} | `{o.env}` | {toml} | {cell(o.full_help)} |")
    return "\n".join(rows) + "\n"


def commands(parser: argparse.ArgumentParser) -> str:
    """Each subcommand: its one-line purpose and its arguments (serve's and check's
    settings are the table above, so they are named, not repeated)."""
    out: list[str] = []
    for name, sub in _subcommands(parser).items():
        out.append(f"### `mediaedge {name}`\n")
        out.append(cell(sub.description or "") + "\n")
        rows = ["| argument | meaning |", "|---|---|"]
        settings = {o.flag for o in OPTIONS}
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if action.option_strings and action.option_strings[0] in settings and name in ("serve", "check"):
                continue
            rows.append(f"| {_usage(action)} | {cell(action.help or '')} |")
        if name in ("serve", "check"):
            rows.append("| every setting | the flags of the settings table above |")
        out.append("\n".join(rows) + "\n")
    return "\n".join(out)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _usage(action: argparse.Action) -> str:
    if not action.option_strings:
        shown = action.metavar or action.dest
        return f"`{shown} ...`" if action.nargs in ("+", "*") else f"`{shown}`"
    flag = action.option_strings[-1]
    if action.nargs == 0:
        return f"`{flag}`"
    return f"`{flag} {action.metavar or action.dest.upper()}`"


def blocks() -> dict[str, Callable[[], str]]:
    from mediaedge.cli import build_parser

    return {"settings": settings_table, "commands": lambda: commands(build_parser())}


def render(text: str) -> str:
    """`text` with every generated block filled in; unknown block names are an error."""
    makers = blocks()
    seen: set[str] = set()

    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in makers:
            raise ValueError(f"unknown generated block {name!r}")
        seen.add(name)
        return m.group(1) + "\n" + makers[name]() + "\n" + m.group(4)

    result = _BLOCK.sub(fill, text)
    missing = set(makers) - seen
    if missing:
        raise ValueError(f"no marker for the generated block(s) {', '.join(sorted(missing))}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mediaedge.docgen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not what would be generated")
    parser.add_argument("path", nargs="?", default=str(REFERENCE), help=f"default: {REFERENCE}")
    args = parser.parse_args(argv)
    path = Path(args.path)
    try:
        current = path.read_text(encoding="utf-8")
        wanted = render(current)
    except (OSError, ValueError) as e:
        print(f"docgen: {path}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if current != wanted:
            print(f"docgen: {path} is stale: run python -m mediaedge.docgen", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        path.write_text(wanted, encoding="utf-8")
        print(f"docgen: {path} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
