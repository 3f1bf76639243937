"""proxy/digest.py: the block sums must not depend on how the body was chunked."""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from mediaedge.digest import (BLOCK, BodyDigest, block_count, block_sum, blocks_valid, checked_block, covering_blocks,
                              verified_stream)
from mediaedge.errors import DamagedEntry

BODY = os.urandom(3 * BLOCK + 777)


def _expected(body: bytes) -> str:
    return "".join(f"{zlib.crc32(body[i:i + BLOCK]):08x}" for i in range(0, len(body), BLOCK))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2 * BLOCK), min_size=1, max_size=12))
def test_any_chunking_gives_the_same_sums(cuts: list[int]) -> None:
    d = BodyDigest()
    pos = 0
    for n in cuts:
        d.update(BODY[pos:pos + n])
        pos += n
        if pos >= len(BODY):
            break
    d.update(BODY[pos:])
    assert d.hexdigest() == hashlib.sha256(BODY).hexdigest()
    assert d.blocks() == _expected(BODY)
    assert blocks_valid(d.blocks(), len(BODY))
    assert [block_sum(d.blocks(), i) for i in range(block_count(len(BODY)))] == [
        zlib.crc32(BODY[i:i + BLOCK]) for i in range(0, len(BODY), BLOCK)]


def test_exact_multiple_and_empty() -> None:
    d = BodyDigest()
    d.update(BODY[:2 * BLOCK])
    assert len(d.blocks()) == 16 and blocks_valid(d.blocks(), 2 * BLOCK)
    assert BodyDigest().blocks() == "" and blocks_valid("", 0)
    assert not blocks_valid("", 10)  # an entry written before block sums existed


def test_covering_blocks() -> None:
    assert list(covering_blocks(0, 1)) == [0]
    assert list(covering_blocks(BLOCK - 1, BLOCK + 1)) == [0, 1]
    assert list(covering_blocks(BLOCK, 2 * BLOCK)) == [1]
    assert list(covering_blocks(5, 3 * BLOCK + 1)) == [0, 1, 2, 3]


def _sums(body: bytes) -> str:
    d = BodyDigest()
    d.update(body)
    return d.blocks()


def test_checked_block_returns_a_sound_block_and_refuses_a_damaged_one() -> None:
    blocks = _sums(BODY)
    f = io.BytesIO(BODY)
    assert checked_block(f, len(BODY), blocks, 3) == BODY[3 * BLOCK:]  # the short last block
    damaged = bytearray(BODY)
    damaged[BLOCK + 5] ^= 0xFF
    g = io.BytesIO(bytes(damaged))
    assert checked_block(g, len(BODY), blocks, 0) == BODY[:BLOCK]
    assert checked_block(g, len(BODY), blocks, 1) is None
    assert checked_block(f, len(BODY), "zz" * 4 * len(blocks), 0) is None  # sums that are not hex


async def _read_all(body: bytes, sha: str) -> list[bytes]:
    return [piece async for piece in verified_stream(io.BytesIO(body), len(BODY), sha, chunk=BLOCK)]


def test_verified_stream_delivers_a_sound_body_whole() -> None:
    pieces = asyncio.run(_read_all(BODY, hashlib.sha256(BODY).hexdigest()))
    assert b"".join(pieces) == BODY and len(pieces) == 4


def test_verified_stream_holds_back_the_last_piece_of_a_damaged_body() -> None:
    damaged = BODY[:-1] + bytes([BODY[-1] ^ 0xFF])
    got: list[bytes] = []

    async def read() -> None:
        async for piece in verified_stream(io.BytesIO(damaged), len(BODY), hashlib.sha256(BODY).hexdigest()):
            got.append(piece)

    with pytest.raises(DamagedEntry):
        asyncio.run(read())
    assert b"".join(got) == BODY[:3 * BLOCK]  # everything but the last piece, never the whole


def test_verified_stream_refuses_a_short_file() -> None:
    with pytest.raises(DamagedEntry):
        asyncio.run(_read_all(BODY[:-10], hashlib.sha256(BODY).hexdigest()))
