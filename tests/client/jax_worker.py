"""JAX sharded arrays from tensorinit, on 8 host CPU devices (run with XLA_FLAGS=--xla_force_host_platform_device_count=8).

``python -m tests.client.jax_worker URL``: for 1-D and 2-D meshes, ``init_tree(shardings=...)``
and ``init(sharding=...)`` must give ``jax.Array``s whose bytes equal the unsharded
``init_tree``/``init``, with each distinct shard fetched once (replicas share a fetch).
Prints "meshes ok" when every check passed.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tensorinit import Client
from tensorinit._distributed import shard_rounds

TREE: dict[str, dict[str, tuple[int, ...]]] = {"Dense_0": {"kernel": (64, 48), "bias": (48,)}, "Embed_0": {"embedding": (56, 64)}}
P: Any = PartitionSpec  # jax leaves its constructor untyped
KINDS = {"Dense_*": "linear", "Embed_0": "embedding"}


def shardings(mesh: Mesh) -> dict[str, dict[str, NamedSharding]]:
    if len(mesh.axis_names) == 1:
        (x,) = mesh.axis_names
        return {
            "Dense_0": {"kernel": NamedSharding(mesh, P(None, x)), "bias": NamedSharding(mesh, P())},
            "Embed_0": {"embedding": NamedSharding(mesh, P(x, None))},
        }
    data, model = mesh.axis_names
    return {
        "Dense_0": {"kernel": NamedSharding(mesh, P(data, model)), "bias": NamedSharding(mesh, P(model))},
        "Embed_0": {"embedding": NamedSharding(mesh, P(None, model))},
    }


def main() -> None:
    url = sys.argv[1]
    devices = np.array(jax.devices())
    assert devices.size == 8, devices
    with Client(url) as client:
        reference = client.init_tree(TREE, KINDS, recipe="flax", seed=3)
        for shape, names in (((8,), ("x",)), ((2, 4), ("data", "model")), ((4, 2), ("data", "model"))):
            mesh = Mesh(devices.reshape(shape), names)
            sharded = shardings(mesh)
            got = client.init_tree(TREE, KINDS, recipe="flax", seed=3, shardings=sharded)
            for module, leaves in reference.items():
                for leaf, value in leaves.items():
                    array = got[module][leaf]
                    assert isinstance(array, jax.Array), (module, leaf)
                    assert array.sharding == sharded[module][leaf]
                    assert np.asarray(array).tobytes() == value.tobytes(), (shape, module, leaf)
            # Replicas share a fetch: the rounds are the most distinct shards any one tensor has.
            flat = {f"{m}.{k}": s for m, d in sharded.items() for k, s in d.items()}
            sizes: dict[str, tuple[int, ...]] = {f"{m}.{k}": shape for m, d in TREE.items() for k, shape in d.items()}
            distinct = max(len({str(i) for i in s.addressable_devices_indices_map(sizes[n]).values()}) for n, s in flat.items())
            assert len(shard_rounds(sizes, flat)) == distinct
            whole = client.init("he_normal", (64, 48), seed=1, name="w")
            one = client.init("he_normal", (64, 48), seed=1, name="w", sharding=sharded["Dense_0"]["kernel"])
            assert isinstance(one, jax.Array) and np.asarray(one).tobytes() == whole.tobytes()
            with pytest.raises(TypeError, match="sharding= and slice="):  # the sharding's shards are the slices: not dropped
                client.init("he_normal", (64, 48), seed=1, name="w", slice="0:8,:", sharding=sharded["Dense_0"]["kernel"])
        replicated = NamedSharding(Mesh(devices, ("x",)), P())
        assert len(shard_rounds({"b": (48,)}, {"b": replicated})) == 1  # 8 devices, one fetch
    print("meshes ok")


if __name__ == "__main__":
    main()
