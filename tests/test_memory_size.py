"""--memory-size: the memory tier's bound, and 'off' to serve every hit from the disk cache.

Seen from outside by what each tier would serve after the disk copy of a small entry
is damaged behind the edge's back: the memory tier still holds the good bytes (a hit,
the upstream not asked again); with the tier off, the next hit reads the disk, finds the
damage, drops the entry and fetches it again. Either way no damaged byte is served.
"""
from __future__ import annotations

import os

import pytest

from tests.edge import Edge, Route, Upstream, sha, status_of
from tests.test_faults import damage_inline_entry


@pytest.mark.parametrize("memory_size, from_memory", [("64MiB", True), ("off", False)])
def test_memory_size_off_serves_every_hit_from_disk(tmp_path, memory_size, from_memory):
    up = Upstream()
    edge = Edge(str(tmp_path), upstream=up.url, args=["--memory-size", memory_size]).start()
    try:
        path = "/media/tier/small.png"
        body = os.urandom(5_000)  # inline in cache.db
        up.routes[path] = Route(body=body, headers={"X-Media-Revision": "m1"})
        for _ in range(3):  # stored, then two hits: the second request admits it to memory
            r = edge.get(path)
            assert r.status_code == 200 and sha(r.content) == sha(body)
        assert up.hits[path] == 1
        damage_inline_entry(edge.cache_dir, path)

        r = edge.get(path)
        assert r.status_code == 200 and sha(r.content) == sha(body), "a damaged entry was served"
        if from_memory:
            assert status_of(r).startswith("mediaedge; hit") and up.hits[path] == 1
        else:
            assert up.hits[path] == 2, "with the memory tier off, the hit should have read the damaged disk copy"
            assert "dropping damaged cache entry" in edge.log()
    finally:
        edge.stop()
        up.close()


def test_memory_size_is_parsed_like_the_other_sizes():
    from mediaedge.config import load_settings
    from mediaedge.errors import ConfigError

    assert load_settings({}, {}, config_path=None).memory_size == 64 << 20
    assert load_settings({"memory-size": "off"}, {}, config_path=None).memory_size == 0
    assert load_settings({}, {"MEDIAEDGE_MEMORY_SIZE": "1.5GiB"}, config_path=None).memory_size == int(1.5 * (1 << 30))
    with pytest.raises(ConfigError, match="memory-size"):
        load_settings({"memory-size": "lots"}, {}, config_path=None)
