"""Reproducibility: the bytes are a pure function of the resolved spec.

Independent of chunking, threads, slices, neighbours and request order; bf16 and f16
outputs are the round-to-nearest-even of the float32 twin.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from service.core import BLOCK_ELEMENTS, Tensor, default_executor, generate, resolve

B = BLOCK_ELEMENTS
SPECS: list[tuple[str, tuple[int, ...], dict[str, Any]]] = [
    ("he_normal", (3 * B // 1000 + 7, 1000), {}),  # several blocks, ragged last block
    ("he_uniform", (1000, 700), {"convention": "keras"}),
    ("truncated_normal", (B + 5,), {"convention": "jax"}),
    ("truncated_normal", (B + 5,), {"convention": "jax", "params": {"lower": 3.0, "upper": 8.0}}),
    ("orthogonal", (600, 500), {}),
    ("identity", (3, 700, 300), {}),
    ("dirac", (64, 64, 9, 9), {}),
    ("delta_orthogonal", (7, 7, 64, 128), {"convention": "jax"}),
    ("sparse", (800, 400), {"params": {"sparsity": 0.5}}),
    ("constant", (B * 2 + 1,), {"params": {"value": 3.0}}),
]


def digest(arr: np.ndarray[Any, Any]) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).view(np.uint8).data).hexdigest()


@pytest.mark.parametrize(("scheme", "shape", "kw"), SPECS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_whole_blocks_threads_slices_agree(scheme: str, shape: tuple[int, ...], kw: dict[str, Any], dtype: str) -> None:
    spec = resolve(scheme, shape, dtype=dtype, seed=11, **kw)
    tensor = Tensor(spec)
    whole = tensor.array().reshape(-1)
    assert whole.dtype == spec.np_dtype and whole.size == spec.numel
    # Same spec, fresh objects, again: same bytes.
    assert digest(generate(spec)) == digest(whole)
    # Block by block, sequentially and on a 3-thread pool with deep prefetch.
    assert digest(np.concatenate(list(tensor.iter_blocks()))) == digest(whole)
    with ThreadPoolExecutor(3) as pool:
        assert digest(np.concatenate(list(tensor.iter_blocks(executor=pool, ahead=7)))) == digest(whole)
        assert digest(tensor.array(executor=pool)) == digest(whole)
    # Any element slice, generating only the covering blocks.
    n = spec.numel
    for lo, hi in [(0, 1), (B - 3, B + 3), (n // 3, n // 2), (n - 1, n), (5, 5), (0, n)]:
        assert np.array_equal(tensor.read(lo, hi).view(np.uint8), whole[lo:hi].view(np.uint8)), (lo, hi)
    # Any byte range.
    raw = whole.view(np.uint8).tobytes()
    size = whole.itemsize
    for lo, hi in [(0, 3), (1, 2 * size + 1), (B * size - 5, B * size + 7), (len(raw) - 3, len(raw))]:
        assert b"".join(tensor.iter_bytes(lo, hi)) == raw[lo:hi], (lo, hi)


@pytest.mark.parametrize(
    ("scheme", "kw"),
    [
        ("he_normal", {}),
        ("he_uniform", {"convention": "keras"}),
        ("truncated_normal", {"convention": "haiku"}),
        ("orthogonal", {}),
        ("delta_orthogonal", {"convention": "jax"}),
    ],
)
def test_16_bit_outputs_are_the_rounded_float32_twin(scheme: str, kw: dict[str, Any]) -> None:
    shape = (3, 3, 96, 128) if scheme == "delta_orthogonal" else (700, 600)
    f32 = generate(resolve(scheme, shape, dtype="float32", seed=5, **kw))
    bf16 = generate(resolve(scheme, shape, dtype="bfloat16", seed=5, **kw))
    f16 = generate(resolve(scheme, shape, dtype="float16", seed=5, **kw))
    assert bf16.dtype == np.dtype(ml_dtypes.bfloat16)
    assert bf16.tobytes() == f32.astype(ml_dtypes.bfloat16).tobytes()
    assert f16.tobytes() == f32.astype(np.float16).tobytes()


def test_streams_are_keyed_by_seed_and_name_only() -> None:
    base = generate(resolve("normal", (1000,), seed=1, name="a"))
    # The same stream under another scheme with a proportional distribution.
    scaled = generate(resolve("he_normal", (1000, 1), seed=1, name="a", params={"gain": 1.0})).reshape(-1)
    assert np.allclose(scaled, base, rtol=1e-6, atol=0)
    # Another name or seed: unrelated numbers.
    for other in (generate(resolve("normal", (1000,), seed=1, name="b")), generate(resolve("normal", (1000,), seed=2, name="a"))):
        assert abs(np.corrcoef(base, other)[0, 1]) < 0.2
    # Neighbours do not matter: a tensor's bytes depend on nothing but its own spec.
    alone = digest(generate(resolve("he_uniform", (300, 200), seed=9, name="fc.weight")))
    generate(resolve("he_uniform", (300, 200), seed=9, name="fc.bias"))
    assert digest(generate(resolve("he_uniform", (300, 200), seed=9, name="fc.weight"))) == alone


def test_prefix_of_a_larger_tensor_is_not_implied() -> None:
    # Blocks are keyed by index: a bigger tensor with the same name shares its leading blocks.
    small = generate(resolve("normal", (B + 10,), seed=4)).reshape(-1)
    big = generate(resolve("normal", (3 * B,), seed=4)).reshape(-1)
    assert np.array_equal(small[:B], big[:B])


def test_engine_imports_no_web_layer() -> None:
    code = (
        "import sys, service.core, service.core.stats, service.core.propagation, service.core.plots\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'fastapi', 'starlette', 'pydantic', 'uvicorn', 'httpx'}"
        " or m.startswith('service.api')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_materializing_inside_block_workers_cannot_deadlock() -> None:
    # Streams ask for orthogonal blocks from the block pool; the QR's own parallel parts
    # must not queue behind them on the same (now fully busy) pool.
    pool = default_executor()
    tensors = [Tensor(resolve("orthogonal", (300, 300), seed=i)) for i in range(3 * (pool._max_workers or 2))]
    futures = [pool.submit(t.block, 0) for t in tensors]
    _, pending = wait(futures, timeout=60)
    assert not pending
    for t, f in zip(tensors, futures, strict=True):
        assert f.result().tobytes() == t.array().reshape(-1)[: t.numel].tobytes()


@pytest.mark.parametrize(("scheme", "shape", "kw"), SPECS)
def test_a_reseeded_tensor_is_the_tensor_of_the_reseeded_spec(scheme: str, shape: tuple[int, ...], kw: dict[str, Any]) -> None:
    spec = resolve(scheme, shape, seed=1, **kw)
    twin = Tensor(spec).reseeded(spec.with_seed(99))
    fresh = Tensor(resolve(scheme, shape, seed=99, **kw))
    assert twin.spec == fresh.spec
    assert digest(twin.array()) == digest(fresh.array())


def test_reseeding_refuses_a_spec_that_differs_in_more_than_the_seed() -> None:
    spec = resolve("he_normal", (8, 8), seed=1)
    with pytest.raises(ValueError, match="more than the seed"):
        Tensor(spec).reseeded(resolve("he_normal", (8, 8), seed=2, name="other"))
    with pytest.raises(ValueError, match="seed"):
        spec.with_seed(-1)


def test_a_delta_orthogonal_matrix_is_drawn_on_first_use_only() -> None:
    """Planning, or an empty tensor, must not pay for the QR (it ran outside any admission)."""
    empty = Tensor(resolve("delta_orthogonal", (4096, 4096, 0)))
    assert empty.array().shape == (4096, 4096, 0)
    assert empty._matrix is None
    spec = resolve("delta_orthogonal", (3, 3, 16, 32), convention="jax", seed=4)
    tensor = Tensor(spec)
    assert tensor._matrix is None
    assert digest(tensor.array()) == digest(Tensor(spec).array(executor=default_executor()))
    assert tensor._matrix is not None
