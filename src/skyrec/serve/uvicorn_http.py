"""uvicorn's httptools protocol with one write per response instead of two.

uvicorn writes a response's status line and headers (``http.response.start``) and its body
(``http.response.body``) with two ``transport.write`` calls; on uvloop each is a ``send`` system call, and on
loopback a send costs ~10-15 µs of CPU (the receiver's TCP work runs in the sender's call). Here a write is
held until the next write on the same connection (then both leave in one call) or until the end of the
event loop's current turn, whichever comes first: a response's head and body leave together, a streaming
response's chunks are never held longer than one turn, and the order of bytes on a connection is unchanged.

A request the HTTP parser itself refuses (raw non-ASCII or control bytes in the request target, a control
byte in a header value, a malformed request line) never reaches the application; uvicorn answers it with a
plain-text 400. Both protocol classes here answer it in the API's one JSON error shape instead
(``{"error": "bad_request", "message", "request_id"}``, documented as a 400 on every operation), so a client
gets the same kind of error whichever layer refused its request.

Used by :func:`skyrec.serve.main.run` (``http=``, uvicorn's documented way to choose the protocol class):
``OneWriteHttpToolsProtocol`` when httptools is installed, ``JsonErrorH11Protocol`` otherwise.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MALFORMED = ("malformed HTTP request: the request line or a header could not be parsed (raw non-ASCII or "
             "control bytes in the path, query or a header value?); percent-encode the request target")


def malformed_request_response(extra_headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """The whole HTTP/1.1 400 response (status line, headers, JSON body) for a request the parser refused;
    the connection is closed after it, as uvicorn does."""
    rid = uuid.uuid4().hex
    body = json.dumps({"error": "bad_request", "message": MALFORMED, "request_id": rid}).encode()
    head = [b"HTTP/1.1 400 Bad Request"]
    head += [name + b": " + value for name, value in extra_headers]
    head += [b"content-type: application/json", b"content-length: " + str(len(body)).encode(),
             b"x-request-id: " + rid.encode(), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


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


class _JsonBadRequest:
    """Mixin for uvicorn's protocol classes: a request their parser refuses is answered in the JSON error shape
    (uvicorn calls ``send_400_response`` for it), then the connection is closed."""

    transport: Any
    server_state: Any

    def send_400_response(self, msg: str) -> None:
        self.transport.write(malformed_request_response(list(self.server_state.default_headers)))
        self.transport.close()


class OneWriteHttpToolsProtocol(_JsonBadRequest, HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` over a transport whose writes are joined as described above, answering
    requests its parser refuses in the JSON error shape."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeldWrite(transport, self.loop))  # type: ignore[arg-type]


class JsonErrorH11Protocol(_JsonBadRequest, H11Protocol):
    """uvicorn's ``H11Protocol`` (no httptools) answering requests its parser refuses in the JSON error shape."""
