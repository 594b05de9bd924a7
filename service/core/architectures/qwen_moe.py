"""Qwen3-MoE: Qwen3's attention (q_norm, k_norm) with a sparse MoE in the layers ``decoder_sparse_step`` and ``mlp_only_layers`` choose.

Layer i has the MoE when i ∉ ``mlp_only_layers``, ``num_experts`` > 0 and
(i + 1) % ``decoder_sparse_step`` == 0, else a dense MLP of ``intermediate_size``. The MoE is
saved as ``mlp.gate.weight`` (router) and per expert ``mlp.experts.<e>.gate_proj``,
``up_proj`` (``moe_intermediate_size``, hidden) and ``down_proj``: conversion_mapping.py's
"qwen2_moe" entry, which "qwen3_moe" uses, reverted in ``dot_natural_key`` order (see
:mod:`.mixtral`). Qwen3MoeConfig declares no ``head_dim``: hidden/heads unless the config gives it.

Init: the base rule, and Qwen3MoePreTrainedModel._init_weights: experts and router
N(0, initializer_range²).
"""

from __future__ import annotations

from .llama import DECODER_FIELDS, Decoder, decoder, dense_mlp
from .mixtral import experts
from .registry import Config, TensorEntry, Tensors, architecture, saved_order


@architecture(
    "qwen3_moe",
    classes=("Qwen3MoeForCausalLM", "Qwen3MoeModel", "Qwen3MoeForSequenceClassification"),
    fields={
        **DECODER_FIELDS,
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "attention_bias": False,
        "decoder_sparse_step": 1,
        "moe_intermediate_size": 768,
        "num_experts": 128,
        "mlp_only_layers": None,
    },
    source="transformers/models/qwen3_moe/modeling_qwen3_moe.py (Qwen3MoeDecoderLayer, _init_weights), configuration_qwen3_moe.py, conversion_mapping.py ('qwen2_moe')",
)
def _qwen3_moe(cfg: Config, cls: str) -> list[TensorEntry]:
    count, step = cfg.integer("num_experts", 0), cfg.integer("decoder_sparse_step")
    dense_only = cfg.get("mlp_only_layers") or []
    if not isinstance(dense_only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense_only):
        raise cfg._bad("mlp_only_layers", dense_only, "null or a list of layer indices")

    def mlp(t: Tensors, layer: str, c: Config, std: float) -> None:
        i = int(layer.rpartition(".")[2])
        if i not in dense_only and count > 0 and (i + 1) % step == 0:
            experts(
                t, layer, c, block="mlp", names=("gate_proj", "up_proj", "down_proj"), count="num_experts", inter="moe_intermediate_size"
            )
        else:
            dense_mlp(t, f"{layer}.mlp", c, std, bias=False)

    return saved_order(decoder(cfg, cls, Decoder(mlp_bias=False, qk_norm=True), mlp=mlp))
