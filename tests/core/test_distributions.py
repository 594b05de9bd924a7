"""The numbers: KS against the exact CDF, realised moments, and torch side by side.

Fixed seeds; KS p-value above 1e-4 and realised std within 1% on ≥ 10^6 elements.
The KS test here is scipy's ``kstest`` against scipy's own distributions, independent of
the engine's statistics code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.stats

from service.core import generate, resolve
from service.core.spec import Normal, TruncatedNormal, Uniform

N = 1 << 20  # 1,048,576 elements

ELEMENTWISE: list[tuple[str, str, dict[str, Any]]] = [
    (scheme, convention, {})
    for scheme in (
        "he_normal",
        "he_uniform",
        "glorot_normal",
        "glorot_uniform",
        "lecun_normal",
        "lecun_uniform",
        "variance_scaling",
        "uniform_scaling",
    )
    for convention in ("torch", "keras", "jax", "haiku")
] + [
    ("uniform", "torch", {}),
    ("uniform", "keras", {}),
    ("uniform", "jax", {}),
    ("normal", "torch", {"mean": 1.0, "std": 0.5}),
    ("normal", "keras", {}),
    ("truncated_normal", "torch", {}),
    ("truncated_normal", "torch", {"std": 0.02}),
    ("truncated_normal", "keras", {}),
    ("truncated_normal", "haiku", {"lower": -0.5, "upper": 0.25}),  # narrow around 0
    ("truncated_normal", "jax", {"lower": 2.5, "upper": 9.0}),  # one tail, exponential proposal
    ("truncated_normal", "jax", {"lower": -3.2, "upper": -3.0}),  # narrow in a tail, uniform proposal
    ("variance_scaling", "jax", {"mode": "fan_geo_avg", "distribution": "uniform", "scale": 3.0}),
]


def frozen(dist: Any) -> Any:
    if isinstance(dist, Uniform):
        return scipy.stats.uniform(dist.low, dist.high - dist.low)
    if isinstance(dist, Normal):
        return scipy.stats.norm(dist.mean, dist.std)
    assert isinstance(dist, TruncatedNormal)
    a, b = (dist.low - dist.mean) / dist.std, (dist.high - dist.mean) / dist.std
    return scipy.stats.truncnorm(a, b, loc=dist.mean, scale=dist.std)


@pytest.mark.parametrize(("scheme", "convention", "params"), ELEMENTWISE)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ks_and_moments(scheme: str, convention: str, params: dict[str, Any], dtype: str) -> None:
    spec = resolve(scheme, (1024, 1024), convention=convention, params=params, dtype=dtype, seed=20261128)
    x = generate(spec).reshape(-1).astype(np.float64)
    assert x.size >= N
    ref = frozen(spec.distribution)
    result = scipy.stats.kstest(x, ref.cdf)
    assert result.pvalue > 1e-4, (result, spec.distribution)
    assert x.std() == pytest.approx(ref.std(), rel=0.01)
    assert abs(x.mean() - ref.mean()) < 5 * ref.std() / np.sqrt(x.size)
    # Bounds hold up to the rounding of the bound itself to the output dtype.
    slack = np.finfo(spec.np_dtype).eps
    low, high = ref.support()
    assert x.min() >= low - slack * abs(low)
    assert x.max() <= high + slack * abs(high)


@pytest.mark.parametrize("convention", ["keras", "jax", "haiku"])
@pytest.mark.parametrize("scheme", ["he_normal", "glorot_normal", "lecun_normal"])
def test_truncated_presets_realise_the_target_std(scheme: str, convention: str) -> None:
    spec = resolve(scheme, (1024, 1024), convention=convention, seed=3)
    x = generate(spec).astype(np.float64)
    target = dict(spec.derivation)["target_std"]
    assert x.std() == pytest.approx(target, rel=0.01)
    assert np.abs(x).max() <= 2 * target / 0.87962566103423978 * (1 + 1e-6)


# -- torch, side by side: same distribution (two-sample KS), or the very same bytes ---

torch = pytest.importorskip("torch")

TORCH_CASES: list[tuple[str, tuple[int, ...], dict[str, Any], Any]] = [
    ("he_normal", (1024, 1024), {}, lambda t: torch.nn.init.kaiming_normal_(t)),
    (
        "he_uniform",
        (1024, 1024),
        {"mode": "fan_out", "nonlinearity": "relu"},
        lambda t: torch.nn.init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu"),
    ),
    ("he_uniform", (512, 2048), {"negative_slope": 5**0.5}, lambda t: torch.nn.init.kaiming_uniform_(t, a=5**0.5)),  # nn.Linear default
    ("glorot_uniform", (512, 2048), {"gain": 5 / 3}, lambda t: torch.nn.init.xavier_uniform_(t, gain=5 / 3)),
    ("glorot_normal", (512, 2048), {}, lambda t: torch.nn.init.xavier_normal_(t)),
    (
        "truncated_normal",
        (1024, 1024),
        {"std": 0.8, "lower": -1.0, "upper": 1.5},
        lambda t: torch.nn.init.trunc_normal_(t, std=0.8, a=-1.0, b=1.5),
    ),
    ("uniform", (1024, 1024), {"low": -2.0, "high": 3.0}, lambda t: torch.nn.init.uniform_(t, -2.0, 3.0)),
    ("normal", (1024, 1024), {"mean": 0.5, "std": 2.0}, lambda t: torch.nn.init.normal_(t, 0.5, 2.0)),
]


@pytest.mark.parametrize(("scheme", "shape", "params", "init"), TORCH_CASES)
def test_same_distribution_as_torch(scheme: str, shape: tuple[int, ...], params: dict[str, Any], init: Any) -> None:
    torch.manual_seed(0)
    theirs = init(torch.empty(shape)).numpy().reshape(-1)
    ours = generate(resolve(scheme, shape, params=params, seed=1)).reshape(-1)
    result = scipy.stats.ks_2samp(ours[: 1 << 19], theirs[: 1 << 19])
    assert result.pvalue > 1e-4, result
    assert ours.std() == pytest.approx(theirs.std(), rel=0.01)
    assert ours.min() >= theirs.min() - 0.02 * abs(theirs.min()) - 1e-12 or scheme in ("he_normal", "glorot_normal", "normal")


DETERMINISTIC: list[tuple[str, tuple[int, ...], dict[str, Any], Any]] = [
    ("dirac", (8, 4, 3, 3), {}, lambda t: torch.nn.init.dirac_(t)),
    ("dirac", (8, 4, 5), {"groups": 2}, lambda t: torch.nn.init.dirac_(t, groups=2)),
    ("dirac", (6, 6, 3, 4, 2), {"groups": 3}, lambda t: torch.nn.init.dirac_(t, groups=3)),
    ("dirac", (4, 8, 4, 4), {}, lambda t: torch.nn.init.dirac_(t)),
    ("identity", (5, 7), {}, lambda t: torch.nn.init.eye_(t)),
    ("identity", (7, 5), {}, lambda t: torch.nn.init.eye_(t)),
    ("constant", (3, 4), {"value": -0.25}, lambda t: torch.nn.init.constant_(t, -0.25)),
    ("zeros", (3, 4), {}, lambda t: torch.nn.init.zeros_(t)),
    ("ones", (3, 4), {}, lambda t: torch.nn.init.ones_(t)),
]


@pytest.mark.parametrize(("scheme", "shape", "params", "init"), DETERMINISTIC)
def test_same_bytes_as_torch(scheme: str, shape: tuple[int, ...], params: dict[str, Any], init: Any) -> None:
    theirs = init(torch.empty(shape)).numpy()
    ours = generate(resolve(scheme, shape, params=params))
    assert ours.tobytes() == theirs.tobytes()


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32), (16, 4, 3, 3)])
def test_orthogonal_like_torch(shape: tuple[int, ...]) -> None:
    ours = generate(resolve("orthogonal", shape, params={"gain": 2.0})).astype(np.float64)
    theirs = torch.nn.init.orthogonal_(torch.empty(shape), gain=2.0).double().numpy()
    for w in (ours, theirs):
        m = w.reshape(shape[0], -1)
        gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
        assert np.abs(gram - 4 * np.eye(gram.shape[0])).max() < 1e-4
    assert np.square(ours).sum() == pytest.approx(np.square(theirs).sum(), rel=1e-5)


def test_sparse_like_torch() -> None:
    ours = generate(resolve("sparse", (50, 40), params={"sparsity": 0.3, "std": 0.5}))
    theirs = torch.nn.init.sparse_(torch.empty(50, 40), sparsity=0.3, std=0.5).numpy()
    assert ((ours == 0).sum(axis=0) == (theirs == 0).sum(axis=0)).all()
    assert ((ours == 0).sum(axis=0) == 15).all()


@pytest.mark.parametrize(("shape", "column_axis"), [((6, 4, 10), -1), ((6, 4, 10), 0), ((3, 3, 8, 16), 2), ((12, 5), None)])
def test_orthogonal_column_axis_layout(shape: tuple[int, ...], column_axis: int | None) -> None:
    spec = resolve("orthogonal", shape, convention="jax", params={"column_axis": column_axis})
    w = generate(spec).astype(np.float64)
    m = w.reshape(shape[0], -1) if column_axis is None else np.moveaxis(w, column_axis, -1).reshape(-1, shape[column_axis])
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    assert np.abs(gram - np.eye(gram.shape[0])).max() < 1e-5


def test_delta_orthogonal_layouts() -> None:
    jax_like = generate(resolve("delta_orthogonal", (3, 3, 4, 8), convention="jax", params={"gain": 1.5})).astype(np.float64)
    centre = jax_like[1, 1]
    assert np.abs(centre @ centre.T - 2.25 * np.eye(4)).max() < 1e-5
    assert np.count_nonzero(jax_like) == np.count_nonzero(centre)
    torch_like = generate(resolve("delta_orthogonal", (8, 4, 3, 3), convention="torch")).astype(np.float64)
    m = torch_like[:, :, 1, 1]
    assert np.abs(m.T @ m - np.eye(4)).max() < 1e-5
    assert np.count_nonzero(torch_like) == np.count_nonzero(m)


def test_batched_identity() -> None:
    w = generate(resolve("identity", (3, 2, 4), convention="haiku", params={"gain": 2.0}))
    assert (w == 2.0 * np.eye(2, 4, dtype=np.float32)[None]).all()


@pytest.mark.parametrize("shape", [(128, 128), (192, 64), (64, 192)])
def test_orthogonal_has_torchs_distribution(shape: tuple[int, ...]) -> None:
    # Same law as QR-of-a-Gaussian with sign(diag R) folded in: compare a column and the
    # diagonal (whose law depends on that sign convention) over 24 draws each.
    rows = shape[0]
    ours: list[np.ndarray[Any, Any]] = []
    theirs: list[np.ndarray[Any, Any]] = []
    for seed in range(24):
        w = generate(resolve("orthogonal", shape, seed=seed)).astype(np.float64)
        torch.manual_seed(seed)
        t = torch.nn.init.orthogonal_(torch.empty(shape)).double().numpy()
        for m, out in ((w, ours), (t, theirs)):
            out.append(np.concatenate([m[:, 0], np.diagonal(m)]))
    a, b = np.concatenate(ours), np.concatenate(theirs)
    assert scipy.stats.ks_2samp(a, b).pvalue > 1e-4
    diag_ours = np.concatenate([x[rows:] for x in ours])
    diag_theirs = np.concatenate([x[rows:] for x in theirs])
    assert scipy.stats.ks_2samp(diag_ours, diag_theirs).pvalue > 1e-4
    assert diag_ours.mean() == pytest.approx(diag_theirs.mean(), abs=4 * diag_theirs.std() / np.sqrt(diag_theirs.size))
