"""OPT: ``model.decoder`` (embed_tokens, embed_positions, project_out/in, final_layer_norm, layers) + ``lm_head``.

``embed_tokens`` is (vocab, ``word_embed_proj_dim``); when that differs from
``hidden_size``, ``project_out`` (proj, hidden) and ``project_in`` (hidden, proj) appear.
OPTForSequenceClassification ends in ``score`` (num_labels, proj), no bias. The learned positions have ``max_position_embeddings + 2`` rows (OPTLearnedPositionalEmbedding's
offset). The final layer norm exists only with ``do_layer_norm_before`` and not
``_remove_final_layer_norm``; without ``layer_norm_elementwise_affine`` the norms have no
tensors; ``enable_bias`` gives every q/k/v/out_proj, fc1, fc2 its bias. A layer registers
self_attn (k_proj, v_proj, q_proj, out_proj), self_attn_layer_norm, fc1, fc2, final_layer_norm.

Init: PreTrainedModel._init_weights with std = ``init_std`` (OPTConfig has no
initializer_range): Linear N(0, std²), biases 0, embed_tokens' ``pad_token_id`` row 0,
positions N(0, std²), LayerNorm 1/0.
"""

from __future__ import annotations

from .registry import Config, TensorEntry, Tensors, architecture


@architecture(
    "opt",
    classes=("OPTForCausalLM", "OPTModel", "OPTForSequenceClassification"),
    fields={
        "vocab_size": 50272,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "ffn_dim": 3072,
        "max_position_embeddings": 2048,
        "do_layer_norm_before": True,
        "_remove_final_layer_norm": False,
        "word_embed_proj_dim": None,
        "num_attention_heads": 12,
        "init_std": 0.02,
        "pad_token_id": 1,
        "enable_bias": True,
        "layer_norm_elementwise_affine": True,
        "tie_word_embeddings": True,
    },
    source="transformers/models/opt/modeling_opt.py (OPTDecoder, OPTLearnedPositionalEmbedding), configuration_opt.py",
)
def _opt(cfg: Config, cls: str) -> list[TensorEntry]:
    std = cfg.std()
    hidden, vocab, ffn = cfg.integer("hidden_size"), cfg.integer("vocab_size"), cfg.integer("ffn_dim")
    cfg.divides("hidden_size", "num_attention_heads")
    proj = cfg.optional_integer("word_embed_proj_dim", 1) or hidden
    bias, affine = cfg.flag("enable_bias"), cfg.flag("layer_norm_elementwise_affine")
    base = "decoder." if cls == "OPTModel" else "model.decoder."
    t = Tensors()

    def norm(name: str) -> None:
        if affine:
            t.norm(name, hidden, kind="layer_norm", bias=True, why="LayerNorm")

    t.embedding(f"{base}embed_tokens", vocab, proj, std, cfg.padding_idx("pad_token_id", vocab), why="embed_tokens")
    t.embedding(f"{base}embed_positions", cfg.integer("max_position_embeddings", 0) + 2, hidden, std, why="embed_positions (offset 2)")
    if proj != hidden:
        t.linear(f"{base}project_out", proj, hidden, std, bias=False)
        t.linear(f"{base}project_in", hidden, proj, std, bias=False)
    if cfg.flag("do_layer_norm_before") and not cfg.flag("_remove_final_layer_norm"):
        norm(f"{base}final_layer_norm")
    for i in range(cfg.integer("num_hidden_layers")):
        layer = f"{base}layers.{i}"
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            t.linear(f"{layer}.self_attn.{p}", hidden, hidden, std, bias=bias)
        norm(f"{layer}.self_attn_layer_norm")
        t.linear(f"{layer}.fc1", ffn, hidden, std, bias=bias)
        t.linear(f"{layer}.fc2", hidden, ffn, std, bias=bias)
        norm(f"{layer}.final_layer_norm")
    if cls == "OPTForSequenceClassification":
        t.linear("score", cfg.num_labels(), proj, std, bias=False, why="score")
    elif cls != "OPTModel" and not cfg.flag("tie_word_embeddings"):
        t.linear("lm_head", vocab, proj, std, bias=False, why="lm_head")
    return t.entries
