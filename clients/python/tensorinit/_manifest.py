"""Model manifests for recipes: from a ``torch.nn.Module``, or from a flax/haiku parameter tree.

A manifest maps each tensor's name to its shape, dtype, module kind, role in the module
and the module's attributes (docs/api.md, "Recipes"). :func:`module_manifest` walks a
torch module tree: module types become kinds (``nn.Conv2d`` → ``conv2d``, a
``MultiheadAttention``'s ``out_proj`` stays part of the attention, whose reset gives its
bias 0), attributes are read from the modules (``groups``, ``padding_idx``,
``hidden_size``...). Other modules join through ``kinds``: a module class or a glob over
module paths → a kind, with its layout (:data:`LAYOUTS`); transformers' ``Conv1D``
(GPT-2's, weight (in, out)) is known out of the box (:data:`KNOWN`), by its module and
class name, so transformers is never imported here. A weight stored ``in_out`` is
described as the kind's (out, in), so that the server reads its fans off the right axes,
and the served tensor is transposed back into the module. Parameters of the remaining
modules (a free ``nn.Parameter``, a custom layer nobody named) are sent without a kind:
only a rule of the request covers them, and the server lists the ones nothing covers. Buffers are
sent only for BatchNorm (running mean 0, running variance 1); other buffers (masks,
rotary caches) are state, not initializations, and are left alone.

:func:`tree_manifest` does the same for a nested mapping of arrays (or of shapes), the
way flax and haiku hold parameters, given the kinds by module path; :func:`unflatten`
puts the served arrays back into that structure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _torch
from ._rules import Rules

if TYPE_CHECKING:
    import torch

Manifest = dict[str, dict[str, Any]]

_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "conv": ("groups",),
    "embedding": ("padding_idx",),
    "rnn": ("hidden_size", "num_layers", "proj_size", "bidirectional"),
    "multihead_attention": ("num_heads", "embed_dim"),
    "group_norm": ("num_groups",),
    "linear": ("in_features", "out_features"),
}


def _kinds() -> list[tuple[type, str]]:
    from torch import nn  # noqa: PLC0415 -- optional extra

    kinds: list[tuple[type, str]] = [
        (nn.MultiheadAttention, "multihead_attention"),
        (nn.Bilinear, "bilinear"),
        (nn.Linear, "linear"),
        (nn.Embedding, "embedding"),
        (nn.LayerNorm, "layer_norm"),
        (nn.GroupNorm, "group_norm"),
        (nn.modules.batchnorm._BatchNorm, "batch_norm"),
        (nn.LSTM, "lstm"),
        (nn.GRU, "gru"),
        (nn.RNN, "rnn"),
    ]
    if hasattr(nn, "RMSNorm"):
        kinds.append((nn.RMSNorm, "rms_norm"))
    for d in (1, 2, 3):
        kinds.append((getattr(nn, f"ConvTranspose{d}d"), f"conv_transpose{d}d"))
        kinds.append((getattr(nn, f"Conv{d}d"), f"conv{d}d"))
    return kinds


LAYOUTS = ("out_in", "in_out")
"""How a module stores a 2-D weight: ``out_in`` as ``nn.Linear`` (torch's layout, the
default), ``in_out`` transposed (transformers' ``Conv1D``, a Keras-style dense)."""

Kinds = Mapping[type | str, str | tuple[str, str]]
"""``init_module(kinds=...)``: a module class (subclasses included) or a glob over module
paths (``"*.mlp.gate"``) → a kind (``"linear"``), or (kind, layout) with a layout of
:data:`LAYOUTS` (``("linear", "in_out")``)."""

KNOWN: dict[tuple[str, str], tuple[str, str]] = {
    ("transformers.pytorch_utils", "Conv1D"): ("linear", "in_out"),  # GPT-2's: weight (nx, nf) = (in, out)
}
"""Modules of other libraries known by (module, class name), so that the library is
never imported for it: a model that holds one has imported it already."""


@dataclass(frozen=True)
class ModuleKind:
    """A module's manifest kind, and whether its 2-D weight is stored transposed (``in_out``)."""

    kind: str
    transposed: bool = False


def _module_kind(value: str | tuple[str, str], where: str) -> ModuleKind:
    kind, layout = (value, "out_in") if isinstance(value, str) else value
    if layout not in LAYOUTS:
        raise ValueError(f"kinds[{where}]: layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    return ModuleKind(kind, layout == "in_out")


def _known(module: torch.nn.Module) -> ModuleKind | None:
    for cls in type(module).__mro__:
        found = KNOWN.get((cls.__module__, cls.__qualname__))
        if found is not None:
            return _module_kind(found, cls.__qualname__)
    return None


def kind_of(module: torch.nn.Module, path: str = "", kinds: Kinds | None = None) -> ModuleKind | None:
    """The manifest kind of a torch module, or None when it is outside the vocabulary.

    ``kinds`` is asked first, in its order (a class matches its subclasses, a string is
    a glob over the module's path), then torch's own modules, then :data:`KNOWN`.
    """
    for key, value in (kinds or {}).items():
        if isinstance(key, str):
            if fnmatchcase(path, key):
                return _module_kind(value, repr(key))
        elif isinstance(module, key):
            return _module_kind(value, key.__qualname__)
    for cls, kind in _kinds():
        if isinstance(module, cls):
            return ModuleKind(kind)
    return _known(module)


def _attributes(module: torch.nn.Module, kind: str) -> dict[str, Any]:
    group = "conv" if kind.startswith("conv") else "rnn" if kind in ("rnn", "lstm", "gru") else kind
    out: dict[str, Any] = {}
    for key in _ATTRIBUTES.get(group, ()):
        value = getattr(module, key, None)
        out[key] = value if isinstance(value, bool | int) or value is None else int(value)
    return out


class ModuleManifest(NamedTuple):
    """A module's manifest, the tensors it names, and those stored transposed (served as the kind's (out, in))."""

    manifest: Manifest
    tensors: dict[str, torch.Tensor]
    transposed: set[str]


def module_manifest(model: torch.nn.Module, *, buffers: bool = True, kinds: Kinds | None = None) -> ModuleManifest:
    """The manifest of ``model`` and the tensors it names (in ``named_parameters`` order, shared ones once).

    ``buffers=False`` leaves BatchNorm's running statistics out. A module whose layout is
    ``in_out`` (transformers' ``Conv1D``) has its 2-D weight described as the kind's
    (out, in), so the server's fans and a recipe's bias bound read the right axes; the
    served tensor is transposed back into the module.
    """
    manifest: Manifest = {}
    tensors: dict[str, torch.Tensor] = {}
    transposed: set[str] = set()
    seen: set[int] = set()
    inside: set[str] = set()  # modules that belong to an enclosing kind (a MultiheadAttention's out_proj)

    def add(name: str, tensor: torch.Tensor, kind: str | None, role: str | None, attributes: dict[str, Any] | None, flip: bool) -> None:
        if id(tensor) in seen or not tensor.dtype.is_floating_point:
            return
        if tensor.is_meta:
            raise ValueError(f"{name} is on the meta device: materialize the module first, e.g. module.to_empty(device='cpu')")
        seen.add(id(tensor))
        shape = [int(d) for d in tensor.shape]
        if flip and role == "weight":
            if len(shape) != 2:
                raise ValueError(f"{name}: layout in_out needs a 2-D weight, got shape {shape}")
            shape.reverse()
            transposed.add(name)
        entry: dict[str, Any] = {"shape": shape, "dtype": _torch.served_dtype(tensor)}
        if kind is not None:
            entry["kind"] = kind
            entry["role"] = role
            if attributes:
                entry["attributes"] = attributes
        manifest[name] = entry
        tensors[name] = tensor

    for prefix, module in model.named_modules():
        if prefix in inside:
            continue
        found = kind_of(module, prefix, kinds)
        kind = found.kind if found else None
        flip = found.transposed if found else False
        attributes = _attributes(module, kind) if kind else None
        dot = f"{prefix}." if prefix else ""
        for pname, param in module.named_parameters(recurse=False):
            add(dot + pname, param, kind, pname if kind else None, attributes, flip)
        if kind == "batch_norm" and buffers:
            for bname, buffer in module.named_buffers(recurse=False):
                if bname in ("running_mean", "running_var"):
                    add(dot + bname, buffer, kind, bname, attributes, flip)
        if kind == "multihead_attention":
            out_proj = module.out_proj
            inside.add(dot + "out_proj")
            for pname, param in out_proj.named_parameters(recurse=False):
                add(f"{dot}out_proj.{pname}", param, kind, f"out_proj.{pname}", attributes, flip)
    return ModuleManifest(manifest, tensors, transposed)


def rules_body(rules: Rules | None) -> list[list[Any]] | None:
    """Client rules as the request's ordered list of [pattern, spec] pairs."""
    if rules is None:
        return None
    items: Iterable[tuple[str, Any]] = rules.items() if isinstance(rules, Mapping) else rules
    return [[pattern, spec if spec is None or isinstance(spec, str) else dict(spec)] for pattern, spec in items]


def recipe_body(
    recipe: str,
    manifest: Manifest,
    *,
    recipe_params: Mapping[str, Any] | None,
    seed: int,
    convention: str | None,
    roles: Mapping[str, Iterable[str]] | None,
    rules: Rules | None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """The JSON body of a recipe request (POST /init or /plan)."""
    body: dict[str, Any] = {"recipe": recipe, "seed": seed, "tensors": {name: dict(entry) for name, entry in manifest.items()}}
    if dtype is not None:
        body["dtype"] = dtype
    if recipe_params:
        body["recipe_params"] = dict(recipe_params)
    if convention is not None:
        body["convention"] = convention
    if roles:
        body["roles"] = {role: list(patterns) for role, patterns in roles.items()}
    if rules is not None:
        body["rules"] = rules_body(rules)
    return body


# -- flax / haiku parameter trees -----------------------------------------------------

TREE_ROLES: dict[str, str] = {
    "kernel": "weight",  # flax Dense, Conv, DenseGeneral
    "w": "weight",  # haiku Linear, Conv
    "embedding": "weight",  # flax Embed
    "embeddings": "weight",  # haiku Embed
    "scale": "weight",  # flax LayerNorm, RMSNorm, BatchNorm, GroupNorm; haiku LayerNorm
    "bias": "bias",
    "b": "bias",
    "offset": "bias",  # haiku LayerNorm
    "mean": "running_mean",  # flax BatchNorm batch_stats
    "var": "running_var",
}
"""Leaf names of flax and haiku modules → manifest roles."""


def leaves(tree: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from leaves(value, (*path, str(key)))
        else:
            yield (*path, str(key)), value


def _shape_dtype(leaf: Any) -> tuple[list[int], str]:
    if hasattr(leaf, "shape"):
        dtype = str(getattr(leaf, "dtype", "float32"))
        return [int(d) for d in leaf.shape], dtype if dtype in ("float32", "float64", "float16", "bfloat16") else "float32"
    if isinstance(leaf, list | tuple) and all(isinstance(d, int) for d in leaf):
        return [int(d) for d in leaf], "float32"
    raise TypeError(f"a tree leaf must be an array (with .shape) or a shape tuple, got {type(leaf).__name__}")


def tree_manifest(tree: Mapping[str, Any], kinds: Mapping[str, str], *, sep: str = ".") -> Manifest:
    """The manifest of a nested mapping of arrays or shapes (a flax ``params`` dict, a haiku params mapping).

    ``kinds`` maps a module path glob to its kind (``{"Dense_*": "linear", "Embed_0": "embedding",
    "*LayerNorm*": "layer_norm"}``), first match wins; a leaf's name is its path joined with
    ``sep`` and its role comes from :data:`TREE_ROLES` (``kernel`` → weight). Leaves of
    modules no glob names are sent without a kind, for the request's rules.
    """
    manifest: Manifest = {}
    for path, leaf in leaves(tree):
        shape, dtype = _shape_dtype(leaf)
        name = sep.join(path)
        module = sep.join(path[:-1])
        entry: dict[str, Any] = {"shape": shape, "dtype": dtype}
        kind = next((k for pattern, k in kinds.items() if fnmatchcase(module, pattern)), None)
        if kind is not None:
            if path[-1] not in TREE_ROLES:
                raise ValueError(f"{name}: leaf {path[-1]!r} of a {kind} has no known role; known leaves: {', '.join(TREE_ROLES)}")
            entry["kind"] = kind
            entry["role"] = TREE_ROLES[path[-1]]
        manifest[name] = entry
    return manifest


def unflatten(
    tree: Mapping[str, Any], values: Mapping[str, Any], *, sep: str = ".", convert: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    """A new tree shaped like ``tree`` whose leaves are the served ``values`` (by joined path).

    Leaves the server did not send (left out by a null rule) keep their old value.
    ``convert`` maps each served array (``jax.numpy.asarray`` for a jax tree).
    """

    def build(node: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            here = (*path, str(key))
            if isinstance(value, Mapping):
                out[key] = build(value, here)
            else:
                name = sep.join(here)
                served = values.get(name)
                out[key] = value if served is None else (convert(served) if convert else served)
        return out

    return build(tree, ())
