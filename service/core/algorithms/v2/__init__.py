"""Algorithm 2: counter-based, elementwise, the same bytes on every CPU.

Every random element is a pure function of (stream key, flat element index) through
Philox4x32-10; transcendental functions are fixed polynomial evaluations in IEEE basic
operations (:mod:`.kernels`); orthogonal matrices are formed with a fixed summation
order (:mod:`.householder`). docs/algorithm.md states every step; frozen from its
first release: a change of bytes is a new algorithm module, never an edit here.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from concurrent.futures import Executor
from typing import Any

import ml_dtypes
import numpy as np

from ...spec import Normal, ResolvedSpec, Sparse, TruncatedNormal, Uniform
from . import kernels, tails
from .householder import orthogonal_q

VERSION = 2
KEY_DOMAIN = b"tensorinit:v2\x00"
_LOW32 = 0xFFFFFFFF
_BF16 = np.dtype(ml_dtypes.bfloat16)

Array = np.ndarray[Any, Any]


def stream_key(seed: int, name: str, label: str = "values") -> int:
    """256-bit key of one named random stream of a tensor.

    sha256(b"tensorinit:v2\\0" + seed as 8 little-endian bytes + label + b"\\0" + UTF-8 name),
    read as a little-endian integer; Philox uses its low 128 bits (key, then nonce).
    """
    h = hashlib.sha256(KEY_DOMAIN)
    h.update(seed.to_bytes(8, "little"))
    h.update(label.encode("ascii") + b"\x00")
    h.update(name.encode("utf-8"))
    return int.from_bytes(h.digest(), "little")


def philox_key(key: int) -> tuple[int, int, int, int]:
    """(key0, key1, nonce0, nonce1): the digest's first four little-endian 32-bit words."""
    return key & _LOW32, (key >> 32) & _LOW32, (key >> 64) & _LOW32, (key >> 96) & _LOW32


@functools.lru_cache(maxsize=1024)
def trunc_constants(dist: TruncatedNormal) -> tuple[float, float, float]:
    """(p0, dp, flip) with z = flip·Φ⁻¹(p0 + u·dp) the standard normal conditioned on [α, β].

    Upper tail (α ≥ 0): p0 = Q(β), dp = Q(α) − Q(β), flip = −1 (Q the upper-tail
    probability, so Φ⁻¹ sees small numbers, never 1 − small); otherwise p0 = Q(−α),
    dp = Q(−β) − Q(−α) (lower tail), or 1 − Q(β) − Q(−α) when the interval straddles 0,
    flip = +1. Q is :func:`tails.upper_tail`: basic operations only, no libm, and ~50 µs
    of Python, so kept per distribution (every chunk and every run of a slice asks again).
    """
    alpha = (dist.low - dist.mean) / dist.std
    beta = (dist.high - dist.mean) / dist.std
    if alpha >= 0.0:
        qa, qb = tails.upper_tail(alpha), tails.upper_tail(beta)
        return qb, qa - qb, -1.0
    pa = tails.upper_tail(-alpha)
    if beta <= 0.0:
        return pa, tails.upper_tail(-beta) - pa, 1.0
    return pa, (1.0 - tails.upper_tail(beta)) - pa, 1.0


def fill(spec: ResolvedSpec, key: int, start: int, out: Array) -> None:
    """Write flat elements [start, start + len(out)) of an elementwise spec into ``out`` (output dtype)."""
    dist = spec.distribution
    words = philox_key(key)
    if spec.compute_dtype == np.float64:
        _fill64(dist, words, start, out)
        return
    if out.dtype == np.float32:
        _fill32(dist, words, start, out)
        return
    buf = _scratch(out.shape[0])
    _fill32(dist, words, start, buf)
    if out.dtype == _BF16:
        kernels.round_bf16(buf, out.view(np.uint16))
    else:
        out[...] = buf  # float16: IEEE round to nearest even (F16C or numpy's software path agree)


_local = threading.local()


def _scratch(n: int) -> Array:
    """A float32 buffer of n elements owned by this thread, reused chunk after chunk.

    A fresh 1 MiB array per chunk is a fresh mapping from the allocator, and its page
    faults cost a quarter of drawing the chunk; the bytes do not depend on the buffer.
    """
    buf: Array | None = getattr(_local, "buf", None)
    if buf is None or buf.shape[0] < n:
        buf = np.empty(max(n, 1 << 18), np.float32)
        _local.buf = buf
    return buf[:n]


def _fill32(dist: Any, words: tuple[int, int, int, int], start: int, out: Array) -> None:
    if isinstance(dist, Uniform):
        kernels.uniform_f32(out, start, *words, float(dist.low), float(dist.high - dist.low))
    elif isinstance(dist, Normal):
        kernels.normal_f32(out, start, *words, float(dist.mean), float(dist.std))
    elif isinstance(dist, TruncatedNormal):
        kernels.truncnorm_f32(out, start, *words, *trunc_constants(dist), dist.mean, dist.std, dist.low, dist.high)
    else:  # pragma: no cover - the engine sends nothing else here
        raise TypeError(f"not an elementwise random distribution: {dist!r}")


def _fill64(dist: Any, words: tuple[int, int, int, int], start: int, out: Array) -> None:
    if isinstance(dist, Uniform):
        kernels.uniform_f64(out, start, *words, float(dist.low), float(dist.high - dist.low))
    elif isinstance(dist, Normal):
        kernels.normal_f64(out, start, *words, float(dist.mean), float(dist.std))
    elif isinstance(dist, TruncatedNormal):
        kernels.truncnorm_f64(out, start, *words, *trunc_constants(dist), dist.mean, dist.std, dist.low, dist.high)
    else:  # pragma: no cover
        raise TypeError(f"not an elementwise random distribution: {dist!r}")


GAUSSIAN_CHUNK = 1 << 18  # elements per parallel part of a Gaussian matrix (not part of the algorithm)


def normals(key: int, count: int, std: float = 1.0, executor: Executor | None = None) -> Array:
    """Elements [0, count) of the float64 N(0, std²) stream of ``key`` (the ``normal`` float64 kernel, mean 0)."""
    out = np.empty(count, np.float64)
    words = philox_key(key)

    def part(lo: int) -> None:
        kernels.normal_f64(out[lo : lo + GAUSSIAN_CHUNK], lo, *words, 0.0, std)

    starts = range(0, count, GAUSSIAN_CHUNK)
    if executor is None or count <= GAUSSIAN_CHUNK:
        for lo in starts:
            part(lo)
    else:
        list(executor.map(part, starts))
    return out


def orthogonal_matrix(key: int, rows: int, cols: int, gain: float, executor: Executor | None = None) -> Array:
    """gain · Q of shape (rows, cols), C order, float64, with orthonormal rows (rows ≤ cols) or columns.

    A = the first big·small elements of the float64 N(0, 1) stream, C order, shape
    (big, small); Q and the signs d of diag R come from :func:`householder.orthogonal_q`;
    the result is Q·(d·gain) (column k times d_k·gain), transposed when rows < cols.
    """
    big, small = max(rows, cols), min(rows, cols)
    if big * small == 0:
        return np.zeros((rows, cols), np.float64)
    a = normals(key, big * small, executor=executor).reshape(big, small)
    q, signs = orthogonal_q(a, executor=executor)
    scale = signs * gain
    q *= scale[None, :]
    return np.ascontiguousarray(q.T) if rows < cols else q


def sparse_matrix(spec: ResolvedSpec, dist: Sparse, executor: Executor | None = None) -> Array:
    """torch ``sparse_``'s law with seeded zeros: N(0, std²) values, the lowest-ranked entries of each column zeroed.

    values = the float64 N(0, std²) stream of the ``values`` key (the ``normal`` kernel with
    mean 0 and std); rank key of element e = (W[2e] << 32) | W[2e+1] of the ``mask`` stream;
    in every column, the ``zeros_per_column`` entries with the smallest (rank key, row) are 0.
    """
    rows, cols = spec.shape
    count = rows * cols
    values = normals(stream_key(spec.seed, spec.name), count, float(dist.std), executor).reshape(rows, cols)
    if dist.zeros_per_column and count:
        k0, k1, n0, n1 = philox_key(stream_key(spec.seed, spec.name, "mask"))
        w = kernels.philox_block(0, (count + 1) // 2, k0, k1, n0, n1)[: 2 * count].astype(np.uint64)
        ranks = ((w[0::2] << np.uint64(32)) | w[1::2]).reshape(rows, cols)
        order = np.argsort(ranks, axis=0, kind="stable")  # integer keys, ties by row: one answer on every machine
        values[order[: dist.zeros_per_column], np.arange(cols)] = 0.0
    return values


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel for the argument types the engine passes."""
    key = philox_key(stream_key(0, "warm-up"))
    for dtype, (uniform, normal, truncnorm) in (
        (np.float32, (kernels.uniform_f32, kernels.normal_f32, kernels.truncnorm_f32)),
        (np.float64, (kernels.uniform_f64, kernels.normal_f64, kernels.truncnorm_f64)),
    ):
        out = np.empty(8, dtype)
        uniform(out, 1, *key, -1.0, 2.0)
        normal(out, 1, *key, 0.0, 1.0)
        truncnorm(out, 1, *key, 0.1, 0.8, 1.0, 0.0, 1.0, -2.0, 2.0)
    kernels.round_bf16(np.zeros(4, np.float32), np.zeros(4, np.uint16))
    kernels.philox_block(0, 1, *key)
    orthogonal_matrix(stream_key(0, "warm-up"), 150, 130, 1.0)  # past one block of reflectors: every kernel of householder.py
