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
from .registry import Config, TensorEntry, Tensors, architecture, normal, saved_order


def experts(tensors: Tensors, layer: str, cfg: Config, *, block: str, names: tuple[str, str, str], count: str, inter: str) -> None:
    """A sparse MoE block as saved: the router ``{block}.gate.weight``, then per expert ``{block}.experts.<e>.<gate|up|down>.weight``.

    In memory both live under ``mlp``: ``mlp.gate.weight`` and the fused
    ``mlp.experts.gate_up_proj[e]`` = cat(gate, up) (conversion_mapping.py: MergeModulelist(dim=0),
    Concatenate(dim=1)) and ``mlp.experts.down_proj[e]`` = down. All N(0, initializer_range²)
    (the MoE models' _init_weights use ``config.initializer_range`` as it is, without "or 0.02").
    """
    hidden, size, n = cfg.integer("hidden_size"), cfg.integer(inter), cfg.integer(count)
    std = cfg.number("initializer_range")
    moe = f"{layer}.{block}"
    router = normal(std, "router (TopKRouter) weight")
    tensors.add(f"{moe}.gate.weight", (n, hidden), "linear", "weight", router, (f"{layer}.mlp.gate.weight", ()))
    gate, up, down = names
    parts: dict[str, tuple[tuple[int, int], ...]] = {gate: ((0, size),), up: ((size, 2 * size),), down: ()}
    for proj, shape in ((gate, (size, hidden)), (up, (size, hidden)), (down, (hidden, size))):
        fused = f"{layer}.mlp.experts." + ("down_proj" if proj == down else "gate_up_proj")
        for e in range(n):
            rule = normal(std, f"expert {proj} ({fused.rpartition('.')[2]}[{e}])")
            tensors.add(f"{moe}.experts.{e}.{proj}.weight", shape, "linear", "weight", rule, (fused, (e, *parts[proj])))


@architecture(
    "mixtral",
    classes=("MixtralForCausalLM", "MixtralModel", "MixtralForSequenceClassification"),
    fields={**DECODER_FIELDS, "intermediate_size": 14336, "num_key_value_heads": 8, "num_local_experts": 8},
    source="transformers/models/mixtral/modeling_mixtral.py (MixtralExperts, MixtralTopKRouter, _init_weights), conversion_mapping.py ('mixtral'), core_model_loading.py (revert_weight_conversion)",
)
def _mixtral(cfg: Config, cls: str) -> list[TensorEntry]:
    def moe(t: Tensors, layer: str, c: Config, std: float) -> None:
        experts(t, layer, c, block="block_sparse_moe", names=("w1", "w3", "w2"), count="num_local_experts", inter="intermediate_size")

    return saved_order(decoder(cfg, cls, Decoder(qkv_bias=False, o_bias=False, mlp_bias=False), mlp=moe))
