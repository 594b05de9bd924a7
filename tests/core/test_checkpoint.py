"""The checkpoint plan against huggingface_hub's own sharding and the safetensors library's reader."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16 for safe_open's numpy)
import numpy as np
import pytest
from huggingface_hub.serialization._base import parse_size_to_int, split_state_dict_into_shards_factory
from safetensors import safe_open

from service.core import InvalidParameterError, ResolvedSpec, generate, resolve
from service.core.checkpoint import checkpoint, git_blob_id, parse_size, plan_checkpoint, seed_of_commit, shard
from service.core.model_catalogue import UnknownModelError, load, lookup


def _specs(sizes: list[int], dtype: str = "float32") -> list[ResolvedSpec]:
    """Tensors of ``sizes`` elements in this order (names sort in another order than the state dict's)."""
    return [resolve("normal", (n,), dtype=dtype, name=f"t.{9 - i % 10}.{i}", params={"std": 0.02}) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("text", ["500MB", "5GB", "1.5GB", " 10kb ", "2TB", "0.001GB", "7 MB"])
def test_sizes_parse_as_huggingface_hub_parses_them(text: str) -> None:
    assert parse_size(text) == parse_size_to_int(text)


@pytest.mark.parametrize("value", ["5GiB", "GB", "-1MB", "0", 0, -3, "nanGB", True, 1.5, None])
def test_bad_sizes_name_the_parameter(value: Any) -> None:
    with pytest.raises(InvalidParameterError) as err:
        parse_size(value)
    assert err.value.param == "max_shard_size"


# element counts (float32: 4 bytes each) and limits in bytes, including huggingface_hub's
# docstring example, a tensor over the limit in the middle and one exactly at it.
SHARDINGS = [
    ([6, 6, 2, 6, 2, 2], 40),
    ([3, 30, 3, 3], 16),
    ([4, 4, 4], 16),
    ([1] * 10, 1000),
    ([5, 1, 20, 1, 1, 20], 24),
]


@pytest.mark.parametrize(("sizes", "limit"), SHARDINGS)
def test_shards_are_planned_as_huggingface_hub_plans_them(sizes: list[int], limit: int) -> None:
    specs = _specs(sizes)
    split = split_state_dict_into_shards_factory(
        {s.name: s for s in specs}, get_storage_size=lambda s: s.nbytes, filename_pattern="model{suffix}.safetensors", max_shard_size=limit
    )
    ours = plan_checkpoint({"model_type": "x"}, specs, seed=3, dtype="float32", max_shard_size=limit, algorithm=2)
    assert [[s.name for s in group] for group in shard(specs, limit)] == list(split.filename_to_tensors.values())
    assert [f.name for f in ours.shards] == list(split.filename_to_tensors)
    assert [sorted(s.name for s in f.specs) for f in ours.shards] == [sorted(v) for v in split.filename_to_tensors.values()]
    assert ours.total_size == split.metadata["total_size"]
    if split.is_sharded:
        assert ours.index is not None
        assert ours.index["weight_map"] == split.tensor_to_filename
        assert ours.index["metadata"] == {"total_size": split.metadata["total_size"], "total_parameters": sum(sizes)}
    else:
        assert ours.index is None
        assert "model.safetensors.index.json" not in ours.files


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_each_file_is_what_its_plan_says(tmp_path: Any, dtype: str) -> None:
    specs = _specs([1000, 3000, 500, 2000], dtype)
    ours = plan_checkpoint({"model_type": "x", "dtype": dtype}, specs, seed=7, dtype=dtype, max_shard_size=8000, algorithm=2)
    assert len(ours.shards) > 1
    for f in ours.shards:
        assert f.plan is not None
        data = f.plan.read()
        assert len(data) == f.size
        n = int.from_bytes(data[:8], "little")
        assert f.etag == hashlib.sha256(data[: 8 + n]).hexdigest()[:40]
        path = tmp_path / f.name
        path.write_bytes(data)
        with safe_open(path, framework="np") as opened:
            metadata = opened.metadata()
            assert metadata["format"] == "pt"
            assert [s["name"] for s in json.loads(metadata["tensorinit"])["specs"]] == sorted(s.name for s in f.specs)
            for spec in f.specs:
                np.testing.assert_array_equal(opened.get_tensor(spec.name), generate(spec))
    index = ours.files["model.safetensors.index.json"].content
    assert index is not None
    assert index.decode() == json.dumps(ours.index, indent=2, sort_keys=True) + "\n"
    config = ours.files["config.json"]
    assert config.content is not None
    assert json.loads(config.content)["dtype"] == dtype
    assert config.etag == git_blob_id(config.content)


def test_the_commit_hashes_the_definition_and_names_its_seed() -> None:
    specs = _specs([100, 200])
    config = {"model_type": "x"}
    commits = {
        plan_checkpoint(c, [s.with_seed(seed) for s in specs], seed=seed, dtype=d, max_shard_size=m, algorithm=2).commit
        for c, seed, d, m in [
            (config, 0, "float32", 1000),
            (config, 1, "float32", 1000),
            (config, 0, "float32", 500),
            ({"model_type": "y"}, 0, "float32", 1000),
        ]
    }
    assert len(commits) == 4
    for commit in commits:
        assert len(commit) == 40
        assert int(commit, 16) >= 0
    one = plan_checkpoint({"model_type": "x"}, specs, seed=2**64 - 1, dtype="float32", algorithm=2)
    assert seed_of_commit(one.commit) == 2**64 - 1
    assert seed_of_commit("main") is None


def test_the_catalogue_holds_the_public_configs_and_a_directory_of_its_own(tmp_path: Any) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    (tmp_path / "gpt2.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 16}))
    catalogue = load(tmp_path)
    for name in ("gpt2", "bert-base-uncased", "t5-small", "llama-3.2-1b", "llama-3.1-8b", "qwen2.5-0.5b", "mistral-7b-v0.1", "gemma-2-2b"):
        assert name in catalogue
    assert lookup(catalogue, "Llama-3.2-1B")["num_key_value_heads"] == 8
    assert lookup(catalogue, "mixtral-8x7b-v0.1")["num_local_experts"] == 8
    assert lookup(catalogue, "tiny")["hidden_size"] == 8
    assert lookup(catalogue, "gpt2")["n_embd"] == 16  # the directory's own replaces the built-in one
    assert load()["gpt2"]["n_embd"] == 768
    with pytest.raises(UnknownModelError) as err:
        lookup(catalogue, "nope")
    assert "llama-3.2-1b" in err.value.allowed
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json"):
        load(tmp_path)


TINY_LLAMA = {
    "model_type": "llama",
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


@pytest.mark.parametrize(
    ("extra", "param", "value"),
    [
        ({"rope_theta": float("nan")}, "rope_theta", "nan"),  # a field the architecture never reads
        ({"initializer_range": float("inf")}, "initializer_range", "inf"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": -float("inf")}}, "rope_scaling.factor", "-inf"),
        ({"layer_types": ["full_attention", float("nan")]}, "layer_types[1]", "nan"),
    ],
)
def test_a_config_with_a_number_json_cannot_hold_is_refused_naming_it(extra: dict[str, Any], param: str, value: str) -> None:
    with pytest.raises(InvalidParameterError) as err:
        checkpoint({**TINY_LLAMA, **extra})
    assert (err.value.param, str(err.value.value)) == (param, value)
    assert getattr(err.value, "where", ()) == ("config",)


@pytest.mark.parametrize("pad", [-5, -64, 0, 63])
def test_a_negative_pad_token_id_counts_from_the_end_as_nn_embedding_padding_idx(pad: int) -> None:
    """torch's Embedding(padding_idx=-5) zeroes row vocab − 5: the same row must be 0 in the served tensor."""
    found = checkpoint({**TINY_LLAMA, "pad_token_id": pad, "tie_word_embeddings": True})
    (spec,) = [s for s in found.shards[0].specs if s.name == "model.embed_tokens.weight"]
    table = generate(spec)
    zero_rows = [i for i in range(64) if not table[i].any()]
    assert zero_rows == [pad % 64]


@pytest.mark.parametrize("pad", [-65, 64, 1.5, "0", True])
def test_a_pad_token_id_outside_the_vocabulary_is_refused(pad: Any) -> None:
    with pytest.raises(InvalidParameterError) as err:
        checkpoint({**TINY_LLAMA, "pad_token_id": pad})
    assert err.value.param == "pad_token_id" and "[-64, 63]" in str(err.value.allowed)
