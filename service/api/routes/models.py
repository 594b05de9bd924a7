"""Models: the architectures and the catalogue, checkpoints as plans and files, and the Hub protocol over them.

Two ways to the same files (service.core.checkpoint plans them; /init's machinery serves them):

* ``GET /models/{model}/checkpoint?seed=&dtype=&max_shard_size=&algorithm=`` the plan as JSON
  (files, sizes, ETags, index, every tensor's spec), generating nothing; ``GET|HEAD
  /models/{model}/checkpoint/{file}`` with the same query, each file alone (Content-Length,
  ETag, Range, 304), cached by nginx. ``POST /checkpoint`` and ``POST /checkpoint/{file}``
  take a config of the caller's own in the body instead of a catalogue name.
* The Hub protocol, so that ``from_pretrained("tensorinit/<name>", revision="seed-7")``
  works with ``HF_ENDPOINT`` set here (huggingface_hub 2.x ``file_download.py`` and
  ``hf_api.py``; ../shared/REFERENCE.md §9): ``/{org}/{repo}/resolve/{revision}/{file}``,
  ``/api/models/{org}/{repo}[/revision/{revision}]`` and ``/api/models/{org}/{repo}/tree/{revision}``.
  Repositories are ``tensorinit/<name>``; revision ``main`` is seed 0, ``seed-N`` seed N,
  and a checkpoint's commit (what ``X-Repo-Commit`` sends) names it too. A revision by
  name may change with the catalogue's file, so its answers are cached for a minute
  (nginx revalidates with the ETag); by commit, for a year.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse, Response

from service.core import DTYPES, TensorinitError, canonical_json
from service.core.algorithms import ALGORITHMS
from service.core.architectures import supported
from service.core.architectures.registry import MAX_TENSORS
from service.core.bounded_cache import WeightedCache
from service.core.checkpoint import DEFAULT_MAX_SHARD_SIZE, Checkpoint, CheckpointFile, check_finite, checkpoint, seed_of_commit
from service.core.model_catalogue import UnknownModelError, load, lookup
from service.safetensors_stream import Plan

from ..docs import BINARY, problem
from ..models import ALGORITHM_ENUM, SEED_RANGE, Integer
from ..offload import off_loop
from ..problems import ProblemError, from_engine, from_pydantic
from ..resolution import Prepared, read_json
from ..settings import Settings
from .files import IMMUTABLE, OctetStreamResponse, serve

router = APIRouter(tags=["models"])

ORG = "tensorinit"
BY_NAME = "public, max-age=60"
"""Cache-Control of answers addressed by a name that the catalogue's files define (main, seed-N, a model name)."""
QUERY = frozenset({"seed", "dtype", "max_shard_size", "algorithm"})
_SEED_REVISION = re.compile(r"seed-(0|[1-9][0-9]{0,19})")
TREE_PAGE = 1000
"""Entries per page of a tree listing (the Hub's own page size), then ``Link: rel="next"``."""


class CheckpointRequest(BaseModel):
    """A checkpoint: a config (or a catalogue name), and what else defines its bytes."""

    # Strict as the other request models: no strings for numbers, no booleans.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"model": "gpt2", "seed": 7}]})

    config: dict[str, Any] | None = Field(None, description="a config.json's content (or give model)")
    model: str | None = Field(None, description="a catalogue name (GET /models), instead of config")
    seed: Integer = Field(0, description="random seed", json_schema_extra=SEED_RANGE)
    dtype: str | None = Field(None, description="float32, bfloat16, float16 or float64; default: the config's dtype (torch_dtype)")
    max_shard_size: Integer | str = Field(DEFAULT_MAX_SHARD_SIZE, description='bytes, or "500MB", "5GB"... (powers of 10)')
    algorithm: Integer | None = Field(None, description="the generation algorithm; default: the newest", json_schema_extra=ALGORITHM_ENUM)


# -- planning ---------------------------------------------------------------------------


PLAN_CACHE = WeightedCache[Checkpoint](32, MAX_TENSORS, lambda found: len(found.specs))
"""Up to 32 checkpoints, of 65,536 tensors in all: a plan of MAX_TENSORS tensors holds ~150 MiB
(its specs, headers and files), so 32 of them, one per seed asked for, would hold GBs."""


def _planned(config_json: str, seed: int, dtype: str | None, max_shard_size: int | str, algorithm: int | None) -> Checkpoint:
    return PLAN_CACHE.get(
        (config_json, seed, dtype, max_shard_size, algorithm),
        lambda: checkpoint(json.loads(config_json), seed=seed, dtype=dtype, max_shard_size=max_shard_size, algorithm=algorithm),
    )


async def plan(config: Mapping[str, Any], settings: Settings, **options: Any) -> Checkpoint:
    """:func:`planned`, off the event loop, on the request-work thread (a plan of MAX_TENSORS tensors takes 3-6 s)."""
    return await off_loop(planned, config, settings, **options)


async def plan_response(config: Mapping[str, Any], settings: Settings, **options: Any) -> Response:
    """The plan as its JSON document, made and rendered on the request-work thread.

    A plan of MAX_TENSORS tensors is 22 MB of JSON: returned as a dict, FastAPI encoded it on
    the event loop, which then answered nothing else for 2.5 s (/healthz's worst probe).
    """
    return await off_loop(lambda: JSONResponse(planned(config, settings, **options).describe()))


def planned(config: Mapping[str, Any], settings: Settings, **options: Any) -> Checkpoint:
    """The checkpoint (cached: every file GET needs it); engine errors become 422 (413 past the engine's own limits).

    Only a file's size is held to the settings (``max_response_bytes``, when it is asked
    for): every tensor of a checkpoint is drawn element by element and streamed, with
    memory flat whatever its size, so ``max_elements`` (which bounds what /init may
    compute whole) does not apply, and a plan is answered whatever its files' sizes.
    """
    try:
        check_finite(config)  # before the cache's key, which is JSON
        return _planned(canonical_json(dict(config)), **options)
    except TensorinitError as err:
        raise from_engine(err, getattr(err, "where", ())) from None


def check_file(item: CheckpointFile, settings: Settings) -> None:
    """413 for a file over ``max_response_bytes``."""
    if item.size > settings.max_response_bytes:
        raise ProblemError(
            "limit-exceeded",
            f"{item.name} has {item.size} bytes; the limit max_response_bytes is {settings.max_response_bytes}"
            " (a smaller max_shard_size helps, unless one tensor is that large)",
            limit_name="max_response_bytes",
            limit=settings.max_response_bytes,
        )


@functools.lru_cache(maxsize=8)
def catalogue_of(settings: Settings) -> Mapping[str, Mapping[str, Any]]:
    """The catalogue a service with ``settings`` serves (read once per settings; the app reads it at start)."""
    return load(settings.models_dir)


def model_config(catalogue: Mapping[str, Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    """The catalogue's config named ``name``; else the 404 problem listing the names."""
    try:
        return lookup(catalogue, name)
    except UnknownModelError as err:
        raise ProblemError("not-found", f"{err.message}; known: {', '.join(catalogue)}") from None


def _model(request: Request, name: str) -> Mapping[str, Any]:
    return model_config(request.app.state.catalogue, name)


def _options(request: Request) -> dict[str, Any]:
    return query_options(request.query_params.multi_items())


def query_options(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """seed, dtype, max_shard_size and algorithm from a query string's items (anything else: 422)."""
    given: dict[str, Any] = {}
    for key, value in items:
        if key not in QUERY:
            raise ProblemError(
                "unknown-parameter",
                f"{key[:100]}: not a parameter of a checkpoint; allowed: {', '.join(sorted(QUERY))}",
                errors=[{"path": [key[:100]], "message": "unknown parameter", "allowed": ", ".join(sorted(QUERY))}],
            )
        # A query's numbers arrive as text: the integers are read as integers, anything else left to the model to refuse
        # (as is one of over 4300 digits, which int() refuses with a ValueError).
        given[key] = value
        if key in ("seed", "algorithm") and value.isascii() and value.lstrip("-").isdigit():
            with contextlib.suppress(ValueError):
                given[key] = int(value)
    try:
        parsed = CheckpointRequest.model_validate(given)
    except ValidationError as err:
        raise from_pydantic(err.errors()) from None
    return _fields(parsed)


def _fields(parsed: CheckpointRequest) -> dict[str, Any]:
    return {"seed": parsed.seed, "dtype": parsed.dtype, "max_shard_size": parsed.max_shard_size, "algorithm": parsed.algorithm}


async def _from_body(request: Request) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """The body's config and options, read as /init reads its body: 413 past ``max_body_bytes``, 415 if not JSON."""
    document = await read_json(request, request.app.state.settings.max_body_bytes)
    try:
        parsed = CheckpointRequest.model_validate(document)
    except ValidationError as err:
        raise from_pydantic(err.errors()) from None
    return body_config(request.app.state.catalogue, parsed)


BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CheckpointRequest"}}}}}
"""The body's schema, as FastAPI wrote it when it parsed the body (it read it whole, with no limit: the routes now read it)."""


def body_config(catalogue: Mapping[str, Mapping[str, Any]], parsed: CheckpointRequest) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """The config a body gives (its own, or a catalogue name's) and its options."""
    if (parsed.config is None) == (parsed.model is None):
        raise ProblemError(
            "validation-error",
            "config, model: give exactly one",
            errors=[
                {"path": ["config"], "message": "give config or model", "allowed": "a config.json object, or a catalogue name in model"}
            ],
        )
    config = parsed.config if parsed.config is not None else model_config(catalogue, str(parsed.model))
    return config, _fields(parsed)


# -- serving one file -------------------------------------------------------------------


def _bytes_plan(content: bytes) -> Plan:
    """A plan whose whole file is ``content`` (a JSON file): /init's serving then gives it ETag, Range, HEAD and 304 too."""
    found = Plan.__new__(Plan)
    found.header_json = found.header = content
    found.entries = ()
    found.size = len(content)
    return found


async def _serve_file(request: Request, item: CheckpointFile, cache_control: str, extra: Mapping[str, str] = {}) -> Response:
    check_file(item, request.app.state.settings)
    plan = item.plan if item.plan is not None else _bytes_plan(item.content or b"")
    prepared = Prepared(item.specs, plan, "", f'"{item.etag}"', item.name)
    try:
        response = await serve(request, prepared, cacheable=False)
    except ProblemError as err:
        err.headers.update(extra)
        raise
    response.headers.update({"Cache-Control": cache_control, **extra})
    if item.plan is None:
        response.headers["Content-Type"] = "application/json"
        response.headers["Content-Disposition"] = f'attachment; filename="{item.name}"'
    return response


def _file(found: Checkpoint, name: str, extra: Mapping[str, str] = {}) -> CheckpointFile:
    item = found.files.get(name)
    if item is None:
        raise ProblemError(
            "not-found",
            f"{name[:200]}: not a file of this checkpoint; its files: {', '.join(found.files)}",
            headers={**extra, "X-Error-Code": "EntryNotFound", "X-Error-Message": _HUB_MESSAGES["EntryNotFound"]},
        )
    return item


# -- catalogue and plans ------------------------------------------------------------------


@router.get("/models", operation_id="models_list", summary="The supported architectures and the catalogue of configs")
async def models_list(request: Request) -> dict[str, Any]:
    catalogue: Mapping[str, Mapping[str, Any]] = request.app.state.catalogue
    return {
        "architectures": supported(),
        "models": [
            {
                "name": name,
                "repo": f"{ORG}/{name}",
                "model_type": config.get("model_type"),
                "architectures": config.get("architectures"),
                "dtype": config.get("dtype", config.get("torch_dtype")),
            }
            for name, config in catalogue.items()
        ],
    }


# The built-in names as the enum, as /schemes/{name} lists its own: a deployment's
# TENSORINIT_MODELS_DIR adds names that the document cannot know and the route accepts.
_NAME = Path(
    description="a catalogue name (GET /models): the built-in ones, and those a deployment's TENSORINIT_MODELS_DIR adds",
    json_schema_extra={"enum": list(load())},
)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


QUERY_FORM = {
    "parameters": [
        _query("seed", {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}, "random seed; default 0"),
        _query("dtype", {"type": "string", "enum": list(DTYPES)}, "element type; default: the config's dtype (torch_dtype), else float32"),
        _query(
            "max_shard_size",
            {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?([KMGTkmgt][Bb])?$"},
            f"bytes per shard file: an integer, or a number with KB, MB, GB or TB (powers of 10); default {DEFAULT_MAX_SHARD_SIZE}",
        ),
        _query("algorithm", {"type": "integer", "enum": sorted(ALGORITHMS)}, "generation algorithm; default the newest"),
    ]
}
_FILE = Path(
    description="config.json, model.safetensors.index.json, or a shard (the plan lists them)",
    examples=["config.json"],
    openapi_examples={"config": {"value": "config.json"}},
)
FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file: safetensors (streamed) or JSON (config.json, the index)",
        "content": {"application/octet-stream": BINARY, "application/json": {"schema": {"type": "object"}}},
    },
    206: {"description": "the byte range asked for", "content": {"application/octet-stream": BINARY, "application/json": BINARY}},
    304: {"description": "If-None-Match matched the ETag"},
    404: problem("no such model or file (not-found)"),
    413: problem("a file over max_response_bytes (limit-exceeded)"),
    416: problem("the Range selects no byte (range-not-satisfiable)"),
    422: problem("invalid checkpoint parameters or config: unknown model_type, a missing field..."),
}
BODY_RESPONSES: dict[int | str, dict[str, Any]] = {400: problem("malformed JSON"), 415: problem("the body is not JSON")}
PLAN_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: problem("no such model (not-found)"),
    413: problem("a file over max_response_bytes (limit-exceeded)"),
    422: problem("invalid checkpoint parameters or config: unknown model_type, a missing field..."),
}


@router.get(
    "/models/{model}/checkpoint",
    operation_id="checkpoint_plan_get",
    summary="A catalogue model's checkpoint as a plan: files, sizes, ETags, index and every tensor's spec (nothing generated)",
    responses=PLAN_RESPONSES,
    openapi_extra=QUERY_FORM,
    response_model=dict[str, Any],
)
async def checkpoint_plan_get(request: Request, model: Annotated[str, _NAME]) -> Response:
    return await plan_response(_model(request, model), request.app.state.settings, **_options(request))


@router.post(
    "/checkpoint",
    operation_id="checkpoint_plan_post",
    summary="The checkpoint plan of a config in the body (or a catalogue name)",
    responses={**PLAN_RESPONSES, **BODY_RESPONSES},
    openapi_extra=BODY,
    response_model=dict[str, Any],
)
async def checkpoint_plan_post(request: Request) -> Response:
    config, options = await _from_body(request)
    return await plan_response(config, request.app.state.settings, **options)


async def checkpoint_file_get(request: Request, model: Annotated[str, _NAME], file: Annotated[str, _FILE]) -> Response:
    found = await plan(_model(request, model), request.app.state.settings, **_options(request))
    return await _serve_file(request, _file(found, file), BY_NAME)


@router.post(
    "/checkpoint/{file}",
    operation_id="checkpoint_file_post",
    summary="One file of the checkpoint of a config in the body (Range resumes it)",
    response_class=OctetStreamResponse,
    responses={**FILE_RESPONSES, **BODY_RESPONSES},
    openapi_extra=BODY,
)
async def checkpoint_file_post(request: Request, file: Annotated[str, _FILE]) -> Response:
    config, options = await _from_body(request)
    found = await plan(config, request.app.state.settings, **options)
    return await _serve_file(request, _file(found, file), "no-store")


# -- the Hub protocol -----------------------------------------------------------------------
# Not in the OpenAPI document: its contract is huggingface_hub's, and tests/api/test_models.py
# holds it to that with the real huggingface_hub and transformers.


_HUB_MESSAGES = {"RepoNotFound": "Repository not found", "RevisionNotFound": "Revision not found", "EntryNotFound": "Entry not found"}


def _hub_error(code: str, detail: str, headers: Mapping[str, str] = {}) -> ProblemError:
    # huggingface_hub reads X-Error-Code (and the body's "error") to pick its exception. The
    # header's message is a fixed ASCII text: the detail may quote a path in any script.
    message = _HUB_MESSAGES[code]
    return ProblemError("not-found", detail, headers={**headers, "X-Error-Code": code, "X-Error-Message": message}, error=detail)


def hub_checkpoint(
    catalogue: Mapping[str, Mapping[str, Any]], settings: Settings, org: str, repo: str, revision: str
) -> tuple[Checkpoint, str]:
    """The checkpoint a Hub repository and revision name, and the Cache-Control its answers take."""
    try:
        if org.lower() != ORG:
            raise UnknownModelError(f"{org}/{repo}", list(catalogue))
        config = lookup(catalogue, repo)
    except UnknownModelError:
        raise _hub_error(
            "RepoNotFound", f"{org[:100]}/{repo[:100]}: no such repository; repositories are {ORG}/<name> for a name of GET /models"
        ) from None
    by_name = _SEED_REVISION.fullmatch(revision)
    seed = 0 if revision == "main" else int(by_name.group(1)) if by_name else seed_of_commit(revision)
    if seed is not None and seed < 1 << 64:
        found = planned(config, settings, seed=seed, dtype=None, max_shard_size=DEFAULT_MAX_SHARD_SIZE, algorithm=None)
        if revision in ("main", found.commit) or by_name:
            return found, IMMUTABLE if revision == found.commit else BY_NAME
    raise _hub_error(
        "RevisionNotFound", f"{revision[:100]}: no such revision of {org}/{repo}; revisions are main (seed 0), seed-N, or a commit it sent"
    )


async def _hub_checkpoint(request: Request, org: str, repo: str, revision: str) -> tuple[Checkpoint, str]:
    state = request.app.state
    return await off_loop(hub_checkpoint, state.catalogue, state.settings, org, repo, revision)


async def hub_resolve(request: Request, org: str, repo: str, revision: str, file: str) -> Response:
    found, cache_control = await _hub_checkpoint(request, org, repo, revision)
    commit = {"X-Repo-Commit": found.commit}
    return await _serve_file(request, _file(found, file, commit), cache_control, commit)


def _info(found: Checkpoint, repo: str) -> dict[str, Any]:
    config = found.config
    return {
        "_id": found.commit,
        "id": f"{ORG}/{repo}",
        "modelId": f"{ORG}/{repo}",
        "author": ORG,
        "sha": found.commit,
        "private": False,
        "gated": False,
        "disabled": False,
        "library_name": "transformers",
        "tags": ["transformers", "safetensors", str(config.get("model_type"))],
        "config": {"architectures": config.get("architectures"), "model_type": config.get("model_type")},
        "siblings": [{"rfilename": name, "size": f.size, "blobId": f.etag} for name, f in found.files.items()],
        "safetensors": {"parameters": {DTYPES[found.dtype][2]: found.total_parameters}, "total": found.total_parameters},
    }


@router.get(
    "/api/models/{org}/{repo}",
    operation_id="hub_model_info",
    summary="Hub protocol: a repository at main",
    responses=PLAN_RESPONSES,
    include_in_schema=False,
)
async def hub_model_info(request: Request, org: str, repo: str) -> Response:
    return await hub_model_revision(request, org, repo, "main")


@router.get(
    "/api/models/{org}/{repo}/revision/{revision}",
    operation_id="hub_model_revision",
    include_in_schema=False,
    summary="Hub protocol: a repository at a revision (its commit in sha, its files in siblings)",
    responses=PLAN_RESPONSES,
)
async def hub_model_revision(request: Request, org: str, repo: str, revision: str) -> Response:
    found, cache_control = await _hub_checkpoint(request, org, repo, revision)
    return JSONResponse(_info(found, repo), headers={"Cache-Control": cache_control})


@router.get(
    "/api/models/{org}/{repo}/tree/{revision}",
    operation_id="hub_model_tree",
    include_in_schema=False,
    summary="Hub protocol: the files of a revision (paged by Link: rel=next past 1000)",
    responses=PLAN_RESPONSES,
)
async def hub_model_tree(request: Request, org: str, repo: str, revision: str, cursor: Annotated[int, Query(ge=0)] = 0) -> Response:
    found, cache_control = await _hub_checkpoint(request, org, repo, revision)
    entries = [{"type": "file", "path": name, "size": f.size, "oid": f.etag} for name, f in found.files.items()]
    page = entries[cursor : cursor + TREE_PAGE]
    headers = {"Cache-Control": cache_control}
    if cursor + TREE_PAGE < len(entries):
        query = request.url.include_query_params(cursor=cursor + TREE_PAGE)
        headers["Link"] = f'<{query}>; rel="next"'
    return JSONResponse(page, headers=headers)


HEAD_RESPONSES = {k: v for k, v in FILE_RESPONSES.items() if k not in (200, 206)} | {
    200: {"description": "headers only", "content": {"application/octet-stream": {}, "application/json": {}}}
}

# GET and HEAD of a file as two operations, as /init's are.
for _path, _endpoint, _id, _summary in (
    (
        "/models/{model}/checkpoint/{file}",
        checkpoint_file_get,
        "checkpoint_file",
        "One file of a catalogue model's checkpoint (the same query as its plan)",
    ),
    (
        "/{org}/{repo}/resolve/{revision}/{file:path}",
        hub_resolve,
        "hub_resolve",
        "Hub protocol: one file of tensorinit/<name> at a revision (main, seed-N or a commit), with X-Repo-Commit",
    ),
):
    for _method, _responses in (("GET", FILE_RESPONSES), ("HEAD", HEAD_RESPONSES)):
        router.add_api_route(
            _path,
            _endpoint,
            methods=[_method],
            operation_id=f"{_id}_{_method.lower()}",
            summary=_summary if _method == "GET" else f"The headers GET would send: {_summary[0].lower()}{_summary[1:]}",
            response_class=OctetStreamResponse,
            responses=_responses,
            openapi_extra=QUERY_FORM if _id == "checkpoint_file" else None,
            include_in_schema=_id == "checkpoint_file",
        )
