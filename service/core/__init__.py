"""The engine: numpy and numba kernels, no web framework.

Request → :func:`resolve` → :class:`ResolvedSpec` (every number explicit) →
:class:`Tensor` (blocks of numbers) → bytes or :func:`compute_stats`.
"""

from .algorithms import ALGORITHMS
from .errors import (
    InvalidParameterError,
    InvalidShapeError,
    LimitExceededError,
    MissingParameterError,
    TensorinitError,
    UnknownParameterError,
    UnknownSchemeError,
)
from .fans import CONVENTIONS, NONLINEARITIES, Fans, calculate_gain, compute_fans
from .schemes import SCHEMES, Limits, Param, Scheme, lookup, resolve
from .spec import ALGORITHM_VERSION, DTYPES, ResolvedSpec, canonical_json
from .streams import BLOCK_ELEMENTS, Tensor, default_executor, generate, inner_executor, stream_key

__all__ = [
    "ALGORITHMS",
    "ALGORITHM_VERSION",
    "BLOCK_ELEMENTS",
    "CONVENTIONS",
    "DTYPES",
    "NONLINEARITIES",
    "SCHEMES",
    "Fans",
    "InvalidParameterError",
    "InvalidShapeError",
    "LimitExceededError",
    "Limits",
    "MissingParameterError",
    "Param",
    "ResolvedSpec",
    "Scheme",
    "Tensor",
    "TensorinitError",
    "UnknownParameterError",
    "UnknownSchemeError",
    "calculate_gain",
    "canonical_json",
    "compute_fans",
    "default_executor",
    "generate",
    "inner_executor",
    "lookup",
    "resolve",
    "stream_key",
]
