"""The standard normal's CDF, density and interval mass, for validation and theory.

Nothing here makes served bytes (that is ``service.core.algorithms``): these are what
resolution checks a truncation against and what /stats compares a tensor with, so the
platform's ``math.erfc`` is good enough.
"""

from __future__ import annotations

import math


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def normal_mass(alpha: float, beta: float) -> float:
    """P(alpha <= Z <= beta) for a standard normal Z, accurate in either tail."""
    if alpha >= 0:
        return 0.5 * (math.erfc(alpha / math.sqrt(2.0)) - math.erfc(beta / math.sqrt(2.0)))
    if beta <= 0:
        return normal_mass(-beta, -alpha)
    return 1.0 - norm_cdf(alpha) - (1.0 - norm_cdf(beta))
