"""Shards and algorithm versions over HTTP: GET and POST, single and batch, /init and /stats."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import numpy as np
import pytest
import safetensors.numpy

from service.core import generate, resolve

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("scheme", "shape", "text", "extra"),
    [
        ("he_normal", "64,32", "0:8,:", {}),
        ("he_uniform", "64,32", ":,4:6", {"dtype": "float16"}),
        ("orthogonal", "48,32", "10:20,::3", {"dtype": "float64"}),
        ("truncated_normal", "1000", "::7", {"convention": "jax"}),
    ],
)
async def test_get_with_a_slice_serves_the_slice_of_the_whole(
    api: httpx.AsyncClient, scheme: str, shape: str, text: str, extra: dict[str, Any]
) -> None:
    params = {"scheme": scheme, "shape": shape, "seed": "7", "name": "w", **extra}
    whole = await api.get("/init", params=params)
    part = await api.get("/init", params={**params, "slice": text})
    assert whole.status_code == part.status_code == 200
    assert part.headers["etag"] != whole.headers["etag"]
    full = safetensors.numpy.load(whole.content)["w"]
    want = np.ascontiguousarray(full[tuple(slice(*[int(x) if x else None for x in i.split(":")]) for i in text.split(","))])
    got = safetensors.numpy.load(part.content)["w"]
    assert got.shape == want.shape and got.tobytes() == want.tobytes()
    stats = (await api.get("/stats", params={**params, "slice": text})).json()
    assert stats["tensors"]["w"]["sha256"] == hashlib.sha256(want.tobytes()).hexdigest()


async def test_a_batch_mixes_shards_and_whole_tensors(api: httpx.AsyncClient) -> None:
    body = {
        "seed": 3,
        "tensors": {
            "a": {"scheme": "he_uniform", "shape": [10, 6], "slice": ["2:4", ":"]},
            "b": {"scheme": "normal", "shape": [5], "dtype": "float16"},
        },
    }
    r = await api.post("/init", json=body)
    assert r.status_code == 200
    loaded = safetensors.numpy.load(r.content)
    assert loaded["a"].tobytes() == generate(resolve("he_uniform", [10, 6], seed=3, name="a"))[2:4].tobytes()


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"slice": "5"}, "slice", "i:i+1"),
        ({"slice": "::-1"}, "slice", "step -1"),
        ({"slice": "0:1,0:1,0:1"}, "slice", "one item per axis"),
        ({"algorithm": "1"}, "algorithm", "one of 2"),
        ({"algorithm": "x"}, "algorithm", ""),
    ],
)
async def test_bad_slices_and_unknown_algorithms_are_422_naming_the_field(
    api: httpx.AsyncClient, params: dict[str, str], field: str, fragment: str
) -> None:
    r = await api.get("/init", params={"scheme": "he_normal", "shape": "8,4", **params})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["errors"][0]["path"][-1] == field
    assert fragment in problem["detail"]


async def test_version_lists_the_served_algorithms_and_one_can_be_named(api: httpx.AsyncClient) -> None:
    version = (await api.get("/version")).json()
    assert version["algorithms"] == [2] and version["algorithm"] == 2
    named = await api.get("/init", params={"scheme": "he_normal", "shape": "8,4", "algorithm": "2"})
    default = await api.get("/init", params={"scheme": "he_normal", "shape": "8,4"})
    assert named.content == default.content


async def test_the_algorithm_may_be_named_per_batch_and_per_tensor(api: httpx.AsyncClient) -> None:
    body = {"algorithm": 2, "tensors": {"a": {"scheme": "zeros", "shape": [2]}, "b": {"scheme": "ones", "shape": [2], "algorithm": 2}}}
    assert (await api.post("/init", json=body)).status_code == 200
