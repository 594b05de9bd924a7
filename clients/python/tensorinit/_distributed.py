"""Parallel layouts: which slice of each full tensor a process holds, for torch and JAX.

tensorinit's elements are a function of (seed, name, global index), and any basic slice
of a tensor can be served alone with the bytes it has in the whole tensor. So a rank
that asks for exactly its shard ends up holding what an unsharded process holds at the
same indices, whatever the layout, the world size or the machine: no seed checkpoint to
write, and no rank fetches a tensor it does not hold.

torch: a DTensor's local shard follows from its ``placements`` over its ``device_mesh``,
applied left to right as DTensor itself does (``Shard(d)`` chunks like ``torch.chunk``,
the last chunks smaller or empty; ``_StridedShard``, which FSDP2 over tensor parallel
produces, chunks in the transposed order). :func:`dtensor_slices` computes the global
indices of every dim with the placements' own ``_split_tensor`` on index vectors, so it
follows DTensor's chunking exactly, uneven shards included, and it refuses a shard
that is not one basic slice (a set of indices that is not a step range) instead of
serving wrong bytes. :func:`chunk_shard` gives the ``shard=`` entry of a Megatron-style
plain tensor (a rank holds ``torch.chunk(full, world_size, dim)[rank]``).

JAX: :func:`jax_index_slices` turns the index tuple that ``jax.make_array_from_callback``
passes (one ``slice`` per axis) into the same slice text.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import torch

Shard = Mapping[str, tuple[Sequence[int], str | Sequence[str]]]


def _slice_text(indices: Sequence[int], dim: int) -> str | None:
    """``"start:stop[:step]"`` selecting exactly ``indices`` of an axis of length ``dim``, or None when no basic slice does."""
    n = len(indices)
    if n == 0:
        return "0:0"
    start = indices[0]
    if n == 1:
        return f"{start}:{start + 1}"
    step = indices[1] - indices[0]
    if step < 1 or any(b - a != step for a, b in itertools.pairwise(indices)):
        return None
    stop = indices[-1] + 1
    return f"{start}:{stop}" if step == 1 else f"{start}:{stop}:{step}"


def chunk_shard(shape: Sequence[int], dim: int, rank: int, world_size: int) -> tuple[tuple[int, ...], str]:
    """The ``shard=`` entry of a rank that holds ``torch.chunk(full, world_size, dim)[rank]`` of a ``shape`` tensor.

    Megatron-style layers split a weight along one dim: ``ColumnParallelLinear`` on dim 0,
    ``RowParallelLinear`` on dim 1. ``torch.chunk`` makes chunks of ceil(n / world_size)
    elements, so the last ranks may hold fewer, or none (an empty slice, filled with
    nothing). Returns (the full shape, the slice text), as ``init_module(shard={name: ...})`` takes.
    """
    full = tuple(int(d) for d in shape)
    if not full:
        raise ValueError("chunk_shard: a rank-0 tensor cannot be split")
    if not -len(full) <= dim < len(full):
        raise ValueError(f"chunk_shard: dim {dim} is out of range for shape {list(full)}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"chunk_shard: rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
    dim %= len(full)
    n = full[dim]
    size = -(-n // world_size) if n else 0
    lo, hi = min(rank * size, n), min((rank + 1) * size, n)
    items = [":"] * len(full)
    items[dim] = f"{lo}:{hi}"
    return full, ",".join(items)


def is_dtensor(tensor: object) -> bool:
    """Whether ``tensor`` is a torch DTensor (without importing torch.distributed when it is not loaded)."""
    import sys  # noqa: PLC0415

    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def dtensor_slices(name: str, tensor: Any) -> str | None:
    """The slice of the full tensor that this rank's ``tensor.to_local()`` holds, as slice text.

    None when this rank holds none of it: it is outside the tensor's mesh, or its shard is
    empty (DTensor's chunking leaves the last ranks nothing when a dim is shorter than
    the mesh; FSDP2 then keeps a local tensor of shape (0, ...) whatever the other dims).
    Raises ``ValueError`` naming the parameter and its placements when the local shard
    is not one basic slice, or when a placement holds no plain values (``Partial``).
    """
    import torch  # noqa: PLC0415 -- optional extra
    from torch.distributed.tensor import Replicate  # noqa: PLC0415
    from torch.distributed.tensor import Shard as TorchShard  # noqa: PLC0415
    from torch.distributed.tensor.placement_types import _StridedShard  # noqa: PLC0415

    mesh = tensor.device_mesh
    placements = tuple(tensor.placements)
    shape = tuple(int(d) for d in tensor.shape)
    coordinate = mesh.get_coordinate()
    if coordinate is None:  # as torch's compute_local_shape_and_global_offset: nothing here
        return None
    indices = [torch.arange(d) for d in shape]
    for mesh_dim, placement in enumerate(placements):
        if isinstance(placement, Replicate):
            continue
        # The placement's own chunking on this dim's index vector: DTensor's rule, uneven shards included.
        # (_StridedShard is not a subclass of Shard.)
        if isinstance(placement, _StridedShard):
            one: Any = _StridedShard(0, split_factor=placement.split_factor)
        elif isinstance(placement, TorchShard):
            one = TorchShard(0)
        else:  # Partial: the local values are summands, not elements
            raise ValueError(
                f"{name}: placements {placements} hold partial sums on mesh dim {mesh_dim}; only Shard and Replicate are filled"
            )
        dim = placement.dim % len(shape)
        chunks, _ = one._split_tensor(indices[dim], mesh.size(mesh_dim), with_padding=False, contiguous=True)
        indices[dim] = chunks[coordinate[mesh_dim]]
    local = tuple(int(d) for d in tensor.to_local().shape)
    expected = tuple(len(i) for i in indices)
    if math.prod(expected) == 0 and math.prod(local) == 0:
        return None
    items: list[str] = []
    for dim, (index, full) in enumerate(zip(indices, shape, strict=True)):
        text = _slice_text([int(i) for i in index.tolist()], full)
        if text is None:
            raise ValueError(
                f"{name}: its local shard under placements {placements} on mesh {tuple(mesh.shape)} is not one basic slice "
                f"(dim {dim} holds indices {index.tolist()[:8]}...): tensorinit serves basic slices only"
            )
        items.append(text)
    if local != expected:  # a placement whose chunking this module does not follow: never fill wrong bytes
        raise ValueError(f"{name}: placements {placements} give a local shape {expected}, but the local tensor is {local}")
    return ",".join(items)


class Localized(NamedTuple):
    """What :func:`localize` makes of a module's tensors for this rank."""

    tensors: dict[str, torch.Tensor]
    """name → the tensor to fill: a DTensor's local tensor, a plain tensor itself."""
    shards: dict[str, tuple[tuple[int, ...], str]]
    """name → (full shape, slice) of every tensor this rank holds a part of."""
    empty: dict[str, tuple[int, ...]]
    """name → full shape of every DTensor this rank holds nothing of (nothing to fetch or fill)."""


def localize(targets: Mapping[str, torch.Tensor], shard: Shard | None) -> Localized:
    """DTensors replaced by their local tensors, and the shard map: ``shard`` plus every DTensor's (full shape, slice).

    A DTensor whose local shard is the whole tensor (replicated everywhere) is requested whole.
    """
    local: dict[str, torch.Tensor] = {}
    shards: dict[str, tuple[tuple[int, ...], str]] = {}
    empty: dict[str, tuple[int, ...]] = {}
    given = dict(shard or {})
    for name, tensor in targets.items():
        if is_dtensor(tensor):
            if name in given:
                raise ValueError(f"shard names {name}, a DTensor: its shard comes from its placements")
            full = tuple(int(d) for d in tensor.shape)
            part = dtensor_slices(name, tensor)
            if part is None:
                empty[name] = full
                continue
            local[name] = tensor.to_local()  # type: ignore[attr-defined]  # a DTensor
            if any(item != f"0:{d}" for item, d in zip(part.split(","), full, strict=True)):
                shards[name] = (full, part)
        else:
            local[name] = tensor
    for name, (full_shape, given_part) in given.items():
        shards[name] = (tuple(int(d) for d in full_shape), given_part if isinstance(given_part, str) else ",".join(given_part))
    return Localized(local, shards, empty)


def jax_index_slices(index: Sequence[slice], shape: Sequence[int]) -> str:
    """The slice text of the index tuple ``jax.make_array_from_callback`` passes for one shard."""
    items = []
    for axis, dim in enumerate(shape):
        sl = index[axis] if axis < len(index) else slice(None)
        start, stop, step = sl.indices(int(dim))
        items.append(f"{start}:{stop}" if step == 1 else f"{start}:{stop}:{step}")
    return ",".join(items)


def shard_rounds(shapes: Mapping[str, Sequence[int]], shardings: Mapping[str, Any]) -> list[dict[str, str | None]]:
    """The requests that fetch every distinct addressable shard once: round r maps each name to its r-th slice.

    ``shardings`` maps a name to a ``jax.sharding.Sharding`` (or None: the whole tensor).
    Devices of this process that hold the same index (replicas) share one fetch. A name
    that has no r-th slice is absent from round r; None is the whole tensor.
    """
    distinct: dict[str, list[str | None]] = {}
    for name, shape in shapes.items():
        sharding = shardings.get(name)
        if sharding is None:
            distinct[name] = [None]
            continue
        seen: list[str | None] = []
        for index in sharding.addressable_devices_indices_map(tuple(shape)).values():
            text = jax_index_slices(index or (), shape)
            if text not in seen:
                seen.append(text)
        distinct[name] = seen
    rounds = max((len(v) for v in distinct.values()), default=0)
    return [{name: parts[r] for name, parts in distinct.items() if r < len(parts)} for r in range(rounds)]


def empty_slice(shape: Sequence[int]) -> str | None:
    """A slice that selects nothing (so a manifest entry costs no bytes in a round that does not need it); None for rank 0."""
    return ",".join(["0:0"] + [":"] * (len(shape) - 1)) if len(shape) else None


def make_jax_array(shape: Sequence[int], sharding: Any, pieces: Mapping[str | None, Any]) -> Any:
    """``jax.make_array_from_callback`` over the fetched ``pieces`` (slice text → numpy array) of one tensor."""
    import jax  # noqa: PLC0415 -- optional extra

    full = tuple(int(d) for d in shape)
    return jax.make_array_from_callback(full, sharding, lambda index: pieces[jax_index_slices(index or (), full)])
