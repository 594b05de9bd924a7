"""Hugging Face architectures: a ``config.json`` → the tensors ``save_pretrained`` writes, initialized as transformers 5.x does.

No torch, no transformers: each module here states one family from the transformers
sources (``models/<type>/modeling_<type>.py`` and ``configuration_<type>.py``) and
registers it by ``model_type`` (:func:`~.registry.architecture`); adding an architecture
is one function in one module, imported below::

    manifest_from_config(config)   → [TensorEntry(name, shape, kind, role, init)], on-disk order
    checkpoint_specs(config, seed=) → [ResolvedSpec], each through recipe "transformers"
    supported()                    → what GET /models lists

The order is the one ``save_pretrained`` writes and shards in: the ``state_dict`` order,
tied and non-persistent tensors left out; for a model with a conversion mapping
(Mixtral's per-expert ``w1``/``w2``/``w3``, Qwen3-MoE's), the on-disk names in the order
``revert_weight_conversion`` gives them (the state dict sorted by ``dot_natural_key``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..bounded_cache import WeightedCache
from ..errors import InvalidParameterError, MissingParameterError
from ..manifest import located
from ..recipes import plan_recipe
from ..schemes import Limits, check_dtype
from ..spec import ResolvedSpec, canonical_json, check_seed
from . import bert, gemma, gpt2, llama, mixtral, opt, qwen_moe, t5  # noqa: F401 -- each registers its model types
from .registry import ARCHITECTURES, MAX_TENSORS, Architecture, Config, TensorEntry, UnknownArchitectureError

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "TensorEntry",
    "UnknownArchitectureError",
    "checkpoint_specs",
    "config_dtype",
    "manifest_from_config",
    "resolve_architecture",
    "supported",
]


def supported() -> list[dict[str, Any]]:
    """Every architecture: model_type, its classes (the first is the default head), the fields it reads with their defaults."""
    return [ARCHITECTURES[name].describe() for name in sorted(ARCHITECTURES)]


def _known() -> str:
    return "one of " + ", ".join(sorted(ARCHITECTURES)) + " (see GET /models)"


def _check_object(config: object) -> None:
    if not isinstance(config, Mapping):
        raise InvalidParameterError("config", config, "a JSON object: a Hugging Face config.json")


def resolve_architecture(config: Mapping[str, Any]) -> tuple[Architecture, str, Config]:
    """The config's architecture, its class (``architectures[0]``, else the usual head) and its fields with their defaults."""
    _check_object(config)
    if "model_type" not in config:
        raise located(MissingParameterError("model_type", _known()), "config")
    model_type = config["model_type"]
    if not isinstance(model_type, str) or model_type not in ARCHITECTURES:
        raise located(UnknownArchitectureError("model_type", model_type, _known()), "config")
    found = ARCHITECTURES[model_type]
    classes = config.get("architectures")
    if classes is None or classes == []:
        cls = found.classes[0]
    elif isinstance(classes, list) and isinstance(classes[0], str) and classes[0] in found.classes:
        cls = classes[0]
    else:
        allowed = f"a list whose first class is one of {', '.join(found.classes)} (model_type {model_type}), or none: {found.classes[0]}"
        raise located(UnknownArchitectureError("architectures", classes, allowed), "config")
    return found, cls, Config(config, model_type, found.fields, found.aliases)


def manifest_from_config(config: Mapping[str, Any]) -> list[TensorEntry]:
    """The tensors ``save_pretrained`` writes for this config, in its order: name, shape, kind, role, init rule.

    Raises a :class:`~service.core.errors.TensorinitError` (a 422) naming the field: an
    unknown ``model_type`` or class (listing what is supported), a field of the wrong type.
    """
    found, cls, cfg = resolve_architecture(config)
    return found.build(cfg, cls)


def config_dtype(config: Mapping[str, Any], dtype: str | None = None) -> str:
    """``dtype`` if given, else the config's ``dtype`` (or ``torch_dtype``, transformers 4.x), else float32."""
    if dtype is not None:
        return check_dtype(dtype)
    _check_object(config)
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if value is not None:
            try:
                return check_dtype(value.removeprefix("torch.") if isinstance(value, str) else value)
            except InvalidParameterError as err:
                raise located(InvalidParameterError(key, value, err.allowed), "config") from None
    return "float32"


def checkpoint_specs(
    config: Mapping[str, Any],
    *,
    seed: int = 0,
    dtype: str | None = None,
    algorithm: int | None = None,
    limits: Limits | None = None,
) -> list[ResolvedSpec]:
    """Every tensor of the checkpoint resolved through recipe ``transformers``, in ``save_pretrained`` order.

    ``dtype`` defaults to the config's (:func:`config_dtype`). Resolution does not depend
    on the seed: the specs of each (config, dtype, algorithm, limits) are planned once and
    re-seeded (:meth:`~service.core.spec.ResolvedSpec.with_seed`). The specs are those a
    recipe request ``{"recipe": "transformers", "recipe_params": {"config": ...}}`` over
    :func:`manifest_from_config`'s tensors gives: the same bytes, the same ETags.
    """
    check_seed(seed)
    chosen = config_dtype(config, dtype)
    try:
        key = canonical_json(config)
    except (TypeError, ValueError):  # not JSON (a NaN, an object): plan it uncached, and let the checks name the field
        return [s.with_seed(seed) for s in _plan(config, chosen, algorithm, limits)]
    return [s.with_seed(seed) for s in _cached_plan(key, chosen, algorithm, limits)]


def _plan(config: Mapping[str, Any], dtype: str, algorithm: int | None, limits: Limits | None) -> tuple[ResolvedSpec, ...]:
    entries = manifest_from_config(config)
    tensors = {e.name: e.manifest() for e in entries}
    plan = plan_recipe("transformers", tensors, recipe_params={"config": config}, dtype=dtype, algorithm=algorithm, limits=limits)
    return tuple(plan.specs)


SPEC_CACHE = WeightedCache[tuple[ResolvedSpec, ...]](64, MAX_TENSORS, len)
"""Seed 0's specs of up to 64 configs, and of 65,536 tensors in all (~70 MiB): one config of
MAX_TENSORS tensors holds ~70 MiB, so a count of entries alone would let 64 of them hold GBs."""


def _cached_plan(config_json: str, dtype: str, algorithm: int | None, limits: Limits | None) -> tuple[ResolvedSpec, ...]:
    """Seed 0's specs of a config: the Hub protocol asks for the same checkpoint once per file (0.1-0.4 s for Mixtral-8x7B)."""
    return SPEC_CACHE.get((config_json, dtype, algorithm, limits), lambda: _plan(json.loads(config_json), dtype, algorithm, limits))
