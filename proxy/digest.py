"""What a fill records about a body so that a later read can prove it intact.

Two checks, computed in one pass as the bytes arrive:

* the SHA-256 of the whole body: a whole-body hit is hashed as it streams and its
  last bytes are held back until the hash matches (proxy/engine.py);
* a CRC-32 per `BLOCK` bytes: a Range hit reads only the blocks its window covers and
  checks each before sending any byte of it, so a damaged byte inside a 5 GB video is
  caught by a 20-byte range request too, at the price of reading at most two blocks.
  CRC-32 is enough here: it guards against disk damage, not against an attacker who
  can write the cache directory (who could rewrite the trailer as well).

The block sums are stored as one hex string (8 characters per MiB: 40 KB for 5 GB)
in the entry's trailer (proxy/storage.py `EntryMeta.blocks`).
"""
from __future__ import annotations

import hashlib
import zlib

BLOCK = 1 << 20


class BodyDigest:
    """SHA-256 and per-block CRC-32 of a body fed in order, in chunks of any size."""

    __slots__ = ("_sha", "_crcs", "_crc", "_in_block")

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._crcs: list[int] = []
        self._crc = 0
        self._in_block = 0

    def update(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        view = memoryview(data)
        while view:
            take = min(len(view), BLOCK - self._in_block)
            self._crc = zlib.crc32(view[:take], self._crc)
            self._in_block += take
            view = view[take:]
            if self._in_block == BLOCK:
                self._crcs.append(self._crc)
                self._crc = self._in_block = 0

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def blocks(self) -> str:
        """The block sums so far, the last (short) block included."""
        crcs = self._crcs + ([self._crc] if self._in_block else [])
        return "".join(f"{c:08x}" for c in crcs)


def block_count(size: int) -> int:
    return -(-size // BLOCK)


def block_sum(blocks: str, index: int) -> int:
    return int(blocks[index * 8:index * 8 + 8], 16)


def covering_blocks(start: int, end: int) -> range:
    """Indexes of the blocks holding bytes [start, end) (end exclusive, end > start)."""
    return range(start // BLOCK, (end - 1) // BLOCK + 1)


def blocks_valid(blocks: str, size: int) -> bool:
    """Whether a trailer's block sums fit a body of `size` bytes (older entries have none)."""
    return len(blocks) == 8 * block_count(size)


def crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data)
