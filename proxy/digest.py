"""What a fill records about a body so that a later read can prove it intact.

Two checks, computed in one pass as the bytes arrive:

* the SHA-256 of the whole body: a whole-body hit is hashed as it streams and its
  last bytes are held back until the hash matches (`verified_stream`, used by
  proxy/engine.py; proxy/zerocopy.py does the same with sendfile, holding back the
  last byte while a thread hashes the file);
* a CRC-32 per `BLOCK` bytes: a Range hit reads only the blocks its window covers and
  checks each before sending any byte of it, so a damaged byte inside a 5 GB video is
  caught by a 20-byte range request too, at the price of reading at most two blocks
  (`checked_block`, used by the engine, slices and zero-copy sends).
  CRC-32 is enough here: it guards against disk damage, not against an attacker who
  can write the cache directory (who could rewrite the trailer as well).

The block sums are stored as one hex string (8 characters per MiB: 40 KB for 5 GB)
in the entry's trailer (proxy/storage.py `EntryMeta.blocks`).
"""
from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import AsyncIterator
from typing import BinaryIO

from mediaedge.errors import DamagedEntry

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


def checked_block(f: BinaryIO, size: int, blocks: str, index: int) -> bytes | None:
    """Worker thread (zlib releases the GIL): block `index` of a body of `size` bytes,
    or None when it fails its CRC-32 or the trailer's sums are not hex."""
    f.seek(index * BLOCK)
    data = f.read(min(BLOCK, size - index * BLOCK))
    try:
        return data if crc(data) == block_sum(blocks, index) else None
    except ValueError:
        return None


async def verified_stream(f: BinaryIO, size: int, sha256: str, chunk: int = BLOCK) -> AsyncIterator[bytes]:
    """Hash while streaming, hold back the last piece: `f`'s `size` bytes in chunks, each
    sent once the next one is read, the last only when the whole body's SHA-256 is
    `sha256`; else `DamagedEntry`, so a damaged body is never delivered complete."""
    h = hashlib.sha256()

    def read_hashed(n: int) -> bytes:  # worker thread: hashlib releases the GIL
        data = f.read(n)
        h.update(data)
        return data

    left = size
    held = b""
    while left:
        piece = await asyncio.to_thread(read_hashed, min(left, chunk))
        if not piece:
            break
        left -= len(piece)
        if held:
            yield held
        held = piece
    if left or h.hexdigest() != sha256:
        raise DamagedEntry("SHA-256")
    if held:
        yield held
