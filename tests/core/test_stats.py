"""Streaming statistics agree with numpy and scipy computed on the whole array."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pytest
import scipy.stats

from service.core import generate, resolve
from service.core import stats as stats_module
from service.core.stats import compute_stats, ks_test, theory

CASES: list[tuple[str, tuple[int, ...], str, dict[str, Any], str]] = [
    ("he_normal", (700, 500), "torch", {}, "float32"),
    ("he_uniform", (700, 500), "keras", {}, "float64"),
    ("he_normal", (700, 500), "keras", {}, "bfloat16"),
    ("glorot_uniform", (700, 500), "jax", {}, "float16"),
    ("truncated_normal", (300_001,), "haiku", {"lower": 1.0, "upper": 1.5}, "float32"),
    ("orthogonal", (300, 200), "torch", {"gain": 1.5}, "float32"),
    ("identity", (2, 30, 40), "haiku", {"gain": 2.0}, "float32"),
    ("dirac", (16, 8, 3, 3), "torch", {"groups": 2}, "float32"),
    ("delta_orthogonal", (3, 3, 8, 16), "jax", {}, "float64"),
    ("sparse", (100, 50), "torch", {"sparsity": 0.2}, "float32"),
    ("constant", (10, 10), "torch", {"value": 0.3}, "float32"),
    ("constant", (), "jax", {"value": 140737488355328.0}, "float32"),  # found by schemathesis: edges coincide
    ("zeros", (0, 4), "torch", {}, "float32"),
]


@pytest.mark.parametrize(("scheme", "shape", "convention", "params", "dtype"), CASES)
def test_stats_match_whole_array(scheme: str, shape: tuple[int, ...], convention: str, params: dict[str, Any], dtype: str) -> None:
    spec = resolve(scheme, shape, convention=convention, params=params, dtype=dtype, seed=8)
    arr = generate(spec)
    got = compute_stats(spec, bins=32)
    x = arr.astype(np.float64).reshape(-1)
    assert got["count"] == x.size
    assert got["sha256"] == hashlib.sha256(arr.tobytes()).hexdigest()
    if x.size == 0:
        assert got["mean"] is None
        return
    assert got["mean"] == pytest.approx(x.mean(), rel=1e-9, abs=1e-12)
    assert got["std"] == pytest.approx(x.std(), rel=1e-9, abs=1e-12)
    assert (got["min"], got["max"]) == (x.min(), x.max())
    hist = got["histogram"]
    edges = np.array(hist["edges"])
    assert len(hist["counts"]) == 32
    assert hist["counts"] == np.histogram(x, bins=edges)[0].tolist()
    assert sum(hist["counts"]) + hist["below"] + hist["above"] == x.size
    th = got["theory"]
    assert th["std"] == pytest.approx(x.std(), rel=0.05, abs=1e-9)


def test_ks_matches_scipy_on_float32() -> None:
    spec = resolve("he_normal", (1000, 1000), seed=2)
    got = compute_stats(spec)["ks"]
    x = generate(spec).reshape(-1).astype(np.float64)
    ref = scipy.stats.kstest(x, scipy.stats.norm(0, spec.distribution.std).cdf)  # type: ignore[union-attr]
    assert got["statistic"] == pytest.approx(ref.statistic, abs=1e-6)
    assert got["pvalue"] > 1e-4
    assert got["sample_size"] == x.size


def test_ks_of_16_bit_output_is_about_the_distribution() -> None:
    # Rounding to bfloat16 makes values discrete; the cell-aware KS still accepts the law...
    spec = resolve("he_uniform", (1000, 1000), dtype="bfloat16", seed=2)
    assert compute_stats(spec)["ks"]["pvalue"] > 1e-4
    # ...and keeps its power: the same bytes against a law 2% wider are rejected.
    wider = resolve("he_uniform", (1000, 1000), dtype="bfloat16", seed=2, params={"gain": 1.02 * 2**0.5})
    _, pvalue = ks_test(wider, generate(spec).reshape(-1))
    assert pvalue < 1e-6


def test_ks_subsample_is_bounded_and_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_module, "KS_SAMPLE_LIMIT", 1000)
    spec = resolve("normal", (10_007,), seed=1)
    got = compute_stats(spec)["ks"]
    assert got["stride"] == math.ceil(10_007 / 1000)
    x = generate(spec).astype(np.float64)[:: got["stride"]]
    assert got["sample_size"] == x.size
    assert got["statistic"] == pytest.approx(scipy.stats.kstest(x, scipy.stats.norm(0, 1).cdf).statistic, abs=1e-6)


def test_orthogonality_error() -> None:
    got = compute_stats(resolve("orthogonal", (64, 256), params={"gain": 2.0}))
    assert got["orthogonality_error"] < 1e-5
    got16 = compute_stats(resolve("orthogonal", (64, 256), dtype="bfloat16"))
    assert 1e-4 < got16["orthogonality_error"] < 0.1  # rounding to bf16 shows, honestly


@pytest.mark.parametrize(("low", "high"), [(-2.0, 2.0), (-0.3, 0.1), (1.0, 1.5), (2.5, 9.0), (-9.0, -3.0)])
def test_truncated_normal_theory_is_exact(low: float, high: float) -> None:
    spec = resolve("truncated_normal", (4,), convention="jax", params={"mean": 0.5, "std": 2.0, "lower": low, "upper": high})
    th = theory(spec)
    ref = scipy.stats.truncnorm(low, high, loc=0.5, scale=2.0)
    assert th.mean == pytest.approx(ref.mean(), rel=1e-9)
    assert th.std == pytest.approx(ref.std(), rel=1e-7)


# -- the parallel pass: the same result to the last bit, and it stops when told -----------

PARALLEL_CASES = [
    *CASES,
    ("he_normal", (3, 1000, 300), "torch", {}, "float32"),  # several blocks, a ragged last one
    ("truncated_normal", (2**19 + 3,), "jax", {}, "bfloat16"),
    ("identity", (5, 400, 300), "torch", {}, "float16"),  # index-built, several blocks
    ("orthogonal", (1000, 600), "torch", {}, "float32"),  # matrix-built: summarized in place
    ("delta_orthogonal", (3, 3, 512, 512), "jax", {}, "float32"),  # its matrix drawn first, then blocks in parallel
]


@pytest.mark.parametrize(("scheme", "shape", "convention", "params", "dtype"), PARALLEL_CASES)
def test_parallel_stats_equal_sequential_stats(
    scheme: str, shape: tuple[int, ...], convention: str, params: dict[str, Any], dtype: str
) -> None:
    from service.core import inner_executor

    spec = resolve(scheme, shape, convention=convention, params=params, dtype=dtype, seed=3)
    sequential = compute_stats(spec, bins=48)
    parallel = compute_stats(spec, bins=48, executor=inner_executor())
    assert parallel == sequential  # floats included: the merge runs in block order


def test_a_halted_pass_stops_before_its_next_block(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from service.core import inner_executor
    from service.core.stats import StatsCancelledError

    spec = resolve("he_normal", (64, 2**18), seed=1)  # 64 blocks
    halt = threading.Event()
    seen = 0
    original = stats_module._block_stats

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == 3:
            halt.set()
        return original(*args, **kwargs)

    monkeypatch.setattr(stats_module, "_block_stats", counting)
    with pytest.raises(StatsCancelledError):
        compute_stats(spec, executor=inner_executor(), halt=halt)
    with pytest.raises(StatsCancelledError):
        compute_stats(spec, halt=halt)  # sequential too
    assert seen < 3 + 4 + 1  # at most the blocks already in flight (ahead = 4) ran after the halt


# -- memory: a pass holds a bounded number of blocks, whatever the tensor's size ----------


def _peak_bytes(n: int) -> tuple[int, dict[str, Any]]:
    import tracemalloc

    from service.core import inner_executor

    spec = resolve("uniform", (n,), seed=1)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc, from every thread
    try:
        got = compute_stats(spec, executor=inner_executor())
        return tracemalloc.get_traced_memory()[1], got
    finally:
        tracemalloc.stop()


def test_a_pass_runs_in_flat_memory() -> None:
    # Issue 17: the KS sample was a view of each block and kept every block alive (2^29
    # elements: +2 GiB). 2^27 float32 are 512 MiB; the pass must peak as a 2^22 one does
    # (the KS sample of 2^20 and its test's temporaries, a few blocks in flight).
    small, _ = _peak_bytes(1 << 22)
    large, got = _peak_bytes(1 << 27)
    assert got["ks"]["sample_size"] == stats_module.KS_SAMPLE_LIMIT
    assert got["ks"]["stride"] == 128
    assert large < small + (16 << 20), (small, large)
