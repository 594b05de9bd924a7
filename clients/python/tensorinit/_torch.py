"""Filling a ``torch.nn.Module`` in place from served tensors.

Which tensors: every floating-point parameter and (unless ``buffers=False``) every
floating-point buffer, under its ``named_parameters`` / ``named_buffers`` name, shared
parameters once. Integer and bool buffers, such as BatchNorm's ``num_batches_tracked``
(int64), are skipped without consulting the rules: no initializer scheme produces
integers, and a counter is state, not an initialization. Complex tensors are skipped too.

How: each tensor is requested in the dtype it already has (float32, float64, float16,
bfloat16), so the module ends up holding exactly the server's bytes; other floating
dtypes (float8) are requested as float32 and rounded by ``copy_``. Values are copied
under ``torch.no_grad()`` with ``Tensor.copy_``, which keeps each tensor's dtype, device,
``requires_grad`` and identity (optimizers holding references still see them). A module
built on the meta device is refused: ``to_empty(device=...)`` it first, then fill it.

Where it can, the sync and async clients skip that copy: a contiguous CPU tensor served in
its own dtype and shape, overlapping no other, receives its bytes straight into its own
storage (:func:`places`, a :class:`tensorinit._receive.ScatterSink`); its autograd version
counter is bumped as ``copy_`` would. So a transfer or ``verify`` failure after the header
may leave such tensors partly written (the call raises either way).

The same two paths serve ``init(out=tensor)`` (:func:`place_out`): straight into a
contiguous CPU tensor of the served dtype, else one buffer and ``copy_``. A result for
another device is staged in host tensors, pinned when CUDA is available, then copied
there once (:class:`Staging`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ._safetensors import Header

# torch dtype name -> service dtype
_SERVED = {"float32": "float32", "float64": "float64", "float16": "float16", "bfloat16": "bfloat16"}


def targets(module: torch.nn.Module, *, buffers: bool = True) -> dict[str, torch.Tensor]:
    """The tensors ``init_module`` may set, by name, in module order."""
    out: dict[str, torch.Tensor] = {}
    named: list[tuple[str, torch.Tensor]] = list(module.named_parameters())
    if buffers:
        named += list(module.named_buffers())
    for name, tensor in named:
        if tensor.is_meta:
            # copy_ into a meta tensor silently does nothing: the model would train from nothing.
            raise ValueError(f"{name} is on the meta device: materialize the module first, e.g. module.to_empty(device='cpu')")
        if tensor.dtype.is_floating_point:
            out[name] = tensor
    return out


Shard = Mapping[str, tuple[Sequence[int], str | Sequence[str]]]
"""name → (the full tensor's shape, the slice this process holds, e.g. ``"0:2048,:"``)."""


def batch_tensors(found: Mapping[str, torch.Tensor], rules: Any, shard: Shard | None) -> dict[str, dict[str, Any]]:
    """The batch request for ``found``: sharded names ask for ``full[slice]`` of their full shape.

    The served bytes of a shard equal that slice of the whole tensor, so every rank of a
    tensor-parallel or FSDP job fills its local piece and together they hold exactly
    the tensor one unsharded process would get.
    """
    from . import _rules  # noqa: PLC0415 -- keeps this module's import light

    shard = dict(shard or {})
    unknown = sorted(set(shard) - set(found))
    if unknown:
        raise ValueError(f"shard names tensors the module does not have: {unknown}")
    shapes = {name: tuple(shard[name][0]) if name in shard else tuple(t.shape) for name, t in found.items()}
    tensors = _rules.batch(shapes, rules, {name: served_dtype(t) for name, t in found.items()})
    for name, (_, part) in shard.items():
        if name in tensors:
            tensors[name]["slice"] = part if isinstance(part, str) else list(part)
    return tensors


def served_dtype(tensor: torch.Tensor) -> str:
    return _SERVED.get(str(tensor.dtype).removeprefix("torch."), "float32")


def places(targets: Mapping[str, torch.Tensor]) -> Callable[[Header], dict[str, memoryview]]:
    """For a :class:`ScatterSink`: the storage of each target that can take its served bytes as they are.

    A target qualifies when it is on the CPU, contiguous, served in its own dtype and
    shape, and shares no byte with another target (the bytes then equal what ``copy_``
    would leave); any other goes through the buffer and :func:`fill`'s ``copy_``.
    """
    import torch  # noqa: PLC0415 -- optional extra

    own = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16"}

    def place(header: Header) -> dict[str, memoryview]:
        fit: dict[str, torch.Tensor] = {}
        for name, entry in header.entries.items():
            t = targets.get(name)
            if (
                t is not None
                and t.device.type == "cpu"
                and t.is_contiguous()
                and own.get(t.dtype) == entry.dtype
                and tuple(t.shape) == entry.shape
                and not t.is_conj()
                and not t.is_neg()
            ):
                fit[name] = t
        spans = sorted((t.data_ptr(), t.data_ptr() + t.nbytes, name) for name, t in fit.items() if t.nbytes)
        shared: set[str] = set()
        reach, owner = 0, ""
        for begin, end, name in spans:  # by start: a span starting before the furthest end so far overlaps its owner
            if begin < reach:
                shared |= {name, owner}
            if end > reach:
                reach, owner = end, name
        with torch.no_grad():
            return {name: t.detach().reshape(-1).view(torch.uint8).numpy().data for name, t in fit.items() if name not in shared}

    return place


def fill(
    targets: Mapping[str, torch.Tensor], values: Mapping[str, Any], placed: Collection[str] = (), transposed: Collection[str] = ()
) -> list[str]:
    """Copy ``values`` into ``targets`` in place; returns the names set, in module order.

    ``placed`` names tensors whose bytes were received straight into their storage:
    nothing to copy, only their version counter to bump, as ``copy_`` does.
    ``transposed`` names 2-D targets stored as the transpose of what was served (a
    transformers ``Conv1D`` weight is (in, out); it was served as the (out, in) of a linear).
    """
    import torch  # noqa: PLC0415 -- optional extra; this module is only used with a module in hand

    done = []
    with torch.no_grad():
        for name, target in targets.items():
            if name not in values:
                continue
            value = values[name].t() if name in transposed else values[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{name}: served shape {tuple(value.shape)} differs from the module's {tuple(target.shape)}")
            if name in placed:
                torch.autograd.graph.increment_version(target)
            else:
                target.copy_(value)
            done.append(name)
    return done


def is_tensor(value: object) -> bool:
    """Whether ``value`` is a torch tensor; never imports torch (a tensor means it is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def place_out(out: torch.Tensor) -> Callable[[Header], dict[str, memoryview]]:
    """For ``init(out=tensor)``: the served tensor straight into ``out``'s storage when it can take the bytes as they are.

    The shape must be ``out``'s (checked against the header, before any data byte); the
    dtype may differ, and so may the device: then the bytes go through the buffer and
    ``copy_`` converts them, as :func:`places` decides.
    """
    from ._errors import IntegrityError  # noqa: PLC0415 -- keeps this module's import light

    def place(header: Header) -> dict[str, memoryview]:
        if len(header.entries) != 1:
            raise IntegrityError(f"expected one tensor, the body holds {sorted(header.entries)}")
        (entry,) = header.entries.values()
        if entry.shape != tuple(out.shape):
            raise ValueError(f"out: a tensor of shape {list(out.shape)}; the server sends {entry.dtype} × {list(entry.shape)}")
        return places({entry.name: out})(header)

    return place


class Staging:
    """Host tensors that served bytes land in before one copy each to ``device``.

    Page-locked (pinned) when CUDA is available: a host-to-device copy from pinned memory
    is one DMA transfer, where pageable memory is first copied by the driver into a
    pinned bounce buffer of its own.
    """

    def __init__(self, device: str | torch.device) -> None:
        import torch  # noqa: PLC0415 -- optional extra

        self.device = torch.device(device)
        self.pin = torch.cuda.is_available()
        self.tensors: dict[str, torch.Tensor] = {}

    def place(self, header: Header) -> dict[str, memoryview]:
        import torch  # noqa: PLC0415 -- optional extra

        from ._safetensors import torch_dtypes  # noqa: PLC0415

        self.tensors = {}
        for entry in header.entries.values():
            if entry.end > entry.begin:  # an empty tensor has no bytes to stage
                self.tensors[entry.name] = torch.empty(entry.shape, dtype=torch_dtypes()[entry.dtype], pin_memory=self.pin)
        return {name: t.reshape(-1).view(torch.uint8).numpy().data for name, t in self.tensors.items()}

    def move(self, served: Mapping[str, Any], placed: Collection[str]) -> dict[str, Any]:
        """Every served tensor on ``device``: from its staging tensor where the bytes landed there."""
        return {name: (self.tensors[name] if name in placed else value).to(self.device) for name, value in served.items()}
