"""``init_module(model, recipe="transformers")``: a built transformers model holds its checkpoint's bytes.

Each model is built as a large one would be: ``from_config`` on the meta device, then
``to_empty`` (garbage memory, ties undone). After the fill, every tensor that
``save_pretrained`` would write, taken from the model by transformers' own two steps
(tied weights removed, Mixtral's fused experts reverted to their on-disk names), equals
the engine's bytes for that on-disk name (``checkpoint_specs`` + ``generate``: the bytes of
the checkpoint files). The tied weights are one tensor again, what the checkpoint does
not hold (RoPE's ``inv_freq``) is set by transformers, and a forward pass is finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tensorinit import Client, ValidationError  # noqa: E402
from transformers.core_model_loading import revert_weight_conversion  # noqa: E402
from transformers.modeling_utils import remove_tied_weights_from_state_dict  # noqa: E402

from service.core import generate  # noqa: E402
from service.core.architectures import checkpoint_specs  # noqa: E402
from tests.client.conftest import Twin  # noqa: E402

DECODER = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4}
GQA = {**DECODER, "num_key_value_heads": 2}

# (id, config, class, torch dtype the model is built in, the tied pairs (tied, source) or ())
CASES: list[tuple[str, dict[str, Any], str, Any, tuple[tuple[str, str], ...]]] = [
    (
        "llama-tied-gqa",
        {"model_type": "llama", **GQA, "tie_word_embeddings": True, "pad_token_id": 3},
        "LlamaForCausalLM",
        torch.float32,
        (("lm_head.weight", "model.embed_tokens.weight"),),
    ),
    ("llama-untied-bias-bf16", {"model_type": "llama", **GQA, "attention_bias": True}, "LlamaForCausalLM", torch.bfloat16, ()),
    (
        "gpt2-conv1d",
        {"model_type": "gpt2", "vocab_size": 128, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 32},
        "GPT2LMHeadModel",
        torch.float32,
        (("lm_head.weight", "transformer.wte.weight"),),
    ),
    (
        "bert-mlm",
        {
            "model_type": "bert",
            **DECODER,
            "max_position_embeddings": 32,
            "type_vocab_size": 2,
        },
        "BertForMaskedLM",
        torch.float32,
        (("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),),
    ),
    (
        "t5",
        {"model_type": "t5", "vocab_size": 128, "d_model": 64, "d_kv": 16, "d_ff": 96, "num_layers": 2, "num_heads": 4},
        "T5ForConditionalGeneration",
        torch.float32,
        (("encoder.embed_tokens.weight", "shared.weight"), ("decoder.embed_tokens.weight", "shared.weight")),
    ),
    (
        "gemma2",
        {"model_type": "gemma2", **GQA, "head_dim": 16},
        "Gemma2ForCausalLM",
        torch.float32,
        (("lm_head.weight", "model.embed_tokens.weight"),),
    ),
    ("mixtral-fused-experts", {"model_type": "mixtral", **GQA, "num_local_experts": 4}, "MixtralForCausalLM", torch.float32, ()),
]


def built(config: dict[str, Any], cls: str, dtype: Any) -> Any:
    """The model as a large one is built: on the meta device, then to_empty (its memory is garbage)."""
    hf_config = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = getattr(transformers, cls)._from_config(hf_config, dtype=dtype)
    return model.to_empty(device="cpu")


def saved(model: Any) -> dict[str, Any]:
    """What save_pretrained writes, by transformers' own steps: tied weights removed, conversions reverted."""
    return dict(revert_weight_conversion(model, remove_tied_weights_from_state_dict(model.state_dict(), model)))


def forward(model: Any) -> Any:
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=ids, decoder_input_ids=ids).logits
        return model(input_ids=ids).logits


@pytest.mark.parametrize(("config", "cls", "dtype", "tied"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_built_model_holds_the_checkpoints_bytes(
    live_url: str, twin: Twin, config: dict[str, Any], cls: str, dtype: Any, tied: tuple[tuple[str, str], ...]
) -> None:
    model = built(config, cls, dtype)
    names = twin(live_url, {}, "init_module", model, recipe="transformers", seed=7)

    state = saved(model)
    dtype_name = str(dtype).removeprefix("torch.")
    specs = checkpoint_specs({**config, "architectures": [cls]}, seed=7, dtype=dtype_name)
    assert names == [s.name for s in specs]
    assert sorted(state) == sorted(s.name for s in specs)
    for spec in specs:
        got = state[spec.name].detach().contiguous()
        assert got.dtype == dtype
        want = generate(spec)
        assert got.view(torch.uint8).numpy().tobytes() == np.ascontiguousarray(want).view(np.uint8).tobytes(), spec.name
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, source in tied:
        assert params[name] is params[source], f"{name} is not tied to {source}"
    for name, buffer in model.named_buffers():
        assert torch.isfinite(buffer.float()).all(), f"{name} was left as to_empty's garbage"
    assert torch.isfinite(forward(model).float()).all()


def test_the_fused_experts_are_filled_in_place(live_url: str) -> None:
    """Mixtral's on-disk experts land inside the fused parameters, which keep their identity (an optimizer holding them sees it)."""

    config = next(c[1] for c in CASES if c[0] == "mixtral-fused-experts")
    model = built(config, "MixtralForCausalLM", torch.float32)
    fused = model.model.layers[0].mlp.experts.gate_up_proj
    before = (fused, fused.data_ptr(), fused._version)
    with Client(live_url) as client:
        names = client.init_module(model, recipe="transformers", seed=7)
    assert "model.layers.0.block_sparse_moe.experts.3.w3.weight" in names
    assert (fused, fused.data_ptr()) == before[:2] and fused._version > before[2]
    assert not hasattr(fused, "_is_hf_initialized")  # the marks of transformers' init are taken off again


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"model_type": "no-such-model"}, "model_type"),
        ({"model_type": "llama", **DECODER, "hidden_size": "wide"}, "hidden_size"),
    ],
)
def test_an_unknown_or_wrong_config_is_a_422_naming_the_field(live_url: str, twin: Twin, config: dict[str, Any], field: str) -> None:
    model = built({"model_type": "llama", **DECODER}, "LlamaForCausalLM", torch.float32)
    with pytest.raises(ValidationError) as caught:
        twin(live_url, {}, "init_module", model, recipe="transformers", recipe_params={"config": config})
    assert caught.value.status_code == 422
    assert field in str(caught.value)


def test_a_meta_model_is_refused(live_url: str) -> None:

    hf_config = transformers.AutoConfig.for_model(model_type="llama", **DECODER)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(hf_config)
    with Client(live_url) as client, pytest.raises(ValueError, match="meta device"):
        client.init_module(model, recipe="transformers")


# A fused (4, 6, 5) parameter holding on-disk tensors [e, 0:3] (gate), [e, 3:6] (up) and [e] (down-like, the whole row).
FUSED = (4, 6, 5)
ON_DISK = [((1, (0, 3)), (3, 5)), ((2, (3, 6)), (3, 5)), ((3,), (6, 5))]
HELD = [
    ("whole", [(0, 4, 1), (0, 6, 1), (0, 5, 1)]),
    ("fsdp-experts", [(2, 4, 1), (0, 6, 1), (0, 5, 1)]),
    ("tp-rows", [(0, 4, 1), (2, 5, 1), (0, 5, 1)]),
    ("tp-cols", [(0, 4, 1), (0, 6, 1), (1, 3, 1)]),
    ("strided-cols", [(0, 4, 1), (0, 6, 1), (0, 5, 2)]),
]


@pytest.mark.parametrize(("held"), [h[1] for h in HELD], ids=[h[0] for h in HELD])
@pytest.mark.parametrize(("index", "shape"), ON_DISK, ids=["gate", "up", "row"])
def test_a_rank_receives_its_part_of_a_fused_tensor(held: list[tuple[int, int, int]], index: Any, shape: tuple[int, ...]) -> None:
    """A rank holding ``full[held]`` of a fused parameter asks for the part of the on-disk tensor it holds, and puts it in place."""
    from tensorinit._transformers import OnDisk, _locate

    full = np.arange(np.prod(FUSED)).reshape(FUSED)
    local = full[tuple(slice(*r) for r in held)]
    disk = full[tuple(i if isinstance(i, int) else slice(*i) for i in index)]
    assert disk.shape == shape
    mark = np.zeros(FUSED, dtype=bool)
    mark[tuple(i if isinstance(i, int) else slice(*i) for i in index)] = True
    expected = mark[tuple(slice(*r) for r in held)]  # which local elements belong to this on-disk tensor
    entry = OnDisk("t", shape, None, None, "p", index)
    found = _locate(entry, held)
    if not expected.any():
        assert found is None
        return
    assert found is not None
    where, part = found
    want = disk if part is None else disk[tuple(slice(*(int(p) if p else None for p in s.split(":"))) for s in part.split(","))]
    np.testing.assert_array_equal(local[where], want)
    assert local[where].size == expected.sum()


def test_a_strided_shard_across_a_fused_slice_is_refused() -> None:
    from tensorinit._transformers import OnDisk, _locate

    entry = OnDisk("experts.0.w1.weight", (3, 5), None, None, "experts.gate_up_proj", (0, (0, 3)))
    with pytest.raises(ValueError, match="strided shard of a fused parameter"):
        _locate(entry, [(0, 4, 1), (0, 6, 2), (0, 5, 1)])


def test_sharded_mixtral_ranks_fill_the_unsharded_model(live_url: str, tmp_path: Any) -> None:
    """FSDP2 (half the experts per rank) and experts sharded across w1|w3 (2 gloo ranks): the full tensors are one process's."""
    import json
    import subprocess
    import sys

    from safetensors.torch import load_file

    from tests.client.test_distributed import ROOT, child_env, free_port

    config = next(c[1] for c in CASES if c[0] == "mixtral-fused-experts")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        "tests.client.hf_distributed_worker",
        live_url,
        str(tmp_path),
        json.dumps(config),
    ]
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    model = built(config, "MixtralForCausalLM", torch.float32)
    with Client(live_url) as client:
        client.init_module(model, recipe="transformers", seed=7)
    want = {name: p.detach() for name, p in model.named_parameters()}
    for layout in ("fsdp", "tp_experts"):
        got = load_file(str(tmp_path / f"{layout}.safetensors"))
        assert set(got) == set(want)
        differ = [name for name, value in want.items() if value.numpy().tobytes() != got[name].numpy().tobytes()]
        assert not differ, f"{layout}: {differ}"


def test_plan_module_gives_the_checkpoint_specs(live_url: str, twin: Twin) -> None:
    config = next(c[1] for c in CASES if c[0] == "mixtral-fused-experts")
    model = built(config, "MixtralForCausalLM", torch.bfloat16)
    plan = twin(live_url, {}, "plan_module", model, recipe="transformers", seed=7)
    specs = checkpoint_specs({**config, "architectures": ["MixtralForCausalLM"]}, seed=7, dtype="bfloat16")
    assert list(plan.specs) == [s.name for s in specs]
    assert [plan[s.name].raw for s in specs] == [s.to_dict() for s in specs]
