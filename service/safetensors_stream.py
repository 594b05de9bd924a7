"""A streaming safetensors writer: the header from the plan, then the data block by block.

The ``safetensors`` library builds the whole file in memory, so it cannot stream. The
header depends only on names, dtypes and shapes, so the exact file size is known before
a single number is drawn; the data then follows in file order, one engine block at a
time. The output is byte-identical to ``safetensors.numpy.save(arrays, metadata=...)``:

* 8 bytes little-endian header length N, then N bytes of compact JSON padded with
  spaces to a multiple of 8, then the data;
* ``__metadata__`` first, then the tensors ordered by dtype (F64, F32, BF16, F16) and,
  within a dtype, by name (code point order, which is UTF-8 byte order);
* each entry's keys in the order dtype, shape, data_offsets; non-ASCII written as UTF-8.

Any byte range of the file maps to a slice of the header plus element ranges of the
tensors, so a ``Range`` request generates only the blocks that cover it.
"""

from __future__ import annotations

import asyncio
import json
import mmap
import struct
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from service.core import Tensor
from service.core.spec import Constant

# The library's order (checked against safetensors.numpy.save in tests/api): larger
# dtypes first, and BF16 before F16.
DTYPE_ORDER = {"F64": 0, "F32": 1, "BF16": 2, "F16": 3}

MIN_CHUNK_BYTES = 1 << 20
"""Data chunks handed to the server are at least this large (but the last one), so per-send cost stays negligible; the header is sent alone."""


@dataclass(frozen=True)
class Entry:
    """One tensor's place in the file: absolute byte offsets of its data."""

    tensor: Tensor
    begin: int
    end: int

    @property
    def name(self) -> str:
        return self.tensor.spec.name


@dataclass(frozen=True)
class Piece:
    """A contiguous run of output bytes: a header slice, or bytes [lo, hi) of one block of a tensor."""

    entry: Entry | None
    block: int
    lo: int
    hi: int


class Counters:
    """Thread-safe counts of streaming work, read by tests (and by metrics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.blocks_generated = 0
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_aborted = 0

    def add(self, field: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + amount)


class Plan:
    """The layout of one safetensors file: header bytes and where each tensor's data lies."""

    def __init__(self, tensors: Sequence[Tensor], metadata: Mapping[str, str]):
        names = [t.spec.name for t in tensors]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate tensor names: {sorted(n for n in set(names) if names.count(n) > 1)}")
        ordered = sorted(tensors, key=lambda t: file_order_key(t.spec.safetensors_dtype, t.spec.name))
        header: dict[str, object] = {"__metadata__": dict(metadata)}
        offset = 0
        for t in ordered:
            header[t.spec.name] = {
                "dtype": t.spec.safetensors_dtype,
                "shape": list(t.spec.out_shape),
                "data_offsets": [offset, offset + t.nbytes],
            }
            offset += t.nbytes
        self._lay_out(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), ordered)

    @classmethod
    def from_header_json(cls, header_json: bytes, tensors: Sequence[Tensor]) -> Plan:
        """The plan of ``tensors`` (in file order) whose header JSON the caller already has.

        For callers that make the very text ``__init__`` would (the web layer's seed
        templates, held to it by a test): the JSON is taken as it is.
        """
        plan = cls.__new__(cls)
        plan._lay_out(header_json, tensors)
        return plan

    def _lay_out(self, header_json: bytes, ordered: Sequence[Tensor]) -> None:
        self.header_json = header_json
        text = header_json + b" " * (-len(header_json) % 8)
        self.header = struct.pack("<Q", len(text)) + text
        start = len(self.header)
        entries = []
        for t in ordered:
            entries.append(Entry(t, start, start + t.nbytes))
            start += t.nbytes
        self.entries = tuple(entries)
        self.size = start

    def pieces(self, start: int = 0, stop: int | None = None) -> Iterator[Piece]:
        """The pieces covering file bytes [start, stop), in order; only blocks that overlap are listed."""
        stop = self.size if stop is None else min(stop, self.size)
        if start < len(self.header) and start < stop:
            yield Piece(None, 0, start, min(stop, len(self.header)))
        for entry in self.entries:
            lo, hi = max(start, entry.begin) - entry.begin, min(stop, entry.end) - entry.begin
            if lo >= hi:
                continue
            tensor = entry.tensor
            size = tensor.itemsize
            for index in tensor.block_range(lo // size, -(-hi // size)):
                first, last = tensor.block_bounds(index)
                b0, b1 = first * size, last * size
                yield Piece(entry, index, max(lo, b0) - b0, min(hi, b1) - b0)

    def iter_bytes(self, start: int = 0, stop: int | None = None, *, executor: Executor | None = None) -> Iterator[memoryview]:
        """File bytes [start, stop) synchronously, tensor data through ``Tensor.iter_bytes``."""
        stop = self.size if stop is None else min(stop, self.size)
        if start < len(self.header) and start < stop:
            yield memoryview(self.header)[start : min(stop, len(self.header))]
        for entry in self.entries:
            lo, hi = max(start, entry.begin) - entry.begin, min(stop, entry.end) - entry.begin
            if lo < hi:
                yield from entry.tensor.iter_bytes(lo, hi, executor=executor)

    def read(self, start: int = 0, stop: int | None = None) -> bytes:
        """File bytes [start, stop) as one bytes object (tests, small files)."""
        return b"".join(self.iter_bytes(start, stop))


CHUNK_BYTES = 4 << 20
"""Consecutive whole blocks are generated into one buffer of up to this size: fewer hops between threads, fewer sends."""


def _jobs(pieces: Iterator[Piece]) -> Iterator[list[Piece]]:
    """Pieces grouped into units of work: runs of whole blocks of one tensor up to CHUNK_BYTES; any other piece alone."""
    run: list[Piece] = []
    size = 0
    for piece in pieces:
        whole = piece.entry is not None and piece.lo == 0 and piece.hi == piece.entry.tensor.itemsize * _block_len(piece)
        if run and (not whole or piece.entry is not run[0].entry or size + piece.hi > CHUNK_BYTES):
            yield run
            run, size = [], 0
        if whole:
            run.append(piece)
            size += piece.hi
        else:
            yield [piece]
    if run:
        yield run


def _block_len(piece: Piece) -> int:
    assert piece.entry is not None
    lo, hi = piece.entry.tensor.block_bounds(piece.block)
    return hi - lo


def _refs(items: list[np.ndarray], i: int) -> int:
    return sys.getrefcount(items[i])


_IDLE_REFS = _refs([np.empty(0)], 0)
"""What :func:`_refs` reads for an array that only its list refers to (measured, not assumed: it varies between Python versions)."""


class BufferPool:
    """Job buffers of CHUNK_BYTES, reused across jobs and streams.

    Hand-written because no allocator knows when the server is done with a chunk. A
    fresh 4 MiB buffer per job costs the kernel's page faults and zeroing every time,
    and glibc hands freed ones back to the kernel (trimming its heap): on 2 cores that
    was about a quarter of a served he_normal's CPU, the first requests of a process
    slowest (docs/benchmarks.md). Everything that can still read a buffer's bytes
    (a view of it, a slice, the memoryview handed to the server, a transport's pending
    write) refers to the array that owns them, so a buffer is handed out again only
    when its reference count is back to the pool's own. At most ``keep`` buffers are
    kept; beyond that a job gets a fresh one that is freed as before.
    """

    def __init__(self, size: int, keep: int):
        self.size = size
        self.keep = keep
        self._buffers: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of at least ``nbytes`` bytes that nothing else refers to."""
        if nbytes > self.size:
            return np.empty(nbytes, np.uint8)
        with self._lock:
            for i in range(len(self._buffers)):
                if _refs(self._buffers, i) <= _IDLE_REFS:
                    return self._buffers[i]
            buffer = np.empty(self.size, np.uint8)
            if len(self._buffers) < self.keep:
                self._buffers.append(buffer)
            return buffer

    def __len__(self) -> int:
        return len(self._buffers)


BUFFERS = BufferPool(CHUNK_BYTES, keep=16)


def _generate(job: list[Piece], counters: Counters | None, stop: threading.Event) -> memoryview:
    """The bytes of a job (run on the executor) in a pooled buffer; gives up between blocks once ``stop`` is set.

    A memoryview of a float array would have len() = element count; the server counts
    len() against Content-Length, so it is handed unsigned bytes.
    """
    first = job[0]
    assert first.entry is not None
    tensor = first.entry.tensor
    if len(job) == 1:
        lo, hi = tensor.block_bounds(first.block)
        buffer = BUFFERS.take((hi - lo) * tensor.itemsize)
        tensor.fill_block(first.block, buffer[: (hi - lo) * tensor.itemsize].view(tensor.dtype))
        if counters is not None:
            counters.add("blocks_generated")
        return buffer.data[first.lo : first.hi]
    buffer = BUFFERS.take(sum(p.hi for p in job))
    pos = 0
    for piece in job:
        if stop.is_set():
            break
        tensor.fill_block(piece.block, buffer[pos : pos + piece.hi].view(tensor.dtype))
        pos += piece.hi
        if counters is not None:
            counters.add("blocks_generated")
    return buffer.data[:pos]


_CONSTANT_CHUNKS: dict[tuple[str, bytes], memoryview] = {}
_MAX_CONSTANT_CHUNKS = 8


def constant_bytes(tensor: Tensor, job: list[Piece]) -> memoryview | None:
    """The bytes of ``job`` without generating them, when the tensor is constant; else None.

    Every element of a constant tensor has the same bytes, so the data is periodic with
    the item size, and any run of it of up to CHUNK_BYTES is a slice of one read-only
    buffer, made once per dtype and value (at most 8 kept: zeros and ones are what is
    asked for) by repeating the engine's own block 0. Called on the event loop only.
    """
    dist = tensor.spec.distribution
    if not isinstance(dist, Constant) or tensor.numel == 0 or tensor.spec.fill_rows:
        return None
    skip = job[0].lo % tensor.itemsize  # where in an element the run starts (a Range may cut one)
    length = sum(p.hi - p.lo for p in job)
    if skip + length > CHUNK_BYTES:
        return None
    key = (tensor.spec.dtype, np.float64(dist.value).tobytes())
    chunk = _CONSTANT_CHUNKS.get(key)
    if chunk is None:
        element = tensor.block(0).view(np.uint8)
        if not element.any():
            # All zero bits: a read-only anonymous mapping, whose every page is the kernel's
            # one zero page, so sending it reads the same 4 KiB again and again.
            chunk = memoryview(mmap.mmap(-1, CHUNK_BYTES, prot=mmap.PROT_READ))
        else:
            filled = np.resize(element, CHUNK_BYTES)  # np.resize repeats the bytes
            filled.flags.writeable = False
            chunk = filled.data
        if len(_CONSTANT_CHUNKS) >= _MAX_CONSTANT_CHUNKS:
            _CONSTANT_CHUNKS.pop(next(iter(_CONSTANT_CHUNKS)))
        _CONSTANT_CHUNKS[key] = chunk
    return chunk[skip : skip + length]


async def stream(
    plan: Plan,
    start: int = 0,
    stop: int | None = None,
    *,
    executor: Executor,
    ahead: int = 4,
    counters: Counters | None = None,
) -> AsyncIterator[bytes | memoryview]:
    """File bytes [start, stop): those of the header as one chunk, then data in chunks of at least :data:`MIN_CHUNK_BYTES`.

    The last data chunk may be shorter.

    Blocks are generated on ``executor``, in jobs of up to :data:`CHUNK_BYTES`, with up to
    ``ahead`` jobs in flight, so the event loop only moves bytes. When the consumer goes
    away (the client disconnected: the server cancels the task, or closes this
    generator), jobs not yet started are cancelled and running ones stop before their
    next block, so generation stops within one block per worker.
    """
    loop = asyncio.get_running_loop()
    jobs = _jobs(plan.pieces(start, stop))
    pending: deque[tuple[Piece, asyncio.Future[memoryview] | memoryview | None]] = deque()
    halt = threading.Event()
    done = False

    def refill() -> None:
        while len(pending) < ahead:
            job = next(jobs, None)
            if job is None:
                return
            entry = job[0].entry
            if entry is None:
                pending.append((job[0], None))
                continue
            constant = constant_bytes(entry.tensor, job)
            if constant is not None:  # nothing to generate: no thread hop, no fill
                pending.append((job[0], constant))
            else:
                pending.append((job[0], loop.run_in_executor(executor, _generate, job, counters, halt)))

    if counters is not None:
        counters.add("streams_started")
    buffered: list[memoryview] = []
    size = 0
    try:
        refill()
        while pending:
            piece, future = pending.popleft()
            if future is None:
                # The header (or the part of it asked for) goes alone, first: joined to the
                # first data chunk it would cost a copy of that chunk, and the client can
                # read names, dtypes and shapes before a number is drawn.
                refill()
                yield memoryview(plan.header)[piece.lo : piece.hi]
                continue
            chunk = future if isinstance(future, memoryview) else await future
            refill()
            buffered.append(chunk)
            size += len(chunk)
            if size >= MIN_CHUNK_BYTES:
                yield buffered[0] if len(buffered) == 1 else b"".join(buffered)
                buffered, size = [], 0
        if buffered:
            yield buffered[0] if len(buffered) == 1 else b"".join(buffered)
        done = True
    finally:
        halt.set()
        for _, future in pending:
            if isinstance(future, asyncio.Future):
                future.cancel()
        if counters is not None:
            counters.add("streams_completed" if done else "streams_aborted")


def file_order_key(tensor_dtype: str, name: str) -> tuple[int, str]:
    """Where a tensor of this safetensors dtype and name goes in the file (the library's order)."""
    return DTYPE_ORDER[tensor_dtype], name
