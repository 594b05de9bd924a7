"""/init: the safetensors file, streamed, with ETag, Range and caching headers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from service.core import SCHEMES, Scheme, default_executor
from service.core.spec import MATERIALIZED, DeltaOrthogonal
from service.safetensors_stream import stream

from ..docs import BINARY, FLAT_FORM, problem, query_parameters, request_body
from ..hardening import admitted
from ..problems import ProblemError
from ..ranges import (
    ALLOWED,
    InvalidHeaderError,
    RangeError,
    RangeNotSatisfiableError,
    check_range,
    if_range_allows,
    none_match,
    parse_range,
)
from ..resolution import Prepared, QueryTemplates, content_disposition, prepare, query_items, read_json
from ..settings import Settings

router = APIRouter(tags=["tensors"])

IMMUTABLE = "public, max-age=31536000, immutable"


class OctetStreamResponse(Response):
    media_type = "application/octet-stream"


_HEADERS = {
    "ETag": {"description": "strong: sha256 of the canonical resolved specs", "schema": {"type": "string"}},
    "Content-Length": {"description": "exact, sent before the first byte", "schema": {"type": "integer"}},
    "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
    "Content-Disposition": {"schema": {"type": "string"}},
    "X-Request-ID": {"schema": {"type": "string"}},
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "a safetensors file, streamed", "content": {"application/octet-stream": BINARY}, "headers": _HEADERS},
    206: {
        "description": "the single byte range asked for with Range",
        "content": {"application/octet-stream": BINARY},
        "headers": {**_HEADERS, "Content-Range": {"schema": {"type": "string", "example": "bytes 0-1023/4096"}}},
    },
    304: {"description": "If-None-Match matched the ETag: no body"},
    400: problem(
        "malformed JSON (malformed-json), or an invalid request (invalid-request), e.g. If-None-Match not * or a list of entity-tags"
    ),
    413: problem("a limit exceeded (limit-exceeded) or the body too large (body-too-large); names the limit"),
    415: problem("the body is not JSON (unsupported-media-type)"),
    416: problem(
        "the bytes Range selects no byte, or is not one valid range (malformed, reversed, several ranges, overflowing): range-not-satisfiable; Content-Range: bytes */size"
    ),
    422: problem(
        "invalid parameters (validation-error, unknown-scheme with suggestions, unknown-parameter): every offending field with its path and what is allowed"
    ),
}
HEAD_RESPONSES = {k: v for k, v in RESPONSES.items() if k not in (200, 206)} | {200: {"description": "headers only", "headers": _HEADERS}}
GET_DOC = (
    "Same bytes as the equivalent POST, so curl and HTTP caches can use it. Range: exactly one range, bytes=a-b, bytes=a- or bytes=-n"
    " (anything else in bytes: 416; another unit: ignored). If-Range: our strong ETag, else the whole file."
)


MATRIX_BUILT = (*MATERIALIZED, DeltaOrthogonal)
"""Distributions whose every block needs a whole matrix computed first."""

SMALL_BYTES = 256 << 10
"""Answers up to this size are made in one go and sent as one body: a stream's thread hops would cost more than the numbers."""


_CONDITIONAL = frozenset({b"range", b"if-none-match", b"if-range"})


def _conditional_headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """Range, If-None-Match and If-Range from the raw headers in one pass (the first of each, as Headers.get)."""
    found: dict[bytes, str] = {}
    for key, value in raw:
        if key in _CONDITIONAL and key not in found:
            found[key] = value.decode("latin-1")
    return found


async def serve(request: Request, prepared: Prepared, *, cacheable: bool) -> Response:
    """The answer for a prepared file: 304, 206, 200 (HEAD: the same headers, no body), 400 or 416."""
    settings: Settings = request.app.state.settings
    size = prepared.size
    headers = {"ETag": prepared.etag, "Accept-Ranges": "bytes"}
    if cacheable:
        headers["Cache-Control"] = IMMUTABLE
    conditional = _conditional_headers(request.scope["headers"])
    range_header = conditional.get(b"range")
    try:
        # Malformed headers are refused first; then RFC 9110 §13.2.2's order: If-None-Match
        # (304), If-Range, and only then whether the range is satisfiable.
        matched = none_match(conditional.get(b"if-none-match"), prepared.etag)
        check_range(range_header)
        if matched:
            return Response(status_code=304, headers=headers)
        byte_range = parse_range(range_header, size) if if_range_allows(conditional.get(b"if-range"), prepared.etag) else None
    except InvalidHeaderError as err:
        raise ProblemError(
            "invalid-request",
            f"header {err.name}: {err.header[:100]!r} is not valid; allowed: {err.allowed}",
            errors=[{"path": ["headers", err.name], "message": "not valid", "allowed": err.allowed}],
            headers=headers,
        ) from None
    except RangeError as err:
        detail = f"Range {err.header[:100]!r}: {err.reason}"
        if not isinstance(err, RangeNotSatisfiableError):
            detail += f"; allowed: {ALLOWED}"
        raise ProblemError(
            "range-not-satisfiable",
            f"{detail} (this file has {size} bytes)",
            headers={"Content-Range": f"bytes */{size}", **headers, "Content-Disposition": content_disposition(prepared.filename)},
        ) from None
    headers["Content-Disposition"] = content_disposition(prepared.filename)
    start, stop = byte_range or (0, size)
    headers["Content-Length"] = str(stop - start)
    status = 200
    if byte_range is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    if request.method == "HEAD":
        return OctetStreamResponse(status_code=status, headers=headers)
    # Small is judged by the work, not by the bytes sent: a short Range of a matrix-built
    # file still computes the whole matrix, so only a small file of one answers inline.
    matrix = any(isinstance(s.distribution, MATRIX_BUILT) for s in prepared.specs)
    if (size if matrix else stop - start) <= SMALL_BYTES:
        if matrix:
            data = await asyncio.to_thread(prepared.plan.read, start, stop)  # a matrix to compute: off the loop
        else:
            data = prepared.plan.read(start, stop)  # at most 64 Ki elements: well under a millisecond
        return OctetStreamResponse(data, status_code=status, headers=headers)
    body = stream(
        prepared.plan,
        start,
        stop,
        executor=default_executor(),
        ahead=settings.prefetch_blocks,
        counters=request.app.state.counters,
    )
    response = StreamingResponse(body, status_code=status, headers=headers, media_type=OctetStreamResponse.media_type)
    return admitted(request, response, stop - start)


@router.post(
    "/init",
    operation_id="init_post",
    summary="A safetensors file of initialized tensors (one, or a batch)",
    response_class=OctetStreamResponse,
    responses=RESPONSES,
    openapi_extra=request_body("one tensor, or a batch under 'tensors' (top-level seed, dtype, convention are defaults)"),
)
async def init_post(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    prepared = await prepare(await read_json(request, settings.max_body_bytes), settings)
    return await serve(request, prepared, cacheable=False)


@router.get(
    "/init",
    operation_id="init_get",
    summary="A safetensors file of one tensor, from the query string",
    description=GET_DOC + FLAT_FORM,
    response_class=OctetStreamResponse,
    responses=RESPONSES,
    openapi_extra=query_parameters(),
)
async def init_get(request: Request) -> Response:
    return await _get(request, query_items(request.scope["query_string"]))


@router.head(
    "/init",
    operation_id="init_head",
    summary="The headers GET /init would send, without the body",
    response_class=OctetStreamResponse,
    responses=HEAD_RESPONSES,
    openapi_extra=query_parameters(),
)
async def init_head(request: Request) -> Response:
    return await init_get(request)


async def _get(request: Request, items: list[tuple[str, str]]) -> Response:
    state = request.app.state
    templates: QueryTemplates = state.query_templates
    prepared = await templates.prepare(items, state.settings)
    return await serve(request, prepared, cacheable=True)


def _per_scheme(scheme: Scheme) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await _get(request, query_items(request.scope["query_string"], scheme.name))

    endpoint.__name__ = f"init_get_{scheme.name}"
    return endpoint


# One path per scheme, each with exactly that scheme's parameters: a form JSON Schema can
# state in full (see docs.query_parameters). Literal paths, so DirectRoutes serves them too.
for _scheme in SCHEMES.values():
    _endpoint = _per_scheme(_scheme)
    _about = f"{_scheme.summary} {_scheme.formula} (aliases in /init?scheme=: {', '.join(_scheme.aliases) or 'none'}). {GET_DOC}"
    for _method, _summary, _responses in (
        ("GET", f"A safetensors file of one {_scheme.name} tensor, from the query string", RESPONSES),
        ("HEAD", f"The headers GET /init/{_scheme.name} would send, without the body", HEAD_RESPONSES),
    ):
        router.add_api_route(
            f"/init/{_scheme.name}",
            _endpoint,
            methods=[_method],
            operation_id=f"init_{_method.lower()}_{_scheme.name}",
            summary=_summary,
            description=_about,
            response_class=OctetStreamResponse,
            responses=_responses,
            openapi_extra=query_parameters(_scheme),
        )
