"""Activations and their Gaussian moments: φ, φ′ and E[φ(z)], E[φ(z)²], E[φ′(z)²] for z ~ N(0, q).

Closed forms for linear, relu, leaky_relu, elu and selu (piecewise: quadrature converges
slowly across a kink), the trapezoid rule for tanh, sigmoid, gelu, silu and softplus
(smooth; see :func:`_rule` for why not Gauss–Hermite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.special

Array = np.ndarray[Any, Any]

ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "sigmoid", "selu", "elu", "gelu", "silu", "softplus")
QUADRATURE_STEPS = 6  # trapezoid steps per standard deviation, while a step is under 0.25
QUADRATURE_MAX_STEPS = 8192
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SPAN = 12.0  # standard deviations each side: the density past them is below 1e-31


def _rule(q: float) -> tuple[Array, Array]:
    """Nodes and weights of E_{z~N(0,q)}[f(z)] for smooth f: the trapezoid rule on ±12√q.

    Why not Gauss–Hermite: tanh and sigmoid have poles at ±iπ/2 and ±iπ, which the
    Hermite nodes, scaled by √(2q), come ever closer to as q grows (96 nodes: 1e−5 off at
    q = 4). The trapezoid rule on an analytic, rapidly decaying integrand converges
    geometrically, as exp(−2π·d/h) for poles at distance d and step h (Trefethen &
    Weideman, SIAM Review 2014): h = min(√q/6, 0.25) is within 1e−9 up to q ≈ 10⁴
    (at most :data:`QUADRATURE_MAX_STEPS` steps; beyond, the activation is saturated anyway).
    """
    s = math.sqrt(q)
    step = min(s / QUADRATURE_STEPS, 0.25)
    steps = min(math.ceil(2 * _SPAN * s / step), QUADRATURE_MAX_STEPS)
    t = np.linspace(-_SPAN, _SPAN, steps + 1)
    weights = np.exp(-0.5 * t * t) * (2 * _SPAN / steps) / _SQRT_2PI
    weights[[0, -1]] *= 0.5
    return s * t, weights


@dataclass(frozen=True)
class Activation:
    """φ and φ′, with ``slope`` for leaky_relu (default 0.01, torch's) and ``alpha`` for elu (default 1)."""

    name: str
    slope: float = 0.01
    alpha: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.name == "leaky_relu":
            d["slope"] = self.slope
        if self.name == "elu":
            d["alpha"] = self.alpha
        return d

    @property
    def homogeneous(self) -> bool:
        """φ(c·z) = c·φ(z) for c > 0: the gain then scales every variance exactly."""
        return self.name in ("linear", "relu", "leaky_relu")

    def phi(self, z: Array) -> Array:
        n = self.name
        if n == "linear":
            return z
        if n == "relu":
            return np.maximum(z, 0.0)
        if n == "leaky_relu":
            return np.where(z > 0, z, self.slope * z)
        if n == "tanh":
            return np.tanh(z)
        if n == "sigmoid":
            return np.asarray(scipy.special.expit(z))
        if n in ("elu", "selu"):
            scale, alpha = (SELU_SCALE, SELU_ALPHA) if n == "selu" else (1.0, self.alpha)
            return scale * np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))
        if n == "gelu":
            return z * np.asarray(scipy.special.ndtr(z), dtype=np.float64)
        if n == "silu":
            return z * np.asarray(scipy.special.expit(z), dtype=np.float64)
        assert n == "softplus"
        return np.logaddexp(0.0, z)

    def dphi(self, z: Array) -> Array:
        n = self.name
        if n == "linear":
            return np.ones_like(z)
        if n == "relu":
            return (z > 0).astype(z.dtype)
        if n == "leaky_relu":
            return np.where(z > 0, 1.0, self.slope)
        if n == "tanh":
            return 1.0 - np.tanh(z) ** 2
        if n == "sigmoid":
            s = np.asarray(scipy.special.expit(z))
            return s * (1.0 - s)
        if n in ("elu", "selu"):
            scale, alpha = (SELU_SCALE, SELU_ALPHA) if n == "selu" else (1.0, self.alpha)
            return scale * np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))
        if n == "gelu":
            return np.asarray(scipy.special.ndtr(z)) + z * np.exp(-0.5 * z * z) / _SQRT_2PI
        if n == "silu":
            s = np.asarray(scipy.special.expit(z))
            return s * (1.0 + z * (1.0 - s))
        assert n == "softplus"
        return np.asarray(scipy.special.expit(z))

    def moments(self, q: float) -> tuple[float, float, float]:
        """(E[φ(z)], E[φ(z)²], E[φ′(z)²]) for z ~ N(0, q) (call under ``np.errstate``: q may be huge)."""
        if q <= 0:
            z0 = np.zeros(1)
            return float(self.phi(z0)[0]), float(self.phi(z0)[0] ** 2), float(self.dphi(z0)[0] ** 2)
        n, s = self.name, math.sqrt(q)
        if n == "linear":
            return 0.0, q, 1.0
        if n in ("relu", "leaky_relu"):
            a = 0.0 if n == "relu" else self.slope
            return (1.0 - a) * s / _SQRT_2PI, q * (1.0 + a * a) / 2.0, (1.0 + a * a) / 2.0
        if n in ("elu", "selu"):
            scale, alpha = (SELU_SCALE, SELU_ALPHA) if n == "selu" else (1.0, self.alpha)

            # E[e^{tz}·1{z<0}] = e^{t²q/2}·Φ(−t√q) = erfcx(t√q/√2)/2: no overflow at any q.
            def lower(t: float) -> float:
                return float(scipy.special.erfcx(t * s / math.sqrt(2.0))) / 2.0

            mean = scale * (s / _SQRT_2PI + alpha * (lower(1.0) - 0.5))
            square = scale * scale * (q / 2.0 + alpha * alpha * (lower(2.0) - 2.0 * lower(1.0) + 0.5))
            slope = scale * scale * (0.5 + alpha * alpha * lower(2.0))
            return mean, square, slope
        z, weights = _rule(q)
        f = self.phi(z)
        d = 1.0 - f * f if n == "tanh" else self.dphi(z)
        return float(weights @ f), float(weights @ (f * f)), float(weights @ (d * d))
