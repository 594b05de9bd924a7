"""GPT-2: ``transformer`` (wte, wpe, h.i, ln_f) + ``lm_head`` (tied to wte by default).

GPT2Model has no ``transformer.`` prefix; GPT2ForSequenceClassification adds ``score``
(num_labels, E) without bias. A block ``h.i`` is ln_1, attn (c_attn (E, 3E), c_proj), ln_2, [crossattention (c_attn
(E, 2E), q_attn, c_proj), ln_cross_attn when ``add_cross_attention``], mlp (c_fc (E, inner),
c_proj); inner = ``n_inner`` or 4·E. transformers' Conv1D stores its weight (in, out).
The causal-mask ``attn.bias`` buffers are not saved.

Init: base rule (LayerNorm 1/0, wte and wpe N(0, std²), no padding row), then
GPT2PreTrainedModel._init_weights: Conv1D weight N(0, initializer_range²), bias 0; in every
GPT2Attention and GPT2MLP ``c_proj.weight`` N(0, (initializer_range/√(2·n_layer))²).
"""

from __future__ import annotations

import math

from .registry import Config, TensorEntry, Tensors, architecture


@architecture(
    "gpt2",
    classes=("GPT2LMHeadModel", "GPT2Model", "GPT2ForSequenceClassification"),
    fields={
        "vocab_size": 50257,
        "n_positions": 1024,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_inner": None,
        "initializer_range": 0.02,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
    },
    aliases={
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    },
    source="transformers/models/gpt2/modeling_gpt2.py (GPT2PreTrainedModel._init_weights), configuration_gpt2.py",
)
def _gpt2(cfg: Config, cls: str) -> list[TensorEntry]:
    std, conv_std = cfg.std(), cfg.number("initializer_range")
    embd, layers, vocab = cfg.integer("n_embd"), cfg.integer("n_layer"), cfg.integer("vocab_size")
    cfg.divides("n_embd", "n_head")
    inner = cfg.optional_integer("n_inner", 1) or 4 * embd
    resid = conv_std / math.sqrt(2 * layers)
    resid_why = f"c_proj (residual): initializer_range/√(2·{layers})"
    base = "" if cls == "GPT2Model" else "transformer."
    t = Tensors()
    t.embedding(f"{base}wte", vocab, embd, std, why="wte")
    t.embedding(f"{base}wpe", cfg.integer("n_positions"), embd, std, why="wpe")
    for i in range(layers):
        h = f"{base}h.{i}"
        t.norm(f"{h}.ln_1", embd, kind="layer_norm", bias=True, why="LayerNorm")
        t.conv1d(f"{h}.attn.c_attn", embd, 3 * embd, conv_std)
        t.conv1d(f"{h}.attn.c_proj", embd, embd, resid, why=resid_why)
        t.norm(f"{h}.ln_2", embd, kind="layer_norm", bias=True, why="LayerNorm")
        if cfg.flag("add_cross_attention"):
            t.conv1d(f"{h}.crossattention.c_attn", embd, 2 * embd, conv_std)
            t.conv1d(f"{h}.crossattention.q_attn", embd, embd, conv_std)
            t.conv1d(f"{h}.crossattention.c_proj", embd, embd, resid, why=resid_why)
            t.norm(f"{h}.ln_cross_attn", embd, kind="layer_norm", bias=True, why="LayerNorm")
        t.conv1d(f"{h}.mlp.c_fc", embd, inner, conv_std)
        t.conv1d(f"{h}.mlp.c_proj", inner, embd, resid, why=resid_why)
    t.norm(f"{base}ln_f", embd, kind="layer_norm", bias=True, why="LayerNorm")
    if cls == "GPT2ForSequenceClassification":
        t.linear("score", cfg.num_labels(), embd, std, bias=False, why="score")
    elif base and not cfg.flag("tie_word_embeddings"):
        t.linear("lm_head", vocab, embd, std, bias=False, why="lm_head")
    return t.entries
