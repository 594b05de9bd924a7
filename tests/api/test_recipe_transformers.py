"""Recipe ``transformers`` through /plan and /init: a config in recipe_params, the manifest as tensors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.core.architectures import checkpoint_specs, manifest_from_config

pytestmark = pytest.mark.anyio

CONFIG: dict[str, Any] = {
    "model_type": "gemma2",
    "vocab_size": 32,
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 8,
}


def body(config: dict[str, Any]) -> dict[str, Any]:
    tensors = {e.name: e.manifest() for e in manifest_from_config(CONFIG)}
    return {"recipe": "transformers", "recipe_params": {"config": config}, "tensors": tensors, "seed": 5}


async def test_plan_gives_the_checkpoint_specs_and_says_why(api: httpx.AsyncClient) -> None:
    r = await api.post("/plan", json=body(CONFIG))
    assert r.status_code == 200, r.text
    assert r.json()["specs"] == [s.to_dict() for s in checkpoint_specs(CONFIG, seed=5)]
    text = (await api.post("/plan", json=body(CONFIG), headers={"accept": "text/plain"})).text
    norm = next(line for line in text.splitlines() if line.startswith("model.layers.0.pre_feedforward_layernorm.weight"))
    assert "Gemma RMSNorm (x·(1 + w)) weight: 0" in norm
    embed = next(line for line in text.splitlines() if line.startswith("model.embed_tokens.weight"))
    assert "rows 0:1=0" in embed and "row 0 (pad_token_id) 0" in embed
    init = await api.post("/init", json=body(CONFIG))
    assert init.status_code == 200
    assert init.headers["etag"].strip('"') == r.json()["etag"].strip('"')


@pytest.mark.parametrize(
    ("config", "path", "allowed"),
    [
        ({**CONFIG, "model_type": "gemma3"}, ["recipe_params", "config", "model_type"], "gemma2"),
        ({**CONFIG, "hidden_size": 8.5}, ["recipe_params", "config", "hidden_size"], "an integer ≥ 1"),
    ],
)
async def test_config_errors_are_422_naming_the_field(
    api: httpx.AsyncClient, config: dict[str, Any], path: list[str], allowed: str
) -> None:
    r = await api.post("/plan", json=body(config))
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert error["path"] == path
    assert allowed in error["allowed"]
