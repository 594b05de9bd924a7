"""The resolved spec: a request with every number made explicit.

A :class:`ResolvedSpec` alone determines the output bytes (together with
:data:`ALGORITHM_VERSION`). Its canonical JSON (sorted keys, no spaces, shortest
round-trip floats) is what is hashed for ETags and written into safetensors metadata.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any, Literal

import ml_dtypes
import numpy as np

from .errors import InvalidParameterError
from .slices import sliced_shape

ALGORITHM_VERSION = 2
"""The newest algorithm, the default of every request (``service.core.algorithms`` holds one module per version)."""

# dtype name -> (numpy dtype of the output, numpy dtype the numbers are drawn in, safetensors code)
DTYPES: dict[str, tuple[np.dtype[Any], np.dtype[Any], str]] = {
    "float32": (np.dtype("<f4"), np.dtype("<f4"), "F32"),
    "float64": (np.dtype("<f8"), np.dtype("<f8"), "F64"),
    "float16": (np.dtype("<f2"), np.dtype("<f4"), "F16"),
    "bfloat16": (np.dtype(ml_dtypes.bfloat16), np.dtype("<f4"), "BF16"),
}
DTYPE_ALIASES: dict[str, str] = {
    "f32": "float32",
    "fp32": "float32",
    "F32": "float32",
    "f64": "float64",
    "fp64": "float64",
    "F64": "float64",
    "f16": "float16",
    "fp16": "float16",
    "half": "float16",
    "F16": "float16",
    "bf16": "bfloat16",
    "BF16": "bfloat16",
}


@dataclass(frozen=True)
class Constant:
    """Every element equals ``value``."""

    value: float
    kind: Literal["constant"] = "constant"


@dataclass(frozen=True)
class Uniform:
    """U[low, high): ``low + (high - low) * u`` with u uniform on [0, 1)."""

    low: float
    high: float
    kind: Literal["uniform"] = "uniform"


@dataclass(frozen=True)
class Normal:
    """N(mean, std²), untruncated."""

    mean: float
    std: float
    kind: Literal["normal"] = "normal"


@dataclass(frozen=True)
class TruncatedNormal:
    """N(mean, std²) conditioned on [low, high]; std is the std *before* truncation, bounds absolute."""

    mean: float
    std: float
    low: float
    high: float
    kind: Literal["truncated_normal"] = "truncated_normal"


@dataclass(frozen=True)
class Orthogonal:
    """gain · Q, Q from the QR of a (rows, cols) Gaussian matrix with sign(diag R) folded in.

    ``column_axis`` None: torch flattening, rows = shape[0], cols = numel / rows, plain
    reshape. An int: the axis that becomes the matrix's columns (Keras: last axis; JAX:
    ``column_axis``), rows = product of the other axes, the matrix reshaped with that axis
    last and moved back into place.
    """

    gain: float
    rows: int
    cols: int
    column_axis: int | None
    kind: Literal["orthogonal"] = "orthogonal"


@dataclass(frozen=True)
class Identity:
    """gain · eye(shape[-2], shape[-1]), repeated over every leading (batch) axis."""

    gain: float
    kind: Literal["identity"] = "identity"


@dataclass(frozen=True)
class Dirac:
    """torch ``dirac_``: ones at the kernel centre linking output channel g·(out/groups)+d to input d."""

    groups: int
    centre: tuple[int, ...]
    layout: Literal["out_in_kernel", "kernel_in_out"]
    kind: Literal["dirac"] = "dirac"


@dataclass(frozen=True)
class DeltaOrthogonal:
    """JAX ``delta_orthogonal``: an orthogonal (in, out) matrix times gain at the kernel centre, zeros elsewhere."""

    gain: float
    centre: tuple[int, ...]
    layout: Literal["out_in_kernel", "kernel_in_out"]
    kind: Literal["delta_orthogonal"] = "delta_orthogonal"


@dataclass(frozen=True)
class Sparse:
    """torch ``sparse_``: N(0, std²), then ``zeros_per_column`` entries of every column set to zero."""

    std: float
    sparsity: float
    zeros_per_column: int
    kind: Literal["sparse"] = "sparse"


Distribution = Constant | Uniform | Normal | TruncatedNormal | Orthogonal | Identity | Dirac | DeltaOrthogonal | Sparse
ELEMENTWISE = (Constant, Uniform, Normal, TruncatedNormal)  # each element a function of (stream key, element index)
INDEXED = (Identity, Dirac, DeltaOrthogonal)  # each element a function of its index (and a small matrix)
MATERIALIZED = (Orthogonal, Sparse)  # computed whole, then served in slices


@dataclass(frozen=True)
class ResolvedSpec:
    """Everything that defines one tensor's bytes, with nothing left to a default."""

    name: str
    scheme: str
    convention: str
    shape: tuple[int, ...]
    dtype: str
    seed: int
    distribution: Distribution
    fan_in: int | None = None
    fan_out: int | None = None
    gain: float | None = None
    # How the distribution's numbers were derived (mode, fan used, scale, target std,
    # truncation correction...): informative, already folded into ``distribution``.
    derivation: tuple[tuple[str, Any], ...] = field(default=())
    algorithm: int = ALGORITHM_VERSION
    # The part of the tensor served, one normalized (start, stop, step) per axis of
    # ``shape`` (service.core.slices); None is the whole tensor. The bytes are those of
    # ``full[slice]``: ``shape``, the fans and the distribution are the full tensor's.
    slice: tuple[tuple[int, int, int], ...] | None = None
    # A post-step that is part of the bytes: rows [start, stop) of axis 0 set to value,
    # after the distribution is drawn (torch Embedding's padding_idx row, Keras' LSTM
    # forget-gate bias). Only for elementwise distributions. Left out of the canonical
    # JSON when empty, so the specs (and ETags) of every other request are unchanged.
    fill_rows: tuple[tuple[int, int, float], ...] = ()

    @cached_property
    def out_shape(self) -> tuple[int, ...]:
        """The shape of the served array: ``shape``, or the slice's shape."""
        if self.slice is None:
            return self.shape
        return sliced_shape(self.shape, self.slice)

    @property
    def full_numel(self) -> int:
        return math.prod(self.shape)

    @property
    def numel(self) -> int:
        """Elements served (of the slice, if there is one)."""
        return math.prod(self.out_shape)

    def unsliced(self) -> ResolvedSpec:
        """The whole tensor's spec (this one without its slice)."""
        return self if self.slice is None else replace(self, slice=None)

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return DTYPES[self.dtype][0]

    @property
    def compute_dtype(self) -> np.dtype[Any]:
        return DTYPES[self.dtype][1]

    @property
    def safetensors_dtype(self) -> str:
        return DTYPES[self.dtype][2]

    @property
    def nbytes(self) -> int:
        return self.numel * self.np_dtype.itemsize

    def with_seed(self, seed: int) -> ResolvedSpec:
        """The same spec with another seed (resolution never depends on the seed).

        ``dataclasses.replace`` would run ``__init__`` over every field again; this is
        on the path of every small request, so: the same fields but the seed, and no
        cached digest carried over.
        """
        check_seed(seed)
        twin = object.__new__(ResolvedSpec)
        state = twin.__dict__
        state.update(self.__dict__)
        state["seed"] = seed
        state.pop("_digest", None)
        state.pop("out_shape", None)
        return twin

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: tuples become lists, the derivation a mapping.

        Shallow by hand rather than ``dataclasses.asdict`` (which deep-copies every
        value): this is on every request's path, and ~10x cheaper this way.
        """
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["shape"] = list(self.shape)
        d["derivation"] = dict(self.derivation)
        d["slice"] = None if self.slice is None else [list(s) for s in self.slice]
        if self.fill_rows:
            d["fill_rows"] = [list(rows) for rows in self.fill_rows]
        else:
            del d["fill_rows"]
        d["distribution"] = {
            f.name: list(value) if isinstance(value := getattr(self.distribution, f.name), tuple) else value
            for f in fields(self.distribution)
        }
        return d

    def canonical_json(self) -> str:
        return canonical_json(self.to_dict())

    @cached_property
    def _digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def digest(self) -> str:
        """sha256 of the canonical JSON: the identity of this tensor's bytes."""
        return self._digest


def check_seed(seed: object) -> int:
    """``seed`` if it is an integer with 0 ≤ seed < 2^64."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise InvalidParameterError("seed", seed, "an integer with 0 ≤ seed < 2^64")
    return seed


def canonical_json(value: Any) -> str:
    """Sorted keys, compact separators, shortest round-trip floats, no NaN/Infinity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
