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


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "llama", "num_hidden_layers": 10**7},
        {**MIXTRAL, "num_hidden_layers": 10**5, "num_local_experts": 10**4},
        {"model_type": "gpt2", "n_layer": 10**8},
    ],
    ids=["llama-1e7-layers", "mixtral-1e9-experts", "gpt2-1e8-layers"],
)
async def test_a_config_of_too_many_tensors_is_refused_before_it_is_built(api: httpx.AsyncClient, config: dict[str, Any]) -> None:
    """Review: 10^7 layers used to build every entry (minutes, GBs) before any limit; now 65536 entries is the bound."""
    for path, body in (
        ("/models/manifest", {"config": config}),
        ("/plan", {"recipe": "transformers", "recipe_params": {"config": config}, "tensors": {"w": {"shape": [1]}}}),
    ):
        r = await api.post(path, json=body)
        assert r.status_code == 413, r.text
        assert "max_checkpoint_tensors" in r.text
