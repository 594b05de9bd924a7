"""One rank of a torch.distributed job (gloo, CPU) that fills a sharded transformers Mixtral by ``init_module(recipe="transformers")``.

Run as ``python -m tests.client.hf_distributed_worker URL OUT CONFIG_JSON`` under torchrun.
Layouts, each built on the meta device, sharded, then ``to_empty``'d:

- ``fsdp``: FSDP2 ``fully_shard`` of every decoder layer and of the model: every
  parameter ``Shard(0)``, so a rank holds half of the experts of each fused
  ``gate_up_proj`` / ``down_proj`` (and half the rows of everything else);
- ``tp_experts``: the fused expert parameters as DTensors sharded across the slices the
  on-disk tensors are cut from (``gate_up_proj`` on dim 1, where w1 and w3 meet;
  ``down_proj`` on dim 2), the rest plain.

Rank 0 saves every parameter's full tensor to ``OUT/<layout>.safetensors``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import transformers
from safetensors.torch import save_file
from tensorinit import Client
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard, distribute_tensor


def build(layout: str, config: dict[str, Any], world: int) -> Any:
    mesh = init_device_mesh("cpu", (world,))
    with torch.device("meta"):
        model = transformers.MixtralForCausalLM._from_config(transformers.AutoConfig.for_model(**config))  # type: ignore[no-untyped-call]
    if layout == "fsdp":
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    elif layout == "tp_experts":
        for layer in model.model.layers:
            experts = layer.mlp.experts
            experts.gate_up_proj = nn.Parameter(distribute_tensor(experts.gate_up_proj, mesh, [Shard(1)]))
            experts.down_proj = nn.Parameter(distribute_tensor(experts.down_proj, mesh, [Shard(2)]))
    else:
        raise ValueError(layout)
    model.to_empty(device="cpu")
    return model


def main() -> None:
    url, out, config = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    try:
        with Client(url, timeout=120) as client:
            for layout in ("fsdp", "tp_experts"):
                model = build(layout, config, world)
                client.init_module(model, recipe="transformers", seed=7)
                values = {}
                for name, param in model.named_parameters():
                    value = param.full_tensor() if isinstance(param, DTensor) else param.detach()
                    values[name] = value.detach().contiguous().clone()
                if dist.get_rank() == 0:
                    save_file(values, str(out / f"{layout}.safetensors"))
                dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)  # gloo's threads can hold the interpreter's exit for seconds


if __name__ == "__main__":
    main()
