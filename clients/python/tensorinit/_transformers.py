"""Filling a built transformers model with its checkpoint's bytes: ``init_module(model, recipe="transformers")``.

The server knows, from the config alone, every tensor ``save_pretrained`` writes (its
on-disk name, shape, kind and role) and where transformers 5.x holds it in memory
(``POST /models/manifest``): mostly a parameter of the same name, but Mixtral's experts
are slices of a fused ``mlp.experts.gate_up_proj`` (E, 2·I, hidden), each on-disk
``w1``/``w3``/``w2`` one ``[e, a:b]`` view of it. So the fill is one recipe request
under the on-disk names, each received into its in-memory place (a contiguous CPU view
takes the bytes straight into the parameter's storage): the module then holds the bytes
of the checkpoint files of the same (config, seed, dtype).

A DTensor (FSDP2, tensor parallel) asks for its local shard only; a fused view of a
sharded parameter asks for the part of the on-disk tensor that this rank holds, which is
one basic slice whenever the parameter's local piece is a step-1 range on the axes the
view slices (a strided shard there is refused).

What the checkpoint does not hold is left to transformers, as ``from_pretrained`` does
after loading: the filled tensors are marked ``_is_hf_initialized`` for the duration of
one ``model.init_weights()``, which then sets only the rest (non-persistent buffers such
as RoPE's ``inv_freq``, which ``to_empty`` left as garbage) and re-ties the tied weights
(``to_empty`` unties them). The marks are removed afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _distributed, _torch
from ._manifest import recipe_body
from ._receive import ScatterSink

if TYPE_CHECKING:
    import torch

    from ._base import Fetch, Query
    from ._plan import Plan
    from ._rules import Rules

RECIPE = "transformers"

Index = tuple[int | tuple[int, int], ...]


@dataclass(frozen=True)
class OnDisk:
    """One tensor of the checkpoint: on-disk name, shape, kind, role, and where it lives in memory."""

    name: str
    shape: tuple[int, ...]
    kind: str | None
    role: str | None
    parameter: str
    index: Index

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> OnDisk:
        memory = raw.get("memory")
        parameter, index = (raw["name"], ()) if memory is None else (memory["parameter"], memory["index"])
        return cls(
            raw["name"],
            tuple(int(d) for d in raw["shape"]),
            raw.get("kind"),
            raw.get("role"),
            parameter,
            tuple(i if isinstance(i, int) else (int(i[0]), int(i[1])) for i in index),
        )


def params_of(module: torch.nn.Module, recipe_params: Mapping[str, Any] | None, *, kinds: object, shard: object) -> dict[str, Any]:
    """The recipe's parameters: ``config`` as given, else ``module.config`` with the module's class in ``architectures``.

    The class matters: ``LlamaModel`` and ``LlamaForCausalLM`` save different names, and a
    config built for ``from_config`` usually names none. ``kinds=`` and ``shard=`` are refused:
    this recipe goes by on-disk names and shapes, and a DTensor's placements give its shard.
    """
    if kinds is not None:
        raise TypeError("init_module(recipe='transformers') takes no kinds=: the config gives every tensor's kind")
    if shard is not None:
        raise TypeError("init_module(recipe='transformers') takes no shard=: make the module's sharded parameters DTensors")
    params = dict(recipe_params or {})
    if "config" in params:
        return params
    to_json = getattr(getattr(module, "config", None), "to_json_string", None)
    if to_json is None:
        raise TypeError(
            f"init_module(recipe='transformers') reads the config of a transformers model (module.config); "
            f"a {type(module).__name__} has none: pass recipe_params={{'config': <its config.json as a dict>}}"
        )
    # to_json_string, not to_dict: it turns torch dtypes and other objects into JSON values.
    config = json.loads(to_json(use_diff=False))
    config["architectures"] = [_class_name(module)]
    params["config"] = config
    return params


def _class_name(module: torch.nn.Module) -> str:
    """The transformers class of ``module``: FSDP2 wraps it in ``FSDP<name>``, a user may subclass it."""
    for cls in type(module).__mro__:
        if cls.__module__.startswith("transformers.models."):
            return cls.__name__
    return type(module).__name__


def manifest_call(config: Mapping[str, Any]) -> Query[list[OnDisk]]:
    """``POST /models/manifest``: the checkpoint's tensors and their in-memory places."""
    from ._base import Query  # noqa: PLC0415 -- _base imports this module's users

    return Query("POST", "/models/manifest", lambda answer: [OnDisk.from_json(t) for t in answer["tensors"]], json={"config": config})


def _ranges(text: str | None, shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Slice text (``"0:4,2:8:2"``) as (start, stop, step) per axis; None: the whole tensor."""
    if text is None:
        return [(0, d, 1) for d in shape]
    out = []
    for item, dim in zip(text.split(","), shape, strict=True):
        start, stop, step = slice(*(int(p) if p else None for p in item.split(":"))).indices(dim)
        out.append((start, stop, step))
    return out


def _locate(entry: OnDisk, held: list[tuple[int, int, int]]) -> tuple[tuple[Any, ...], str | None] | None:
    """(index into the local tensor, slice of the on-disk tensor) for the part of ``entry`` this process holds; None: no part.

    ``held`` is the ranges of the in-memory parameter this process holds (the whole of it unless it is a DTensor shard).
    """
    local: list[Any] = []
    disk: list[str] = []
    for axis, (start, stop, step) in enumerate(held):
        if axis < len(entry.index):
            pick = entry.index[axis]
            if isinstance(pick, int):
                if not (start <= pick < stop and (pick - start) % step == 0):
                    return None
                local.append((pick - start) // step)
                continue
            if step != 1:
                raise ValueError(
                    f"{entry.name}: it is {entry.parameter}[{', '.join(map(str, entry.index))}] in memory, and this rank holds "
                    f"{start}:{stop}:{step} of that parameter's axis {axis}: a strided shard of a fused parameter is not filled"
                )
            lo, hi = max(pick[0], start), min(pick[1], stop)
            if lo >= hi:
                return None
            local.append(slice(lo - start, hi - start))
            disk.append(f"{lo - pick[0]}:{hi - pick[0]}")
        else:
            local.append(slice(None))
            disk.append(f"{start}:{stop}" if step == 1 else f"{start}:{stop}:{step}")
    whole = all(item == f"0:{d}" for item, d in zip(disk, entry.shape, strict=True))
    return tuple(local), None if whole else ",".join(disk)


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by its state-dict name, shared ones under each of their names."""
    named: dict[str, torch.Tensor] = dict(module.named_parameters(remove_duplicate=False))
    named.update(module.named_buffers(remove_duplicate=False))
    return named


@dataclass
class Placed:
    """The recipe manifest under on-disk names, the local tensor each is received into, and the in-memory tensors behind them."""

    manifest: dict[str, dict[str, Any]]
    targets: dict[str, torch.Tensor]
    filled: dict[int, torch.Tensor]


def place(module: torch.nn.Module, entries: list[OnDisk]) -> Placed:
    """Each on-disk tensor's in-memory place (a view for a fused parameter, a DTensor's local piece)."""
    named = _tensors(module)
    missing = [e.parameter for e in entries if e.parameter not in named]
    if missing:
        raise ValueError(
            f"the config's checkpoint holds tensors that {type(module).__name__} does not have: {missing[:5]}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + "; is the config's class (architectures) the module's?"
        )
    manifest: dict[str, dict[str, Any]] = {}
    targets: dict[str, torch.Tensor] = {}
    filled: dict[int, torch.Tensor] = {}
    local_of: dict[str, tuple[torch.Tensor, list[tuple[int, int, int]]]] = {}
    for entry in entries:
        tensor = named[entry.parameter]
        if tensor.is_meta:
            raise ValueError(f"{entry.parameter} is on the meta device: materialize the module first, e.g. module.to_empty(device='cpu')")
        if entry.parameter not in local_of:
            full = tuple(int(d) for d in tensor.shape)
            if _distributed.is_dtensor(tensor):
                local_of[entry.parameter] = (tensor.to_local(), _ranges(_distributed.dtensor_slices(entry.parameter, tensor), full))  # type: ignore[attr-defined]
            else:
                local_of[entry.parameter] = (tensor, _ranges(None, full))
        local, held = local_of[entry.parameter]
        found = _locate(entry, held)
        filled[id(tensor)] = tensor
        if found is None:
            continue  # this rank holds none of it
        index, part = found
        view = local[index] if index else local
        shape = entry.shape if part is None else tuple(len(range(*r)) for r in _ranges(part, entry.shape))
        if tuple(view.shape) != shape:
            raise ValueError(f"{entry.name}: the config's checkpoint has {list(shape)} here, {entry.parameter} holds {list(view.shape)}")
        item: dict[str, Any] = {"shape": list(entry.shape), "dtype": _torch.served_dtype(view)}
        if entry.kind is not None:
            item["kind"], item["role"] = entry.kind, entry.role
        if part is not None:
            item["slice"] = part
        manifest[entry.name] = item
        targets[entry.name] = view
    return Placed(manifest, targets, filled)


def complete(module: torch.nn.Module, filled: Mapping[int, torch.Tensor]) -> None:
    """transformers' own ``init_weights()`` for what the checkpoint does not hold, the filled tensors marked as loaded.

    As ``from_pretrained`` does after loading: ``_is_hf_initialized`` on a tensor makes
    transformers' init functions skip it; on a module, its whole ``_init_weights``. Then
    ``tie_weights``. The marks this call adds are removed afterwards.
    """
    init_weights = getattr(module, "init_weights", None)
    if init_weights is None:
        return
    marked = [t for t in filled.values() if not getattr(t, "_is_hf_initialized", False)]
    unmarked_modules = [m for m in module.modules() if not getattr(m, "_is_hf_initialized", False)]
    for t in marked:
        t._is_hf_initialized = True  # type: ignore[attr-defined]
    try:
        init_weights()
    finally:
        for t in marked:
            del t._is_hf_initialized  # type: ignore[attr-defined]
        for m in unmarked_modules:
            if "_is_hf_initialized" in m.__dict__:
                del m._is_hf_initialized


def fill_call(
    module: torch.nn.Module,
    entries: list[OnDisk],
    recipe_params: Mapping[str, Any],
    *,
    rules: Rules | None,
    seed: int,
    convention: str,
) -> Fetch[list[str]]:
    """The ``POST /init`` of recipe ``transformers`` under the on-disk names, received into the module's tensors."""
    from ._base import Fetch  # noqa: PLC0415 -- _base imports this module's users

    placed = place(module, entries)
    if not placed.manifest:  # a rank that holds none of the checkpoint: only transformers' part

        def rest(served: dict[str, Any]) -> list[str]:
            complete(module, placed.filled)
            return []

        return Fetch(None, "torch", rest)
    body = recipe_body(
        RECIPE,
        placed.manifest,
        recipe_params=recipe_params,
        seed=seed,
        convention=convention,
        roles=None,
        rules=rules,
    )
    sink = ScatterSink(_torch.places(placed.targets))

    def finish(served: dict[str, Any]) -> list[str]:
        done = _torch.fill(placed.targets, served, sink.placed)
        complete(module, placed.filled)
        return done

    return Fetch(body, "torch", finish, sink, (), type(module).__name__)


def plan_call(
    module: torch.nn.Module,
    entries: list[OnDisk],
    recipe_params: Mapping[str, Any],
    *,
    rules: Rules | None,
    seed: int,
    convention: str,
) -> Query[Plan]:
    """``plan_module``: the ``POST /plan`` of the request :func:`fill_call` would send."""
    from ._base import Query  # noqa: PLC0415 -- _base imports this module's users
    from ._plan import Plan  # noqa: PLC0415

    manifest = place(module, entries).manifest
    body = recipe_body(RECIPE, manifest, recipe_params=recipe_params, seed=seed, convention=convention, roles=None, rules=rules)
    return Query("POST", "/plan", Plan.from_json, json=body)
