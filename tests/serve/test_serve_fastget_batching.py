"""The pipelined GET batches: the commands issued during one turn of the event loop leave in one write (a
loopback write costs as much CPU as the rest of a GET), and every reply still reaches its own caller."""

from __future__ import annotations

import asyncio

from skyrec.serve.fastget import PipelinedGet


def test_gets_of_one_loop_turn_leave_in_one_write(redis_server, redis_client):
    redis_client.mset({f"b{i}": f"value-{i}" for i in range(200)})

    async def main() -> None:
        fast = PipelinedGet(redis_server.url, connections=1, timeout=1.0)
        try:
            assert await fast.get("b0") == b"value-0"  # connects
            proto = fast._slots[0]
            assert proto is not None and proto.transport is not None
            writes: list[bytes] = []
            real_write = proto.transport.write

            def counting(data: bytes) -> None:
                writes.append(bytes(data))
                real_write(data)

            proto.transport.write = counting  # type: ignore[method-assign]
            got = await asyncio.gather(*(fast.get(f"b{i}") for i in range(200)), fast.get("absent"))
            assert list(got) == [f"value-{i}".encode() for i in range(200)] + [None]
            assert len(writes) == 1, len(writes)
            assert writes[0].count(b"GET") == 201
            # later turns write again (nothing is held back waiting for company)
            assert await fast.get("b7") == b"value-7"
            assert len(writes) == 2
        finally:
            await fast.aclose()

    asyncio.run(main())


def test_exists_counts_present_keys(redis_server, redis_client):
    redis_client.mset({"e1": "x", "e2": "y"})
    redis_client.hset("eh", "f", "1")

    async def main() -> None:
        fast = PipelinedGet(redis_server.url, connections=1, timeout=1.0)
        try:
            got = await asyncio.gather(fast.exists("e1", "e2", "eh"), fast.exists("nope"), fast.get("e1"),
                                       fast.exists("e1", "nope"))
            assert list(got) == [3, 0, b"x", 1]
        finally:
            await fast.aclose()

    asyncio.run(main())
