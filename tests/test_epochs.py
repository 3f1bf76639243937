"""proxy/epochs.py: which events applied during a fill keep it from being committed or joined."""
from __future__ import annotations

import pytest

from mediaedge.epochs import Epochs, Mark, Verdict, verdict

T = "/media/a/b.jpg"


@pytest.mark.parametrize("marks,tags,revision,expected", [
    # nothing since the fill began
    ([], (), "r1", Verdict.CURRENT),
    # path events
    ([Mark(2, "purge", path=T)], (), "r1", Verdict.INVALID),
    ([Mark(2, "delete", path=T)], (), "r1", Verdict.INVALID),
    ([Mark(2, "purge", path="/media/a/other.jpg")], (), "r1", Verdict.CURRENT),
    ([Mark(2, "soft", path=T)], (), "r1", Verdict.STALE),
    # publish: current only for the revision it names; later events win
    ([Mark(2, "publish", path=T, revision="r1")], (), "r1", Verdict.CURRENT),
    ([Mark(2, "publish", path=T, revision="r2")], (), "r1", Verdict.INVALID),
    ([Mark(2, "publish", path=T, revision="r2"), Mark(3, "publish", path=T, revision="r1")], (), "r1",
     Verdict.CURRENT),
    ([Mark(2, "publish", path=T, revision="r1"), Mark(3, "purge", path=T)], (), "r1", Verdict.INVALID),
    ([Mark(2, "purge", path=T), Mark(3, "publish", path=T, revision="r1")], (), "r1", Verdict.CURRENT),
    ([Mark(2, "publish", path=T, revision="r1")], (), None, Verdict.INVALID),  # revision not known yet
    # soft after hard stays invalid; soft then publish of the fill's revision is current
    ([Mark(2, "purge", path=T), Mark(3, "soft", path=T)], (), "r1", Verdict.INVALID),
    ([Mark(2, "soft", path=T), Mark(3, "publish", path=T, revision="r1")], (), "r1", Verdict.CURRENT),
    # prefixes
    ([Mark(2, "purge", prefix="/media/a/")], (), "r1", Verdict.INVALID),
    ([Mark(2, "purge", prefix="/media/ab")], (), "r1", Verdict.CURRENT),
    ([Mark(2, "soft", prefix="/media/")], (), "r1", Verdict.STALE),
    # tags: unknown tags (head not yet arrived) count as covered
    ([Mark(2, "purge", tag="product-1")], ("product-1", "cat"), "r1", Verdict.INVALID),
    ([Mark(2, "purge", tag="product-1")], ("product-2",), "r1", Verdict.CURRENT),
    ([Mark(2, "purge", tag="product-1")], None, "r1", Verdict.INVALID),
    ([Mark(2, "soft", tag="cat")], ("cat",), "r1", Verdict.STALE),
    # marks not newer than the fill's start do not count
    ([Mark(1, "purge", path=T)], (), "r1", Verdict.CURRENT),
])
def test_verdict(marks, tags, revision, expected):
    assert verdict(marks, 1, T, tags, revision)[0] is expected


def test_verdict_names_the_deciding_mark():
    marks = [Mark(2, "soft", path=T), Mark(3, "purge", tag="x")]
    assert verdict(marks, 1, T, ("x",), "r1") == (Verdict.INVALID, marks[1])


def test_epochs_record_and_prune_keep_only_what_running_fills_need():
    e = Epochs()
    started = e.epoch
    e.record("purge", path=T)
    later = e.epoch
    e.record("purge", path="/media/other.jpg")
    assert e.verdict(started, T, (), "r1")[0] is Verdict.INVALID
    assert e.verdict(later, T, (), "r1")[0] is Verdict.CURRENT
    e.prune(later)  # the oldest running fill began at `later`: the first mark is not needed
    assert len(e) == 1
    e.prune(None)  # no fill running
    assert len(e) == 0
    assert e.epoch == 2  # the counter never goes back
