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

from . import _distributed, _manifest, _rules, _safetensors, _torch
from ._errors import APIConnectionError, APIError, IntegrityError, from_response, from_transport
from ._fields import check_fields, dtype_name, needs_catalogue, require_name, require_named, scheme_fields
from ._plan import Plan
from ._propagation import Propagation
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
        if entry.get("dtype") is not None:
            entry["dtype"] = dtype_name(entry["dtype"], f"tensors[{name!r}].dtype")
        entries[name] = entry
    body: dict[str, Any] = {"seed": seed, "tensors": entries}
    if dtype is not None:
        body["dtype"] = dtype
    if convention is not None:
        body["convention"] = convention
    return body


def _with_dtype_names(request: Mapping[str, Any]) -> dict[str, Any]:
    """A request mapping (or a batch's tensors) with every ``dtype`` in any spelling (torch, numpy) as its name."""
    body = dict(request)
    if body.get("dtype") is not None:
        body["dtype"] = dtype_name(body["dtype"])
    if isinstance(body.get("tensors"), Mapping):
        body["tensors"] = {k: _with_dtype_names(v) if isinstance(v, Mapping) else v for k, v in body["tensors"].items()}
    return body


def stats_body(request: str | Mapping[str, Any], shape: Sequence[int] | None, fields: dict[str, Any], bins: int | None) -> dict[str, Any]:
    """A /stats body from either a whole request mapping or the arguments of ``init``."""
    if isinstance(request, Mapping):
        if shape is not None or fields["params"]:
            raise TypeError("stats(request_mapping) takes no shape or scheme parameters: they belong in the mapping")
        require_named(request, "stats")
        body = _with_dtype_names(request)
    else:
        if shape is None:
            raise TypeError("stats(scheme, shape, ...) needs a shape")
        params = fields.pop("params")
        fields["name"] = require_name(fields["name"], "stats")
        fields["dtype"] = dtype_name(fields["dtype"])
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


def download_body(request: Mapping[str, Any]) -> dict[str, Any]:
    """The body ``download`` posts: a single-tensor request must name its tensor."""
    require_named(request, "download")
    return _with_dtype_names(request)


def download_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where ``download`` puts the file, and the ``.part`` file it writes first."""
    target = Path(path)
    return target, target.with_name(target.name + ".part")


# -- planned calls ----------------------------------------------------------------------


Check = tuple[Any, frozenset[str], str]
"""Fields to check against the server's catalogue before a request: (scheme, field names, where)."""


def single_checks(scheme: Any, body: Mapping[str, Any], where: str) -> tuple[Check, ...]:
    """The check of one request's fields, when any goes beyond the base fields (else no catalogue is needed)."""
    return ((scheme, frozenset(body), where),) if needs_catalogue(body) else ()


def batch_checks(tensors: Mapping[str, Mapping[str, Any]], where: str) -> tuple[Check, ...]:
    return tuple(c for name, spec in tensors.items() for c in single_checks(spec.get("scheme"), spec, f"{where}: tensors[{name!r}]"))


@dataclass(frozen=True)
class Fetch(Generic[T]):
    """A planned ``POST /init``: its body, the framework and sink of its tensors, and how they become the result.

    ``body`` None means there is nothing to ask for: the result is ``finish({})``.
    ``checks``: fields the server's catalogue must know, checked before the request;
    ``label``: what a progress bar calls the transfer.
    """

    body: dict[str, Any] | None
    framework: str
    finish: Callable[[dict[str, Any]], T]
    sink: MemorySink | None = None
    checks: tuple[Check, ...] = ()
    label: str = "tensors"


@dataclass(frozen=True)
class Query(Generic[T]):
    """A planned JSON request, and how its decoded answer becomes the result (``checks`` as in :class:`Fetch`)."""

    method: str
    path: str
    finish: Callable[[Any], T]
    json: Any = None
    checks: tuple[Check, ...] = ()


def json_object(answer: Any) -> dict[str, Any]:
    """An endpoint's answer, typed as the JSON object it is documented to be."""
    result: dict[str, Any] = answer
    return result


def _nothing(result: T) -> Fetch[T]:
    return Fetch(None, "numpy", lambda served: result)


def _on_device(framework: str, device: Any) -> tuple[ScatterSink | None, Callable[[dict[str, Any]], dict[str, Any]]]:
    """The sink and the last step of a torch result on ``device``: staged in (pinned) host tensors, then one copy each."""

    def stay(served: dict[str, Any]) -> dict[str, Any]:
        return served

    if device is None:
        return None, stay
    if framework != "torch":
        raise ValueError(f"device: got {device!r} with framework {framework!r}; only framework='torch' takes a device")
    staging = _torch.Staging(device)
    if staging.device.type == "cpu":  # the tensors are views of the receive buffer already
        return None, stay
    sink = ScatterSink(staging.place)
    return sink, lambda served: staging.move(served, sink.placed)


def _framework(framework: str | None, out: Any) -> str:
    chosen = framework or ("torch" if _torch.is_tensor(out) else "numpy")
    _safetensors.check_framework(chosen)
    return chosen


def init_call(
    scheme: str,
    shape: Sequence[int],
    *,
    seed: int,
    dtype: Any,
    name: str | None,
    convention: str,
    framework: str | None,
    out: Any,
    device: Any,
    params: Mapping[str, Any],
) -> Fetch[Any]:
    """``init``: one tensor in ``framework`` (on ``device``), or received into ``out`` and ``out`` returned.

    ``dtype`` None is ``out``'s dtype, else float32; ``framework`` None is ``out``'s, else numpy.
    """
    key = require_name(name, "init")
    framework = _framework(framework, out)
    dtype = dtype_name(dtype) if dtype is not None else dtype_name(out.dtype, "out.dtype") if out is not None else "float32"
    body = single_body(scheme, shape, seed=seed, dtype=dtype, name=key, convention=convention, params=params)
    checks = single_checks(scheme, body, "init")
    if out is None:
        sink, move = _on_device(framework, device)
        return Fetch(body, framework, lambda served: pick_single(move(served), key), sink, checks, key)
    if device is not None:
        raise TypeError("init: out= and device= together; the tensor goes where out is")
    if _distributed.is_dtensor(out):
        raise TypeError(
            "init: out= is a DTensor; use init_module for a module of DTensors, or pass out.to_local() with its slice= of the full tensor"
        )
    if _torch.is_tensor(out):
        if framework != "torch":
            raise ValueError(f"out: is a torch tensor, so framework must be 'torch'; got {framework!r}")
        tensor = out
        tensor_sink = ScatterSink(_torch.place_out(tensor))

        def into_tensor(served: dict[str, Any]) -> Any:
            pick_single(served, key)
            _torch.fill(dict.fromkeys(served, tensor), served, tensor_sink.placed)
            return tensor

        return Fetch(body, "torch", into_tensor, tensor_sink, checks, key)
    if framework != "numpy":
        raise ValueError(f"out: is a numpy array, so framework must be 'numpy'; got {framework!r}")
    target: npt.NDArray[Any] = out
    sink = ScatterSink(_safetensors.place_array(target))

    def into_out(served: dict[str, Any]) -> npt.NDArray[Any]:
        array = pick_single(served, key)
        if not sink.placed:  # no Content-Length: the body went to the buffer
            np.copyto(target, array, casting="no")
        return target

    return Fetch(body, "numpy", into_out, sink, checks, key)


def init_many_call(
    tensors: Mapping[str, Mapping[str, Any]],
    *,
    seed: int,
    dtype: Any,
    convention: str | None,
    framework: str,
    device: Any = None,
    where: str = "init_many",
) -> Fetch[dict[str, Any]]:
    """``init_many``: the tensors keyed and ordered as requested (on ``device``); no request for none."""
    _safetensors.check_framework(framework)
    sink, move = _on_device(framework, device)
    if not tensors:
        return _nothing({})
    body = batch_body(tensors, seed=seed, dtype=None if dtype is None else dtype_name(dtype), convention=convention)
    names = list(tensors)
    return Fetch(body, framework, lambda served: in_request_order(move(served), names), sink, batch_checks(tensors, where))


def init_state_dict_call(
    shapes: Mapping[str, Sequence[int]], rules: Rules, *, seed: int, dtype: Any, convention: str | None, framework: str, device: Any = None
) -> Fetch[dict[str, Any]]:
    """``init_state_dict``: the rules applied to the names, then ``init_many``."""
    _safetensors.check_framework(framework)
    tensors = _rules.batch(shapes, rules)
    return init_many_call(
        tensors, seed=seed, dtype=dtype, convention=convention, framework=framework, device=device, where="init_state_dict"
    )


def _fill_call(
    body: dict[str, Any], targets: dict[str, torch.Tensor], label: str, transposed: set[str] | None = None, checks: tuple[Check, ...] = ()
) -> Fetch[list[str]]:
    """Set ``targets`` from the answer to ``body``: received straight into their storage where they allow it.

    ``transposed`` targets are the transpose of what is served: they always go through ``copy_``.
    """
    flipped = transposed or set()
    sink = ScatterSink(_torch.places({name: t for name, t in targets.items() if name not in flipped}))
    return Fetch(body, "torch", lambda served: _torch.fill(targets, served, sink.placed, flipped), sink, checks, label)


def init_module_call(
    module: torch.nn.Module,
    rules: Rules | None,
    *,
    recipe: str | None,
    recipe_params: Mapping[str, Any] | None,
    roles: Mapping[str, Sequence[str]] | None,
    kinds: _manifest.Kinds | None,
    seed: int,
    convention: str,
    buffers: bool,
    shard: _torch.Shard | None,
) -> Fetch[list[str]]:
    """``init_module``: by rules (a batch request, shards as slices) or by a recipe (a manifest of the module)."""
    label = type(module).__name__
    if recipe is None:
        if rules is None:
            raise TypeError("init_module needs rules or a recipe")
        if kinds is not None:
            raise TypeError("init_module(kinds=...) is for recipe=...: rules name each tensor's scheme themselves")
        found, shards, _ = _distributed.localize(_torch.targets(module, buffers=buffers), shard)  # empty shards: nothing to ask
        tensors = _torch.batch_tensors(found, rules, shards)
        if not tensors:
            return _nothing([])
        body = batch_body(tensors, seed=seed, dtype=None, convention=convention)
        return _fill_call(body, found, label, checks=batch_checks(tensors, "init_module"))
    described = _manifest.module_manifest(module, buffers=buffers, kinds=kinds)
    manifest = described.manifest
    # A DTensor's manifest entry already has the full shape; a plain tensor named in shard= gets it here.
    targets, shards, empty = _distributed.localize(described.tensors, shard)
    for name, full_shape in empty.items():  # kept in the manifest (a recipe reads siblings' shapes), served as nothing
        manifest[name] = {**manifest[name], "slice": _distributed.empty_slice(full_shape)}
    for name, (full, part) in shards.items():
        if name not in manifest:
            raise ValueError(f"shard names {name!r}, which is not a tensor of the module's manifest")
        if name in described.transposed:
            raise ValueError(f"{name}: an (in, out) weight (kinds= layout 'in_out') cannot be filled by shard; fill it whole")
        manifest[name] = {**manifest[name], "shape": list(full), "slice": part}
    body = _manifest.recipe_body(recipe, manifest, recipe_params=recipe_params, seed=seed, convention=convention, roles=roles, rules=rules)
    return _fill_call(body, targets, label, described.transposed)


def plan_module_call(
    module: torch.nn.Module,
    *,
    recipe: str,
    recipe_params: Mapping[str, Any] | None,
    roles: Mapping[str, Sequence[str]] | None,
    rules: Rules | None,
    kinds: _manifest.Kinds | None,
    seed: int,
    convention: str,
) -> Query[Plan]:
    """``plan_module``: ``POST /plan`` with the body ``init_module(recipe=...)`` would send."""
    manifest = _manifest.module_manifest(module, kinds=kinds).manifest
    body = _manifest.recipe_body(recipe, manifest, recipe_params=recipe_params, seed=seed, convention=convention, roles=roles, rules=rules)
    return Query("POST", "/plan", Plan.from_json, json=body)


def plan_call(
    tensors: Mapping[str, Mapping[str, Any]],
    *,
    recipe: str,
    recipe_params: Mapping[str, Any] | None,
    roles: Mapping[str, Sequence[str]] | None,
    rules: Rules | None,
    seed: int,
    dtype: Any,
    convention: str | None,
) -> Query[Plan]:
    """``plan``: ``POST /plan`` for a manifest (``{name: {"shape", "kind"?, "role"?, "dtype"?, "attributes"?}}``)."""
    manifest = {
        name: _with_dtype_names({**entry, "shape": shape_list(entry["shape"])} if "shape" in entry else entry)
        for name, entry in tensors.items()
    }
    body = _manifest.recipe_body(
        recipe,
        manifest,
        recipe_params=recipe_params,
        seed=seed,
        convention=convention,
        roles=roles,
        rules=rules,
        dtype=None if dtype is None else dtype_name(dtype),
    )
    return Query("POST", "/plan", Plan.from_json, json=body)


class _NotGiven:
    """A keyword left out (for fields where None means something: ``bias=None`` is no bias)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()


def propagation_call(fields: Mapping[str, Any]) -> Query[Propagation]:
    """``propagation``: ``POST /propagation`` with the fields given (the server's defaults for the rest)."""
    body = {key: value for key, value in fields.items() if value is not NOT_GIVEN}
    if body.get("dtype") is not None:
        body["dtype"] = dtype_name(body["dtype"])
    return Query("POST", "/propagation", Propagation.from_json, json=body)


def catalogue_call() -> Query[dict[str, tuple[str, frozenset[str]]]]:
    """The schemes' fields, from ``GET /schemes``: what :data:`Check` entries are checked against."""
    return Query("GET", "/schemes", scheme_fields)


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


@dataclass(frozen=True)
class Sharded(Generic[T]):
    """Several planned fetches (one per round of distinct shards) and how their results become one."""

    calls: list[Fetch[dict[str, Any]]]
    combine: Callable[[list[dict[str, Any]]], T]


def _shardings_by_name(manifest: Mapping[str, Any], shardings: Any, tree: Mapping[str, Any] | None, sep: str) -> dict[str, Any]:
    """name → Sharding (or None) from a single Sharding for every leaf, or a tree shaped like ``tree``."""
    if not isinstance(shardings, Mapping):
        return dict.fromkeys(manifest, shardings)
    flat = {sep.join(path): leaf for path, leaf in _manifest.leaves(shardings)}
    unknown = sorted(set(flat) - set(manifest))
    if unknown:
        raise ValueError(f"shardings names leaves the tree does not have: {unknown}")
    return {name: flat.get(name) for name in manifest}


def init_tree_sharded_call(
    tree: Mapping[str, Any],
    kinds: Mapping[str, str],
    shardings: Any,
    *,
    recipe: str,
    recipe_params: Mapping[str, Any] | None,
    roles: Mapping[str, Sequence[str]] | None,
    rules: Rules | None,
    seed: int,
    convention: str,
    sep: str,
) -> Sharded[dict[str, Any]]:
    """``init_tree(shardings=...)``: each distinct addressable shard fetched once, the leaves built as ``jax.Array``.

    Every round sends the whole manifest (the recipe sees every tensor, full shapes), with
    each entry sliced to its shard of that round, or to an empty slice when it has none.
    """
    manifest = _manifest.tree_manifest(tree, kinds, sep=sep)
    by_name = _shardings_by_name(manifest, shardings, tree, sep)
    shapes = {name: entry["shape"] for name, entry in manifest.items()}
    rounds = _distributed.shard_rounds(shapes, by_name)
    calls: list[Fetch[dict[str, Any]]] = []
    for parts in rounds:
        sliced: dict[str, Any] = {}
        for name, entry in manifest.items():
            part = parts[name] if name in parts else _distributed.empty_slice(entry["shape"])
            sliced[name] = entry if part is None else {**entry, "slice": part}
        body = _manifest.recipe_body(
            recipe, sliced, recipe_params=recipe_params, seed=seed, convention=convention, roles=roles, rules=rules
        )
        calls.append(Fetch(body, "numpy", lambda served: served))

    def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
        pieces: dict[str, dict[str | None, Any]] = {name: {} for name in manifest}
        for parts, served in zip(rounds, results, strict=True):
            for name, part in parts.items():
                if name in served:
                    pieces[name][part] = served[name]
        arrays: dict[str, Any] = {}
        for name, sharding in by_name.items():
            if not pieces[name]:
                continue  # left out by a null rule: the leaf keeps its value
            if sharding is None:
                arrays[name] = pieces[name][None]
            else:
                arrays[name] = _distributed.make_jax_array(shapes[name], sharding, pieces[name])
        return _manifest.unflatten(tree, arrays, sep=sep)

    return Sharded(calls, combine)


def init_sharded_call(
    scheme: str,
    shape: Sequence[int],
    sharding: Any,
    *,
    seed: int,
    dtype: Any,
    name: str | None,
    convention: str,
    params: Mapping[str, Any],
) -> Sharded[Any]:
    """``init(sharding=...)``: one request per distinct addressable shard, built into a ``jax.Array``."""
    key = require_name(name, "init")
    if "slice" in params:
        raise TypeError("init: sharding= and slice= together; the sharding's shards are the slices")
    full = shape_list(shape)
    parts = [r[key] for r in _distributed.shard_rounds({key: full}, {key: sharding})]
    body = single_body(scheme, full, seed=seed, dtype=dtype_name(dtype or "float32"), name=key, convention=convention, params=params)
    checks = single_checks(scheme, body, "init")
    calls = [Fetch({**body, "slice": part}, "numpy", lambda served: served, None, checks, key) for part in parts]

    def combine(results: list[dict[str, Any]]) -> Any:
        pieces = {part: pick_single(served, key) for part, served in zip(parts, results, strict=True)}
        return _distributed.make_jax_array(full, sharding, pieces)

    return Sharded(calls, combine)


def stats_call(
    request: str | Mapping[str, Any],
    shape: Sequence[int] | None,
    *,
    seed: int,
    dtype: Any,
    name: str | None,
    convention: str,
    bins: int | None,
    params: dict[str, Any],
) -> Query[Stats]:
    """``stats``: ``POST /stats`` with a whole request mapping or the arguments of ``init``."""
    fields = {"seed": seed, "dtype": dtype, "name": name, "convention": convention, "params": params}
    body = stats_body(request, shape, fields, bins)
    checks = () if isinstance(request, Mapping) else single_checks(request, {k: v for k, v in body.items() if k != "bins"}, "stats")
    return Query("POST", "/stats", Stats.from_json, json=body, checks=checks)


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

        self._catalogue: dict[str, tuple[str, frozenset[str]]] | None = None  # GET /schemes, fetched once when a check needs it

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def check(self, checks: tuple[Check, ...]) -> None:
        """Refuse any field the catalogue does not know (the twins fetch it first when ``checks`` is not empty)."""
        for scheme, fields, where in checks:
            check_fields(scheme, fields, self._catalogue or {}, where)

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
