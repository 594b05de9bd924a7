"""Tensors produced chunk by chunk: a resolved spec turned into numbers.

A tensor's flat (C-order) elements are produced in chunks of :data:`BLOCK_ELEMENTS`,
a unit of work only: under algorithm 2 every element is a function of the spec and
its index, so the bytes do not depend on how the tensor is produced (whole, chunk by
chunk, by several threads, or only the chunks that cover a requested range). Three
kinds of source:

* elementwise (constant, uniform, normal, truncated normal): the algorithm's kernels,
  given the chunk's first element index;
* index (identity, dirac, delta_orthogonal): each element is computed from its index;
* materialized (orthogonal, sparse): the whole tensor is computed once in float64,
  cast, and cut into chunks; a small bounded cache keeps recent ones for Range reads.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from . import algorithms
from .bounded_cache import WeightedCache
from .slices import Geometry
from .spec import (
    INDEXED,
    MATERIALIZED,
    Constant,
    DeltaOrthogonal,
    Dirac,
    Identity,
    Orthogonal,
    ResolvedSpec,
    Sparse,
)

BLOCK_ELEMENTS = 1 << 18
"""Elements per chunk of work (1 MiB of float32): not part of any algorithm."""

Array = np.ndarray[Any, Any]
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def thread_count() -> int:
    """Threads per pool: ``TENSORINIT_THREADS`` if set, else one per core (never changes the bytes)."""
    configured = os.environ.get("TENSORINIT_THREADS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else os.cpu_count() or 2


def default_executor() -> ThreadPoolExecutor:
    """The process-wide pool that generates blocks (one thread per core)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=thread_count(), thread_name_prefix="tensorinit-block")
        return _executor


_inner: ThreadPoolExecutor | None = None


def inner_executor() -> ThreadPoolExecutor:
    """A second pool for the parallel parts of whole-tensor schemes.

    A materialization may start inside a block-pool worker (a stream asking for an
    orthogonal block); if it queued its own parts on the same pool, every worker could
    end up waiting on parts no worker is free to run. Parts queued here never queue more.
    """
    global _inner
    with _executor_lock:
        if _inner is None:
            _inner = ThreadPoolExecutor(max_workers=thread_count(), thread_name_prefix="tensorinit-inner")
        return _inner


def stream_key(spec: ResolvedSpec, label: str = "values") -> int:
    """The key of one of ``spec``'s random streams, by its algorithm's rule."""
    return algorithms.get(spec.algorithm).stream_key(spec.seed, spec.name, label)


def orthogonal_matrix(spec: ResolvedSpec, key: int, rows: int, cols: int, gain: float) -> Array:
    """gain · Q of shape (rows, cols), float64, by ``spec``'s algorithm, its parts run on the inner pool."""
    return algorithms.get(spec.algorithm).orthogonal_matrix(key, rows, cols, gain, inner_executor())


def _orthogonal(spec: ResolvedSpec, dist: Orthogonal) -> Array:
    m = orthogonal_matrix(spec, stream_key(spec), dist.rows, dist.cols, dist.gain)
    if dist.column_axis is None:
        return m.reshape(spec.shape)
    axis = dist.column_axis
    moved = spec.shape[:axis] + spec.shape[axis + 1 :] + (spec.shape[axis],)
    return np.moveaxis(m.reshape(moved), -1, axis)


def _sparse(spec: ResolvedSpec, dist: Sparse) -> Array:
    return algorithms.get(spec.algorithm).sparse_matrix(spec, dist, inner_executor())


def _materialize(spec: ResolvedSpec) -> Array:
    dist = spec.distribution
    if isinstance(dist, Orthogonal):
        full = _orthogonal(spec, dist)
    elif isinstance(dist, Sparse):
        full = _sparse(spec, dist)
    else:  # pragma: no cover
        raise TypeError(f"not a materialized distribution: {dist!r}")
    flat = np.ascontiguousarray(full).reshape(-1)
    out = np.empty(flat.size, spec.np_dtype)

    def cast(index: int) -> None:
        # Through the compute dtype first: a 16-bit output is the rounding of its float32 twin.
        lo = index * BLOCK_ELEMENTS
        out[lo : lo + BLOCK_ELEMENTS] = flat[lo : lo + BLOCK_ELEMENTS].astype(spec.compute_dtype)

    list(inner_executor().map(cast, range(math.ceil(flat.size / BLOCK_ELEMENTS))))
    return out


MATERIALIZED_CACHE = WeightedCache[Array](sys.maxsize, 256 << 20, lambda array: array.nbytes)
"""Whole materialized tensors (orthogonal, sparse) by spec digest, 256 MiB in all, so Range reads of one are not redone."""


def materialized(spec: ResolvedSpec) -> Array:
    """The whole tensor of a materialized (orthogonal or sparse) spec, made once while it stays in MATERIALIZED_CACHE."""
    return MATERIALIZED_CACHE.get(spec.digest(), lambda: _materialize(spec))


def prefetch(executor: Executor, fn: Callable[[int], T], indices: Iterable[int], ahead: int) -> Generator[T, None, None]:
    """``fn(i)`` for each of ``indices``, computed on ``executor`` up to ``ahead`` at once, yielded in order.

    Closing the iterator cancels what has not started; an error comes out where its
    result would have.
    """
    pending: deque[Future[T]] = deque()
    todo = iter(indices)
    try:
        for index in todo:
            pending.append(executor.submit(fn, index))
            if len(pending) >= ahead:
                break
        while pending:
            done = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(executor.submit(fn, nxt))
            yield done.result()
    finally:
        for future in pending:
            future.cancel()


class Tensor:
    """The numbers of one resolved spec, available whole, by block or by element range."""

    def __init__(self, spec: ResolvedSpec):
        self.spec = spec
        self.numel = spec.numel
        self.dtype = spec.np_dtype
        self.itemsize = self.dtype.itemsize
        self.nbytes = spec.nbytes
        self.block_count = math.ceil(self.numel / BLOCK_ELEMENTS)
        self._key = stream_key(spec)
        self._matrix: Array | None = None
        dist = spec.distribution
        self._kind = "materialized" if isinstance(dist, MATERIALIZED) else "index" if isinstance(dist, INDEXED) else "elementwise"
        self._matrix_lock = threading.Lock()
        self._geometry = None if spec.slice is None else Geometry(spec.shape, spec.slice)
        self._whole = spec.unsliced()  # the key of a materialized kind's cache entry, shared by all its slices
        self._algorithm = algorithms.get(spec.algorithm)

    def _full(self) -> Array:
        """A materialized kind's whole flat tensor (cached once for every slice of it)."""
        return materialized(self._whole)

    def _fill_elementwise(self, start: int, out: Array) -> None:
        """Write full-tensor elements [start, start + len(out)) of an elementwise distribution into ``out``."""
        dist = self.spec.distribution
        if isinstance(dist, Constant):
            out.fill(self.spec.compute_dtype.type(dist.value))
        else:
            self._algorithm.fill(self.spec, self._key, start, out)

    def reseeded(self, spec: ResolvedSpec) -> Tensor:
        """This tensor's twin for ``spec``, which differs from this one's spec in the seed only.

        Everything but the stream key is shared: the web layer answers the same small
        request with many seeds, and building a Tensor anew costs more than its numbers.
        Index-built kinds that hold a matrix drawn from the key are built anew.
        """
        mine = self.spec
        if (spec.distribution, spec.shape, spec.dtype, spec.name, spec.slice, spec.algorithm) != (
            mine.distribution,
            mine.shape,
            mine.dtype,
            mine.name,
            mine.slice,
            mine.algorithm,
        ):
            raise ValueError("reseeded(): the specs differ in more than the seed")
        if isinstance(spec.distribution, DeltaOrthogonal):  # its matrix is drawn from the key
            return Tensor(spec)
        twin = object.__new__(Tensor)
        twin.__dict__.update(self.__dict__)
        twin.spec = spec
        twin._key = stream_key(spec)
        twin._whole = spec.unsliced()
        return twin

    def delta_matrix(self) -> Array:
        """The orthogonal (in, out) matrix of a delta-orthogonal tensor, drawn on first use.

        Not when the tensor is made: planning a file, or an empty tensor whose kernel
        has a zero, would pay for an up-to-2^24-element QR outside any admission.
        """
        with self._matrix_lock:
            if self._matrix is None:
                spec, dist = self.spec, self.spec.distribution
                assert isinstance(dist, DeltaOrthogonal)
                k_in, k_out = (spec.shape[-2], spec.shape[-1]) if dist.layout == "kernel_in_out" else (spec.shape[1], spec.shape[0])
                self._matrix = orthogonal_matrix(spec, self._key, k_in, k_out, dist.gain).astype(spec.compute_dtype)
            return self._matrix

    def block_bounds(self, index: int) -> tuple[int, int]:
        lo = index * BLOCK_ELEMENTS
        return lo, min(lo + BLOCK_ELEMENTS, self.numel)

    def fill_block(self, index: int, out: Array) -> None:
        """Write block ``index`` into ``out``, a contiguous 1-D array of the output dtype."""
        lo, hi = self.block_bounds(index)
        geometry = self._geometry
        if self._kind == "elementwise":
            if geometry is None:
                self._fill_elementwise(lo, out)
            else:  # one kernel call per stretch contiguous in the full tensor
                for full, at, n in geometry.pieces(lo, hi):
                    self._fill_elementwise(full, out[at : at + n])
        elif self._kind == "materialized":
            out[...] = self._full()[lo:hi] if geometry is None else self._full()[geometry.full_indices(lo, hi)]
        else:
            out[...] = self._by_index(lo, hi)
        if self.spec.fill_rows:
            self._fill_rows(lo, hi, out)

    def _fill_rows(self, lo: int, hi: int, out: Array) -> None:
        """The spec's post-step: served elements [lo, hi) that lie in a listed row of axis 0 get its value."""
        row = math.prod(self.spec.shape[1:])
        idx = None if self._geometry is None else self._geometry.full_indices(lo, hi)
        for start, stop, value in self.spec.fill_rows:
            first, last = start * row, stop * row  # full-tensor flat indices of those rows
            if idx is None:
                out[max(first, lo) - lo : max(min(last, hi), lo) - lo] = value
            else:
                out[(idx >= first) & (idx < last)] = value

    def block(self, index: int) -> Array:
        """Block ``index`` as a new 1-D array of the output dtype."""
        lo, hi = self.block_bounds(index)
        out = np.empty(hi - lo, self.dtype)
        self.fill_block(index, out)
        return out

    def _by_index(self, lo: int, hi: int) -> Array:
        spec, dist = self.spec, self.spec.distribution
        idx = np.arange(lo, hi, dtype=np.int64) if self._geometry is None else self._geometry.full_indices(lo, hi)
        values = np.zeros(hi - lo, spec.compute_dtype)
        if isinstance(dist, Identity):
            rows, cols = spec.shape[-2], spec.shape[-1]
            values[(idx // cols) % rows == idx % cols] = dist.gain
            return values
        assert isinstance(dist, Dirac | DeltaOrthogonal)
        if dist.layout == "out_in_kernel":
            n_out, n_in, kernel = spec.shape[0], spec.shape[1], spec.shape[2:]
            k = idx % math.prod(kernel)
            i = (idx // math.prod(kernel)) % n_in
            o = idx // (math.prod(kernel) * n_in)
        else:
            kernel, n_in, n_out = spec.shape[:-2], spec.shape[-2], spec.shape[-1]
            o = idx % n_out
            i = (idx // n_out) % n_in
            k = idx // (n_out * n_in)
        centre = int(np.ravel_multi_index(dist.centre, kernel))
        if isinstance(dist, Dirac):
            values[(k == centre) & (o % (n_out // dist.groups) == i)] = 1.0
        else:
            hit = k == centre
            values[hit] = self.delta_matrix()[i[hit], o[hit]]
        return values

    def block_range(self, start: int, stop: int) -> range:
        """Indices of the blocks that cover elements [start, stop)."""
        if stop <= start:
            return range(0)
        return range(start // BLOCK_ELEMENTS, (stop - 1) // BLOCK_ELEMENTS + 1)

    def iter_blocks(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        executor: Executor | None = None,
        ahead: int = 4,
    ) -> Iterator[Array]:
        """Arrays covering elements [start, stop) in order, at most one block each.

        With an executor, up to ``ahead`` blocks are computed in parallel ahead of the
        consumer; closing the iterator cancels what has not started.
        """
        stop = self.numel if stop is None else stop
        blocks = self.block_range(start, stop)

        def trim(index: int, arr: Array) -> Array:
            lo, hi = self.block_bounds(index)
            return arr[max(start - lo, 0) : len(arr) - max(hi - stop, 0)]

        if executor is None:
            for index in blocks:
                yield trim(index, self.block(index))
            return
        arrays = prefetch(executor, self.block, blocks, ahead)
        try:
            for index, arr in zip(blocks, arrays, strict=True):
                yield trim(index, arr)
        finally:
            arrays.close()  # now, not at garbage collection: cancels the blocks not started

    def read(self, start: int = 0, stop: int | None = None) -> Array:
        """Flat elements [start, stop), generating only the blocks that cover them."""
        stop = self.numel if stop is None else stop
        parts = list(self.iter_blocks(start, stop))
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)

    def iter_bytes(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        executor: Executor | None = None,
        ahead: int = 4,
    ) -> Iterator[memoryview]:
        """Little-endian bytes [start, stop) of the tensor's data, as byte-format memoryviews."""
        stop = self.nbytes if stop is None else stop
        size = self.itemsize
        first, last = start // size, -(-stop // size)
        pos = first * size
        for arr in self.iter_blocks(first, last, executor=executor, ahead=ahead):
            raw = arr.view(np.uint8).data
            lo, hi = pos, pos + len(raw)
            pos = hi
            yield raw[max(start - lo, 0) : len(raw) - max(hi - stop, 0)]

    def array(self, *, executor: Executor | None = None, out: Array | None = None) -> Array:
        """The whole tensor with its shape; chunks are filled in parallel on ``executor``.

        ``out``, if given, is a C-contiguous array of the output dtype and size to fill in
        place (how a module re-initializes its parameters); it is returned reshaped.
        """
        if out is None:
            out = np.empty(self.numel, self.dtype)
        elif out.dtype != self.dtype or out.size != self.numel or not out.flags.c_contiguous:
            raise ValueError(f"out: a C-contiguous {self.dtype} array of {self.numel} elements is needed")
        flat = out.reshape(-1)
        if self._kind == "materialized":
            flat[...] = self._full() if self._geometry is None else self._full()[self._geometry.full_indices(0, self.numel)]
            return flat.reshape(self.spec.out_shape)
        pool = executor or default_executor()

        def fill(index: int) -> None:
            lo, hi = self.block_bounds(index)
            self.fill_block(index, flat[lo:hi])

        if self.block_count <= 1:
            for index in range(self.block_count):
                fill(index)
        else:
            list(pool.map(fill, range(self.block_count)))
        return flat.reshape(self.spec.out_shape)


def generate(spec: ResolvedSpec) -> Array:
    """The whole tensor of ``spec`` as a numpy array."""
    return Tensor(spec).array()
