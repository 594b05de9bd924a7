"""Any parallel layout, the same model: real torch.distributed ranks (gloo, CPU) and JAX sharded arrays.

Each rank of a ``torch.distributed.run`` job (tests/client/distributed_worker.py) fills
its shard of a small transformer block, laid out as tensor parallel, FSDP2, FSDP × TP
(``_StridedShard``) or HSDP, by a recipe and by rules; rank 0 saves every parameter's
``full_tensor()``. Every layout and world size must give the bytes of one unsharded
process, while the ranks together fetch no more than the model's bytes times each
parameter's replication (no rank fetched a full tensor it shards). torch's own DTensor
random init, run in the same jobs, gives a different model for every world size.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorinit import Client, chunk_shard

from service.api.app import create_app
from service.api.settings import Settings
from tests.client.distributed_worker import RULES, Block
from tests.conftest import LiveServer, start_server, stop_server
from tests.metrics import scrape, total

ROOT = Path(__file__).resolve().parents[2]
HEADERS = 16 * 1024  # allowance per rank and request for the safetensors header and its metadata
LAYOUTS = {1: ["tp", "fsdp", "dtensor_random"], 2: ["tp", "fsdp", "dtensor_random"], 4: ["tp", "fsdp", "fsdp_tp", "hsdp", "dtensor_random"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    """A server of its own, so that its byte counter sees only these jobs."""
    live = start_server(create_app(Settings()))
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture(scope="module")
def jobs(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the 1-, 2- and 4-rank jobs once; their outputs land in one directory."""
    out = tmp_path_factory.mktemp("ranks")
    for world, layouts in LAYOUTS.items():
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={world}",
            "--master-addr=127.0.0.1",
            f"--master-port={free_port()}",
            "-m",
            "tests.client.distributed_worker",
            server.url,
            str(out),
            ",".join(layouts),
        ]
        done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"world {world}: {done.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def reference(server: LiveServer) -> dict[str, dict[str, torch.Tensor]]:
    """One unsharded process: the model every layout must reproduce."""
    out = {}
    with Client(server.url) as client:
        for how in ("recipe", "rules"):
            model = Block()
            if how == "recipe":
                client.init_module(model, recipe="torch", seed=7)
            else:
                client.init_module(model, RULES, seed=7)
            out[how] = {name: p.detach().clone() for name, p in model.named_parameters()}
    out["async"] = out["recipe"]  # the async twin must give what the sync one gives
    return out


CASES = [
    (world, layout, how)
    for world, layouts in LAYOUTS.items()
    for layout in layouts
    if layout != "dtensor_random"
    for how in ("recipe", "rules", "async")
]


@pytest.mark.parametrize(("world", "layout", "how"), CASES, ids=[f"{w}-{lay}-{h}" for w, lay, h in CASES])
def test_every_layout_is_the_unsharded_model(
    jobs: Path, reference: dict[str, dict[str, torch.Tensor]], world: int, layout: str, how: str
) -> None:
    got = load_file(str(jobs / f"{layout}-{how}-w{world}.safetensors"))
    assert set(got) == set(reference[how])
    differ = [name for name, value in reference[how].items() if value.numpy().tobytes() != got[name].numpy().tobytes()]
    assert not differ, f"{layout} on {world} ranks ({how}) differs from one process in {differ}"


@pytest.mark.parametrize(("world", "layout", "how"), CASES, ids=[f"{w}-{lay}-{h}" for w, lay, h in CASES])
def test_ranks_fetch_only_their_shards(jobs: Path, world: int, layout: str, how: str) -> None:
    traffic = json.loads((jobs / f"traffic-w{world}.json").read_text())[f"{layout}-{how}"]
    assert 0 < traffic["served"] <= traffic["bound"] + world * HEADERS, traffic
    if layout in ("fsdp", "fsdp_tp") and world > 1:  # fully sharded: far less than every rank fetching the model
        model_bytes = sum(p.numel() * 4 for p in Block().parameters())
        assert traffic["served"] < model_bytes + world * HEADERS


def test_torch_dtensor_random_init_depends_on_the_layout(jobs: Path) -> None:
    """The problem solved: torch's own DTensor random init gives another model for 1, 2 and 4 ranks."""
    drawn = {world: load_file(str(jobs / f"dtensor_random-w{world}.safetensors"))["weight"] for world in LAYOUTS}
    assert not torch.equal(drawn[1], drawn[2])
    assert not torch.equal(drawn[2], drawn[4])


CHUNKS = [((10, 3), 0, 4), ((10, 3), 1, 2), ((3, 8), 0, 4), ((7,), 0, 3), ((0, 4), 0, 2), ((6, 9, 2), -2, 4)]


@pytest.mark.parametrize(("shape", "dim", "world"), CHUNKS)
def test_chunk_shard_is_torch_chunk(shape: tuple[int, ...], dim: int, world: int) -> None:
    """Megatron-style partitions: the slice of rank r is torch.chunk(full, world, dim)[r], empty past the chunks."""
    full = torch.arange(int(np.prod(shape))).reshape(shape)
    chunks = torch.chunk(full, world, dim)
    for rank in range(world):
        got_shape, part = chunk_shard(shape, dim, rank, world)
        assert got_shape == shape
        index = tuple(slice(*(int(x) for x in item.split(":"))) if item != ":" else slice(None) for item in part.split(","))
        expected = chunks[rank] if rank < len(chunks) else full.narrow(dim, 0, 0)
        assert torch.equal(full[index], expected), (rank, part)


@pytest.mark.parametrize(
    ("args", "message"),
    [(((4, 4), 2, 0, 2), "dim 2 is out of range"), (((4, 4), 0, 2, 2), "rank 2 is not in 0..1"), (((), 0, 0, 1), "rank-0")],
)
def test_chunk_shard_refuses_what_it_cannot_split(args: tuple[tuple[int, ...], int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chunk_shard(*args)


def test_megatron_partitions_fill_the_unsharded_tensor(live_url: str) -> None:
    """Plain tensors of a column- and a row-parallel layer, one "rank" at a time: together, the whole weight."""
    world = 3
    with Client(live_url) as client:
        whole = torch.nn.Linear(10, 7)
        client.init_module(whole, recipe="torch", seed=5)
        for dim in (0, 1):
            pieces = []
            for rank in range(world):
                part = torch.nn.Linear(10, 7)
                part.weight = torch.nn.Parameter(torch.chunk(torch.empty(7, 10), world, dim)[rank].clone())
                client.init_module(part, recipe="torch", seed=5, shard={"weight": chunk_shard((7, 10), dim, rank, world)})
                pieces.append(part.weight.detach())
            assert torch.equal(torch.cat(pieces, dim), whole.weight.detach())


def test_jax_sharded_arrays_equal_the_unsharded_tree(live_url: str) -> None:
    """8 host devices, 1-D and 2-D meshes: the gathered jax.Arrays are the unsharded init_tree, byte for byte."""
    pytest.importorskip("jax")
    env = child_env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, "-m", "tests.client.jax_worker", live_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "meshes ok" in done.stdout


def test_sixteen_ranks_starting_at_once_all_succeed(tmp_path: Path) -> None:
    """16 ranks fetch their shards at the same moment from one server started as `make run` starts it: 0 failures.

    The server admits 4 generations at a time and answers the rest 503 with Retry-After
    once they have waited 2 s; the client's retries with backoff carry every rank through.
    """
    world, port = 16, free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "service.api.serve",
        "service.api.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**child_env(), "TENSORINIT_ACCESS_LOG": "off"}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        at = time.time() + 8  # every rank waits for the same instant, past their interpreters' start
        ranks = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.client.rank_start", url, str(rank), str(world), str(at)],
                cwd=ROOT,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for rank in range(world)
        ]
        outputs = [rank.communicate(timeout=240) for rank in ranks]
        failed = [(i, err[-2000:]) for i, (rank, (_, err)) in enumerate(zip(ranks, outputs, strict=True)) if rank.returncode != 0]
        assert not failed, failed
        refused = total(scrape(url), "tensorinit_rejected_requests_total")
        print(f"16 ranks: 0 failures; {refused:g} attempts refused and retried")
    finally:
        server.terminate()
        server.wait(30)
    # Two ranks' bytes against the engine's own slices of the same tensors.
    from service.core import generate, resolve
    from tests.client.rank_start import TENSORS

    for rank in (0, world - 1):
        served = json.loads(outputs[rank][0])
        digest = hashlib.sha256()
        for name, shape in TENSORS.items():
            part = chunk_shard(shape, 0, rank, world)[1]
            digest.update(generate(resolve("he_normal", shape, seed=1, name=name, slice=part)).tobytes())
        assert served["sha256"] == digest.hexdigest()
