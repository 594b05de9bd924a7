"""Receiving one body over one or more responses: the I/O-free half of a transfer.

A :class:`Receiver` knows how many bytes are in, how many are announced and the ETag
that identifies them. After a cut it produces the ``Range`` + ``If-Range`` headers that
resume the transfer; the next response either continues exactly where the body broke
off (206, checked against ``Content-Range``) or, if the server answers 200 (the ETag no
longer matches, or it ignores ranges), starts the body over. Bytes go into a sink: one
preallocated buffer (:class:`MemorySink`), tensors' own storage (:class:`ScatterSink`)
or a file (:class:`FileSink`). The sync and async clients only drive it, so resume logic
lives in one place.

The sync client can hand the socket itself to :func:`receive_direct`: ``recv_into`` the
sink's own memory, one kernel copy per byte. Through httpx every 64 KiB read is copied
three times more (h11's receive buffer grows by it, h11 slices it out as bytes, the sink
copies that into place) with some twenty Python calls around it; profiled on a 256 MiB
body that was ~2/3 of the client's time.
"""

from __future__ import annotations

import bisect
import collections
import errno
import mmap
import os
import re
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Protocol

import httpx

from ._errors import IntegrityError
from ._progress import Progress
from ._safetensors import Buffer, Header, header_length, parse_header

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class Sink(Protocol):
    def reset(self, total: int | None) -> None: ...

    def write(self, offset: int, chunk: bytes) -> None: ...

    def window(self, offset: int) -> memoryview | None:
        """Writable memory for the bytes from ``offset`` on (any length > 0), or None: no direct receive."""
        ...

    def landed(self, offset: int, n: int) -> None:
        """``n`` bytes were received into ``window(offset)`` (a sink whose window is its own memory has nothing to do)."""
        ...

    def end(self) -> None:
        """A response's body is over, complete or cut: every byte counted as received must now be in place."""
        ...


# Below this, a bytearray's zero-fill is cheaper than a mapping's system calls.
MMAP_THRESHOLD = 1 << 20


def allocate(size: int, *, prefault: bool = False) -> Buffer:
    """A writable buffer of ``size`` bytes, a private anonymous mapping when large.

    ``bytearray(n)`` memsets its n bytes: a whole extra pass over memory before the first
    chunk lands (measured ~15 % of a 256 MiB receive). A mapping is zero pages the kernel
    supplies. Lazily, one page fault per 4 KiB page on first write: 0.30-0.36 s for
    256 MiB on this 2-core VM, ten times the copy itself; with ``prefault``
    (``MAP_POPULATE``) the kernel maps them all in the ``mmap`` call, 0.19-0.25 s, for a
    buffer that will be written whole anyway. Unwritten pages of a lazy mapping cost
    nothing, which :class:`ScatterSink` relies on. No MADV_HUGEPAGE: with THP
    defrag=madvise it makes page faults compact memory synchronously, and a fresh
    process measured 0.07-1.5 s for the same 256 MiB with it.
    """
    if size >= MMAP_THRESHOLD and hasattr(mmap, "MAP_PRIVATE"):
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        if prefault and hasattr(mmap, "MAP_POPULATE"):
            flags |= mmap.MAP_POPULATE
        return mmap.mmap(-1, size, flags=flags)
    return bytearray(size)


class MemorySink:
    """One buffer sized from Content-Length; chunks are copied straight into their place.

    Assigning into a memoryview slice is the one unavoidable copy out of the socket
    buffer: no list of chunks, no ``b"".join``, and arrays are then built on the buffer.
    """

    prefault = True
    """The whole buffer is written: map its pages up front (see :func:`allocate`)."""

    def __init__(self) -> None:
        self.buffer: Buffer = bytearray()
        self._view: memoryview | None = None

    def reset(self, total: int | None) -> None:
        if self._view is not None:
            self._view.release()
        if total is None:  # no Content-Length: grow, and never resume
            self.buffer, self._view = bytearray(), None
        else:
            if len(self.buffer) != total:
                self.buffer = allocate(total, prefault=self.prefault)
            self._view = memoryview(self.buffer)

    def write(self, offset: int, chunk: bytes) -> None:
        if self._view is not None:
            self._view[offset : offset + len(chunk)] = chunk
        else:
            assert isinstance(self.buffer, bytearray)
            self.buffer += chunk

    def window(self, offset: int) -> memoryview | None:
        return None if self._view is None else self._view[offset:]

    def landed(self, offset: int, n: int) -> None:
        pass

    def end(self) -> None:
        pass

    def take(self) -> Buffer:
        if self._view is not None:
            self._view.release()
            self._view = None
        return self.buffer

    def views(self, header: Header) -> dict[str, memoryview]:
        """Where each tensor's bytes are, by name, once the body is in (for hashing)."""
        view = memoryview(self.buffer)
        return {e.name: view[e.begin : e.end] for e in header.entries.values()}


Place = Callable[[Header], Mapping[str, memoryview]]
"""Given the parsed header: writable memory of exactly ``end - begin`` bytes for the tensors that have a home."""


class ScatterSink(MemorySink):
    """Each placed tensor's bytes go straight into its own memory (a parameter's storage), the rest into the buffer.

    The buffer still spans the whole body, but it is a lazy mapping (:func:`allocate`):
    pages of placed tensors are never written, so they cost nothing. The header always
    lands in the buffer; once its last byte is in, ``place`` gets it and says where each
    tensor goes, before any data byte arrives. A restart (200 after a cut) forgets the
    layout and reads the header again; a resumed 206 keeps it.
    """

    prefault = False  # placed tensors' pages of the buffer are never written

    def __init__(self, place: Place) -> None:
        super().__init__()
        self._place = place
        self.placed: dict[str, memoryview] = {}
        self._starts: list[int] = []
        self._segments: list[tuple[int, int, memoryview]] = []
        self._data_start: int | None = None

    def reset(self, total: int | None) -> None:
        super().reset(total)
        self.placed, self._starts, self._segments, self._data_start = {}, [], [], None

    def write(self, offset: int, chunk: bytes) -> None:
        if self._view is None:
            super().write(offset, chunk)
            return
        data = memoryview(chunk)
        while data:
            window = self.window(offset)
            assert window is not None
            n = min(len(window), len(data))
            window[:n] = data[:n]
            data, offset = data[n:], offset + n

    def window(self, offset: int) -> memoryview | None:
        if self._view is None:
            return None
        if self._data_start is None:
            if offset < 8:
                return self._view[offset:8]
            end = 8 + header_length(self._view)
            if offset < end:
                return self._view[offset:end]
            self._lay_out(parse_header(self._view, len(self._view)))
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0:
            begin, end, target = self._segments[i]
            if offset < end:
                return target[offset - begin :]
        following = self._starts[i + 1] if i + 1 < len(self._starts) else len(self._view)
        return self._view[offset:following]

    def _lay_out(self, header: Header) -> None:
        self._data_start = header.data_start
        placed = dict(self._place(header))
        for name, target in placed.items():
            entry = header.entries[name]
            if target.nbytes != entry.end - entry.begin or target.readonly:
                raise ValueError(f"{name}: the place for {entry.end - entry.begin} bytes is {target.nbytes} bytes or read-only")
        self._segments = sorted((header.entries[n].begin, header.entries[n].end, t.cast("B")) for n, t in placed.items() if t.nbytes)
        self._starts = [begin for begin, _, _ in self._segments]
        self.placed = placed

    def views(self, header: Header) -> dict[str, memoryview]:
        return {**super().views(header), **self.placed}


class FileSink:
    """Writes to an open file at the offsets the body gives; a restart truncates it. Memory stays flat.

    Bytes land in a staging buffer of :data:`FILE_STAGE_BYTES` (its window). Each time one
    fills up to a multiple of its size in the file, a writer thread writes it out while the
    next one fills: up to :data:`FILE_STAGES` buffers, so the socket keeps being read while
    the disk works. :meth:`end`, at the end of each response (complete or cut), writes what
    is staged and waits for the writer, so a resume always finds in the file every byte the
    receiver counts. Through httpx, a 2.47 GB checkpoint file took 3.3 s of the client's CPU
    on two cores; staged, ~0.9 s, about what ``curl -o`` takes (docs/benchmarks.md, issue 19).

    ``direct``: whole, aligned stages are written with ``O_DIRECT`` (Linux), from the
    buffer to the device, around the page cache. A buffered write copies every byte into
    newly allocated page-cache pages, which on this project's VMs costs 1-2 ns a byte of
    system time (``dd`` of 2.4 GB: 2.2-5.3 s of CPU, against 0.27 s with ``oflag=direct``
    at 1.3 GB/s); a checkpoint is read later, by training, not now. The file's first
    partial stage after a start or a resume, and its tail, are written buffered. A file
    system that refuses ``O_DIRECT`` (at open or at the first write) gets buffered writes.
    """

    def __init__(self, file: IO[bytes], *, direct: bool = False) -> None:
        self.file = file
        self._direct = direct and hasattr(os, "O_DIRECT")
        self._direct_fd: int | None = None
        self._stage: memoryview | None = None  # the buffer being filled
        self._spare: list[memoryview] = []
        self._writing: collections.deque[tuple[Future[None], memoryview]] = collections.deque()
        self._writer: ThreadPoolExecutor | None = None
        self._start = self._end = 0  # the file offsets of the bytes in the buffer being filled: [start, end)
        self._failed_at: int | None = None  # where a write failed: later ones are not made

    def reset(self, total: int | None) -> None:
        self._settle()  # nothing may land after the truncation
        self._start = self._end = 0
        self.file.seek(0)
        self.file.truncate(0)

    def write(self, offset: int, chunk: bytes) -> None:
        data = memoryview(chunk)
        while data:
            window = self.window(offset)
            n = min(len(window), len(data))
            window[:n] = data[:n]
            self.landed(offset, n)
            data, offset = data[n:], offset + n

    def window(self, offset: int) -> memoryview:
        if self._stage is None:
            self._stage = self._free_stage()
        if self._start == self._end:
            self._start = self._end = offset
        if offset != self._end:
            raise ValueError(f"FileSink: bytes for offset {offset} while {self._end} is next")
        return self._stage[offset % FILE_STAGE_BYTES :]

    def landed(self, offset: int, n: int) -> None:
        self._end = offset + n
        if self._end % FILE_STAGE_BYTES == 0:  # the buffer is full: to the writer
            assert self._stage is not None
            stage, data, at = self._stage, self._staged(), self._start
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="tensorinit-file-writer")
            self._writing.append((self._writer.submit(self._write, data, at), stage))
            self._stage, self._start = None, self._end

    def end(self) -> None:
        """Write out what is staged and wait for the writer; close the O_DIRECT descriptor (the file is the caller's).

        After a failed write (raised here or already), the file ends where it failed.
        """
        try:
            self._settle()
            if self._start != self._end and self._failed_at is None:
                self._write(self._staged(), self._start)
            self._start = self._end
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None
            if self._direct_fd is not None:
                os.close(self._direct_fd)
                self._direct_fd = None

    def _staged(self) -> memoryview:
        assert self._stage is not None
        return self._stage[self._start % FILE_STAGE_BYTES :][: self._end - self._start]

    def _free_stage(self) -> memoryview:
        """A buffer to fill: a spare one, a new one while fewer than FILE_STAGES exist, else the oldest once written."""
        if self._spare:
            return self._spare.pop()
        if len(self._writing) < FILE_STAGES:
            return memoryview(allocate(FILE_STAGE_BYTES))  # a mapping: page-aligned, as O_DIRECT needs
        future, stage = self._writing.popleft()
        future.result()
        return stage

    def _settle(self) -> None:
        """Wait for every write in flight; if one failed, the file is cut where it failed and its error raised."""
        failure: BaseException | None = None
        while self._writing:
            future, stage = self._writing.popleft()
            failure = failure or future.exception()
            self._spare.append(stage)
        if failure is not None:
            raise failure

    def _write(self, data: memoryview, offset: int) -> None:
        """Write ``data`` at ``offset``; after a failure (raised once, by its future), nothing more."""
        if self._failed_at is not None:
            return
        try:
            self._write_at(data, offset)
        except BaseException:
            # The file must stay a prefix of the body, which is what a resume reads from its
            # size: no later stage may land after a hole, and the hole's start ends the file.
            self._failed_at = offset
            os.ftruncate(self.file.fileno(), offset)
            raise

    def _write_at(self, data: memoryview, offset: int) -> None:
        done = 0
        if self._direct and offset % DIRECT_ALIGN == 0 and len(data) == FILE_STAGE_BYTES:
            done = self._write_direct(data, offset)
        if not hasattr(os, "pwrite"):  # Windows: one thread writes at a time, so the file's position is ours
            self.file.seek(offset + done)
            self.file.write(data[done:])
            self.file.flush()
            return
        while done < len(data):
            done += os.pwrite(self.file.fileno(), data[done:], offset + done)

    def _write_direct(self, data: memoryview, offset: int) -> int:
        """Bytes of ``data`` written with O_DIRECT at ``offset``: 0 where the file system refuses it."""
        if self._direct_fd is None:
            try:
                # The open file itself, through /proc: its name may since lead elsewhere.
                self._direct_fd = os.open(f"/proc/self/fd/{self.file.fileno()}", os.O_WRONLY | os.O_DIRECT)
            except OSError:  # no O_DIRECT on this file system (EINVAL), or no /proc
                self._direct = False
                return 0
        try:
            return os.pwrite(self._direct_fd, data, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # some file systems take the open and refuse the write
                raise
            self._direct = False
            return 0


DIRECT_ALIGN = 4096
"""O_DIRECT's alignment of offsets, lengths and buffers: the logical block size, 512 or 4096 bytes."""

FILE_STAGES = 3
"""A file sink's buffers: one fills while the writer has the others (one being written, one queued)."""

FILE_STAGE_BYTES = 1 << 20
"""A file sink's staging buffer. 1 MiB stays in L2 between the two copies; 4 MiB measured
four times the system time on this VM (docs/benchmarks.md, issue 19)."""


class Receiver:
    """State of one body: where it stands, what identifies it, how to ask for the rest."""

    def __init__(self, sink: Sink, progress: Progress | None = None) -> None:
        self.sink = sink
        self.progress = progress
        self.total: int | None = None
        self.received = 0
        self.high_water = 0
        self.etag: str | None = None
        self.ranges = False
        self.started = False

    @property
    def can_resume(self) -> bool:
        return self.started and self.ranges and self.etag is not None and self.total is not None and 0 < self.received < self.total

    @property
    def complete(self) -> bool:
        return self.started and (self.total is None or self.received == self.total)

    def request_headers(self) -> dict[str, str]:
        # identity: Content-Length must count the bytes we store, and a deflated
        # safetensors body of random floats would not be smaller anyway.
        headers = {"Accept-Encoding": "identity"}
        if self.can_resume:
            assert self.etag is not None
            headers["Range"] = f"bytes={self.received}-"
            headers["If-Range"] = self.etag
        return headers

    def start(self, response: httpx.Response) -> None:
        """Take a 200 or 206 response's headers, before its body is read."""
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise IntegrityError(f"the server sent Content-Encoding {encoding!r} although the client asked for identity")
        length = response.headers.get("Content-Length")
        if response.status_code == 206:
            self._resume(response, length)
            return
        self.total = int(length) if length is not None and length.isdigit() else None
        etag = response.headers.get("ETag")
        # Only a strong ETag promises byte-identical content, which a Range stitch needs.
        self.etag = etag if etag and not etag.startswith("W/") else None
        self.ranges = "bytes" in response.headers.get("Accept-Ranges", "").lower()
        self.received = 0
        self.started = True
        self.sink.reset(self.total)
        if self.progress is not None:
            self.progress.start(self.total, 0)

    def _resume(self, response: httpx.Response, length: str | None) -> None:
        if not self.can_resume:
            raise IntegrityError("the server answered 206 Partial Content to a request without Range")
        m = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if m is None:
            raise IntegrityError(f"206 with a malformed Content-Range: {response.headers.get('Content-Range')!r}")
        first, last, size = map(int, m.groups())
        if (first, last, size) != (self.received, (self.total or 0) - 1, self.total):
            raise IntegrityError(f"206 covers bytes {first}-{last}/{size}; asked for {self.received}-/{self.total}")
        etag = response.headers.get("ETag")
        if etag is not None and etag != self.etag:
            raise IntegrityError(f"206 for ETag {etag} while resuming {self.etag}")
        if length is not None and int(length) != last - first + 1:
            raise IntegrityError(f"206 Content-Length {length} does not match its Content-Range {first}-{last}")
        if self.progress is not None:
            self.progress.start(self.total, self.received)

    def feed(self, chunk: bytes) -> None:
        end = self.received + len(chunk)
        if self.total is not None and end > self.total:
            raise IntegrityError(f"the body runs past its Content-Length of {self.total} bytes")
        self.sink.write(self.received, chunk)
        self.advance(len(chunk))

    def advance(self, n: int) -> None:
        """``n`` more bytes are in the sink."""
        self.received += n
        self.high_water = max(self.high_water, self.received)
        if self.progress is not None:
            self.progress.update(self.received, self.total)

    def shortfall(self) -> str:
        return f"the body ended after {self.received} of {self.total} bytes"


DIRECT_MIN_BYTES = 1 << 20
"""Below this much left to read, h11 finishes the body: the connection then stays in the pool."""


def direct_socket(response: httpx.Response, rx: Receiver) -> socket.socket | None:
    """The plain TCP socket under ``response`` when the rest of its body can be read from it directly, else None.

    Only for HTTP/1.x over plain TCP with a Content-Length and no transfer coding: then
    the bytes after what h11 has handed out are exactly the body's remainder. Called after
    the first body chunk of ``iter_raw``: h11 hands out everything it has buffered in
    each Data event (its Content-Length reader extracts up to all that remains), so
    nothing of the body is left in h11. TLS, HTTP/2, proxies' chunked answers and
    transports without a socket (``MockTransport``, ASGI) keep going through httpx. The
    connection is then closed rather than reused, since h11 never saw the end of the
    body: one more TCP handshake, negligible beside a MiB.
    """
    if rx.total is None or rx.total - rx.received < DIRECT_MIN_BYTES:
        return None
    if not response.http_version.startswith("HTTP/1") or response.url.scheme != "http":
        return None
    if "transfer-encoding" in response.headers or rx.sink.window(rx.received) is None:
        return None
    stream = response.extensions.get("network_stream")
    sock = None if stream is None else stream.get_extra_info("socket")
    return sock if type(sock) is socket.socket else None


def receive_direct(rx: Receiver, sock: socket.socket, response: httpx.Response, timeout: float | None) -> None:
    """``recv_into`` the sink's memory until the body is complete or the peer closes (a cut: ``rx.shortfall``).

    ``timeout`` bounds each wait for data, like httpx's read timeout; socket errors
    become the httpx errors the retry policy already knows.
    """
    assert rx.total is not None
    sock.settimeout(timeout)
    while rx.received < rx.total:
        window = rx.sink.window(rx.received)
        assert window is not None
        try:
            n = sock.recv_into(window, min(len(window), rx.total - rx.received))
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=response.request) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc), request=response.request) from exc
        if n == 0:
            return
        rx.sink.landed(rx.received, n)
        rx.advance(n)
