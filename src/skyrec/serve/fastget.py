"""A pipelined GET for the hot path: one asyncio Protocol per connection, replies matched to waiters in order.

Why not redis-py's asyncio client here: per GET it takes a pool lock, a connection, a timeout context and a
StreamReader round, ~130 µs of CPU on the reference 2-core machine, more than the rest of the request's own
work. Redis answers the commands of one connection in order, so a connection can carry many concurrent GETs:
queue the command, append a future to a FIFO, resolve futures as replies are parsed. ~20 µs per GET.

Commands issued during one turn of the event loop (concurrent requests) leave in one write: a write to a
loopback socket costs ~25 µs of CPU, as much as the rest of the GET, and under load several requests start
in the same turn.

Scope is deliberately tiny (GET and EXISTS, RESP2 bulk strings, integers, nil and errors); everything else stays on redis-py.
Failures surface as redis-py exceptions (``ConnectionError``, ``TimeoutError``, ``ResponseError``) so callers
handle one family. A watchdog closes a connection whose oldest reply is later than the timeout, failing its
waiters (they fall back to the cached answers or 503) instead of hanging; a reply is late from the moment
its command was written, so a pause of this process (a garbage collection, a busy event loop) between
queueing a command and writing it does not count against Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from typing import Any
from urllib.parse import unquote, urlparse

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class _Parser:
    """Incremental RESP2 parser for the replies GET (and AUTH/SELECT at connect) can produce."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def replies(self) -> list[Any]:
        out: list[Any] = []
        buf = self.buf
        pos = 0
        n = len(buf)
        while pos < n:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            kind = buf[pos]
            if kind == 36:  # '$' bulk string
                length = int(buf[pos + 1:end])
                if length < 0:
                    out.append(None)
                    pos = end + 2
                    continue
                stop = end + 2 + length
                if stop + 2 > n:
                    break
                out.append(bytes(buf[end + 2:stop]))
                pos = stop + 2
            elif kind == 43:  # '+' simple string
                out.append(bytes(buf[pos + 1:end]))
                pos = end + 2
            elif kind == 45:  # '-' error
                out.append(ResponseError(buf[pos + 1:end].decode("utf-8", "replace")))
                pos = end + 2
            elif kind == 58:  # ':' integer
                out.append(int(buf[pos + 1:end]))
                pos = end + 2
            else:
                raise RedisConnectionError(f"unexpected reply type {chr(kind)!r} from Redis")
        if pos:
            del buf[:pos]
        return out


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # [future, time its command was written]; inf while the command waits for this turn's write, so a
        # stall of this process's own event loop between queueing and writing is never blamed on Redis
        self.waiters: deque[list[Any]] = deque()
        self.parser = _Parser()
        self.closed = False
        self.pending: list[bytes] | None = None  # commands waiting for this turn's write
        self.overdue: asyncio.Future | None = None  # the oldest waiter, once the watchdog found it late

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        try:
            replies = self.parser.replies()
        except (ValueError, RedisConnectionError) as exc:
            self.fail(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        for reply in replies:
            if not self.waiters:
                self.fail(RedisConnectionError("reply from Redis with no request waiting"))
                return
            fut, _ = self.waiters.popleft()
            if fut.done():
                continue
            if isinstance(reply, ResponseError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_waiters(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def fail(self, exc: Exception) -> None:
        self.closed = True
        self._fail_waiters(exc)
        if self.transport is not None:
            self.transport.abort()

    def _fail_waiters(self, exc: Exception) -> None:
        while self.waiters:
            fut, _ = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def send(self, payload: bytes) -> asyncio.Future:
        """Queue one command; the commands queued during one turn of the event loop leave in one write."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiters.append([fut, math.inf])
        if self.pending is None:
            self.pending = [payload]
            loop.call_soon(self._flush)
        else:
            self.pending.append(payload)
        return fut

    def _flush(self) -> None:
        pending, self.pending = self.pending, None
        transport = self.transport
        if pending and not self.closed and transport is not None and not transport.is_closing():
            transport.write(b"".join(pending))  # (a failed connection has failed these waiters already)
            now = time.monotonic()
            for i in range(len(self.waiters) - len(pending), len(self.waiters)):  # the commands just written
                self.waiters[i][1] = now


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class PipelinedGet:
    """``await fast.get(key)`` over ``connections`` pipelined connections (round robin), made on first use."""

    def __init__(self, url: str, *, connections: int = 2, timeout: float = 0.5) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "redis":
            raise ValueError(f"pipelined GET supports redis:// URLs only, not {parsed.scheme!r}")
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.db = int((parsed.path or "/0").strip("/") or 0)
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None
        self.timeout = timeout
        self._slots: list[_Protocol | None] = [None] * max(1, connections)
        self._connecting: list[asyncio.Future | None] = [None] * len(self._slots)
        self._next = itertools.cycle(range(len(self._slots)))
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def supports(cls, url: str) -> bool:
        return urlparse(url).scheme == "redis"

    async def _connect(self, slot: int, timeout: float | None = None) -> _Protocol:
        loop = asyncio.get_running_loop()
        timeout = self.timeout if timeout is None else timeout
        try:
            _, proto = await asyncio.wait_for(loop.create_connection(_Protocol, self.host, self.port), timeout)
        except (TimeoutError, OSError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {self.host}:{self.port}: {exc}") from None
        setup = []
        if self.password is not None:
            auth = (b"AUTH", self.username.encode(), self.password.encode()) if self.username else \
                (b"AUTH", self.password.encode())
            setup.append(proto.send(_command(*auth)))
        if self.db:
            setup.append(proto.send(_command(b"SELECT", str(self.db).encode())))
        if setup:
            try:
                await asyncio.wait_for(asyncio.gather(*setup), timeout)
            except TimeoutError:
                proto.fail(RedisTimeoutError("Redis did not answer AUTH/SELECT in time"))
                raise RedisTimeoutError("Redis did not answer AUTH/SELECT in time") from None
        if self._watchdog is None:
            self._arm_watchdog()
        return proto

    async def _protocol(self) -> _Protocol:
        slot = next(self._next)
        proto = self._slots[slot]
        if proto is not None and not proto.closed:
            return proto
        pending = self._connecting[slot]
        if pending is None:  # one connect per slot at a time; concurrent callers wait for it
            pending = self._connecting[slot] = asyncio.ensure_future(self._connect(slot))
            try:
                proto = await pending
                self._slots[slot] = proto
                return proto
            finally:
                self._connecting[slot] = None
        return await asyncio.shield(pending)

    async def connect_all(self, timeout: float) -> int:
        """Open every connection now (the API's start-up), each within ``timeout``, so that no request pays for
        a connect: under load a first request's connect can take longer than the per-command timeout. A slot
        that cannot connect is left for the first request to try again. Returns the connections open."""
        opened = 0
        for slot, proto in enumerate(self._slots):
            if proto is not None and not proto.closed:
                opened += 1
                continue
            try:
                self._slots[slot] = await self._connect(slot, timeout)
                opened += 1
            except (RedisConnectionError, RedisTimeoutError):
                continue
        return opened

    async def get(self, key: str) -> bytes | None:
        proto = await self._protocol()
        return await proto.send(_command(b"GET", key.encode()))

    async def exists(self, *keys: str) -> int:
        """How many of ``keys`` exist (Redis ``EXISTS``): the hot path's check that a publication is still there."""
        proto = await self._protocol()
        return await proto.send(_command(b"EXISTS", *(k.encode() for k in keys)))

    def _arm_watchdog(self, delay: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(min(0.1, self.timeout / 2) if delay is None else delay, self._check)

    def _check(self) -> None:
        """Fail a connection whose oldest reply is overdue on two checks with a poll for replies between them:
        the first finding only marks it (the reply may be in the socket already, unread because this loop was
        busy), and the next check comes after the loop's next look at the sockets."""
        now = time.monotonic()
        recheck = False
        for proto in self._slots:
            if proto is None or proto.closed or not proto.waiters or now - proto.waiters[0][1] <= self.timeout:
                continue
            oldest = proto.waiters[0][0]
            if proto.overdue is oldest:
                proto.fail(RedisTimeoutError(f"Redis did not answer within {self.timeout} s"))
            else:
                proto.overdue, recheck = oldest, True
        self._arm_watchdog(0.0 if recheck else None)

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for i, proto in enumerate(self._slots):
            if proto is not None and proto.transport is not None:
                proto.transport.close()
            self._slots[i] = None
