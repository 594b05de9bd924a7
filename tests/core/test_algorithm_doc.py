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
