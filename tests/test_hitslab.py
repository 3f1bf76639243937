"""The hit slab file (proxy/hitslab.py) on its own: what a reader gets back is either
nothing or exactly the last value put for that target, whatever happened in between
(the ring lapping, forgets, wipes, a reopen, concurrent writers in other processes,
damage, a write that fails)."""
from __future__ import annotations

import errno
import multiprocessing
import os
import random


from mediaedge import hitslab
from mediaedge.hitslab import HitSlab, place


def value(target: str, n: int, size: int = 900) -> bytes:
    seed = f"{target}#{n}".encode()
    return (seed * (size // len(seed) + 1))[:size]


def test_a_value_reads_back_as_put_and_an_unknown_target_as_none(tmp_path):
    slab = HitSlab(str(tmp_path), 4 << 20)
    assert slab.get("/media/a.jpg") is None
    assert slab.put("/media/a.jpg", value("/media/a.jpg", 1), slab.stamp("/media/a.jpg"))
    assert slab.get("/media/a.jpg") == value("/media/a.jpg", 1)
    assert slab.put("/media/a.jpg", value("/media/a.jpg", 2), slab.stamp("/media/a.jpg"))
    assert slab.get("/media/a.jpg") == value("/media/a.jpg", 2)
    assert slab.get("/media/b.jpg") is None
    odd = "/media/ünï cödé/\udcff.jpg"  # surrogate-escaped bytes as targets may carry
    assert slab.put(odd, b"x", slab.stamp(odd)) and slab.get(odd) == b"x"


def test_forget_and_a_stale_stamp(tmp_path):
    """A value read before a forget is never put back: the stamp taken before it is refused."""
    slab = HitSlab(str(tmp_path), 4 << 20)
    t = "/media/a.jpg"
    slab.put(t, b"one", slab.stamp(t))
    before = slab.stamp(t)
    slab.forget([t])
    assert slab.get(t) is None
    assert not slab.put(t, b"one", before)
    assert slab.get(t) is None
    assert slab.put(t, b"two", slab.stamp(t)) and slab.get(t) == b"two"


def test_a_wipe_drops_everything_and_refuses_older_stamps(tmp_path):
    slab = HitSlab(str(tmp_path), 4 << 20)
    targets = [f"/media/{i}.jpg" for i in range(50)]
    for t in targets:
        slab.put(t, value(t, 1), slab.stamp(t))
    stamp = slab.stamp(targets[0])
    slab.wipe()
    assert all(slab.get(t) is None for t in targets)
    assert not slab.put(targets[0], b"old", stamp)
    assert slab.put(targets[0], b"new", slab.stamp(targets[0])) and slab.get(targets[0]) == b"new"


def test_the_ring_laps_and_old_records_read_as_none_never_as_other_bytes(tmp_path):
    slab = HitSlab(str(tmp_path), hitslab.MIN_RING)
    ring = slab.geometry.ring
    rng = random.Random(3)
    last: dict[str, bytes] = {}
    targets = [f"/media/lap/{i}.bin" for i in range(3000)]
    written = 0
    while written < 3 * ring:  # three laps
        t = rng.choice(targets)
        v = value(t, written, rng.randint(1, 4000))
        assert slab.put(t, v, slab.stamp(t))
        last[t] = v
        written += len(v)
    found = {t: slab.get(t) for t in last}
    assert all(got is None or got == last[t] for t, got in found.items())
    recent = sum(got is not None for got in found.values())
    assert 0 < recent and recent * 2000 < 2 * ring  # what the last lap can hold, no more


def test_it_survives_a_reopen_and_is_laid_out_afresh_for_another_size(tmp_path):
    slab = HitSlab(str(tmp_path), 4 << 20)
    slab.put("/media/a.jpg", b"kept", slab.stamp("/media/a.jpg"))
    slab.close()
    again = HitSlab(str(tmp_path), 4 << 20)
    assert again.get("/media/a.jpg") == b"kept"
    again.close()
    adopted = hitslab.existing(str(tmp_path))  # a tool opening the cache: as the file is
    assert adopted is not None and adopted.geometry == hitslab.geometry(4 << 20)
    assert adopted.get("/media/a.jpg") == b"kept"
    adopted.close()
    bigger = HitSlab(str(tmp_path), 8 << 20)  # --hit-slab-size changed between runs
    assert bigger.geometry == hitslab.geometry(8 << 20) and bigger.get("/media/a.jpg") is None
    assert os.path.getsize(os.path.join(tmp_path, hitslab.FILENAME)) == bigger.geometry.file_size
    bigger.close()
    hitslab.remove(str(tmp_path))  # --hit-slab-size off
    assert hitslab.existing(str(tmp_path)) is None


def test_a_file_that_is_not_a_slab_is_laid_out_afresh(tmp_path):
    with open(os.path.join(tmp_path, hitslab.FILENAME), "wb") as f:
        f.write(os.urandom(100_000))
    slab = HitSlab(str(tmp_path), 2 << 20)
    assert slab.get("/media/a.jpg") is None
    assert slab.put("/media/a.jpg", b"v", slab.stamp("/media/a.jpg")) and slab.get("/media/a.jpg") == b"v"


def test_a_torn_slot_or_a_damaged_record_reads_as_none(tmp_path):
    slab = HitSlab(str(tmp_path), 4 << 20)
    a, b = "/media/a.jpg", "/media/b.jpg"
    slab.put(a, b"value of a", slab.stamp(a))
    slab.put(b, b"value of b", slab.stamp(b))
    fd = os.open(os.path.join(tmp_path, hitslab.FILENAME), os.O_RDWR)
    try:
        g = slab.geometry
        # a's slot pointing at b's record (a write torn between two slots)
        ia, fa = place(a, g.buckets)
        ib, fb = place(b, g.buckets)
        _, slots_b = hitslab.parse_bucket(os.pread(fd, hitslab.BUCKET.size, hitslab.HEADER_SIZE + ib * hitslab.BUCKET.size))
        b_slot = next(s for s in slots_b if s[0] == fb)
        seq, slots_a = hitslab.parse_bucket(os.pread(fd, hitslab.BUCKET.size, hitslab.HEADER_SIZE + ia * hitslab.BUCKET.size))
        slots_a = [(fa, b_slot[1], b_slot[2]) if s[0] == fa else s for s in slots_a]
        os.pwrite(fd, hitslab.BUCKET.pack(seq, *[x for s in slots_a for x in s]), hitslab.HEADER_SIZE + ia * hitslab.BUCKET.size)
        assert slab.get(a) is None
        assert slab.get(b) == b"value of b"
        # b's record header damaged
        os.pwrite(fd, b"\xff" * 8, g.ring_start + b_slot[2] % g.ring)
        assert slab.get(b) is None
    finally:
        os.close(fd)


def test_a_failed_write_stops_the_slab_and_drops_its_records(tmp_path, monkeypatch):
    """A full disk mid-forget must not leave a slot that serves a purged entry."""
    slab = HitSlab(str(tmp_path), 4 << 20)
    other = HitSlab(str(tmp_path), 4 << 20)  # another process on the same directory
    t = "/media/a.jpg"
    slab.put(t, b"purged soon", slab.stamp(t))
    assert other.get(t) == b"purged soon"
    real = os.pwrite

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    slab.forget([t])
    monkeypatch.setattr(os, "pwrite", real)
    assert slab.failed and slab.get(t) is None
    assert other.get(t) is None  # its record is gone for every process
    assert not slab.put(t, b"x", slab.stamp(t))  # this process writes no more


def test_a_put_stamped_before_a_failed_forget_is_refused(tmp_path, monkeypatch):
    """Another process read the entry (and took its stamp) before a purge whose forget
    failed: its put must not bring the purged value back for every process."""
    slab = HitSlab(str(tmp_path), 4 << 20)
    other = HitSlab(str(tmp_path), 4 << 20)
    t = "/media/a.jpg"
    stamp = other.stamp(t)
    real = os.pwrite

    def failing(fd: int, data: bytes, offset: int) -> int:
        if offset != hitslab.EPOCH_AT:  # the bucket's block fails; the header's is on disk already
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", failing)
    slab.forget([t])
    monkeypatch.setattr(os, "pwrite", real)
    assert slab.failed
    assert not other.put(t, b"purged", stamp)
    assert other.get(t) is None


def test_a_put_from_the_event_loop_does_not_wait_for_another_writer(tmp_path):
    """A prefix purge forgetting many targets holds the lock a while: the loop's put
    (`wait=False`) gives up at once instead of stalling every request."""
    import fcntl

    slab = HitSlab(str(tmp_path), 2 << 20)
    t = "/media/a.jpg"
    other = os.open(slab.path, os.O_RDWR)  # another process's open file
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        assert not slab.put(t, b"v", slab.stamp(t), wait=False)
        fcntl.flock(other, fcntl.LOCK_UN)
    finally:
        os.close(other)
    assert slab.put(t, b"v", slab.stamp(t), wait=False) and slab.get(t) == b"v"


def test_a_forget_that_cannot_lock_drops_every_record(tmp_path, monkeypatch):
    import fcntl

    slab = HitSlab(str(tmp_path), 2 << 20)
    other = HitSlab(str(tmp_path), 2 << 20)
    t = "/media/a.jpg"
    slab.put(t, b"purge me", slab.stamp(t))
    real = fcntl.flock

    def broken(fd: int, op: int) -> None:
        if op & fcntl.LOCK_EX:
            raise OSError(errno.ENOLCK, "No locks available")
        real(fd, op)

    monkeypatch.setattr(fcntl, "flock", broken)
    slab.forget([t])
    monkeypatch.setattr(fcntl, "flock", real)
    assert other.get(t) is None


def _writer(directory: str, worker: int, rounds: int) -> None:
    slab = HitSlab(directory, hitslab.MIN_RING)
    rng = random.Random(worker)
    for n in range(rounds):
        t = f"/media/w/{rng.randrange(200)}.bin"
        slab.put(t, value(t, n * 10 + worker, rng.randint(100, 3000)), slab.stamp(t))
        if n % 7 == 0:
            slab.forget([f"/media/w/{rng.randrange(200)}.bin"])


def test_writers_in_several_processes_never_produce_a_mixed_value(tmp_path):
    directory = str(tmp_path)
    HitSlab(directory, hitslab.MIN_RING).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(directory, w, 1500)) for w in range(3)]
    for p in procs:
        p.start()
    reader = HitSlab(directory, hitslab.MIN_RING)
    seen = 0
    while any(p.is_alive() for p in procs) or seen == 0:
        for i in range(200):
            t = f"/media/w/{i}.bin"
            got = reader.get(t)
            if got is not None:
                seen += 1
                head = len(t) + 1
                assert got[:head] == f"{t}#".encode()
                n = int(got[head:got.index(b"/", head)])
                assert got == value(t, n, len(got))  # one writer's whole value for t, not a mix
        if seen > 100_000:
            break
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert seen > 0
