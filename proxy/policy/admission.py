"""Which responses the disk keeps: TinyLFU admission over the store's own FIFO.

The cache evicts in the order entries were stored (diskcache's `store_time` index), so a
hit never writes to SQLite. Alone, that order keeps whatever came last, popular or not:
a sweep over the catalogue, or a stream of one-hit wonders, flushes the popular set.
TinyLFU (Einziger, Friedman, Manes 2017) adds a decision at the tail: a new response
is stored only when it has been asked for more often than the entries it would push
out, and the entries sampled at the FIFO's tail are evicted least-frequent first,
the others moved back to the head (one write per cull, never per hit). How often is
a count-min sketch in memory: 4 small counters per key, halved every
`SAMPLE_FACTOR` × capacity requests so old popularity fades; 16 to 32 bytes per entry
the cache holds, nothing else per entry (the FIFO order is the disk's).

Pure: plain data and functions, hashes passed in (the caller's `hash()`: the sketch
lives in one process); no I/O, no clock. The sketch starts
empty at every start (it is not persisted): every resident then counts 0 and every
new response at least 1, so the cache behaves as the plain FIFO it was until the
counts build up, and never evicts more than the room a new entry needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

DEPTH = 4  # counters per key: the estimate is the least of them
COUNTER_MAX = 15  # 4-bit counters, as in Caffeine: enough to rank, small to age
SAMPLE_FACTOR = 30  # halve every counter after this many × capacity recorded accesses (measured: 10 → 0.649, 30 → 0.680, bench/hitratio.py)
WIDTH_FACTOR = 4  # counters per row per entry held (power of two above): 1 → 0.664, 4 → 0.680 at SAMPLE_FACTOR 30
MIN_WIDTH = 1024
MAX_WIDTH = 1 << 26  # 256 MiB of counters: 16M entries at WIDTH_FACTOR 4 (and indexes stay under 32 bits)
MIN_SAMPLE_CAPACITY = 256  # a fresh, nearly empty cache does not age its counts every few requests
M64 = (1 << 64) - 1
# Odd multipliers (splitmix64 / Caffeine's seeds): each row spreads the key differently.
_ROW_SEEDS = (0x97CB3127E5A1B3F9, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x9E3779B97F4A7C15)
_S0, _S1, _S2, _S3 = _ROW_SEEDS
_HALVE = bytes(b >> 1 for b in range(256))
TAIL_SAMPLE = 16  # entries at the FIFO's tail weighed against a newcomer


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class FrequencySketch:
    """A count-min sketch of 4-bit counters (one byte each here), with aging.

    `capacity` is the number of entries the cache holds (grown with `ensure_capacity`):
    the table is `DEPTH` rows of the next power of two of `WIDTH_FACTOR` × it, so 16 to
    32 bytes per entry (wider rows collide less: rare keys are told apart from each other).
    Conservative update: only the least counters of a key are raised, which keeps
    estimates of rare keys from being inflated by collisions with popular ones.
    """

    __slots__ = ("width", "table", "additions", "sample_size", "agings", "width_factor", "sample_factor", "top")

    def __init__(self, capacity: int, *, width_factor: int = WIDTH_FACTOR, sample_factor: int = SAMPLE_FACTOR,
                 top: int = COUNTER_MAX) -> None:
        self.width_factor, self.sample_factor, self.top = width_factor, sample_factor, top
        self.width = min(MAX_WIDTH, _pow2(max(MIN_WIDTH, capacity * width_factor)))
        self.table = bytearray(DEPTH * self.width)
        self.additions = 0
        self.sample_size = sample_factor * max(capacity, MIN_SAMPLE_CAPACITY)
        self.agings = 0

    def _cells(self, h: int) -> tuple[int, int, int, int]:
        # Bits 32.. of each product: within its low 64 bits, so no masking to 64 is needed.
        w, mask = self.width, self.width - 1
        h &= M64
        return ((((h ^ (h >> 31)) * _S0) >> 32) & mask,
                w + ((((h ^ (h >> 29)) * _S1) >> 32) & mask),
                2 * w + ((((h ^ (h >> 33)) * _S2) >> 32) & mask),
                3 * w + ((((h ^ (h >> 27)) * _S3) >> 32) & mask))

    def estimate(self, h: int) -> int:
        t = self.table
        i, j, k, m = self._cells(h)
        return min(t[i], t[j], t[k], t[m])

    def record(self, h: int) -> None:
        """One access of the key hashed `h` (on every request: kept to a few µs)."""
        t = self.table
        i, j, k, m = self._cells(h)
        a, b, c, d = t[i], t[j], t[k], t[m]
        low = min(a, b, c, d)
        if low < self.top:
            up = low + 1
            if a == low:
                t[i] = up
            if b == low:
                t[j] = up
            if c == low:
                t[k] = up
            if d == low:
                t[m] = up
        self.additions += 1
        if self.additions >= self.sample_size:
            self.age()

    def age(self) -> None:
        """Halve every counter: popularity measured long ago counts half as much."""
        self.table = bytearray(self.table.translate(_HALVE))
        self.additions //= 2
        self.agings += 1

    def ensure_capacity(self, capacity: int) -> None:
        """Grow for a cache holding `capacity` entries, keeping every estimate.

        Row i of the wider table is row i of the old one repeated: a key's cell in the
        wider row is a copy of its cell in the narrower one (same low bits)."""
        self.sample_size = max(self.sample_size, self.sample_factor * capacity)
        width = min(MAX_WIDTH, _pow2(max(MIN_WIDTH, capacity * self.width_factor)))
        if width <= self.width:
            return
        old, w, times = self.table, self.width, width // self.width
        self.table = bytearray(b"".join(bytes(old[r * w:(r + 1) * w]) * times for r in range(DEPTH)))
        self.width = width

    def memory_bytes(self) -> int:
        return len(self.table)


@dataclass(frozen=True, slots=True)
class Resident:
    """An entry at the FIFO's tail, as the decision sees it."""

    key: str
    size: int
    freq: int


@dataclass(frozen=True, slots=True)
class Admission:
    """Store the newcomer? `reason`: resident | room | more-frequent | less-frequent | too-large."""

    admit: bool
    reason: str
    victims: tuple[str, ...] = ()  # the tail entries it would push out, least frequent first


def _by_frequency(tail: Sequence[Resident]) -> list[Resident]:
    # least frequent first; among equals the oldest (the FIFO order the tail comes in)
    return sorted(tail, key=lambda r: r.freq)


def admit(candidate_freq: int, size: int, free: int, tail: Sequence[Resident], limit: int, *,
          resident: bool = False) -> Admission:
    """May a response of `size` bytes, asked for `candidate_freq` times, be stored?

    `free` is the room left under the limit; `tail` the oldest entries. A new copy of a
    target already stored (`resident`: a refresh, a new revision) replaces it: stored,
    else the old copy would be fetched again on every request. With room it is stored.
    Without, it must be asked for more often than every entry it would push out (ties
    keep the resident: a one-hit wonder never displaces anything once the cache has
    counts). Larger than the whole cache: never."""
    if size > limit:
        return Admission(False, "too-large")
    if resident:
        return Admission(True, "resident")
    if size <= free:
        return Admission(True, "room")
    need, victims, hottest = size - free, [], 0
    for r in _by_frequency(tail):
        if need <= 0:
            break
        victims.append(r.key)
        hottest = max(hottest, r.freq)
        need -= r.size
    if candidate_freq > hottest:
        return Admission(True, "more-frequent", tuple(victims))
    return Admission(False, "less-frequent", tuple(victims))


@dataclass(frozen=True, slots=True)
class CullPlan:
    """What to do with a sampled tail to free `excess` bytes."""

    evict: tuple[str, ...]
    reinsert: tuple[str, ...]  # kept: moved to the FIFO's head (their store time renewed)


def plan_cull(tail: Sequence[Resident], excess: int) -> CullPlan:
    """Evict the least frequent tail entries until `excess` bytes are freed; entries of
    the sample more frequent than every evicted one go back to the head, so the next
    sample shows other entries (a second chance, as in CLOCK, paid once per cull)."""
    evict: list[str] = []
    hottest = -1
    for r in _by_frequency(tail):
        if excess <= 0:
            break
        evict.append(r.key)
        hottest = max(hottest, r.freq)
        excess -= r.size
    gone = set(evict)
    reinsert = tuple(r.key for r in tail if r.key not in gone and r.freq > hottest and hottest >= 0)
    return CullPlan(tuple(evict), reinsert)
