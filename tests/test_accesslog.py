"""mediaedge.accesslog: combined-format lines, hostile fields escaped, the three destinations."""
from __future__ import annotations

import re

import pytest

from mediaedge.accesslog import AccessLog, clf_time, escape_field, format_access_line

NOW = 1735812245.25  # 2025-01-02 10:04:05.25 UTC


def line(**overrides) -> str:
    fields = dict(client="203.0.113.7", method="GET", target="/media/a.jpg", status=200, body_bytes=5120,
                  referer="https://shop.example/p/1", user_agent="curl/8.5.0", cache_result="hit",
                  origin=None, duration=0.00042, now=NOW)
    return format_access_line(**(fields | overrides))


COMBINED = re.compile(
    r'^(?P<client>\S+) - - \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<ua>(?:[^"\\]|\\.)*)" cache=(?P<cache>\S+) origin=(?P<origin>\S+) '
    r'dur=(?P<dur>\d+\.\d{4})$'
)


def test_a_plain_line():
    assert line() == (
        '203.0.113.7 - - [02/Jan/2025:10:04:05 +0000] "GET /media/a.jpg HTTP/1.1" 200 5120 '
        '"https://shop.example/p/1" "curl/8.5.0" cache=hit origin=- dur=0.0004'
    )


def test_a_refusal_ends_with_its_reason():
    assert line(target="/media/p/a.jpg?exp=1&sig=x", status=403, body_bytes=14, cache_result="error",
                denied="signature") == (
        '203.0.113.7 - - [02/Jan/2025:10:04:05 +0000] "GET /media/p/a.jpg?exp=1&sig=x HTTP/1.1" 403 14 '
        '"https://shop.example/p/1" "curl/8.5.0" cache=error origin=- dur=0.0004 denied=signature'
    )
    assert line(denied=None) == line()


def test_a_miss_from_the_database_with_no_referer_and_no_body():
    text = line(method="HEAD", status=304, body_bytes=0, referer=None, user_agent=None, cache_result="miss",
                origin="db", duration=1.23456, http_version="HTTP/2.0")
    assert text == ('203.0.113.7 - - [02/Jan/2025:10:04:05 +0000] "HEAD /media/a.jpg HTTP/2.0" 304 - "-" "-" '
                    'cache=miss origin=db dur=1.2346')


@pytest.mark.parametrize("field, value", [
    ("target", '/media/a" 200 1 "x'),
    ("target", "/media/a\r\nforged line"),
    ("user_agent", 'evil"\\agent\x1b[2J'),
    ("referer", "x\u2028y\x00z"),
    ("client", "1.2.3.4 spoof"),
    ("method", 'G"ET'),
])
def test_hostile_fields_stay_in_one_parseable_line(field, value):
    text = line(**{field: value})
    assert "\n" not in text and "\r" not in text and "\x1b" not in text and "\u2028" not in text
    m = COMBINED.match(text)
    assert m, text
    assert m["status"] == "200" and m["cache"] == "hit"


def test_escapes():
    assert escape_field('a"b\\c') == 'a\\"b\\\\c'
    assert escape_field("a\nb\x7f") == "a\\x0Ab\\x7F"
    assert escape_field("\u2028") == "\\u2028"
    assert escape_field("caf\u00e9 \u5199\u771f") == "caf\u00e9 \u5199\u771f"  # printable text is kept
    assert escape_field("a b", quoted=False) == "a\\x20b"
    assert escape_field("") == "-"


def test_clf_time_is_utc():
    assert clf_time(0) == "[01/Jan/1970:00:00:00 +0000]"
    assert clf_time(NOW) == "[02/Jan/2025:10:04:05 +0000]"


def test_file_destination_appends_lines(tmp_path):
    path = tmp_path / "access.log"
    path.write_text("earlier\n")
    log = AccessLog(str(path))
    assert log.enabled
    log.write("one")
    assert path.read_text() == "earlier\none\n"  # line-buffered: on disk before close
    log.write("two")
    log.close()
    log.close()  # twice is harmless
    log.write("after close")  # ignored, never raises
    assert path.read_text() == "earlier\none\ntwo\n"


def test_reopen_follows_a_rotated_file(tmp_path):
    path = tmp_path / "access.log"
    with AccessLog(str(path)) as log:
        log.write("old")
        path.rename(tmp_path / "access.log.1")
        log.reopen()
        log.write("new")
    assert (tmp_path / "access.log.1").read_text() == "old\n"
    assert path.read_text() == "new\n"


def test_stdout_destination(capsys):
    log = AccessLog("-")
    log.write("to stdout")
    log.close()
    assert capsys.readouterr().out == "to stdout\n"


def test_off():
    log = AccessLog(None)
    assert not log.enabled
    log.write("nothing")
    log.close()


def test_unopenable_path_fails_at_start(tmp_path):
    with pytest.raises(OSError):
        AccessLog(str(tmp_path / "missing-dir" / "access.log"))


def test_write_errors_are_swallowed(tmp_path, caplog):
    log = AccessLog(str(tmp_path / "a.log"))

    class Broken:
        def write(self, _s):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    log.close()
    log._stream = Broken()
    log.write("x")
    log.write("y")
    assert sum("No space left" in r.getMessage() for r in caplog.records) == 1
