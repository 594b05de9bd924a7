"""The model manifest: what a recipe knows about each tensor of a model.

An entry is a tensor's name, shape and dtype, the kind of module it belongs to, its
role in that module and the module's attributes a rule needs::

    "h.0.attn.c_attn.weight": {"shape": [2304, 768], "kind": "linear"}
    "wte.weight": {"shape": [50257, 768], "kind": "embedding", "attributes": {"padding_idx": null}}
    "rnn.weight_hh_l1": {"shape": [512, 128], "kind": "lstm", "attributes": {"hidden_size": 128}}

``kind`` comes from :data:`KINDS` (the torch module types, lower-cased: ``nn.Conv2d`` →
``conv2d``, ``nn.MultiheadAttention`` → ``multihead_attention``); an entry without a kind
is a tensor no module explains (a free ``nn.Parameter``) that only a rule of the request
can cover. ``role`` is the parameter's name inside its module (``weight``, ``bias``,
``in_proj_weight``, ``out_proj.weight``, ``weight_hh_l0``...); when absent it is the
longest dotted suffix of the name that the kind allows, and the rest of the name is
the module, so that a bias finds its weight.

Beside the module roles, recipes ask for *model* roles (:data:`MODEL_ROLES`): which
tensors are residual output projections, the readout, embeddings, query/key/value
projections... Each is a list of ``fnmatch`` patterns on the full name (``*`` crosses
dots) plus, for some, a rule on the kind; a request may replace any list
(``"roles": {"residual_out": ["*.c_proj.weight"]}``), and then only its patterns count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidParameterError, MissingParameterError, TensorinitError, UnknownParameterError
from .globs import Globs

_LINEAR_ROLES = ("weight", "bias")
_RNN_ROLE = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l[0-9]+(_reverse)?$")
_RNN_ROLE_TEXT = "weight_ih_l<k>, weight_hh_l<k>, bias_ih_l<k>, bias_hh_l<k>, weight_hr_l<k> (optionally _reverse)"

KINDS: dict[str, tuple[str, ...]] = {
    "linear": _LINEAR_ROLES,
    "bilinear": _LINEAR_ROLES,
    **{f"conv{d}d": _LINEAR_ROLES for d in (1, 2, 3)},
    **{f"conv_transpose{d}d": _LINEAR_ROLES for d in (1, 2, 3)},
    "embedding": ("weight",),
    "layer_norm": _LINEAR_ROLES,
    "rms_norm": ("weight",),
    "batch_norm": ("weight", "bias", "running_mean", "running_var"),
    "group_norm": _LINEAR_ROLES,
    "multihead_attention": (
        "in_proj_weight",
        "in_proj_bias",
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
        "bias_k",
        "bias_v",
        "out_proj.weight",
        "out_proj.bias",
    ),
    "rnn": (),
    "lstm": (),
    "gru": (),
}
"""Module kind → the roles its tensors may have (recurrent kinds: :data:`_RNN_ROLE`)."""

RECURRENT = frozenset({"rnn", "lstm", "gru"})
NORMS = frozenset({"layer_norm", "rms_norm", "batch_norm", "group_norm"})
CONVS = frozenset(k for k in KINDS if k.startswith("conv"))
DENSE = frozenset({"linear", "bilinear"}) | CONVS
"""Kinds whose weight is a dense layer's (fans from the shape)."""

ATTRIBUTES: dict[str, str] = {
    "groups": "integer",
    "padding_idx": "integer",
    "hidden_size": "integer",
    "num_layers": "integer",
    "proj_size": "integer",
    "num_heads": "integer",
    "embed_dim": "integer",
    "num_groups": "integer",
    "in_features": "integer",
    "out_features": "integer",
    "fan_in": "integer",
    "bidirectional": "boolean",
    "base_shape": "shape",
}
"""Attributes an entry may carry, and their JSON types."""

MODEL_ROLES: dict[str, tuple[str, ...]] = {
    "residual_out": (
        "*c_proj.weight",
        "*.out_proj.weight",
        "*.fc2.weight",
        "*.o_proj.weight",
        "*.down_proj.weight",
        "*.linear2.weight",
    ),
    "readout": (
        "lm_head.weight",
        "*.lm_head.weight",
        "head.weight",
        "*.head.weight",
        "fc.weight",
        "classifier.weight",
        "*.classifier.weight",
    ),
    "embedding": (),
    "qkv": ("*.c_attn.weight", "*.qkv.weight", "*.q_proj.weight", "*.k_proj.weight", "*.v_proj.weight"),
    "v_proj": ("*.v_proj.weight",),
    "ffn": ("*.fc1.weight", "*.fc2.weight", "*.c_fc.weight", "*.mlp.c_proj.weight", "*.linear1.weight", "*.linear2.weight"),
    "residual_branch": ("*.conv1.weight", "*.conv2.weight", "*.conv3.weight"),
    "encoder": ("*encoder*",),
    "decoder": ("*decoder*",),
}
"""Model role → its default name patterns (see :func:`Manifest.has_role` for the kind-based rules)."""

_KIND_ROLES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "embedding": (("embedding", ("weight",)),),
    "qkv": (("multihead_attention", ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")),),
    "v_proj": (("multihead_attention", ("v_proj_weight",)),),
    "residual_out": (("multihead_attention", ("out_proj.weight",)),),
}
"""Model roles that a kind implies, unless the request replaces the role's list: (kind, module roles)."""

DTYPE_DEFAULT = "float32"


def located(err: TensorinitError, *where: str) -> TensorinitError:
    """``err`` with the document path of the object it is about (the web layer puts its param under it)."""
    err.where = tuple(where)  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class Entry:
    """One tensor of the manifest."""

    name: str
    shape: tuple[int, ...]
    dtype: str | None
    kind: str | None
    role: str | None
    module: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    slice: Any = None
    """Serve only ``full[slice]`` (a rank's shard): checked by :func:`~service.core.schemes.resolve` against ``shape``."""

    def attribute(self, key: str, recipe: str) -> Any:
        """A required attribute, or an error naming the entry and what the recipe needs."""
        if self.attributes.get(key) is None:
            raise located(
                MissingParameterError(key, f"an integer attribute {key} of this {self.kind} (recipe {recipe} needs it)"),
                "tensors",
                self.name,
                "attributes",
            )
        return self.attributes[key]


def _roles_of(kind: str) -> str:
    return _RNN_ROLE_TEXT if kind in RECURRENT else ", ".join(KINDS[kind])


def _valid_role(kind: str, role: str) -> bool:
    return bool(_RNN_ROLE.match(role)) if kind in RECURRENT else role in KINDS[kind]


def _default_role(name: str, kind: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts)):
        role = ".".join(parts[i:])
        if _valid_role(kind, role):
            return role
    return None


def _check_attributes(name: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise located(InvalidParameterError("attributes", raw, "an object of module attributes"), "tensors", name)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in ATTRIBUTES:
            raise located(UnknownParameterError(key, value, "attributes " + ", ".join(ATTRIBUTES)), "tensors", name, "attributes")
        kind = ATTRIBUTES[key]
        ok = value is None or (
            (kind == "integer" and isinstance(value, int) and not isinstance(value, bool))
            or (kind == "boolean" and isinstance(value, bool))
            or (
                kind == "shape"
                and isinstance(value, list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
            )
        )
        if not ok:
            allowed = {"integer": "an integer or null", "boolean": "true, false or null", "shape": "a list of non-negative integers"}[kind]
            raise located(InvalidParameterError(key, value, allowed), "tensors", name, "attributes")
        out[key] = tuple(value) if kind == "shape" and value is not None else value
    return out


def parse_entry(name: str, raw: Mapping[str, Any]) -> Entry:
    """One manifest entry, checked: its kind from :data:`KINDS`, its role allowed for that kind."""
    from .schemes import check_shape  # noqa: PLC0415 -- schemes is the heavier module; no cycle at import

    if not isinstance(raw, Mapping):
        raise located(
            InvalidParameterError(name, raw, "a manifest entry: an object with shape, and kind, role, dtype, attributes"), "tensors"
        )
    allowed_keys = ("shape", "dtype", "kind", "role", "attributes", "slice")
    for key in raw:
        if key not in allowed_keys:
            raise located(
                UnknownParameterError(key, raw[key], "the fields of a manifest entry: " + ", ".join(allowed_keys)), "tensors", name
            )
    if "shape" not in raw:
        raise located(MissingParameterError("shape", "a list of non-negative integers"), "tensors", name)
    try:
        shape = check_shape(raw["shape"])
    except TensorinitError as err:
        raise located(err, "tensors", name) from None
    kind = raw.get("kind")
    role = raw.get("role")
    if kind is not None and (not isinstance(kind, str) or kind not in KINDS):
        raise located(
            InvalidParameterError("kind", kind, "one of " + ", ".join(KINDS) + " (or null: a tensor only a rule covers)"), "tensors", name
        )
    module = name
    if kind is not None:
        if role is None:
            role = _default_role(name, kind)
            if role is None:
                raise located(
                    MissingParameterError("role", f"a role of a {kind}: {_roles_of(kind)} (the name {name!r} ends in none of them)"),
                    "tensors",
                    name,
                )
        elif not isinstance(role, str) or not _valid_role(kind, role):
            raise located(InvalidParameterError("role", role, f"a role of a {kind}: {_roles_of(kind)}"), "tensors", name)
        # The module is the name without the role; a name that does not end in its role
        # (a flax "Dense_0.kernel" given role weight) belongs to its parent path.
        module = name.removesuffix(role).removesuffix(".") if name.endswith(role) else name.rpartition(".")[0]
    elif role is not None:
        raise located(InvalidParameterError("role", role, "no role without a kind (give the kind too)"), "tensors", name)
    dtype = raw.get("dtype")
    return Entry(name, shape, dtype, kind, role, module, _check_attributes(name, raw.get("attributes")), raw.get("slice"))


class Manifest:
    """Checked entries by name, with the model roles of the request."""

    def __init__(self, entries: Sequence[Entry], roles: Mapping[str, Sequence[str]] | None = None):
        self.entries = {e.name: e for e in entries}
        self._by_module = {(e.module, e.role): e for e in entries}
        self.overridden: set[str] = set()
        self.patterns: dict[str, tuple[str, ...]] = dict(MODEL_ROLES)
        for role, patterns in (roles or {}).items():
            if role not in MODEL_ROLES:
                raise located(UnknownParameterError(role, patterns, "model roles " + ", ".join(MODEL_ROLES)), "roles")
            if not isinstance(patterns, list | tuple) or not all(isinstance(p, str) for p in patterns):
                raise located(InvalidParameterError(role, patterns, "a list of glob patterns on tensor names"), "roles")
            self.patterns[role] = tuple(patterns)
            self.overridden.add(role)
        self._globs = {role: Globs(patterns) for role, patterns in self.patterns.items()}  # compiled once per request

    def has_role(self, entry: Entry, role: str) -> bool:
        """Whether ``entry`` plays the model role: a pattern matches, or (not overridden) its kind implies it."""
        if self._globs[role].any(entry.name):
            return True
        if role in self.overridden:
            return False
        return any(entry.kind == kind and entry.role in roles for kind, roles in _KIND_ROLES.get(role, ()))

    def sibling(self, entry: Entry, role: str) -> Entry | None:
        """The tensor of the same module with another role (a bias's weight)."""
        return self._by_module.get((entry.module, role))

    def torch_fan_in(self, entry: Entry, recipe: str) -> int:
        """torch's fan_in of the module's weight (a bias's bound): shape[1]·prod(shape[2:]), or attribute fan_in."""
        weight = entry if entry.role == "weight" else self.sibling(entry, "weight")
        if weight is not None and len(weight.shape) >= 2:
            return weight.shape[1] * math.prod(weight.shape[2:])
        if entry.attributes.get("fan_in") is not None:
            return int(entry.attributes["fan_in"])
        raise located(
            MissingParameterError(
                "fan_in", f"the module's weight in the manifest, or an integer attribute fan_in (recipe {recipe} bounds a bias by it)"
            ),
            "tensors",
            entry.name,
            "attributes",
        )


def parse_manifest(tensors: Mapping[str, Any], roles: Mapping[str, Sequence[str]] | None = None) -> Manifest:
    """Every entry checked, and the roles of the request (unknown role names refused)."""
    if not isinstance(tensors, Mapping):
        raise InvalidParameterError("tensors", tensors, "an object mapping tensor names to manifest entries")
    return Manifest([parse_entry(name, raw) for name, raw in tensors.items()], roles)
