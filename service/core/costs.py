"""What making and summarizing a tensor costs, in operations, so that work is refused before it starts (issue 17).

One unit for every kind of work, about one float32 multiply-add on one core of the
machines in docs/benchmarks.md (0.025–0.1 ns): a matmul's operations are its own; the
other work is counted as the operations that take as long, from the measured rates
(``python -m bench.costliest``):

* an element drawn by algorithm 2's kernels: :data:`GENERATE` (5–8 ns an element, 12 on busy cores);
* an orthogonal (rows, cols) matrix: its Householder QR and the product that forms Q,
  :data:`ORTHOGONAL` × rows × cols × min(rows, cols) (0.23–0.4 ns per unit of rows·cols·min
  measured for 1024² to 4096²); a delta-orthogonal tensor's (in, out) matrix the same;
* an element summarized by /stats (float64 moments, histogram, sha256 and KS sample, past
  its draw): :data:`SUMMARIZE` (measured 4-5 times as long as the draw); and for a whole
  orthogonal matrix the Gram product of its orthogonality error, 2 × rows × cols × min(rows, cols).
"""

from __future__ import annotations

from .spec import MATERIALIZED, DeltaOrthogonal, Orthogonal, ResolvedSpec

GENERATE = 96
ORTHOGONAL = 4
SUMMARIZE = 1024


def _delta_matrix(spec: ResolvedSpec, dist: DeltaOrthogonal) -> tuple[int, int]:
    shape = spec.shape
    return (shape[-2], shape[-1]) if dist.layout == "kernel_in_out" else (shape[1], shape[0])


def matrix_flops(spec: ResolvedSpec) -> int:
    """The operations of the matrix computed whole before any of ``spec``'s bytes: an orthogonal QR (else 0)."""
    dist = spec.distribution
    if isinstance(dist, Orthogonal):
        return ORTHOGONAL * dist.rows * dist.cols * min(dist.rows, dist.cols)
    if isinstance(dist, DeltaOrthogonal):
        k_in, k_out = _delta_matrix(spec, dist)
        return ORTHOGONAL * k_in * k_out * min(k_in, k_out)
    return 0


def construction_flops(spec: ResolvedSpec) -> int:
    """The operations that make ``spec``'s served elements: all of a materialized tensor (an orthogonal or sparse
    one is computed whole, whatever its slice), else only those served (each element is drawn alone, plus the
    small matrix a delta-orthogonal's elements read)."""
    drawn = spec.full_numel if isinstance(spec.distribution, MATERIALIZED) else spec.numel
    return matrix_flops(spec) + GENERATE * drawn


def stats_flops(spec: ResolvedSpec) -> int:
    """The operations of /stats on ``spec``: its construction, every element summarized, an orthogonal's Gram product."""
    dist = spec.distribution
    gram = 2 * dist.rows * dist.cols * min(dist.rows, dist.cols) if isinstance(dist, Orthogonal) and spec.slice is None else 0
    return construction_flops(spec) + SUMMARIZE * spec.numel + gram
