"""Statistics of a tensor, in one streaming pass, beside what theory expects.

Empirical side: count, mean, std (population, ddof 0), min, max, a histogram with
edges fixed by the spec (never by the data), the sha256 of the little-endian bytes, a
Kolmogorov–Smirnov statistic against the exact CDF of the resolved distribution, and
for orthogonal the orthogonality error. Memory is bounded: blocks are folded in one at
a time (Chan et al.'s pairwise update for mean and variance), and the KS test uses the
whole tensor up to :data:`KS_SAMPLE_LIMIT` elements, beyond it the deterministic
subsample of every k-th element, k = ⌈n / KS_SAMPLE_LIMIT⌉, starting at element 0.
"""

from __future__ import annotations

import hashlib
import math
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.special
import scipy.stats

from .sampling import norm_cdf, norm_pdf, normal_mass
from .spec import (
    MATERIALIZED,
    Constant,
    DeltaOrthogonal,
    Dirac,
    Identity,
    Normal,
    Orthogonal,
    ResolvedSpec,
    Sparse,
    TruncatedNormal,
    Uniform,
)
from .streams import BLOCK_ELEMENTS, Tensor, materialized, prefetch

KS_SAMPLE_LIMIT = 1 << 20
HISTOGRAM_SIGMAS = 6.0

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Theory:
    """What the resolved distribution implies: exact moments, support, and whether KS applies."""

    mean: float
    std: float
    low: float
    high: float
    continuous: bool

    def to_dict(self) -> dict[str, Any]:
        # JSON has no infinity: an unbounded side of the support is null.
        return {
            "mean": self.mean,
            "std": self.std,
            "support": [self.low if math.isfinite(self.low) else None, self.high if math.isfinite(self.high) else None],
        }


def theory(spec: ResolvedSpec) -> Theory:
    """Exact mean, std and support of ``spec``'s distribution (before rounding to dtype)."""
    dist = spec.distribution
    if isinstance(dist, Constant):
        return Theory(dist.value, 0.0, dist.value, dist.value, False)
    if isinstance(dist, Uniform):
        return Theory((dist.low + dist.high) / 2, (dist.high - dist.low) / math.sqrt(12.0), dist.low, dist.high, True)
    if isinstance(dist, Normal):
        return Theory(dist.mean, dist.std, -math.inf, math.inf, True)
    if isinstance(dist, TruncatedNormal):
        a, b = (dist.low - dist.mean) / dist.std, (dist.high - dist.mean) / dist.std
        z = normal_mass(a, b)
        pa, pb = norm_pdf(a), norm_pdf(b)
        shift = (pa - pb) / z
        var = 1.0 + (a * pa - b * pb) / z - shift * shift
        return Theory(dist.mean + dist.std * shift, dist.std * math.sqrt(max(var, 0.0)), dist.low, dist.high, True)
    # The structured schemes' numbers below describe the whole tensor, also for a slice of it.
    n = spec.full_numel
    if isinstance(dist, Sparse):
        rows = spec.shape[0]
        keep = (rows - dist.zeros_per_column) / rows if rows else 0.0
        return Theory(0.0, dist.std * math.sqrt(keep), -math.inf, math.inf, False)
    # Structured schemes: the sum of squares is exact (gain² per orthonormal row or one).
    if isinstance(dist, Orthogonal):
        ones, g, total = min(dist.rows, dist.cols), dist.gain, 0.0
    elif isinstance(dist, Identity):
        batch = math.prod(spec.shape[:-2])
        ones, g = batch * min(spec.shape[-2], spec.shape[-1]), dist.gain
        total = ones * g
    elif isinstance(dist, Dirac):
        n_out, n_in = (spec.shape[0], spec.shape[1]) if dist.layout == "out_in_kernel" else (spec.shape[-1], spec.shape[-2])
        ones, g = dist.groups * min(n_out // dist.groups, n_in), 1.0
        total = float(ones)
    else:
        assert isinstance(dist, DeltaOrthogonal)
        n_out, n_in = (spec.shape[0], spec.shape[1]) if dist.layout == "out_in_kernel" else (spec.shape[-1], spec.shape[-2])
        ones, g, total = min(n_in, n_out), dist.gain, 0.0
    if n == 0:
        return Theory(0.0, 0.0, 0.0, 0.0, False)
    mean = total / n
    var = g * g * ones / n - mean * mean
    # identity and dirac take only the values 0 and gain; orthogonal entries lie in ±|gain|.
    low, high = (min(0.0, g), max(0.0, g)) if isinstance(dist, Identity | Dirac) else (-abs(g), abs(g))
    return Theory(mean, math.sqrt(max(var, 0.0)), low, high, False)


def histogram_range(th: Theory) -> tuple[float, float]:
    """Deterministic histogram edges: the support if finite, else mean ± 6 std; widened if empty."""
    low = th.low if math.isfinite(th.low) else th.mean - HISTOGRAM_SIGMAS * th.std
    high = th.high if math.isfinite(th.high) else th.mean + HISTOGRAM_SIGMAS * th.std
    if not high > low:
        low, high = low - 0.5, high + 0.5
    return low, high


def cdf(spec: ResolvedSpec, x: Array) -> Array:
    """Exact CDF of a continuous elementwise distribution at x (float64)."""
    dist = spec.distribution
    if isinstance(dist, Uniform):
        return np.clip((x - dist.low) / (dist.high - dist.low), 0.0, 1.0)
    if isinstance(dist, Normal):
        return np.asarray(scipy.special.ndtr((x - dist.mean) / dist.std))
    assert isinstance(dist, TruncatedNormal)
    a, b = (dist.low - dist.mean) / dist.std, (dist.high - dist.mean) / dist.std
    z = (np.clip(x, dist.low, dist.high) - dist.mean) / dist.std
    if a >= 0:  # upper tail: use survival functions for accuracy
        return np.asarray((scipy.special.ndtr(-a) - scipy.special.ndtr(-z)) / normal_mass(a, b))
    return np.asarray((scipy.special.ndtr(z) - norm_cdf(a)) / normal_mass(a, b))


def ks_test(spec: ResolvedSpec, sample: Array) -> tuple[float, float]:
    """KS statistic and p-value of ``sample`` (output dtype) against the exact CDF.

    Values are rounded to the output dtype, so each distinct value v stands for the
    rounding cell around it: the statistic compares the empirical CDF just below and at
    v with the CDF at the cell's edges (midpoints to the neighbouring representable
    values). For float32 the cells are negligibly small; for 16-bit outputs this is
    what makes the test about the distribution rather than about the rounding.
    """
    values, counts = np.unique(sample, return_counts=True)
    n = sample.size
    ecdf_hi = np.cumsum(counts) / n
    ecdf_lo = ecdf_hi - counts / n
    up = np.nextafter(values, np.array(np.inf, dtype=values.dtype)).astype(np.float64)
    down = np.nextafter(values, np.array(-np.inf, dtype=values.dtype)).astype(np.float64)
    v = values.astype(np.float64)
    f_hi = cdf(spec, (v + up) / 2)
    f_lo = cdf(spec, (v + down) / 2)
    d = float(max(np.max(np.abs(ecdf_hi - f_hi)), np.max(np.abs(ecdf_lo - f_lo))))
    return d, float(scipy.stats.kstwo.sf(d, n))


class _Moments:
    """Streaming count/mean/M2/min/max, merged block by block (Chan et al. 1979)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def merge(self, part: _BlockStats) -> None:
        n = part.count
        if not n:
            return
        delta = part.mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += part.m2 + delta * delta * self.count * n / total
        self.count = total
        self.min = min(self.min, part.min)
        self.max = max(self.max, part.max)


@dataclass(frozen=True)
class _BlockStats:
    """What one block contributes; merged in block order, so the result never depends on threads."""

    data: memoryview  # the block's bytes, for the digest
    count: int
    mean: float
    m2: float
    min: float
    max: float
    counts: Array
    below: int
    above: int
    sample: Array | None


class StatsCancelledError(Exception):
    """The caller asked (through ``halt``) that the pass stop."""


def _block_stats(tensor: Tensor, index: int, edges: Array, distinct_edges: bool, stride: int | None) -> _BlockStats:
    """What block ``index`` contributes (blocks are never empty: an empty tensor has none)."""
    block = tensor.block(index)
    x = block.astype(np.float64)
    low, high = float(edges[0]), float(edges[-1])
    # numpy bins equal widths arithmetically (no sort), the same counts as the edge search;
    # the edges themselves are searched only when some coincide (a range too narrow for its magnitude).
    counts = np.histogram(x, bins=len(edges) - 1, range=(low, high))[0] if distinct_edges else np.histogram(x, bins=edges)[0]
    mean = float(x.mean())
    sample = None
    if stride is not None:
        # A copy, never a view: a view keeps its whole block alive until the KS test, so memory
        # would grow with the tensor (2^29 elements: +2 GiB) where the sample is bounded.
        sample = block[(-(index * BLOCK_ELEMENTS)) % stride :: stride].copy()
    return _BlockStats(
        data=block.view(np.uint8).data,
        count=int(x.size),
        mean=mean,
        m2=float(np.square(x - mean).sum()),
        min=float(x.min()),
        max=float(x.max()),
        counts=counts,
        below=int(np.count_nonzero(x < low)),
        above=int(np.count_nonzero(x > high)),
        sample=sample,
    )


def compute_stats(
    spec: ResolvedSpec,
    *,
    bins: int = 64,
    tensor: Tensor | None = None,
    executor: Executor | None = None,
    halt: threading.Event | None = None,
) -> dict[str, Any]:
    """Empirical and theoretical statistics of ``spec``'s tensor, in one streaming pass.

    With an ``executor``, blocks of elementwise and index-built tensors are drawn and
    summarized there, a few ahead of the merge, which stays in block order: the result
    is the same to the last bit with or without it. Matrix-built tensors (orthogonal,
    sparse) are summarized here, from their materialized matrix, since materializing
    one queues work of its own; a delta-orthogonal tensor's matrix is drawn here first. The jobs queue nothing more; the executor must not be
    the pool this call itself runs on, or it could end up waiting on itself (the route
    runs this on the block pool and passes the inner pool). ``halt``, once set, stops
    the pass with :class:`StatsCancelledError` before its next block.
    """
    tensor = tensor or Tensor(spec)
    th = theory(spec)
    low, high = histogram_range(th)
    edges = np.linspace(low, high, bins + 1)
    distinct_edges = bool(np.all(np.diff(edges) > 0))
    counts = np.zeros(bins, np.int64)
    below = above = 0
    moments = _Moments()
    digest = hashlib.sha256()
    stride = max(1, math.ceil(spec.numel / KS_SAMPLE_LIMIT))
    sample: list[Array] = []

    def part(index: int) -> _BlockStats:
        if halt is not None and halt.is_set():
            raise StatsCancelledError
        return _block_stats(tensor, index, edges, distinct_edges, stride if th.continuous else None)

    parallel = executor is not None and tensor.block_count > 1 and not isinstance(spec.distribution, MATERIALIZED)
    if parallel and isinstance(spec.distribution, DeltaOrthogonal):
        tensor.delta_matrix()  # here: drawing it queues work on the inner pool, which the block jobs run on
    blocks = range(tensor.block_count)
    parts = prefetch(executor, part, blocks, ahead=4) if parallel and executor is not None else map(part, blocks)
    for block in parts:
        digest.update(block.data)
        moments.merge(block)
        counts += block.counts
        below += block.below
        above += block.above
        if block.sample is not None:
            sample.append(block.sample)
    if halt is not None and halt.is_set():  # the orthogonality error and the KS test are work too
        raise StatsCancelledError
    result: dict[str, Any] = {
        "count": moments.count,
        "mean": moments.mean if moments.count else None,
        "std": math.sqrt(moments.m2 / moments.count) if moments.count else None,
        "min": moments.min if moments.count else None,
        "max": moments.max if moments.count else None,
        "sha256": digest.hexdigest(),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist(), "below": below, "above": above},
        "ks": None,
        "orthogonality_error": None,
    }
    if th.continuous and moments.count:
        joined = np.concatenate(sample)
        d, p = ks_test(spec, joined)
        result["ks"] = {"statistic": d, "pvalue": p, "sample_size": int(joined.size), "stride": stride}
    if isinstance(spec.distribution, Orthogonal) and spec.numel and spec.slice is None:
        result["orthogonality_error"] = orthogonality_error(spec)
    result["theory"] = th.to_dict()
    return result


def orthogonality_error(spec: ResolvedSpec) -> float:
    """max |W·Wᵀ − gain²·I| (or WᵀW when rows > cols) of the served values, as float64."""
    dist = spec.distribution
    assert isinstance(dist, Orthogonal)
    flat = materialized(spec).astype(np.float64)
    if dist.column_axis is None:
        m = flat.reshape(dist.rows, dist.cols)
    else:
        m = np.moveaxis(flat.reshape(spec.shape), dist.column_axis, -1).reshape(dist.rows, dist.cols)
    gram = m @ m.T if dist.rows <= dist.cols else m.T @ m
    return float(np.max(np.abs(gram - dist.gain**2 * np.eye(gram.shape[0]))))
