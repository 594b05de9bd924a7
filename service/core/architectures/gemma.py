"""Gemma and Gemma2: Llama's decoder with RMSNorm weights 0 (the norm computes x·(1 + w)), tied by default.

Gemma2 adds ``pre_feedforward_layernorm`` and ``post_feedforward_layernorm`` to every
layer. The embedding is ``GemmaTextScaledWordEmbedding``, an ``nn.Embedding`` (so
N(0, std²) with the ``pad_token_id`` row 0) whose ``embed_scale`` is a non-persistent buffer.

Init: PreTrainedModel._init_weights, then GemmaPreTrainedModel._init_weights (and
Gemma2's): ``if "RMSNorm" in module.__class__.__name__: init.zeros_(module.weight)``.
"""

from __future__ import annotations

from dataclasses import replace

from .llama import DECODER_FIELDS, Decoder, decoder
from .registry import Config, TensorEntry, architecture

GEMMA = Decoder(mlp_bias=False, norm_weight=0.0, norm_why="Gemma RMSNorm (x·(1 + w))")


@architecture(
    "gemma",
    classes=("GemmaForCausalLM", "GemmaModel", "GemmaForSequenceClassification"),
    fields={
        **DECODER_FIELDS,
        "vocab_size": 256000,
        "hidden_size": 3072,
        "intermediate_size": 24576,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "head_dim": 256,
        "pad_token_id": 0,
        "tie_word_embeddings": True,
        "attention_bias": False,
    },
    source="transformers/models/gemma/modeling_gemma.py (GemmaPreTrainedModel._init_weights), configuration_gemma.py",
)
def _gemma(cfg: Config, cls: str) -> list[TensorEntry]:
    return decoder(cfg, cls, GEMMA)


@architecture(
    "gemma2",
    classes=("Gemma2ForCausalLM", "Gemma2Model", "Gemma2ForSequenceClassification"),
    fields={
        **DECODER_FIELDS,
        "vocab_size": 256000,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "pad_token_id": 0,
        "tie_word_embeddings": True,
        "attention_bias": False,
    },
    source="transformers/models/gemma2/modeling_gemma2.py (Gemma2DecoderLayer's four norms, Gemma2PreTrainedModel._init_weights), configuration_gemma2.py",
)
def _gemma2(cfg: Config, cls: str) -> list[TensorEntry]:
    return decoder(cfg, cls, replace(GEMMA, sandwich_norms=True))
