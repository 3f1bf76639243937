"""proxy/digest.py: the block sums must not depend on how the body was chunked."""
from __future__ import annotations

import hashlib
import os
import zlib

from hypothesis import given, settings, strategies as st

from mediaedge.digest import BLOCK, BodyDigest, block_count, block_sum, blocks_valid, covering_blocks

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
