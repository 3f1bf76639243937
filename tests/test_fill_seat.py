"""A request's seat on a fill (`Fill.seat()`): counted while held, given up when left
unread, and handed to the reader (which gives it up when it ends) once read from."""
from __future__ import annotations

import asyncio

from mediaedge.fill import Fill


def test_a_seat_left_unread_is_given_up(tmp_path) -> None:
    async def main() -> None:
        fill = Fill("/media/x", str(tmp_path / "x.tmp"))
        seat = fill.seat()
        assert fill.waiting == 1  # taken when the request joins, before it reads anything
        with seat:
            assert fill.waiting == 1
        assert fill.waiting == 0
        fill.close()

    asyncio.run(main())


def test_a_seat_read_from_is_given_up_by_its_reader(tmp_path) -> None:
    async def main() -> None:
        fill = Fill("/media/x", str(tmp_path / "x.tmp"))
        await fill.write(b"hello, world")
        fill.finish()
        fill.settled.set()
        with fill.seat() as read:
            body = read(0, 5)
        assert fill.waiting == 1  # leaving the block did not cut the reader it handed out
        assert b"".join([chunk async for chunk in body]) == b"hello"
        assert fill.waiting == 0
        fill.close()

    asyncio.run(main())
