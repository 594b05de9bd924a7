"""POST /models/manifest: a config's tensors as save_pretrained writes them, with where transformers holds each in memory."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.core.architectures import manifest_from_config

pytestmark = pytest.mark.anyio

MIXTRAL: dict[str, Any] = {
    "model_type": "mixtral",
    "vocab_size": 32,
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_local_experts": 2,
}


async def test_the_manifest_is_the_engines_with_each_tensors_place_in_memory(api: httpx.AsyncClient) -> None:
    r = await api.post("/models/manifest", json={"config": MIXTRAL})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["model_type"], answer["class"], answer["dtype"]) == ("mixtral", "MixtralForCausalLM", "float32")
    entries = manifest_from_config(MIXTRAL)
    assert [t["name"] for t in answer["tensors"]] == [e.name for e in entries]
    assert [tuple(t["shape"]) for t in answer["tensors"]] == [e.shape for e in entries]
    by_name = {t["name"]: t for t in answer["tensors"]}
    assert by_name["model.embed_tokens.weight"]["memory"] is None
    assert by_name["model.layers.0.block_sparse_moe.experts.1.w3.weight"]["memory"] == {
        "parameter": "model.layers.0.mlp.experts.gate_up_proj",
        "index": [1, [24, 48]],
    }
    assert by_name["model.layers.0.block_sparse_moe.experts.0.w2.weight"]["memory"] == {
        "parameter": "model.layers.0.mlp.experts.down_proj",
        "index": [0],
    }


@pytest.mark.parametrize(
    ("body", "path", "allowed"),
    [
        ({"config": {**MIXTRAL, "model_type": "gemma3"}}, ["config", "model_type"], "mixtral"),
        ({"config": {**MIXTRAL, "num_local_experts": 0}}, ["config", "num_local_experts"], "an integer ≥ 1"),
        ({"config": [1, 2]}, ["config"], "a JSON object"),
        ({"model": "llama"}, ["config"], "config.json"),
    ],
)
async def test_errors_are_422_problems_naming_the_field(api: httpx.AsyncClient, body: Any, path: list[str], allowed: str) -> None:
    r = await api.post("/models/manifest", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    error = r.json()["errors"][0]
    assert error["path"] == path
    assert allowed in error["allowed"]
