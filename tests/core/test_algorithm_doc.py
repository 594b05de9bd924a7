"""docs/algorithm.md is enough to reproduce the bytes: an independent re-implementation.

Nothing here imports the engine's sampling code; only the spec is resolved by it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from service.core import generate, resolve

B = 2**18


def doc_key(seed: int, name: str, label: str = "values") -> int:
    h = hashlib.sha256(b"tensorinit:v1\x00" + seed.to_bytes(8, "little") + label.encode("ascii") + b"\x00" + name.encode("utf-8"))
    return int.from_bytes(h.digest(), "little")


def doc_rng(key: int, i: int) -> np.random.Generator:
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence(key, spawn_key=(i,))))


def doc_block(dist: dict[str, Any], rng: np.random.Generator, n: int, cdt: Any) -> np.ndarray[Any, Any]:
    if dist["kind"] == "uniform":
        u = rng.random(n, dtype=cdt)
        u *= cdt(dist["high"] - dist["low"])
        u += cdt(dist["low"])
        return u
    if dist["kind"] == "normal":
        z = rng.standard_normal(n, dtype=cdt)
        z *= cdt(dist["std"])
        if dist["mean"] != 0:
            z += cdt(dist["mean"])
        return z
    assert dist["kind"] == "truncated_normal"
    alpha = (dist["low"] - dist["mean"]) / dist["std"]
    beta = (dist["high"] - dist["mean"]) / dist["std"]
    mass = 0.5 * (math.erfc(-beta / math.sqrt(2)) - math.erfc(-alpha / math.sqrt(2)))
    assert mass >= 0.25  # the cases below use normal rejection
    z = rng.standard_normal(n, dtype=cdt)
    bad = np.flatnonzero((z < cdt(alpha)) | (z > cdt(beta)))
    while bad.size:
        r = rng.standard_normal(bad.size, dtype=cdt)
        ok = (r >= cdt(alpha)) & (r <= cdt(beta))
        z[bad[ok]] = r[ok]
        bad = bad[~ok]
    z *= cdt(dist["std"])
    if dist["mean"] != 0:
        z += cdt(dist["mean"])
    return np.clip(z, cdt(dist["low"]), cdt(dist["high"]))


@pytest.mark.parametrize(
    ("scheme", "convention", "dtype"),
    [
        ("he_uniform", "torch", "float32"),
        ("he_normal", "torch", "bfloat16"),
        ("he_normal", "keras", "float64"),
        ("truncated_normal", "haiku", "float16"),
    ],
)
def test_document_reproduces_the_bytes(scheme: str, convention: str, dtype: str) -> None:
    spec = resolve(scheme, (700, 1000), convention=convention, dtype=dtype, seed=42, name="blocks.1.attn.qkv.weight")
    dist = spec.to_dict()["distribution"]
    cdt = np.float64 if dtype == "float64" else np.float32
    out_dtype = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]
    key = doc_key(42, "blocks.1.attn.qkv.weight")
    n = 700 * 1000
    parts = [doc_block(dist, doc_rng(key, i), min(B, n - i * B), cdt) for i in range(math.ceil(n / B))]
    expected = np.concatenate(parts).astype(out_dtype).tobytes()
    assert generate(spec).tobytes() == expected


@pytest.mark.parametrize(("shape", "gain"), [((300, 200), 1.0), ((64, 1000), 2.5)])
def test_document_reproduces_orthogonal(shape: tuple[int, int], gain: float) -> None:
    import scipy.linalg.lapack

    rows, cols = shape
    big, small = max(shape), min(shape)
    key = doc_key(3, "q")
    count = big * small
    draws = np.concatenate([doc_rng(key, i).standard_normal(min(B, count - i * B), dtype=np.float64) for i in range(math.ceil(count / B))])
    a = np.asfortranarray(draws.reshape(big, small))
    tau = np.zeros(small)
    beta = np.zeros(small)
    for k in range(small):
        alpha, xi = a[k, k], np.linalg.norm(a[k + 1 :, k])
        if xi == 0:
            tau[k], beta[k] = 0.0, alpha
            a[k + 1 :, k] = 0.0
            continue
        beta[k] = -(1.0 if alpha >= 0 else -1.0) * math.hypot(alpha, xi)
        tau[k] = (beta[k] - alpha) / beta[k]
        a[k + 1 :, k] *= 1.0 / (alpha - beta[k])
    lwork = int(scipy.linalg.lapack.dorgqr(a, tau, lwork=-1)[1][0])
    q = scipy.linalg.lapack.dorgqr(a, tau, lwork=lwork)[0]
    d = np.sign(beta)
    d[d == 0] = 1.0
    d *= gain
    m = q.T * d[:, None] if rows < cols else q * d[None, :]
    expected = np.ascontiguousarray(m).astype(np.float32).tobytes()
    spec = resolve("orthogonal", shape, seed=3, name="q", params={"gain": gain})
    assert generate(spec).tobytes() == expected
