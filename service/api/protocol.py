"""uvicorn's httptools protocol with the connection bounds it lacks (issue 17).

uvicorn's httptools protocol has no bound on a request head: llhttp accepts a header
of any size, and the protocol collects it with repeated concatenation, so one
connection sending 64 MiB of header held the event loop for seconds (quadratic) and
the process's memory grew by hundreds of MiB. It arms no timer before a connection's
first request, nor while a request head arrives, so a client that trickles a head one
byte at a time (slowloris) holds its connection forever. And a response whose client
stops reading waits in ``drain`` forever, holding what the app holds for it (an
admission slot, bytes in flight). This subclass adds, per connection:

* **a head bound**: a request head (request line and headers) longer than
  ``max_header_bytes`` is answered ``431 Request Header Fields Too Large`` and the
  connection closed. Only bytes before the end of the head count: a body that arrives
  in the same read is not the head's;
* **a head deadline**: a head must be complete ``header_timeout`` seconds after its
  first byte, and a new connection must send its first head within that time; else
  the connection is closed (uvicorn's ``--timeout-keep-alive`` closes a connection
  idle between requests);
* **a body deadline**: a request's body must be complete ``body_timeout`` seconds after
  its head; else it is answered ``408 Request Timeout`` (when no answer has begun) and
  the connection closed. Without it, a client that trickles a body a byte at a time
  held its connection, its request task and the body read so far for as long as it
  liked (nginx's ``client_body_timeout`` bounds only the gap between two reads);
* **a write-stall deadline**: while the transport's write buffer is over its high-water
  mark (uvicorn paused writing), it must shrink within ``write_stall_timeout`` seconds;
  else the connection is aborted, which the app sees as a disconnect: its stream is
  closed and what it held released.

Hand-written because uvicorn has none of these for httptools (its h11 protocol bounds
the head, ``--h11-max-incomplete-event-size``, but has no deadline either, and was
slower: docs/benchmarks.md, 2026-12-07). Everything else is uvicorn's.
``python -m service.api.serve`` selects this protocol (``--http``); the bounds come from
``TENSORINIT_MAX_HEADER_BYTES``, ``TENSORINIT_HEADER_TIMEOUT_SECONDS``,
``TENSORINIT_BODY_TIMEOUT_SECONDS`` and ``TENSORINIT_WRITE_STALL_SECONDS``, read once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import struct
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

from .settings import Settings

log = logging.getLogger("tensorinit.api")


@functools.cache
def _bounds() -> tuple[int, float, float, float]:
    settings = Settings()
    return settings.max_header_bytes, settings.header_timeout_seconds, settings.body_timeout_seconds, settings.write_stall_seconds


def _answer(status: int, reason: str, slug: str, detail: str) -> bytes:
    """A whole problem+json answer that closes the connection, written by the protocol itself (no app to ask)."""
    body = json.dumps(
        {"type": f"https://tensorinit.dev/problems/{slug}", "title": reason.capitalize(), "status": status, "detail": detail}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/problem+json\r\n"
        "x-content-type-options: nosniff\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


def _answer_431(limit: int) -> bytes:
    return _answer(
        431,
        "Request Header Fields Too Large",
        "header-too-large",
        f"the request head (request line and headers) exceeds {limit} bytes; allowed: at most {limit} bytes (TENSORINIT_MAX_HEADER_BYTES)",
    )


def _answer_408(seconds: float) -> bytes:
    return _answer(
        408,
        "Request Timeout",
        "request-timeout",
        f"the request body was not complete {seconds:g} s after its head; allowed: a body sent whole within "
        f"{seconds:g} s (TENSORINIT_BODY_TIMEOUT_SECONDS)",
    )


class HttpToolsProtocol(_HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded head, a head deadline and a write-stall deadline."""

    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    write_stall_timeout: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not hasattr(self, "max_header_bytes"):  # a subclass (a test) may fix them
            self.max_header_bytes, self.header_timeout, self.body_timeout, self.write_stall_timeout = _bounds()
        self._in_head = True  # between a message's first byte (or the connection's start) and the end of its head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stall_size = 0
        self._stall_since = 0.0

    # -- the head ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        room = self.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # More than the head may still take: feed what it may, and the rest only if the
        # head ended within it (a body, or a pipelined request, in the same read).
        self._head_bytes += room
        super().data_received(data[:room])
        if self._in_head:
            if not self.transport.is_closing():
                self._refuse_head()
            return
        if not self.transport.is_closing():
            self.data_received(data[room:])

    def on_message_begin(self) -> None:
        # The count goes on from the read this head began in: it was counted whole (a
        # pipelined head that begins in the read where the previous request ended is
        # counted from the next read: the bound holds to within one read).
        super().on_message_begin()
        self._in_head = True
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()
        # Armed for every request (a call_later and a cancel: microseconds): one without a
        # body completes in the same parse, and on_message_complete cancels it at once.
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.body_timeout, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        super().on_message_complete()

    # -- the body -----------------------------------------------------------------------

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        log.warning("request body from %s not complete %.3g s after its head: connection closed", self.client, self.body_timeout)
        # The app waits for the rest of the body: it wakes only to the disconnect that closing
        # brings (connection_lost), so no answer of its own follows this one.
        if self.cycle is not None and not self.cycle.response_started:
            self.transport.write(_answer_408(self.body_timeout))
        self.transport.close()

    def _refuse_head(self) -> None:
        log.warning("request head over %d bytes from %s: 431, connection closed", self.max_header_bytes, self.client)
        self._cancel_head_timer()
        self.transport.write(_answer_431(self.max_header_bytes))
        self.transport.close()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head: its deadline runs once the answer before it is out
            return
        # Nothing is owed to the client: its request never arrived whole.
        self.transport.close()

    # -- writes -------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stall_size = self.transport.get_write_buffer_size()
        self._stall_since = self.loop.time()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self._stall_tick(), self._check_stall)

    def resume_writing(self) -> None:
        self._cancel_stall_timer()
        super().resume_writing()

    def _stall_tick(self) -> float:
        return max(0.05, self.write_stall_timeout / 4)

    def _check_stall(self) -> None:
        self._stall_timer = None
        size = self.transport.get_write_buffer_size()
        if size == 0:
            return
        now = self.loop.time()
        if size < self._stall_size:  # the client read something: progress
            self._stall_size, self._stall_since = size, now
        elif now - self._stall_since >= self.write_stall_timeout:
            log.warning(
                "no write progress for %.3g s to %s (%d bytes buffered): connection aborted", now - self._stall_since, self.client, size
            )
            self._reset()
            return
        self._stall_timer = self.loop.call_later(self._stall_tick(), self._check_stall)

    def _reset(self) -> None:
        """Abort the connection with a reset: what the kernel still buffers for this client is dropped, not sent on."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()  # close() would wait for the buffer to drain, which it never does

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        self._cancel_stall_timer()
        super().connection_lost(exc)
