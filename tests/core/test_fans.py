"""Fans and gains, hand-computed from REFERENCE.md §1–2 and the frameworks' sources."""

from __future__ import annotations

import math
from typing import Any

import pytest

from service.core import InvalidParameterError, InvalidShapeError, calculate_gain, compute_fans

FANS: list[tuple[tuple[int, ...], str, dict[str, Any], int, int]] = [
    # shape, convention, axes, fan_in, fan_out
    ((256, 128), "torch", {}, 128, 256),
    ((256, 128), "keras", {}, 256, 128),
    ((256, 128), "jax", {}, 256, 128),
    ((256, 128), "haiku", {}, 256, 128),
    ((3, 3, 16, 32), "keras", {}, 144, 288),
    ((3, 3, 16, 32), "jax", {}, 144, 288),
    ((3, 3, 16, 32), "haiku", {}, 144, 288),
    ((32, 16, 3, 3), "torch", {}, 144, 288),
    ((32, 1, 3, 3), "torch", {}, 9, 288),  # depthwise conv, 32 channels
    ((3, 3, 1, 32), "keras", {}, 9, 288),
    ((16, 32, 3, 3), "torch", {}, 288, 144),  # ConvTranspose2d(16 -> 32): torch's own (in, out, k) reading
    ((3 * 512, 512), "torch", {}, 512, 1536),  # MultiheadAttention packed in_proj_weight: fan_out = 3E
    ((8, 4, 5), "torch", {}, 20, 40),
    ((5, 4, 8), "keras", {}, 20, 40),
    ((2, 3, 4, 5, 6), "torch", {}, 3 * 120, 2 * 120),
    ((2, 3, 4, 5, 6), "keras", {}, 5 * 24, 6 * 24),
    ((), "keras", {}, 1, 1),
    ((), "haiku", {}, 1, 1),
    ((7,), "keras", {}, 7, 7),
    ((7,), "haiku", {}, 7, 7),
    ((0, 128), "torch", {}, 128, 0),
    ((128, 0), "keras", {}, 128, 0),
    ((4, 16, 32), "jax", {"in_axes": [1], "out_axes": [2], "batch_axes": [0]}, 16, 32),
    ((3, 3, 16, 32), "torch", {"in_axes": [2], "out_axes": [3]}, 144, 288),
    ((8, 2, 4), "jax", {"in_axes": [0, 1], "out_axes": [-1]}, 16, 4),
]


@pytest.mark.parametrize(("shape", "convention", "axes", "fan_in", "fan_out"), FANS)
def test_fans(shape: tuple[int, ...], convention: str, axes: dict[str, Any], fan_in: int, fan_out: int) -> None:
    fans = compute_fans(shape, convention, **axes)
    assert (fans.fan_in, fans.fan_out) == (fan_in, fan_out)


@pytest.mark.parametrize(
    ("shape", "convention", "axes", "param"),
    [
        ((5,), "torch", {}, "shape"),
        ((), "torch", {}, "shape"),
        ((5,), "jax", {}, "shape"),
        ((4, 4), "jax", {"in_axes": [0]}, "out_axes"),
        ((4, 4), "jax", {"in_axes": [2], "out_axes": [1]}, "in_axes"),
        ((4, 4), "jax", {"in_axes": [0], "out_axes": [0]}, "batch_axes"),
        ((4, 4), "jax", {"in_axes": [True], "out_axes": [1]}, "in_axes"),
        ((4, 4, 4), "jax", {"in_axes": [0, 0], "out_axes": [1]}, "in_axes"),
    ],
)
def test_fan_errors_name_the_parameter(shape: tuple[int, ...], convention: str, axes: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidShapeError) as info:
        compute_fans(shape, convention, **axes)
    assert info.value.param == param
    assert info.value.allowed


GAINS = [
    ("linear", None, 1.0),
    ("identity", None, 1.0),
    ("conv1d", None, 1.0),
    ("conv2d", None, 1.0),
    ("conv3d", None, 1.0),
    ("conv_transpose1d", None, 1.0),
    ("conv_transpose2d", None, 1.0),
    ("conv_transpose3d", None, 1.0),
    ("sigmoid", None, 1.0),
    ("tanh", None, 5.0 / 3),
    ("relu", None, math.sqrt(2.0)),
    ("selu", None, 0.75),
    ("leaky_relu", None, math.sqrt(2.0 / (1 + 0.01**2))),
    ("leaky_relu", 0.0, math.sqrt(2.0)),
    ("leaky_relu", 0.2, math.sqrt(2.0 / 1.04)),
    ("leaky_relu", math.sqrt(5), math.sqrt(1.0 / 3)),  # torch Linear's a=√5: bound = 1/√fan_in
]


@pytest.mark.parametrize(("nonlinearity", "slope", "gain"), GAINS)
def test_calculate_gain(nonlinearity: str, slope: float | None, gain: float) -> None:
    assert calculate_gain(nonlinearity, slope) == pytest.approx(gain, rel=1e-15)


def test_gain_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    for nonlinearity, slope, _ in GAINS:
        if nonlinearity == "identity":
            continue
        assert calculate_gain(nonlinearity, slope) == torch.nn.init.calculate_gain(nonlinearity, slope)


@pytest.mark.parametrize(("nonlinearity", "slope", "param"), [("swish", None, "nonlinearity"), ("relu", 0.1, "negative_slope")])
def test_gain_errors(nonlinearity: str, slope: float | None, param: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        calculate_gain(nonlinearity, slope)
    assert info.value.param == param
