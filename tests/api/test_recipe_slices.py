"""A recipe request's manifest entries may carry a slice: a rank's shard, with the whole tensor's fans and bytes."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import safetensors.numpy

pytestmark = pytest.mark.anyio

MANIFEST: dict[str, Any] = {
    "embed.weight": {"shape": [10, 6], "kind": "embedding", "attributes": {"padding_idx": 3}},
    "fc.weight": {"shape": [9, 6], "kind": "linear"},
    "fc.bias": {"shape": [9], "kind": "linear"},
}

SLICES = [
    {"fc.weight": "0:5,:", "fc.bias": "5:9"},
    {"fc.weight": ":,2:4", "embed.weight": "2:5,:"},  # the padding row 3 falls inside this shard
    {"fc.weight": "1:9:3,::2", "embed.weight": "9:10"},
    {"fc.weight": "0:0,:", "fc.bias": "4:4"},  # empty shards: nothing to serve, the rest whole
]


async def _init(api: httpx.AsyncClient, tensors: dict[str, Any], **extra: Any) -> dict[str, np.ndarray[Any, Any]]:
    r = await api.post("/init", json={"recipe": "torch", "seed": 11, "tensors": tensors, **extra})
    assert r.status_code == 200, r.text
    loaded: dict[str, np.ndarray[Any, Any]] = safetensors.numpy.load(r.content)
    return loaded


@pytest.mark.parametrize("slices", SLICES)
async def test_a_sliced_entry_is_that_slice_of_the_whole_tensor(api: httpx.AsyncClient, slices: dict[str, str]) -> None:
    whole = await _init(api, MANIFEST)
    sliced = {name: {**entry, "slice": slices[name]} if name in slices else entry for name, entry in MANIFEST.items()}
    part = await _init(api, sliced)
    for name, value in whole.items():
        index = (
            tuple(slice(*(int(x) if x else None for x in item.split(":"))) for item in slices[name].split(",")) if name in slices else ()
        )
        np.testing.assert_array_equal(part[name], value[index], err_msg=name)


async def test_a_rule_covered_entry_is_sliced_too(api: httpx.AsyncClient) -> None:
    rules = [["fc.weight", {"scheme": "orthogonal"}]]
    whole = await _init(api, MANIFEST, rules=rules)
    part = await _init(api, {**MANIFEST, "fc.weight": {**MANIFEST["fc.weight"], "slice": "3:7,:"}}, rules=rules)
    np.testing.assert_array_equal(part["fc.weight"], whole["fc.weight"][3:7])


@pytest.mark.parametrize(
    ("bad", "message"),
    [("0:5,:,:", "at most one item per axis"), ("a:b", "is not an integer"), (7, "slice")],
)
async def test_a_bad_slice_is_a_422_at_its_entry(api: httpx.AsyncClient, bad: object, message: str) -> None:
    tensors = {**MANIFEST, "fc.weight": {**MANIFEST["fc.weight"], "slice": bad}}
    r = await api.post("/init", json={"recipe": "torch", "tensors": tensors})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert message in r.text
    assert "fc.weight" in r.text
