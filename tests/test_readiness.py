"""mediaedge.readiness: the /readyz decision and its memory (pure; the clock is passed in)."""
from __future__ import annotations

import pytest

from mediaedge.readiness import Remembered, component_key, readiness


@pytest.mark.parametrize(("name", "key"), [
    ("origin database sqlite:///var/origin.db (native)", "origin_db"),
    ("origin database postgresql://u:***@h:5432/db (sql)", "origin_db"),
    ("state database mysql://u:***@h/db", "state_db"),
    ("upstream http://127.0.0.1:8000", "upstream"),
    ("cache directory var/cache", "cache_dir"),
    ("free disk for --cache-size 1GiB", "free_disk"),
    ("sql_route #2 (^/media/(.*)$)", "sql_route_2"),
    ("checks", "checks"),
])
def test_component_keys(name, key):
    assert component_key(name) == key


def test_ready_when_every_component_is_ok():
    r = readiness([("origin database sqlite:///o.db (native)", None), ("upstream http://u", None)])
    assert (r.ready, r.status) == (True, 200)
    assert r.body() == {"ready": True, "components": {
        "origin_db": {"ok": True, "check": "origin database sqlite:///o.db (native)"},
        "upstream": {"ok": True, "check": "upstream http://u"}}}


def test_one_failed_component_makes_the_node_unready():
    r = readiness([("origin database x (native)", None), ("upstream http://u", "not reachable:\n  refused")])
    assert (r.ready, r.status) == (False, 503)
    assert r.components["upstream"] == {"ok": False, "check": "upstream http://u", "problem": "not reachable: refused"}
    assert r.components["origin_db"]["ok"] is True


def test_no_components_is_not_ready():
    assert readiness([]).ready is False


def test_remembered_for_ttl_seconds():
    memory = Remembered(ttl=2.0)
    assert memory.get(100.0) is None
    value = readiness([("upstream u", None)])
    memory.put(value, 100.0)
    assert memory.get(100.0) is value
    assert memory.get(101.99) is value
    assert memory.get(102.0) is None  # expired
    assert memory.get(99.0) is None  # a clock that went back: not trusted
