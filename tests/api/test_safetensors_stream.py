"""The streaming writer against the real safetensors library: same bytes, loadable everywhere."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from safetensors import safe_open

from service.core import BLOCK_ELEMENTS, ResolvedSpec, Tensor, default_executor, generate, resolve
from service.safetensors_stream import BUFFERS, BufferPool, Counters, Plan, stream

META = {"tensorinit": json.dumps({"algorithm": 1, "note": 'é "quoted" \\ back'}, ensure_ascii=False)}

CASES: dict[str, list[dict[str, Any]]] = {
    "one f32": [{"scheme": "he_normal", "shape": [33, 17]}],
    "scalar and empty": [{"scheme": "ones", "shape": [], "name": "s"}, {"scheme": "zeros", "shape": [0, 5], "name": "e"}],
    "all dtypes, names out of order": [
        {"scheme": "he_uniform", "shape": [40, 30], "name": "z", "dtype": "float16"},
        {"scheme": "normal", "shape": [7], "name": "a", "dtype": "bfloat16"},
        {"scheme": "orthogonal", "shape": [16, 24], "name": "m", "dtype": "float64"},
        {"scheme": "zeros", "shape": [5], "name": "b", "dtype": "float32"},
        {"scheme": "uniform", "shape": [3, 3], "name": "c", "dtype": "bfloat16"},
        {"scheme": "identity", "shape": [4, 4], "name": "A", "dtype": "float64"},
    ],
    "odd names": [
        {"scheme": "he_normal", "shape": [8, 8], "name": 'quote"back\\slash'},
        {"scheme": "he_normal", "shape": [8, 8], "name": "Ωmega.layer/0"},
        {"scheme": "he_normal", "shape": [8, 8], "name": "日本"},
        {"scheme": "he_normal", "shape": [8, 8], "name": "a b\u2028c"},
    ],
    "several blocks, 16-bit": [
        {"scheme": "glorot_normal", "shape": [3 * BLOCK_ELEMENTS // 512 + 1, 512], "name": "big", "dtype": "bfloat16"},
        {"scheme": "truncated_normal", "shape": [BLOCK_ELEMENTS + 3], "name": "t", "dtype": "float16"},
    ],
}


def specs_of(case: list[dict[str, Any]]) -> list[ResolvedSpec]:
    return [resolve(c.pop("scheme"), c.pop("shape"), **c) for c in (dict(x) for x in case)]


def reference(specs: list[ResolvedSpec]) -> bytes:
    data: bytes = safetensors.numpy.save({s.name: generate(s) for s in specs}, metadata=META)
    return data


def collect(plan: Plan, start: int = 0, stop: int | None = None, counters: Counters | None = None) -> bytes:
    async def run() -> bytes:
        parts = [bytes(c) async for c in stream(plan, start, stop, executor=default_executor(), ahead=3, counters=counters)]
        return b"".join(parts)

    return asyncio.run(run())


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_identical_to_safetensors_save(case: str) -> None:
    specs = specs_of(CASES[case])
    plan = Plan([Tensor(s) for s in specs], META)
    ref = reference(specs)
    assert plan.size == len(ref)
    assert plan.read() == ref
    assert collect(plan) == ref


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_loads_with_every_loader(case: str) -> None:
    specs = specs_of(CASES[case])
    data = Plan([Tensor(s) for s in specs], META).read()
    expected = {s.name: generate(s) for s in specs}
    if not any(s.dtype == "bfloat16" for s in specs):
        loaded = safetensors.numpy.load(data)
        for name, arr in expected.items():
            assert loaded[name].dtype == arr.dtype
            np.testing.assert_array_equal(loaded[name], arr)
    by_torch = safetensors.torch.load(data)
    for name, arr in expected.items():
        as_f32 = by_torch[name].to(torch.float64).numpy()
        np.testing.assert_array_equal(as_f32, arr.astype(np.float64))
        assert tuple(by_torch[name].shape) == arr.shape


def test_safe_open_reads_bfloat16_and_metadata(tmp_path: Any) -> None:
    specs = specs_of(CASES["all dtypes, names out of order"])
    path = tmp_path / "t.safetensors"
    path.write_bytes(Plan([Tensor(s) for s in specs], META).read())
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == META
        for s in specs:
            got = f.get_tensor(s.name)
            assert got.dtype == (np.dtype(ml_dtypes.bfloat16) if s.dtype == "bfloat16" else s.np_dtype)
            np.testing.assert_array_equal(got, generate(s))


RANGES = [
    (0, 1),
    (0, 8),
    (3, 40),
    (8, 200),
    (100, 5000),
    (BLOCK_ELEMENTS - 7, BLOCK_ELEMENTS * 2 + 9),
    (-3, None),
    (-BLOCK_ELEMENTS - 5, None),
]


@pytest.mark.parametrize(("start", "stop"), RANGES)
def test_any_byte_range_is_the_same_slice(start: int, stop: int | None) -> None:
    specs = specs_of(CASES["several blocks, 16-bit"]) + specs_of(CASES["one f32"])
    plan = Plan([Tensor(s) for s in specs], META)
    ref = reference(specs)
    lo = start if start >= 0 else len(ref) + start
    hi = len(ref) if stop is None else stop
    assert plan.read(lo, hi) == ref[lo:hi]
    assert collect(plan, lo, hi) == ref[lo:hi]


def test_a_range_generates_only_the_blocks_that_cover_it() -> None:
    spec = resolve("he_normal", [64, BLOCK_ELEMENTS // 4])  # 64 MiB, 64 blocks
    plan = Plan([Tensor(spec)], META)
    start = plan.entries[0].begin + 10 * BLOCK_ELEMENTS * 4 + 5
    counters = Counters()
    data = collect(plan, start, start + BLOCK_ELEMENTS * 4, counters)
    assert counters.blocks_generated == 2
    assert data == generate(spec).reshape(-1).view(np.uint8)[start - plan.entries[0].begin :][: BLOCK_ELEMENTS * 4].tobytes()


CHUNK_CASES = [
    ("whole file", 0, None, True),
    ("from inside the header", 5, None, True),
    ("data only", -1, None, False),  # -1: from the first data byte
    ("header and a little data", 0, -100, True),  # -100: the header and 100 bytes
]


@pytest.mark.parametrize(("start", "stop", "has_header"), [c[1:] for c in CHUNK_CASES], ids=[c[0] for c in CHUNK_CASES])
def test_the_header_is_its_own_chunk_and_data_chunks_are_at_least_one_mebibyte(start: int, stop: int | None, has_header: bool) -> None:
    spec = resolve("he_uniform", [8, BLOCK_ELEMENTS // 2], dtype="float16")  # 512 KiB blocks
    plan = Plan([Tensor(spec)], META)
    header = len(plan.header)
    start = header if start == -1 else start
    stop = header - stop if stop is not None and stop < 0 else stop

    async def chunks() -> list[bytes]:
        out = []
        async for chunk in stream(plan, start, stop, executor=default_executor()):
            assert isinstance(chunk, bytes) or (chunk.format == "B" and chunk.itemsize == 1)
            out.append(bytes(chunk))
        return out

    got = asyncio.run(chunks())
    assert b"".join(got) == plan.read(start, stop)
    if has_header:
        assert got[0] == plan.header[start:]
        got = got[1:]
    assert all(len(c) >= 1 << 20 for c in got[:-1])
    if stop is not None:
        assert [len(c) for c in got] == [100]


def test_duplicate_names_are_refused() -> None:
    spec = resolve("zeros", [2])
    with pytest.raises(ValueError, match="duplicate"):
        Plan([Tensor(spec), Tensor(spec)], META)


CONSTANT_CASES: list[tuple[str, dict[str, Any], tuple[int, int | None]]] = [
    ("zeros f32, 3 blocks and a bit", {"scheme": "zeros", "shape": [3 * BLOCK_ELEMENTS + 5]}, (0, None)),
    ("ones bf16, 5 blocks", {"scheme": "ones", "shape": [5 * BLOCK_ELEMENTS], "dtype": "bfloat16"}, (0, None)),
    (
        "constant -1.5 f64",
        {"scheme": "constant", "shape": [2 * BLOCK_ELEMENTS + 1], "params": {"value": -1.5}, "dtype": "float64"},
        (0, None),
    ),
    (
        "constant 0.1 f16, cut mid-element",
        {"scheme": "constant", "shape": [BLOCK_ELEMENTS + 9], "params": {"value": 0.1}, "dtype": "float16"},
        (101, -3),
    ),
    (
        "constant -0.0 f32, range over a block edge",
        {"scheme": "constant", "shape": [3 * BLOCK_ELEMENTS], "params": {"value": -0.0}},
        (4 * BLOCK_ELEMENTS - 1, 4 * BLOCK_ELEMENTS + 10),
    ),
    ("ones f32, one element", {"scheme": "ones", "shape": [1]}, (0, None)),
    ("zeros empty", {"scheme": "zeros", "shape": [0, 3]}, (0, None)),
]


@pytest.mark.parametrize(("case", "request_", "span"), CONSTANT_CASES, ids=[c[0] for c in CONSTANT_CASES])
def test_constant_tensors_are_served_from_one_buffer_with_the_engines_bytes(
    case: str, request_: dict[str, Any], span: tuple[int, int | None]
) -> None:
    specs = specs_of([{**request_, "name": "c"}, {"scheme": "ones", "shape": [7], "name": "d", "dtype": "float32"}])
    plan = Plan([Tensor(s) for s in specs], META)
    ref = reference(specs)
    lo, hi = span[0], len(ref) if span[1] is None else span[1] % len(ref)
    counters = Counters()
    assert collect(plan, lo, hi, counters) == ref[lo:hi]
    assert counters.blocks_generated == 0, "a constant tensor is not generated block by block"


def test_a_pooled_buffer_is_handed_out_again_only_when_nothing_refers_to_it() -> None:
    pool = BufferPool(1 << 10, keep=2)
    a = pool.take(100)
    b = pool.take(1 << 10)
    assert a is not b and len(pool) == 2
    view = a[10:20].view(np.uint16).data  # a memoryview of a view of a slice: it still refers to a
    del a
    c = pool.take(1)
    assert c is not b and c.base is None and len(pool) == 2  # both kept ones are in use: a fresh one, not kept
    del view, c
    again = pool.take(1)
    assert again.size == 1 << 10 and len(pool) == 2
    del b
    assert pool.take(1) is not again  # the other one, now free
    assert pool.take((1 << 10) + 1).size == (1 << 10) + 1  # larger than the pool's buffers: a fresh one


def test_chunks_held_by_the_consumer_keep_their_bytes_while_the_stream_goes_on() -> None:
    # Two streams at once, every chunk kept alive as the memoryview the server got: if a
    # buffer were reused while referred to, an earlier chunk would change under us.
    plans = [Plan([Tensor(resolve(scheme, [40, BLOCK_ELEMENTS]))], META) for scheme in ("he_normal", "uniform")]

    async def run() -> list[list[Any]]:
        async def one(plan: Plan) -> list[Any]:
            return [c async for c in stream(plan, executor=default_executor(), ahead=4)]

        return list(await asyncio.gather(*(one(p) for p in plans)))

    held = asyncio.run(run())
    assert sum(len(chunks) for chunks in held) > BUFFERS.keep + 2  # more chunks held at once than the pool keeps
    for plan, chunks in zip(plans, held, strict=True):
        assert b"".join(bytes(c) for c in chunks) == plan.read()
