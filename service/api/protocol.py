"""uvicorn's httptools protocol, with a response's head and its first body bytes in one write.

uvicorn writes the status line and headers the moment the app sends
``http.response.start``, then every body message in a write of its own: two system
calls for a small answer, and on loopback each one also runs the receiver's TCP path
and wakes it. A 64×64 ``GET /init`` spent about 15 % of the server's CPU in each of
the two (py-spy, docs/benchmarks.md). Here the head is held back until the next write
of the connection, and both go out in one ``writelines`` (one ``writev`` under uvloop).

What is held is only ever a complete response head (``HTTP/1.1 …\\r\\n\\r\\n``, not a
1xx, which the client waits for), and never longer than the response: it is written
with the first body bytes, when the response completes without any (HEAD, 304, an
empty body), or before the transport closes. Everything else of the transport is
uvicorn's own. ``python -m service.api.serve`` selects this protocol (``--http``).

Hand-written because neither uvicorn nor asyncio offers it: uvicorn has no setting for
it, and a transport has no ``MSG_MORE``. The wrapper holds at most one head per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

_HEAD_START = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 << 10


class HeadHoldingTransport:
    """A transport that keeps back a response head until the next write (or completion, or close)."""

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if data:
                self._transport.writelines((head, data))
            else:
                self._transport.write(head)
            return
        if (
            isinstance(data, bytes)
            and len(data) <= _MAX_HEAD
            and data.startswith(_HEAD_START)
            and data.endswith(_HEAD_END)
            and data[9:10] != b"1"  # 1xx: the client waits for it before it sends a body
        ):
            self._head = data
            return
        self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self.flush()
        self._transport.writelines(chunks)

    def flush(self) -> None:
        """Write a held head now."""
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


class HttpToolsProtocol(_HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`HeadHoldingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = HeadHoldingTransport(transport)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        assert isinstance(self.transport, HeadHoldingTransport)
        self.transport.flush()
        super().on_response_complete()
