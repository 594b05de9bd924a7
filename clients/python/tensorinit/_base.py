"""What the sync and async clients share: configuration, request bodies, retry decisions,
error mapping and the post-processing of a received body. Everything here is free of
I/O; :mod:`tensorinit._client` and :mod:`tensorinit._async_client` only add the awaits.
"""

from __future__ import annotations

import functools
import os
import ssl
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import httpx

from . import _safetensors
from ._errors import APIConnectionError, APIError, IntegrityError, from_response, from_transport
from ._retry import RetryPolicy, parse_retry_after
from ._stats import Stats

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


# connect: a local or LAN service answers in milliseconds, 5 s means it is not there.
# read: the longest silence between two chunks (or before the first byte: an orthogonal
# matrix is factorized before streaming starts), not the length of the whole transfer.
@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's own default context (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else certifi), made once per process.

    Every ``httpx.Client()`` otherwise builds one, loading the whole CA bundle: 45-70 ms
    measured here, a tenth of a 256 MiB ``with Client(url) as c: c.init(...)``. A context
    is meant to be shared by connections; the environment is read at first use.
    """
    return httpx.create_ssl_context()


DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=60.0, pool=10.0)
DEFAULT_MAX_RETRIES = 3
JSON_ACCEPT = "application/json, application/problem+json"
FILE_ACCEPT = "application/octet-stream, application/problem+json"

SINGLE_FIELDS = ("scheme", "shape", "seed", "dtype", "name", "convention", "in_axes", "out_axes", "batch_axes")


def base_url_from(base_url: str | httpx.URL | None) -> str:
    url = str(base_url or os.environ.get("TENSORINIT_URL") or DEFAULT_BASE_URL)
    return url.rstrip("/")


def shape_list(shape: Sequence[int]) -> list[int]:
    # torch.Size, numpy ints and tuples all become plain JSON integers.
    return [int(d) for d in shape]


def single_body(
    scheme: str,
    shape: Sequence[int],
    *,
    seed: int,
    dtype: str,
    name: str,
    convention: str,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scheme": scheme,
        "shape": shape_list(shape),
        "seed": seed,
        "dtype": dtype,
        "name": name,
        "convention": convention,
    }
    for key, value in params.items():
        if value is not None:
            body[key] = list(value) if key.endswith("_axes") else value
    return body


def batch_body(tensors: Mapping[str, Mapping[str, Any]], *, seed: int, dtype: str | None, convention: str | None) -> dict[str, Any]:
    entries: dict[str, dict[str, Any]] = {}
    for name, spec in tensors.items():
        entry = dict(spec)
        if "shape" in entry:
            entry["shape"] = shape_list(entry["shape"])
        entries[name] = entry
    body: dict[str, Any] = {"seed": seed, "tensors": entries}
    if dtype is not None:
        body["dtype"] = dtype
    if convention is not None:
        body["convention"] = convention
    return body


def stats_body(request: str | Mapping[str, Any], shape: Sequence[int] | None, fields: dict[str, Any], bins: int | None) -> dict[str, Any]:
    """A /stats body from either a whole request mapping or the arguments of ``init``."""
    if isinstance(request, Mapping):
        if shape is not None or fields["params"]:
            raise TypeError("stats(request_mapping) takes no shape or scheme parameters: they belong in the mapping")
        body = dict(request)
    else:
        if shape is None:
            raise TypeError("stats(scheme, shape, ...) needs a shape")
        params = fields.pop("params")
        body = single_body(request, shape, params=params, **fields)
    if bins is not None:
        body["bins"] = bins
    return body


def pick_single(arrays: dict[str, Any], name: str) -> Any:
    """The one tensor of a single-tensor file (the server NFC-normalizes names)."""
    if len(arrays) != 1:
        raise IntegrityError(f"expected one tensor named {name!r}, the body holds {sorted(arrays)}")
    return next(iter(arrays.values()))


def in_request_order(arrays: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Arrays keyed and ordered as requested (the file orders them by dtype, then name)."""
    out = {}
    for name in names:
        key = unicodedata.normalize("NFC", name)
        if key not in arrays:
            raise IntegrityError(f"tensor {name!r} was requested but is not in the body (it holds {sorted(arrays)})")
        out[name] = arrays[key]
    return out


class BaseClient:
    """Configuration and every decision that does not need I/O."""

    def __init__(
        self,
        base_url: str | httpx.URL | None,
        *,
        timeout: float | httpx.Timeout | None,
        max_retries: int | RetryPolicy,
        api_key: str | None,
    ) -> None:
        self.base_url = base_url_from(base_url)
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry = max_retries if isinstance(max_retries, RetryPolicy) else RetryPolicy(max_retries=max_retries)
        api_key = api_key if api_key is not None else os.environ.get("TENSORINIT_API_KEY")
        self.headers = {"User-Agent": f"tensorinit-python/{__version__} httpx/{httpx.__version__}"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def url(self, path: str) -> str:
        return self.base_url + path

    def delay_after_status(self, response: httpx.Response, body: bytes, failures: int) -> float:
        """Seconds to wait before the next attempt; raises the mapped APIError when not to retry."""
        retry_after = parse_retry_after(response)
        delay = self.retry.delay_for_status(response.status_code, retry_after, failures)
        if delay is None:
            raise from_response(response, body, retry_after) from None
        return delay

    def delay_after_transport(self, exc: httpx.TransportError | str, failures: int) -> float:
        """Seconds to wait after a connection failure; raises the mapped error when exhausted."""
        delay = self.retry.delay_for_transport(failures)
        if delay is None:
            self.raise_transport(exc)
        return delay

    @staticmethod
    def raise_transport(exc: httpx.TransportError | str) -> NoReturn:
        raise (APIConnectionError(exc) if isinstance(exc, str) else from_transport(exc)) from None

    @staticmethod
    def decode_json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise APIError(response.status_code, title="invalid JSON", detail=response.text[:500]) from None

    @staticmethod
    def check_stats(digests: dict[str, str], stats: Stats, etag: str | None) -> None:
        if etag is not None and stats.etag is not None and etag != stats.etag:
            raise IntegrityError(f"/init sent ETag {etag} but /stats describes {stats.etag}")
        _safetensors.check_digests(digests, {unicodedata.normalize("NFC", k): v for k, v in stats.sha256.items()})
