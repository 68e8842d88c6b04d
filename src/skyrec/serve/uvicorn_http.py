"""uvicorn's httptools protocol with one write per response instead of two.

uvicorn writes a response's status line and headers (``http.response.start``) and its body
(``http.response.body``) with two ``transport.write`` calls; on uvloop each is a ``send`` system call, and on
loopback a send costs ~10-15 µs of CPU (the receiver's TCP work runs in the sender's call). Here a write is
held until the next write on the same connection (then both leave in one call) or until the end of the
event loop's current turn, whichever comes first: a response's head and body leave together, a streaming
response's chunks are never held longer than one turn, and the order of bytes on a connection is unchanged.

Used by :func:`skyrec.serve.main.run` (``http=``, uvicorn's documented way to choose the protocol class) when
httptools is installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeldWrite:
    """A transport whose ``write`` holds the bytes until the next write or the end of this loop turn."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + bytes(data))

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` over a transport whose writes are joined as described above."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeldWrite(transport, self.loop))  # type: ignore[arg-type]
