"""An explicit factor c on the spec (README, "Rescaling by an explicit factor") gives c times the same draws.

One row per scheme: the spec fields of the tensor W, and those of c·W. The served
c·W must equal c times the served W to a few float32 roundings, element by element,
for the same name and seed, in torch and keras conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.core import generate, resolve

Fields = dict[str, Any]

FACTORS = (0.37, 2.5)
BOUND = 2.0**-21  # of max |c·W|: measured at most 2.35e-7 (about 2^-22) over this table

# scheme, shape, fields of W, fields of c·W
ROWS: list[tuple[str, tuple[int, ...], Fields, Callable[[float], Fields]]] = [
    ("orthogonal", (64, 48), {}, lambda c: {"gain": c}),
    ("orthogonal", (48, 64), {"gain": 2.0}, lambda c: {"gain": 2.0 * c}),
    ("identity", (6, 9), {}, lambda c: {"gain": c}),
    ("delta_orthogonal", (3, 3, 8, 8), {}, lambda c: {"gain": c}),
    ("glorot_uniform", (64, 48), {}, lambda c: {"gain": c}),
    ("glorot_normal", (64, 48), {}, lambda c: {"gain": c}),
    ("lecun_normal", (64, 48), {}, lambda c: {"gain": c}),
    ("he_normal", (64, 48), {}, lambda c: {"gain": c * math.sqrt(2.0)}),  # default leaky_relu, slope 0: gain √2
    ("he_uniform", (64, 48), {"nonlinearity": "relu"}, lambda c: {"gain": c * math.sqrt(2.0)}),
    ("he_normal", (64, 48), {"nonlinearity": "tanh"}, lambda c: {"gain": c * 5.0 / 3.0}),
    ("variance_scaling", (64, 48), {"scale": 2.0}, lambda c: {"scale": 2.0 * c * c}),  # a variance: c²
    ("variance_scaling", (64, 48), {"distribution": "uniform"}, lambda c: {"distribution": "uniform", "scale": c * c}),
    ("uniform_scaling", (64, 48), {"scale": 1.5}, lambda c: {"scale": 1.5 * c}),  # multiplies the bound: c
    ("normal", (64, 48), {"std": 0.02}, lambda c: {"std": 0.02 * c}),
    ("normal", (64, 48), {"mean": 1.0, "std": 0.5}, lambda c: {"mean": c, "std": 0.5 * c}),
    ("sparse", (64, 48), {"sparsity": 0.3}, lambda c: {"sparsity": 0.3, "std": 0.01 * c}),
    ("uniform", (64, 48), {"low": -0.1, "high": 0.2}, lambda c: {"low": -0.1 * c, "high": 0.2 * c}),
    ("constant", (5, 4), {"value": 3.0}, lambda c: {"value": 3.0 * c}),
    ("ones", (5, 4), {}, lambda c: {"scheme": "constant", "value": c}),
    # bounds in std units follow std; absolute bounds must be scaled with it
    ("truncated_normal", (64, 48), {"std": 0.02, "bounds": "std"}, lambda c: {"std": 0.02 * c, "bounds": "std"}),
    (
        "truncated_normal",
        (64, 48),
        {"std": 0.02, "lower": -0.04, "upper": 0.03, "bounds": "absolute"},
        lambda c: {"std": 0.02 * c, "lower": -0.04 * c, "upper": 0.03 * c, "bounds": "absolute"},
    ),
]


@pytest.mark.parametrize("convention", ["torch", "keras"])
@pytest.mark.parametrize("c", FACTORS)
@pytest.mark.parametrize(("scheme", "shape", "base", "scaled"), ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(ROWS)])
def test_the_factor_on_the_spec_scales_the_same_draws(
    scheme: str, shape: tuple[int, ...], base: Fields, scaled: Callable[[float], Fields], c: float, convention: str
) -> None:
    fields = scaled(c)
    other = fields.pop("scheme", scheme)
    w = generate(resolve(scheme, shape, seed=3, name="fc.weight", convention=convention, params=base)).astype(np.float64)
    wc = generate(resolve(other, shape, seed=3, name="fc.weight", convention=convention, params=fields)).astype(np.float64)
    assert np.any(w != 0)
    assert np.array_equal(w == 0, wc == 0)  # the same zeros (sparse, identity, delta_orthogonal)
    assert np.max(np.abs(wc - c * w)) <= BOUND * np.max(np.abs(c * w))
