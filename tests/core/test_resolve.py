"""Resolution: every scheme × convention gives the distribution its framework gives.

Expected numbers are written out by hand from REFERENCE.md §3–4, not computed by the code
under test. T = 0.87962566103423978, the std of N(0, 1) truncated to [-2, 2].
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from service.core import (
    SCHEMES,
    InvalidParameterError,
    InvalidShapeError,
    LimitExceededError,
    Limits,
    MissingParameterError,
    TensorinitError,
    UnknownParameterError,
    UnknownSchemeError,
    resolve,
)
from service.core.spec import (
    Constant,
    DeltaOrthogonal,
    Dirac,
    Distribution,
    Identity,
    Normal,
    Orthogonal,
    Sparse,
    TruncatedNormal,
    Uniform,
)

T = 0.87962566103423978
R2 = math.sqrt(2.0)


def tn(target_std: float) -> TruncatedNormal:
    """Keras/JAX/Haiku truncated 'normal' presets: realised std = target."""
    s = target_std / T
    return TruncatedNormal(0.0, s, -2 * s, 2 * s)


def uni(bound: float) -> Uniform:
    return Uniform(-bound, bound)


CASES: list[tuple[str, tuple[int, ...], str, dict[str, Any], Distribution]] = [
    # he / kaiming
    ("he_normal", (256, 128), "torch", {}, Normal(0.0, R2 / math.sqrt(128))),
    ("kaiming_normal", (256, 128), "torch", {}, Normal(0.0, 0.125)),
    ("he_normal", (256, 128), "keras", {}, tn(math.sqrt(2 / 256))),
    ("he_normal", (3, 3, 16, 32), "keras", {}, tn(math.sqrt(2 / 144))),
    ("he_normal", (3, 3, 16, 32), "jax", {}, tn(math.sqrt(2 / 144))),
    ("he_normal", (3, 3, 16, 32), "haiku", {}, tn(math.sqrt(2 / 144))),
    ("he_normal", (32, 16, 3, 3), "torch", {}, Normal(0.0, R2 / 12)),
    ("he_normal", (32, 1, 3, 3), "torch", {}, Normal(0.0, R2 / 3)),  # depthwise: fan_in 9
    ("he_normal", (256, 128), "torch", {"mode": "fan_out"}, Normal(0.0, R2 / 16)),
    ("he_normal", (256, 128), "torch", {"nonlinearity": "relu"}, Normal(0.0, 0.125)),
    ("he_normal", (256, 128), "torch", {"nonlinearity": "tanh"}, Normal(0.0, (5 / 3) / math.sqrt(128))),
    ("he_normal", (256, 128), "torch", {"truncated": True}, tn(0.125)),
    ("he_normal", (256, 128), "keras", {"truncated": False}, Normal(0.0, math.sqrt(2 / 256))),
    ("he_uniform", (256, 128), "torch", {}, uni(math.sqrt(3.0) * R2 / math.sqrt(128))),
    ("he_uniform", (256, 128), "torch", {"negative_slope": math.sqrt(5)}, uni(math.sqrt(3.0) * math.sqrt(1 / 3) / math.sqrt(128))),
    ("he_uniform", (3, 3, 16, 32), "keras", {}, uni(math.sqrt(6 / 144))),
    ("kaiming_uniform_", (64, 3, 7, 7), "torch", {"gain": 1.0}, uni(math.sqrt(3.0) / math.sqrt(147))),
    # glorot / xavier
    ("glorot_uniform", (256, 128), "torch", {}, uni(math.sqrt(3.0) * 1.0 / math.sqrt(192))),
    ("xavier_uniform", (256, 128), "keras", {}, uni(math.sqrt(6 / 384))),
    ("glorot_uniform", (256, 128), "torch", {"gain": 2.0}, uni(math.sqrt(3.0) * 2 / math.sqrt(192))),
    ("glorot_normal", (256, 128), "torch", {}, Normal(0.0, math.sqrt(2 / 384))),
    ("glorot_normal", (256, 128), "jax", {}, tn(math.sqrt(2 / 384))),
    ("xavier_normal", (3, 3, 16, 32), "haiku", {}, tn(math.sqrt(2 / 432))),
    # lecun
    ("lecun_normal", (256, 128), "jax", {}, tn(math.sqrt(1 / 256))),
    ("lecun_normal", (256, 128), "torch", {}, Normal(0.0, 1 / math.sqrt(128))),
    ("lecun_uniform", (256, 128), "keras", {}, uni(math.sqrt(3 / 256))),
    # variance scaling
    ("variance_scaling", (256, 128), "keras", {}, tn(math.sqrt(1 / 256))),
    ("variance_scaling", (256, 128), "keras", {"distribution": "normal"}, tn(math.sqrt(1 / 256))),
    ("variance_scaling", (256, 128), "jax", {"distribution": "normal"}, Normal(0.0, math.sqrt(1 / 256))),
    ("variance_scaling", (256, 128), "haiku", {"distribution": "normal"}, Normal(0.0, math.sqrt(1 / 256))),
    (
        "variance_scaling",
        (256, 128),
        "jax",
        {"scale": 2.0, "mode": "fan_geo_avg", "distribution": "uniform"},
        uni(math.sqrt(3 * 2 / math.sqrt(256 * 128))),
    ),
    ("variance_scaling", (256, 128), "keras", {"mode": "fan_out", "distribution": "untruncated_normal"}, Normal(0.0, math.sqrt(1 / 128))),
    ("variance_scaling", (7,), "keras", {}, tn(math.sqrt(1 / 7))),
    ("variance_scaling", (), "haiku", {}, tn(1.0)),
    ("variance_scaling", (0, 5), "keras", {}, tn(1.0)),  # Keras divides by max(1, fan)
    # plain distributions, each framework's defaults
    ("uniform", (10,), "torch", {}, Uniform(0.0, 1.0)),
    ("uniform", (10,), "keras", {}, Uniform(-0.05, 0.05)),
    ("uniform", (10,), "jax", {}, Uniform(0.0, 0.01)),
    ("uniform", (10,), "haiku", {}, Uniform(0.0, 1.0)),
    ("uniform", (10,), "torch", {"low": -3, "high": 3}, Uniform(-3.0, 3.0)),
    ("normal", (10,), "torch", {}, Normal(0.0, 1.0)),
    ("normal", (10,), "keras", {}, Normal(0.0, 0.05)),
    ("normal", (10,), "jax", {}, Normal(0.0, 0.01)),
    ("normal", (10,), "haiku", {"mean": 1.5}, Normal(1.5, 1.0)),
    ("normal", (10,), "torch", {"mean": 0.0, "std": 0.02}, Normal(0.0, 0.02)),  # torch Embedding is N(0, 1); GPT-2 N(0, 0.02²)
    ("truncated_normal", (10,), "torch", {}, TruncatedNormal(0.0, 1.0, -2.0, 2.0)),
    ("trunc_normal_", (10,), "torch", {"std": 0.02}, TruncatedNormal(0.0, 0.02, -2.0, 2.0)),  # the trap: absolute ±2
    ("truncated_normal", (10,), "keras", {}, TruncatedNormal(0.0, 0.05, -0.1, 0.1)),
    ("truncated_normal", (10,), "jax", {}, TruncatedNormal(0.0, 0.01, -0.02, 0.02)),
    ("truncated_normal", (10,), "haiku", {"mean": 1.0, "lower": -1.0, "upper": 3.0}, TruncatedNormal(1.0, 1.0, 0.0, 4.0)),
    ("truncated_normal", (10,), "torch", {"std": 0.02, "bounds": "std"}, TruncatedNormal(0.0, 0.02, -0.04, 0.04)),
    ("constant", (3, 3), "torch", {"value": 0.5}, Constant(0.5)),
    ("zeros", (3,), "torch", {}, Constant(0.0)),
    ("ones", (), "jax", {}, Constant(1.0)),
    ("uniform_scaling", (6, 4), "haiku", {}, uni(math.sqrt(3 / 6))),
    ("uniform_scaling", (3, 3, 8, 4), "haiku", {"scale": 2.0}, uni(2 * math.sqrt(3 / 72))),
    ("uniform_scaling", (5,), "haiku", {}, uni(math.sqrt(3.0))),  # Haiku: prod(shape[:-1]) = 1
    ("uniform_scaling", (4, 6), "torch", {}, uni(math.sqrt(3 / 6))),
    # structured
    ("orthogonal", (64, 16, 3), "torch", {}, Orthogonal(1.0, 64, 48, None)),
    ("orthogonal", (3, 3, 16, 32), "keras", {"gain": 2.0}, Orthogonal(2.0, 144, 32, 3)),
    ("orthogonal", (3, 3, 16, 32), "jax", {"column_axis": 2}, Orthogonal(1.0, 288, 16, 2)),
    ("orthogonal", (8, 4), "torch", {"column_axis": -1}, Orthogonal(1.0, 8, 4, 1)),
    ("identity", (4, 6), "torch", {}, Identity(1.0)),
    ("eye", (2, 4, 4), "haiku", {"gain": 3.0}, Identity(3.0)),
    ("dirac", (8, 4, 3, 3), "torch", {"groups": 2}, Dirac(2, (1, 1), "out_in_kernel")),
    ("dirac", (4, 4, 4), "torch", {}, Dirac(1, (2,), "out_in_kernel")),  # even kernel: k // 2
    ("dirac", (4, 4, 8), "keras", {}, Dirac(1, (1,), "kernel_in_out")),  # even kernel: (k - 1) // 2
    ("delta_orthogonal", (3, 3, 4, 8), "jax", {}, DeltaOrthogonal(1.0, (1, 1), "kernel_in_out")),
    ("delta_orthogonal", (8, 4, 4, 4, 4), "torch", {"gain": 2.0}, DeltaOrthogonal(2.0, (2, 2, 2), "out_in_kernel")),
    ("sparse", (10, 6), "torch", {"sparsity": 0.25}, Sparse(0.01, 0.25, 3)),
    ("sparse", (10, 6), "torch", {"sparsity": 0.0, "std": 0.5}, Sparse(0.5, 0.0, 0)),
]


@pytest.mark.parametrize(("scheme", "shape", "convention", "params", "expected"), CASES)
def test_resolved_distribution(
    scheme: str, shape: tuple[int, ...], convention: str, params: dict[str, Any], expected: Distribution
) -> None:
    spec = resolve(scheme, shape, convention=convention, params=params)
    got = spec.distribution
    assert type(got) is type(expected)
    for key, want in vars(expected).items():
        value = getattr(got, key)
        if isinstance(want, float):
            assert value == pytest.approx(want, rel=1e-12, abs=1e-15), key
        else:
            assert value == want, key


def test_every_scheme_is_in_the_table() -> None:
    covered = {resolve(c[0], c[1], convention=c[2], params=c[3]).scheme for c in CASES}
    assert covered == set(SCHEMES)


def test_spec_records_fans_gain_and_derivation() -> None:
    spec = resolve("he_normal", (3, 3, 16, 32), convention="keras")
    assert (spec.fan_in, spec.fan_out) == (144, 288)
    derivation = dict(spec.derivation)
    assert derivation["mode"] == "fan_in"
    assert derivation["target_std"] == pytest.approx(math.sqrt(2 / 144))
    assert derivation["truncation_correction"] == pytest.approx(1 / T)
    assert spec.gain == pytest.approx(R2)


def test_canonical_json_is_stable_and_complete() -> None:
    spec = resolve("truncated_normal", [4, 2], seed=7, name="layers.0.w", convention="jax", dtype="bf16")
    text = spec.canonical_json()
    assert text == (
        '{"algorithm":2,"convention":"jax","derivation":{},"distribution":{"high":0.02,"kind":"truncated_normal",'
        '"low":-0.02,"mean":0.0,"std":0.01},"dtype":"bfloat16","fan_in":null,"fan_out":null,"gain":null,'
        '"name":"layers.0.w","scheme":"truncated_normal","seed":7,"shape":[4,2],"slice":null}'
    )


def test_names_are_nfc_normalized() -> None:
    decomposed = "cafe\u0301.weight"
    assert resolve("zeros", [1], name=decomposed).name == "caf\u00e9.weight"


ERRORS: list[tuple[str, Any, dict[str, Any], type[TensorinitError], str | None]] = [
    # scheme, shape, kwargs, error type, parameter named
    ("he_normall", [2, 2], {}, UnknownSchemeError, "scheme"),
    ("he_normal", [2, 2], {"algorithm": 1}, InvalidParameterError, "algorithm"),
    ("he_normal", [2, 2], {"algorithm": 3}, InvalidParameterError, "algorithm"),
    ("he_normal", [2, 2], {"algorithm": True}, InvalidParameterError, "algorithm"),
    ("orthogonal", [5], {}, InvalidShapeError, "shape"),
    ("orthogonal", [], {"convention": "keras"}, InvalidShapeError, "shape"),
    ("dirac", [4, 4], {}, InvalidShapeError, "shape"),
    ("dirac", [4, 4, 3, 3, 3, 3], {}, InvalidShapeError, "shape"),
    ("dirac", [6, 4, 3], {"params": {"groups": 4}}, InvalidParameterError, "groups"),
    ("dirac", [6, 4, 3], {"params": {"groups": 0}}, InvalidParameterError, "groups"),
    ("delta_orthogonal", [3, 3, 8, 4], {"convention": "jax"}, InvalidShapeError, "shape"),
    ("sparse", [4, 4], {"params": {"sparsity": 1.0}}, InvalidParameterError, "sparsity"),
    ("sparse", [4, 4], {"params": {"sparsity": -0.1}}, InvalidParameterError, "sparsity"),
    ("sparse", [4, 4], {}, MissingParameterError, "sparsity"),
    ("sparse", [4, 4, 4], {"params": {"sparsity": 0.1}}, InvalidShapeError, "shape"),
    ("uniform", [4], {"params": {"low": 1, "high": 1}}, InvalidParameterError, "low"),
    ("uniform", [4], {"params": {"low": 2, "high": 1}}, InvalidParameterError, "low"),
    ("truncated_normal", [4], {"params": {"lower": 50, "upper": 60, "bounds": "std"}}, InvalidParameterError, "lower"),
    ("truncated_normal", [4], {"params": {"lower": 1, "upper": -1}}, InvalidParameterError, "lower"),
    ("normal", [4], {"params": {"std": 0}}, InvalidParameterError, "std"),
    ("normal", [4], {"params": {"std": float("nan")}}, InvalidParameterError, "std"),
    ("normal", [4], {"params": {"mean": float("inf")}}, InvalidParameterError, "mean"),
    ("normal", [4], {"params": {"mean": "0"}}, InvalidParameterError, "mean"),
    ("normal", [4], {"params": {"mean": True}}, InvalidParameterError, "mean"),
    ("normal", [4], {"params": {"sparsity": 0.5}}, UnknownParameterError, "sparsity"),
    ("zeros", [4], {"params": {"gain": 1}}, UnknownParameterError, "gain"),
    ("zeros", [4], {"in_axes": [0], "out_axes": [0]}, UnknownParameterError, "in_axes"),
    ("constant", [4], {}, MissingParameterError, "value"),
    ("he_normal", [0, 4], {}, InvalidShapeError, "shape"),  # torch: fan_in 4 is fine but fan_out... mode fan_in=4: ok? see below
    ("he_normal", [4, 0], {}, InvalidShapeError, "shape"),
    ("he_normal", [0, 4], {"convention": "jax"}, InvalidShapeError, "shape"),
    ("he_normal", [4, 4], {"params": {"mode": "fan_sum"}}, InvalidParameterError, "mode"),
    ("he_normal", [4, 4], {"params": {"nonlinearity": "gelu"}}, InvalidParameterError, "nonlinearity"),
    ("he_normal", [4, 4], {"params": {"nonlinearity": "relu", "negative_slope": 0.1}}, InvalidParameterError, "negative_slope"),
    ("he_normal", [4, 4], {"params": {"gain": 1.0, "nonlinearity": "relu"}}, InvalidParameterError, "gain"),
    ("variance_scaling", [4, 4], {"params": {"scale": 0}}, InvalidParameterError, "scale"),
    ("variance_scaling", [4, 4], {"params": {"distribution": "cauchy"}}, InvalidParameterError, "distribution"),
    ("he_uniform", [4], {}, InvalidShapeError, "shape"),
    ("zeros", [-1], {}, InvalidShapeError, "shape[0]"),
    ("zeros", [2.0], {}, InvalidShapeError, "shape[0]"),
    ("zeros", [True], {}, InvalidShapeError, "shape[0]"),
    ("zeros", "4,4", {}, InvalidShapeError, "shape"),
    ("zeros", 4, {}, InvalidShapeError, "shape"),
    ("zeros", [1 << 40, 1 << 40], {}, LimitExceededError, "shape"),
    ("zeros", [1] * 9, {}, InvalidShapeError, "shape"),  # max_dims: stated by the document, so a 422
    ("orthogonal", [10**6, 10**6], {"limits": Limits(max_elements=1 << 62)}, LimitExceededError, "shape"),
    ("zeros", [4], {"seed": -1}, InvalidParameterError, "seed"),
    ("zeros", [4], {"seed": 1 << 64}, InvalidParameterError, "seed"),
    ("zeros", [4], {"seed": 1.0}, InvalidParameterError, "seed"),
    ("zeros", [4], {"dtype": "int8"}, InvalidParameterError, "dtype"),
    ("zeros", [4], {"convention": "mxnet"}, InvalidParameterError, "convention"),
    ("zeros", [4], {"name": ""}, InvalidParameterError, "name"),
    ("zeros", [4], {"name": "a\nb"}, InvalidParameterError, "name"),
    ("zeros", [4], {"name": "__metadata__"}, InvalidParameterError, "name"),
    ("zeros", [4], {"name": "x" * 10_000}, InvalidParameterError, "name"),
    ("uniform_scaling", [0, 4], {"convention": "haiku"}, InvalidShapeError, "shape"),
    # Fans past the float range (found by schemathesis): too large, not a crash.
    ("he_normal", [10**200, 10**200], {}, LimitExceededError, "shape"),
    ("glorot_uniform", [3, 10**400], {"convention": "keras"}, LimitExceededError, "shape"),
    ("variance_scaling", [10**310, 2], {"params": {"mode": "fan_geo_avg"}}, LimitExceededError, "shape"),
    # An empty tensor passes the size limits, but no array library holds these dimensions.
    ("zeros", [0, 1 << 62, 1 << 62], {}, InvalidShapeError, "shape"),
    ("orthogonal", [0, 10**200, 10**200], {}, InvalidShapeError, "shape"),
    ("zeros", [0, 1 << 62], {}, InvalidShapeError, "shape"),  # numpy counts the item size too
    ("delta_orthogonal", [1 << 60, 0, 1], {}, InvalidShapeError, "shape"),  # its float64 matrix, (0, 2^60)
]


@pytest.mark.parametrize(("scheme", "shape", "kwargs", "error", "param"), ERRORS)
def test_errors_name_parameter_value_and_allowed(
    scheme: str, shape: Any, kwargs: dict[str, Any], error: type[TensorinitError], param: str
) -> None:
    if (scheme, shape, kwargs) == ("he_normal", [0, 4], {}):
        # torch (0, 4): fan_in = 4 is usable; only fan_out is zero. It resolves.
        resolve(scheme, shape, **kwargs)
        with pytest.raises(InvalidShapeError):
            resolve(scheme, shape, params={"mode": "fan_out"})
        return
    with pytest.raises(error) as info:
        resolve(scheme, shape, **kwargs)
    err = info.value
    assert err.param == param
    assert err.allowed
    assert param.split("[", maxsplit=1)[0] in str(err)
    assert len(str(err)) < 600  # a hostile value is never echoed in full


def test_unknown_scheme_suggests_close_names() -> None:
    with pytest.raises(UnknownSchemeError) as info:
        resolve("kaiming_normall", [2, 2])
    assert "he_normal" in info.value.suggestions


def test_unknown_parameter_says_which_scheme_takes_it() -> None:
    with pytest.raises(UnknownParameterError, match="belongs to sparse"):
        resolve("he_normal", [2, 2], params={"sparsity": 0.1})


EXTREMES: list[tuple[str, dict[str, Any], str, str]] = [
    # scheme, request, parameter named, dtype
    ("lecun_normal", {"params": {"gain": 0.0}}, "gain", "float32"),
    ("lecun_normal", {"params": {"gain": -1.0}}, "gain", "float32"),
    ("he_normal", {"params": {"negative_slope": 1e200}}, "gain", "float32"),  # gain ~1e-200 underflows
    ("normal", {"params": {"mean": 3.4e38}}, "std", "float16"),
    ("normal", {"params": {"std": 1e38}}, "std", "float32"),
    ("normal", {"params": {"std": 1e-300}}, "std", "float64"),
    ("uniform", {"params": {"low": 0.0, "high": 1e-45}}, "high", "float32"),
    ("constant", {"params": {"value": 1e5}}, "value", "float16"),
    ("constant", {"params": {"value": 1e200}}, "value", "float64"),
    ("truncated_normal", {"params": {"lower": -1e300, "upper": 1e300}}, "std", "float64"),
    ("orthogonal", {"params": {"gain": 1e39}}, "gain", "float32"),
    ("sparse", {"params": {"sparsity": 0.001, "std": 14246.0}}, "std", "float16"),  # found by schemathesis: inf in float16
    ("sparse", {"params": {"sparsity": 0.5, "std": 1e-320}}, "std", "float32"),
]


@pytest.mark.parametrize(("scheme", "kwargs", "param", "dtype"), EXTREMES)
def test_unrepresentable_distributions_are_refused(scheme: str, kwargs: dict[str, Any], param: str, dtype: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        resolve(scheme, (8, 8), dtype=dtype, **kwargs)
    assert info.value.param == param


def test_wrong_is_reported_before_too_large() -> None:
    small = Limits(max_elements=10, max_orthogonal_elements=10)
    with pytest.raises(InvalidParameterError, match="sparsity"):
        resolve("sparse", (100, 100), params={"sparsity": 2.0}, limits=small)
    with pytest.raises(LimitExceededError):
        resolve("sparse", (100, 100), params={"sparsity": 0.5}, limits=small)
    with pytest.raises(LimitExceededError, match="max_orthogonal_elements"):
        resolve("orthogonal", (4, 4), limits=Limits(max_elements=100, max_orthogonal_elements=10))


def test_huge_negative_slope_does_not_overflow() -> None:
    spec = resolve("he_uniform", (4, 4), params={"negative_slope": 1e100}, dtype="float64")
    assert spec.gain == pytest.approx(2**0.5 * 1e-100)
    # slope² would overflow: the gain (~1.4e-200) is computed, then refused as too small.
    with pytest.raises(InvalidParameterError, match="spread"):
        resolve("he_uniform", (4, 4), params={"negative_slope": 1e200}, dtype="float64")
