"""Every scheme × convention × shape (rank 0 to 5, zero-size dims, grouped, depthwise,
packed QKV) × dtype: either a tensor of the right shape and dtype whose moments match
the theory, or a TensorinitError naming what is wrong. Nothing else may happen."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from service.core import SCHEMES, TensorinitError, generate, resolve
from service.core.stats import theory

SHAPES: list[tuple[int, ...]] = [
    (),
    (7,),
    (0,),
    (64, 48),
    (0, 5),
    (3 * 64, 64),  # packed q, k, v
    (32, 1, 3, 3),  # depthwise conv (torch layout)
    (3, 3, 1, 32),  # depthwise conv (keras layout)
    (8, 4, 5),
    (16, 8, 3, 3),
    (2, 3, 4, 5, 6),
    (4, 4, 4, 0, 2),
]
REQUIRED: dict[str, dict[str, Any]] = {"constant": {"value": 0.25}, "sparse": {"sparsity": 0.5}}


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("convention", ["torch", "keras", "jax", "haiku"])
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_combination_generates_or_explains(scheme: str, convention: str, dtype: str) -> None:
    for shape in SHAPES:
        try:
            spec = resolve(scheme, shape, convention=convention, dtype=dtype, params=REQUIRED.get(scheme), seed=len(shape))
        except TensorinitError as err:
            explained = bool(err.param and err.allowed)
            assert explained, err  # noqa: PT017 - a property of every error, not one expected raise
            continue
        arr = generate(spec)
        assert arr.shape == shape
        assert arr.dtype == spec.np_dtype
        x = arr.astype(np.float64).reshape(-1)
        assert np.isfinite(x).all()
        th = theory(spec)
        if x.size >= 2000 and th.std > 0:
            # Loose: small tensors; the statistical tests elsewhere are strict.
            assert abs(x.mean() - th.mean) < 6 * th.std / math.sqrt(x.size) + 0.02 * th.std, spec
            assert x.std() == pytest.approx(th.std, rel=0.15), spec
        elif x.size and th.std == 0:
            assert (x == x[0]).all()
