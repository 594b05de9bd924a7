"""The synchronous client. :mod:`tensorinit._async_client` is its line-for-line twin."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import httpx
import numpy.typing as npt

from . import _checkpoint, _safetensors, _torch
from ._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    BaseClient,
    Fetch,
    Query,
    T,
    download_paths,
    init_call,
    init_many_call,
    init_module_call,
    init_state_dict_call,
    init_tree_call,
    models_call,
    plan_module_call,
    received,
    schemes_call,
    stats_call,
    tls_context,
    version_call,
)
from ._checkpoint import DEFAULT_CONNECTIONS
from ._errors import IntegrityError
from ._progress import Progress, ProgressOption
from ._receive import FileSink, MemorySink, Receiver, Sink, direct_socket, receive_direct
from ._retry import RetryPolicy
from ._rules import Rules
from ._stats import Stats

if TYPE_CHECKING:
    import torch


class Client(BaseClient):
    """A synchronous tensorinit client.

    ``base_url`` defaults to ``$TENSORINIT_URL``, else ``http://127.0.0.1:8000``.
    ``timeout`` is a number of seconds or an ``httpx.Timeout`` (connect, read between
    chunks, write, pool); ``max_retries`` a count or a :class:`RetryPolicy`. Pass
    ``http_client`` to bring your own ``httpx.Client`` (transports, proxies, tests): it
    is used as is and not closed by :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int | RetryPolicy = DEFAULT_MAX_RETRIES,
        api_key: str | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, max_retries=max_retries, api_key=api_key)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=self.timeout, verify=tls_context())

    def close(self) -> None:
        """Close the connection pool (unless it was passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- tensors -------------------------------------------------------------------------

    @overload
    def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        seed: int = ...,
        dtype: str = ...,
        name: str = ...,
        convention: str = ...,
        framework: Literal["numpy"] = ...,
        verify: bool = ...,
        out: npt.NDArray[Any] | None = ...,
        **params: Any,
    ) -> npt.NDArray[Any]: ...
    @overload
    def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        seed: int = ...,
        dtype: str = ...,
        name: str = ...,
        convention: str = ...,
        framework: Literal["torch"],
        verify: bool = ...,
        out: npt.NDArray[Any] | None = ...,
        **params: Any,
    ) -> torch.Tensor: ...
    @overload
    def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        seed: int = ...,
        dtype: str = ...,
        name: str = ...,
        convention: str = ...,
        framework: str,
        verify: bool = ...,
        out: npt.NDArray[Any] | None = ...,
        **params: Any,
    ) -> Any: ...
    def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        seed: int = 0,
        dtype: str = "float32",
        name: str = "weight",
        convention: str = "torch",
        framework: str = "numpy",
        verify: bool = False,
        out: npt.NDArray[Any] | None = None,
        **params: Any,
    ) -> Any:
        """One tensor, e.g. ``client.init("he_normal", (256, 128), seed=1, mode="fan_out")``.

        Scheme parameters (``gain``, ``mode``, ``std``, ``in_axes`` ...) are keywords, and
        so are the request's other fields: ``slice="0:2048,:"`` returns only that part of
        the tensor (the same bytes as slicing the whole one), ``algorithm=2`` pins the
        generation algorithm. ``framework`` is ``"numpy"`` (bfloat16 as ``ml_dtypes.bfloat16``), ``"torch"``
        (``torch.bfloat16``) or ``"jax"``. ``verify=True`` also checks the bytes' sha256
        against ``/stats`` (one more request, which recomputes the tensor server-side).
        ``out`` is a preallocated numpy array of exactly the served dtype and shape: the
        bytes are received straight into it (no new memory to fault in) and it is returned.
        """
        call = init_call(
            scheme, shape, seed=seed, dtype=dtype, name=name, convention=convention, framework=framework, out=out, params=params
        )
        return self._run(call, verify)

    @overload
    def init_many(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int = ...,
        dtype: str | None = ...,
        convention: str | None = ...,
        framework: Literal["numpy"] = ...,
        verify: bool = ...,
    ) -> dict[str, npt.NDArray[Any]]: ...
    @overload
    def init_many(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int = ...,
        dtype: str | None = ...,
        convention: str | None = ...,
        framework: Literal["torch"],
        verify: bool = ...,
    ) -> dict[str, torch.Tensor]: ...
    @overload
    def init_many(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int = ...,
        dtype: str | None = ...,
        convention: str | None = ...,
        framework: str,
        verify: bool = ...,
    ) -> dict[str, Any]: ...
    def init_many(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int = 0,
        dtype: str | None = None,
        convention: str | None = None,
        framework: str = "numpy",
        verify: bool = False,
    ) -> dict[str, Any]:
        """Several tensors in one request and one safetensors body, keyed and ordered as given.

        ``tensors`` maps names to specs (``{"scheme": "zeros", "shape": [512]}``); ``seed``,
        ``dtype`` and ``convention`` are defaults each spec may override. The arrays are
        views of one shared buffer, which stays alive while any of them does.
        """
        return self._run(init_many_call(tensors, seed=seed, dtype=dtype, convention=convention, framework=framework), verify)

    @overload
    def init_state_dict(
        self,
        shapes: Mapping[str, Sequence[int]],
        rules: Rules,
        *,
        seed: int = ...,
        dtype: str | None = ...,
        convention: str | None = ...,
        framework: Literal["numpy"] = ...,
        verify: bool = ...,
    ) -> dict[str, npt.NDArray[Any]]: ...
    @overload
    def init_state_dict(
        self,
        shapes: Mapping[str, Sequence[int]],
        rules: Rules,
        *,
        seed: int = ...,
        dtype: str | None = ...,
        convention: str | None = ...,
        framework: Literal["torch"],
        verify: bool = ...,
    ) -> dict[str, torch.Tensor]: ...
    @overload
    def init_state_dict(
        self,
        shapes: Mapping[str, Sequence[int]],
        rules: Rules,
        *,
        seed: int = ...,
        dtype: str | None = ...,
        convention: str | None = ...,
        framework: str,
        verify: bool = ...,
    ) -> dict[str, Any]: ...
    def init_state_dict(
        self,
        shapes: Mapping[str, Sequence[int]],
        rules: Rules,
        *,
        seed: int = 0,
        dtype: str | None = None,
        convention: str | None = None,
        framework: str = "numpy",
        verify: bool = False,
    ) -> dict[str, Any]:
        """A whole state dict from ``{name: shape}`` and ordered (glob → spec) rules, in one request.

        ``rules`` is a list of ``(pattern, spec)`` pairs or a dict (its order counts):
        first match wins, a spec is a scheme name, a mapping without ``shape``, or None to
        skip the name; a name no rule matches raises :class:`NoMatchingRuleError`.
        """
        call = init_state_dict_call(shapes, rules, seed=seed, dtype=dtype, convention=convention, framework=framework)
        return self._run(call, verify)

    def init_module(
        self,
        module: torch.nn.Module,
        rules: Rules | None = None,
        *,
        recipe: str | None = None,
        recipe_params: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        seed: int = 0,
        convention: str = "torch",
        buffers: bool = True,
        verify: bool = False,
        shard: _torch.Shard | None = None,
    ) -> list[str]:
        """Fill ``module``'s floating-point parameters (and buffers) in place; returns the names set.

        One request for the whole module. Each tensor is served in its own dtype and copied
        under ``torch.no_grad()``, so dtype, device and identity are preserved. Integer
        buffers (BatchNorm's ``num_batches_tracked``) are skipped: no scheme makes integers.
        ``shard`` maps a name to (full shape, slice) when this process holds only a piece
        (a tensor-parallel rank's rows, a DTensor's local shard): the rules see the full
        shape (so fans are the full tensor's) and the piece is ``full[slice]``'s bytes.

        With ``recipe`` (``"torch"``, ``"gpt2"``, ``"mup"``... see ``GET /recipes``), the
        module tree becomes a manifest (module types → kinds, attributes read from the
        modules) and the server resolves every tensor by the recipe with ``recipe_params``;
        ``rules`` then win over the recipe (a None spec leaves a tensor alone) and ``roles``
        replace the name patterns of a model role (``{"residual_out": ["*.c_proj.weight"]}``).
        """
        call = init_module_call(
            module,
            rules,
            recipe=recipe,
            recipe_params=recipe_params,
            roles=roles,
            seed=seed,
            convention=convention,
            buffers=buffers,
            shard=shard,
        )
        return self._run(call, verify)

    def plan_module(
        self,
        module: torch.nn.Module,
        *,
        recipe: str,
        recipe_params: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        rules: Rules | None = None,
        seed: int = 0,
        convention: str = "torch",
    ) -> dict[str, Any]:
        """What :meth:`init_module` with ``recipe`` would do, from ``POST /plan``: every resolved spec, nothing generated.

        Returns ``{"recipe", "algorithm", "etag", "bytes", "elements", "specs": [...], "skipped": [...]}``;
        each spec's ``derivation`` holds the recipe's reason (``recipe_rule``).
        """
        call = plan_module_call(
            module, recipe=recipe, recipe_params=recipe_params, roles=roles, rules=rules, seed=seed, convention=convention
        )
        return self._query(call)

    def init_tree(
        self,
        tree: Mapping[str, Any],
        kinds: Mapping[str, str],
        *,
        recipe: str,
        recipe_params: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        rules: Rules | None = None,
        seed: int = 0,
        convention: str = "jax",
        sep: str = ".",
        verify: bool = False,
    ) -> dict[str, Any]:
        """A flax/haiku parameter tree initialized by a recipe: a new tree of numpy arrays, shaped like ``tree``.

        ``tree`` is a nested mapping of arrays or shape tuples (``params["Dense_0"]["kernel"]``),
        ``kinds`` maps module path globs to kinds (``{"Dense_*": "linear", "Embed_0": "embedding"}``,
        see :func:`tensorinit._manifest.tree_manifest`); tensor names are paths joined with ``sep``.
        ``convention`` ``"jax"`` reads kernels as (*kernel, in, out). For jax:
        ``jax.tree.map(jnp.asarray, client.init_tree(...))``.
        """
        call = init_tree_call(
            tree, kinds, recipe=recipe, recipe_params=recipe_params, roles=roles, rules=rules, seed=seed, convention=convention, sep=sep
        )
        return self._run(call, verify)

    def stats(
        self,
        request: str | Mapping[str, Any],
        shape: Sequence[int] | None = None,
        *,
        seed: int = 0,
        dtype: str = "float32",
        name: str = "weight",
        convention: str = "torch",
        bins: int | None = None,
        **params: Any,
    ) -> Stats:
        """Statistics of what ``/init`` would serve: ``stats("he_normal", (256, 128), ...)`` with
        the arguments of :meth:`init`, or ``stats(body)`` with a whole request mapping (single
        or batch, as in docs/api.md)."""
        call = stats_call(request, shape, seed=seed, dtype=dtype, name=name, convention=convention, bins=bins, params=params)
        return self._query(call)

    def schemes(self, name: str | None = None) -> dict[str, Any]:
        """The scheme catalogue (``{"schemes": [...], "conventions", "dtypes", "limits"}``), or one
        scheme's entry (aliases resolve) when ``name`` is given; an unknown name raises :class:`NotFound`."""
        return self._query(schemes_call(name))

    def version(self) -> dict[str, Any]:
        """Versions and limits of the service."""
        return self._query(version_call())

    def download(
        self, request: Mapping[str, Any], path: str | os.PathLike[str], *, progress: ProgressOption = None, verify: bool = False
    ) -> Path:
        """Stream the safetensors file of ``request`` (a request mapping, single or batch) to ``path``.

        Memory stays flat whatever the size; a cut transfer resumes with Range + If-Range.
        The file appears at ``path`` only once complete and checked (written to
        ``path + ".part"`` first, removed on failure); open it with ``safetensors.safe_open``.
        ``progress``: None shows a bar above a few MiB when stderr is a terminal, True or
        False force it, a callable gets ``(received, total)``.
        """
        target, part = download_paths(path)
        bar = Progress(progress, target.name)
        try:
            with part.open("w+b") as f:
                rx = self._receive(dict(request), FileSink(f), bar)
                f.flush()
                header = _safetensors.read_file_header(f, rx.received)
                if verify:
                    self.check_stats(_safetensors.digests_of_file(f, header), self.stats(request), rx.etag)
            part.replace(target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
        return target

    def checkpoint(
        self,
        config_or_name: str | os.PathLike[str] | Mapping[str, Any],
        directory: str | os.PathLike[str],
        *,
        seed: int = 0,
        dtype: str | None = None,
        max_shard_size: int | str | None = None,
        algorithm: int | None = None,
        connections: int = DEFAULT_CONNECTIONS,
        progress: ProgressOption = None,
    ) -> Path:
        """Write a Hugging Face checkpoint directory: ``config.json``, the safetensors shards and their index.

        ``config_or_name``: a config mapping, a config.json path (or a directory holding
        one), or a catalogue name (``client.models()``). ``dtype`` defaults to the config's,
        ``max_shard_size`` to "5GB" (powers of ten, as huggingface_hub counts). The files
        come over ``connections`` parallel connections, each into ``NAME.part``, renamed
        once complete and checked against the plan's size and ETag; a file already there
        is kept, a ``.part`` a cut left is resumed, so calling again finishes the job. The
        directory loads with ``from_pretrained(directory)``. ``progress`` as in :meth:`download`.
        """
        src = _checkpoint.source(config_or_name, seed=seed, dtype=dtype, max_shard_size=max_shard_size, algorithm=algorithm)
        method, path, body = src.plan_request()
        plan = self._request_json(method, path, json=body)
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        todo = [entry for entry in plan["files"] if not _checkpoint.is_done(folder / entry["name"], entry)]
        tally = _checkpoint.Tally(progress, folder.name or str(folder), sum(entry["size"] for entry in todo))
        try:
            with ThreadPoolExecutor(max(1, connections), thread_name_prefix="tensorinit-checkpoint") as pool:
                for _ in pool.map(lambda entry: self._checkpoint_file(src, folder, entry, tally), todo):
                    pass
        finally:
            tally.close()
        return folder

    def models(self) -> dict[str, Any]:
        """The supported architectures and the catalogue of model configs (``GET /models``)."""
        return self._query(models_call())

    def _checkpoint_file(self, src: _checkpoint.Source, folder: Path, entry: dict[str, Any], tally: _checkpoint.Tally) -> None:
        target, part = _checkpoint.paths(folder, entry["name"])
        method, path, body = src.file_request(entry["name"])
        part.touch()
        with part.open("r+b") as f:
            rx = _checkpoint.resuming(f, entry, _checkpoint.Share(tally))
            self._receive(body, rx.sink, method=method, path=path, rx=rx)
            f.flush()
            try:
                _checkpoint.check(f, entry, rx.received)
            except IntegrityError:
                part.unlink(missing_ok=True)
                raise
        part.replace(target)

    # -- transport -----------------------------------------------------------------------

    def _run(self, call: Fetch[T], verify: bool) -> T:
        """Send ``call`` (unless it has nothing to ask for) and make its result from the served tensors."""
        if call.body is None:
            return call.finish({})
        return call.finish(self._fetch(call.body, call.framework, verify, call.sink))

    def _query(self, call: Query[T]) -> T:
        return call.finish(self._request_json(call.method, call.path, json=call.json))

    def _fetch(self, body: dict[str, Any], framework: str, verify: bool, sink: MemorySink | None = None) -> dict[str, Any]:
        sink = sink or MemorySink()
        rx = self._receive(body, sink)
        buffer, header = received(sink)
        if verify:
            self.check_stats(_safetensors.digests_of_views(sink.views(header)), self.stats(body), rx.etag)
        return _safetensors.build(buffer, header, framework)

    def _request_json(self, method: str, path: str, *, json: Any = None) -> Any:
        headers = self.json_headers()
        attempts = self.attempts()
        while True:
            try:
                response = self._http.request(method, self.url(path), json=json, headers=headers, timeout=self.timeout)
            except httpx.TransportError as exc:
                delay = attempts.after_transport(exc)
            else:
                if response.is_success:
                    return self.decode_json(response)
                delay = attempts.after_status(response, response.content)
            time.sleep(delay)

    def _receive(
        self,
        body: dict[str, Any] | None,
        sink: Sink,
        progress: Progress | None = None,
        *,
        method: str = "POST",
        path: str = "/init",
        rx: Receiver | None = None,
    ) -> Receiver:
        """POST /init (or ``method path``) and drive the body into ``sink``, retrying and resuming as the policy allows.

        ``rx``: a receiver already set up, e.g. to resume a file a cut left (its own sink is used).
        """
        rx = rx if rx is not None else Receiver(sink, progress)
        attempts = self.attempts()
        while True:
            high_water = rx.high_water
            cut: httpx.TransportError | str | None = None
            headers = self.file_headers(rx)
            try:
                with self._http.stream(method, self.url(path), json=body, headers=headers, timeout=self.timeout) as response:
                    if response.status_code in (200, 206):
                        rx.start(response)
                        for chunk in response.iter_raw():
                            rx.feed(chunk)
                            sock = direct_socket(response, rx)
                            if sock is not None:  # the rest from the socket into the sink: no copies in between
                                receive_direct(rx, sock, response, self.timeout.read)
                                break
                        if rx.complete:
                            return rx
                        cut = rx.shortfall()
                    else:
                        delay = attempts.after_status(response, response.read())
            except httpx.TransportError as exc:
                cut = exc
            if cut is not None:
                delay = attempts.after_transport(cut, progressed=rx.high_water > high_water)
            time.sleep(delay)
