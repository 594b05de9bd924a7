"""One rank of a torch.distributed job (gloo, CPU) that fills a sharded model with tensorinit.

Run as ``python -m tests.client.distributed_worker URL OUT LAYOUT[,LAYOUT...]`` under the
environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). For each layout
it builds :class:`Block` on the meta device, parallelizes it, materializes it with
``to_empty`` and calls ``init_module`` three times (by the recipe ``torch``, by rules, and by the recipe through
``AsyncClient``);
after each, every parameter's ``full_tensor()`` is gathered and rank 0 saves them to
``OUT/<layout>-<how>.safetensors`` for the test to compare with one unsharded process.

Layouts: ``tp`` (tensor parallel over all ranks: colwise q/k/v/fc1 and the embedding,
rowwise o/fc2, SequenceParallel norms), ``fsdp`` (FSDP2 ``fully_shard`` over all
ranks), ``fsdp_tp`` (a 2-D (dp, tp) mesh: tensor parallel on tp, then ``fully_shard``
on dp; ``_StridedShard`` placements appear), ``hsdp`` (replicate × shard), ``dtensor_random``
(torch's own DTensor random init with ``Shard(0)``, to show the problem we solve).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from tensorinit import AsyncClient, Client
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel, parallelize_module

from tests.metrics import sample, scrape

# Sizes that 2 and 4 do not divide, so uneven shards (DTensor's torch.chunk rule) are exercised.
VOCAB, DIM, HIDDEN = 1002, 256, 726
RULES: dict[str, Any] = {
    "*norm.weight": "ones",
    "*.bias": "zeros",
    "embed.weight": {"scheme": "normal", "std": 0.02},
    "*": {"scheme": "he_normal"},
}


class Block(nn.Module):
    """A small transformer block: embedding, separate q/k/v/o projections, MLP, norms, and a tiny head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.attn_norm = nn.LayerNorm(DIM)
        self.q = nn.Linear(DIM, DIM)
        self.k = nn.Linear(DIM, DIM, bias=False)
        self.v = nn.Linear(DIM, DIM, bias=False)
        self.o = nn.Linear(DIM, DIM)
        self.mlp_norm = nn.LayerNorm(DIM)
        self.fc1 = nn.Linear(DIM, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, DIM)
        # 3 rows over 4 ranks: FSDP leaves the last rank an empty shard; tensor parallel leaves it a plain tensor.
        self.head = nn.Linear(DIM, 3)
        # One input column under RowwiseParallel: tensor parallel leaves all but one rank an empty (2, 0) shard,
        # which FSDP2 over it then holds as (0, 0); those ranks have nothing to fetch.
        self.gate = nn.Linear(1, 2)


def tp_plan(gate: bool = True) -> dict[str, object]:
    plan: dict[str, object] = {
        "embed": RowwiseParallel(input_layouts=Replicate()),
        "attn_norm": SequenceParallel(),
        "q": ColwiseParallel(),
        "k": ColwiseParallel(),
        "v": ColwiseParallel(),
        "o": RowwiseParallel(),
        "mlp_norm": SequenceParallel(),
        "fc1": ColwiseParallel(),
        "fc2": RowwiseParallel(),
    }
    if gate:
        plan["gate"] = RowwiseParallel()
    return plan


def build(layout: str, world: int) -> nn.Module:
    with torch.device("meta"):
        model = Block()
    if layout == "tp":
        parallelize_module(model, init_device_mesh("cpu", (world,)), tp_plan())  # type: ignore[arg-type]
    elif layout == "fsdp":
        fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    elif layout == "fsdp_tp":
        mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
        # gate stays out of tensor parallel here: FSDP2 holds its empty TP shard as (0, 0), which torch's own
        # full_tensor() then cannot gather; filling such a shard is checked apart, in empty_shards().
        parallelize_module(model, mesh["tp"], tp_plan(gate=False))  # type: ignore[arg-type]
        fully_shard(model, mesh=mesh["dp"])
    elif layout == "hsdp":
        fully_shard(model, mesh=init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("replicate", "shard")))
    else:
        raise ValueError(layout)
    model.to_empty(device="cpu")
    return model


def empty_shards(client: Client, world: int) -> None:
    """FSDP2 over a TP shard with no columns (a (0, 0) local tensor) is filled with nothing, by rules and by recipe."""
    mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
    for how in ("recipe", "rules"):
        with torch.device("meta"):
            model = nn.Sequential(nn.Linear(1, 2))
        parallelize_module(model, mesh["tp"], {"0": RowwiseParallel()})
        fully_shard(model, mesh=mesh["dp"])
        model.to_empty(device="cpu")
        names = client.init_module(model, recipe="torch", seed=7) if how == "recipe" else client.init_module(model, RULES, seed=7)
        assert "0.bias" in names


def full(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, param in model.named_parameters():
        value = param.full_tensor() if isinstance(param, DTensor) else param.detach()
        out[name] = value.detach().contiguous().clone()
    return out


def torch_random(world: int) -> dict[str, torch.Tensor]:
    """torch's own DTensor random init of an (8, 8) weight sharded on dim 0, seeded the same on every rank."""
    torch.manual_seed(0)
    mesh = init_device_mesh("cpu", (world,))
    weight = distribute_tensor(torch.empty(8, 8), mesh, [Shard(0)])
    nn.init.normal_(weight)
    return {"weight": weight.full_tensor().contiguous()}


async def fill_async(url: str, model: nn.Module) -> None:
    """The async twin, by recipe: the same shards, the same bytes."""
    async with AsyncClient(url, timeout=120) as client:
        await client.init_module(model, recipe="torch", seed=7)


def served_bytes(url: str) -> float:
    """The server's count of tensor-file bytes streamed so far (``/metrics``)."""
    return sample(scrape(url), "tensorinit_bytes_generated_total")


def replicated_bytes(model: nn.Module, world: int) -> int:
    """Σ over parameters of (full bytes × how many ranks hold each element): what the ranks together must fetch."""
    total = 0
    for param in model.parameters():
        full = param.numel() * param.element_size()
        if isinstance(param, DTensor):
            copies = 1
            for mesh_dim, placement in enumerate(param.placements):
                if isinstance(placement, Replicate):
                    copies *= param.device_mesh.size(mesh_dim)
            total += full * copies
        else:
            total += full * world
    return total


def main() -> None:
    url, out, layouts = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    traffic: dict[str, dict[str, float]] = {}
    try:
        with Client(url, timeout=120) as client:
            for layout in layouts:
                if layout == "dtensor_random":
                    results = {"dtensor_random": torch_random(world)}
                else:
                    results = {}
                    for how in ("recipe", "rules", "async"):
                        model = build(layout, world)
                        dist.barrier()
                        before = served_bytes(url) if rank == 0 else 0.0
                        dist.barrier()
                        if how == "recipe":
                            client.init_module(model, recipe="torch", seed=7)
                        elif how == "rules":
                            client.init_module(model, RULES, seed=7)
                        else:
                            asyncio.run(fill_async(url, model))
                        dist.barrier()
                        if rank == 0:
                            traffic[f"{layout}-{how}"] = {"served": served_bytes(url) - before, "bound": replicated_bytes(model, world)}
                        results[f"{layout}-{how}"] = full(model)
                if layout == "tp":  # a DTensor is no out= for init: refused before any request
                    weight: Any = build(layout, world).get_parameter("q.weight")
                    with pytest.raises(TypeError, match="out= is a DTensor"):
                        client.init("zeros", tuple(weight.shape), name="q.weight", out=weight)
                if layout == "fsdp_tp":
                    empty_shards(client, world)
                if rank == 0:
                    for key, tensors in results.items():
                        save_file(tensors, str(out / f"{key}-w{world}.safetensors"))
                dist.barrier()
        if rank == 0:
            (out / f"traffic-w{world}.json").write_text(json.dumps(traffic))
    finally:
        dist.destroy_process_group()
    os._exit(0)  # gloo's threads can hold the interpreter's exit for seconds


if __name__ == "__main__":
    main()
