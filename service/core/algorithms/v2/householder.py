"""The orthogonal factor Q built from directly drawn Householder vectors, the same bytes on every x86-64 CPU.

Formula (Stewart 1980, "The efficient generation of random orthogonal matrices", SIAM
J. Numer. Anal. 17(3)): for a (big, small) matrix A of i.i.d. N(0, 1), column k from the
diagonal down, ``x = A[k:, k]``, is taken as the Householder vector of step k of a QR
factorization, and the reflector is formed as LAPACK's ``dlarfg`` forms it::

    alpha = x[0],  xi = sqrt(sum_{i>=1} x[i]^2)
    xi == 0:  tau = 0, beta = alpha, v = e_0                     (the identity)
    else:     beta = -sign(alpha)·sqrt(alpha² + xi²),  tau = (beta - alpha)/beta,
              v = [1, x[1:]·(1/(alpha - beta))]
    H_k = I - tau·v·vᵀ on rows k.., Q = H_0 H_1 … H_{small-1} I[:, :small],  d_k = sign(beta_k)

which is LAPACK ``dorgqr``'s Q; ``Q·diag(d)`` is Haar-distributed (the law of torch's
``orthogonal_``, QR of a Gaussian with the signs of diag R folded in) for about half the
work of a factorization. Q is accumulated backwards in blocks of ``BLOCK_SIZE``
reflectors in compact WY form (Schreiber & Van Loan 1989, "A storage-efficient WY
representation for products of Householder transformations"): the block's ``T`` as
LAPACK's ``dlarft`` builds it, applied as ``C ← C − V·(T·(Vᵀ·C))`` (``dlarfb``).

Hand-written because BLAS and LAPACK sum in an order chosen by the CPU kernel (vector
width, FMA, blocking, thread split), so their last bits differ between machines. Here
every sum has one order, defined in docs/algorithm.md §10 (``docs/_householder_section.md``),
using only IEEE-754 binary64 ``+ − × ÷ √`` compiled without ``fastmath`` (no FMA
contraction, no reassociation, no libm). Only ``BLOCK_SIZE`` is part of the algorithm:
the micro-kernel's tile shape, the cache blocking, the column chunks handed to threads
and the thread count change which core does an operation and when, never the operands
or the order of any element's sum.

The GEMMs run on a register-tiled 4×8 micro-kernel. numba leaves LLVM's SLP vectorizer
off (``NUMBA_SLP_VECTORIZE=0``), so a tile of scalar locals stays scalar (≈7 GFlop/s
here); the few vector intrinsics below emit plain ``<4 x double>`` ``fmul``/``fadd``
(each lane the same IEEE operation as the scalar one), which keeps the 4×8 accumulators
in eight ymm registers (≈35–40 GFlop/s per core on a Zen 3 without FMA). On a target
without AVX, LLVM splits each vector operation into SSE2 halves: same operations, same
bits.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BLOCK_SIZE: Final = 64  # reflectors per compact-WY block: part of the algorithm (docs §10), frozen

# Not part of the algorithm, tuning only: the reference in tests/core/test_householder.py knows none of
# these and reproduces the bytes.
_MR = 4  # micro-tile rows (broadcast operand)
_NR = 8  # micro-tile columns (two 4-wide vectors); Q is stored in panels of 8 columns
_RB = 64  # rows per row-block of a chunk's Q panels; divides BLOCK_SIZE so every block starts on a row-block
_LDV = BLOCK_SIZE + _NR  # row stride of a stored V (576 bytes: rows 64 apart would all fall in the same L1
#                          sets); a partial last block's tiles read its zero padding up to a multiple of 8
_MAX_CHUNK = 256  # columns of Q per task at most
_SUM_PART = 512  # columns per task of the column sums
_G_ROWS = 256  # rows of V per pass of G = VᵀV (about 150 KB, held in L2)

_JIT: dict[str, Any] = {"nogil": True, "cache": True, "error_model": "numpy"}


# --- four doubles in a ymm register ---------------------------------------------------


class _F64x4(types.Type):
    def __init__(self) -> None:
        super().__init__(name="f64x4")


_f64x4 = _F64x4()
_VEC = ir.VectorType(ir.DoubleType(), 4)


@register_model(_F64x4)
class _F64x4Model(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: Any) -> None:
        super().__init__(dmm, fe_type, _VEC)


def _pointer(context: Any, builder: Any, aryty: Any, aryval: Any, idx: Any, width: int) -> Any:
    """Address of element ``idx`` of a 1-d array; under NUMBA_BOUNDSCHECK=1 all ``width`` elements are checked."""
    ary = context.make_array(aryty)(context, builder, aryval)
    check = context.enable_boundscheck
    if check and width > 1:
        last = builder.add(idx, ir.Constant(idx.type, width - 1))
        cgutils.get_item_pointer(context, builder, aryty, ary, [last], boundscheck=True)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx], boundscheck=check)


@intrinsic
def _vload(typingctx: Any, arr: Any, idx: Any) -> Any:
    """arr[idx : idx + 4] as one vector (no wraparound of negative indices)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], 4)
        return builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=8)

    return _f64x4(arr, idx), codegen


@intrinsic
def _vstore(typingctx: Any, arr: Any, idx: Any, vec: Any) -> Any:
    """arr[idx : idx + 4] = vec."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], 4)
        builder.store(args[2], builder.bitcast(ptr, _VEC.as_pointer()), align=8)
        return context.get_dummy_value()

    return types.void(arr, idx, vec), codegen


@intrinsic
def _vsplat(typingctx: Any, arr: Any, idx: Any) -> Any:
    """arr[idx] in all four lanes (one vbroadcastsd)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        value = builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], 1))
        undef = ir.Constant(_VEC, ir.Undefined)
        lane0 = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(lane0, undef, ir.Constant(ir.VectorType(ir.IntType(32), 4), [0, 0, 0, 0]))

    return _f64x4(arr, idx), codegen


@intrinsic
def _vmadd(typingctx: Any, acc: Any, x: Any, y: Any) -> Any:
    """acc + x·y lane by lane: a rounded product, then a rounded sum (no contraction flags, so never an FMA)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fadd(args[0], builder.fmul(args[1], args[2]))

    return _f64x4(_f64x4, _f64x4, _f64x4), codegen


@intrinsic
def _sqrt(typingctx: Any, x: Any) -> Any:
    """The correctly rounded square root (llvm.sqrt: the sqrtsd instruction, never a libm call)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fn = builder.module.declare_intrinsic("llvm.sqrt", [ir.DoubleType()])
        return builder.call(fn, [args[0]])

    return types.float64(types.float64), codegen


# --- the micro-kernel -----------------------------------------------------------------
# C[r, 0:8] += sum over k = 0, 1, …, K-1 of A[r, k]·B[k, 0:8], each element accumulated
# strictly in ascending k starting from the value C holds (so a K split into calls in
# ascending order continues the same sum). Flat arrays and strides: A[r, k] is
# a[a0 + r·ars + k·aks], B[k, :] is b[b0 + k·bks : … + 8], C[r, :] is c[c0 + r·crs : … + 8].


@numba.njit(**_JIT)
def _tile4x8(k: int, a: Array, a0: int, ars: int, aks: int, b: Array, b0: int, bks: int, c: Array, c0: int, crs: int) -> None:
    c00 = _vload(c, c0)
    c01 = _vload(c, c0 + 4)
    c10 = _vload(c, c0 + crs)
    c11 = _vload(c, c0 + crs + 4)
    c20 = _vload(c, c0 + 2 * crs)
    c21 = _vload(c, c0 + 2 * crs + 4)
    c30 = _vload(c, c0 + 3 * crs)
    c31 = _vload(c, c0 + 3 * crs + 4)
    for kk in range(k):
        pb = b0 + kk * bks
        x0 = _vload(b, pb)
        x1 = _vload(b, pb + 4)
        pa = a0 + kk * aks
        s = _vsplat(a, pa)
        c00 = _vmadd(c00, s, x0)
        c01 = _vmadd(c01, s, x1)
        s = _vsplat(a, pa + ars)
        c10 = _vmadd(c10, s, x0)
        c11 = _vmadd(c11, s, x1)
        s = _vsplat(a, pa + 2 * ars)
        c20 = _vmadd(c20, s, x0)
        c21 = _vmadd(c21, s, x1)
        s = _vsplat(a, pa + 3 * ars)
        c30 = _vmadd(c30, s, x0)
        c31 = _vmadd(c31, s, x1)
    _vstore(c, c0, c00)
    _vstore(c, c0 + 4, c01)
    _vstore(c, c0 + crs, c10)
    _vstore(c, c0 + crs + 4, c11)
    _vstore(c, c0 + 2 * crs, c20)
    _vstore(c, c0 + 2 * crs + 4, c21)
    _vstore(c, c0 + 3 * crs, c30)
    _vstore(c, c0 + 3 * crs + 4, c31)


@numba.njit(**_JIT)
def _tile1x8(k: int, a: Array, a0: int, aks: int, b: Array, b0: int, bks: int, c: Array, c0: int) -> None:
    c00 = _vload(c, c0)
    c01 = _vload(c, c0 + 4)
    for kk in range(k):
        pb = b0 + kk * bks
        s = _vsplat(a, a0 + kk * aks)
        c00 = _vmadd(c00, s, _vload(b, pb))
        c01 = _vmadd(c01, s, _vload(b, pb + 4))
    _vstore(c, c0, c00)
    _vstore(c, c0 + 4, c01)


@numba.njit(**_JIT)
def _tiles(rows: int, k: int, a: Array, a0: int, ars: int, aks: int, b: Array, b0: int, bks: int, c: Array, c0: int, crs: int) -> None:
    """The micro-kernel on rows 0 … rows-1 of C (4 at a time, then one by one)."""
    r = 0
    while r + _MR <= rows:
        _tile4x8(k, a, a0 + r * ars, ars, aks, b, b0, bks, c, c0 + r * crs, crs)
        r += _MR
    while r < rows:
        _tile1x8(k, a, a0 + r * ars, aks, b, b0, bks, c, c0 + r * crs)
        r += 1


# --- step 1: the reflectors -----------------------------------------------------------


@numba.njit(**_JIT)
def _column_sums(a: Array, k0: int, k1: int, out: Array) -> None:
    """out[k - k0] = a[k+1, k]² + a[k+2, k]² + … (ascending rows, from +0.0), for k0 ≤ k < k1."""
    m = a.shape[0]
    out[:] = 0.0
    # Row by row, so the inner loop runs along a C-order row (vectorized, one sum per lane).
    for i in range(k0 + 1, m):
        hi = min(i, k1)
        row = a[i, k0:hi]
        for t in range(hi - k0):
            x = row[t]
            out[t] = out[t] + x * x


@numba.njit(**_JIT)
def _reflectors(a: Array, sums: Array, tau: Array, scale: Array, signs: Array) -> int:
    """tau_k, 1/(alpha_k − beta_k) (0 where tau_k = 0) and sign(beta_k); returns 1 + the first bad column, or 0."""
    n = a.shape[1]
    bad = 0
    for k in range(n):
        alpha = a[k, k]
        xi = _sqrt(sums[k])
        if xi == 0.0:
            beta = alpha
            tau[k] = 0.0
            scale[k] = 0.0
        else:
            norm = _sqrt(alpha * alpha + xi * xi)
            beta = norm if alpha < 0.0 else -norm
            tau[k] = (beta - alpha) / beta
            scale[k] = 1.0 / (alpha - beta)
        signs[k] = -1.0 if beta < 0.0 else 1.0
        # A NaN or infinity anywhere in the used part of the column, or xi² and alpha² both
        # underflowing (|entries| < 1e-154, never for Gaussian draws), would give no reflector.
        if bad == 0 and not (np.isfinite(alpha) and np.isfinite(xi) and np.isfinite(tau[k]) and np.isfinite(scale[k])):
            bad = k + 1
    return bad


# --- step 2: each block's V and T -----------------------------------------------------


@numba.njit(**_JIT)
def _block(a: Array, tau: Array, scale: Array, j: int, b: int, v: Array, g: Array, tneg: Array) -> None:
    """V (rows j.. of reflectors j … j+b-1, row stride _LDV) and −T of one block.

    −T is stored so that both later products are plain accumulations: (−T)·W is −(T·W)
    exactly, and C + V·(−W') is C − V·W' exactly (IEEE rounding is sign-symmetric).
    """
    r = v.shape[0]
    v[:, :] = 0.0
    for i in range(r):
        row = v[i]
        src = a[j + i, j : j + b]
        sc = scale[j : j + b]
        for p in range(min(i, b)):
            row[p] = src[p] * sc[p]
        if i < b:
            row[i] = 1.0
    for p in range(b):
        if tau[j + p] == 0.0:
            v[p + 1 :, p] = 0.0  # v = e_0 exactly (x·0 above could be −0)
    # G = VᵀV on the micro-kernel: G[p, q] sums rows ascending from +0.0; rows above p hold
    # zeros of column p and are skipped (docs §10: zero terms never change a sum).
    g[:, :] = 0.0
    vf = v.ravel()
    gf = g.ravel()
    for i0 in range(0, r, _G_ROWS):  # rows in cache-sized slices, ascending: each G entry's sum goes on in order
        for p0 in range(0, min(b, i0 + _G_ROWS), _MR):
            rows = min(_MR, b - p0)
            lo = max(i0, p0)
            hi = min(r, i0 + _G_ROWS)
            for c in range(p0 - p0 % _NR, b, _NR):
                _tiles(rows, hi - lo, vf, lo * _LDV + p0, 1, _LDV, vf, lo * _LDV + c, _LDV, gf, p0 * BLOCK_SIZE + c, BLOCK_SIZE)
    t = np.zeros((b, b))
    z = np.empty(b)
    for q in range(b):
        t[q, q] = tau[j + q]
        ntau = -tau[j + q]
        for s in range(q):
            z[s] = ntau * g[s, q]
        for p in range(q):
            acc = 0.0
            for s in range(p, q):
                acc = acc + t[p, s] * z[s]
            t[p, q] = acc
    for p in range(b):
        for q in range(b):
            tneg[p, q] = -t[p, q]


# --- step 3: Q, one chunk of columns at a time ----------------------------------------


@numba.njit(**_JIT)
def _chunk(vflat: Array, voff: IntArray, tflat: Array, m: int, n: int, c0: int, c1: int, q: Array) -> None:
    """Columns c0 … c1-1 of Q (c0 a multiple of 8), written into q.

    A column of Q only ever meets V, T and itself, so a chunk is computed start to end
    alone, whatever its bounds (it may begin inside a block). Its working copy is stored
    in 8-column panels, row-block by row-block: element (i, x) at ((i // _RB)·npan + x // 8)·_RB·8 + (i % _RB)·8 + x % 8, so that a
    micro-tile's B operand (in W = VᵀC) and its C tile (in the update) are contiguous and
    a row-block of all panels is one stretch of memory. Columns past c1 in the last panel
    are zeros and stay zeros.
    """
    w = c1 - c0
    npan = (w + _NR - 1) // _NR
    nrb = (m + _RB - 1) // _RB
    pstride = _RB * _NR
    bstride = npan * pstride
    wstride = BLOCK_SIZE * _NR
    buf = np.zeros(nrb * bstride)
    for x in range(w):
        i = c0 + x
        buf[(i // _RB) * bstride + (x // _NR) * pstride + (i % _RB) * _NR + x % _NR] = 1.0
    wv = np.empty(npan * wstride)  # W = VᵀC, panel by panel (BLOCK_SIZE rows × 8)
    wt = np.empty(npan * wstride)  # −W' = (−T)·W
    nblocks = (n + BLOCK_SIZE - 1) // BLOCK_SIZE
    for blk in range(nblocks - 1, -1, -1):
        j = blk * BLOCK_SIZE
        if j >= c1:
            continue
        b = min(BLOCK_SIZE, n - j)
        vo = voff[blk]
        to = blk * BLOCK_SIZE * BLOCK_SIZE
        # Panels [p_act, npan) hold columns ≥ j (the rest of Q is untouched by this block);
        # [p_act, p_q2) are the block's own columns, still e_(x-j) below row j, and
        # [p_q2, npan) the columns right of the block, still zero in rows j … j+b-1.
        p_act = (max(j, c0) - c0) // _NR
        p_q2 = min(npan, (max(j + b, c0) - c0 + _NR - 1) // _NR)
        wv[p_act * wstride :] = 0.0
        wt[p_act * wstride :] = 0.0
        for x in range(p_act * _NR, min(p_q2 * _NR, w)):
            col = c0 + x - j
            base = (x // _NR) * wstride + x % _NR
            for s in range(b):
                # Σ_i V[i, s]·e_col[i] = +0.0 + V[col, s]·1: the sum from +0.0 of one non-zero term.
                wv[base + s * _NR] = 0.0 + vflat[vo + col * _LDV + s]
        if p_q2 < npan:
            # W = VᵀC over rows j+b … m-1, one row-block (K = _RB) per call in ascending order.
            for i0 in range(j + b, m, _RB):
                kk = min(_RB, m - i0)
                rbase = (i0 // _RB) * bstride
                for pp in range(p_q2, npan):
                    _tiles(b, kk, vflat, vo + (i0 - j) * _LDV, 1, _LDV, buf, rbase + pp * pstride, _NR, wv, pp * wstride, _NR)
        for pp in range(p_act, npan):
            # −W' = (−T)·W; row p starts at s = p (T is upper triangular).
            base = pp * wstride
            p0 = 0
            while p0 < b:
                rows = min(_MR, b - p0)
                _tiles(rows, b - p0, tflat, to + p0 * b + p0, b, 1, wv, base + p0 * _NR, _NR, wt, base + p0 * _NR, _NR)
                p0 += rows
        # C += V·(−W') on rows j … m-1, K = b in a single call per tile: C − V[i,0]W'[0] − V[i,1]W'[1] − …
        for i0 in range(j, m, _RB):
            rows = min(_RB, m - i0)
            rbase = (i0 // _RB) * bstride
            for pp in range(p_act, npan):
                _tiles(rows, b, vflat, vo + (i0 - j) * _LDV, _LDV, 1, wt, pp * wstride, _NR, buf, rbase + pp * pstride, _NR)
    for i in range(m):
        rbase = (i // _RB) * bstride + (i % _RB) * _NR
        out = q[i, c0:c1]
        for x in range(w):
            out[x] = buf[rbase + (x // _NR) * pstride + x % _NR]


def _chunk_width(m: int, n: int) -> int:
    """Columns per task, a multiple of 8: at least 4 tasks where n allows, a working copy of at most 8 MiB."""
    by_tasks = -(-n // (4 * _NR)) * _NR
    by_cache = (1 << 20) // m // _NR * _NR
    return max(_NR, min(_MAX_CHUNK, by_tasks, by_cache))


def orthogonal_q(a: Array, executor: Executor | None = None) -> tuple[Array, Array]:
    """(Q, d) of docs/algorithm.md §10 for ``a`` of shape (big, small), big ≥ small ≥ 1.

    ``a`` is float64, C-contiguous, finite (its entries i.i.d. N(0, 1) for a Haar Q), and
    is only read, and only on and below the diagonal. Returns Q (float64, C order,
    (big, small), orthonormal columns) and d (float64, (small,), each ±1: sign(beta_k)
    with sign(0) = +1). The bytes depend on nothing but ``a``'s values.

    ``executor`` runs the parts (column sums, blocks, column chunks) in parallel; None
    runs them one by one here. Every part is a numba call that releases the GIL, so a
    ThreadPoolExecutor's threads run them on separate cores. This call waits for its
    parts: the executor must not be one whose every worker may be waiting in this call.
    """
    if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype != np.float64 or not a.flags.c_contiguous:
        raise ValueError("a must be a C-contiguous float64 matrix")
    m, n = a.shape
    if not m >= n >= 1:
        raise ValueError(f"a must have shape (big, small) with big >= small >= 1, not {a.shape}")

    def run(fn: Callable[[Any], None], items: list[Any]) -> None:
        if executor is None or len(items) == 1:
            for item in items:
                fn(item)
        else:
            list(executor.map(fn, items))

    sums = np.empty(n)
    parts = [(k0, min(n, k0 + _SUM_PART)) for k0 in range(0, n, _SUM_PART)]
    run(lambda p: _column_sums(a, p[0], p[1], sums[p[0] : p[1]]), parts)
    tau = np.empty(n)
    scale = np.empty(n)
    signs = np.empty(n)
    bad = _reflectors(a, sums, tau, scale, signs)
    if bad:
        raise ValueError(f"column {bad - 1} of a gives no reflector: a must be finite (and not all but vanishing)")

    nblocks = -(-n // BLOCK_SIZE)
    voff = np.zeros(nblocks + 1, np.int64)
    for blk in range(nblocks):
        voff[blk + 1] = voff[blk] + (m - blk * BLOCK_SIZE) * _LDV
    vflat = np.empty(int(voff[-1]))
    tflat = np.empty(nblocks * BLOCK_SIZE * BLOCK_SIZE)

    def block(blk: int) -> None:
        j = blk * BLOCK_SIZE
        b = min(BLOCK_SIZE, n - j)
        v = vflat[voff[blk] : voff[blk + 1]].reshape(m - j, _LDV)
        tneg = tflat[j * BLOCK_SIZE : j * BLOCK_SIZE + b * b].reshape(b, b)
        _block(a, tau, scale, j, b, v, np.empty((BLOCK_SIZE, BLOCK_SIZE)), tneg)

    run(block, list(range(nblocks)))

    q = np.empty((m, n))
    width = _chunk_width(m, n)
    chunks = [(c0, min(n, c0 + width)) for c0 in range(0, n, width)]

    def work(chunk: tuple[int, int]) -> int:
        c0, c1 = chunk
        return sum((m - j) * (c1 - max(c0, j)) for j in range(0, c1, BLOCK_SIZE))

    chunks.sort(key=work, reverse=True)  # longest first, so the last part to finish is a short one
    run(lambda c: _chunk(vflat, voff, tflat, m, n, c[0], c[1], q), chunks)
    return q, signs
