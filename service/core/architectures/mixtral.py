"""Mixtral: Llama's attention with a sparse mixture of experts in place of the MLP, saved under its on-disk names.

In memory (transformers 5.x) a layer's MoE is ``mlp.gate.weight`` (the router, (E, hidden))
and fused ``mlp.experts.gate_up_proj`` (E, 2·I, hidden) and ``mlp.experts.down_proj``
(E, hidden, I). ``save_pretrained`` reverts conversion_mapping.py's "mixtral" entry:
``block_sparse_moe.gate.weight``, and per expert ``block_sparse_moe.experts.<e>.w1.weight``
(I, hidden), ``w3`` (I, hidden) and ``w2`` (hidden, I). ``revert_weight_conversion`` first
sorts the state dict by ``dot_natural_key`` of the in-memory names, and splits
``gate_up_proj`` into every expert's w1, then every expert's w3.

Init: the base rule (std = ``initializer_range`` or 0.02), and MixtralPreTrainedModel's
``init.normal_(gate_up_proj / down_proj / router weight, std=config.initializer_range)``.
"""

from __future__ import annotations

from .llama import DECODER_FIELDS, Decoder, decoder
from .registry import Config, TensorEntry, Tensors, architecture, natural_key, normal

_ON_DISK = ".block_sparse_moe."


def _memory_name(name: str) -> str:
    """The in-memory name a saved tensor comes from (what revert_weight_conversion sorts by)."""
    if _ON_DISK not in name:
        return name
    layer, _, rest = name.partition(_ON_DISK)
    if rest.startswith("experts."):
        fused = "down_proj" if rest.endswith(".w2.weight") else "gate_up_proj"
        return f"{layer}.mlp.experts.{fused}"
    return f"{layer}.mlp.{rest}"


def _experts(tensors: Tensors, layer: str, cfg: Config) -> None:
    hidden, inter, experts = cfg.integer("hidden_size"), cfg.integer("intermediate_size"), cfg.integer("num_local_experts")
    std = cfg.number("initializer_range")  # MixtralPreTrainedModel: no "or 0.02" here
    moe = f"{layer}{_ON_DISK}"
    tensors.add(f"{moe}gate.weight", (experts, hidden), "linear", "weight", normal(std, "router (MixtralTopKRouter) weight"))
    for proj, shape in (("w1", (inter, hidden)), ("w3", (inter, hidden)), ("w2", (hidden, inter))):
        fused = "down_proj" if proj == "w2" else "gate_up_proj"
        for e in range(experts):
            tensors.add(f"{moe}experts.{e}.{proj}.weight", shape, "linear", "weight", normal(std, f"expert {proj} (fused {fused})"))


@architecture(
    "mixtral",
    classes=("MixtralForCausalLM", "MixtralModel"),
    fields={**DECODER_FIELDS, "intermediate_size": 14336, "num_key_value_heads": 8, "num_local_experts": 8},
    source="transformers/models/mixtral/modeling_mixtral.py (MixtralExperts, MixtralTopKRouter, _init_weights), conversion_mapping.py ('mixtral'), core_model_loading.py (revert_weight_conversion)",
)
def _mixtral(cfg: Config, cls: str) -> list[TensorEntry]:
    entries = decoder(cfg, cls, Decoder(qkv_bias=False, o_bias=False, mlp_bias=False), mlp=lambda t, layer, c, std: _experts(t, layer, c))
    return sorted(entries, key=lambda e: natural_key(_memory_name(e.name)))
