"""The mean-field theory: the forward and backward recursions, the gain for χ = 1, the fixed point, and the verdict.

The recursions and the verdict's rule are those of the package docstring (Poole et al. 2016;
Schoenholz et al. 2017; Yang & Schoenholz 2017 for residual mean field).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.optimize

from .networks import Network

STABLE_BAND = 2.0
GAIN_SEARCH_LAYERS = 100  # stable when the gradient's total growth lies within [1/2, 2]


@dataclass(frozen=True)
class Theory:
    """Per layer: forward q_l = E[h_l²] and backward D_l = E[(∂L/∂h_l)²], and the stream's E[x_l²].

    The backward side is kept in logs (``log_input_gradient`` is ln G_0): a deep stack's
    gradient can leave the float range long before its verdict is in doubt.
    """

    forward: tuple[float, ...]
    backward: tuple[float, ...]
    output: tuple[float, ...]
    log_input_gradient: float

    @property
    def input_gradient(self) -> float:
        """G_0 = E[(∂L/∂x_0)²] for a unit-variance output gradient."""
        return _exp(self.log_input_gradient)


def _exp(log_value: float) -> float:
    return math.exp(min(log_value, 709.0)) if log_value < 709.0 else math.inf


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


def theory(network: Network, scale: float = 1.0) -> Theory:
    """The mean-field recursion of the module docstring; ``scale`` multiplies every weight's std."""
    s2 = scale * scale
    v, mean = network.input_variance, 0.0
    qs: list[float] = []
    outs: list[float] = []
    factors: list[tuple[float, float]] = []  # per layer: (ln(β²·E[φ′²]), ln of G_{l−1}/G_l)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for layer in network.layers:
            if layer.norm is not None:
                var = v - mean * mean
                u2, nu = 1.0, (1.0 / var if var > 0 else math.inf)
            else:
                u2, nu = v, 1.0
            q = s2 * layer.sigma_w2 * u2 + layer.bias_square
            m1, m2, d2 = layer.activation.moments(q) if math.isfinite(q) else (math.nan, math.inf, math.nan)
            beta2 = layer.multiplier * layer.multiplier if layer.residual else 1.0
            if layer.residual:
                # The fluctuations of x_{l−1} and φ(h_l) are uncorrelated (mean field), their means are not.
                v, mean = v + 2.0 * layer.multiplier * mean * m1 + beta2 * m2, mean + layer.multiplier * m1
            else:
                v, mean = m2, m1
            qs.append(q)
            outs.append(v)
            back = beta2 * d2 * s2 * layer.back_w2 * nu
            ratio = (1.0 + back) if layer.residual else back
            factors.append((_log(beta2 * d2), _log(ratio) if not math.isnan(ratio) else math.inf))
    ds = [0.0] * len(qs)
    log_g = 0.0
    for i in range(len(qs) - 1, -1, -1):
        ds[i] = _exp(log_g + factors[i][0])
        log_g += factors[i][1]
    return Theory(tuple(qs), tuple(ds), tuple(outs), log_g)


def _log_gradient_growth(network: Network, scale: float) -> float:
    return theory(network, scale).log_input_gradient


def unit_gain(network: Network) -> float | None:
    """The multiplier on every weight's std that makes the gradient's total growth 1 (G_0 = G_L), if one exists.

    None for a residual network: its per-layer factor 1 + β²·χ is above 1 for every gain but 0.
    """
    if any(la.residual for la in network.layers):
        return None
    if all(la.activation.homogeneous and la.bias_square == 0 for la in network.layers):
        growth = _log_gradient_growth(network, 1.0)
        if not math.isfinite(growth):
            return None
        return math.exp(-growth / (2 * len(network.layers)))  # every layer's factor scales as gain²

    # Root finding runs the recursion some 30 times: past GAIN_SEARCH_LAYERS layers the
    # per-layer factor has settled at its fixed point's, so the first ones decide.
    head = replace(network, layers=network.layers[:GAIN_SEARCH_LAYERS])

    def f(log_scale: float) -> float:
        value = _log_gradient_growth(head, math.exp(log_scale))
        # A dead or overflowing signal still says which side of 1 it is on.
        return 1e6 if math.isnan(value) else min(max(value, -1e6), 1e6)

    # Saturating activations lose the gradient again at large gains: the smallest root is the one meant.
    grid = np.linspace(math.log(1e-3), math.log(1e3), 13)
    values = [f(x) for x in grid]
    for lo, hi, a, b in zip(grid[:-1], grid[1:], values[:-1], values[1:], strict=True):
        if a < 0 <= b:
            try:
                return math.exp(scipy.optimize.brentq(f, lo, hi, xtol=1e-6)) if b > 0 else math.exp(hi)
            except (ValueError, OverflowError, FloatingPointError):
                return None
    return None


def fixed_point(network: Network) -> dict[str, Any] | None:
    """The attracting fixed point q* of a uniform plain stack's map q ↦ σ_w²·E[φ(z)²]_q + σ_b², or None.

    None when layers differ, a layer is residual, or every q is fixed (a homogeneous activation at
    χ = 1) or none is (the map grows without bound). q* = 0 when the signal dies out.
    """
    first = network.layers[0]
    sw2, sb2 = first.sigma_w2, first.bias_square
    uniform = all(
        not la.residual and la.activation == first.activation and la.sigma_w2 == sw2 and la.bias_square == sb2 for la in network.layers
    )
    if not uniform:
        return None

    def gap(q: float) -> float:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            return sw2 * first.activation.moments(q)[1] + sb2 - q

    grid = np.logspace(-8, 8, 161)
    values = np.array([gap(q) for q in grid])
    scale = np.maximum(np.abs(grid), 1e-300)
    if np.all(np.abs(values) <= 1e-12 * scale):
        return None
    for lo, hi, a, b in zip(grid[:-1], grid[1:], values[:-1], values[1:], strict=True):
        if a > 0 >= b:  # above the diagonal below q*, under it above: attracting
            root = float(scipy.optimize.brentq(gap, lo, hi, xtol=1e-14, rtol=1e-12)) if b < 0 else float(hi)
            return {"q": root, "attracting": True}
    if np.all(values < 0):
        return {"q": 0.0, "attracting": True}
    return None


def _json(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _log_factor(values: Sequence[float], reverse: bool = False) -> float | None:
    """The geometric mean of consecutive ratios (first to last, or last to first)."""
    if len(values) < 2:
        return None
    a, b = (values[-1], values[0]) if reverse else (values[0], values[-1])
    if a <= 0 or b <= 0 or not math.isfinite(a) or not math.isfinite(b):
        return None
    return math.exp((math.log(b) - math.log(a)) / (len(values) - 1))


def verdict(network: Network, th: Theory) -> dict[str, Any]:
    """``stable``, ``vanishing`` or ``exploding`` from the gradient's total growth, with factors, gain and q*."""
    log_growth = th.log_input_gradient  # ln(G_0 / G_L) with G_L = 1
    band = math.log(STABLE_BAND)
    if math.isnan(log_growth) or log_growth > band:
        kind = "exploding"
    elif log_growth < -band:
        kind = "vanishing"
    else:
        kind = "stable"
    per_layer = math.exp(log_growth / len(network.layers)) if math.isfinite(log_growth) else None
    growth = th.input_gradient
    gain = unit_gain(network)
    return {
        "verdict": kind,
        "gradient_growth": _json(growth),
        "log_gradient_growth": _json(log_growth),
        "gradient_factor_per_layer": per_layer,
        "forward_factor_per_layer": _log_factor(th.forward),
        "gain_for_unit_chi": gain,
        "fixed_point": fixed_point(network),
    }
