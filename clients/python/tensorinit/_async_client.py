"""The asynchronous client: the line-for-line twin of :mod:`tensorinit._client`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import anyio  # httpx's own async backend layer: sleeps work under asyncio and trio alike
import httpx
import numpy.typing as npt

from . import _checkpoint, _safetensors, _torch, _transformers
from ._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    NOT_GIVEN,
    BaseClient,
    Check,
    Fetch,
    Query,
    T,
    catalogue_call,
    download_body,
    download_paths,
    init_call,
    init_many_call,
    init_module_call,
    init_sharded_call,
    init_state_dict_call,
    init_tree_call,
    init_tree_sharded_call,
    models_call,
    plan_call,
    plan_module_call,
    propagation_call,
    received,
    schemes_call,
    stats_call,
    tls_context,
    version_call,
)
from ._checkpoint import DEFAULT_CONNECTIONS
from ._errors import ServiceUnavailable
from ._fields import DType
from ._manifest import Kinds
from ._plan import Plan
from ._progress import Progress, ProgressOption
from ._propagation import Propagation
from ._receive import FileSink, MemorySink, Receiver, Sink
from ._retry import RetryPolicy
from ._rules import Rules
from ._stats import Stats

if TYPE_CHECKING:
    import torch


class AsyncClient(BaseClient):
    """An asynchronous tensorinit client, with the methods of :class:`Client` as coroutines.

    ``base_url`` defaults to ``$TENSORINIT_URL``, else ``http://127.0.0.1:8000``.
    ``timeout`` is a number of seconds or an ``httpx.Timeout`` (connect, read between
    chunks, write, pool); ``max_retries`` a count or a :class:`RetryPolicy`. Pass
    ``http_client`` to bring your own ``httpx.AsyncClient`` (transports, proxies, tests): it
    is used as is and not closed by :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int | RetryPolicy = DEFAULT_MAX_RETRIES,
        api_key: str | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, max_retries=max_retries, api_key=api_key)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=self.timeout, verify=tls_context())

    async def close(self) -> None:
        """Close the connection pool (unless it was passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- tensors -------------------------------------------------------------------------

    @overload
    async def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        name: str,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str = ...,
        verify: bool = ...,
        progress: ProgressOption = ...,
        sharding: Any,
        **params: Any,
    ) -> Any: ...
    @overload
    async def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        name: str,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str = ...,
        framework: Literal["numpy"] | None = ...,
        verify: bool = ...,
        out: npt.NDArray[Any] | None = ...,
        progress: ProgressOption = ...,
        **params: Any,
    ) -> npt.NDArray[Any]: ...
    @overload
    async def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        name: str,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str = ...,
        framework: Literal["torch"],
        device: str | torch.device | None = ...,
        verify: bool = ...,
        progress: ProgressOption = ...,
        **params: Any,
    ) -> torch.Tensor: ...
    @overload
    async def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        name: str,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str = ...,
        framework: Literal["torch"] | None = ...,
        verify: bool = ...,
        out: torch.Tensor,
        progress: ProgressOption = ...,
        **params: Any,
    ) -> torch.Tensor: ...
    @overload
    async def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        name: str,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str = ...,
        framework: str,
        device: str | torch.device | None = ...,
        verify: bool = ...,
        out: Any = ...,
        progress: ProgressOption = ...,
        **params: Any,
    ) -> Any: ...
    async def init(
        self,
        scheme: str,
        shape: Sequence[int],
        *,
        name: str | None = None,
        seed: int = 0,
        dtype: DType | None = None,
        convention: str = "torch",
        framework: str | None = None,
        device: str | torch.device | None = None,
        verify: bool = False,
        out: Any = None,
        progress: ProgressOption = None,
        sharding: Any = None,
        **params: Any,
    ) -> Any:
        """One tensor, e.g. ``client.init("he_normal", (256, 128), name="fc1.weight", seed=1, mode="fan_out")``.

        ``name`` is required: the name and the seed are the random key, like a JAX PRNG key,
        so two calls with the same (seed, name) give the same numbers, whatever the scheme or shape.
        Scheme parameters (``gain``, ``mode``, ``std``, ``in_axes`` ...) are keywords, and
        so are the request's other fields: ``slice="0:2048,:"`` returns only that part of
        the tensor (the same bytes as slicing the whole one), ``algorithm=2`` pins the
        generation algorithm; a keyword the server does not know for the scheme is refused
        before the request (the fields come from ``GET /schemes``, fetched once per client).
        ``dtype`` is a name (``"bfloat16"``) or a numpy, ml_dtypes or torch dtype (``torch.bfloat16``).
        ``framework`` is ``"numpy"`` (the default; bfloat16 as ``ml_dtypes.bfloat16``),
        ``"torch"`` (``torch.bfloat16``) or ``"jax"``; with ``"torch"``, ``device`` puts the tensor
        there (staged in pinned memory when CUDA is available). ``verify=True`` also checks
        the bytes' sha256 against ``/stats`` (one more request, which recomputes the tensor server-side).
        ``out`` is a preallocated array or tensor of the served shape (``dtype`` defaults to
        its dtype) and is returned: a C-contiguous numpy array of exactly the served dtype, or
        a contiguous CPU tensor of it, receives the bytes straight into its memory; any other
        torch tensor (strided, on a GPU, another dtype) receives them through one buffer and ``copy_``.
        ``progress`` as in :meth:`download`.
        ``sharding`` (a ``jax.sharding.Sharding``) returns a ``jax.Array`` built with
        ``jax.make_array_from_callback``: each distinct addressable shard is fetched alone, by its index.
        """
        if sharding is not None:
            if out is not None or framework not in (None, "numpy") or device is not None:
                raise ValueError("sharding= builds a jax.Array: it takes no out=, framework= or device=")
            planned = init_sharded_call(scheme, shape, sharding, seed=seed, dtype=dtype, name=name, convention=convention, params=params)
            return planned.combine([await self._run(c, verify, progress) for c in planned.calls])
        call = init_call(
            scheme,
            shape,
            seed=seed,
            dtype=dtype,
            name=name,
            convention=convention,
            framework=framework,
            out=out,
            device=device,
            params=params,
        )
        return await self._run(call, verify, progress)

    @overload
    async def init_many(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str | None = ...,
        framework: Literal["numpy"] = ...,
        verify: bool = ...,
        progress: ProgressOption = ...,
    ) -> dict[str, npt.NDArray[Any]]: ...
    @overload
    async def init_many(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str | None = ...,
        framework: Literal["torch"],
        device: str | torch.device | None = ...,
        verify: bool = ...,
        progress: ProgressOption = ...,
    ) -> dict[str, torch.Tensor]: ...
    @overload
    async def init_many(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str | None = ...,
        framework: str,
        device: str | torch.device | None = ...,
        verify: bool = ...,
        progress: ProgressOption = ...,
    ) -> dict[str, Any]: ...
    async def init_many(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int = 0,
        dtype: DType | None = None,
        convention: str | None = None,
        framework: str = "numpy",
        device: str | torch.device | None = None,
        verify: bool = False,
        progress: ProgressOption = None,
    ) -> dict[str, Any]:
        """Several tensors in one request and one safetensors body, keyed and ordered as given.

        ``tensors`` maps names to specs (``{"scheme": "zeros", "shape": [512]}``); ``seed``,
        ``dtype`` and ``convention`` are defaults each spec may override. The arrays are
        views of one shared buffer, which stays alive while any of them does (with
        ``framework="torch"`` and a ``device``, tensors on that device). ``progress`` as in :meth:`download`.
        """
        call = init_many_call(tensors, seed=seed, dtype=dtype, convention=convention, framework=framework, device=device)
        return await self._run(call, verify, progress)

    @overload
    async def init_state_dict(
        self,
        shapes: Mapping[str, Sequence[int]],
        rules: Rules,
        *,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str | None = ...,
        framework: Literal["numpy"] = ...,
        verify: bool = ...,
        progress: ProgressOption = ...,
    ) -> dict[str, npt.NDArray[Any]]: ...
    @overload
    async def init_state_dict(
        self,
        shapes: Mapping[str, Sequence[int]],
        rules: Rules,
        *,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str | None = ...,
        framework: Literal["torch"],
        device: str | torch.device | None = ...,
        verify: bool = ...,
        progress: ProgressOption = ...,
    ) -> dict[str, torch.Tensor]: ...
    @overload
    async def init_state_dict(
        self,
        shapes: Mapping[str, Sequence[int]],
        rules: Rules,
        *,
        seed: int = ...,
        dtype: DType | None = ...,
        convention: str | None = ...,
        framework: str,
        device: str | torch.device | None = ...,
        verify: bool = ...,
        progress: ProgressOption = ...,
    ) -> dict[str, Any]: ...
    async def init_state_dict(
        self,
        shapes: Mapping[str, Sequence[int]],
        rules: Rules,
        *,
        seed: int = 0,
        dtype: DType | None = None,
        convention: str | None = None,
        framework: str = "numpy",
        device: str | torch.device | None = None,
        verify: bool = False,
        progress: ProgressOption = None,
    ) -> dict[str, Any]:
        """A whole state dict from ``{name: shape}`` and ordered (glob → spec) rules, in one request.

        ``rules`` is a list of ``(pattern, spec)`` pairs or a dict (its order counts):
        first match wins, a spec is a scheme name, a mapping without ``shape``, or None to
        skip the name; a name no rule matches raises :class:`NoMatchingRuleError`.
        """
        call = init_state_dict_call(shapes, rules, seed=seed, dtype=dtype, convention=convention, framework=framework, device=device)
        return await self._run(call, verify, progress)

    async def init_module(
        self,
        module: torch.nn.Module,
        rules: Rules | None = None,
        *,
        recipe: str | None = None,
        recipe_params: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        kinds: Kinds | None = None,
        seed: int = 0,
        convention: str = "torch",
        buffers: bool = True,
        verify: bool = False,
        shard: _torch.Shard | None = None,
        progress: ProgressOption = None,
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
        ``kinds`` lets other modules join: a module class or a glob over module paths →
        a kind, or (kind, layout) with layout ``"in_out"`` for a 2-D weight stored (in, out)
        (``{MyProj: "linear", "*.gate": ("linear", "in_out")}``); transformers' ``Conv1D``
        is known already. ``progress`` as in :meth:`download`.

        ``recipe="transformers"`` fills a transformers model (built, e.g. on the meta device
        then ``to_empty``) with the bytes of its checkpoint: the config is ``module.config``
        (or ``recipe_params["config"]``), its tensors are asked for under their on-disk
        names and received into their in-memory places (Mixtral's experts into the fused
        parameters), DTensors by their local shards; transformers' own ``init_weights``
        then sets only what no checkpoint holds (RoPE's ``inv_freq``) and re-ties the
        tied weights. ``rules`` are then by on-disk name.
        """
        if recipe == _transformers.RECIPE:
            params = _transformers.params_of(module, recipe_params, kinds=kinds, shard=shard)
            entries = await self._query(_transformers.manifest_call(params["config"]))
            fill = _transformers.fill_call(module, entries, params, rules=rules, seed=seed, convention=convention)
            return await self._run(fill, verify, progress)
        call = init_module_call(
            module,
            rules,
            recipe=recipe,
            recipe_params=recipe_params,
            roles=roles,
            kinds=kinds,
            seed=seed,
            convention=convention,
            buffers=buffers,
            shard=shard,
        )
        return await self._run(call, verify, progress)

    async def plan_module(
        self,
        module: torch.nn.Module,
        *,
        recipe: str,
        recipe_params: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        rules: Rules | None = None,
        kinds: Kinds | None = None,
        seed: int = 0,
        convention: str = "torch",
    ) -> Plan:
        """What :meth:`init_module` with ``recipe`` would do, from ``POST /plan``: every resolved spec, nothing generated.

        ``plan["h.0.attn.c_attn.weight"].fan_in``; each spec's ``rule`` is the recipe's reason.
        With ``recipe="transformers"``, the specs are the checkpoint's, under on-disk names.
        """
        if recipe == _transformers.RECIPE:
            params = _transformers.params_of(module, recipe_params, kinds=kinds, shard=None)
            entries = await self._query(_transformers.manifest_call(params["config"]))
            return await self._query(_transformers.plan_call(module, entries, params, rules=rules, seed=seed, convention=convention))
        call = plan_module_call(
            module, recipe=recipe, recipe_params=recipe_params, roles=roles, rules=rules, kinds=kinds, seed=seed, convention=convention
        )
        return await self._query(call)

    async def plan(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        recipe: str,
        recipe_params: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        rules: Rules | None = None,
        seed: int = 0,
        dtype: DType | None = None,
        convention: str | None = None,
    ) -> Plan:
        """``POST /plan`` for a manifest: ``{name: {"shape", "kind"?, "role"?, "dtype"?, "attributes"?}}`` (docs/api.md, "Recipe requests").

        Every tensor resolved by ``recipe`` (and ``rules``), nothing generated: a :class:`Plan`.
        """
        call = plan_call(
            tensors, recipe=recipe, recipe_params=recipe_params, roles=roles, rules=rules, seed=seed, dtype=dtype, convention=convention
        )
        return await self._query(call)

    async def propagation(
        self,
        *,
        depth: int | None = NOT_GIVEN,
        width: int | None = NOT_GIVEN,
        layers: Sequence[Mapping[str, Any]] | None = NOT_GIVEN,
        activation: str | Mapping[str, Any] | None = NOT_GIVEN,
        init: str | Mapping[str, Any] | None = NOT_GIVEN,
        compare: Sequence[str | Mapping[str, Any]] | None = NOT_GIVEN,
        bias: str | Mapping[str, Any] | None = NOT_GIVEN,
        residual: Mapping[str, Any] | None = NOT_GIVEN,
        input_width: int | None = NOT_GIVEN,
        input_variance: float | None = NOT_GIVEN,
        spatial: Sequence[int] | None = NOT_GIVEN,
        batch: int | None = NOT_GIVEN,
        seed: int | None = NOT_GIVEN,
        dtype: DType | None = NOT_GIVEN,
        convention: str | None = NOT_GIVEN,
        measure: bool | None = NOT_GIVEN,
    ) -> Propagation:
        """How variance flows forward and gradients backward through a network, from ``POST /propagation``.

        ``client.propagation(depth=20, width=256, init="he_normal", compare=["lecun_normal"])``;
        the fields and their defaults are docs/api.md's (a field left out takes the server's
        default; ``bias=None`` means no bias). A :class:`Propagation`: ``verdict``
        (``stable``, ``vanishing``, ``exploding``), ``summary``, ``layers`` and every network.
        """
        fields = {
            "depth": depth,
            "width": width,
            "layers": layers,
            "activation": activation,
            "init": init,
            "compare": compare,
            "bias": bias,
            "residual": residual,
            "input_width": input_width,
            "input_variance": input_variance,
            "spatial": spatial,
            "batch": batch,
            "seed": seed,
            "dtype": dtype,
            "convention": convention,
            "measure": measure,
        }
        return await self._query(propagation_call(fields))

    async def init_tree(
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
        shardings: Any = None,
    ) -> dict[str, Any]:
        """A flax/haiku parameter tree initialized by a recipe: a new tree of numpy arrays, shaped like ``tree``.

        ``tree`` is a nested mapping of arrays or shape tuples (``params["Dense_0"]["kernel"]``),
        ``kinds`` maps module path globs to kinds (``{"Dense_*": "linear", "Embed_0": "embedding"}``,
        see :func:`tensorinit._manifest.tree_manifest`); tensor names are paths joined with ``sep``.
        ``convention`` ``"jax"`` reads kernels as (*kernel, in, out). For jax:
        ``jax.tree.map(jnp.asarray, client.init_tree(...))``.
        ``shardings`` (one ``jax.sharding.Sharding`` for every leaf, or a tree of them shaped like
        ``tree``, None leaves whole) makes those leaves ``jax.Array`` objects: each distinct addressable
        shard is fetched by its index, once per process (replicas share it), and the recipe sees full shapes.
        """
        if shardings is not None:
            planned = init_tree_sharded_call(
                tree,
                kinds,
                shardings,
                recipe=recipe,
                recipe_params=recipe_params,
                roles=roles,
                rules=rules,
                seed=seed,
                convention=convention,
                sep=sep,
            )
            return planned.combine([await self._run(c, verify) for c in planned.calls])
        call = init_tree_call(
            tree, kinds, recipe=recipe, recipe_params=recipe_params, roles=roles, rules=rules, seed=seed, convention=convention, sep=sep
        )
        return await self._run(call, verify)

    @overload
    async def stats(self, request: Mapping[str, Any], *, bins: int | None = ...) -> Stats: ...
    @overload
    async def stats(
        self,
        request: str,
        shape: Sequence[int],
        *,
        name: str,
        seed: int = ...,
        dtype: DType = ...,
        convention: str = ...,
        bins: int | None = ...,
        **params: Any,
    ) -> Stats: ...
    async def stats(
        self,
        request: str | Mapping[str, Any],
        shape: Sequence[int] | None = None,
        *,
        name: str | None = None,
        seed: int = 0,
        dtype: DType = "float32",
        convention: str = "torch",
        bins: int | None = None,
        **params: Any,
    ) -> Stats:
        """Statistics of what ``/init`` would serve: ``stats("he_normal", (256, 128), name="fc1.weight", ...)``
        with the arguments of :meth:`init` (``name`` required, as there), or ``stats(body)`` with a
        whole request mapping (single, which must then hold a ``name``, or batch, as in docs/api.md)."""
        call = stats_call(request, shape, seed=seed, dtype=dtype, name=name, convention=convention, bins=bins, params=params)
        return await self._query(call)

    async def schemes(self, name: str | None = None) -> dict[str, Any]:
        """The scheme catalogue (``{"schemes": [...], "conventions", "dtypes", "limits"}``), or one
        scheme's entry (aliases resolve) when ``name`` is given; an unknown name raises :class:`NotFound`."""
        return await self._query(schemes_call(name))

    async def version(self) -> dict[str, Any]:
        """Versions and limits of the service."""
        return await self._query(version_call())

    async def download(
        self, request: Mapping[str, Any], path: str | os.PathLike[str], *, progress: ProgressOption = None, verify: bool = False
    ) -> Path:
        """Stream the safetensors file of ``request`` (a request mapping, single or batch) to ``path``.

        A single-tensor request must hold a ``name`` (the name and the seed are the random key).
        Memory stays flat whatever the size; a cut transfer resumes with Range + If-Range.
        The file appears at ``path`` only once complete and checked (written to
        ``path + ".part"`` first, removed on failure); open it with ``safetensors.safe_open``.
        ``progress``: None shows a bar above a few MiB when stderr is a terminal, True or
        False force it, a callable gets ``(received, total)``.
        """
        body = download_body(request)
        target, part = download_paths(path)
        bar = Progress(progress, target.name)
        try:
            # Each chunk (~64 KiB) is copied into the file sink's buffer on the event loop; its
            # writer thread writes whole MiBs. The loop waits only when all its buffers are
            # still being written (a disk slower than the network), and end() runs on a thread.
            with part.open("w+b") as f:
                rx = await self._receive(body, FileSink(f), bar)
                f.flush()
                header = _safetensors.read_file_header(f, rx.received)
                if verify:
                    self.check_stats(_safetensors.digests_of_file(f, header), await self.stats(request), rx.etag)
            part.replace(target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
        return target

    async def checkpoint(
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
        one), or a catalogue name (``await client.models()``). ``dtype`` defaults to the config's,
        ``max_shard_size`` to "5GB" (powers of ten, as huggingface_hub counts). The files
        come over ``connections`` parallel connections, each into ``NAME.part``, renamed
        once complete and checked against the plan's size and ETag; a file already there
        is kept, a ``.part`` a cut left is resumed, so calling again finishes the job. The
        directory loads with ``from_pretrained(directory)``. ``progress`` as in :meth:`download`.
        """
        src = _checkpoint.source(config_or_name, seed=seed, dtype=dtype, max_shard_size=max_shard_size, algorithm=algorithm)
        method, path, body = src.plan_request()
        plan = await self._request_json(method, path, json=body)
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        todo = [entry for entry in plan["files"] if not _checkpoint.is_done(folder / entry["name"], entry)]
        tally = _checkpoint.Tally(progress, folder.name or str(folder), sum(entry["size"] for entry in todo))
        limit = anyio.Semaphore(max(1, connections))

        async def one(entry: dict[str, Any]) -> None:
            async with limit:
                await self._checkpoint_file(src, folder, entry, tally)

        try:
            async with anyio.create_task_group() as group:
                for entry in todo:
                    group.start_soon(one, entry)
        finally:
            tally.close()
        return folder

    async def models(self) -> dict[str, Any]:
        """The supported architectures and the catalogue of model configs (``GET /models``)."""
        return await self._query(models_call())

    async def _checkpoint_file(self, src: _checkpoint.Source, folder: Path, entry: dict[str, Any], tally: _checkpoint.Tally) -> None:
        target, part = _checkpoint.paths(folder, entry["name"])
        method, path, body = src.file_request(entry["name"])
        part.touch()
        # As download(): chunks into the file sink's buffers on the loop, whole MiBs written by its thread.
        with part.open("r+b") as f:
            share, turns = _checkpoint.Share(tally), _checkpoint.Turns(tally)
            while True:
                rx = _checkpoint.resuming(f, entry, share)
                try:
                    await self._receive(body, rx.sink, method=method, path=path, rx=rx)
                    break
                except ServiceUnavailable:
                    if not turns.progressed():
                        raise
            _checkpoint.check_part(f, part, entry, rx.received)
        part.replace(target)

    # -- transport -----------------------------------------------------------------------

    async def _run(self, call: Fetch[T], verify: bool, progress: ProgressOption = False) -> T:
        """Send ``call`` (unless it has nothing to ask for) and make its result from the served tensors."""
        if call.body is None:
            return call.finish({})
        await self._check(call.checks)
        bar = Progress(progress, call.label)
        try:
            return call.finish(await self._fetch(call.body, call.framework, verify, call.sink, bar))
        finally:
            bar.close()

    async def _query(self, call: Query[T]) -> T:
        await self._check(call.checks)
        return call.finish(await self._request_json(call.method, call.path, json=call.json))

    async def _check(self, checks: tuple[Check, ...]) -> None:
        if checks and self._catalogue is None:
            self._catalogue = await self._query(catalogue_call())
        self.check(checks)

    async def _fetch(
        self, body: dict[str, Any], framework: str, verify: bool, sink: MemorySink | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        sink = sink or MemorySink()
        rx = await self._receive(body, sink, progress)
        buffer, header = received(sink)
        if verify:
            self.check_stats(_safetensors.digests_of_views(sink.views(header)), await self.stats(body), rx.etag)
        return _safetensors.build(buffer, header, framework)

    async def _request_json(self, method: str, path: str, *, json: Any = None) -> Any:
        headers = self.json_headers()
        attempts = self.attempts()
        while True:
            try:
                response = await self._http.request(method, self.url(path), json=json, headers=headers, timeout=self.timeout)
            except httpx.TransportError as exc:
                delay = attempts.after_transport(exc)
            else:
                if response.is_success:
                    return self.decode_json(response)
                delay = attempts.after_status(response, response.content)
            await anyio.sleep(delay)

    async def _receive(
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
                async with self._http.stream(method, self.url(path), json=body, headers=headers, timeout=self.timeout) as response:
                    if response.status_code in (200, 206):
                        rx.start(response)
                        try:
                            async for chunk in response.aiter_raw():
                                rx.feed(chunk)
                        finally:
                            if isinstance(rx.sink, FileSink):  # it waits for its writer thread: off the loop, even when cancelled
                                with anyio.CancelScope(shield=True):
                                    await anyio.to_thread.run_sync(rx.sink.end)
                            else:  # a memory sink has nothing to wait for: no thread hop per response
                                rx.sink.end()
                        if rx.complete:
                            return rx
                        cut = rx.shortfall()
                    else:
                        delay = attempts.after_status(response, await response.aread())
            except httpx.TransportError as exc:
                cut = exc
            if cut is not None:
                delay = attempts.after_transport(cut, progressed=rx.high_water > high_water)
            await anyio.sleep(delay)
