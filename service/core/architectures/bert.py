"""BERT: ``bert`` (embeddings, encoder.layer.i, pooler) and the heads of BertForMaskedLM, BertForPreTraining...

``bert.embeddings``: word_embeddings (``pad_token_id`` row), position_embeddings,
token_type_embeddings, LayerNorm; a layer: attention.self.query/key/value,
attention.output.dense and LayerNorm, [crossattention likewise, with
``add_cross_attention``], intermediate.dense, output.dense and LayerNorm; ``pooler.dense``
in BertModel and BertForPreTraining (not in the masked-LM heads). The MLM head
``cls.predictions``: its own ``bias`` (saved first: a module's parameters precede its
children's), transform.dense, transform.LayerNorm, and a decoder tied to
``word_embeddings`` and ``cls.predictions.bias`` when ``tie_word_embeddings`` (else saved).
BertForPreTraining adds ``cls.seq_relationship`` (2, hidden); BertForSequenceClassification
is ``bert`` with its pooler and ``classifier`` (num_labels, hidden) with a bias. ``position_ids`` and
``token_type_ids`` are non-persistent buffers.

Init: the base rule (std = ``initializer_range``), and BertPreTrainedModel._init_weights:
``BertLMPredictionHead``'s bias 0.
"""

from __future__ import annotations

from .registry import Config, TensorEntry, Tensors, architecture, constant


@architecture(
    "bert",
    classes=("BertForMaskedLM", "BertModel", "BertForPreTraining", "BertLMHeadModel", "BertForSequenceClassification"),
    fields={
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
    },
    source="transformers/models/bert/modeling_bert.py (BertPreTrainedModel._init_weights, the heads), configuration_bert.py",
)
def _bert(cfg: Config, cls: str) -> list[TensorEntry]:
    std = cfg.std()
    hidden, vocab, inter = cfg.integer("hidden_size"), cfg.integer("vocab_size"), cfg.integer("intermediate_size")
    cfg.divides("hidden_size", "num_attention_heads")
    base = "" if cls == "BertModel" else "bert."
    t = Tensors()

    def layer_norm(name: str) -> None:
        t.norm(name, hidden, kind="layer_norm", bias=True, why="LayerNorm")

    def attention(prefix: str) -> None:
        for p in ("query", "key", "value"):
            t.linear(f"{prefix}.self.{p}", hidden, hidden, std, bias=True)
        t.linear(f"{prefix}.output.dense", hidden, hidden, std, bias=True)
        layer_norm(f"{prefix}.output.LayerNorm")

    emb = f"{base}embeddings"
    t.embedding(f"{emb}.word_embeddings", vocab, hidden, std, cfg.padding_idx("pad_token_id", vocab), why="word_embeddings")
    t.embedding(f"{emb}.position_embeddings", cfg.integer("max_position_embeddings"), hidden, std, why="position_embeddings")
    t.embedding(f"{emb}.token_type_embeddings", cfg.integer("type_vocab_size"), hidden, std, why="token_type_embeddings")
    layer_norm(f"{emb}.LayerNorm")
    for i in range(cfg.integer("num_hidden_layers")):
        layer = f"{base}encoder.layer.{i}"
        attention(f"{layer}.attention")
        if cfg.flag("add_cross_attention"):
            attention(f"{layer}.crossattention")
        t.linear(f"{layer}.intermediate.dense", inter, hidden, std, bias=True)
        t.linear(f"{layer}.output.dense", hidden, inter, std, bias=True)
        layer_norm(f"{layer}.output.LayerNorm")
    if cls in ("BertModel", "BertForPreTraining", "BertForSequenceClassification"):
        t.linear(f"{base}pooler.dense", hidden, hidden, std, bias=True)
    if cls == "BertForSequenceClassification":
        t.linear("classifier", cfg.num_labels(), hidden, std, bias=True, why="classifier")
    if cls in ("BertModel", "BertForSequenceClassification"):
        return t.entries
    t.add("cls.predictions.bias", (vocab,), None, None, constant(0.0, "BertLMPredictionHead bias"))
    t.linear("cls.predictions.transform.dense", hidden, hidden, std, bias=True)
    layer_norm("cls.predictions.transform.LayerNorm")
    if not cfg.flag("tie_word_embeddings"):
        t.linear("cls.predictions.decoder", vocab, hidden, std, bias=True, why="MLM decoder")
    if cls == "BertForPreTraining":
        t.linear("cls.seq_relationship", 2, hidden, std, bias=True)
    return t.entries
