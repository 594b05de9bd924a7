"""Signal propagation through a network: the mean-field theory, and a real pass through the served tensors.

Why an initialization is what it is (Glorot & Bengio 2010; He et al. 2015; Klambauer et
al. 2017; Poole et al. 2016 and Schoenholz et al. 2017 for the mean-field form used here):
the variance of the signal must neither vanish nor explode from layer to layer, forward
for the activations and backward for the gradients.

A network is a stack of layers ``h_l = W_l·u_l + b_l``, ``x_l = φ(h_l)``, or with a
residual connection ``x_l = x_{l−1} + β·φ(h_l)``; ``u_l`` is ``x_{l−1}``, or its layer
normalization (per sample, over the units, no affine part). ``x_0`` is a Gaussian batch of
variance ``input_variance``. A layer is dense (``W`` of shape (out, in) in torch's layout) or
a stride-1 convolution with circular padding (``W`` (out, in, *kernel)), so that every
output sees exactly fan_in = in·∏kernel inputs and every input feeds fan_out = out·∏kernel
outputs.

**Theory** (mean field: infinite width, weights independent of the signal). With
``v_l = E[x_l²]`` and ``q_l = E[h_l²]``::

    q_l = σ_w²·E[u_l²] + σ_b²,  σ_w² = fan_in·E[W²],  σ_b² = E[b²]
    v_l = E_{z~N(0,q_l)}[φ(z)²]            (plain)   v_{l−1} + 2β·μ_{l−1}·E[φ(z)] + β²·E[φ(z)²]  (residual)

with μ_l = E[x_l] (the same recursion on E[φ(z)]), and ``E[u_l²] = v_{l−1}``, or 1 after
layer normalization (Yang & Schoenholz 2017 for residual mean field). Backward, from a unit-variance
gradient ``∂L/∂x_L`` at the output, with ``G_l = E[(∂L/∂x_l)²]`` and ``D_l = E[(∂L/∂h_l)²]``::

    D_l = G_l·β²·E[φ′(z)²]  (β = 1 for a plain layer)
    G_{l−1} = (G_l if residual else 0) + fan_out·E[W²]·D_l·ν_l

with ν_l = 1, or 1/Var(x_{l−1}) through a layer normalization (its Jacobian scales by
1/σ and removes two directions of n, negligible here). The per-layer backward factor of
a plain stack is χ_l = D_{l}/D_{l+1} = fan_out·E[W²]·E[φ′(z)²] (Schoenholz et al.'s χ₁,
with fan_out where fan_in ≠ fan_out). The expectations are closed forms for linear,
relu, leaky_relu, elu and selu (piecewise: quadrature converges slowly across a kink)
the trapezoid rule for tanh, sigmoid, gelu, silu and softplus (smooth; see :func:`_rule`
for why not Gauss–Hermite). E[W²] and E[b²] are the exact second moments of the resolved
distributions (:func:`service.core.stats.theory`).

**Measurement**: a forward pass of the batch, then a backward pass of a unit-variance
Gaussian output gradient, in numpy, through the very tensors ``/init`` serves for the same
scheme, names (``layers.{i}.weight``, ``layers.{i}.bias``), seed, dtype and convention
(:class:`service.core.Tensor`: the same bytes). The reported numbers are the mean
squares of ``h_l`` and ``∂L/∂h_l`` over batch, units and positions. The matmuls use BLAS
in float32 on a signal rescaled to unit RMS (a matmul is linear, so the scale is put back
exactly; it keeps 2^−1000 from underflowing), the activations float64: this is a
measurement, not served bytes, so BLAS's summation order does not matter here. BLAS runs
single-threaded (:func:`_single_threaded_blas`): the engine's pools are its parallelism.

**Verdict** from the theory's gradient: ``G_0 / G_L`` (gradient at the input against the
output) within [1/2, 2] is ``stable``, below is ``vanishing``, above ``exploding``; the
per-layer factor is its geometric mean, and ``gain`` is the multiplier on every weight's
std that makes the per-layer gradient factor 1 (exact 1/√χ for positively homogeneous
activations, found by root finding over the recursion of the first
:data:`GAIN_SEARCH_LAYERS` layers otherwise). The fixed point
q* of a uniform plain stack is the attracting root of q = σ_w²·E[φ(z)²]_q + σ_b²
(SELU under LeCun normal: q* = 1, Klambauer et al. 2017).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .activations import ACTIVATIONS, QUADRATURE_MAX_STEPS, QUADRATURE_STEPS, SELU_ALPHA, SELU_SCALE, Activation
from .mean_field import GAIN_SEARCH_LAYERS, STABLE_BAND, Theory, _json, fixed_point, theory, unit_gain, verdict
from .measurement import Measurement, PropagationCancelledError, measure
from .networks import (
    NORMALIZATIONS,
    Layer,
    Network,
    PropagationLimits,
    build_network,
    build_networks,
    check_activation,
    check_cells,
    label_of,
)

__all__ = [
    "ACTIVATIONS",
    "GAIN_SEARCH_LAYERS",
    "NORMALIZATIONS",
    "QUADRATURE_MAX_STEPS",
    "QUADRATURE_STEPS",
    "SELU_ALPHA",
    "SELU_SCALE",
    "STABLE_BAND",
    "Activation",
    "Layer",
    "Measurement",
    "Network",
    "PropagationCancelledError",
    "PropagationLimits",
    "Result",
    "Theory",
    "build_network",
    "build_networks",
    "check_activation",
    "check_cells",
    "fixed_point",
    "label_of",
    "measure",
    "propagate",
    "theory",
    "unit_gain",
    "verdict",
]


@dataclass
class Result:
    """Theory, measurement (optional) and verdict of one network, JSON-ready through :meth:`to_dict`."""

    network: Network
    theory: Theory
    measurement: Measurement | None
    verdict: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        layers = []
        m = self.measurement
        for i, layer in enumerate(self.network.layers):
            layers.append(
                {
                    "index": i,
                    "width": layer.width,
                    "fan_in": layer.fan_in,
                    "fan_out": layer.fan_out,
                    "activation": layer.activation.to_dict(),
                    "scheme": layer.weight.scheme,
                    "recipe": dict(layer.weight.derivation).get("recipe"),
                    "weight": layer.weight.to_dict(),
                    "bias": None if layer.bias is None else layer.bias.to_dict(),
                    "sigma_w2": layer.sigma_w2,
                    "sigma_b2": layer.bias_square,
                    "forward": {"theory": _json(self.theory.forward[i]), "measured": None if m is None else _json(m.forward[i])},
                    "backward": {"theory": _json(self.theory.backward[i]), "measured": None if m is None else _json(m.backward[i])},
                }
            )
        return {"label": self.label, "layers": layers, "verdict": self.verdict}


def propagate(network: Network, *, measured: bool = True, label: str = "", halt: threading.Event | None = None) -> Result:
    """Theory, verdict and (unless ``measured`` is False) the real pass of ``network``."""
    th = theory(network)
    m = measure(network, halt) if measured else None
    return Result(network, th, m, verdict(network, th), label)
