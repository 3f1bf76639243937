"""`python -m bench`: run the benchmarks, write the JSON results, regenerate docs/BENCHMARKS.md.

    python -m bench --quick                 smoke mode (seconds; CI): every scenario, tiny sizes
    python -m bench --write-docs            the full run (~15 min), then docs/BENCHMARKS.md + docs/img/*.png
    python -m bench docs                    regenerate the docs from bench/results/latest.json only
    python -m bench --only hits,misses      some scenarios
    python -m bench --db-url postgresql://u:p@127.0.0.1:5432/db --db-url mysql://u:p@127.0.0.1:3306/db
                                            database-origin misses on those databases too
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from bench import dbservers, procs, sysinfo

RESULTS_DIR = os.path.join(procs.REPO, "bench", "results")
SCENARIOS = ("hits", "reporting", "large", "misses", "stampede", "zipf", "zipf_live", "memory", "entries", "large_rss",
             "profile", "knobs", "workers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", choices=("run", "docs"), default="run",
                   help="run (default): benchmark; docs: regenerate docs/BENCHMARKS.md from a results file")
    p.add_argument("--quick", action="store_true", help="smoke mode: a few seconds per scenario, tiny sizes")
    p.add_argument("--write-docs", action="store_true", help="after the run, regenerate docs/BENCHMARKS.md + plots")
    p.add_argument("--only", default="", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    p.add_argument("--repeats", type=int, default=0, help="repeats per measurement (default 3; quick 1)")
    p.add_argument("--duration", type=float, default=0, help="seconds per load run (default 4; quick 1)")
    p.add_argument("--db-url", action="append", default=[],
                   help="also measure database-origin misses on this postgresql:// or mysql:// URL (repeatable)")
    p.add_argument("--real-dbs", choices=("auto", "on", "off"), default="auto",
                   help="start throw-away PostgreSQL and MariaDB servers (bench/dbservers.py) for the "
                        "database-origin misses: auto (full runs, when installed), on, off")
    p.add_argument("--zipf-s", type=float, default=0.9, help="Zipf exponent of the hit-ratio catalogue")
    p.add_argument("--zipf-cache", default="40MiB",
                   help="--cache-size of the hit-ratio edge (~4.3 KB of cache per 2 KB object: 40MiB ~ 9.5%% "
                        "of the 100,000-object catalogue)")
    p.add_argument("--zipf-phases", type=int, default=14, help="6-second phases of the hit-ratio run")
    p.add_argument("--zipf-live-n", type=int, default=10_000,
                   help="objects of the live hit-ratio replay (bench/hitratio_live.py; 9.1%% of them cached)")
    p.add_argument("--zipf-live-requests", type=int, default=100_000,
                   help="Zipf requests of the live hit-ratio replay (the first half warms up)")
    p.add_argument("--entry-levels", default="10000,100000,1000000", help="cache sizes for hit latency vs entries")
    p.add_argument("--populate-deadline", type=float, default=900.0,
                   help="bound in seconds on filling caches for the entries scenario (1.11M entries in all: "
                        "about 2 min on a quiet host, 5 on a throttled one)")
    p.add_argument("--entries-cache-dir", default="",
                   help="keep the entries scenario's filled caches here (one DIR/c<entries> per level) and "
                        "reuse them in later runs (filling 1M entries takes minutes); default: the temp workdir")
    p.add_argument("--large-mb", type=int, default=400, help="object size (MiB) of the peak-RSS scenario")
    p.add_argument("--profile-seconds", type=int, default=10, help="py-spy sampling time on the hit path")
    p.add_argument("--wait-quiet", type=float, default=0.0,
                   help="before starting, wait up to this many seconds for other processes to go quiet")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server under test and the load generator to separate CPUs")
    p.add_argument("--noise-limit", type=float, default=0.25,
                   help="a load run during which other processes used more CPU than this (cores) is retried")
    p.add_argument("--retry-budget", type=float, default=240.0,
                   help="seconds the whole run may spend re-running disturbed load runs")
    p.add_argument("--out", default="",
                   help="results JSON (default bench/results/latest.json; --quick: $TMPDIR/mediaedge-bench-quick.json)")
    p.add_argument("--results", default="", help="for `docs`: the results JSON to render")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temp dir (logs, caches) after the run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "docs":
        from bench import report

        path = args.results or os.path.join(RESULTS_DIR, "latest.json")
        with open(path) as f:
            results = json.load(f)
        written = report.write_docs(results, procs.REPO)
        print("\n".join(written))
        _warn_without_plots(written)
        return 0

    from bench.run import Bench, Config

    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    if only and only - set(SCENARIOS):
        print(f"unknown scenario(s): {', '.join(sorted(only - set(SCENARIOS)))}", file=sys.stderr)
        return 2
    cfg = Config(args.quick, args)
    db_servers, db_notes = [], {}
    if args.real_dbs == "on" or (args.real_dbs == "auto" and not args.quick and (not only or "misses" in only)):
        db_servers, db_notes = start_db_servers(required=args.real_dbs == "on")
        cfg.db_urls += [s.url() for s in db_servers]
    quiet = sysinfo.wait_quiet(args.wait_quiet) if args.wait_quiet else None
    bench = Bench(cfg)
    print(f"bench: work dir {bench.workdir}", file=sys.stderr, flush=True)
    try:
        results = bench.run(only)
    finally:
        for srv in db_servers:
            try:
                srv.stop()
            except Exception:  # noqa: BLE001
                pass
    results["skipped"].update(db_notes)
    if quiet is not None:
        results["meta"]["wait_quiet"] = quiet
    results["meta"]["argv"] = sys.argv[1:] if argv is None else list(argv)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    # Smoke runs write outside the tree (CI must not dirty it); full runs next to the docs they feed.
    out = args.out or (os.path.join(tempfile.gettempdir(), "mediaedge-bench-quick.json") if args.quick
                       else os.path.join(RESULTS_DIR, "latest.json"))
    with open(out, "w") as f:
        json.dump(results, f, indent=1, sort_keys=False, default=str)
    print(f"bench: results in {out}", file=sys.stderr)
    if args.write_docs:
        from bench import report

        if bench.artifacts.get("profile_svg"):
            os.makedirs(os.path.join(procs.REPO, "docs", "img"), exist_ok=True)
            shutil.copy(bench.artifacts["profile_svg"], os.path.join(procs.REPO, "docs", "img", "bench-profile-hit.svg"))
        written = report.write_docs(results, procs.REPO)
        for path in written:
            print(f"bench: wrote {path}", file=sys.stderr)
        _warn_without_plots(written)
    print(summary_line(results))
    if not args.keep_workdir:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    return 1 if "setup" in results["errors"] else 0


def _warn_without_plots(written: list[str]) -> None:
    """Without matplotlib the plots are not redrawn and the page leaves their links out (the PNGs
    in docs/img would show another run's numbers): say so rather than drop them silently."""
    if not any(p.endswith(".png") for p in written):
        print("bench: no plots drawn (pip install matplotlib): docs/BENCHMARKS.md links none of "
              "docs/img/bench-*.png", file=sys.stderr)


def start_db_servers(required: bool) -> tuple[list, dict]:
    """Throw-away PostgreSQL and MariaDB (bench/dbservers.py, as the tests start them), when installed."""
    started, notes = [], {}
    for name, cls in (("postgresql", "PostgresServer"), ("mariadb", "MariaDbServer")):
        try:
            print(f"bench: starting a throw-away {name} ...", file=sys.stderr, flush=True)
            started.append(getattr(dbservers, cls)().start())
        except Exception as e:  # noqa: BLE001 - unavailable binaries: skip that database
            if required:
                raise
            notes[name] = f"not started: {type(e).__name__}: {str(e)[:200]}"
    return started, notes


def summary_line(results: dict) -> str:
    """One line of headline numbers (what the smoke test checks for)."""
    parts = []
    hits = results["scenarios"].get("hits", {}).get("by_conns", {})
    c16 = hits.get("16", {}).get("contenders", {})
    for name in ("mediaedge", "mitmdump", "ceiling", "nginx", "origin"):
        if name in c16:
            parts.append(f"{name}={c16[name]['median']['rps']} req/s")
    st = results["scenarios"].get("stampede", {}).get("contenders", {}).get("mediaedge")
    if st:
        parts.append(f"stampede upstream fetches={st['upstream_fetches']}")
    errs = results.get("errors", {})
    return "bench: 10KB hits @16: " + ", ".join(parts) + (f"; errors in {sorted(errs)}" if errs else "")
