"""Llama and the decoders built like it: Mistral, Qwen2, Qwen3 (and the shared decoder Gemma and Mixtral reuse).

``XForCausalLM`` = ``model`` (``embed_tokens``, ``layers.i`` = self_attn q/k/v/o, mlp
gate/up/down, input_layernorm, post_attention_layernorm; ``norm``) + ``lm_head`` (left out
when ``tie_word_embeddings``); ``XModel`` is ``model`` alone, without the prefix;
``XForSequenceClassification`` is ``model`` + ``score`` (num_labels, hidden), no bias
(GenericForSequenceClassification; num_labels = len(id2label), else num_labels, else 2). Rotary
``inv_freq`` is a non-persistent buffer: not saved.

Init (PreTrainedModel._init_weights, none of these four overrides it): std =
``initializer_range`` (0 or null: 0.02); Linear weights N(0, std²), biases 0; the
embedding N(0, std²) with its ``pad_token_id`` row 0; RMSNorm weights 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .registry import Config, TensorEntry, Tensors, architecture

MLP = Callable[[Tensors, str, Config, float], None]


@dataclass(frozen=True)
class Decoder:
    """What differs between the Llama-like decoders."""

    qkv_bias: str | bool = "attention_bias"  # a config field, or fixed
    o_bias: str | bool = "attention_bias"
    mlp_bias: str | bool = "mlp_bias"
    qk_norm: bool = False  # Qwen3: q_norm, k_norm over head_dim
    norm_weight: float = 1.0  # Gemma: 0 (its RMSNorm computes x·(1 + w))
    sandwich_norms: bool = False  # Gemma2: pre_/post_feedforward_layernorm
    head_dim: str = "field"  # "field": config.head_dim (null: hidden/heads); "derived": hidden/heads unless given
    norm_why: str = "RMSNorm"


def _flag(cfg: Config, value: str | bool) -> bool:
    return cfg.flag(value) if isinstance(value, str) else value


def head_dim(cfg: Config) -> int:
    """``head_dim`` if the config gives it (non-null), else ``hidden_size // num_attention_heads``."""
    given = cfg.raw.get("head_dim", cfg.defaults.get("head_dim"))
    if given is not None:
        return cfg.integer("head_dim")
    cfg.divides("hidden_size", "num_attention_heads")
    return cfg.integer("hidden_size") // cfg.integer("num_attention_heads")


def dense_mlp(tensors: Tensors, prefix: str, cfg: Config, std: float, *, bias: bool) -> None:
    hidden, inter = cfg.integer("hidden_size"), cfg.integer("intermediate_size")
    tensors.linear(f"{prefix}.gate_proj", inter, hidden, std, bias=bias)
    tensors.linear(f"{prefix}.up_proj", inter, hidden, std, bias=bias)
    tensors.linear(f"{prefix}.down_proj", hidden, inter, std, bias=bias)


def decoder(cfg: Config, cls: str, shape: Decoder, mlp: MLP | None = None) -> list[TensorEntry]:
    """The tensors of a Llama-like ``cls`` (``...ForCausalLM`` or ``...Model``) in state_dict order, tied ones left out."""
    std = cfg.std()
    hidden, vocab = cfg.integer("hidden_size"), cfg.integer("vocab_size")
    heads, kv_heads = cfg.integer("num_attention_heads"), cfg.optional_integer("num_key_value_heads", 1)
    kv_heads = heads if kv_heads is None else kv_heads
    dim = head_dim(cfg)
    qkv_bias, o_bias = _flag(cfg, shape.qkv_bias), _flag(cfg, shape.o_bias)
    mlp_bias = _flag(cfg, shape.mlp_bias)
    base = "" if cls.endswith("Model") else "model."
    t = Tensors()
    t.embedding(f"{base}embed_tokens", vocab, hidden, std, cfg.padding_idx("pad_token_id", vocab), why="embed_tokens")

    def norm(name: str, size: int = hidden) -> None:
        t.norm(name, size, kind="rms_norm", weight=shape.norm_weight, why=shape.norm_why)

    for i in range(cfg.integer("num_hidden_layers")):
        layer = f"{base}layers.{i}"
        t.linear(f"{layer}.self_attn.q_proj", heads * dim, hidden, std, bias=qkv_bias)
        t.linear(f"{layer}.self_attn.k_proj", kv_heads * dim, hidden, std, bias=qkv_bias)
        t.linear(f"{layer}.self_attn.v_proj", kv_heads * dim, hidden, std, bias=qkv_bias)
        t.linear(f"{layer}.self_attn.o_proj", hidden, heads * dim, std, bias=o_bias)
        if shape.qk_norm:
            norm(f"{layer}.self_attn.q_norm", dim)
            norm(f"{layer}.self_attn.k_norm", dim)
        if mlp is None:
            dense_mlp(t, f"{layer}.mlp", cfg, std, bias=mlp_bias)
        else:
            mlp(t, layer, cfg, std)
        norm(f"{layer}.input_layernorm")
        norm(f"{layer}.post_attention_layernorm")
        if shape.sandwich_norms:
            norm(f"{layer}.pre_feedforward_layernorm")
            norm(f"{layer}.post_feedforward_layernorm")
    norm(f"{base}norm")
    if cls.endswith("ForSequenceClassification"):
        t.linear("score", cfg.num_labels(), hidden, std, bias=False, why="score")
    elif base and not cfg.flag("tie_word_embeddings"):
        t.linear("lm_head", vocab, hidden, std, bias=False, why="lm_head")
    return t.entries


DECODER_FIELDS: Mapping[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "head_dim": None,
    "initializer_range": 0.02,
    "pad_token_id": None,
    "tie_word_embeddings": False,
}
"""Llama's defaults (configuration_llama.py); the others replace what differs."""


@architecture(
    "llama",
    classes=("LlamaForCausalLM", "LlamaModel", "LlamaForSequenceClassification"),
    fields={**DECODER_FIELDS, "attention_bias": False, "mlp_bias": False},
    source="transformers/models/llama/modeling_llama.py, configuration_llama.py",
)
def _llama(cfg: Config, cls: str) -> list[TensorEntry]:
    return decoder(cfg, cls, Decoder())


@architecture(
    "mistral",
    classes=("MistralForCausalLM", "MistralModel", "MistralForSequenceClassification"),
    fields={**DECODER_FIELDS, "intermediate_size": 14336, "num_key_value_heads": 8},
    source="transformers/models/mistral/modeling_mistral.py, configuration_mistral.py",
)
def _mistral(cfg: Config, cls: str) -> list[TensorEntry]:
    return decoder(cfg, cls, Decoder(qkv_bias=False, o_bias=False, mlp_bias=False))


@architecture(
    "qwen2",
    classes=("Qwen2ForCausalLM", "Qwen2Model", "Qwen2ForSequenceClassification"),
    fields={**DECODER_FIELDS, "vocab_size": 151936, "intermediate_size": 22016, "num_key_value_heads": 32},
    source="transformers/models/qwen2/modeling_qwen2.py (q/k/v always with bias, o_proj without), configuration_qwen2.py",
)
def _qwen2(cfg: Config, cls: str) -> list[TensorEntry]:
    return decoder(cfg, cls, Decoder(qkv_bias=True, o_bias=False, mlp_bias=False))


@architecture(
    "qwen3",
    classes=("Qwen3ForCausalLM", "Qwen3Model", "Qwen3ForSequenceClassification"),
    fields={
        **DECODER_FIELDS,
        "vocab_size": 151936,
        "intermediate_size": 22016,
        "num_key_value_heads": 32,
        "head_dim": 128,
        "attention_bias": False,
    },
    source="transformers/models/qwen3/modeling_qwen3.py (q_norm, k_norm over head_dim), configuration_qwen3.py (head_dim 128)",
)
def _qwen3(cfg: Config, cls: str) -> list[TensorEntry]:
    return decoder(cfg, cls, Decoder(mlp_bias=False, qk_norm=True))
