"""--access-log-format json and --log-level, through a real edge."""
from __future__ import annotations

import json
import re
import signal

import pytest

from mediaedge.errors import ConfigError
from mediaedge.accesslog import format_access_json, iso_time
from mediaedge.config import load_settings
from tests.edge import Edge, Route, Upstream, wait_until

BODY = b"j" * 3000
FIELDS = ["time", "client", "method", "target", "status", "bytes", "duration_ms", "cache_status", "revision"]


def lines(path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


# --- pure ---------------------------------------------------------------------

@pytest.mark.parametrize("now, text", [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (1735812245.12, "2025-01-02T10:04:05.120Z"),
    (1735812245.9999, "2025-01-02T10:04:05.999Z"),
])
def test_iso_time(now, text):
    assert iso_time(now) == text


def test_json_line_is_one_line_of_ascii_with_the_contract_fields():
    line = format_access_json(client="::1", method="GET", target='/media/"a"\n\u2028é.jpg', status=200,
                              body_bytes=5, cache_status="mediaedge; hit", revision=None, duration=0.0012345,
                              now=1735812245.12)
    assert line.isascii() and "\n" not in line and "\u2028" not in line
    record = json.loads(line)
    assert list(record) == FIELDS
    assert record["target"] == '/media/"a"\n\u2028é.jpg'
    assert record["duration_ms"] == 1.234 and record["revision"] is None
    denied = json.loads(format_access_json(client="c", method="GET", target="/t", status=403, body_bytes=0,
                                           cache_status=None, revision=None, duration=0, now=0, denied="signature"))
    assert denied["denied"] == "signature"


@pytest.mark.parametrize("flag, value, error", [
    ("access_log_format", "xml", "--access-log-format: unknown value 'xml' (choose combined, json)"),
    ("log_level", "loud", "--log-level: unknown value 'loud' (choose debug, info, warning, error)"),
])
def test_bad_choices_are_one_line(flag, value, error):
    with pytest.raises(ConfigError) as e:
        load_settings({flag: value}, {}, config_path=None)
    assert str(e.value) == error


def test_choices_from_env_and_case():
    s = load_settings({}, {"MEDIAEDGE_ACCESS_LOG_FORMAT": "JSON", "MEDIAEDGE_LOG_LEVEL": "Debug"}, config_path=None)
    assert (s.access_log_format, s.log_level) == ("json", "debug")
    assert (load_settings({}, {}, config_path=None).access_log_format,
            load_settings({}, {}, config_path=None).log_level) == ("combined", "info")


# --- through a real edge ------------------------------------------------------

def test_json_access_log_of_a_real_edge(tmp_path):
    up = Upstream()
    up.routes["/media/a.jpg"] = Route(body=BODY, headers={"X-Media-Revision": "rev-a"})
    up.routes["/media/gone.jpg"] = Route(status=404, body=b"no")
    log_path = tmp_path / "access.log"
    e = Edge(str(tmp_path), upstream=up.url,
             args=["--access-log", str(log_path), "--access-log-format", "json"]).start()
    try:
        miss = e.get("/media/a.jpg")
        hit = e.get("/media/a.jpg")
        e.get("/media/gone.jpg")
        e.get("/media/a%00b.jpg")
        wait_until(lambda: len(lines(log_path)) >= 4, 10, 0.02, "four access lines")
    finally:
        e.stop()
    records = [json.loads(line) for line in lines(log_path)]
    assert len(records) == 4
    for r in records:
        assert list(r) == FIELDS
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"])
        assert r["client"] == "127.0.0.1" and r["method"] == "GET"
        assert isinstance(r["duration_ms"], float) and r["duration_ms"] >= 0
    first, second, gone, bad = records
    assert (first["target"], first["status"], first["bytes"], first["revision"]) == ("/media/a.jpg", 200, 3000, "rev-a")
    assert first["cache_status"] == miss.headers["Cache-Status"]
    assert "fwd=miss" in first["cache_status"]
    assert (second["status"], second["bytes"], second["revision"]) == (200, 3000, "rev-a")
    assert second["cache_status"] == hit.headers["Cache-Status"] and second["cache_status"].startswith("mediaedge; hit")
    assert gone["status"] == 404 and gone["target"] == "/media/gone.jpg"
    assert bad["status"] == 400 and bad["target"] == "/media/a%00b.jpg" and bad["revision"] is None


def test_combined_stays_the_default(tmp_path):
    up = Upstream()
    up.routes["/media/a.jpg"] = Route(body=BODY, headers={"X-Media-Revision": "rev-a"})
    log_path = tmp_path / "access.log"
    e = Edge(str(tmp_path), upstream=up.url, args=["--access-log", str(log_path)]).start()
    try:
        e.get("/media/a.jpg")
        wait_until(lambda: lines(log_path), 10, 0.02, "an access line")
    finally:
        e.stop()
    [line] = lines(log_path)
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^\]]+\] "GET /media/a\.jpg HTTP/1\.1" 200 3000 "-" "[^"]*" '
                        r"cache=miss origin=upstream dur=\d+\.\d{4}", line), line


@pytest.mark.parametrize("level, info_shown, debug_shown", [
    ("warning", False, False),
    ("info", True, False),
    ("debug", True, True),
])
def test_log_level(tmp_path, level, info_shown, debug_shown):
    """SIGHUP's "access log reopened" is an info line; the settings dump at start is debug."""
    log_path = tmp_path / "access.log"
    e = Edge(str(tmp_path), args=["--access-log", str(log_path), "--log-level", level]).start()
    try:
        e.get("/media/nothing.jpg")
        wait_until(lambda: lines(log_path), 10, 0.02, "an access line")
        log_path.rename(tmp_path / "access.log.1")
        e.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: log_path.exists(), 10, 0.02, "the reopened log")
        if info_shown:
            wait_until(lambda: "access log" in e.log() and "reopened" in e.log(), 10, 0.02, "the info line")
        e.get("/media/nothing.jpg")
        wait_until(lambda: lines(log_path), 10, 0.02, "a line in the new file")
    finally:
        assert e.stop() == 0
    text = e.log()
    assert ("reopened" in text) is info_shown
    assert ("settings (--log-level debug)" in text) is debug_shown
    assert "Traceback" not in text
