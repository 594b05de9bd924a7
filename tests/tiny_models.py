"""Tiny model configs for the tests of checkpoints and the Hub protocol, and a live server that has them in its catalogue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.api.app import create_app
from service.api.settings import Settings
from tests.conftest import LiveServer, start_server, stop_server

TINY: dict[str, dict[str, Any]] = {
    # vocab × hidden × 4 bytes = 256 KiB: the embeddings are streamed, not answered inline.
    "tiny-llama": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1024,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    },
    "tiny-gpt2": {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": 32,
        "n_head": 4,
        "n_layer": 2,
        "n_positions": 64,
        "vocab_size": 512,
    },
}


def write_models(directory: Path) -> Path:
    """``directory`` with a NAME.json per tiny config (what TENSORINIT_MODELS_DIR names)."""
    for name, config in TINY.items():
        (directory / f"{name}.json").write_text(json.dumps(config))
    return directory


@contextmanager
def models_server(directory: Path, **settings: Any) -> Iterator[LiveServer]:
    """The service on a loopback port with the tiny configs in its catalogue."""
    live = start_server(create_app(Settings(models_dir=str(write_models(directory)), access_log="off", **settings)))
    try:
        yield live
    finally:
        stop_server(live)
