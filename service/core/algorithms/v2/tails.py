"""The normal upper-tail probability Q(x) = P(Z > x) in IEEE basic operations only.

The truncated-normal kernels take per-tensor constants Q(α), Q(β); those constants fix
every element's bytes, so they must not come from libm (``math.erfc`` is the
platform's, and not correctly rounded everywhere). Python floats are IEEE doubles and
``+ - * /``, ``math.sqrt`` and ``math.ldexp`` are exact or correctly rounded, so this
module gives the same bits on every machine. Accuracy: about 1e-15 relative near the
centre and 1e-13 deep in the tail (exp of a large argument), checked against scipy.
"""

from __future__ import annotations

import math

_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2: k·LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_INV_SQRT_2PI = 0.398942280401432677939946059934  # 1/√(2π), as a float64 literal
SERIES_LIMIT = 2.5
SERIES_TERMS = 80
FRACTION_TERMS = 240


def exp_neg(y: float) -> float:
    """e^y for y ≤ 0: y = k·ln2 + r with |r| ≤ ln2/2 (Cody–Waite), e^r by 24 Taylor terms, times 2^k."""
    if y < -745.0:
        return 0.0
    k = math.floor(y * _INV_LN2 + 0.5)
    r = (y - k * _LN2_HI) - k * _LN2_LO
    term = 1.0
    total = 1.0
    for n in range(1, 25):
        term = term * r / n
        total = total + term
    return math.ldexp(total, int(k))


def density(x: float) -> float:
    """φ(x) = e^(−x²/2)/√(2π)."""
    return exp_neg(-0.5 * (x * x)) * _INV_SQRT_2PI


def upper_tail(x: float) -> float:
    """Q(x) = P(Z > x) for a standard normal Z.

    x < 0: 1 − Q(−x). 0 ≤ x < 2.5: Q = 1/2 − φ(x)·Σ_{n<80} x^(2n+1)/(2n+1)!!
    (Abramowitz & Stegun 26.2.11). x ≥ 2.5: Laplace's continued fraction
    Q = φ(x)/(x + 1/(x + 2/(x + 3/(x + …)))), 240 levels evaluated from the bottom up.
    """
    if math.isinf(x):
        return 0.0 if x > 0 else 1.0
    if x < 0.0:
        return 1.0 - upper_tail(-x)
    if x < SERIES_LIMIT:
        term = x
        total = x
        x2 = x * x
        for n in range(1, SERIES_TERMS):
            term = term * x2 / (2 * n + 1)
            total = total + term
        return 0.5 - density(x) * total
    acc = x
    for n in range(FRACTION_TERMS, 0, -1):
        acc = x + n / acc
    return density(x) / acc
