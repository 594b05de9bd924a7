"""A whole GPT-2-small by recipe: ``init_module(recipe="gpt2")`` beside nanoGPT's own init, in one run.

    python -m bench.recipes [--rounds 5] [--port 8150]

The model is nanoGPT's GPT module tree at GPT-2-small size (12 layers, 768 wide,
vocabulary 50257, context 1024, tied embedding: 124M float32 parameters), built on the
meta device and materialized once, so construction is not timed. Each round, interleaved:

- anchor: nanoGPT's ``self.apply(self._init_weights)`` and its ``c_proj.weight`` loop
  (karpathy/nanoGPT model.py), torch CPU in this process with two threads;
- ours: ``Client.init_module(model, recipe="gpt2", recipe_params={"n_layer": 12})``
  against the real service (uvicorn, a subprocess on a loopback port of this machine):
  manifest, one request, 497 MB generated and streamed into the parameters' own storage.

Printed: best and median seconds of each side and the median of the per-round ratios
anchor/ours (≥ 1.0: ours is at least as fast; issue 10's target).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
from tensorinit import Client
from torch import nn

from bench.server import server

THREADS = 2


class _Attention(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.c_attn = nn.Linear(n, 3 * n)
        self.c_proj = nn.Linear(n, n)


class _MLP(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.c_fc = nn.Linear(n, 4 * n)
        self.c_proj = nn.Linear(4 * n, n)


class _Block(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n)
        self.attn = _Attention(n)
        self.ln_2 = nn.LayerNorm(n)
        self.mlp = _MLP(n)


class GPT(nn.Module):
    """nanoGPT's module tree and its init (model.py: GPT.__init__, _init_weights)."""

    def __init__(self, vocab: int = 50257, block: int = 1024, n_layer: int = 12, n_embd: int = 768):
        super().__init__()
        self.n_layer = n_layer
        wte = nn.Embedding(vocab, n_embd)
        self.transformer = nn.ModuleDict(
            {
                "wte": wte,
                "wpe": nn.Embedding(block, n_embd),
                "h": nn.ModuleList([_Block(n_embd) for _ in range(n_layer)]),
                "ln_f": nn.LayerNorm(n_embd),
            }
        )
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.tie()

    def tie(self) -> None:
        """nanoGPT's weight tying (again after ``to_empty``, which makes every parameter anew)."""
        self.transformer["wte"].weight = self.lm_head.weight

    def nanogpt_init(self) -> None:
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int, default=None, help="loopback port of the service (default: a free one)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    with torch.device("meta"):
        model = GPT()
    model.to_empty(device="cpu")
    model.tie()
    params = sum(p.numel() for p in model.parameters())
    print(f"GPT-2 small (nanoGPT tree): {params / 1e6:.1f}M float32 parameters, {os.cpu_count()} cores, torch threads {THREADS}")

    with server("service.api.app:create_app", args.port) as (url, _), Client(url) as client:

        def ours() -> float:
            t0 = time.perf_counter()
            client.init_module(model, recipe="gpt2", recipe_params={"n_layer": model.n_layer}, seed=0)
            return time.perf_counter() - t0

        def anchor() -> float:
            t0 = time.perf_counter()
            model.nanogpt_init()
            return time.perf_counter() - t0

        ours(), anchor()  # warm-up: kernels, connection, page faults of the parameters
        rounds = [(ours(), anchor()) for _ in range(args.rounds)]
        t0 = time.perf_counter()
        plan = client.plan_module(model, recipe="gpt2", recipe_params={"n_layer": model.n_layer})
        planning = time.perf_counter() - t0
    mine, theirs = [o for o, _ in rounds], [a for _, a in rounds]
    ratio = statistics.median(a / o for o, a in rounds)
    print(f"{'side':<40} {'best s':>8} {'median s':>9}")
    print(f"{'tensorinit init_module(recipe=gpt2)':<40} {min(mine):8.3f} {statistics.median(mine):9.3f}")
    print(f"{'nanoGPT _init_weights (torch CPU)':<40} {min(theirs):8.3f} {statistics.median(theirs):9.3f}")
    print(f"{'of which: POST /plan alone (manifest, resolution)':<40} {planning:8.3f}  ({len(plan.specs)} tensors, nothing generated)")
    verdict = "PASS" if ratio >= 1.0 else "MISS"
    print(
        f"ratio anchor/ours, median of {args.rounds} rounds: {ratio:.2f}x (best/best {min(theirs) / min(mine):.2f}x), target >= 1.0x: {verdict}"
    )


if __name__ == "__main__":
    main()
