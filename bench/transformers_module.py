"""A Llama-3.2-1B-shaped transformers model filled in memory: ``init_module(recipe="transformers")`` beside its own ``init_weights()``.

    python -m bench.transformers_module [--dtype bfloat16] [--rounds 3] [--layers 16] [--port 8151]

The model is transformers' ``LlamaForCausalLM`` for Llama-3.2-1B's shape (hidden 2048,
16 layers, 32 heads, 8 key/value heads, intermediate 8192, vocabulary 128256, tied
embedding: 1.24 B parameters), built on the meta device and ``to_empty``'d once, so
construction is not timed. Each round, interleaved, on that same model:

- anchor: transformers' own ``model.init_weights()`` (every ``_init_weights``, then the
  tie), torch CPU in this process with two threads;
- ours: ``Client.init_module(model, recipe="transformers", seed=0)`` against the real
  service (uvicorn, a subprocess on a loopback port of this machine): the manifest from
  ``POST /models/manifest``, one ``POST /init`` streamed into the parameters' own storage,
  then ``init_weights()`` for what no checkpoint holds (RoPE's ``inv_freq``) with the
  filled tensors marked, and the tie.

Printed: best and median seconds of each side and the median of the per-round ratios
anchor/ours (issue 19's target: ≥ 3×).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import transformers
from tensorinit import Client

from bench.server import server

THREADS = 2

LLAMA_3_2_1B = {
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=16, help="num_hidden_layers (16 is Llama-3.2-1B)")
    parser.add_argument("--port", type=int, default=None, help="loopback port of the service (default: a free one)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    dtype = getattr(torch, args.dtype)
    config = transformers.LlamaConfig(**{**LLAMA_3_2_1B, "num_hidden_layers": args.layers})
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM._from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    model.to_empty(device="cpu")
    model.tie_weights()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"LlamaForCausalLM, Llama-3.2-1B shape with {args.layers} layers: {params / 1e9:.3f} B {args.dtype} parameters, "
        f"{os.cpu_count()} cores, torch threads {THREADS}, transformers {transformers.__version__}, torch {torch.__version__}"
    )

    with server("service.api.app:create_app", args.port) as (url, _), Client(url) as client:

        def fresh() -> None:
            """Each side starts from a model transformers has not marked: init_weights() skips modules marked _is_hf_initialized."""
            for module in model.modules():
                module.__dict__.pop("_is_hf_initialized", None)

        def ours() -> float:
            fresh()
            t0 = time.perf_counter()
            client.init_module(model, recipe="transformers", seed=0)
            return time.perf_counter() - t0

        def anchor() -> float:
            fresh()
            t0 = time.perf_counter()
            model.init_weights()
            return time.perf_counter() - t0

        ours(), anchor()  # warm-up: kernels, connection, page faults of the parameters
        rounds = []
        for _ in range(args.rounds):
            rounds.append((ours(), anchor()))
            print(f"  round: ours {rounds[-1][0]:.3f} s, init_weights {rounds[-1][1]:.3f} s", flush=True)
    mine, theirs = [o for o, _ in rounds], [a for _, a in rounds]
    ratio = statistics.median(a / o for o, a in rounds)
    print(f"{'side':<50} {'best s':>8} {'median s':>9}")
    print(f"{'tensorinit init_module(recipe=transformers)':<50} {min(mine):8.3f} {statistics.median(mine):9.3f}")
    print(f"{'transformers model.init_weights() (torch CPU)':<50} {min(theirs):8.3f} {statistics.median(theirs):9.3f}")
    verdict = "PASS" if ratio >= 3.0 else "MISS"
    print(
        f"ratio anchor/ours, median of {args.rounds} rounds: {ratio:.2f}x (best/best {min(theirs) / min(mine):.2f}x), "
        f"target >= 3.0x: {verdict}"
    )


if __name__ == "__main__":
    main()
