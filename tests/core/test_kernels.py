"""Algorithm 2's kernels: the generator's known answers, the elementary functions' accuracy, and the tails.

The statistical rows draw ≥ 10^8 numbers in chunks (memory stays small): the tail
probabilities P(|z| > 4) and P(|z| > 5) must sit within five binomial standard errors,
and adjacent elements must look independent (a 2-D χ² over a grid of quantiles).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import pytest
import scipy.special
import scipy.stats

from service.core import Tensor, resolve
from service.core.algorithms.v2 import kernels, philox_key, stream_key, tails

Array = np.ndarray[Any, Any]

# Random123's kat_vectors: counter (4 words), key (2 words) → output (4 words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0), (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT, ids=["zeros", "ones", "pi"])
def test_philox4x32_10_known_answers(counter: tuple[int, ...], key: tuple[int, int], expected: tuple[int, ...]) -> None:
    first = np.uint64(counter[0] | counter[1] << 32)
    words = kernels.philox_block(first, 1, key[0], key[1], counter[2], counter[3])
    assert tuple(int(w) for w in words) == expected


def test_the_key_is_the_digest_words_and_names_are_utf8() -> None:
    key = stream_key(7, "layers.3.mlp.fc1.weight")
    assert philox_key(key) == tuple((key >> (32 * i)) & 0xFFFFFFFF for i in range(4))
    assert stream_key(7, "a") != stream_key(7, "a", "mask") != stream_key(8, "a")
    assert stream_key(0, "名前") != stream_key(0, "名前 ")


def _py_logs(x: Array) -> Array:
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = kernels.log_pos(x[i])
    return out


def _py_logs_f32(x: Array) -> Array:
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = kernels.log_pos_f32(x[i])
    return out


def _py_ndtri(x: Array) -> Array:
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = kernels.ndtri_lower(x[i])
    return out


def _py_turns(octants: Array, fractions: Array, bits: int) -> tuple[Array, Array]:
    c = np.empty(octants.size)
    s = np.empty(octants.size)
    for i in range(octants.size):
        c[i], s[i] = kernels.cos_sin_turn(octants[i], fractions[i], bits)
    return c, s


def _py_turns_f32(words: Array) -> tuple[Array, Array]:
    c = np.empty(words.size, np.float32)
    s = np.empty(words.size, np.float32)
    for i in range(words.size):
        c[i], s[i] = kernels.cos_sin_turn_f32(words[i])
    return c, s


# The kernels' inline helpers, compiled into loops here (numba's dispatchers are untyped for mypy).
_logs: Any = numba.njit(_py_logs)
_ndtri: Any = numba.njit(_py_ndtri)
_logs_f32: Any = numba.njit(_py_logs_f32)
_turns_f32: Any = numba.njit(_py_turns_f32)
_turns: Any = numba.njit(_py_turns)


def test_log_is_within_one_ulp_of_the_correctly_rounded_log() -> None:
    x = np.concatenate([np.random.default_rng(0).random(200_000), 2.0 ** -np.arange(1.0, 1022.0), [1.0, 0.5, np.nextafter(1.0, 0)]])
    exact = np.array([math.log(v) for v in x])  # glibc's log is correctly rounded to < 1 ulp: a fine yardstick
    ulps = np.abs(_logs(x) - exact) / np.spacing(np.abs(exact) + (exact == 0))
    assert ulps.max() <= 1.0


def test_float32_log_is_within_one_float32_ulp() -> None:
    x = np.concatenate([np.random.default_rng(3).random(200_000), 2.0 ** -np.arange(1.0, 126.0)]).astype(np.float32)
    x = x[x > 0]
    exact = np.log(x.astype(np.float64))
    got = _logs_f32(x).astype(np.float64)
    ulps = np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32) + np.float32(exact == 0)).astype(np.float64)
    assert ulps.max() <= 1.5


def test_ndtri_matches_scipy_across_both_tails() -> None:
    p = np.concatenate([np.random.default_rng(1).random(100_000), 10.0 ** -np.arange(1.0, 300.0, 0.25), 1 - 10.0 ** -np.arange(1.0, 16.0)])
    got, want = _ndtri(p), scipy.special.ndtri(p)
    assert np.max(np.abs(got - want) / np.abs(want)) < 1e-14


@pytest.mark.parametrize("bits", [29, 49])
def test_cos_sin_turn_covers_the_circle_accurately(bits: int) -> None:
    rng = np.random.default_rng(bits)
    octants = rng.integers(0, 8, 100_000)
    fractions = rng.integers(0, 2**bits, 100_000)
    c, s = _turns(octants, fractions, bits)
    phi = 2 * np.pi * (octants + (fractions + 0.5) / 2.0**bits) / 8
    assert np.max(np.abs(c - np.cos(phi))) < 4e-16 * 4 and np.max(np.abs(s - np.sin(phi))) < 4e-16 * 4


def test_float32_cos_sin_turn_covers_the_circle() -> None:
    words = np.random.default_rng(4).integers(0, 2**32, 200_000, dtype=np.uint32)
    c, s = _turns_f32(words)
    phi = 2 * np.pi * ((words >> 29) + (((words >> 9) & 0xFFFFF) + 0.5) / 2.0**20) / 8
    assert np.max(np.abs(c - np.cos(phi))) < 3e-7 and np.max(np.abs(s - np.sin(phi))) < 3e-7


@pytest.mark.parametrize("x", [-8.0, -1.0, 0.0, 0.3, 1.0, 2.4999, 2.5, 3.0, 6.0, 10.0, 20.0, 37.0])
def test_upper_tail_matches_scipy(x: float) -> None:
    assert tails.upper_tail(x) == pytest.approx(scipy.special.ndtr(-x), rel=1e-12)


def _draw(dtype: str, total: int, chunk: int = 1 << 23) -> Array:
    """|z| counts for ``total`` standard normals of ``dtype``, streamed through Tensor reads."""
    tensor = Tensor(resolve("normal", [total], dtype=dtype, convention="torch", seed=2026, name="tails"))
    counts = np.zeros(3, np.int64)
    for lo in range(0, total, chunk):
        z = np.abs(tensor.read(lo, min(lo + chunk, total)).astype(np.float64))
        counts += [np.count_nonzero(z > 4.0), np.count_nonzero(z > 5.0), np.count_nonzero(z > 6.0)]
    return counts


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "total"), [("float32", 10**8), ("float64", 10**8)])
def test_normal_tail_probabilities_match_on_1e8_draws(dtype: str, total: int) -> None:
    counts = _draw(dtype, total)
    for count, threshold in zip(counts, (4.0, 5.0, 6.0), strict=True):
        p = 2 * scipy.special.ndtr(-threshold)
        sd = math.sqrt(total * p * (1 - p))
        assert abs(count - total * p) < 5 * sd + 1, (threshold, count, total * p)


@pytest.mark.parametrize(
    ("dtype", "reach"), [("float32", math.sqrt(-2 * math.log(2.0**-33))), ("float64", math.sqrt(-2 * math.log(2.0**-53)))]
)
def test_the_largest_reachable_z_is_as_documented(dtype: str, reach: float) -> None:
    """The smallest uniform gives the largest radius: 6.77σ (32-bit words) and 8.57σ (52-bit)."""
    assert reach > (5.7 if dtype == "float32" else 8.0)
    smallest = 2.0**-33 if dtype == "float32" else 2.0**-53
    assert math.sqrt(-2 * _logs(np.array([smallest]))[0]) == pytest.approx(reach, rel=1e-15)


@pytest.mark.parametrize("offset", [0, 1], ids=["within-pairs", "across-pairs"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adjacent_elements_are_independent(offset: int, dtype: str) -> None:
    """χ² of 16×16 quantile cells of (z[2i+offset], z[2i+offset+1]): Box–Muller pairs and their neighbours."""
    z = Tensor(resolve("normal", [1 << 21], dtype=dtype, seed=5, name="pairs")).read().astype(np.float64)
    u = scipy.special.ndtr(z[offset : offset + (z.size - 2) // 2 * 2])
    cells = (np.minimum((u * 16).astype(np.int64), 15)).reshape(-1, 2)
    table = np.bincount(cells[:, 0] * 16 + cells[:, 1], minlength=256)
    assert scipy.stats.chisquare(table).pvalue > 1e-4
    assert abs(np.corrcoef(z[offset::2][: z.size // 2 - 1], z[offset + 1 :: 2][: z.size // 2 - 1])[0, 1]) < 4 / math.sqrt(z.size / 2)


@pytest.mark.parametrize(
    ("lower", "upper", "dtype"),
    [
        (10.0, 12.0, "float64"),
        (10.0, 12.0, "float32"),
        (-12.0, -10.0, "float64"),
        (6.0, 30.0, "float64"),
        (-3.2, -3.0, "float32"),
        (-2.0, 2.0, "float64"),
    ],
)
def test_truncated_normal_far_in_a_tail_has_the_exact_law(lower: float, upper: float, dtype: str) -> None:
    spec = resolve(
        "truncated_normal", [1 << 18], dtype=dtype, convention="jax", seed=3, params={"std": 1.0, "lower": lower, "upper": upper}
    )
    x = Tensor(spec).read().astype(np.float64)
    assert x.min() >= lower and x.max() <= upper
    law = scipy.stats.truncnorm(lower, upper)
    assert scipy.stats.kstest(x, law.cdf).pvalue > 1e-4


def test_tiny_std_stays_subnormal_not_zero() -> None:
    """No flush-to-zero in the kernels: a std of 1e-310 gives subnormal, non-zero float64s.

    (Resolution refuses such a std for a served tensor; the kernel itself must still not flush.)
    """
    x = np.empty(4096, np.float64)
    kernels.normal_f64(x, 0, *philox_key(stream_key(0, "tiny")), 0.0, 1e-310)
    assert np.count_nonzero(x) == x.size and np.all(np.abs(x) < 1e-306)
    assert np.finfo(np.float64).smallest_subnormal > 0


def _py_trunc_values(words: Array, p0: float, dp: float, flip: float, mean: float, std: float, low: float, high: float) -> Array:
    out = np.empty(words.size, np.float32)
    for i in range(words.size):
        out[i] = np.float32(kernels._trunc_value(kernels.open32(words[i]), p0, dp, flip, mean, std, low, high))
    return out


def _py_trunc_values_f64(words: Array, p0: float, dp: float, flip: float, mean: float, std: float, low: float, high: float) -> Array:
    out = np.empty(words.size // 2, np.float64)
    for i in range(out.size):
        out[i] = kernels._trunc_value(kernels.open52(words[2 * i], words[2 * i + 1]), p0, dp, flip, mean, std, low, high)
    return out


_trunc_values: Any = numba.njit(_py_trunc_values)
_trunc_values_f64: Any = numba.njit(_py_trunc_values_f64)

# (mean, std, low, high): central only, central and near tails (±2σ), both tails and the
# far one (r > 5 reachable), an upper tail (flip), lower tails beyond 6σ and 20σ (where
# only AS 241's far branch gives the right float32).
TRUNC_CASES = {
    "central only": (0.0, 1.0, -1.2, 1.2),
    "keras ±2σ": (0.0, 0.05, -0.1, 0.1),
    "±8.5σ, far tails reachable": (0.0, 1.0, -8.5, 8.5),
    "upper tail from 5.5σ": (1.0, 2.0, 12.0, 1e9),
    "lower tail below -6σ": (0.0, 1.0, -40.0, -6.0),
    "lower tail below -20σ": (0.0, 1.0, -40.0, -20.0),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", TRUNC_CASES, ids=list(TRUNC_CASES))
@pytest.mark.parametrize(("start", "n"), [(0, 3 * 2048 + 5), (3, 1001), (2**40 + 1, 9)])
def test_truncated_normal_in_passes_is_the_one_element_formula(case: str, start: int, n: int, dtype: str) -> None:
    from service.core.algorithms.v2 import trunc_constants
    from service.core.spec import TruncatedNormal

    mean, std, low, high = TRUNC_CASES[case]
    p0, dp, flip = trunc_constants(TruncatedNormal(mean=mean, std=std, low=low, high=high))
    key = philox_key(stream_key(11, case))
    got = np.empty(n, dtype)
    if dtype == "float32":  # element e reads word e
        kernels.truncnorm_f32(got, start, *key, p0, dp, flip, mean, std, low, high)
        first, words_per_element, formula = start >> 2, 1, _trunc_values
    else:  # element e reads words 2e and 2e + 1
        kernels.truncnorm_f64(got, start, *key, p0, dp, flip, mean, std, low, high)
        first, words_per_element, formula = (2 * start) >> 2, 2, _trunc_values_f64
    last = (words_per_element * (start + n) + 3) >> 2
    words = kernels.philox_block(first, last - first, *key)[words_per_element * start - 4 * first :][: words_per_element * n]
    assert got.tobytes() == formula(words, p0, dp, flip, mean, std, low, high).tobytes()
