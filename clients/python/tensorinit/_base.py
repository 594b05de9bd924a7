"""What the sync and async clients share: configuration, request bodies, retry decisions,
error mapping and the post-processing of a received body. Everything here is free of
I/O; :mod:`tensorinit._client` and :mod:`tensorinit._async_client` only add the awaits.

Each public method of a client checks and plans its call here, before any request: a
:class:`Fetch` (the ``POST /init`` body, where its bytes go, and how the served tensors
become the method's result) or a :class:`Query` (a JSON request and how its answer
becomes the result). The client then only sends it, waits, and hands the answer to
``finish``; an :class:`Attempts` counts the failures of one call and decides each wait.
"""

from __future__ import annotations

import functools
import os
import ssl
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt

from . import _manifest, _rules, _safetensors, _torch
from ._errors import APIConnectionError, APIError, IntegrityError, from_response, from_transport
from ._receive import MemorySink, Receiver, ScatterSink
from ._retry import RetryPolicy, parse_retry_after
from ._rules import Rules
from ._stats import Stats

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

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


def received(sink: MemorySink) -> tuple[_safetensors.Buffer, _safetensors.Header]:
    """The whole body a sink holds once the transfer is complete, and its checked header."""
    buffer = sink.take()
    return buffer, _safetensors.parse_header(buffer, len(buffer))


def download_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where ``download`` puts the file, and the ``.part`` file it writes first."""
    target = Path(path)
    return target, target.with_name(target.name + ".part")


# -- planned calls ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fetch(Generic[T]):
    """A planned ``POST /init``: its body, the framework and sink of its tensors, and how they become the result.

    ``body`` None means there is nothing to ask for: the result is ``finish({})``.
    """

    body: dict[str, Any] | None
    framework: str
    finish: Callable[[dict[str, Any]], T]
    sink: MemorySink | None = None


@dataclass(frozen=True)
class Query(Generic[T]):
    """A planned JSON request, and how its decoded answer becomes the result."""

    method: str
    path: str
    finish: Callable[[Any], T]
    json: Any = None


def json_object(answer: Any) -> dict[str, Any]:
    """An endpoint's answer, typed as the JSON object it is documented to be."""
    result: dict[str, Any] = answer
    return result


def _nothing(result: T) -> Fetch[T]:
    return Fetch(None, "numpy", lambda served: result)


def init_call(
    scheme: str,
    shape: Sequence[int],
    *,
    seed: int,
    dtype: str,
    name: str,
    convention: str,
    framework: str,
    out: npt.NDArray[Any] | None,
    params: Mapping[str, Any],
) -> Fetch[Any]:
    """``init``: one tensor in ``framework``, or received into ``out`` and ``out`` returned."""
    _safetensors.check_framework(framework)
    body = single_body(scheme, shape, seed=seed, dtype=dtype, name=name, convention=convention, params=params)
    if out is None:
        return Fetch(body, framework, lambda served: pick_single(served, name))
    if framework != "numpy":
        raise ValueError(f"out: is a numpy array, so framework must be 'numpy'; got {framework!r}")
    target = out
    sink = ScatterSink(_safetensors.place_array(target))

    def into_out(served: dict[str, Any]) -> npt.NDArray[Any]:
        array = pick_single(served, name)
        if not sink.placed:  # no Content-Length: the body went to the buffer
            np.copyto(target, array, casting="no")
        return target

    return Fetch(body, "numpy", into_out, sink)


def init_many_call(
    tensors: Mapping[str, Mapping[str, Any]], *, seed: int, dtype: str | None, convention: str | None, framework: str
) -> Fetch[dict[str, Any]]:
    """``init_many``: the tensors keyed and ordered as requested; no request for none."""
    _safetensors.check_framework(framework)
    if not tensors:
        return _nothing({})
    body = batch_body(tensors, seed=seed, dtype=dtype, convention=convention)
    names = list(tensors)
    return Fetch(body, framework, lambda served: in_request_order(served, names))


def init_state_dict_call(
    shapes: Mapping[str, Sequence[int]], rules: Rules, *, seed: int, dtype: str | None, convention: str | None, framework: str
) -> Fetch[dict[str, Any]]:
    """``init_state_dict``: the rules applied to the names, then ``init_many``."""
    _safetensors.check_framework(framework)
    tensors = _rules.batch(shapes, rules)
    return init_many_call(tensors, seed=seed, dtype=dtype, convention=convention, framework=framework)


def _fill_call(body: dict[str, Any], targets: dict[str, torch.Tensor]) -> Fetch[list[str]]:
    """Set ``targets`` from the answer to ``body``: received straight into their storage where they allow it."""
    sink = ScatterSink(_torch.places(targets))
    return Fetch(body, "torch", lambda served: _torch.fill(targets, served, sink.placed), sink)


def init_module_call(
    module: torch.nn.Module,
    rules: Rules | None,
    *,
    recipe: str | None,
    recipe_params: Mapping[str, Any] | None,
    roles: Mapping[str, Sequence[str]] | None,
    seed: int,
    convention: str,
    buffers: bool,
    shard: _torch.Shard | None,
) -> Fetch[list[str]]:
    """``init_module``: by rules (a batch request, shards as slices) or by a recipe (a manifest of the module)."""
    if recipe is None:
        if rules is None:
            raise TypeError("init_module needs rules or a recipe")
        found = _torch.targets(module, buffers=buffers)
        tensors = _torch.batch_tensors(found, rules, shard)
        if not tensors:
            return _nothing([])
        return _fill_call(batch_body(tensors, seed=seed, dtype=None, convention=convention), found)
    if shard is not None:
        raise TypeError("init_module(recipe=...) does not take shard: a recipe request serves whole tensors")
    manifest, targets = _manifest.module_manifest(module, buffers=buffers)
    body = _manifest.recipe_body(recipe, manifest, recipe_params=recipe_params, seed=seed, convention=convention, roles=roles, rules=rules)
    return _fill_call(body, targets)


def plan_module_call(
    module: torch.nn.Module,
    *,
    recipe: str,
    recipe_params: Mapping[str, Any] | None,
    roles: Mapping[str, Sequence[str]] | None,
    rules: Rules | None,
    seed: int,
    convention: str,
) -> Query[dict[str, Any]]:
    """``plan_module``: ``POST /plan`` with the body ``init_module(recipe=...)`` would send."""
    manifest, _ = _manifest.module_manifest(module)
    body = _manifest.recipe_body(recipe, manifest, recipe_params=recipe_params, seed=seed, convention=convention, roles=roles, rules=rules)
    return Query("POST", "/plan", json_object, json=body)


def init_tree_call(
    tree: Mapping[str, Any],
    kinds: Mapping[str, str],
    *,
    recipe: str,
    recipe_params: Mapping[str, Any] | None,
    roles: Mapping[str, Sequence[str]] | None,
    rules: Rules | None,
    seed: int,
    convention: str,
    sep: str,
) -> Fetch[dict[str, Any]]:
    """``init_tree``: the tree's manifest by a recipe, the served arrays put back into the tree's shape."""
    manifest = _manifest.tree_manifest(tree, kinds, sep=sep)
    body = _manifest.recipe_body(recipe, manifest, recipe_params=recipe_params, seed=seed, convention=convention, roles=roles, rules=rules)
    return Fetch(body, "numpy", lambda served: _manifest.unflatten(tree, served, sep=sep))


def stats_call(
    request: str | Mapping[str, Any],
    shape: Sequence[int] | None,
    *,
    seed: int,
    dtype: str,
    name: str,
    convention: str,
    bins: int | None,
    params: dict[str, Any],
) -> Query[Stats]:
    """``stats``: ``POST /stats`` with a whole request mapping or the arguments of ``init``."""
    fields = {"seed": seed, "dtype": dtype, "name": name, "convention": convention, "params": params}
    return Query("POST", "/stats", Stats.from_json, json=stats_body(request, shape, fields, bins))


def schemes_call(name: str | None) -> Query[dict[str, Any]]:
    """``schemes``: the catalogue, or one entry by name or alias."""
    return Query("GET", "/schemes" if name is None else f"/schemes/{quote(name, safe='')}", json_object)


def models_call() -> Query[dict[str, Any]]:
    return Query("GET", "/models", json_object)


def version_call() -> Query[dict[str, Any]]:
    return Query("GET", "/version", json_object)


class Attempts:
    """The failed attempts of one call so far and the wait before the next; raises the mapped error when none is left."""

    def __init__(self, retry: RetryPolicy) -> None:
        self.retry = retry
        self.failures = 0

    def after_status(self, response: httpx.Response, body: bytes) -> float:
        """Seconds to wait after an error status; raises the mapped APIError when not to retry."""
        self.failures += 1
        retry_after = parse_retry_after(response)
        delay = self.retry.delay_for_status(response.status_code, retry_after, self.failures)
        if delay is None:
            raise from_response(response, body, retry_after) from None
        return delay

    def after_transport(self, exc: httpx.TransportError | str, *, progressed: bool = False) -> float:
        """Seconds to wait after a connection failure or a cut body; raises the mapped error when exhausted."""
        # A cut that brought new bytes starts a fresh count: length alone never exhausts retries.
        self.failures = 1 if progressed else self.failures + 1
        delay = self.retry.delay_for_transport(self.failures)
        if delay is None:
            raise (APIConnectionError(exc) if isinstance(exc, str) else from_transport(exc)) from None
        return delay


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

    def attempts(self) -> Attempts:
        return Attempts(self.retry)

    def json_headers(self) -> dict[str, str]:
        return {**self.headers, "Accept": JSON_ACCEPT}

    def file_headers(self, rx: Receiver) -> dict[str, str]:
        """The headers of one attempt at ``POST /init``: a resumed one carries Range + If-Range."""
        return {**self.headers, "Accept": FILE_ACCEPT, **rx.request_headers()}

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
