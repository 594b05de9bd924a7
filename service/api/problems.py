"""Every error as RFC 9457 ``application/problem+json``, mapped in this one place.

Sources of errors and where they land::

    ProblemError                    raised by the web layer itself (body too large, bad Range...)
    service.core.TensorinitError    engine validation at resolution → 422 (limits → 413)
    pydantic ValidationError        request models (types, unknown fields, unknown scheme) → 422
    fastapi RequestValidationError  FastAPI's own parameter checks → 422 (invalid JSON → 400)
    starlette HTTPException         routing: 404, 405 (with Allow)...
    anything else                   500 internal-error, logged, never echoed
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from service.core import SCHEMES, LimitExceededError, TensorinitError, UnknownSchemeError

from .models import allowed_for
from .request_id import new_request_id

log = logging.getLogger("tensorinit.api")

TYPE_BASE = "https://tensorinit.dev/problems/"
MEDIA_TYPE = "application/problem+json"

PROBLEMS: dict[str, tuple[int, str]] = {
    "malformed-json": (400, "Malformed JSON"),
    "invalid-request": (400, "Invalid request"),
    "unauthorized": (401, "Unauthorized"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-acceptable": (406, "Not acceptable"),
    "limit-exceeded": (413, "Limit exceeded"),
    "body-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "range-not-satisfiable": (416, "Range not satisfiable"),
    "validation-error": (422, "Invalid request parameters"),
    "unknown-scheme": (422, "Unknown scheme"),
    "unknown-parameter": (422, "Unknown parameter"),
    "overloaded": (503, "Overloaded"),
    "internal-error": (500, "Internal error"),
}
_BY_STATUS = {status: slug for slug, (status, _) in reversed(PROBLEMS.items())}


class FieldError(BaseModel):
    """One offending field."""

    model_config = ConfigDict(extra="allow")

    path: list[str | int]
    message: str
    allowed: str | None = None
    value: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of this service is answered."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None = None
    errors: list[FieldError] | None = None
    suggestions: list[str] | None = None
    limit_name: str | None = None
    limit: int | None = None


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


class ProblemError(Exception):
    """An error answer: a problem type (slug), a sentence, optional field errors and headers."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        status: int | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.slug = slug
        self.status = status or PROBLEMS[slug][0]
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self, request_id: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": TYPE_BASE + self.slug,
            "title": PROBLEMS.get(self.slug, (self.status, self.slug.replace("-", " ").capitalize()))[1],
            "status": self.status,
            "detail": self.detail,
            "request_id": request_id,
        }
        if self.errors is not None:
            out["errors"] = self.errors
        out.update(self.extra)
        return out

    def response(self, request: Request | None = None) -> ProblemResponse:
        return ProblemResponse(self.body(request_id_of(request)), status_code=self.status, headers=self.headers)


def request_id_of(request: Request | None) -> str | None:
    if request is None:
        return None
    state = request.scope.setdefault("state", {})
    if "request_id" not in state:
        state["request_id"] = new_request_id(request.headers.get("x-request-id"))
    return str(state["request_id"])


def show(value: Any, width: int = 80) -> str:
    """repr() cut to a width: never echo a hostile 10 MB value."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# -- engine errors -------------------------------------------------------------------


def param_path(param: str | None) -> list[str | int]:
    """``"shape[1]"`` → ``["shape", 1]``; ``None`` → ``[]``."""
    if not param:
        return []
    head, *rest = param.split("[")
    return [head, *(int(r.rstrip("]")) for r in rest if r.rstrip("]").isdigit())]


def from_engine(err: TensorinitError, prefix: Sequence[str | int] = ()) -> ProblemError:
    """The problem for an engine error, its parameter placed under ``prefix`` (e.g. tensors/<name>)."""
    path = [*prefix, *param_path(err.param)]
    # The engine's sentence starts with its parameter ("gain: got ..."); the path says where already.
    message = err.message.removeprefix(f"{err.param}: ") if err.param else err.message
    entry: dict[str, Any] = {"path": path, "message": message, "allowed": err.allowed, "value": show(err.value)}
    extra: dict[str, Any] = {}
    if isinstance(err, LimitExceededError):
        slug = "limit-exceeded"
        extra = {"limit_name": err.limit_name, "limit": err.limit}
    elif isinstance(err, UnknownSchemeError):
        slug, extra = "unknown-scheme", {"suggestions": err.suggestions}
    else:
        slug = "unknown-parameter" if err.code == "unknown-parameter" else "validation-error"
    where = "/".join(map(str, path))
    detail = f"{where}: {message}" if where and err.param else err.message
    return ProblemError(slug, detail, errors=[entry], **extra)


# -- pydantic errors -------------------------------------------------------------------


def clean_loc(loc: Sequence[str | int]) -> tuple[list[str | int], str | None, bool]:
    """Drop union tags from a pydantic location: (document path, scheme, whether at batch level).

    Locations look like ``('single', 'he_normal', 'gain')`` or
    ``('batch', 'tensors', 'fc1', 'he_uniform', 'gain')``.
    """
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    kind = parts.pop(0) if parts and parts[0] in ("single", "batch", "recipe") else None
    scheme: str | None = None
    if kind == "single" and parts and parts[0] in SCHEMES:
        scheme = str(parts.pop(0))
    elif kind == "batch" and len(parts) >= 3 and parts[0] == "tensors" and parts[2] in SCHEMES:
        scheme = str(parts.pop(2))
    batch_level = kind == "batch" and len(parts) <= 1
    return parts, scheme, batch_level


def from_pydantic(errors: Sequence[Mapping[str, Any]]) -> ProblemError:
    """The problem for request-model errors: every offending field with its path and what is allowed."""
    entries: list[dict[str, Any]] = []
    suggestions: list[str] | None = None
    kinds: set[str] = set()
    for e in errors:
        path, scheme, batch_level = clean_loc(e["loc"])
        kind = e["type"]
        kinds.add(kind)
        field = next((p for p in reversed(path) if isinstance(p, str)), "")
        if path and isinstance(path[-1], int) and field in ("shape", "in_axes", "out_axes", "batch_axes"):
            allowed = "an integer"
        else:
            allowed = allowed_for(scheme, field, batch_level=batch_level)
        message = e["msg"]
        if kind == "unknown_scheme":
            path = [*path, "scheme"]
            ctx = e.get("ctx") or {}
            suggestions = list(ctx.get("suggestions", []))
            message = str(ctx.get("message", message)).removeprefix("scheme: ")  # the path names the field
            allowed = COMMON_SCHEME_ALLOWED
        elif kind == "union_tag_not_found":
            path = [*path, "scheme"]
            message, allowed = "required (or 'tensors' for a batch)", COMMON_SCHEME_ALLOWED
        elif kind == "extra_forbidden":
            message = f"unknown field {field!r}"
        elif kind == "missing":
            message = "required but not given"
        entry: dict[str, Any] = {"path": path, "message": message, "allowed": allowed}
        if kind not in ("missing", "union_tag_not_found") and "input" in e:
            entry["value"] = show(e["input"])
        entries.append(entry)
    if "unknown_scheme" in kinds:
        slug = "unknown-scheme"
    elif kinds == {"extra_forbidden"}:
        slug = "unknown-parameter"
    else:
        slug = "validation-error"
    first = entries[0]
    where = "/".join(map(str, first["path"])) or "request"
    message = first["message"]
    detail = f"{where}: {message}" if slug == "unknown-scheme" else f"{where}: {message}; allowed: {first['allowed']}"
    if len(entries) > 1:
        detail += f" (and {len(entries) - 1} more error{'s' if len(entries) > 2 else ''})"
    if suggestions is not None:
        return ProblemError(slug, detail, errors=entries, suggestions=suggestions)
    return ProblemError(slug, detail, errors=entries)


COMMON_SCHEME_ALLOWED = "a scheme name or alias: " + ", ".join(sorted(SCHEMES))


# -- handlers -----------------------------------------------------------------------


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return exc.response(request)


async def _engine(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TensorinitError)
    return from_engine(exc).response(request)


async def _pydantic(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return from_pydantic(exc.errors()).response(request)


async def _fastapi_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return ProblemError("malformed-json", "the request body is not valid JSON").response(request)
    return from_pydantic(errors).response(request)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug = _BY_STATUS.get(exc.status_code, "invalid-request" if exc.status_code < 500 else "internal-error")
    detail = exc.detail if exc.detail and exc.detail != PROBLEMS.get(slug, (0, ""))[1] else ""
    if exc.status_code == 404:
        detail = f"no resource at {request.url.path} (see /docs, /schemes)"
    elif exc.status_code == 405:
        # The router names only the methods of the first route matching the path; a path
        # served by several routes (GET, HEAD and POST /init) allows all of theirs.
        allow = ", ".join(allowed_methods(request)) or (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allow}"
        return ProblemError(slug, detail, status=405, headers={**(exc.headers or {}), "Allow": allow}).response(request)
    return ProblemError(slug, detail or str(exc.detail), status=exc.status_code, headers=exc.headers).response(request)


#: The HTTP methods this service names (in 405 Allow lists and metric labels).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app fully matches at this request's path."""
    routes = request.app.router.routes
    scope = {k: v for k, v in request.scope.items() if k in ("type", "path", "root_path", "headers", "query_string")}
    return [m for m in METHODS if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in routes)]


async def _internal(request: Request, exc: Exception) -> Response:
    request_id = request_id_of(request)
    log.exception("unhandled error (request_id=%s)", request_id)
    response = ProblemError("internal-error", "an internal error occurred; quote the request_id when reporting it").response(request)
    if request_id:
        response.headers["X-Request-ID"] = request_id
    # Answered by Starlette's outermost layer, outside EdgeMiddleware, which adds both to every other answer.
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def install(app: FastAPI) -> None:
    """Register every error handler on ``app``."""
    app.add_exception_handler(ProblemError, _problem)
    app.add_exception_handler(TensorinitError, _engine)
    app.add_exception_handler(ValidationError, _pydantic)
    app.add_exception_handler(RequestValidationError, _fastapi_validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _internal)
