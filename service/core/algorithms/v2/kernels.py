"""Algorithm 2's elementwise kernels: Philox4x32-10 words turned into numbers, in numba.

Hand-written because no library gives bytes that are the same on every CPU: numpy's
samplers are fixed per build only (and FMA-contracted on some architectures), its
transcendental ufuncs take different SIMD paths on AVX2 and AVX-512, and libm differs
between systems. Everything here uses only IEEE-754 basic operations (+ − × ÷ √,
conversions, integer and bit operations) in a fixed order, compiled without
``fastmath``, so LLVM neither reassociates nor contracts to FMA: the bits do not depend
on vector width or compiler target. docs/algorithm.md states every step; the slow
numpy twin in tests/core/test_algorithm_doc.py reproduces them from the document.

Word stream: ``W[n]`` is word ``n % 4`` of Philox4x32-10 (Salmon et al., SC'11) at
counter ``(c & 0xffffffff, c >> 32, nonce0, nonce1)`` with ``c = n // 4`` and key
``(key0, key1)``. Element ``e`` of a tensor reads fixed words of that stream (see each
kernel), so any element range, slice or thread split gives the same numbers.

Transcendentals: ``log`` is fdlibm's ``__ieee754_log`` (Sun Microsystems, 1993)
on an exact bit-level decomposition, ``sin``/``cos`` are fdlibm's ``__kernel_sin`` and
``__kernel_cos`` on ``(0, π/4)`` with the octant taken exactly from the integer
angle, and the normal quantile is Wichura's AS 241 (Applied Statistics 37, 1988),
branch-free so that the loop vectorizes.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_JIT: dict[str, Any] = {"nogil": True, "cache": True, "error_model": "numpy"}

CHUNK_GROUPS = 512  # Philox groups drawn per pass into a scratch buffer that stays in L1 (not part of the algorithm)

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@intrinsic
def _f64_bits(typingctx: Any, x: Any) -> Any:
    """The IEEE-754 bit pattern of a float64, as an int64 (no arithmetic: a register move)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx: Any, x: Any) -> Any:
    """The float64 whose IEEE-754 bit pattern is the int64 ``x``."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _f32_bits(typingctx: Any, x: Any) -> Any:
    """The IEEE-754 bit pattern of a float32, as an int32."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@numba.njit(inline="always", **_JIT)
def philox4(c: Any, key0: Any, key1: Any, nonce0: Any, nonce1: Any) -> tuple[Any, Any, Any, Any]:
    """The four words of Philox4x32-10 at counter (c mod 2^32, c div 2^32, nonce0, nonce1), as uint64s."""
    c = np.uint64(c)
    c0 = c & _LO
    c1 = c >> _S32
    c2 = nonce0
    c3 = nonce1
    k0 = key0
    k1 = key1
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = ((p1 >> _S32) ^ c1 ^ k0) & _LO, p1 & _LO, ((p0 >> _S32) ^ c3 ^ k1) & _LO, p0 & _LO
        k0 = (k0 + _W0) & _LO
        k1 = (k1 + _W1) & _LO
    return c0, c1, c2, c3


@numba.njit(inline="always", **_JIT)
def philox_words(words: Any, first: Any, count: Any, key0: Any, key1: Any, nonce0: Any, nonce1: Any) -> None:
    """``words[4i : 4i+4]`` = Philox4x32-10 at counter ``first + i``, for i < count."""
    for i in range(count):
        c0, c1, c2, c3 = philox4(first + i, key0, key1, nonce0, nonce1)
        words[4 * i] = np.uint32(c0)
        words[4 * i + 1] = np.uint32(c1)
        words[4 * i + 2] = np.uint32(c2)
        words[4 * i + 3] = np.uint32(c3)


@numba.njit(**_JIT)
def philox_block(first: int, count: int, key0: int, key1: int, nonce0: int, nonce1: int) -> Any:
    """4·count words of the stream from counter ``first``, in a new array (sparse's rank keys, tests)."""
    words = np.empty(4 * count, np.uint32)
    philox_words(words, np.int64(first), np.int64(count), np.uint64(key0), np.uint64(key1), np.uint64(nonce0), np.uint64(nonce1))
    return words


# -- the float32 pipeline -------------------------------------------------------
# Each chunk of Philox groups is drawn into four planes (lane k of group g at
# planes[k, g]), each plane is turned into numbers by a plain loop over contiguous
# memory, and the planes are interleaved back into element order (element 4g + k).
# Three simple loops vectorize where one fused loop with four-way strided stores does
# not; none of this changes a value, only the order in which elements are computed.


@numba.njit(inline="always", **_JIT)
def philox_planes(planes: Any, first: Any, count: Any, key0: Any, key1: Any, nonce0: Any, nonce1: Any) -> None:
    """planes[k, i] = word k of Philox4x32-10 at counter ``first + i``, for i < count."""
    for i in range(count):
        c0, c1, c2, c3 = philox4(first + i, key0, key1, nonce0, nonce1)
        planes[0, i] = np.uint32(c0)
        planes[1, i] = np.uint32(c1)
        planes[2, i] = np.uint32(c2)
        planes[3, i] = np.uint32(c3)


@numba.njit(inline="always", **_JIT)
def _emit_planes(out: Any, j: int, skip: int, m: int, values: Any, scratch: Any, groups: int) -> None:
    """out[j + t] = element skip + t of the chunk (element 4g + k is values[k, g]), t < m."""
    whole = skip == 0 and m == 4 * groups
    dst = out[j : j + m] if whole else scratch
    v0, v1, v2, v3 = values[0], values[1], values[2], values[3]
    for g in range(groups):
        dst[4 * g] = v0[g]
        dst[4 * g + 1] = v1[g]
        dst[4 * g + 2] = v2[g]
        dst[4 * g + 3] = v3[g]
    if not whole:
        for t in range(m):
            out[j + t] = scratch[skip + t]


# fdlibm e_log.c
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_MANT = np.int64(0x000FFFFFFFFFFFFF)
_SQRT2_MANT = np.int64(0x6A09E667F3BCD)  # mantissa bits of √2


@numba.njit(inline="always", **_JIT)
def log_pos(x: float) -> float:
    """ln x for a positive normal float64 (fdlibm's algorithm, branch-free)."""
    bits = _f64_bits(x)
    mant = bits & _MANT
    big = mant > _SQRT2_MANT  # 1.mant > √2: use (1.mant)/2 and one more in the exponent
    k = (bits >> np.int64(52)) - np.int64(1023) + np.int64(1 if big else 0)
    m = _bits_f64(mant | (np.int64(0x3FE0000000000000) if big else np.int64(0x3FF0000000000000)))
    f = m - 1.0
    dk = fraction(k + np.int64(2048), 40) * 2.0**40 - 2048.0  # float(k), exactly (|k| < 1100)
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    return dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)


# fdlibm k_sin.c / k_cos.c
_S1 = -1.66666666666666324348e-01
_S2 = 8.33333333332248946124e-03
_S3 = -1.98412698298579493134e-04
_S4 = 2.75573137070700676789e-06
_S5 = -2.50507602534068634195e-08
_S6 = 1.58969099521155010221e-10
_C1 = 4.16666666666666019037e-02
_C2 = -1.38888888888741095749e-03
_C3 = 2.48015872894767294178e-05
_C4 = -2.75573143513906633035e-07
_C5 = 2.08757232129817482790e-09
_C6 = -1.13596475577881948265e-11
_PIO4 = 7.85398163397448278999e-01  # float64 nearest π/4


@numba.njit(inline="always", **_JIT)
def sin_kernel(x: float) -> float:
    z = x * x
    v = z * x
    r = _S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))
    return x + v * (_S1 + z * r)


@numba.njit(inline="always", **_JIT)
def cos_kernel(x: float) -> float:
    z = x * x
    r = z * (_C1 + z * (_C2 + z * (_C3 + z * (_C4 + z * (_C5 + z * _C6)))))
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + z * r)


@numba.njit(inline="always", **_JIT)
def cos_sin_turn(octant: Any, frac: Any, frac_bits: int) -> tuple[float, float]:
    """(cos φ, sin φ) for φ = 2π·(octant + x)/8, x = (frac + ½)/2^frac_bits, octant in 0..7.

    The octant and the reflection of odd octants are integer operations, so the only
    rounding before the polynomials is t = x·(π/4). With s, c = sin t, cos t: an odd
    octant swaps them (ψ = π/2 − t'), and the quadrant q = octant >> 1 rotates by q·π/2:
    cos φ takes s where (octant ^ q) is odd, else c, negated for q in {1, 2}; sin φ takes
    the other, negated for q in {2, 3}.
    """
    o = np.int64(octant)
    f = np.int64(frac)
    odd = o & np.int64(1)
    g = (((np.int64(1) << np.int64(frac_bits)) - np.int64(1)) ^ f) if odd != 0 else f
    t = (fraction(g, frac_bits) + 0.5 * fraction(np.int64(1), frac_bits)) * _PIO4
    s = sin_kernel(t)
    c = cos_kernel(t)
    q = o >> np.int64(1)
    swap = ((odd ^ q) & np.int64(1)) != 0
    cosv = s if swap else c
    sinv = c if swap else s
    cneg = ((q + np.int64(1)) & np.int64(2)) != 0
    sneg = (q & np.int64(2)) != 0
    return (-cosv if cneg else cosv), (-sinv if sneg else sinv)


_ONE_BITS = np.int64(0x3FF0000000000000)


# Integer → float conversions below go through the bit pattern of a float in [1, 2):
# x86 before AVX-512 has no vector instruction for unsigned or 64-bit integer
# conversion, and a scalar one would stop the loop from vectorizing. Each is exact.


@numba.njit(inline="always", **_JIT)
def fraction(m: Any, bits: Any) -> float:
    """m·2^-bits for an integer 0 ≤ m < 2^bits, bits ≤ 52, exactly."""
    return _bits_f64(_ONE_BITS | (np.int64(m) << (np.int64(52) - np.int64(bits)))) - 1.0


@numba.njit(inline="always", **_JIT)
def open32(w: Any) -> float:
    """(w + ½)·2^-32: a uniform on (0, 1) from one word, exact in float64."""
    return fraction(w, 32) + 2.0**-33


@numba.njit(inline="always", **_JIT)
def bits52(hi: Any, lo: Any) -> Any:
    """The 52-bit integer (hi << 20) | (lo >> 12) of two words."""
    return (np.int64(hi) << np.int64(20)) | (np.int64(lo) >> np.int64(12))


@numba.njit(inline="always", **_JIT)
def open52(hi: Any, lo: Any) -> float:
    """(bits52 + ½)·2^-52: a uniform on (0, 1) from two words, exact in float64."""
    return fraction(bits52(hi, lo), 52) + 2.0**-53


@numba.njit(inline="always", **_JIT)
def unit53(hi: Any, lo: Any) -> float:
    """((hi << 21) | (lo >> 11))·2^-53: a uniform on [0, 1) from two words, exactly.

    The top 52 of the 53 bits go through :func:`fraction`, the last is added as 0 or 2^-53.
    """
    n = (np.int64(hi) << np.int64(21)) | (np.int64(lo) >> np.int64(11))
    return fraction(n >> np.int64(1), 52) + (2.0**-53 if (n & np.int64(1)) != 0 else 0.0)


# ---------------------------------------------------------------------------- uniform


@numba.njit(**_JIT)
def uniform_f32(out: Any, start: int, key0: int, key1: int, nonce0: int, nonce1: int, low: float, width: float) -> None:
    """out[j] = f32(W[e] >> 8)·2^-24 · f32(width) + f32(low), e = start + j, in float32."""
    n = out.size
    lo32 = np.float32(low)
    wd32 = np.float32(width)
    planes = np.empty((4, CHUNK_GROUPS), np.uint32)
    values = np.empty((4, CHUNK_GROUPS), np.float32)
    scratch = np.empty(4 * CHUNK_GROUPS, np.float32)
    k0, k1, c2, c3 = np.uint64(key0), np.uint64(key1), np.uint64(nonce0), np.uint64(nonce1)
    j = 0
    while j < n:
        e = start + j
        g0 = e >> 2
        groups = min(CHUNK_GROUPS, ((start + n + 3) >> 2) - g0)
        philox_planes(planes, g0, groups, k0, k1, c2, c3)
        for k in range(4):
            pw, pv = planes[k], values[k]
            for g in range(groups):
                pv[g] = np.float32(np.int32(pw[g] >> np.uint32(8))) * _TWO_M24_F * wd32 + lo32
        skip = e - 4 * g0
        m = min(n - j, 4 * groups - skip)
        _emit_planes(out, j, skip, m, values, scratch, groups)
        j += m


@numba.njit(**_JIT)
def uniform_f64(out: Any, start: int, key0: int, key1: int, nonce0: int, nonce1: int, low: float, width: float) -> None:
    """out[j] = unit53(W[2e], W[2e+1]) · width + low, e = start + j, in float64."""
    n = out.size
    words = np.empty(4 * CHUNK_GROUPS, np.uint32)
    k0, k1, c2, c3 = np.uint64(key0), np.uint64(key1), np.uint64(nonce0), np.uint64(nonce1)
    j = 0
    while j < n:
        e = start + j
        g0 = e >> 1
        groups = min(CHUNK_GROUPS, ((start + n + 1) >> 1) - g0)
        philox_words(words, g0, groups, k0, k1, c2, c3)
        skip = e - 2 * g0
        m = min(n - j, 2 * groups - skip)
        for t in range(m):
            p = 2 * (skip + t)
            out[j + t] = unit53(words[p], words[p + 1]) * width + low
        j += m


# ---------------------------------------------------------------------------- normal (Box–Muller)


@numba.njit(inline="always", **_JIT)
def _radius(u: float) -> float:
    return np.sqrt(-2.0 * log_pos(u))


@numba.njit(inline="always", **_JIT)
def _scatter_pairs(out: Any, j: int, skip: int, m: int, zc: Any, zs: Any) -> None:
    """out[j + t] = element skip + t of the chunk, t < m: even elements from zc, odd from zs."""
    t = 0
    if skip & 1:  # a leading odd element: its pair's even half lies before the range
        out[j] = zs[skip >> 1]
        t = 1
    q0 = (skip + t) >> 1
    pairs = (m - t) >> 1
    for q in range(pairs):  # a plain two-way interleave, which vectorizes
        out[j + t + 2 * q] = zc[q0 + q]
        out[j + t + 2 * q + 1] = zs[q0 + q]
    if (m - t) & 1:  # a trailing even element
        out[j + m - 1] = zc[q0 + pairs]


@intrinsic
def _bits_f32(typingctx: Any, x: Any) -> Any:
    """The float32 whose IEEE-754 bit pattern is the int32 ``x``."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


# fdlibm (FreeBSD msun) e_logf.c, and Taylor coefficients for sin/cos on (0, π/4) rounded
# to float32 (their truncation error there is below half a float32 ulp).
_f32 = np.float32
_LN2_HI_F = _f32(6.9313812256e-01)  # 0x3f317180
_LN2_LO_F = _f32(9.0580006145e-06)  # 0x3717f7d1
_LG1_F = _f32(0xAAAAAA * 2.0**-24)
_LG2_F = _f32(0xCCCE13 * 2.0**-25)
_LG3_F = _f32(0x91E9EE * 2.0**-25)
_LG4_F = _f32(0xF89E26 * 2.0**-26)
_SIN_F = (_f32(-1 / 6), _f32(1 / 120), _f32(-1 / 5040), _f32(1 / 362880))
_COS_F = (_f32(-0.5), _f32(1 / 24), _f32(-1 / 720), _f32(1 / 40320))
_PIO4_F = _f32(0.785398163397448309616)
_HALF_F = _f32(0.5)
_ONE_F = _f32(1.0)
_TWO_F = _f32(2.0)
_MTWO_F = _f32(-2.0)
_TWO_M23_F = _f32(2.0**-23)
_TWO_M24_F = _f32(2.0**-24)
_TWO_M20_F = _f32(2.0**-20)
_TWO_M21_F = _f32(2.0**-21)
_MANT_F = np.int32(0x7FFFFF)
_SQRT2_MANT_F = np.int32(0x3504F3)  # mantissa bits of √2 in float32


@numba.njit(inline="always", **_JIT)
def log_pos_f32(x: Any) -> Any:
    """ln x for a positive normal float32, in float32 (fdlibm's logf, branch-free)."""
    bits = _f32_bits(x)
    mant = bits & _MANT_F
    big = mant > _SQRT2_MANT_F
    k = (bits >> np.int32(23)) - np.int32(127) + (np.int32(1) if big else np.int32(0))
    m = _bits_f32(mant | (np.int32(0x3F000000) if big else np.int32(0x3F800000)))
    f = m - _ONE_F
    dk = np.float32(k)
    s = f / (_TWO_F + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2_F + w * _LG4_F)
    t2 = z * (_LG1_F + w * _LG3_F)
    r = t2 + t1
    hfsq = _HALF_F * f * f
    return dk * _LN2_HI_F - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO_F)) - f)


@numba.njit(inline="always", **_JIT)
def cos_sin_turn_f32(w: Any) -> tuple[Any, Any]:
    """(cos φ, sin φ) in float32 for an angle word w: octant = w >> 29, fraction = (w >> 9) & (2^20 − 1).

    As :func:`cos_sin_turn`, with t = ((g·2^-20 + 2^-21)·f32(π/4)) and degree-9/8 Taylor
    polynomials in float32: sin t = t + (t·z)·(S1 + z·(S2 + z·(S3 + z·S4))),
    cos t = 1 + z·(C1 + z·(C2 + z·(C3 + z·C4))), z = t·t.
    """
    o = np.int32(w >> np.uint32(29))
    frac = np.int32((w >> np.uint32(9)) & np.uint32(0xFFFFF))
    odd = o & np.int32(1)
    g = (np.int32(0xFFFFF) ^ frac) if odd != 0 else frac
    t = (np.float32(g) * _TWO_M20_F + _TWO_M21_F) * _PIO4_F
    z = t * t
    s = t + (t * z) * (_SIN_F[0] + z * (_SIN_F[1] + z * (_SIN_F[2] + z * _SIN_F[3])))
    c = _ONE_F + z * (_COS_F[0] + z * (_COS_F[1] + z * (_COS_F[2] + z * _COS_F[3])))
    q = o >> np.int32(1)
    swap = ((odd ^ q) & np.int32(1)) != 0
    cosv = s if swap else c
    sinv = c if swap else s
    cneg = ((q + np.int32(1)) & np.int32(2)) != 0
    sneg = (q & np.int32(2)) != 0
    return (-cosv if cneg else cosv), (-sinv if sneg else sinv)


@numba.njit(inline="always", **_JIT)
def _box_muller_f32(radius_word: Any, angle_word: Any, std32: Any, mean32: Any) -> tuple[Any, Any]:
    u = np.float32(np.int32(radius_word >> np.uint32(9))) * _TWO_M23_F + _TWO_M24_F
    r = np.sqrt(_MTWO_F * log_pos_f32(u))
    c, s = cos_sin_turn_f32(angle_word)
    return (r * c) * std32 + mean32, (r * s) * std32 + mean32


@numba.njit(**_JIT)
def normal_f32(out: Any, start: int, key0: int, key1: int, nonce0: int, nonce1: int, mean: float, std: float) -> None:
    """Box–Muller entirely in float32 (8 lanes per AVX2 register).

    Pair p (elements 2p, 2p+1): u = ((W[2p] >> 9)·2^-23 + 2^-24) in (0, 1), exact;
    r = √(−2·ln u) (float32 log); (c, s) = :func:`cos_sin_turn_f32` (W[2p+1]);
    element 2p = (r·c)·f32(std) + f32(mean), element 2p+1 = (r·s)·f32(std) + f32(mean).
    Group g holds pairs 2g (words 0, 1) and 2g + 1 (words 2, 3).
    """
    n = out.size
    std32 = np.float32(std)
    mean32 = np.float32(mean)
    planes = np.empty((4, CHUNK_GROUPS), np.uint32)
    scratch = np.empty(4 * CHUNK_GROUPS, np.float32)
    k0, k1, c2, c3 = np.uint64(key0), np.uint64(key1), np.uint64(nonce0), np.uint64(nonce1)
    j = 0
    while j < n:
        e = start + j
        g0 = e >> 2
        groups = min(CHUNK_GROUPS, ((start + n + 3) >> 2) - g0)
        philox_planes(planes, g0, groups, k0, k1, c2, c3)
        skip = e - 4 * g0
        m = min(n - j, 4 * groups - skip)
        whole = skip == 0 and m == 4 * groups
        dst = out[j : j + m] if whole else scratch
        p0, p1, p2, p3 = planes[0], planes[1], planes[2], planes[3]
        for g in range(groups):  # both pairs of group g, stored in element order (this loop vectorizes)
            a, b = _box_muller_f32(p0[g], p1[g], std32, mean32)
            c, d = _box_muller_f32(p2[g], p3[g], std32, mean32)
            dst[4 * g] = a
            dst[4 * g + 1] = b
            dst[4 * g + 2] = c
            dst[4 * g + 3] = d
        if not whole:
            for t in range(m):
                out[j + t] = scratch[skip + t]
        j += m


@numba.njit(**_JIT)
def normal_f64(out: Any, start: int, key0: int, key1: int, nonce0: int, nonce1: int, mean: float, std: float) -> None:
    """Box–Muller with 52-bit uniforms: pair p (elements 2p, 2p+1) is Philox group p.

    r = √(−2 ln open52(W[4p], W[4p+1])); the angle is a = bits52(W[4p+2], W[4p+3]),
    octant = a >> 49, fraction = a's low 49 bits; element 2p is r·cos φ·std + mean,
    2p+1 is r·sin φ·std + mean.
    """
    n = out.size
    words = np.empty(4 * CHUNK_GROUPS, np.uint32)
    zc = np.empty(CHUNK_GROUPS, np.float64)
    zs = np.empty(CHUNK_GROUPS, np.float64)
    k0, k1, c2, c3 = np.uint64(key0), np.uint64(key1), np.uint64(nonce0), np.uint64(nonce1)
    frac_mask = (np.uint64(1) << np.uint64(49)) - np.uint64(1)
    j = 0
    while j < n:
        e = start + j
        g0 = e >> 1
        groups = min(CHUNK_GROUPS, ((start + n + 1) >> 1) - g0)
        philox_words(words, g0, groups, k0, k1, c2, c3)
        for g in range(groups):
            r = _radius(open52(words[4 * g], words[4 * g + 1]))
            a = np.uint64(bits52(words[4 * g + 2], words[4 * g + 3]))
            c, s = cos_sin_turn(a >> np.uint64(49), a & frac_mask, np.uint64(49))
            zc[g] = r * c * std + mean
            zs[g] = r * s * std + mean
        skip = e - 2 * g0
        m = min(n - j, 2 * groups - skip)
        _scatter_pairs(out, j, skip, m, zc, zs)
        j += m


# ---------------------------------------------------------------------------- truncated normal (inverse CDF)

# Wichura AS 241 (PPND16)
_A = (
    3.3871328727963666080e0,
    1.3314166789178437745e2,
    1.9715909503065514427e3,
    1.3731693765509461125e4,
    4.5921953931549871457e4,
    6.7265770927008700853e4,
    3.3430575583588128105e4,
    2.5090809287301226727e3,
)
_B = (
    1.0,
    4.2313330701600911252e1,
    6.8718700749205790830e2,
    5.3941960214247511077e3,
    2.1213794301586595867e4,
    3.9307895800092710610e4,
    2.8729085735721942674e4,
    5.2264952788528545610e3,
)
_C = (
    1.42343711074968357734e0,
    4.63033784615654529590e0,
    5.76949722146069140550e0,
    3.64784832476320460504e0,
    1.27045825245236838258e0,
    2.41780725177450611770e-1,
    2.27238449892691845833e-2,
    7.74545014278341407640e-4,
)
_D = (
    1.0,
    2.05319162663775882187e0,
    1.67638483018380384940e0,
    6.89767334985100004550e-1,
    1.48103976427480074590e-1,
    1.51986665636164571966e-2,
    5.47593808499534494600e-4,
    1.05075007164441684324e-9,
)
_E = (
    6.65790464350110377720e0,
    5.46378491116411436990e0,
    1.78482653991729133580e0,
    2.96560571828504891230e-1,
    2.65321895265761230930e-2,
    1.24266094738807843860e-3,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
)
_F = (
    1.0,
    5.99832206555887937690e-1,
    1.36929880922735805310e-1,
    1.48753612908506148525e-2,
    7.86869131145613259100e-4,
    1.84631831751005468180e-5,
    1.42151175831644588870e-7,
    2.04426310338993978564e-15,
)


@numba.njit(inline="always", **_JIT)
def _horner8(c: Any, x: float) -> float:
    return ((((((c[7] * x + c[6]) * x + c[5]) * x + c[4]) * x + c[3]) * x + c[2]) * x + c[1]) * x + c[0]


@numba.njit(inline="always", **_JIT)
def _ndtri_central(q: float) -> float:
    """AS 241's central branch, for q = p − ½ with |q| ≤ 0.425."""
    r2 = 0.180625 - q * q
    return (q * _horner8(_A, r2)) / _horner8(_B, r2)


@numba.njit(inline="always", **_JIT)
def _tail_r(p: float) -> tuple[float, float]:
    """(q, r) of AS 241's tails: q = p − ½, r = √(−ln min(p, 1 − p))."""
    q = p - 0.5
    tail_p = p if q <= 0.0 else 1.0 - p
    return q, np.sqrt(-log_pos(tail_p))


@numba.njit(inline="always", **_JIT)
def _ndtri_tail(p: float) -> float:
    """AS 241's two tail branches (branch-free between them), for |p − ½| > 0.425."""
    q, r = _tail_r(p)
    near = r <= 5.0
    rn = r - 1.6
    rf = r - 5.0
    num = _horner8(_C, rn) if near else _horner8(_E, rf)
    den = _horner8(_D, rn) if near else _horner8(_F, rf)
    num = -num if q < 0.0 else num
    return num / den


@numba.njit(inline="always", **_JIT)
def _ndtri_near_tail(p: float) -> float:
    """:func:`_ndtri_tail` where r ≤ 5 is known (min(p, 1 − p) ≥ e^−25): its near branch alone."""
    q, r = _tail_r(p)
    rn = r - 1.6
    num = _horner8(_C, rn)
    num = -num if q < 0.0 else num
    return num / _horner8(_D, rn)


NEAR_ONLY_P = 1e-10
"""A kernel whose every p has min(p, 1 − p) above this skips AS 241's far tail (r > 5 needs it below e^−25 ≈ 1.4e-11)."""


@numba.njit(inline="always", **_JIT)
def _far_reachable(p0: float, dp: float) -> bool:
    """Whether some p in [p0, p0 + dp] can need AS 241's far tail (see NEAR_ONLY_P)."""
    return min(p0, 1.0 - (p0 + dp)) <= NEAR_ONLY_P


@numba.njit(inline="always", **_JIT)
def ndtri_lower(p: float) -> float:
    """Φ⁻¹(p) for p in (0, 1) by AS 241, branch-free so that the loop vectorizes.

    Every branch's polynomials are evaluated and the right one selected (the same value
    AS 241's branches give). The tails use r = √(−ln min(p, 1 − p)); computing p's own
    tail, not 1 − p, keeps tiny probabilities exact (callers pass upper-tail
    probabilities as p and negate, so deep upper tails never go through 1 − p).
    """
    central = _ndtri_central(p - 0.5)
    tail = _ndtri_tail(p)
    return central if abs(p - 0.5) <= 0.425 else tail


@numba.njit(inline="always", **_JIT)
def _trunc_finish(v: float, flip: float, mean: float, std: float, low: float, high: float) -> float:
    x = (flip * v) * std + mean
    return min(max(x, low), high)


@numba.njit(inline="always", **_JIT)
def _trunc_value(u: float, p0: float, dp: float, flip: float, mean: float, std: float, low: float, high: float) -> float:
    return _trunc_finish(ndtri_lower(p0 + u * dp), flip, mean, std, low, high)


@numba.njit(inline="always", **_JIT)
def _truncnorm_planes(
    values: Any,
    planes: Any,
    groups: int,
    ps: Any,
    tail_at: Any,
    tail_p: Any,
    far: bool,
    p0: float,
    dp: float,
    flip: float,
    mean: float,
    std: float,
    low: float,
    high: float,
) -> None:
    """values[k, g] = f32(clip(flip·Φ⁻¹(p0 + open32(planes[k, g])·dp)·std + mean, low, high)), in float64.

    The same value as ``_trunc_value(u, ...)`` element by element, computed in passes so
    that no lane evaluates a branch it does not take: every element through AS 241's
    central rational (one loop that vectorizes, two elements per step so that two
    Horner chains overlap); the elements whose |p − ½| > 0.425 (12.7% of a ±2σ
    truncation) gathered into a contiguous list; their tail branch (a second loop that
    vectorizes; the far tail's polynomials only when some p of the distribution can
    need them); and their values written back. Only the order in which elements are
    computed changes, never an operation of one element. ``far``: :func:`_far_reachable`.
    """
    half = groups >> 1
    for k in range(4):
        pw, pv = planes[k], values[k]
        for g in range(half):
            a = p0 + open32(pw[g]) * dp
            b = p0 + open32(pw[g + half]) * dp
            ps[g] = a
            ps[g + half] = b
            za = _ndtri_central(a - 0.5)
            zb = _ndtri_central(b - 0.5)
            pv[g] = np.float32(_trunc_finish(za, flip, mean, std, low, high))
            pv[g + half] = np.float32(_trunc_finish(zb, flip, mean, std, low, high))
        for g in range(2 * half, groups):
            a = p0 + open32(pw[g]) * dp
            ps[g] = a
            pv[g] = np.float32(_trunc_finish(_ndtri_central(a - 0.5), flip, mean, std, low, high))
        _trunc_tails(pv, ps, groups, tail_at, tail_p, far, flip, mean, std, low, high)


@numba.njit(inline="always", **_JIT)
def _trunc_tails(
    dst: Any, ps: Any, n: int, tail_at: Any, tail_p: Any, far: bool, flip: float, mean: float, std: float, low: float, high: float
) -> None:
    """dst[i] = clip(flip·Φ⁻¹(ps[i])·std + mean) for the i < n whose |ps[i] − ½| > 0.425 (AS 241's tails), the rest left as they are.

    Those elements are gathered into a contiguous list first (branch-free), so that the
    tail loop vectorizes; ``far`` says whether AS 241's far tail can be reached.
    """
    count = 0
    for i in range(n):
        tail_at[count] = i
        tail_p[count] = ps[i]
        count += 1 if abs(ps[i] - 0.5) > 0.425 else 0
    if far:
        for t in range(count):
            tail_p[t] = _trunc_finish(_ndtri_tail(tail_p[t]), flip, mean, std, low, high)
    else:
        for t in range(count):
            tail_p[t] = _trunc_finish(_ndtri_near_tail(tail_p[t]), flip, mean, std, low, high)
    for t in range(count):
        dst[tail_at[t]] = tail_p[t]


@numba.njit(**_JIT)
def truncnorm_f32(
    out: Any,
    start: int,
    key0: int,
    key1: int,
    nonce0: int,
    nonce1: int,
    p0: float,
    dp: float,
    flip: float,
    mean: float,
    std: float,
    low: float,
    high: float,
) -> None:
    """out[j] = f32(clip(flip·Φ⁻¹(p0 + open32(W[e])·dp)·std + mean, low, high)), computed in float64 (see _truncnorm_planes)."""
    n = out.size
    planes = np.empty((4, CHUNK_GROUPS), np.uint32)
    values = np.empty((4, CHUNK_GROUPS), np.float32)
    scratch = np.empty(4 * CHUNK_GROUPS, np.float32)
    ps = np.empty(CHUNK_GROUPS, np.float64)
    tail_at = np.empty(CHUNK_GROUPS, np.int64)
    tail_p = np.empty(CHUNK_GROUPS, np.float64)
    far = _far_reachable(p0, dp)
    k0, k1, c2, c3 = np.uint64(key0), np.uint64(key1), np.uint64(nonce0), np.uint64(nonce1)
    j = 0
    while j < n:
        e = start + j
        g0 = e >> 2
        groups = min(CHUNK_GROUPS, ((start + n + 3) >> 2) - g0)
        philox_planes(planes, g0, groups, k0, k1, c2, c3)
        _truncnorm_planes(values, planes, groups, ps, tail_at, tail_p, far, p0, dp, flip, mean, std, low, high)
        skip = e - 4 * g0
        m = min(n - j, 4 * groups - skip)
        _emit_planes(out, j, skip, m, values, scratch, groups)
        j += m


@numba.njit(**_JIT)
def truncnorm_f64(
    out: Any,
    start: int,
    key0: int,
    key1: int,
    nonce0: int,
    nonce1: int,
    p0: float,
    dp: float,
    flip: float,
    mean: float,
    std: float,
    low: float,
    high: float,
) -> None:
    """out[j] = clip(flip·Φ⁻¹(p0 + open52(W[2e], W[2e+1])·dp)·std + mean, low, high).

    In passes as the float32 kernel (see _truncnorm_planes): the central rational for every
    element, the tails for the gathered few; the same values as ``_trunc_value``.
    """
    n = out.size
    words = np.empty(4 * CHUNK_GROUPS, np.uint32)
    ps = np.empty(2 * CHUNK_GROUPS, np.float64)
    tail_at = np.empty(2 * CHUNK_GROUPS, np.int64)
    tail_p = np.empty(2 * CHUNK_GROUPS, np.float64)
    far = _far_reachable(p0, dp)
    k0, k1, c2, c3 = np.uint64(key0), np.uint64(key1), np.uint64(nonce0), np.uint64(nonce1)
    j = 0
    while j < n:
        e = start + j
        g0 = e >> 1
        groups = min(CHUNK_GROUPS, ((start + n + 1) >> 1) - g0)
        philox_words(words, g0, groups, k0, k1, c2, c3)
        skip = e - 2 * g0
        m = min(n - j, 2 * groups - skip)
        dst = out[j : j + m]
        for t in range(m):
            w = 2 * (skip + t)
            p = p0 + open52(words[w], words[w + 1]) * dp
            ps[t] = p
            dst[t] = _trunc_finish(_ndtri_central(p - 0.5), flip, mean, std, low, high)
        _trunc_tails(dst, ps, m, tail_at, tail_p, far, flip, mean, std, low, high)
        j += m


# ---------------------------------------------------------------------------- 16-bit outputs


@numba.njit(**_JIT)
def round_bf16(src: Any, dst: Any) -> None:
    """dst = bfloat16 bits of float32 src, round to nearest even (finite inputs)."""
    for i in range(src.size):
        b = np.uint32(_f32_bits(src[i]))
        dst[i] = np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
