"""The benchmark run: start the contenders, run each scenario, collect one JSON document.

Contenders (all on 127.0.0.1, free ports):
  origin     bench/origin.py, the test origin (also measured directly, to show its headroom)
  mediaedge  `python -m mediaedge serve --upstream ORIGIN --origin-db sqlite:///...`
  mitmdump   `mitmdump -q --mode reverse:ORIGIN --set connection_strategy=lazy` (pass-through)
  ceiling    bench/ceiling.py, a bare mitmproxy master answering from memory
  nginx      Debian nginx with proxy_cache (one worker), configured in the run's temp dir

Every scenario interleaves its contenders inside each repeat (rotating the order)
and reports medians over repeats and ratios from the same run. Every load run
records `foreign_cores`: CPU used meanwhile by processes outside the harness.
A scenario that fails is recorded under `errors` and the run goes on.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from bench import client, load, micro, populate, procs, profile, sysinfo
from bench.edge import wait_until
from bench.origin import body_bytes

HOT = "/media/bench/s10240/hot.bin"
MB1 = "/media/bench/s1048576/one-mb.bin"
MB100 = "/media/bench/s104857600/hundred-mb.bin"
GB1 = "/media/bench/s1073741824/one-gb.bin"


class Config:
    def __init__(self, quick: bool, args: Any) -> None:
        self.quick = quick
        self.repeats = args.repeats or (1 if quick else 3)
        # The headline: run-to-run spread on this shared 2-core VM is ±15%, so 5 repeats.
        self.hit_repeats = self.repeats if (quick or args.repeats) else 5
        # Issue 17's flat-latency ratios too: a 4 s run at one connection holds ~40 samples above its p99.
        self.entries_repeats = self.hit_repeats
        self.duration = args.duration or (1 if quick else 4)
        self.conns = [16] if quick else [1, 16, 64]
        self.warmup = 0 if quick else 1
        self.miss_n = 10 if quick else 200
        self.stampede_clients = 20 if quick else 100
        self.zipf_n = 2000 if quick else 100_000
        self.zipf_s = args.zipf_s
        self.zipf_obj = 2048
        self.zipf_cache = "1MiB" if quick else args.zipf_cache
        self.zipf_phases = 2 if quick else args.zipf_phases
        self.zipf_phase_s = 1 if quick else 6
        self.zipf_live_n = 300 if quick else args.zipf_live_n
        self.zipf_live_requests = 2000 if quick else args.zipf_live_requests
        self.conn_hold = 20 if quick else 500
        self.entry_n = 100 if quick else 3000
        self.entry_levels = [1000] if quick else [int(x) for x in args.entry_levels.split(",") if x]
        self.populate_deadline = args.populate_deadline
        self.entries_cache_dir = getattr(args, "entries_cache_dir", "") or ""
        self.large_rss_mb = args.large_mb
        self.profile_s = args.profile_seconds
        self.db_urls = list(args.db_url or [])
        self.noise_limit = args.noise_limit
        self.pin = not args.no_pin
        self.retries = 0 if quick else 2
        self.retry_budget = 0.0 if quick else args.retry_budget


def _median(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def _round_runs(runs: list[dict]) -> list[dict]:
    """The figures of each run kept beside the medians, in order."""
    return [{k: r.get(k) for k in ("rps", "p50_ms", "p99_ms", "disturbed")} for r in runs]


def _agg(runs: list[dict]) -> dict:
    keys = ("rps", "mbps", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "errors", "foreign_cores")
    med = {k: _median([r.get(k) for r in runs]) for k in keys}
    med["disturbed_runs"] = sum(1 for r in runs if r.get("disturbed"))
    return {"median": med, "runs": runs}


class Bench:
    def __init__(self, cfg: Config, workdir: str | None = None, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.workdir = workdir or tempfile.mkdtemp(prefix="mediaedge-bench-")
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.servers: list[procs.Server] = []
        self.results: dict[str, Any] = {"scenarios": {}, "errors": {}, "skipped": {}}
        self.db_path = os.path.join(self.workdir, "origin.db")
        self.db_url = f"sqlite:///{self.db_path}"
        self.nginx_ok = procs.NginxServer.available()
        self.t0 = time.monotonic()
        self.retry_budget = cfg.retry_budget
        self.retries_used = 0
        # CPU pinning: the server under test on one core, the load generator, the origin and this
        # process on another, so the scheduler cannot move them onto one core mid-run.
        self.all_cpus = set(os.sched_getaffinity(0))
        self.server_cpus: set[int] | None = None
        if cfg.pin and len(self.all_cpus) >= 2:
            self.server_cpus = {min(self.all_cpus)}  # CPU 0 measured ~20% faster than CPU 1 for the server here
            load_cpus = self.all_cpus - self.server_cpus
            load.LOAD_CPUS = load_cpus
            os.sched_setaffinity(0, load_cpus)

    def pinned(self, server: procs.Server, where: str = "server") -> procs.Server:
        if self.server_cpus is None:
            return server
        server.cpus = {"server": self.server_cpus, "load": load.LOAD_CPUS, "any": self.all_cpus}[where]
        return server

    # ------------------------------------------------------------------ helpers
    def _start(self, *servers: procs.Server) -> None:
        """Start several servers at once (their start-up overlaps)."""
        errors: list[BaseException] = []

        def go(s: procs.Server) -> None:
            try:
                s.start()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=go, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.servers.extend(servers)
        if errors:
            raise errors[0]

    def stop_all(self) -> None:
        for s in reversed(self.servers):
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                pass
        self.servers.clear()

    def _stop(self, s: procs.Server) -> None:
        s.stop()
        if s in self.servers:
            self.servers.remove(s)

    def load(self, server: procs.Server, path: str, conns: int, duration: float | None = None, *,
             retry: bool = True, **kw: Any) -> dict:
        """One load run; when other processes used more than `noise_limit` cores meanwhile, wait
        (bounded) for a quiet moment and run it again, keeping the least disturbed run. The
        retries share one time budget per benchmark run."""
        best: dict | None = None
        for attempt in range(1 + (self.cfg.retries if retry else 0)):
            with self._others_paused(server), sysinfo.NoiseMonitor() as noise:
                res = load.run_load(server.port, path, conns=conns, duration=duration or self.cfg.duration, **kw)
            res["foreign_cores"] = noise.foreign_cores
            res["attempt"] = attempt + 1
            if best is None or res["foreign_cores"] < best["foreign_cores"]:
                best = res
            if res["foreign_cores"] <= self.cfg.noise_limit or self.retry_budget <= 0:
                break
            t0 = time.monotonic()
            sysinfo.wait_quiet(min(15.0, self.retry_budget), threshold=self.cfg.noise_limit, window=1.0)
            self.retry_budget -= time.monotonic() - t0 + (duration or self.cfg.duration)
            self.retries_used += 1
        assert best is not None
        best["disturbed"] = best["foreign_cores"] > self.cfg.noise_limit
        return best

    @contextlib.contextmanager
    def _others_paused(self, server: procs.Server) -> Iterator[None]:
        """Every other proxy the harness started sleeps (SIGSTOP) through a load run: each
        idle mediaedge polls its invalidation log 10 times a second, and up to eight of them
        sat pinned on the measured core, showing up as p99 of whichever contender ran."""
        others = [s for s in self.servers if s is not server and s.kind in ("mediaedge", "mitmdump", "ceiling")]
        for s in others:
            s.pause()
        try:
            yield
        finally:
            for s in others:
                s.resume()

    def edge(self, name: str, *, upstream: bool = True, db_url: str | None = None, cache: str | None = None,
             cache_size: str = "8GiB", extra: list[str] | None = None, gc_probe: bool = False) -> procs.EdgeServer:
        cache_dir = cache or os.path.join(self.workdir, f"cache-{name}")
        return self.pinned(procs.EdgeServer(self.workdir, upstream=self.origin.url if upstream else None,
                                            origin_db=db_url or self.db_url, cache_dir=cache_dir,
                                            cache_size=cache_size, extra=extra, name=name, gc_probe=gc_probe))

    def scenario(self, name: str, fn: Callable[[], Any]) -> None:
        if self.only and name not in self.only:
            return
        self.log(f"[{time.monotonic() - self.t0:6.1f}s] scenario {name} ...")
        t0 = time.monotonic()
        try:
            out = fn()
            if out is not None:
                out["elapsed_s"] = round(time.monotonic() - t0, 1)
                self.results["scenarios"][name] = out
        except Exception as e:  # noqa: BLE001 - one broken scenario must not lose the others
            self.results["errors"][name] = f"{type(e).__name__}: {e}"
            self.log(traceback.format_exc())
        self.log(f"[{time.monotonic() - self.t0:6.1f}s] scenario {name} done in {time.monotonic() - t0:.1f}s")

    # ------------------------------------------------------------------ set-up
    def _import_db_objects(self) -> dict:
        """Files for the database-origin misses: dbonly/ (edge without upstream) and nf/ (upstream 404s)."""
        src = os.path.join(self.workdir, "import")
        n = self.cfg.miss_n
        body = body_bytes(10240)
        for sub in ("dbonly", "nf"):
            d = os.path.join(src, sub, "s10240")
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                with open(os.path.join(d, f"{i}.bin"), "wb") as f:
                    f.write(body)
        out = {}
        for url in [self.db_url, *self.cfg.db_urls]:
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "mediaedge", "import", src, "--origin-db", url,
                                "--url-prefix", "/media/"], cwd=procs.REPO, capture_output=True, text=True,
                               timeout=600)
            last = (p.stdout.strip().splitlines() or [""])[-1]
            if p.returncode != 0:
                raise RuntimeError(f"mediaedge import into {url.split('://')[0]} failed ({p.returncode}): "
                                   f"{p.stderr.strip()[-500:]} {last}")
            out[url.split("://")[0]] = {"result": last, "seconds": round(time.monotonic() - t0, 1)}
        return out

    def setup(self) -> None:
        cfg = self.cfg
        self.origin = self.pinned(procs.OriginServer(self.workdir), "load")
        self.origin.start()
        self.servers.append(self.origin)
        self.results["import"] = self._import_db_objects()
        self.me = self.edge("mediaedge")
        self.mitm = self.pinned(procs.MitmdumpServer(self.workdir, self.origin.url))
        self.ceiling = self.pinned(procs.CeilingServer(self.workdir))
        starting: list[procs.Server] = [self.me, self.mitm, self.ceiling]
        # Edges of later scenarios start now, together (start-up is mostly importing mitmproxy).
        self.aux: dict[str, procs.EdgeServer] = {}
        want = lambda name: not self.only or name in self.only  # noqa: E731
        if want("reporting"):
            self.aux["accesslog"] = self.edge("mediaedge-accesslog",
                                              extra=["--access-log", os.path.join(self.workdir, "access.log")])
        if want("misses"):
            self.aux["db-sqlite"] = self.edge("mediaedge-db-sqlite", upstream=False)
            for url in cfg.db_urls:
                scheme = url.split("://")[0]
                self.aux[f"db-{scheme}"] = self.edge(f"mediaedge-db-{scheme}", upstream=False, db_url=url)
        if want("large"):  # the streamed path (before zero-copy), in the same run
            self.aux["streamed"] = self.edge("mediaedge-streamed", extra=["--sendfile-min-size", "off"])
        if want("zipf"):
            self.aux["zipf"] = self.edge("mediaedge-zipf", cache_size=cfg.zipf_cache)
        if want("memory"):
            self.aux["entries"] = self.edge("mediaedge-entries")
        if want("knobs") and not cfg.quick:
            self.aux["fresh"] = self.edge("mediaedge-fresh")
            self.aux["optimized"] = self.edge("mediaedge-O")
            self.aux["optimized"].extra_env["PYTHONOPTIMIZE"] = "1"
            self.ceiling_opt = self.pinned(procs.CeilingServer(self.workdir, name="ceiling-O"))
            self.ceiling_opt.extra_env["PYTHONOPTIMIZE"] = "1"
            starting.append(self.ceiling_opt)
        starting += list(self.aux.values())
        self.nginx: procs.NginxServer | None = None
        if self.nginx_ok:
            self.nginx = self.pinned(procs.NginxServer(self.workdir, self.origin.port))
            starting.append(self.nginx)
        else:
            self.results["skipped"]["nginx"] = "nginx not installed (apt-get install nginx)"
        t0 = time.monotonic()
        if self.nginx:
            with open(self.nginx.conf) as f:
                self.results["meta"]["nginx_conf"] = f.read().replace(self.workdir, "$WORKDIR")
        self._start(*starting)
        self.results["startup_s"] = round(time.monotonic() - t0, 2)
        # Prime the hot objects (a miss each, so every cache holds them).
        for s in self.hit_contenders():
            for path in ([HOT] if cfg.quick else [HOT, MB1, MB100]):
                if s.kind in ("ceiling",) and path != HOT:
                    continue
                st, h, b = procs.http_get(s.port, path, timeout=120)
                if st != 200:
                    raise RuntimeError(f"priming {path} on {s.name}: status {st}")
        st, h, _ = procs.http_get(self.me.port, HOT)
        self.results["hot_cache_status"] = {"mediaedge": h.get("cache-status"),
                                            "nginx": procs.http_get(self.nginx.port, HOT)[1].get("cache-status")
                                            if self.nginx else None}

    def hit_contenders(self) -> list[procs.Server]:
        out: list[procs.Server] = [self.me, self.mitm, self.ceiling]
        if self.nginx:
            out.append(self.nginx)
        return out

    # ------------------------------------------------------------------ scenarios
    def s_hits(self) -> dict:
        cfg = self.cfg
        contenders = [*self.hit_contenders(), self.origin]
        if cfg.warmup:
            for s in contenders:
                self.load(s, HOT, 16, duration=cfg.warmup)
        table: dict[str, dict[str, list[dict]]] = {str(c): {s.name: [] for s in contenders} for c in cfg.conns}
        for rep in range(cfg.hit_repeats):
            order = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
            for c in cfg.conns:
                for s in order:
                    r = self.load(s, HOT, c)
                    r["repeat"] = rep
                    table[str(c)][s.name].append(r)
        out: dict[str, Any] = {"path": HOT, "body_bytes": 10240, "by_conns": {}}
        for c, per in table.items():
            agg = {name: _agg(runs) for name, runs in per.items()}
            me = agg["mediaedge"]["median"]["rps"] or 0
            ratios = {}
            for other in agg:
                o = agg[other]["median"]["rps"]
                if other != "mediaedge" and o:
                    ratios[f"mediaedge/{other}"] = round(me / o, 3)
            # per-repeat ratios (same repeat, adjacent runs) and their median
            per_rep = {}
            for other in agg:
                if other == "mediaedge":
                    continue
                rs = [a["rps"] / b["rps"] for a, b in zip(per["mediaedge"], per[other]) if b["rps"]]
                per_rep[f"mediaedge/{other}"] = round(statistics.median(rs), 3) if rs else None
            out["by_conns"][c] = {"contenders": agg, "ratios_of_medians": ratios, "median_of_ratios": per_rep}
        st = self.me.stats()
        out["mediaedge_stats"] = {k: st.get(k) for k in ("requests", "hits", "misses", "errors", "hit_ratio")}
        return out

    def s_reporting(self) -> dict:
        cfg = self.cfg
        logged = self.aux["accesslog"]
        try:
            procs.http_get(logged.port, HOT)
            runs: dict[str, list[dict]] = {"mediaedge": [], "mediaedge --access-log FILE": []}
            pair = [(self.me, "mediaedge"), (logged, "mediaedge --access-log FILE")]
            if cfg.warmup:
                for s, _ in pair:
                    self.load(s, HOT, 16, duration=cfg.warmup)
            for rep in range(cfg.repeats):
                for s, label in (pair if rep % 2 == 0 else pair[::-1]):
                    runs[label].append(self.load(s, HOT, 16))
            agg = {k: _agg(v) for k, v in runs.items()}
            a = agg["mediaedge"]["median"]["rps"]
            b = agg["mediaedge --access-log FILE"]["median"]["rps"]
            log_lines = sum(1 for _ in open(os.path.join(self.workdir, "access.log"), "rb"))
        finally:
            self._stop(logged)
        m = micro.run(scale=0.05 if cfg.quick else 1.0)
        per_req_us = 1e6 / a if a else None
        rec = m.get("Stats.record (counters, histogram)")
        line = m.get("format_access_line (--access-log)")
        return {
            "conns": 16, "contenders": agg,
            "access_log_cost_pct": round((a - b) / a * 100, 1) if a and b else None,
            "access_log_lines": log_lines,
            "stats_record_us": rec, "access_line_format_us": line,
            "per_request_us_at_median": round(per_req_us, 1) if per_req_us else None,
            "stats_record_share_pct": round(rec / per_req_us * 100, 2) if rec and per_req_us else None,
        }

    def s_large(self) -> dict:
        cfg = self.cfg
        contenders = ([self.me] + ([self.aux["streamed"]] if "streamed" in self.aux else [])
                      + [self.mitm, self.origin] + ([self.nginx] if self.nginx else []))
        out: dict[str, Any] = {"note": "mitmdump runs with stream_large_bodies=1m (else it buffers whole bodies); "
                                       "mediaedge-streamed is mediaedge with --sendfile-min-size off (the path "
                                       "before zero-copy)"
                                       + ("" if cfg.quick else "; 1 GB hits on one connection, each contender "
                                          "primed by a streaming read")}
        sizes = [("1MB", MB1, 4, cfg.duration), ("100MB", MB100, 2, max(cfg.duration, 6))]
        if not cfg.quick:
            # 1 GB: one connection, long enough for two whole bodies at the slowest contender's
            # ~200 MB/s. Caches are primed with a streaming read (1 MiB pieces: the harness never holds
            # the body), then a one-byte range must be a hit: 1 GiB is exactly --max-object-size at
            # --cache-size 8GiB, and a pass-through measured as a hit would be a wrong number.
            try:
                for s in contenders:
                    if s.kind not in ("mediaedge", "nginx"):
                        continue
                    got = client.stream_get(s.port, GB1, timeout=600)
                    _, h, _ = procs.http_get(s.port, GB1, timeout=60, headers={"Range": "bytes=0-0"})
                    if got["status"] != 200 or got["bytes"] != 1 << 30 or \
                            "hit" not in h.get("cache-status", "").lower():
                        raise RuntimeError(f"priming {GB1} on {s.name}: status {got['status']}, {got['bytes']} "
                                           f"bytes, then Cache-Status {h.get('cache-status')!r}")
                sizes.append(("1GB", GB1, 1, max(cfg.duration, 12)))
            except Exception as e:  # noqa: BLE001 - the smaller sizes are still measured
                out["1GB_skipped"] = f"{type(e).__name__}: {e}"
        for label, path, conns, dur in sizes:
            per: dict[str, list[dict]] = {s.name: [] for s in contenders}
            for rep in range(cfg.repeats):
                order = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
                for s in order:
                    per[s.name].append(self.load(s, path, conns, duration=dur, timeout_s=60))
            agg = {k: _agg(v) for k, v in per.items()}
            me = agg["mediaedge"]["median"]["mbps"] or 0
            ratios = {f"mediaedge/{k}": round(me / v["median"]["mbps"], 3) for k, v in agg.items()
                      if k != "mediaedge" and v["median"]["mbps"]}
            ng = agg.get("nginx", {}).get("median", {}).get("mbps")
            vs_nginx = {k: round((v["median"]["mbps"] or 0) / ng, 3) for k, v in agg.items() if ng}
            out[label] = {"path": path, "conns": conns, "duration_s": dur, "contenders": agg, "ratios": ratios,
                          "vs_nginx": vs_nginx}
        return out

    def s_misses(self) -> dict:
        cfg = self.cfg
        n = cfg.miss_n
        tag = str(int(time.time()))
        edges: list[tuple[procs.EdgeServer, str, str]] = [
            (e, f"mediaedge (db only: {name[3:]})", "/media/dbonly/s10240/{i}.bin")
            for name, e in self.aux.items() if name.startswith("db-")]
        try:
            plan: list[tuple[procs.Server, str, str]] = [
                (self.me, "mediaedge (upstream)", f"/media/miss/s10240/me-{tag}-{{i}}.bin"),
                (self.me, "mediaedge (upstream 404 -> db sqlite)", "/media/nf/s10240/{i}.bin"),
                *[(e, label, tmpl) for e, label, tmpl in edges],
                (self.mitm, "mitmdump pass-through", f"/media/miss/s10240/mitm-{tag}-{{i}}.bin"),
                (self.origin, "origin direct", f"/media/miss/s10240/origin-{tag}-{{i}}.bin"),
            ]
            if self.nginx:
                plan.append((self.nginx, "nginx proxy_cache", f"/media/miss/s10240/ngx-{tag}-{{i}}.bin"))
            rounds = 1 if cfg.quick else 4
            per_round = n // rounds
            raw: dict[str, list[dict]] = {label: [] for _, label, _ in plan}
            conns: dict[str, int] = dict.fromkeys(raw, 0)
            for r in range(rounds):
                for server, label, tmpl in plan:
                    paths = [tmpl.format(i=i) for i in range(r * per_round, (r + 1) * per_round)]
                    c0 = self.origin.connections()
                    raw[label].append(client.sequential(server.port, paths))
                    conns[label] += self.origin.connections() - c0 - 1  # minus the /__total query itself
            # Hits with the same client (same overhead) for the hit/miss comparison.
            hits = {s.name: client.sequential(s.port, [HOT] * (50 if cfg.quick else 500))
                    for s in self.hit_contenders()}
        finally:
            for e, _, _ in edges:
                self._stop(e)
        out: dict[str, Any] = {"n_per_contender": per_round * rounds, "object_bytes": 10240,
                               "client": "python http.client, one keep-alive connection, sequential",
                               "misses": {}, "hits_same_client": hits}
        for label, parts in raw.items():
            lat_merged = {"statuses": {}, "cache_status": {}}
            for p in parts:
                for k in ("statuses", "cache_status"):
                    for kk, vv in p[k].items():
                        lat_merged[k][str(kk)] = lat_merged[k].get(str(kk), 0) + vv
            out["misses"][label] = {
                "p50_ms": _median([p["p50_ms"] for p in parts]),
                "p90_ms": _median([p["p90_ms"] for p in parts]),
                "p99_ms": _median([p["p99_ms"] for p in parts]),
                "mean_ms": _median([p["mean_ms"] for p in parts]),
                "origin_connections_opened": conns[label],
                **lat_merged,
            }
        return out

    def s_stampede(self) -> dict:
        cfg = self.cfg
        tag = str(int(time.time() * 1000))
        out: dict[str, Any] = {"clients": cfg.stampede_clients, "object": "1 MiB, origin waits 200 ms before the head",
                               "contenders": {}}
        contenders: list[procs.Server] = [self.me, self.mitm] + ([self.nginx] if self.nginx else [])
        for s in contenders:
            path = f"/media/stampede/d200/s1048576/{s.name}-{tag}.bin"
            before = self.origin.counts("/media/stampede/").get(path, 0)
            res = client.stampede(s.port, path, clients=cfg.stampede_clients)
            time.sleep(0.3)
            res["upstream_fetches"] = self.origin.counts("/media/stampede/").get(path, 0) - before
            out["contenders"][s.name] = res
        return out

    def s_zipf(self) -> dict:
        cfg = self.cfg
        e = self.aux["zipf"]
        tmpl = f"/media/z/s{cfg.zipf_obj}/%d.bin"
        phases = []
        try:
            prev = e.stats()
            total_req = 0
            for ph in range(cfg.zipf_phases):
                r = self.load(e, "/", 8, duration=cfg.zipf_phase_s, mode="zipf", n=cfg.zipf_n, s=cfg.zipf_s,
                              template=tmpl, seed=ph + 1, retry=False)
                st = e.stats()
                d_req = st["requests"] - prev["requests"]
                d_hit = st["hits"] + st["stale"] - prev["hits"] - prev["stale"]
                total_req += d_req
                phases.append({"phase": ph, "requests": d_req, "cumulative_requests": total_req,
                               "hit_ratio": round(d_hit / d_req, 4) if d_req else None,
                               "rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                               "entries": st.get("entries"), "cache_bytes": st.get("cache_bytes"),
                               "errors": r["errors"], "foreign_cores": r["foreign_cores"]})
                prev = st
            final = e.stats()
            rss = e.rss_kib()
        finally:
            self._stop(e)
        capacity = max(p["entries"] or 0 for p in phases)
        sim = simulate_zipf(cfg.zipf_n, cfg.zipf_s, capacity, max(total_req, 50_000 if not cfg.quick else 5000))
        curve = []
        for frac in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
            c = int(cfg.zipf_n * frac)
            curve.append({"cache_fraction": frac, "entries": c,
                          **simulate_zipf(cfg.zipf_n, cfg.zipf_s, c, 200_000 if not cfg.quick else 5000)})
        # Every policy on the same traces at the same capacity, in this run (bench/hitratio.py).
        from bench import hitratio

        # At the nominal capacity (what --zipf-cache 40MiB holds when full), not the live run's:
        # a disturbed run may not fill its cache, and the policies' numbers need no live edge.
        policies = hitratio.measure(cfg.zipf_n, cfg.zipf_s, hitratio.NOMINAL_FRACTION,
                                    20_000 if cfg.quick else 1_000_000, cfg.zipf_obj, seed=5)
        policies["memory"] = hitratio.sketch_memory(10_000 if cfg.quick else 1_000_000, 2_000 if cfg.quick else 200_000)
        return {"catalogue": cfg.zipf_n, "object_bytes": cfg.zipf_obj, "zipf_s": cfg.zipf_s, "policies": policies,
                "eviction": "tinylfu",  # the live edge's policy (results before it: least-recently-stored)
                "cache_size": cfg.zipf_cache, "entries_held": capacity,
                "entries_fraction": round(capacity / cfg.zipf_n, 4), "conns": 8, "phases": phases,
                "final_hit_ratio": final.get("hit_ratio"), "final_stats": {k: final.get(k) for k in
                                                                           ("requests", "hits", "misses", "errors",
                                                                            "entries", "cache_bytes")},
                "simulated_at_capacity": sim, "simulated_curve": curve, "rss_kib": rss}

    def s_zipf_live(self) -> dict:
        """The live edge's hit ratio on bench/hitratio.py's seeded traces, count-bounded, with
        the simulated policies and the ideal on the same traces at the capacity it held."""
        from bench import hitratio, hitratio_live

        cfg = self.cfg
        with self._others_paused(self.origin):
            live = hitratio_live.measure(cfg.zipf_live_n, cfg.zipf_s, hitratio.NOMINAL_FRACTION,
                                         cfg.zipf_live_requests, hitratio_live.OBJECT_BYTES, seed=5,
                                         workdir=self.workdir, log=self.log, origin=self.origin, pin=self.pinned)
        return live

    def s_memory(self) -> dict:
        cfg = self.cfg
        out: dict[str, Any] = {"per_connection": {}, "per_entry": {}}
        for s in self.hit_contenders():
            procs.http_get(s.port, HOT)
            # One open/close cycle first, so allocator pools and lazily built state already exist.
            client.HeldConnections(s.port, HOT, cfg.conn_hold).open().close()
            time.sleep(0.1 if cfg.quick else 0.5)
            before = s.rss_kib()
            held = client.HeldConnections(s.port, HOT, cfg.conn_hold).open()
            time.sleep(0.1 if cfg.quick else 0.5)
            after = s.rss_kib()
            n = len(held.socks)
            held.close()
            out["per_connection"][s.name] = {"connections": n, "failed": held.failed, "rss_before_kib": before,
                                             "rss_after_kib": after,
                                             "kib_per_connection": round((after - before) / n, 2) if n else None}
        # per entry: N distinct 10 KB objects through a fresh edge (and nginx), then hit them all
        e = self.aux["entries"]
        try:
            tag = str(int(time.time()))
            paths = [f"/media/entries/s10240/{tag}-{i}.bin" for i in range(cfg.entry_n)]
            procs.http_get(e.port, HOT)
            time.sleep(0.3)
            r0 = e.rss_kib()
            mem0 = e.mem()
            du0 = procs.du_bytes(e.cache_dir)
            client.sequential(e.port, paths)
            r1 = e.rss_kib()
            client.sequential(e.port, paths)
            r2 = e.rss_kib()
            mem2 = e.mem()
            du1 = procs.du_bytes(e.cache_dir)
            st = e.stats()
        finally:
            self._stop(e)
        n = cfg.entry_n
        out["per_entry"]["mediaedge"] = {
            "entries": n, "object_bytes": 10240, "rss_before_kib": r0, "rss_after_fill_kib": r1,
            "rss_after_hits_kib": r2, "rss_kib_per_entry": round((r2 - r0) / n, 3), "mem_before": mem0,
            "mem_after": mem2, "anon_kib_per_entry": round((mem2["rss_anon_kib"] - mem0["rss_anon_kib"]) / n, 3),
            "file_kib_per_entry": round((mem2["rss_file_kib"] - mem0["rss_file_kib"]) / n, 3),
            "disk_bytes_per_entry": round((du1 - du0) / n), "cache_bytes_reported": st.get("cache_bytes"),
            "note": "RSS growth splits into anonymous memory (the hot in-memory tier, SQLite page caches of "
                    "each worker thread's connection) and file-backed pages (each connection mmaps up to 64 MiB "
                    "of the SQLite file; VmRSS counts every mapping)"}
        if self.nginx:
            tag = str(int(time.time()))
            paths = [f"/media/entries/s10240/ngx-{tag}-{i}.bin" for i in range(n)]
            r0 = self.nginx.rss_kib()
            du0 = self.nginx.cache_bytes()
            client.sequential(self.nginx.port, paths)
            r1 = self.nginx.rss_kib()
            du1 = self.nginx.cache_bytes()
            out["per_entry"]["nginx"] = {"entries": n, "rss_before_kib": r0, "rss_after_kib": r1,
                                         "rss_kib_per_entry": round((r1 - r0) / n, 3),
                                         "disk_bytes_per_entry": round((du1 - du0) / n)}
        return out

    def s_entries(self) -> dict:
        """Random-key hit latency at each cache size (issue 17's flat-latency target).

        Each level has its own cache directory and its own edge, and the levels are
        measured interleaved, round by round, so a host that slows down for a few minutes
        slows every level alike instead of the one measured then: the `× 10k` ratios are
        what this scenario is for."""
        cfg = self.cfg
        size = 1024
        tmpl = f"/media/pop/s{size}/%d.bin"
        filled = self._entries_fill(size)
        on = self._entries_rounds(filled, tmpl, memory=True)
        off = {} if cfg.quick else self._entries_rounds(filled, tmpl, memory=False)
        levels = []
        for level, cache_dir, pop in filled:
            m = on[level]
            levels.append({"target_entries": level, "entries": pop["reached"], "populate": pop,
                           "edge_start_s": m["start_s"],
                           "random_c1": _agg(m["c1"])["median"], "random_c16": _agg(m["c16"])["median"],
                           "hot_c1": _agg(m["hot"])["median"],
                           "disk_c1": _agg(off[level]["c1"])["median"] if level in off else {},
                           # each round's run, for the per-round ratios (bench/report.py `level_ratios`)
                           "random_c1_runs": _round_runs(m["c1"]),
                           "disk_c1_runs": _round_runs(off[level]["c1"]) if level in off else [],
                           "misses_during": m["misses"], "requests_during": m["requests"],
                           "gc_random_c1": m["gc_c1"], "gc_hot_c1": m["gc_hot"],
                           "rss_kib": m["rss_kib"], "mem": m["mem"], "disk_bytes": procs.du_bytes(cache_dir)})
        return {"object_bytes": size, "levels": levels, "interleaved": True,
                "note": "uniform random keys over all entries (worst case for SQLite's page cache); one cache "
                        "directory and one edge per level, the levels measured in interleaved rounds"}

    def _entries_fill(self, size: int) -> list[tuple[int, str, dict]]:
        """One filled cache directory per level, `(level, directory, fill report)`, within
        `--populate-deadline`; a level the deadline cut short is the last one."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.populate_deadline
        filled = []
        for level in cfg.entry_levels:
            method = "commit" if level <= 10_000 else ("set" if level <= 100_000 else "bulk")
            # With --entries-cache-dir a directory filled before is reused and topped up.
            cache_dir = os.path.join(cfg.entries_cache_dir or self.workdir, f"c{level}")
            have = populate.count(cache_dir, size=size) if cfg.entries_cache_dir else 0
            pop = populate.populate(cache_dir, have, level, size=size, size_limit=64 << 30, method=method,
                                    deadline=deadline)
            filled.append((level, cache_dir, pop))
            if pop["reached"] < level:
                break
        return filled

    def _entries_rounds(self, filled: list[tuple[int, str, dict]], tmpl: str, *, memory: bool) -> dict[int, dict]:
        """Start one edge per level (memory tier on, or off: every hit from the disk cache, so
        the levels compare the storage path alone), bring each to its steady state, then run
        rounds: random keys at one connection on every level back to back, always in the
        same order (the runs each round's ratios compare), then with the tier on 16
        connections and one hot key on each. Every other edge sleeps through a run
        (`_others_paused`), and a level waits one round between its runs (32 s at three
        levels), inside the 60 s after which this VM's proactive reclaim pages idle
        memory out."""
        cfg = self.cfg
        edges: list[tuple[int, int, procs.EdgeServer]] = []
        out: dict[int, dict] = {}
        try:
            for level, cache_dir, pop in filled:
                e = self.edge(f"mediaedge-scaling-{level}" + ("" if memory else "-disk"), cache=cache_dir,
                              cache_size="64GiB", gc_probe=memory, extra=None if memory else ["--memory-size", "off"])
                t0 = time.monotonic()
                self._start(e)
                out[level] = {"start_s": round(time.monotonic() - t0, 2), "c1": [], "c16": [], "hot": [],
                              "gc_c1": [], "gc_hot": []}
                edges.append((level, pop["reached"], e))
                if not cfg.quick:  # before the next start, so that each start is timed alone
                    self._settle(e, pop["reached"], tmpl)
            before = {level: e.stats() for level, n, e in edges} if memory else {}
            for rep in range(cfg.entries_repeats):
                for level, n, e in edges:  # the runs the ratios compare, back to back
                    m = out[level]
                    mark = e.gc_mark() if memory else None
                    m["c1"].append(self.load(e, "/", 1, mode="uniform", n=n, template=tmpl, seed=rep + 10))
                    if mark is not None:
                        m["gc_c1"].append(e.gc_pauses(mark))
                if cfg.quick or not memory:
                    continue
                for level, n, e in edges:
                    m = out[level]
                    m["c16"].append(self.load(e, "/", 16, mode="uniform", n=n, template=tmpl, seed=rep + 20))
                    mark = e.gc_mark()
                    m["hot"].append(self.load(e, tmpl % 0, 1))
                    m["gc_hot"].append(e.gc_pauses(mark))
            for level, _, e in edges if memory else []:
                after = e.stats()
                out[level].update(requests=after["requests"] - before[level]["requests"],
                                  misses=after["misses"] - before[level]["misses"],
                                  rss_kib=e.rss_kib(), mem=e.mem())
        finally:
            for _, _, e in edges:
                self._stop(e)
        return out

    def _settle(self, e: procs.Server, n: int, tmpl: str) -> None:
        """Bring a just-started edge to its steady state before its latency is measured:
        its one read-ahead of the hit slab and the cache database finished (logged;
        `CacheStore.prewarm`: 1.3 s for the database at 1M entries), then 3 s of random keys at 4 connections. Measured right
        after a start, the first 4 s run at 1M entries had p99 3.4 ms against ~1.0 ms for
        the following ones; the start itself is reported as `edge start`."""
        wait_until(lambda: "cache read-ahead" in e.log_tail(200_000), timeout=120,
                   what=f"{e.name}'s read-ahead of the cache")
        self.load(e, "/", 4, duration=3, mode="uniform", n=n, template=tmpl)

    def s_large_rss(self) -> dict:
        size = self.cfg.large_rss_mb << 20
        path = f"/media/large/s{size}/big-{int(time.time())}.bin"
        e = self.edge("mediaedge-large", cache_size="8GiB")
        self._start(e)
        try:
            idle = e.rss_kib()
            miss = client.stream_get(e.port, path)
            miss["peak_rss_kib"] = e.peak_rss_kib()
            e.stop()
            e.start()
            idle2 = e.rss_kib()
            hit = client.stream_get(e.port, path)
            hit["peak_rss_kib"] = e.peak_rss_kib()
            ranged = None
        finally:
            self._stop(e)
        return {"object_bytes": size, "idle_rss_kib": idle, "idle_rss_after_restart_kib": idle2,
                "miss": miss, "hit": hit, "ranged": ranged,
                "peak_over_idle_mib": {"miss": round((miss["peak_rss_kib"] - idle) / 1024, 1),
                                       "hit": round((hit["peak_rss_kib"] - idle2) / 1024, 1)}}

    def s_profile(self) -> dict:
        if profile.pyspy() is None:
            self.results["skipped"]["profile"] = "py-spy not installed (pip install py-spy)"
            return None  # type: ignore[return-value]
        secs = self.cfg.profile_s
        rate = 250
        out: dict[str, Any] = {"seconds": secs, "conns": 16, "rate_hz": rate}
        for server in (self.me, self.ceiling):
            raw = os.path.join(self.workdir, f"profile-{server.name}.raw.txt")
            p = profile.record(server.pid, secs + 1, raw, None, rate=rate)
            time.sleep(0.5)
            under = self.load(server, HOT, 16, duration=secs, retry=False)
            p.communicate(timeout=secs + 60)
            summary = profile.summarize(raw)
            # CPU per request: samples are taken only while a thread is busy, `rate` per second.
            busy_s = summary["samples"] / rate
            per_req = busy_s / max(1, under["requests"]) * 1e6 * (secs / (secs + 1))
            out[server.name] = {
                "rps_under_profiler": under["rps"], "foreign_cores": under["foreign_cores"],
                "requests": under["requests"], "summary": summary,
                "cpu_us_per_request": round(per_req, 1),
                "bucket_us_per_request": {b["bucket"]: round(per_req * b["pct"] / 100, 1)
                                          for b in summary["buckets"]},
                "focus": profile_focus(raw),
            }
        svg = os.path.join(self.workdir, "profile-hit.svg")
        p2 = profile.flamegraph(self.me.pid, 5, svg)
        time.sleep(0.5)
        self.load(self.me, HOT, 16, duration=5, retry=False)
        p2.communicate(timeout=60)
        self.artifacts["profile_svg"] = svg if os.path.exists(svg) else None
        out["micro_us"] = micro.run()
        # Back-compat keys for the report
        out["rps_under_profiler"] = out["mediaedge"]["rps_under_profiler"]
        out["summary"] = out["mediaedge"]["summary"]
        out["focus"] = out["mediaedge"]["focus"]
        return out

    def s_knobs(self) -> dict:
        """Knobs the lead can turn without code changes, and whether the long-running edge slowed
        down: the main edge (after every earlier scenario) vs a fresh one vs `python -O`
        (PYTHONOPTIMIZE=1: no asserts, and mitmproxy skips an os.environ lookup per task)."""
        cfg = self.cfg
        fresh, opt = self.aux["fresh"], self.aux["optimized"]
        contenders: list[tuple[procs.Server, str]] = [
            (self.me, "mediaedge (main edge, after all earlier scenarios)"),
            (fresh, "mediaedge (fresh process)"), (opt, "mediaedge, PYTHONOPTIMIZE=1"),
            (self.ceiling, "ceiling"), (self.ceiling_opt, "ceiling, PYTHONOPTIMIZE=1")]
        for s, _ in contenders:
            procs.http_get(s.port, HOT)
            if cfg.warmup:
                self.load(s, HOT, 16, duration=cfg.warmup, retry=False)
        per: dict[str, list[dict]] = {label: [] for _, label in contenders}
        for rep in range(cfg.repeats):
            order = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
            for s, label in order:
                per[label].append(self.load(s, HOT, 16))
        agg = {k: _agg(v) for k, v in per.items()}
        out: dict[str, Any] = {"conns": 16, "contenders": agg}
        main = agg["mediaedge (main edge, after all earlier scenarios)"]["median"]["rps"]
        fr = agg["mediaedge (fresh process)"]["median"]["rps"]
        op = agg["mediaedge, PYTHONOPTIMIZE=1"]["median"]["rps"]
        out["fresh_vs_main"] = round(fr / main, 3) if fr and main else None
        out["optimized_vs_fresh"] = round(op / fr, 3) if op and fr else None
        out["main_edge_stats"] = {k: self.me.stats().get(k) for k in ("requests", "entries", "cache_bytes")}
        out["main_edge_mem"] = self.me.mem()
        out["fresh_edge_mem"] = fresh.mem()
        return out

    def s_workers(self) -> dict:
        """`serve --workers 1` vs `--workers 2` (one node: one port, one cache directory, one
        supervisor) at 16 connections, with nginx 1 vs 2 workers in the same run as what this
        box allows. Nothing pinned: the workers and wrk share every core, as nginx does."""
        cfg = self.cfg
        one = self.pinned(self.edge("mediaedge-workers1", extra=["--workers", "1"]), "any")
        two = self.pinned(self.edge("mediaedge-workers2", extra=["--workers", "2"]), "any")
        contenders: list[procs.Server] = [one, two]
        if self.nginx_ok:
            for n in (1, 2):
                nginx = self.pinned(procs.NginxServer(self.workdir, self.origin.port, workers=n), "any")
                nginx.name = f"nginx-{n}w"
                contenders.append(nginx)
        self._start(*contenders)
        try:
            for s in contenders:
                st, _, _ = procs.http_get(s.port, HOT)
                if st != 200:
                    raise RuntimeError(f"priming {HOT} on {s.name}: status {st}")
                if cfg.warmup:
                    self.load(s, HOT, 16, duration=cfg.warmup, retry=False, cpus=self.all_cpus)
            per: dict[str, list[dict]] = {s.name: [] for s in contenders}
            for rep in range(cfg.repeats):
                order = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
                for s in order:
                    per[s.name].append(self.load(s, HOT, 16, cpus=self.all_cpus))
            spread = two.stats().get("worker_requests")
        finally:
            for s in contenders:
                self._stop(s)
        agg = {k: _agg(v) for k, v in per.items()}

        def gain(a: str, b: str) -> float | None:
            x = agg.get(a, {}).get("median", {}).get("rps")
            y = agg.get(b, {}).get("median", {}).get("rps")
            return round(y / x, 3) if x and y else None

        return {"note": "`mediaedge serve --workers 1` vs `--workers 2` (one port, one --cache-dir) and nginx "
                        "`worker_processes 1` vs `2`, each driven by wrk at 16 connections; nothing pinned, "
                        "2 cores shared with wrk",
                "conns": 16, "contenders": agg, "mediaedge_gain": gain("mediaedge-workers1", "mediaedge-workers2"),
                "nginx_gain": gain("nginx-1w", "nginx-2w"), "worker_requests": spread}

    # ------------------------------------------------------------------ run
    def run(self, only: set[str] | None = None) -> dict:
        self.only = only
        self.artifacts: dict[str, Any] = {}
        cfg = self.cfg
        t_start = time.time()
        self.results["meta"] = {
            "machine": sysinfo.machine(), "quick": cfg.quick, "repeats": cfg.repeats,
            "hit_repeats": cfg.hit_repeats, "duration_s": cfg.duration,
            "load_tool": load.tool_name(), "code": _code_version(),
            "pinning": {"server_cpus": sorted(self.server_cpus) if self.server_cpus else None,
                        "load_cpus": sorted(load.LOAD_CPUS) if load.LOAD_CPUS else None}, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
            "commands": {
                "mediaedge": "python -m mediaedge serve --listen 127.0.0.1:P --admin-listen 127.0.0.1:Q "
                             "--cache-dir DIR --origin-db sqlite:///DIR/origin.db --cache-size 8GiB "
                             "--upstream http://127.0.0.1:ORIGIN",
                "mitmdump": "mitmdump -q --mode reverse:http://127.0.0.1:ORIGIN@127.0.0.1:P "
                            "--set connection_strategy=lazy --set stream_large_bodies=1m",
                "ceiling": "python -m bench.ceiling --port P --size 10240",
                "nginx": "nginx -p TMP -e TMP/error.log -c TMP/nginx.conf -g 'daemon off;'",
                "origin": "python -m bench.origin --port ORIGIN",
                "wrk": "wrk -t1 -c C -d Ds --timeout 10s -s bench/lua/bench.lua http://127.0.0.1:P/PATH",
            },
        }
        try:
            self.setup()
            self.scenario("hits", self.s_hits)
            self.scenario("reporting", self.s_reporting)
            if not cfg.quick:
                self.scenario("large", self.s_large)
            self.scenario("misses", self.s_misses)
            self.scenario("stampede", self.s_stampede)
            self.scenario("zipf", self.s_zipf)
            self.scenario("zipf_live", self.s_zipf_live)
            self.scenario("memory", self.s_memory)
            self.scenario("entries", self.s_entries)
            if not cfg.quick:
                self.scenario("large_rss", self.s_large_rss)
                self.scenario("profile", self.s_profile)
                self.scenario("knobs", self.s_knobs)
                self.scenario("workers", self.s_workers)
        except Exception as e:  # noqa: BLE001 - set-up failed: record it, the run is still reported
            self.results["errors"]["setup"] = f"{type(e).__name__}: {e}"
            self.log(traceback.format_exc())
        finally:
            self.results["logs"] = {f"{s.name} (exited {s.proc.returncode})": s.log_tail(1500)
                                    for s in self.servers if s.proc is not None and s.proc.poll() is not None}
            self.stop_all()
        self.results["meta"]["elapsed_s"] = round(time.time() - t_start, 1)
        self.results["meta"]["noise"] = {"limit_cores": cfg.noise_limit, "retries_used": self.retries_used,
                                         "retry_budget_left_s": round(self.retry_budget, 1)}
        self.results["meta"]["loadavg_at_end"] = os.getloadavg()
        return self.results


def _code_version() -> dict:
    """The commit measured, and whether proxy/ or addons/ had uncommitted changes."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=procs.REPO, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "uncommitted": [l[3:] for l in git("status", "--porcelain", "--", "proxy", "addons").splitlines()]}


def profile_focus(raw: str) -> dict:
    """Inclusive share of a few named functions on the hit path (from py-spy raw stacks)."""
    names = {
        "Shell.request (addon hook, whole)": "Shell.request (proxy/shell.py",
        "Engine.handle": "Engine.handle (proxy/engine.py",
        "Engine._lookup (worker thread)": "Engine._lookup (proxy/engine.py",
        "CacheStore.get_pointer": "CacheStore.get_pointer (proxy/storage.py",
        "CacheStore.open_entry": "CacheStore.open_entry (proxy/storage.py",
        "sha256 check (open_entry)": "hashlib",
        "EntryMeta.from_json": "EntryMeta.from_json",
        "Engine._state_of (freshness)": "Engine._state_of",
        "plan_response": "plan_response (proxy/respond.py",
        "Shell._apply (Response.make)": "Shell._apply",
        "Shell._record (stats)": "Shell._record",
        "AddonManager.trigger_event (hook dispatch)": "AddonManager.trigger_event",
        "AddonManager.handle_lifecycle": "AddonManager.handle_lifecycle",
        "mitmproxy HTTP/1 server layer": "mitmproxy/proxy/layers/http/_http1.py",
        "to_thread machinery (main thread side)": "asyncio/threads.py",
        "ThreadPool work items (any thread)": "_WorkItem.run (concurrent/futures/thread.py",
        "uuid4 (flow ids)": "uuid4 (uuid.py",
        "socket writes": "_SelectorSocketTransport.write",
        "epoll wait": "EpollSelector.select",
    }
    counts = dict.fromkeys(names, 0)
    total = 0
    with open(raw, errors="replace") as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            try:
                c = int(n)
            except ValueError:
                continue
            if stack.rsplit(";", 1)[-1].startswith("_worker (concurrent/futures/thread.py"):
                continue  # an idle pool thread (see profile.summarize)
            total += c
            for label, needle in names.items():
                if needle in stack:
                    counts[label] += c
    return {k: round(100 * v / total, 1) if total else 0 for k, v in counts.items()}


def simulate_zipf(n: int, s: float, capacity: int, requests: int, seed: int = 5) -> dict:
    """Hit ratio of FIFO (least-recently-stored, what mediaedge evicts by) and LRU caches of
    `capacity` objects, and of a perfect static cache of the `capacity` most popular objects."""
    import bisect
    import random
    from collections import OrderedDict

    cdf = load.zipf_cdf(n, s)
    ideal = cdf[capacity - 1] if capacity > 0 else 0.0
    rng = random.Random(seed)
    seq = [min(n - 1, bisect.bisect_left(cdf, rng.random())) for _ in range(requests)]
    warm = len(seq) // 2
    res = {}
    for policy in ("fifo", "lru"):
        cache: OrderedDict[int, None] = OrderedDict()
        hits = counted = 0
        for i, k in enumerate(seq):
            hit = k in cache
            if hit and policy == "lru":
                cache.move_to_end(k)
            if not hit and capacity > 0:
                cache[k] = None
                if len(cache) > capacity:
                    cache.popitem(last=False)
            if i >= warm:
                counted += 1
                hits += hit
        res[f"{policy}_hit_ratio"] = round(hits / counted, 4) if counted else None
    res["ideal_static_hit_ratio"] = round(ideal, 4)
    res["requests_simulated"] = requests
    return res
