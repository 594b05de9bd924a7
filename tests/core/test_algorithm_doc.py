"""docs/algorithm.md (algorithm version 2) is complete: a slow reference built from the document alone.

Everything above the "tests" banner is written from docs/algorithm.md (and, for §10,
docs/_householder_section.md until it is merged) and nothing else: plain numpy with basic
elementwise operations only (``+ - * / sqrt``, comparisons, integer and bit operations,
``np.where``, dtype conversions), no libm (no ``np.log``, ``np.exp``, ``np.sin``,
``np.cos``, ``math.exp``, ``math.erfc``), no BLAS (no ``@``, no ``np.sum``: every sum is
a loop in the document's order), no scipy, no numba, and nothing from
``service/core/algorithms`` (the implementation under test). The engine is used only to
resolve a request into its spec (``resolve``) and to produce the bytes compared against
(``Tensor(spec).read`` for element ranges, ``generate`` for whole tensors).

What it proves, if it passes: for every distribution kind of the document (uniform,
normal, truncated normal in the upper tail, the lower tail, far out and straddling,
constant, identity, dirac, delta-orthogonal, sparse, orthogonal) and every output dtype
(float32, float64, float16, bfloat16), the document's recipe reproduces the served bytes
exactly (``np.array_equal`` on the raw bytes): at the start of a tensor, at ranges that
start at element indices 4k+1, 4k+2 and 4k+3 (Philox groups hold four words, normal
pairs two elements), deep inside tensors of more than 2^18 elements, up to the last
element of tensors with an odd element count, and near the 2^31-element limit; and the
materialized kinds whole. Also: the Philox4x32-10 reference matches Random123's three
known-answer vectors, and the AS 241 coefficients (which the document does not list)
pass the paper's transcription checks.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from service.core import Tensor, generate, resolve

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Floats = npt.NDArray[np.floating[Any]]
Bytes = npt.NDArray[np.uint8]
Key = tuple[int, int, int, int]  # key0, key1, nonce0, nonce1

# ------------------------------------------------------------------------------------
# The reference, from docs/algorithm.md (and docs/_householder_section.md for §10) only.
# ------------------------------------------------------------------------------------

MASK32 = np.uint64(0xFFFFFFFF)


# §2 Keys and the word stream ---------------------------------------------------------


def stream_key(seed: int, name: str, label: str = "values") -> Key:
    """§2: the first four little-endian uint32 words of the sha256 digest."""
    message = b"tensorinit:v2\x00" + seed.to_bytes(8, "little") + label.encode("ascii") + b"\x00" + name.encode("utf-8")
    key0, key1, nonce0, nonce1 = struct.unpack("<4I", hashlib.sha256(message).digest()[:16])
    return key0, key1, nonce0, nonce1


def philox4x32_10(counter: tuple[U64, U64, U64, U64], key: tuple[int, int]) -> tuple[U64, U64, U64, U64]:
    """§2: ten Philox rounds over arrays of 32-bit words held in uint64 (products fit in 64 bits)."""
    c0, c1, c2, c3 = counter
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + np.uint64(0x9E3779B9)) & MASK32
        k1 = (k1 + np.uint64(0xBB67AE85)) & MASK32
    return c0, c1, c2, c3


def words(key: Key, n: U64) -> U64:
    """§2: ``W[n]`` = word ``n mod 4`` of Philox at counter ``(g mod 2^32, g div 2^32, nonce0, nonce1)``, ``g = n div 4``."""
    g = n >> np.uint64(2)
    nonce0 = np.full_like(g, key[2])
    nonce1 = np.full_like(g, key[3])
    out = philox4x32_10((g & MASK32, g >> np.uint64(32), nonce0, nonce1), (key[0], key[1]))
    lane = n & np.uint64(3)
    return np.where(lane == 0, out[0], np.where(lane == 1, out[1], np.where(lane == 2, out[2], out[3])))


# §3 Uniform numbers from words -------------------------------------------------------


def open32(w: U64) -> F64:
    return (w.astype(np.float64) + 0.5) * 2.0**-32


def bits52(a: U64, b: U64) -> U64:
    return (a << np.uint64(20)) | (b >> np.uint64(12))


def open52(a: U64, b: U64) -> F64:
    return (bits52(a, b).astype(np.float64) + 0.5) * 2.0**-52


def unit53(a: U64, b: U64) -> F64:
    return ((a << np.uint64(21)) | (b >> np.uint64(11))).astype(np.float64) * 2.0**-53


def unit24(w: U64) -> F32:
    return (w >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)


# §6 Elementary functions -------------------------------------------------------------

LG = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
S1, S2, S3, S4, S5, S6 = (
    -1.66666666666666324348e-01,
    8.33333333332248946124e-03,
    -1.98412698298579493134e-04,
    2.75573137070700676789e-06,
    -2.50507602534068634195e-08,
    1.58969099521155010221e-10,
)
C1, C2, C3, C4, C5, C6 = (
    4.16666666666666019037e-02,
    -1.38888888888741095749e-03,
    2.48015872894767294178e-05,
    -2.75573143513906633035e-07,
    2.08757232129817482790e-09,
    -1.13596475577881948265e-11,
)
PIO4 = 7.85398163397448278999e-01


def ln(x: F64) -> F64:
    """§6: fdlibm's e_log.c for positive normal float64, without its special cases."""
    b = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    m = b & np.uint64(2**52 - 1)
    big = m > np.uint64(0x6A09E667F3BCD)
    k = (b >> np.uint64(52)).astype(np.int64) - 1023 + big.astype(np.int64)
    y = (m | np.where(big, np.uint64(0x3FE0000000000000), np.uint64(0x3FF0000000000000))).view(np.float64)
    f = y - 1.0
    dk = k.astype(np.float64)
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    lg1, lg2, lg3, lg4, lg5, lg6, lg7 = LG
    t1 = w * (lg2 + w * (lg4 + w * lg6))
    t2 = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    result: F64 = dk * LN2_HI - ((hfsq - (s * (hfsq + r) + dk * LN2_LO)) - f)
    return result


def sin_kernel(t: F64) -> F64:
    z = t * t
    v = z * t
    r = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))
    result: F64 = t + v * (S1 + z * r)
    return result


def cos_kernel(t: F64) -> F64:
    z = t * t
    r = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))))
    hz = 0.5 * z
    w = 1.0 - hz
    result: F64 = w + (((1.0 - w) - hz) + z * r)
    return result


def octant_rule(o: U64, s: Floats, c: Floats) -> tuple[Floats, Floats]:
    """§6 cos_sin_turn, last step: (cos φ, sin φ) from the kernel's (sin t, cos t) and the octant."""
    q = o >> np.uint64(1)
    swap = ((o ^ q) & np.uint64(1)) == 1
    big_c, big_s = np.where(swap, s, c), np.where(swap, c, s)
    return np.where((q == 1) | (q == 2), -big_c, big_c), np.where((q == 2) | (q == 3), -big_s, big_s)


def cos_sin_turn(o: U64, f: U64, bits: int) -> tuple[Floats, Floats]:
    """§6: cos and sin of 2π·(o + (f + ½)/2^F)/8 from a kernel argument in (0, π/4), float64."""
    g = np.where((o & np.uint64(1)) == 1, np.uint64(2**bits - 1) ^ f, f)
    t = (g.astype(np.float64) * 2.0**-bits + 2.0**-bits / 2) * PIO4
    return octant_rule(o, sin_kernel(t), cos_kernel(t))


# The float32 functions (§6 lnf, cos_sin_turn_f32): every operation on float32 operands.
f32 = np.float32
LGF1, LGF2, LGF3, LGF4 = (
    f32(mantissa * 2.0**-shift) for mantissa, shift in ((0xAAAAAA, 24), (0xCCCE13, 25), (0x91E9EE, 25), (0xF89E26, 26))
)
LN2_HI_F, LN2_LO_F = np.array([0x3F317180, 0x3717F7D1], dtype="<u4").view(np.float32)
SF1, SF2, SF3, SF4 = (f32(-1 / 6), f32(1 / 120), f32(-1 / 5040), f32(1 / 362880))
CF1, CF2, CF3, CF4 = (f32(-1 / 2), f32(1 / 24), f32(-1 / 720), f32(1 / 40320))


def lnf(x: F32) -> F32:
    """§6: fdlibm's e_logf.c for positive normal float32, without its special cases."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    m = b & np.uint32(0x7FFFFF)
    big = m > np.uint32(0x3504F3)
    k = (b >> np.uint32(23)).astype(np.int32) - 127 + big.astype(np.int32)
    y = (m | np.where(big, np.uint32(0x3F000000), np.uint32(0x3F800000))).view(np.float32)
    f = y - f32(1)
    dk = k.astype(np.float32)
    s = f / (f32(2) + f)
    z = s * s
    w = z * z
    t1 = w * (LGF2 + w * LGF4)
    t2 = z * (LGF1 + w * LGF3)
    r = t2 + t1
    hfsq = (f32(0.5) * f) * f
    result: F32 = dk * LN2_HI_F - ((hfsq - (s * (hfsq + r) + dk * LN2_LO_F)) - f)
    return result


def cos_sin_turn_f32(w: U64) -> tuple[Floats, Floats]:
    """§6: octant from bits 29–31 of the word, a 20-bit fraction from bits 9–28, degree-4 Taylor kernels."""
    o = w >> np.uint64(29)
    f = (w >> np.uint64(9)) & np.uint64(2**20 - 1)
    g = np.where((o & np.uint64(1)) == 1, np.uint64(2**20 - 1) ^ f, f)
    t = (g.astype(np.float32) * f32(2**-20) + f32(2**-21)) * f32(math.pi / 4)
    z = t * t
    sin_t = t + (t * z) * (SF1 + z * (SF2 + z * (SF3 + z * SF4)))
    cos_t = f32(1) + z * (CF1 + z * (CF2 + z * (CF3 + z * CF4)))
    return octant_rule(o, sin_t, cos_t)


# AS 241 (Wichura 1988, PPND16) coefficients c0..c7. docs/algorithm.md does not list them
# (it points at the kernel's source); these are transcribed from the paper's published
# Fortran (lib.stat.cmu.edu/apstat/241) and checked against its hash sums below.
AS241_A = (
    3.3871328727963666080e0,
    1.3314166789178437745e2,
    1.9715909503065514427e3,
    1.3731693765509461125e4,
    4.5921953931549871457e4,
    6.7265770927008700853e4,
    3.3430575583588128105e4,
    2.5090809287301226727e3,
)
AS241_B = (
    1.0,
    4.2313330701600911252e1,
    6.8718700749205790830e2,
    5.3941960214247511077e3,
    2.1213794301586595867e4,
    3.9307895800092710610e4,
    2.8729085735721942674e4,
    5.2264952788528545610e3,
)
AS241_C = (
    1.42343711074968357734e0,
    4.63033784615654529590e0,
    5.76949722146069140550e0,
    3.64784832476320460504e0,
    1.27045825245236838258e0,
    2.41780725177450611770e-1,
    2.27238449892691845833e-2,
    7.74545014278341407640e-4,
)
AS241_D = (
    1.0,
    2.05319162663775882187e0,
    1.67638483018380384940e0,
    6.89767334985100004550e-1,
    1.48103976427480074590e-1,
    1.51986665636164571966e-2,
    5.47593808499534494600e-4,
    1.05075007164441684324e-9,
)
AS241_E = (
    6.65790464350110377720e0,
    5.46378491116411436990e0,
    1.78482653991729133580e0,
    2.96560571828504891230e-1,
    2.65321895265761230930e-2,
    1.24266094738807843860e-3,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
)
AS241_F = (
    1.0,
    5.99832206555887937690e-1,
    1.36929880922735805310e-1,
    1.48753612908506148525e-2,
    7.86869131145613259100e-4,
    1.84631831751005468180e-5,
    1.42151175831644588870e-7,
    2.04426310338993978564e-15,
)


def horner(c: tuple[float, ...], x: F64) -> F64:
    """``c0 + x·(c1 + x·(… + x·c7))`` evaluated from ``c7``: ``((c7·x + c6)·x + c5)…``."""
    acc: F64 = np.full_like(x, c[-1])
    for coefficient in reversed(c[:-1]):
        acc = acc * x + coefficient
    return acc


def ndtri(p: F64) -> F64:
    """§6: Φ⁻¹ by AS 241, every branch evaluated, then selected."""
    q = p - 0.5
    r2 = 0.180625 - q * q
    tp = np.where(q <= 0, p, 1.0 - p)
    r = np.sqrt(-ln(tp))
    near = r <= 5.0
    num = np.where(near, horner(AS241_C, r - 1.6), horner(AS241_E, r - 5.0))
    den = np.where(near, horner(AS241_D, r - 1.6), horner(AS241_F, r - 5.0))
    num = np.where(q < 0, -num, num)
    return np.where(np.abs(q) <= 0.425, (q * horner(AS241_A, r2)) / horner(AS241_B, r2), num / den)


# §7 The upper-tail probability Q(x), per tensor, in Python floats (IEEE binary64) ---------


def exp_nonpositive(y: float) -> float:
    if y < -745:
        return 0.0
    k = math.floor(y * 1.44269504088896338700 + 0.5)
    r = (y - k * LN2_HI) - k * LN2_LO
    term = total = 1.0
    for n in range(1, 25):
        term = term * r / n
        total = total + term
    return math.ldexp(total, k)  # total · 2^k, rounded once


def pdf(x: float) -> float:
    return exp_nonpositive(-0.5 * (x * x)) * 0.398942280401432677939946059934


def upper_tail(x: float) -> float:
    if x == math.inf:
        return 0.0
    if x == -math.inf:
        return 1.0
    if x < 0:
        return 1.0 - upper_tail(-x)
    if x < 2.5:
        term = total = x
        for n in range(1, 80):
            term = term * (x * x) / (2 * n + 1)
            total = total + term
        return 0.5 - pdf(x) * total
    acc = x
    for n in range(240, 0, -1):
        acc = x + n / acc
    return pdf(x) / acc


# §4 Elementwise distributions ----------------------------------------------------------


def uniform(dist: dict[str, Any], key: Key, e: U64, cdt: type[np.floating[Any]]) -> Floats:
    low, high = float(dist["low"]), float(dist["high"])
    if cdt is np.float32:
        return unit24(words(key, e)) * np.float32(high - low) + np.float32(low)
    return unit53(words(key, 2 * e), words(key, 2 * e + 1)) * (high - low) + low


def normal(dist: dict[str, Any], key: Key, e: U64, cdt: type[np.floating[Any]]) -> Floats:
    """§4 Box–Muller: pair ``p = e // 2``; element 2p takes the cosine, 2p+1 the sine."""
    mean, std = float(dist["mean"]), float(dist["std"])
    p = e >> np.uint64(1)
    if cdt is np.float32:
        u = (words(key, 2 * p) >> np.uint64(9)).astype(np.float32) * f32(2**-23) + f32(2**-24)
        r: Floats = np.sqrt(f32(-2) * lnf(u))
        c, s = cos_sin_turn_f32(words(key, 2 * p + 1))
        first, second = (r * c) * f32(std) + f32(mean), (r * s) * f32(std) + f32(mean)
    else:
        r = np.sqrt(-2.0 * ln(open52(words(key, 4 * p), words(key, 4 * p + 1))))
        a = bits52(words(key, 4 * p + 2), words(key, 4 * p + 3))
        c, s = cos_sin_turn(a >> np.uint64(49), a & np.uint64(2**49 - 1), 49)
        first, second = (r * c) * std + mean, (r * s) * std + mean
    return np.where((e & np.uint64(1)) == 0, first, second).astype(cdt)


def truncation_constants(dist: dict[str, Any]) -> tuple[float, float, float]:
    """§4 truncated_normal: (p0, dp, flip) of the table, from §7's Q."""
    alpha = (dist["low"] - dist["mean"]) / dist["std"]
    beta = (dist["high"] - dist["mean"]) / dist["std"]
    if alpha >= 0:
        return upper_tail(beta), upper_tail(alpha) - upper_tail(beta), -1.0
    if beta <= 0:
        return upper_tail(-alpha), upper_tail(-beta) - upper_tail(-alpha), 1.0
    return upper_tail(-alpha), (1.0 - upper_tail(beta)) - upper_tail(-alpha), 1.0


def truncated_normal(dist: dict[str, Any], key: Key, e: U64, cdt: type[np.floating[Any]]) -> Floats:
    p0, dp, flip = truncation_constants(dist)
    u = open32(words(key, e)) if cdt is np.float32 else open52(words(key, 2 * e), words(key, 2 * e + 1))
    z = flip * ndtri(p0 + u * dp)
    x = z * float(dist["std"]) + float(dist["mean"])
    return np.minimum(np.maximum(x, float(dist["low"])), float(dist["high"])).astype(cdt)


def constant(dist: dict[str, Any], key: Key, e: U64, cdt: type[np.floating[Any]]) -> Floats:
    return np.full(e.shape, dist["value"], dtype=cdt)


ELEMENTWISE: dict[str, Callable[[dict[str, Any], Key, U64, type[np.floating[Any]]], Floats]] = {
    "uniform": uniform,
    "normal": normal,
    "truncated_normal": truncated_normal,
    "constant": constant,
}


# §8 Index schemes ------------------------------------------------------------------------


def identity(spec: dict[str, Any], e: I64, cdt: type[np.floating[Any]]) -> Floats:
    shape = spec["shape"]
    r, c = (e // shape[-1]) % shape[-2], e % shape[-1]
    return np.where(r == c, cdt(spec["distribution"]["gain"]), cdt(0))


def kernel_coordinates(spec: dict[str, Any], e: I64) -> tuple[I64, I64, I64, int, int, int]:
    """§8: (k, i, o, centre, in, out) of elements ``e`` for either layout."""
    shape, dist = spec["shape"], spec["distribution"]
    if dist["layout"] == "out_in_kernel":
        n_out, n_in, kernel = shape[0], shape[1], shape[2:]
        size = math.prod(kernel)
        k, i, o = e % size, (e // size) % n_in, e // (size * n_in)
    else:
        assert dist["layout"] == "kernel_in_out"
        kernel, n_in, n_out = shape[:-2], shape[-2], shape[-1]
        o, i, k = e % n_out, (e // n_out) % n_in, e // (n_out * n_in)
    centre = 0
    for position, extent in zip(dist["centre"], kernel, strict=True):
        centre = centre * extent + position
    return k, i, o, centre, n_in, n_out


def dirac(spec: dict[str, Any], e: I64, cdt: type[np.floating[Any]]) -> Floats:
    k, i, o, centre, _, n_out = kernel_coordinates(spec, e)
    hit = (k == centre) & (o % (n_out // spec["distribution"]["groups"]) == i)
    return np.where(hit, cdt(1), cdt(0))


def delta_orthogonal(spec: dict[str, Any], e: I64, cdt: type[np.floating[Any]]) -> Floats:
    k, i, o, centre, n_in, n_out = kernel_coordinates(spec, e)
    key = stream_key(spec["seed"], spec["name"])
    m = orthogonal_matrix(key, n_in, n_out, spec["distribution"]["gain"]).astype(cdt)
    return np.where(k == centre, m[i, o], cdt(0))


INDEXED: dict[str, Callable[[dict[str, Any], I64, type[np.floating[Any]]], Floats]] = {
    "identity": identity,
    "dirac": dirac,
    "delta_orthogonal": delta_orthogonal,
}


# §9 Materialized schemes ----------------------------------------------------------------


def standard_normal64(key: Key, count: int) -> F64:
    """Elements 0 … count−1 of the float64 normal stream with mean 0 and std 1."""
    return normal({"mean": 0.0, "std": 1.0}, key, np.arange(count, dtype=np.uint64), np.float64).astype(np.float64)


def sparse(spec: dict[str, Any]) -> F64:
    rows, cols = spec["shape"]
    dist = spec["distribution"]
    e = np.arange(rows * cols, dtype=np.uint64)
    values = normal({"mean": 0.0, "std": dist["std"]}, stream_key(spec["seed"], spec["name"]), e, np.float64)
    mask = stream_key(spec["seed"], spec["name"], "mask")
    rank = ((words(mask, 2 * e) << np.uint64(32)) | words(mask, 2 * e + 1)).reshape(rows, cols)
    order = np.argsort(rank, axis=0, kind="stable")  # ties (never seen) broken by row
    out = values.astype(np.float64).reshape(rows, cols)
    zeroed = order[: dist["zeros_per_column"]]
    out[zeroed, np.arange(cols)[None, :]] = 0.0
    result: F64 = out.reshape(-1)
    return result


@functools.cache
def orthogonal_matrix(key: Key, rows: int, cols: int, gain: float) -> F64:
    """§9: ``Q·diag(d·gain)`` of the (big, small) normal matrix, transposed when rows < cols."""
    big, small = max(rows, cols), min(rows, cols)
    q, d = householder(standard_normal64(key, big * small).reshape(big, small))
    m = q * (d * gain)[None, :]
    result: F64 = m.T if rows < cols else m
    result.flags.writeable = False  # cached: shared by every call
    return result


# §10 Orthogonal Q from directly drawn Householder vectors (written in docs/_householder_section.md,
# to be merged into docs/algorithm.md §10).
# Every Σ is a Python loop over its index in the written order; the loops are vectorized
# only across the *other* indices (elementwise products and sums, never np.sum / matmul).
NB = 64


def householder(a: F64) -> tuple[F64, F64]:
    """§10: ``(Q, d)`` for ``A`` of shape (m, n), m ≥ n: Stewart's reflectors, dlarft's T, blocked dorgqr."""
    m, n = a.shape
    tau, w, d = np.zeros(n), np.zeros(n), np.ones(n)
    for k in range(n):  # step 1: one reflector per column, A itself never updated
        alpha = float(a[k, k])
        s = 0.0
        for i in range(k + 1, m):
            s = s + float(a[i, k]) * float(a[i, k])
        xi = math.sqrt(s)
        if xi == 0:
            beta = alpha
        else:
            nrm = math.sqrt(alpha * alpha + xi * xi)
            beta = nrm if alpha < 0 else -nrm
            tau[k] = (beta - alpha) / beta
            w[k] = 1.0 / (alpha - beta)
        d[k] = -1.0 if beta < 0 else 1.0
    q = np.eye(m, n)
    for block in reversed(range(-(-n // NB))):  # steps 2 and 3, last block first
        j = NB * block
        b, r = min(NB, n - j), m - j
        v = np.zeros((r, b))
        for p in range(b):
            v[p, p] = 1.0
            if tau[j + p] != 0:
                v[p + 1 :, p] = a[j + p + 1 :, j + p] * w[j + p]
        g = np.zeros((b, b))
        for i in range(r):
            g = g + v[i][:, None] * v[i][None, :]
        t = np.zeros((b, b))
        for col in range(b):
            t[col, col] = tau[j + col]
            z = (-tau[j + col]) * g[:col, col]
            acc = np.zeros(col)
            for s_index in range(col):
                acc = acc + t[:col, s_index] * z[s_index]
            t[:col, col] = acc
        c = q[j:, j:].copy()
        wt = np.zeros((b, n - j))
        for i in range(r):
            wt = wt + v[i][:, None] * c[i][None, :]
        wt2 = np.zeros((b, n - j))
        for s_index in range(b):
            wt2 = wt2 + t[:, s_index][:, None] * wt[s_index][None, :]
        x = c
        for p in range(b):
            x = x - v[:, p][:, None] * wt2[p][None, :]
        q[j:, j:] = x
    return q, d


def orthogonal(spec: dict[str, Any]) -> F64:
    dist = spec["distribution"]
    m = orthogonal_matrix(stream_key(spec["seed"], spec["name"]), dist["rows"], dist["cols"], dist["gain"])
    shape = spec["shape"]
    if dist["column_axis"] is None:
        return m.reshape(-1)
    axis = dist["column_axis"] % len(shape)
    moved = [extent for position, extent in enumerate(shape) if position != axis] + [shape[axis]]
    result: F64 = np.ascontiguousarray(np.moveaxis(m.reshape(moved), -1, axis)).reshape(-1)
    return result


MATERIALIZED: dict[str, Callable[[dict[str, Any]], F64]] = {"sparse": sparse, "orthogonal": orthogonal}


# §1 and §5: compute dtype, output bytes -------------------------------------------------


def compute_dtype(dtype: str) -> type[np.floating[Any]]:
    return np.float64 if dtype == "float64" else np.float32


def output_bytes(values: Floats, dtype: str) -> Bytes:
    """§5: float16 is numpy's rounding; bfloat16 the documented round-to-nearest-even of the float32 bits."""
    if dtype == "float64":
        return np.ascontiguousarray(values, dtype="<f8").view(np.uint8)
    single = np.ascontiguousarray(values, dtype="<f4")
    if dtype == "float32":
        return single.view(np.uint8)
    if dtype == "float16":
        return single.astype("<f2").view(np.uint8)
    assert dtype == "bfloat16"
    b = single.view("<u4").astype(np.uint64)
    return ((b + 0x7FFF + ((b >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)).astype("<u2").view(np.uint8)


def reference(spec: dict[str, Any], start: int, stop: int) -> Bytes:
    """The document's bytes of flat elements [start, stop) of a resolved spec."""
    kind, cdt = spec["distribution"]["kind"], compute_dtype(spec["dtype"])
    if kind in ELEMENTWISE:
        e = np.arange(start, stop, dtype=np.uint64)
        values = ELEMENTWISE[kind](spec["distribution"], stream_key(spec["seed"], spec["name"]), e, cdt)
    elif kind in INDEXED:
        values = INDEXED[kind](spec, np.arange(start, stop, dtype=np.int64), cdt)
    else:
        values = MATERIALIZED[kind](spec)[start:stop].astype(cdt)
    return output_bytes(values, spec["dtype"])


# ------------------------------------------------------------------------------------
# The tests.
# ------------------------------------------------------------------------------------

DTYPES = ("float32", "float64", "float16", "bfloat16")


def test_as241_transcription() -> None:
    """The coefficients' mantissa sums are AS 241's published transcription checks ("HASH SUM")."""

    def mantissa_sum(*tables: tuple[float, ...]) -> float:
        return sum(float(f"{c:.16e}".split("e")[0]) for table in tables for c in table if c != 1.0)

    assert mantissa_sum(AS241_A, AS241_B) == pytest.approx(55.8831928806149014439, abs=1e-12)
    assert mantissa_sum(AS241_C, AS241_D) == pytest.approx(49.3320650330161028903, abs=1e-12)
    assert mantissa_sum(AS241_E, AS241_F) == pytest.approx(47.5258331754928967162, abs=1e-12)


@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [
        pytest.param((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8), id="zeros"),
        pytest.param((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD), id="ones"),
        pytest.param(
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
            id="pi",
        ),
    ],
)
def test_philox_known_answers(counter: tuple[int, int, int, int], key: tuple[int, int], expected: tuple[int, int, int, int]) -> None:
    """Random123's kat_vectors for philox4x32_10."""
    c0, c1, c2, c3 = (np.array([word], dtype=np.uint64) for word in counter)
    out = philox4x32_10((c0, c1, c2, c3), key)
    assert tuple(int(word[0]) for word in out) == expected


@dataclass(frozen=True)
class Case:
    """One request; ``kind`` is the distribution the table expects it to resolve to."""

    id: str
    scheme: str
    shape: tuple[int, ...]
    kind: str
    convention: str = "torch"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 20240917
    name: str = "blocks.3.mlp.fc1.weight"


def served_and_documented(case: Case, dtype: str, start: int, stop: int | None = None) -> tuple[Bytes, Bytes, str]:
    """The engine's bytes of elements [start, stop) (the whole tensor via ``generate`` if stop is None) and the document's."""
    resolved = resolve(case.scheme, case.shape, dtype=dtype, seed=case.seed, name=case.name, convention=case.convention, params=case.params)
    spec = resolved.to_dict()
    assert spec["distribution"]["kind"] == case.kind, spec["distribution"]
    if stop is None:
        served = np.ascontiguousarray(generate(resolved)).reshape(-1).view(np.uint8)
        stop = math.prod(case.shape)
    else:
        served = np.ascontiguousarray(Tensor(resolved).read(start, stop)).view(np.uint8)
    expected = reference(spec, start, stop)
    return served, expected, first_difference(served, expected, spec, start)


def first_difference(served: Bytes, expected: Bytes, spec: dict[str, Any], start: int) -> str:
    """A readable account of where the served bytes and the document's part."""
    if served.size != expected.size:
        return f"{served.size} bytes served, {expected.size} documented"
    view = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}[spec["dtype"]]
    s, x = served.view(view), expected.view(view)
    diff = np.flatnonzero(s.view(f"<u{s.itemsize}") != x.view(f"<u{x.itemsize}"))
    if diff.size == 0:
        return "identical"
    at = int(diff[0])
    return f"{diff.size} of {s.size} elements differ, first at element {start + at}: served {s[at]!r}, documented {x[at]!r} ({spec['distribution']})"


Where = Callable[[int], tuple[int, int]]  # element count -> (start, stop)

# Every shape has an odd element count above 2^18 + 27, so every range below fits.
BIG = (301, 1001)
STREAM_CASES = [
    Case("uniform-he_uniform-torch", "he_uniform", BIG, "uniform"),
    Case("uniform-glorot_uniform-keras-conv", "glorot_uniform", (5, 5, 97, 111), "uniform", "keras"),
    Case("uniform-default-jax", "uniform", BIG, "uniform", "jax"),
    Case("uniform-custom-bounds", "uniform", BIG, "uniform", params={"low": -3.0, "high": 7.5}),
    Case("uniform-uniform_scaling-haiku", "uniform_scaling", BIG, "uniform", "haiku"),
    Case("normal-he_normal-torch", "he_normal", BIG, "normal"),
    Case("normal-glorot_normal-torch-conv", "glorot_normal", (111, 97, 5, 5), "normal"),
    Case("normal-default-keras", "normal", BIG, "normal", "keras"),
    Case("normal-mean1.5-std0.3", "normal", BIG, "normal", params={"mean": 1.5, "std": 0.3}),
    Case(
        "normal-variance_scaling-jax", "variance_scaling", BIG, "normal", "jax", {"distribution": "untruncated_normal", "mode": "fan_avg"}
    ),
    Case("truncated-he_normal-keras", "he_normal", BIG, "truncated_normal", "keras"),
    Case("truncated-lecun_normal-jax-conv", "lecun_normal", (5, 5, 97, 111), "truncated_normal", "jax"),
    Case("truncated-default-torch-straddle2", "truncated_normal", BIG, "truncated_normal"),
    Case(
        "truncated-asymmetric-torch",
        "truncated_normal",
        BIG,
        "truncated_normal",
        params={"mean": 0.5, "std": 2.0, "lower": -1.0, "upper": 3.0},
    ),
    Case("truncated-upper-tail-jax-2.5..9", "truncated_normal", BIG, "truncated_normal", "jax", {"lower": 2.5, "upper": 9.0}),
    Case("truncated-narrow-lower-jax--3.2..-3", "truncated_normal", BIG, "truncated_normal", "jax", {"lower": -3.2, "upper": -3.0}),
    Case("truncated-far-lower-haiku--12..-10", "truncated_normal", BIG, "truncated_normal", "haiku", {"lower": -12.0, "upper": -10.0}),
    Case("truncated-extreme-upper-jax-30..31", "truncated_normal", BIG, "truncated_normal", "jax", {"lower": 30.0, "upper": 31.0}),
    # Q(38) is subnormal (§7's exp below 2^-1022): the far edge of what resolution accepts.
    Case("truncated-extreme-upper-jax-35..38", "truncated_normal", BIG, "truncated_normal", "jax", {"lower": 35.0, "upper": 38.0}),
    Case("truncated-straddle-to-4-jax--1..4", "truncated_normal", BIG, "truncated_normal", "jax", {"lower": -1.0, "upper": 4.0}),
    Case("truncated-upper-from-0-keras", "truncated_normal", BIG, "truncated_normal", "keras", {"lower": 0.0, "upper": 1.0}),
    Case("truncated-lower-to-0-torch", "truncated_normal", BIG, "truncated_normal", params={"lower": -0.5, "upper": 0.0}),
    Case("constant-zeros", "zeros", BIG, "constant"),
    Case("constant-ones-keras", "ones", BIG, "constant", "keras"),
    Case("constant-0.1", "constant", BIG, "constant", params={"value": 0.1}),
    Case("identity-torch", "identity", (513, 1023), "identity"),
    Case("identity-batched-haiku-gain0.3", "identity", (7, 123, 305), "identity", "haiku", {"gain": 0.3}),
    Case("dirac-torch-groups3", "dirac", (129, 127, 5, 5), "dirac", params={"groups": 3}),
    Case("dirac-keras-conv1d", "dirac", (7, 211, 183), "dirac", "keras"),
    Case("delta_orthogonal-jax-97x111", "delta_orthogonal", (5, 5, 97, 111), "delta_orthogonal", "jax"),
    Case("delta_orthogonal-torch-gain2", "delta_orthogonal", (111, 97, 5, 5), "delta_orthogonal", params={"gain": 2.0}),
    # The key: the largest seed with a name given decomposed (u + U+0308) that resolution NFC-normalizes; a non-ASCII name.
    Case("key-max-seed-nfc-name", "he_uniform", BIG, "uniform", seed=2**64 - 1, name="encoder.Schichtu\u0308.weight"),
    Case("key-seed0-utf8-name", "normal", BIG, "normal", seed=0, name="层.权重"),
]
RANGES: list[tuple[str, Where]] = [
    ("head", lambda n: (0, 19)),
    ("from-4k+1", lambda n: (4 * 25 + 1, 4 * 25 + 1 + 22)),
    ("from-4k+2", lambda n: (4 * 2500 + 2, 4 * 2500 + 2 + 21)),
    ("from-4k+3", lambda n: (4 * 7777 + 3, 4 * 7777 + 3 + 20)),
    ("deep-across-2^18", lambda n: (2**18 - 5, 2**18 + 27)),
    ("to-last-odd", lambda n: (n - 21, n)),
]


@pytest.mark.parametrize("where", [pytest.param(f, id=i) for i, f in RANGES])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in STREAM_CASES])
def test_document_reproduces_element_ranges(case: Case, dtype: str, where: Where) -> None:
    numel = math.prod(case.shape)
    assert numel % 2 == 1 and numel > 2**18 + 27
    served, documented, why = served_and_documented(case, dtype, *where(numel))
    assert np.array_equal(served, documented), why


# Just under the default 2^31-element limit: word indices pass 2^32 (float64 normal pairs use words 4p … 4p+3).
HUGE = (46341, 46339)
HUGE_CASES = [
    Case("huge-uniform", "uniform", HUGE, "uniform", params={"low": -1.0, "high": 1.0}),
    Case("huge-normal", "normal", HUGE, "normal"),
    Case("huge-truncated-keras", "he_normal", HUGE, "truncated_normal", "keras"),
    Case("huge-identity", "identity", HUGE, "identity"),
]
HUGE_RANGES: list[tuple[str, Where]] = [
    ("from-2^30+1", lambda n: (2**30 + 1, 2**30 + 1 + 22)),
    ("to-last-odd", lambda n: (n - 21, n)),
]


@pytest.mark.parametrize("where", [pytest.param(f, id=i) for i, f in HUGE_RANGES])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in HUGE_CASES])
def test_document_reproduces_the_far_end(case: Case, dtype: str, where: Where) -> None:
    served, documented, why = served_and_documented(case, dtype, *where(math.prod(case.shape)))
    assert np.array_equal(served, documented), why


# Materialized kinds are compared whole (every range at once), and a few small tensors with it.
WHOLE_CASES = [
    Case("sparse-torch-0.3", "sparse", (101, 51), "sparse", params={"sparsity": 0.3}),
    Case("sparse-torch-big-0.1", "sparse", (513, 513), "sparse", params={"sparsity": 0.1, "std": 0.5}),
    Case("identity-rect", "identity", (5, 9), "identity", params={"gain": 2.5}),
    Case("dirac-torch-groups2", "dirac", (16, 8, 3, 3), "dirac", params={"groups": 2}),
    Case("dirac-keras", "dirac", (3, 3, 8, 16), "dirac", "keras"),
    Case("orthogonal-torch-96x64", "orthogonal", (96, 64), "orthogonal"),
    Case("orthogonal-torch-64x96", "orthogonal", (64, 96), "orthogonal"),
    Case("orthogonal-keras-96x64", "orthogonal", (96, 64), "orthogonal", "keras"),
    Case("orthogonal-keras-64x96", "orthogonal", (64, 96), "orthogonal", "keras"),
    Case("orthogonal-torch-3-blocks-gain1.7", "orthogonal", (200, 130), "orthogonal", params={"gain": 1.7}),
    Case("orthogonal-keras-conv-3-blocks", "orthogonal", (3, 3, 16, 150), "orthogonal", "keras"),
    Case("orthogonal-jax-column_axis0", "orthogonal", (20, 3, 7), "orthogonal", "jax", {"column_axis": 0}),
    Case("orthogonal-torch-1-column", "orthogonal", (33, 1), "orthogonal"),
    Case("delta_orthogonal-jax-8x16", "delta_orthogonal", (3, 3, 8, 16), "delta_orthogonal", "jax"),
    Case("normal-3-elements", "normal", (3,), "normal"),
    Case("truncated-upper-tail-5-elements", "truncated_normal", (5,), "truncated_normal", "jax", {"lower": 2.5, "upper": 9.0}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in WHOLE_CASES])
def test_document_reproduces_whole_tensors(case: Case, dtype: str) -> None:
    served, documented, why = served_and_documented(case, dtype, 0)
    assert np.array_equal(served, documented), why
