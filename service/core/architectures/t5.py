"""T5: ``shared``, ``encoder`` and ``decoder`` stacks (``block.i.layer.j``), and the tied ``lm_head``.

An encoder block: layer.0 SelfAttention (q, k, v (n_heads·d_kv, d_model), o (d_model,
n_heads·d_kv), and in block 0 relative_attention_bias (num_buckets, n_heads)) and
layer_norm; layer.1 DenseReluDense (wi, or wi_0 and wi_1 when ``feed_forward_proj`` is
"gated-*"; wo) and layer_norm. A decoder block puts layer.1 EncDecAttention (no relative
bias) and layer_norm before its feed-forward in layer.2. Each stack ends in
final_layer_norm. ``num_decoder_layers`` defaults to ``num_layers``. In transformers 5.x
T5Config forces ``tie_word_embeddings`` to true: ``lm_head`` and both stacks'
``embed_tokens`` are ``shared``, never saved.

Init (T5PreTrainedModel._init_weights), f = ``initializer_factor``: shared N(0, f²);
q N(0, f²/(d_model·d_kv)); k, v N(0, f²/d_model); o N(0, f²/(n_heads·d_kv));
relative_attention_bias N(0, f²/d_model); wi, wi_0, wi_1 N(0, f²/d_model); wo
N(0, f²/d_ff); T5LayerNorm weight f.
"""

from __future__ import annotations

from .registry import Config, TensorEntry, Tensors, architecture


@architecture(
    "t5",
    classes=("T5ForConditionalGeneration", "T5Model", "T5EncoderModel"),
    fields={
        "vocab_size": 32128,
        "d_model": 512,
        "d_kv": 64,
        "d_ff": 2048,
        "num_layers": 6,
        "num_decoder_layers": None,
        "num_heads": 8,
        "relative_attention_num_buckets": 32,
        "initializer_factor": 1.0,
        "feed_forward_proj": "relu",
    },
    aliases={"hidden_size": "d_model", "num_attention_heads": "num_heads", "num_hidden_layers": "num_layers", "head_dim": "d_kv"},
    source="transformers/models/t5/modeling_t5.py (T5PreTrainedModel._init_weights), configuration_t5.py",
)
def _t5(cfg: Config, cls: str) -> list[TensorEntry]:
    f = cfg.number("initializer_factor")
    d_model, d_kv, d_ff, heads = cfg.integer("d_model"), cfg.integer("d_kv"), cfg.integer("d_ff"), cfg.integer("num_heads")
    inner = heads * d_kv
    proj = cfg.string("feed_forward_proj").split("-")
    if len(proj) > 2 or (len(proj) == 2 and proj[0] != "gated"):
        raise cfg._bad("feed_forward_proj", cfg.get("feed_forward_proj"), '"ACT" or "gated-ACT" (e.g. "relu", "gated-gelu")')
    gated = proj[0] == "gated"
    t = Tensors()
    t.embedding("shared", cfg.integer("vocab_size"), d_model, f * 1.0, why="shared: f")

    def attention(prefix: str, relative: bool) -> None:
        t.linear(f"{prefix}.q", inner, d_model, f * (d_model * d_kv) ** -0.5, bias=False, why="q: f·(d_model·d_kv)^-½")
        t.linear(f"{prefix}.k", inner, d_model, f * d_model**-0.5, bias=False, why="k: f·d_model^-½")
        t.linear(f"{prefix}.v", inner, d_model, f * d_model**-0.5, bias=False, why="v: f·d_model^-½")
        t.linear(f"{prefix}.o", d_model, inner, f * inner**-0.5, bias=False, why="o: f·(n_heads·d_kv)^-½")
        if relative:
            buckets = cfg.integer("relative_attention_num_buckets")
            t.embedding(f"{prefix}.relative_attention_bias", buckets, heads, f * d_model**-0.5, why="relative_attention_bias: f·d_model^-½")

    def feed_forward(prefix: str) -> None:
        for wi in ("wi_0", "wi_1") if gated else ("wi",):
            t.linear(f"{prefix}.{wi}", d_ff, d_model, f * d_model**-0.5, bias=False, why=f"{wi}: f·d_model^-½")
        t.linear(f"{prefix}.wo", d_model, d_ff, f * d_ff**-0.5, bias=False, why="wo: f·d_ff^-½")

    def norm(name: str) -> None:
        t.norm(name, d_model, kind="rms_norm", weight=f * 1.0, why="T5LayerNorm: f")

    stacks = [("encoder", cfg.integer("num_layers"))]
    if cls != "T5EncoderModel":
        decoder_layers = cfg.optional_integer("num_decoder_layers", 0)
        stacks.append(("decoder", cfg.integer("num_layers") if decoder_layers is None else decoder_layers))
    for stack, blocks in stacks:
        for i in range(blocks):
            block = f"{stack}.block.{i}.layer"
            attention(f"{block}.0.SelfAttention", relative=i == 0)
            norm(f"{block}.0.layer_norm")
            if stack == "decoder":
                attention(f"{block}.1.EncDecAttention", relative=False)
                norm(f"{block}.1.layer_norm")
            ff = 2 if stack == "decoder" else 1
            feed_forward(f"{block}.{ff}.DenseReluDense")
            norm(f"{block}.{ff}.layer_norm")
        norm(f"{stack}.final_layer_norm")
    return t.entries
