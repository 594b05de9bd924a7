"""The engine: pure numpy, no web framework.

Request → :func:`resolve` → :class:`ResolvedSpec` (every number explicit) →
:class:`Tensor` (blocks of numbers) → bytes or :func:`compute_stats`.
"""

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
from .sampling import BLOCK_ELEMENTS, stream_key
from .schemes import SCHEMES, Limits, Param, Scheme, lookup, resolve
from .spec import ALGORITHM_VERSION, DTYPES, ResolvedSpec, canonical_json
from .streams import Tensor, default_executor, generate, inner_executor

__all__ = [
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
