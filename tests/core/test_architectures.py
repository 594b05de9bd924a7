"""Architectures and recipe ``transformers`` against transformers itself.

The anchor is transformers 5.x: each tiny config is built with ``from_config`` (its
``_init_weights`` runs) and written with ``save_pretrained``. The manifest must name the
tensors of the written files with their shapes and dtypes, in the order save_pretrained
shards them (one tensor group per file with ``max_shard_size=1``) and the exact order
transformers' own ``remove_tied_weights_from_state_dict`` and ``revert_weight_conversion``
give. The engine's bytes for every tensor must follow the distribution of transformers'
tensor: a two-sample KS test (fixed seeds) and the sample stds within 15% for every
random tensor (each has ≥ 1000 elements; KS at α = 1e-6 over ~400 tensors), exact equality for constants and padding rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402
from transformers.core_model_loading import revert_weight_conversion  # noqa: E402
from transformers.modeling_utils import remove_tied_weights_from_state_dict  # noqa: E402

from service.core import generate  # noqa: E402
from service.core.architectures import (  # noqa: E402
    ARCHITECTURES,
    UnknownArchitectureError,
    checkpoint_specs,
    manifest_from_config,
    supported,
)
from service.core.errors import InvalidParameterError, MissingParameterError, TensorinitError, UncoveredTensorsError  # noqa: E402
from service.core.recipes import plan_recipe  # noqa: E402
from service.core.spec import Constant  # noqa: E402

DECODER = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4}
GQA = {**DECODER, "num_key_value_heads": 2}
GPT2 = {"vocab_size": 128, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 32}
OPT = {"vocab_size": 128, "hidden_size": 64, "ffn_dim": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 30}
BERT = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 32,
    "type_vocab_size": 16,
}
T5 = {"vocab_size": 128, "d_model": 64, "d_kv": 16, "d_ff": 96, "num_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 256}

# (id, config, the Auto class of the model type's usual head when the config names no class)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("llama", {"model_type": "llama", **DECODER}, "AutoModelForCausalLM"),
    (
        "llama-gqa-biases-tied-pad",
        {
            "model_type": "llama",
            **GQA,
            "attention_bias": True,
            "mlp_bias": True,
            "tie_word_embeddings": True,
            "pad_token_id": 5,
            "dtype": "bfloat16",
            "initializer_range": 0.04,
        },
        "AutoModelForCausalLM",
    ),
    ("llama-head_dim-base", {"model_type": "llama", **GQA, "head_dim": 32, "architectures": ["LlamaModel"]}, ""),
    (
        "llama-classifier",
        {
            "model_type": "llama",
            **GQA,
            "id2label": {str(i): f"L{i}" for i in range(16)},
            "architectures": ["LlamaForSequenceClassification"],
        },
        "",
    ),
    ("mistral-gqa", {"model_type": "mistral", **GQA, "pad_token_id": 0}, "AutoModelForCausalLM"),
    ("qwen2-gqa", {"model_type": "qwen2", **GQA}, "AutoModelForCausalLM"),
    ("qwen2-tied", {"model_type": "qwen2", **DECODER, "tie_word_embeddings": True}, "AutoModelForCausalLM"),
    ("qwen3-head_dim-bias", {"model_type": "qwen3", **GQA, "head_dim": 32, "attention_bias": True}, "AutoModelForCausalLM"),
    ("gemma", {"model_type": "gemma", **GQA, "head_dim": 16}, "AutoModelForCausalLM"),
    ("gemma-untied", {"model_type": "gemma", **DECODER, "head_dim": 16, "tie_word_embeddings": False}, "AutoModelForCausalLM"),
    ("gemma2", {"model_type": "gemma2", **GQA, "head_dim": 32, "dtype": "bfloat16"}, "AutoModelForCausalLM"),
    (
        "mixtral-4",
        {"model_type": "mixtral", **GQA, "hidden_size": 256, "num_local_experts": 4, "dtype": "bfloat16"},
        "AutoModelForCausalLM",
    ),
    (
        "mixtral-2-tied-base",
        {
            "model_type": "mixtral",
            **GQA,
            "hidden_size": 512,
            "num_local_experts": 2,
            "tie_word_embeddings": True,
            "architectures": ["MixtralModel"],
        },
        "",
    ),
    (
        "qwen3_moe-dense-layer",
        {
            "model_type": "qwen3_moe",
            **GQA,
            "hidden_size": 256,
            "head_dim": 32,
            "num_experts": 4,
            "moe_intermediate_size": 32,
            "mlp_only_layers": [1],
        },
        "AutoModelForCausalLM",
    ),
    (
        "qwen3_moe-step-tied",
        {
            "model_type": "qwen3_moe",
            **GQA,
            "hidden_size": 512,
            "num_hidden_layers": 3,
            "num_experts": 2,
            "decoder_sparse_step": 2,
            "tie_word_embeddings": True,
        },
        "AutoModelForCausalLM",
    ),
    ("gpt2", {"model_type": "gpt2", **GPT2, "initializer_range": 0.01}, "AutoModelForCausalLM"),
    (
        "gpt2-cross-untied-inner",
        {"model_type": "gpt2", **GPT2, "add_cross_attention": True, "n_inner": 80, "tie_word_embeddings": False},
        "AutoModelForCausalLM",
    ),
    ("gpt2-classifier", {"model_type": "gpt2", **GPT2, "num_labels": 16, "architectures": ["GPT2ForSequenceClassification"]}, ""),
    ("opt-proj", {"model_type": "opt", **OPT, "word_embed_proj_dim": 32}, "AutoModelForCausalLM"),
    (
        "opt-postnorm-nobias-untied",
        {"model_type": "opt", **OPT, "do_layer_norm_before": False, "enable_bias": False, "tie_word_embeddings": False, "init_std": 0.05},
        "AutoModelForCausalLM",
    ),
    ("opt-classifier", {"model_type": "opt", **OPT, "num_labels": 16, "architectures": ["OPTForSequenceClassification"]}, ""),
    ("bert", {"model_type": "bert", **BERT}, "AutoModelForMaskedLM"),
    (
        "bert-pretraining-untied",
        {
            "model_type": "bert",
            **BERT,
            "hidden_size": 512,
            "num_hidden_layers": 1,
            "tie_word_embeddings": False,
            "architectures": ["BertForPreTraining"],
        },
        "",
    ),
    (
        "bert-base-cross",
        {"model_type": "bert", **BERT, "add_cross_attention": True, "is_decoder": True, "architectures": ["BertModel"]},
        "",
    ),
    ("bert-lm-head", {"model_type": "bert", **BERT, "is_decoder": True, "architectures": ["BertLMHeadModel"]}, ""),
    ("bert-classifier", {"model_type": "bert", **BERT, "num_labels": 16, "architectures": ["BertForSequenceClassification"]}, ""),
    ("t5-decoder-layers", {"model_type": "t5", **T5, "num_decoder_layers": 3, "initializer_factor": 0.5}, "AutoModelForSeq2SeqLM"),
    (
        "t5-gated",
        {"model_type": "t5", **T5, "num_layers": 1, "feed_forward_proj": "gated-gelu", "dtype": "float16", "tie_word_embeddings": False},
        "AutoModelForSeq2SeqLM",
    ),
    ("t5-encoder", {"model_type": "t5", **T5, "architectures": ["T5EncoderModel"]}, ""),
]
IDS = [c[0] for c in CASES]
KS_ALPHA = 1e-6  # ~400 tensors are tested: at 1e-4 one in 25 runs would fail by chance; a wrong std fails the std check too


def build(config: dict[str, Any], auto: str, dtype: Any = None) -> Any:
    """transformers' model for ``config``: the named class, else the Auto class of the usual head (from_config initializes it)."""
    hf_config = transformers.AutoConfig.for_model(**config)
    kwargs = {} if dtype is None else {"dtype": dtype}
    if config.get("architectures"):
        return getattr(transformers, config["architectures"][0])._from_config(hf_config, **kwargs)
    return getattr(transformers, auto).from_config(hf_config, **kwargs)


def saved_state(model: Any) -> dict[str, Any]:
    """The state dict save_pretrained writes, by transformers' own two steps (tied removed, conversions reverted)."""
    return dict(revert_weight_conversion(model, remove_tied_weights_from_state_dict(model.state_dict(), model)))


@pytest.mark.parametrize(("config", "auto"), [c[1:] for c in CASES], ids=IDS)
def test_manifest_is_what_save_pretrained_writes(config: dict[str, Any], auto: str, tmp_path: Path) -> None:
    dtype = config.get("dtype", "float32")
    torch.manual_seed(0)
    model = build(config, auto, getattr(torch, dtype))
    model.save_pretrained(tmp_path, max_shard_size=1)  # every tensor (group) alone in its file: the files give the order
    weight_map = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    written: dict[str, tuple[list[int], str]] = {}
    for file in set(weight_map.values()):
        with safe_open(tmp_path / file, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 -- safe_open is not a mapping
                written[key] = (f.get_slice(key).get_shape(), f.get_slice(key).get_dtype())

    entries = manifest_from_config(config)
    specs = checkpoint_specs(config)  # the config's dtype, or float32
    assert {e.name: (list(e.shape), s.safetensors_dtype) for e, s in zip(entries, specs, strict=True)} == written
    assert [s.name for s in specs] == [e.name for e in entries]
    files = [int(weight_map[e.name].split("-")[1]) for e in entries]
    assert files == sorted(files), "save_pretrained's shard order"
    assert [e.name for e in entries] == list(saved_state(model))


@pytest.mark.parametrize(("config", "auto"), [c[1:] for c in CASES], ids=IDS)
def test_bytes_follow_transformers_init(config: dict[str, Any], auto: str) -> None:
    torch.manual_seed(1)
    theirs = {name: t.float().numpy() for name, t in saved_state(build(config, auto, torch.float32)).items()}
    specs = checkpoint_specs(config, seed=7, dtype="float32")
    assert [s.name for s in specs] == list(theirs)
    for spec in specs:
        ours, ref = generate(spec).astype(np.float64), theirs[spec.name].astype(np.float64)
        assert ours.shape == ref.shape, spec.name
        if isinstance(spec.distribution, Constant):
            value = spec.distribution.value
            assert np.all(ref == value) and np.all(ours == value), (spec.name, value, ref.ravel()[:4])
            continue
        for start, stop, value in spec.fill_rows:
            assert np.all(ref[start:stop] == value) and np.all(ours[start:stop] == value), spec.name
            ours, ref = np.delete(ours, np.s_[start:stop], axis=0), np.delete(ref, np.s_[start:stop], axis=0)
        assert ref.size >= 1000, f"{spec.name}: too small for the KS test, grow the config"
        result = scipy_stats.ks_2samp(ours.ravel(), ref.ravel())
        assert result.pvalue > KS_ALPHA, (spec.name, spec.distribution, result)
        assert ours.std() == pytest.approx(ref.std(), rel=0.15), (spec.name, spec.distribution)


def test_every_architecture_has_a_case() -> None:
    assert {c[1]["model_type"] for c in CASES} == set(ARCHITECTURES)
    for item in supported():
        assert item["default_class"] == item["classes"][0]
        assert set(item) >= {"model_type", "classes", "fields"}


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_defaults_are_transformers_config_defaults(model_type: str) -> None:
    defaults = transformers.AutoConfig.for_model(model_type)
    for name, value in ARCHITECTURES[model_type].fields.items():
        # None: derived by the config class (head_dim, num_key_value_heads, n_inner...), or
        # read only when a config gives it (Qwen2's head_dim, which its class does not declare)
        assert getattr(type(defaults), name, None) == value, name
    # and so the default config's model has the default class's tensors
    with torch.device("meta"):
        model = getattr(transformers, ARCHITECTURES[model_type].classes[0])._from_config(defaults)
    shapes = {name: list(t.shape) for name, t in saved_state(model).items()}
    assert {e.name: list(e.shape) for e in manifest_from_config({"model_type": model_type})} == shapes


# -- errors: each names the field and what is allowed -----------------------------------

ERRORS: list[tuple[Any, type[TensorinitError], str, str]] = [
    ({"model_type": "llama2"}, UnknownArchitectureError, "model_type", "llama, mistral"),
    ({"vocab_size": 8}, MissingParameterError, "model_type", "bert, gemma, gemma2, gpt2"),
    ({"model_type": "llama", "architectures": ["BertForMaskedLM"]}, UnknownArchitectureError, "architectures", "LlamaForCausalLM"),
    ({"model_type": "llama", "vocab_size": "many"}, InvalidParameterError, "vocab_size", "an integer ≥ 1"),
    ({"model_type": "qwen2", "hidden_size": 30, "num_attention_heads": 4}, InvalidParameterError, "hidden_size", "a multiple of"),
    ({"model_type": "gemma", "pad_token_id": 256000}, InvalidParameterError, "pad_token_id", "[-256000, 255999]"),
    ({"model_type": "mistral", "tie_word_embeddings": "yes"}, InvalidParameterError, "tie_word_embeddings", "true or false"),
    ({"model_type": "t5", "feed_forward_proj": "fancy-gelu"}, InvalidParameterError, "feed_forward_proj", "gated-ACT"),
    ({"model_type": "llama", "dtype": "int8"}, InvalidParameterError, "dtype", "bfloat16"),
    ([1, 2], InvalidParameterError, "config", "a JSON object"),
]


@pytest.mark.parametrize(("config", "error", "param", "allowed"), ERRORS)
def test_errors_name_the_field(config: Any, error: type[TensorinitError], param: str, allowed: str) -> None:
    with pytest.raises(error) as info:
        checkpoint_specs(config)
    assert info.value.param == param
    assert allowed in info.value.allowed


def test_recipe_transformers_checks_the_manifest_against_the_config() -> None:
    config = {"model_type": "llama", **DECODER}
    tensors = {e.name: e.manifest() for e in manifest_from_config(config)}
    plan = plan_recipe("transformers", tensors, recipe_params={"config": config}, seed=3)
    assert plan.specs == checkpoint_specs(config, seed=3)
    assert all(dict(s.derivation)["recipe"] == "transformers" and dict(s.derivation)["recipe_rule"] for s in plan.specs)
    with pytest.raises(InvalidParameterError) as info:
        plan_recipe("transformers", {**tensors, "lm_head.weight": {"shape": [64, 128], "kind": "linear"}}, recipe_params={"config": config})
    assert info.value.param == "shape" and "[128, 64]" in info.value.allowed
    with pytest.raises(UncoveredTensorsError) as uncovered:
        plan_recipe("transformers", {"model.extra.weight": {"shape": [2, 2]}}, recipe_params={"config": config})
    assert uncovered.value.names == ["model.extra.weight"]
    with pytest.raises(UnknownArchitectureError) as unknown:
        plan_recipe("transformers", tensors, recipe_params={"config": {"model_type": "nope"}})
    assert getattr(unknown.value, "where", None) == ("recipe_params", "config")


def test_the_engine_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, service.core.architectures as a\n"
        "a.checkpoint_specs({'model_type': 'mixtral', 'num_hidden_layers': 1})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'huggingface_hub', 'fastapi', 'pydantic'}]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("case", ["mixtral-4", "mixtral-2-tied-base", "qwen3_moe-dense-layer", "llama"])
def test_memory_says_where_the_model_holds_each_tensor(case: str) -> None:
    config, auto = next(c[1:] for c in CASES if c[0] == case)
    model = build(config, auto, torch.float32)
    in_memory, on_disk = model.state_dict(), saved_state(model)
    for entry in manifest_from_config(config):
        name, index = entry.memory or (entry.name, ())
        held = in_memory[name][tuple(slice(*i) if isinstance(i, tuple) else i for i in index)]
        assert torch.equal(held, on_disk[entry.name]), entry.name


CLASSES = [(model_type, cls) for model_type, found in sorted(ARCHITECTURES.items()) for cls in found.classes]


@pytest.mark.parametrize(("model_type", "cls"), CLASSES, ids=[c for _, c in CLASSES])
def test_every_class_names_and_shapes(model_type: str, cls: str) -> None:
    config = {**next(c[1] for c in CASES if c[1]["model_type"] == model_type), "architectures": [cls]}
    with torch.device("meta"):
        model = build(config, "")
    assert [(e.name, list(e.shape)) for e in manifest_from_config(config)] == [(k, list(t.shape)) for k, t in saved_state(model).items()]
