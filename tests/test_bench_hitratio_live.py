"""bench/hitratio_live.py: the live edge replays a seeded trace and its hit ratio is the
simulation's (mediaedge.policy.admission as proxy/storage.py applies it) at the capacity
it held; `cache_size_for` gives the edge the room the simulation assumes."""
from __future__ import annotations

from bench import hitratio, hitratio_live
from mediaedge.storage import OVERHEAD_RESERVE


def test_cache_size_leaves_the_entries_their_room() -> None:
    obj = hitratio_live.OBJECT_BYTES
    for entries in (10, 27, 182, 910, 1820, 9100):
        size = hitratio_live.cache_size_for(entries, obj)
        room = size - min(size // 4, OVERHEAD_RESERVE)  # what proxy/storage.py gives the entries
        per = obj + hitratio_live.TRAILER_BYTES + hitratio_live.DB_BYTES_PER_ENTRY
        assert entries * per <= room < (entries + 2) * per + hitratio_live.DB_FLOOR, entries


def test_live_edge_matches_the_simulation(tmp_path) -> None:
    res = hitratio_live.measure(300, 0.9, hitratio.NOMINAL_FRACTION, 3000, hitratio_live.OBJECT_BYTES, seed=5,
                                conns=4, workdir=str(tmp_path), log=lambda m: None)
    assert res["errors"] == 0
    for name, row in res["traces"].items():
        assert row["errors"] == 0, name
        assert abs(row["live_stats"] - row["live"]) <= 0.005, name  # Cache-Status and /stats agree
        assert abs(row["entries_at_end"] - res["capacity_entries"]) <= 2, (name, row)
        assert row["lru"] < row["live"] <= row["ideal"] + 0.02, (name, row)
        assert abs(row["live"] - row["tinylfu"]) <= 0.03, (name, row)
