"""`serve --workers N`: real worker processes on one SO_REUSEPORT port behind one supervisor.

What a user relies on: every worker serves, /stats and /metrics add up exactly over the
workers, a publish reaches every worker before the webhook answers, SIGTERM leaves no
process behind, a worker that dies is restarted (and said so), and `--workers 1` is the
one process it always was.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
import requests

from mediaedge.config import load_settings, parse_workers
from mediaedge.stats import Stats, merge_states
from mediaedge.webhook import signed_headers
from mediaedge.workers import restart_delay
from tests.edge import Edge, Route, Upstream, wait_until

SECRET = "s3cret-for-worker-tests"
BODY = b"x" * 3000


# --------------------------------------------------------------------- pure parts
def _stats(records: list[tuple[str, str | None, int, str]], started: float) -> Stats:
    now = [started]
    stats = Stats(clock=lambda: now[0], prefixes=("/media/", "/media/a/"))
    now[0] = 1000.0  # both workers sample at the same moment
    for result, source, size, path in records:
        stats.record(result=result, source=source, body_bytes=size, duration=0.002, path=path)
    stats.origin_fetch("db", "ok")
    stats.coalesced()
    stats.invalidation("purge", 2)
    stats.sample()
    return stats


def test_merged_counters_are_the_exact_sum_of_every_workers() -> None:
    one = _stats([("hit", "cache", 10, "/media/a/x.jpg"), ("miss", "db", 5, "/media/y.jpg")], 1000.0)
    two = _stats([("hit", "cache", 7, "/media/y.jpg"), ("miss", "db", 5, "/media/y.jpg"),
                  ("error", None, 0, "/media/z.jpg")], 990.0)
    merged = Stats.from_state(merge_states([one.state(), two.state()]), prefixes=("/media/", "/media/a/"),
                              clock=lambda: 1000.0)
    snap = merged.snapshot(entries=3, cache_bytes=30, cache_size=100)
    a = one.snapshot(entries=0, cache_bytes=0, cache_size=0)
    b = two.snapshot(entries=0, cache_bytes=0, cache_size=0)
    for key in ("requests", "hits", "misses", "errors", "coalesced", "invalidations"):
        assert snap[key] == a[key] + b[key], key
    assert snap["bytes_served"] == {"cache": 17, "upstream": 0, "db": 10}
    assert snap["origin_fetches"] == {"upstream": 0, "db": 2}
    assert snap["prefixes"]["/media/a/"]["requests"] == 1
    assert snap["top_missed"] == [{"path": "/media/y.jpg", "count": 2}]
    assert snap["since"] == b["since"]  # the earliest
    histogram = merged.duration_histogram()
    assert histogram["hit"][1] == 2 and histogram["miss"][1] == 2
    assert merged.history()[-1]["requests"] == 5  # both workers sampled in the same slot


def test_merging_nothing_is_zero() -> None:
    assert Stats.from_state(merge_states([])).snapshot(entries=0, cache_bytes=0, cache_size=0)["requests"] == 0


def test_workers_setting_takes_a_count_or_auto() -> None:
    assert parse_workers("auto") == (os.cpu_count() or 1)
    assert parse_workers("3") == 3 and parse_workers(2) == 2
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError):
            parse_workers(bad)
    assert load_settings({}, {}, config_path=None).workers == 1  # the default: one process, as before
    assert load_settings({}, {"MEDIAEDGE_WORKERS": "auto"}, config_path=None).workers == (os.cpu_count() or 1)


def test_a_worker_dying_at_start_again_and_again_backs_off() -> None:
    assert restart_delay(1) == 0.0  # a crash after running a while: back at once
    assert 0 < restart_delay(2) < restart_delay(3) < restart_delay(5)
    assert restart_delay(50) == 30.0


# --------------------------------------------------------------------- real processes
def publish(edge: Edge, events: list[dict]) -> requests.Response:
    raw = json.dumps({"events": events}).encode()
    headers = signed_headers(SECRET, raw, time.time())
    headers["Content-Type"] = "application/json"
    return requests.post(edge.admin + "/publish", data=raw, headers=headers, timeout=30)


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def spread(edge: Edge, path: str, want: int, *, most: int = 400) -> dict[str, int]:
    """Requests on new connections until every worker served one (the kernel spreads
    connections by their addresses); returns requests per worker pid."""
    for _ in range(most):
        r = edge.get(path)
        assert r.status_code == 200 and r.content == BODY
        per = edge.stats()["worker_requests"]
        if len(per) == want and all(per.values()):
            return dict(per)
    raise AssertionError(f"not every worker served within {most} requests: {edge.stats()['worker_requests']}")


@pytest.fixture
def upstream():
    u = Upstream()
    u.routes["/media/a.jpg"] = Route(body=BODY, headers={"X-Media-Revision": "r1", "Content-Type": "image/jpeg"})
    yield u
    u.close()


@pytest.fixture
def node(tmp_path, upstream):
    e = Edge(str(tmp_path), upstream=upstream.url,
             args=["--workers", "2", "--webhook-secret", SECRET, "--allow-purge-from", "127.0.0.1/32"]).start()
    assert e.proc is not None
    wait_until(lambda: e.stats()["workers"] == 2, 60, 0.1, "both workers to report")
    yield e
    e.stop()


def test_two_workers_serve_and_the_node_reports_their_exact_sum(node, upstream) -> None:
    assert node.proc is not None
    pids = children(node.proc.pid)
    assert len(pids) == 2
    per = spread(node, "/media/a.jpg", 2)
    assert sorted(per) == sorted(str(p) for p in pids)  # the supervisor's own children serve
    k = 60
    for _ in range(k):
        assert node.get("/media/a.jpg").content == BODY
    stats = node.stats()
    total = sum(per.values()) + k
    assert stats["workers"] == 2
    assert stats["requests"] == total == sum(stats["worker_requests"].values())
    assert stats["hits"] + stats["misses"] == total
    assert sum(stats["bytes_served"].values()) == total * len(BODY)
    assert upstream.hits["/media/a.jpg"] <= 2  # at most one fetch per worker (one cache directory)
    metrics = requests.get(node.admin + "/metrics", timeout=10).text
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith("mediaedge_requests_total{"))
    assert counted == total
    hist = [line for line in metrics.splitlines()
            if line.startswith('mediaedge_request_duration_seconds_count{result="hit"}')]
    assert float(hist[0].rsplit(" ", 1)[1]) == stats["hits"]
    page = requests.get(node.admin + "/", timeout=10)
    assert page.status_code == 200 and "2 workers" in page.text


def test_one_worker_reads_the_cache_database_ahead_for_the_whole_node(node) -> None:
    """The page cache is shared: with N workers the start-up read of cache.db (storage.prewarm)
    is done once, not N times over a database of gigabytes."""
    wait_until(lambda: "cache read-ahead" in node.log(), 30, 0.1, "the read-ahead's log line")
    assert node.log().count("cache read-ahead") == 1, node.log()


def test_a_publish_reaches_every_worker_before_the_webhook_answers(node, upstream) -> None:
    spread(node, "/media/a.jpg", 2)  # both workers hold r1 (their memory tiers too)
    new = b"y" * 3000
    upstream.routes["/media/a.jpg"] = Route(body=new, headers={"X-Media-Revision": "r2", "Content-Type": "image/jpeg"})
    r = publish(node, [{"type": "publish", "path": "/media/a.jpg", "revision": "r2"}])
    assert r.status_code == 200, r.text
    before = node.stats()["worker_requests"]
    for _ in range(60):  # at once after the answer (the log's poll is 1 s), on new connections
        got = node.get("/media/a.jpg")
        assert got.content == new and got.headers["X-Media-Revision"] == "r2"
    after = node.stats()["worker_requests"]
    assert all(after[pid] > before[pid] for pid in before), (before, after)  # both workers answered


@pytest.mark.parametrize("event", [{"type": "purge", "tag": "shoes"}, {"type": "purge", "prefix": "/media/tagged/"}])
def test_a_tag_or_prefix_purge_reaches_every_workers_memory_tier(node, upstream, event) -> None:
    """The first worker to apply the event deletes the entries from the shared directory; the
    others must still drop their in-memory copies, which they can no longer find on disk."""
    path = "/media/tagged/t.jpg"
    old, new = b"o" * 3000, b"n" * 3000
    upstream.routes[path] = Route(body=old, headers={"X-Media-Revision": "t1", "Content-Type": "image/jpeg",
                                                    "Surrogate-Key": "shoes"})
    for _ in range(40):  # new connections: both workers serve it, and hold it in memory from its 2nd request
        assert node.get(path).content == old
    assert all(n >= 3 for n in node.stats()["worker_requests"].values()), node.stats()["worker_requests"]
    upstream.routes[path] = Route(body=new, headers={"X-Media-Revision": "t2", "Content-Type": "image/jpeg",
                                                    "Surrogate-Key": "shoes"})
    r = publish(node, [event])
    assert r.status_code == 200, r.text
    for _ in range(60):
        assert node.get(path).content == new, "a worker served the purged entry"


def test_a_purge_request_reaches_every_worker_before_it_is_answered(node, upstream) -> None:
    spread(node, "/media/a.jpg", 2)
    fetched = upstream.hits["/media/a.jpg"]
    new = b"z" * 3000
    upstream.routes["/media/a.jpg"] = Route(body=new, headers={"X-Media-Revision": "r3", "Content-Type": "image/jpeg"})
    assert requests.request("PURGE", node.url + "/media/a.jpg", timeout=30).status_code == 200
    for _ in range(60):
        assert node.get("/media/a.jpg").content == new
    assert upstream.hits["/media/a.jpg"] - fetched <= 2  # one refetch per worker at most


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_every_worker_and_leaves_no_process(node, sig) -> None:
    assert node.proc is not None
    pids = children(node.proc.pid)
    assert len(pids) == 2 and all(alive(p) for p in pids)
    started = time.monotonic()
    assert node.stop(sig) == 0
    assert time.monotonic() - started < 10
    wait_until(lambda: not any(alive(p) for p in pids), 5, 0.05, "every worker to be gone")


def test_a_killed_worker_is_restarted_with_a_log_line_and_the_node_keeps_serving(node) -> None:
    assert node.proc is not None
    victim, survivor = children(node.proc.pid)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: f"(pid {victim}) exited with signal SIGKILL; restarting" in node.log(), 15, 0.05,
               "the restart log line")
    for _ in range(20):  # the survivor serves meanwhile
        assert node.get("/media/a.jpg").status_code == 200

    def replaced() -> bool:
        now = children(node.proc.pid)  # type: ignore[union-attr]
        return len(now) == 2 and victim not in now and survivor in now and node.stats()["workers"] == 2

    wait_until(replaced, 30, 0.1, "a new worker in place of the killed one")
    assert "worker 0 restarted" in node.log() or "worker 1 restarted" in node.log()
    spread(node, "/media/a.jpg", 2)  # and the new one serves too


def test_one_worker_is_one_process_with_no_supervisor(tmp_path, upstream) -> None:
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--workers", "1"]).start()
    try:
        assert edge.proc is not None
        assert edge.get("/media/a.jpg").content == BODY
        stats = edge.stats()
        assert stats["workers"] == 1 and "worker_requests" not in stats
        assert children(edge.proc.pid) == []  # it serves itself
    finally:
        assert edge.stop() == 0
    assert os.path.exists(os.path.join(edge.cache_dir, "stats.json"))


def test_a_stampede_costs_at_most_one_origin_fetch_per_worker(node, upstream) -> None:
    """The documented bound: coalescing is per worker (docs: README, --workers)."""
    import threading

    upstream.routes["/media/slow.jpg"] = Route(body=BODY, delay=0.5,
                                               headers={"X-Media-Revision": "s1", "Content-Type": "image/jpeg"})
    got: list[bytes] = []

    def one() -> None:
        got.append(node.get("/media/slow.jpg").content)

    threads = [threading.Thread(target=one) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == [BODY] * 24
    assert 1 <= upstream.hits["/media/slow.jpg"] <= 2


def test_a_bad_setting_stops_the_node_with_one_line(tmp_path) -> None:
    edge = Edge(str(tmp_path), args=["--workers", "2"], origin_db="postgresql://u:p@127.0.0.1:1/none")
    with pytest.raises(AssertionError, match="exited 1"):
        edge.start(timeout=60)
    edge.stop()
    errors = [line for line in edge.log().splitlines() if "--origin-db" in line]
    assert len(errors) == 1 and "Traceback" not in edge.log()  # said once, by the first worker


def test_sighup_makes_every_worker_reopen_the_access_log(tmp_path, upstream) -> None:
    log_path = str(tmp_path / "access.log")
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--workers", "2", "--access-log", log_path]).start()
    try:
        wait_until(lambda: edge.stats()["workers"] == 2, 60, 0.1, "both workers to report")
        spread(edge, "/media/a.jpg", 2)
        os.rename(log_path, log_path + ".1")  # logrotate's rename, then HUP
        assert edge.proc is not None
        edge.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: edge.log().count("access log") >= 2, 10, 0.05, "both workers to reopen")
        before = edge.stats()["worker_requests"]
        for _ in range(40):
            assert edge.get("/media/a.jpg").status_code == 200
        after = edge.stats()["worker_requests"]
        assert all(after[p] > before[p] for p in before)  # both workers served after the HUP
        with open(log_path) as f:
            assert len(f.read().splitlines()) == 40  # every line in the new file, none lost
    finally:
        assert edge.stop() == 0


def test_the_node_admin_plane_keeps_its_token_and_readiness(tmp_path, upstream) -> None:
    edge = Edge(str(tmp_path), upstream=upstream.url, args=["--workers", "2", "--admin-token", "tok"]).start()
    try:
        assert requests.get(edge.admin + "/stats", timeout=10).status_code == 401
        auth = {"Authorization": "Bearer tok"}
        wait_until(lambda: requests.get(edge.admin + "/stats", headers=auth, timeout=10).json()["workers"] == 2,
                   60, 0.1, "both workers to report")
        ready = requests.get(edge.admin + "/readyz", headers=auth, timeout=30)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert requests.get(edge.admin + "/healthz", timeout=10).text == "ok\n"
        assert requests.get(edge.admin + "/_worker/state", headers=auth, timeout=10).status_code == 404
    finally:
        assert edge.stop() == 0


def test_workers_do_not_outlive_a_killed_supervisor(node) -> None:
    assert node.proc is not None
    pids = children(node.proc.pid)
    node.kill9()  # no chance to stop them: the kernel tells them (PR_SET_PDEATHSIG)
    wait_until(lambda: not any(alive(p) for p in pids), 15, 0.05, "the orphaned workers to stop")
