"""The frozen generation algorithms, one module per version, behind one interface.

A version's module defines every byte it produces (docs/algorithm.md). Versions are
frozen once released: a change of bytes is a new module registered here beside the
old ones, and requests name the version they want (default: the newest).

Algorithm 1 (SFC64 blocks and numpy's samplers, LAPACK for orthogonal) was retired
before any release depended on it: its bytes depended on the CPU's BLAS kernel.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from ..errors import InvalidParameterError
from ..spec import ALGORITHM_VERSION, ResolvedSpec, Sparse
from . import v2


class Algorithm(Protocol):
    """What the engine asks of an algorithm version."""

    VERSION: int

    def stream_key(self, seed: int, name: str, label: str = "values") -> int: ...

    def fill(self, spec: ResolvedSpec, key: int, start: int, out: np.ndarray[Any, Any]) -> None: ...

    def orthogonal_matrix(self, key: int, rows: int, cols: int, gain: float, executor: Executor | None = None) -> np.ndarray[Any, Any]: ...

    def sparse_matrix(self, spec: ResolvedSpec, dist: Sparse, executor: Executor | None = None) -> np.ndarray[Any, Any]: ...

    def warm_up(self) -> None: ...


ALGORITHMS: dict[int, Algorithm] = {v2.VERSION: v2}
LATEST = max(ALGORITHMS)
assert LATEST == ALGORITHM_VERSION, "spec.ALGORITHM_VERSION names the newest registered algorithm"


def check_algorithm(version: object) -> int:
    """``version`` if it names a served algorithm."""
    if isinstance(version, bool) or not isinstance(version, int) or version not in ALGORITHMS:
        raise InvalidParameterError("algorithm", version, "one of " + ", ".join(str(v) for v in sorted(ALGORITHMS)))
    return version


def get(version: int) -> Algorithm:
    """The module of algorithm ``version`` (validated with :func:`check_algorithm`)."""
    return ALGORITHMS[check_algorithm(version)]


def warm_up() -> None:
    """Compile (or load from cache) every served algorithm's kernels."""
    for algorithm in ALGORITHMS.values():
        algorithm.warm_up()
