"""Shards: ``resolve(..., slice=...)`` serves ``full[slice]``, byte for byte, for every kind and dtype.

Also the slice grammar (numpy basic slicing, step ≥ 1), its normalization (a slice of
everything is no slice), the spec and ETag identity, and the cost: a slice of a tensor
far too large to generate whole is served from its own elements only.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from service.core import InvalidParameterError, LimitExceededError, Tensor, generate, resolve
from service.core.slices import Geometry, check_slice

KINDS: list[tuple[str, list[int], dict[str, Any]]] = [
    ("he_normal", [64, 1000], {}),
    ("he_uniform", [7, 9, 11], {"convention": "keras"}),
    ("truncated_normal", [33, 17], {"convention": "jax"}),
    ("orthogonal", [40, 30], {}),
    ("orthogonal", [6, 5, 8], {"convention": "keras"}),
    ("identity", [3, 8, 6], {}),
    ("dirac", [8, 4, 3, 3], {}),
    ("delta_orthogonal", [3, 3, 4, 8], {"convention": "jax"}),
    ("sparse", [20, 10], {"params": {"sparsity": 0.3}}),
    ("constant", [5, 6], {"params": {"value": 2.0}}),
]
SLICES = ["0:2,:", ":,3:5", "1:7:3", "::2,1::4", "-3:", ":,:,5:6", "2:3"]


def numpy_slice(text: str) -> tuple[slice, ...]:
    return tuple(slice(*[int(x) if x else None for x in item.split(":")]) for item in text.split(","))


@pytest.mark.parametrize(("scheme", "shape", "kw"), KINDS, ids=[f"{k[0]}-{len(k[1])}d" for k in KINDS])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_a_slice_is_the_slice_of_the_whole_tensor(scheme: str, shape: list[int], kw: dict[str, Any], dtype: str) -> None:
    full = generate(resolve(scheme, shape, dtype=dtype, seed=3, **kw))
    for text in SLICES:
        if len(text.split(",")) > len(shape):
            continue
        spec = resolve(scheme, shape, dtype=dtype, seed=3, slice=text, **kw)
        want = np.ascontiguousarray(full[numpy_slice(text)])
        got = generate(spec)
        assert got.shape == want.shape == spec.out_shape, text
        assert got.tobytes() == want.tobytes(), text
        flat = want.reshape(-1)
        tensor = Tensor(spec)
        for lo, hi in [(0, 1), (1, 4), (flat.size // 2, flat.size), (3, 3)]:
            assert tensor.read(lo, hi).tobytes() == flat[lo:hi].tobytes(), (text, lo, hi)


def test_a_shard_of_a_tensor_too_large_to_make_whole_costs_only_the_shard() -> None:
    """(2^40, 4) he_uniform would be 16 TiB; rows [2^39, 2^39 + 8) are 32 numbers, and equal the same rows of a smaller slice."""
    big = [1 << 40, 4]
    spec = resolve("he_uniform", big, slice=f"{1 << 39}:{(1 << 39) + 8},:", seed=1)
    assert spec.out_shape == (8, 4) and spec.numel == 32 and spec.fan_in == 4
    wide = generate(resolve("he_uniform", big, slice=f"{(1 << 39) - 2}:{(1 << 39) + 10},:", seed=1))
    assert generate(spec).tobytes() == wide[2:10].tobytes()


def test_the_slice_is_part_of_the_spec_and_everything_is_no_slice() -> None:
    whole = resolve("he_normal", [8, 4])
    assert resolve("he_normal", [8, 4], slice=":,:").digest() == whole.digest()
    assert resolve("he_normal", [8, 4], slice="0:8").slice is None
    part = resolve("he_normal", [8, 4], slice="0:4")
    assert part.slice == ((0, 4, 1), (0, 4, 1)) and part.digest() != whole.digest()
    assert part.to_dict()["slice"] == [[0, 4, 1], [0, 4, 1]]
    assert resolve("he_normal", [8, 4], slice=["0:4", ":"]).digest() == part.digest()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0:2,:,:", "at most one item per axis"),
        ("5", "write 'i:i+1'"),
        ("::-1", "step -1"),
        ("::0", "step 0"),
        ("a:b", "'a' is not an integer"),
        ("1:2:3:4", "item 0"),
        (7, "numpy basic-slice syntax"),
        ([1, 2], "item 0 is not a string"),
    ],
)
def test_bad_slices_are_refused_naming_the_slice(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        resolve("he_normal", [8, 4], slice=value)
    assert caught.value.param == "slice" and fragment in caught.value.message


def test_a_slice_over_the_element_limit_is_too_large_and_names_the_slice() -> None:
    with pytest.raises(LimitExceededError) as caught:
        resolve("he_normal", [1 << 40, 4], slice=f"0:{1 << 34}")
    assert caught.value.param == "slice"


@pytest.mark.parametrize(
    ("shape", "text", "runs"),
    [
        ((4, 5), "1:3,:", [(5, 0, 10)]),  # whole trailing rows merge into one run
        ((4, 5), ":,1:3", [(1, 0, 2), (6, 2, 2), (11, 4, 2), (16, 6, 2)]),
        ((4, 5), "::2,::2", [(0, 0, 1), (2, 1, 1), (4, 2, 1), (10, 3, 1), (12, 4, 1), (14, 5, 1)]),
        ((2, 3, 4), "1:2,1:3,:", [(16, 0, 8)]),
    ],
)
def test_geometry_cuts_a_slice_into_runs_contiguous_in_the_full_tensor(
    shape: tuple[int, ...], text: str, runs: list[tuple[int, int, int]]
) -> None:
    sl = check_slice(text, shape)
    assert sl is not None
    geometry = Geometry(shape, sl)
    numel = int(np.prod(geometry.out_shape))
    assert list(geometry.pieces(0, numel)) == runs
    flat = np.arange(int(np.prod(shape))).reshape(shape)[numpy_slice(text)].reshape(-1)
    for lo, hi in itertools.combinations(range(numel + 1), 2):
        assert geometry.full_indices(lo, hi).tolist() == flat[lo:hi].tolist()
