"""Fans and gains: what the frameworks compute from a weight's shape alone.

The conventions disagree on weight layout, so on which axis is "in":

=========  =====================  =========================================  ==============
convention layout                 fan_in / fan_out                           rank 0 / rank 1
=========  =====================  =========================================  ==============
torch      (out, in, *kernel)     shape[1]*r / shape[0]*r, r = prod(shape[2:])  error
keras      (*kernel, in, out)     shape[-2]*r / shape[-1]*r, r = prod(shape[:-2])  (1, 1) / (n, n)
jax        (*kernel, in, out)     as keras                                    error
haiku      (*kernel, in, out)     as keras                                    (1, 1) / (n, n)
=========  =====================  =========================================  ==============

Sources: torch ``torch/nn/init.py:_calculate_fan_in_and_fan_out``; Keras 3
``keras/src/initializers/random_initializers.py:compute_fans``; JAX
``jax/_src/nn/initializers.py:_compute_fans`` (``in_axis``, ``out_axis``, ``batch_axis``);
Haiku ``haiku/_src/initializers.py:_compute_fans``. Explicit ``in_axes``/``out_axes``/
``batch_axes`` (JAX's model) override any layout: fan_in = prod(in axes) * receptive,
fan_out = prod(out axes) * receptive, receptive = product of the remaining axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import InvalidParameterError, InvalidShapeError

Convention = Literal["torch", "keras", "jax", "haiku"]
CONVENTIONS: tuple[str, ...] = get_args(Convention)


@dataclass(frozen=True)
class Fans:
    """fan_in and fan_out of a shape, with the rule that produced them."""

    fan_in: int
    fan_out: int
    rule: str


def check_convention(convention: object) -> str:
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise InvalidParameterError("convention", convention, "one of " + ", ".join(CONVENTIONS))
    return convention


def _normalize_axes(param: str, axes: Sequence[int], rank: int) -> tuple[int, ...]:
    out: list[int] = []
    for axis in axes:
        if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank:
            raise InvalidShapeError(param, list(axes), f"integers in [-{rank}, {rank - 1}] for a rank-{rank} shape")
        out.append(axis % rank)
    if len(set(out)) != len(out):
        raise InvalidShapeError(param, list(axes), "distinct axes")
    return tuple(out)


def compute_fans(
    shape: Sequence[int],
    convention: str = "torch",
    *,
    in_axes: Sequence[int] | None = None,
    out_axes: Sequence[int] | None = None,
    batch_axes: Sequence[int] | None = None,
) -> Fans:
    """fan_in and fan_out of ``shape`` as ``convention`` computes them (see the module table).

    With explicit axes (``in_axes`` and ``out_axes`` together, ``batch_axes`` optional) the
    layout is ignored: fan_in = prod(shape[in_axes]) * receptive and likewise for fan_out,
    where receptive is the product of the axes named by none of the three (JAX's rule).
    """
    check_convention(convention)
    shape = tuple(shape)
    rank = len(shape)
    if in_axes is not None or out_axes is not None or batch_axes is not None:
        if in_axes is None or out_axes is None:
            raise InvalidShapeError(
                "in_axes" if in_axes is None else "out_axes",
                None,
                "in_axes and out_axes must be given together (batch_axes is optional)",
            )
        ins = _normalize_axes("in_axes", in_axes, rank)
        outs = _normalize_axes("out_axes", out_axes, rank)
        batch = _normalize_axes("batch_axes", batch_axes or (), rank)
        if not ins or not outs:
            raise InvalidShapeError("in_axes" if not ins else "out_axes", [], "at least one axis")
        named = set(ins) | set(outs) | set(batch)
        if len(named) != len(ins) + len(outs) + len(batch):
            raise InvalidShapeError("batch_axes", list(batch_axes or ()), "axes that appear in only one of in_axes, out_axes, batch_axes")
        receptive = math.prod(shape[i] for i in range(rank) if i not in named)
        return Fans(
            math.prod(shape[i] for i in ins) * receptive,
            math.prod(shape[i] for i in outs) * receptive,
            f"explicit axes in={list(ins)} out={list(outs)} batch={list(batch)}",
        )
    if convention == "torch":
        if rank < 2:
            raise InvalidShapeError(
                "shape",
                list(shape),
                "at least 2 dimensions in torch convention (fan in and fan out cannot be computed for "
                "tensor with fewer than 2 dimensions); use keras or haiku convention, or give in_axes/out_axes",
            )
        receptive = math.prod(shape[2:])
        return Fans(
            shape[1] * receptive, shape[0] * receptive, "torch: fan_in = shape[1]*prod(shape[2:]), fan_out = shape[0]*prod(shape[2:])"
        )
    if rank < 2:
        if convention == "jax":
            raise InvalidShapeError(
                "shape",
                list(shape),
                "at least 2 dimensions in jax convention (JAX cannot compute fans of a "
                f"{rank}-dimensional tensor); use keras or haiku convention, or give in_axes/out_axes",
            )
        n = 1 if rank == 0 else shape[0]
        return Fans(n, n, f"{convention}: rank {rank} gives fan_in = fan_out = {'1' if rank == 0 else 'shape[0]'}")
    receptive = math.prod(shape[:-2])
    return Fans(
        shape[-2] * receptive,
        shape[-1] * receptive,
        f"{convention}: fan_in = shape[-2]*prod(shape[:-2]), fan_out = shape[-1]*prod(shape[:-2])",
    )


LINEAR_NONLINEARITIES = (
    "linear",
    "identity",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
)
NONLINEARITIES: tuple[str, ...] = (*LINEAR_NONLINEARITIES, "tanh", "relu", "leaky_relu", "selu")


def calculate_gain(nonlinearity: str, negative_slope: float | None = None) -> float:
    """torch's ``calculate_gain``: the std multiplier recommended for a nonlinearity.

    linear, identity, conv*, conv_transpose*, sigmoid: 1; tanh: 5/3; relu: √2;
    leaky_relu: √(2 / (1 + negative_slope²)) with negative_slope 0.01 when not given;
    selu: 3/4. Source: ``torch/nn/init.py:calculate_gain``. Unlike torch, a
    ``negative_slope`` given with another nonlinearity is an error, not silently ignored.
    """
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise InvalidParameterError("nonlinearity", nonlinearity, "one of " + ", ".join(NONLINEARITIES))
    if negative_slope is not None and nonlinearity != "leaky_relu":
        raise InvalidParameterError(
            "negative_slope", negative_slope, f"only with nonlinearity 'leaky_relu' (got nonlinearity {nonlinearity!r})"
        )
    if nonlinearity in LINEAR_NONLINEARITIES:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    slope = 0.01 if negative_slope is None else negative_slope
    if abs(slope) > 1e150:  # slope² would overflow: the same value through hypot
        return math.sqrt(2.0) / math.hypot(1.0, slope)
    return math.sqrt(2.0 / (1 + slope**2))  # torch's expression, to the last bit
