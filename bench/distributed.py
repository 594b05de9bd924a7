"""A ~100M-parameter model filled by 4 FSDP ranks against 1 process, and against torch's own DTensor init.

    python -m bench.distributed [--ranks 4] [--layers 6] [--dim 1024]

The model: an embedding (25000 × dim) and ``layers`` blocks of q/k/v/o (dim × dim) and an
MLP (dim → 4·dim → dim) with LayerNorms, float32: 101M parameters at the defaults. It is
built on the meta device, sharded (FSDP2 ``fully_shard`` per block and at the root,
over all ranks of a gloo job on this machine's CPU) and materialized with ``to_empty``,
so that construction is not timed. Then, side by side in one run:

- one process filling the whole unsharded model with ``init_module(recipe="torch")``;
- ``ranks`` processes each filling their shard with the same call (each fetches only
  its rows; the server is a ``make run``-style subprocess); time from a barrier to the
  last rank's end, and the bytes the server streamed (``/metrics``);
- torch's own DTensor init on the same sharded model (``reset_parameters()`` of every
  module: DTensor random ops through its RNG tracker), the same barriers.

Printed: seconds of each, the ratios, and whether the sharded and unsharded models are the
same (ours: byte-identical by construction, checked on the gathered ``full_tensor()``;
torch's: layout-dependent, pytorch#168058). The ranks share this machine's two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch
import torch.distributed as dist
from torch import nn

from bench.server import free_port, server

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 25000


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.mlp_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)


class Model(nn.Module):
    def __init__(self, layers: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.layers = nn.ModuleList(Block(dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)


def served(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("tensorinit_bytes_generated_total "):
            return float(line.split()[1])
    return 0.0


def torch_init(model: nn.Module) -> None:
    """torch's own init: every module's reset_parameters() (on DTensors, through DTensor's RNG tracker)."""
    with torch.no_grad():
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def digest(model: nn.Module) -> str:
    """sha256 over every parameter's full tensor, in order (a collective for DTensors)."""
    from torch.distributed.tensor import DTensor

    h = hashlib.sha256()
    for _, p in model.named_parameters():
        value = p.full_tensor() if isinstance(p, DTensor) else p.detach()
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def rank_main(url: str, layers: int, dim: int) -> None:
    from tensorinit import Client
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))

    def sharded() -> nn.Module:
        with torch.device("meta"):
            model = Model(layers, dim)
        for block in model.layers:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        model.to_empty(device="cpu")
        return model

    result: dict[str, object] = {}
    model = sharded()
    with Client(url, timeout=600) as client:
        dist.barrier()
        before = served(url) if rank == 0 else 0.0
        dist.barrier()  # no rank starts before the count is read
        start = time.perf_counter()
        client.init_module(model, recipe="torch", seed=0)
        dist.barrier()
        result["ours_s"] = time.perf_counter() - start
        if rank == 0:
            result["ours_bytes"] = served(url) - before
    result["ours_sha256"] = digest(model)
    model = sharded()
    torch.manual_seed(0)
    dist.barrier()
    start = time.perf_counter()
    torch_init(model)
    dist.barrier()
    result["torch_s"] = time.perf_counter() - start
    result["torch_sha256"] = digest(model)
    if rank == 0:
        print(json.dumps(result), flush=True)
    dist.destroy_process_group()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--rank-of", default=None, help=argparse.SUPPRESS)  # internal: run as one rank against this URL
    args = parser.parse_args()
    if args.rank_of:
        rank_main(args.rank_of, args.layers, args.dim)
        return
    from tensorinit import Client

    torch.set_num_threads(2)
    with server("service.api.app:create_app") as (url, _):
        with torch.device("meta"):
            whole = Model(args.layers, args.dim)
        whole.to_empty(device="cpu")
        params = sum(p.numel() for p in whole.parameters())
        with Client(url, timeout=600) as client:
            client.init_module(whole, recipe="torch", seed=0)  # warm: kernels, buffers, connections
            before = served(url)
            start = time.perf_counter()
            client.init_module(whole, recipe="torch", seed=0)
            one_s = time.perf_counter() - start
            one_bytes = served(url) - before
        one_sha = digest(whole)
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={args.ranks}",
            "--master-addr=127.0.0.1",
            f"--master-port={free_port()}",
            "-m",
            "bench.distributed",
            f"--layers={args.layers}",
            f"--dim={args.dim}",
            f"--rank-of={url}",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        ranks = json.loads(done.stdout.strip().splitlines()[-1])
    torch.manual_seed(0)
    torch_init(whole)
    torch_one_sha = digest(whole)
    print(f"model: {params / 1e6:.1f}M float32 parameters ({params * 4 / 1e6:.0f} MB); {args.ranks} FSDP ranks on {os.cpu_count()} cores")
    print(f"ours, 1 process, whole model:      {one_s:7.2f} s   {one_bytes / 1e6:8.1f} MB served")
    print(f"ours, {args.ranks} ranks, each its shard:   {ranks['ours_s']:7.2f} s   {ranks['ours_bytes'] / 1e6:8.1f} MB served in all")
    print(f"torch DTensor init, {args.ranks} ranks:      {ranks['torch_s']:7.2f} s")
    print(f"ratio sharded/1-process (ours):    {ranks['ours_s'] / one_s:.2f}x time, {ranks['ours_bytes'] / one_bytes:.3f}x bytes")
    print(f"ratio torch/ours ({args.ranks} ranks):        {ranks['torch_s'] / ranks['ours_s']:.2f}x")
    print(f"same model as 1 process: ours {ranks['ours_sha256'] == one_sha}, torch {ranks['torch_sha256'] == torch_one_sha}")


if __name__ == "__main__":
    main()
