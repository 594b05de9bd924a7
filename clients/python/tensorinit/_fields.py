"""What a request's fields may hold, checked in the client before anything is sent.

- ``name``: the name and the seed are the random key, like a JAX PRNG key. Two requests
  with the same (seed, name) draw the same numbers whatever their scheme or shape, so
  the client requires a name wherever one tensor is asked for (the service's own default,
  ``weight``, is for curl).
- ``dtype``: a string, a numpy or ml_dtypes dtype (``np.float16``, ``np.dtype("f4")``,
  ``ml_dtypes.bfloat16``) or a torch dtype (``torch.bfloat16``), always sent as its name.
- Scheme fields: the base fields every request has, plus the parameters the server's
  ``GET /schemes`` lists for the scheme. A keyword outside them is refused naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "float64", "float16", "bfloat16")

DType: TypeAlias = "str | np.dtype[Any] | type[Any] | torch.dtype"
"""A dtype in any of the spellings :func:`dtype_name` reads."""

BASE_FIELDS = frozenset(
    {"scheme", "shape", "seed", "dtype", "name", "convention", "algorithm", "slice", "in_axes", "out_axes", "batch_axes"}
)
"""The fields of every single-tensor request, whatever its scheme (docs/api.md, "Tensor requests")."""

KEY = (
    "the name and the seed are the random key, like a JAX PRNG key: two calls with the same (seed, name) "
    "give the same numbers whatever the scheme or shape, so init('normal', (256, 256)) for q and for k "
    "would give q == k. Name each tensor, e.g. name='q_proj.weight'"
)


def require_name(name: str | None, method: str) -> str:
    """``name`` itself, or a TypeError that says why a name is required."""
    if name is None:
        raise TypeError(f"{method}() needs name=: {KEY}")
    return name


def require_named(request: Mapping[str, Any], method: str) -> None:
    """A whole single-tensor request mapping must name its tensor (batch and recipe requests name theirs by key)."""
    if "tensors" not in request and request.get("name") is None:
        raise TypeError(f"{method}(request): a single-tensor request needs a 'name' field: {KEY}")


def dtype_name(dtype: Any, field: str = "dtype") -> str:
    """The service's name of ``dtype``, given as a string or as a numpy, ml_dtypes or torch dtype."""
    if isinstance(dtype, str):
        return dtype  # the server checks names and lists the allowed ones
    name: str | None = None
    if type(dtype).__module__ == "torch":  # a torch.dtype, recognized without importing torch
        name = str(dtype).removeprefix("torch.")
    elif dtype is not None:
        try:
            name = np.dtype(dtype).name  # np.float16, np.dtype("<f4"), ml_dtypes.bfloat16
        except TypeError:
            name = None
    if name not in DTYPES:
        raise ValueError(f"{field}: got {dtype!r}; allowed: {', '.join(DTYPES)}, as a string, a numpy or ml_dtypes dtype or a torch dtype")
    return name


def scheme_fields(catalogue: Mapping[str, Any]) -> dict[str, tuple[str, frozenset[str]]]:
    """From ``GET /schemes``: every scheme name and alias → (the scheme's name, its parameters)."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for scheme in catalogue.get("schemes", ()):
        params = frozenset(str(p["name"]) for p in scheme.get("parameters", ()))
        for name in (scheme["name"], *scheme.get("aliases", ())):
            out[str(name)] = (str(scheme["name"]), params)
    return out


def needs_catalogue(keys: Iterable[str]) -> bool:
    """Whether checking ``keys`` needs the server's catalogue (any key beyond the base fields)."""
    return not BASE_FIELDS.issuperset(keys)


def check_fields(scheme: Any, keys: Iterable[str], known: Mapping[str, tuple[str, frozenset[str]]], where: str) -> None:
    """Refuse the fields the server does not know for ``scheme``, naming them, before any request."""
    found = known.get(scheme) if isinstance(scheme, str) else None
    if found is None:
        return  # an unknown scheme: the server's answer lists the schemes and suggests the nearest
    canonical, params = found
    unknown = sorted(set(keys) - BASE_FIELDS - params)
    if unknown:
        allowed = ", ".join(sorted(BASE_FIELDS | params))
        plural = "s" if len(unknown) > 1 else ""
        raise TypeError(f"{where}: unknown field{plural} {', '.join(map(repr, unknown))}; allowed: the fields of {canonical}: {allowed}")
