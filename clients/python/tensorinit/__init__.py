"""tensorinit: reproducibly initialized tensors from the tensorinit service.

::

    from tensorinit import Client

    with Client() as client:                       # $TENSORINIT_URL or http://127.0.0.1:8000
        w = client.init("he_normal", (256, 128), name="fc.weight", seed=0)   # numpy float32
        client.init_module(model, [("*.bias", "zeros"), ("*.weight", "he_uniform")], seed=0)

:class:`AsyncClient` has the same methods as coroutines. Errors form one tree rooted at
:class:`TensorinitError` (see :mod:`tensorinit._errors`).
"""

from ._async_client import AsyncClient
from ._base import DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, __version__
from ._client import Client
from ._distributed import chunk_shard
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    FieldError,
    IntegrityError,
    NoMatchingRuleError,
    NotFound,
    PayloadTooLarge,
    RateLimitError,
    ServerError,
    ServiceUnavailable,
    TensorinitError,
    ValidationError,
)
from ._plan import Plan, Spec
from ._progress import ProgressCallback
from ._propagation import Layer, Moment, Network, Propagation, Verdict
from ._retry import RetryPolicy
from ._stats import Empirical, Histogram, KSTest, Stats, TensorStats, Theory

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "Empirical",
    "FieldError",
    "Histogram",
    "IntegrityError",
    "KSTest",
    "Layer",
    "Moment",
    "Network",
    "NoMatchingRuleError",
    "NotFound",
    "PayloadTooLarge",
    "Plan",
    "ProgressCallback",
    "Propagation",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "Spec",
    "Stats",
    "TensorStats",
    "TensorinitError",
    "Theory",
    "ValidationError",
    "Verdict",
    "__version__",
    "chunk_shard",
]
