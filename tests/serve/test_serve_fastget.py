"""The hot path's pipelined GET: RESP parsing across chunk boundaries, ordering under concurrency, errors as
redis-py exceptions, and a bounded wait when Redis stops answering."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from skyrec.redis_local import free_port
from skyrec.serve.fastget import PipelinedGet, _Parser


def test_parser_handles_every_reply_kind_split_anywhere():
    stream = b"$5\r\nhello\r\n$-1\r\n+OK\r\n-WRONGTYPE bad\r\n:42\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"
    for cut in range(1, len(stream)):
        p = _Parser()
        p.feed(stream[:cut])
        got = p.replies()
        p.feed(stream[cut:])
        got += p.replies()
        assert [g if not isinstance(g, ResponseError) else str(g) for g in got] == \
            [b"hello", None, b"OK", "WRONGTYPE bad", 42, b"", b"a\r\nb"]
        assert p.buf == bytearray()


def test_parser_rejects_unknown_reply_type():
    p = _Parser()
    p.feed(b"*2\r\n")
    with pytest.raises(RedisConnectionError):
        p.replies()


def test_concurrent_gets_are_matched_in_order(redis_server, redis_client):
    redis_client.mset({f"k{i}": f"v{i}" * (i % 50) for i in range(500)})
    redis_client.hset("h", "a", "1")

    async def main() -> None:
        fast = PipelinedGet(redis_server.url, connections=2, timeout=1.0)
        try:
            got = await asyncio.gather(*(fast.get(f"k{i}") for i in range(500)), fast.get("missing"))
            assert list(got[:500]) == [(f"v{i}" * (i % 50)).encode() for i in range(500)]
            assert got[500] is None
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await fast.get("h")
            assert await fast.get("k3") == b"v3v3v3"  # the connection is still usable after an error reply
        finally:
            await fast.aclose()

    asyncio.run(main())


def test_a_pause_of_the_api_process_before_the_write_is_not_a_redis_timeout(redis_server, redis_client):
    """The event loop stalls (a garbage collection, a busy callback) between queueing a GET and writing it, for
    longer than the timeout: the watchdog runs in the same loop turn as the write, and must not fail a command
    Redis has not even received yet."""
    redis_client.set("k", b"v")

    async def main():
        fast = PipelinedGet(redis_server.url, connections=1, timeout=0.3)
        try:
            assert await fast.get("k") == b"v"  # connected, watchdog armed
            proto = await fast._protocol()
            fut = proto.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            time.sleep(0.6)  # the stall: this loop does nothing for twice the timeout
            return await fut
        finally:
            await fast.aclose()

    assert asyncio.run(main()) == b"v"


def test_a_pause_after_the_write_does_not_fail_a_reply_waiting_in_the_socket(redis_server, redis_client):
    """The command is written, then the loop stalls in the same turn, and the watchdog (already due) runs right
    after: Redis's reply is in the socket, unread. The watchdog must let the loop read it first."""
    redis_client.set("k", b"v")

    async def main():
        loop = asyncio.get_running_loop()
        fast = PipelinedGet(redis_server.url, connections=1, timeout=0.3)
        try:
            assert await fast.get("k") == b"v"
            proto = await fast._protocol()
            time.sleep(0.2)  # the watchdog's timer (every 0.1 s) is due: it joins the next turn, after these two
            fut = proto.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")  # the write is queued for this turn
            loop.call_soon(time.sleep, 0.6)  # and the turn stalls right after writing
            return await fut
        finally:
            await fast.aclose()

    assert asyncio.run(main()) == b"v"


def test_selects_the_database_in_the_url(redis_server, redis_client):
    other = redis.Redis(host="127.0.0.1", port=redis_server.port, db=3)
    other.set("only-in-3", "yes")

    async def main() -> None:
        fast = PipelinedGet(f"redis://127.0.0.1:{redis_server.port}/3", timeout=1.0)
        try:
            assert await fast.get("only-in-3") == b"yes"
        finally:
            await fast.aclose()

    asyncio.run(main())
    other.flushdb()
    other.close()


def test_refused_connection_is_a_connection_error():
    async def main() -> None:
        fast = PipelinedGet(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
        with pytest.raises(RedisConnectionError):
            await fast.get("x")
        await fast.aclose()

    asyncio.run(main())


def test_silent_server_times_out_instead_of_hanging():
    """A server that accepts and never answers: the watchdog fails the wait after about the timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()

    async def main() -> float:
        fast = PipelinedGet(f"redis://127.0.0.1:{port}/0", connections=1, timeout=0.3)
        start = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await asyncio.gather(fast.get("a"), fast.get("b"))
        elapsed = time.monotonic() - start
        await fast.aclose()
        return elapsed

    try:
        elapsed = asyncio.run(main())
    finally:
        stop.set()
        t.join()
        for c in accepted:
            c.close()
        srv.close()
    assert 0.25 < elapsed < 1.5


def test_only_plain_redis_urls():
    assert PipelinedGet.supports("redis://h:1/0")
    assert not PipelinedGet.supports("rediss://h:1/0") and not PipelinedGet.supports("unix:///tmp/r.sock")
    with pytest.raises(ValueError):
        PipelinedGet("rediss://h:1/0")


def test_connect_all_opens_every_connection_before_any_request(redis_server, redis_client):
    """The API's start-up connects every pipelined connection (a first request then pays no connect); a
    server that refuses leaves the slots for the first request, without raising."""
    async def main() -> None:
        fast = PipelinedGet(redis_server.url, connections=3, timeout=0.5)
        assert await fast.connect_all(2.0) == 3
        assert all(p is not None and not p.closed for p in fast._slots)
        redis_client.set("k", b"v")
        assert [await fast.get("k") for _ in range(3)] == [b"v"] * 3
        assert await fast.connect_all(2.0) == 3  # already open: nothing reconnected
        await fast.aclose()
        refused = PipelinedGet(f"redis://127.0.0.1:{free_port()}/0", connections=2, timeout=0.5)
        assert await refused.connect_all(1.0) == 0 and refused._slots == [None, None]
        await refused.aclose()

    asyncio.run(main())
