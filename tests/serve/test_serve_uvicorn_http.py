"""uvicorn's protocol with one write per response (``skyrec.serve.uvicorn_http``), on a real uvicorn server in
this process: a response's head and body leave in one write, pipelined requests are answered in order, a
streaming response's chunks are not held back, and a connection closed by the server still gets its bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

from skyrec.redis_local import free_port
from skyrec.serve.uvicorn_http import OneWriteHttpToolsProtocol, _HeldWrite

WRITES: list[bytes] = []


class _Counting:
    def __init__(self, transport: Any) -> None:
        self._t = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._t.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class _CountingProtocol(OneWriteHttpToolsProtocol):
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(_Counting(transport))


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first;", "more_body": True})
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"second", "more_body": False})
        return
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _with_server(protocol: type, check: Any) -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app, host="127.0.0.1", port=port, http=protocol, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        await check(port)
    finally:
        server.should_exit = True
        await task


async def _read_responses(reader: asyncio.StreamReader, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        out.append(await reader.readexactly(length))
    return out


def test_one_write_per_response_and_pipelined_requests_in_order():
    async def check(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        WRITES.clear()
        writer.write(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        assert await _read_responses(reader, 1) == [b"/a"]
        assert len(WRITES) == 1 and WRITES[0].startswith(b"HTTP/1.1 200") and WRITES[0].endswith(b"/a")
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(5)))
        assert await _read_responses(reader, 5) == [b"/%d" % i for i in range(5)]
        writer.close()

    asyncio.run(_with_server(_CountingProtocol, check))


def test_streamed_chunks_are_not_held_back():
    async def check(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.25)  # before the 0.3 s pause ends
        assert b"chunked" in head.lower()
        first = await asyncio.wait_for(reader.readuntil(b"first;\r\n"), 0.25)
        assert first.endswith(b"first;\r\n")
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 2)
        assert b"second" in rest
        writer.close()

    asyncio.run(_with_server(OneWriteHttpToolsProtocol, check))


def test_close_sends_what_is_held_and_abort_drops_it():
    class Fake:
        def __init__(self) -> None:
            self.out: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.out.append(data)

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

        def abort(self) -> None:
            self.closed = True

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fake = Fake()
        held = _HeldWrite(fake, loop)  # type: ignore[arg-type]
        held.write(b"head")
        assert fake.out == []
        held.close()
        assert fake.out == [b"head"] and fake.closed
        fake2 = Fake()
        held2 = _HeldWrite(fake2, loop)  # type: ignore[arg-type]
        held2.write(b"head")
        held2.abort()
        await asyncio.sleep(0)
        assert fake2.out == []
        fake3 = Fake()
        held3 = _HeldWrite(fake3, loop)  # type: ignore[arg-type]
        held3.write(b"alone")
        await asyncio.sleep(0)  # the end of the turn sends it
        assert fake3.out == [b"alone"]

    asyncio.run(main())
