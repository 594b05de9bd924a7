"""Wiring of access control, admission, metrics and access logs into a FastAPI app.

:func:`install` is the only entry point the app factory needs. The layers, outermost
first, are all pure ASGI middleware (``BaseHTTPMiddleware`` would buffer streams and
hide client disconnects from the routes)::

    (RequestIdMiddleware       the app factory's own: request id and X-Request-ID)
    AccessLogMiddleware        one JSON line per request
    MetricsMiddleware          answers by method, route template and status
    CORSMiddleware             only when ``cors_origins`` is set (off by default)
    ApiKeyMiddleware           401 unless the bearer key is valid (when keys are set)
    the app's routes

A generating route takes a :class:`Generation` through ``Depends(generation)``, awaits
:meth:`Generation.admit` with the byte count of its answer before it builds the
response (so a 503 is sent before any byte), and wraps its body iterator in
:meth:`Generation.stream`. The dependency's exit runs after the response has been
sent, or after the client went away, and releases the slot then: the slot is held
for the whole stream.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from .admission import Admission, Overloaded, Slot
from .docs import REF, problem
from .logging import AccessLogMiddleware, configure_access_log
from .metrics import Metrics, MetricsMiddleware
from .problems import Problem, ProblemError
from .security import PUBLIC_PATHS, ApiKeyMiddleware, ApiKeys

BEARER_SCHEME = "bearerAuth"


class HardeningSettings(Protocol):
    """The settings :func:`install` reads (a subset of ``service.api.settings.Settings``)."""

    @property
    def api_keys(self) -> str: ...
    @property
    def api_keys_file(self) -> str | os.PathLike[str] | None: ...
    @property
    def max_concurrent_generations(self) -> int: ...
    @property
    def max_bytes_in_flight(self) -> int: ...
    @property
    def admission_timeout_seconds(self) -> float: ...
    @property
    def cors_origins(self) -> str | Sequence[str]: ...


@dataclass(frozen=True)
class Hardening:
    """What :func:`install` put on ``app.state.hardening``."""

    keys: ApiKeys
    admission: Admission
    metrics: Metrics


def install(app: FastAPI, settings: HardeningSettings) -> Hardening:
    """Wire access control, admission, metrics, ``GET /metrics`` and access logs into ``app``."""
    keys = ApiKeys.from_config(settings.api_keys, settings.api_keys_file)
    metrics = Metrics()
    admission = Admission(
        settings.max_concurrent_generations,
        settings.max_bytes_in_flight,
        settings.admission_timeout_seconds,
        on_reject=lambda: metrics.reject("overloaded"),
    )
    metrics.observe_admission(admission)
    counters = getattr(app.state, "counters", None)  # the app factory's stream counters, if any
    if counters is not None:
        metrics.observe_stream_counters(counters)
    hardening = Hardening(keys, admission, metrics)
    app.state.hardening = hardening

    app.add_exception_handler(Overloaded, _overloaded_handler)
    app.add_api_route(
        "/metrics",
        metrics.endpoint,
        methods=["GET"],
        operation_id="metrics",
        summary="Prometheus metrics",
        description="Counters, gauges and histograms in the Prometheus text format.",
        response_class=PlainTextResponse,
        tags=["operations"],
    )

    # add_middleware puts each new layer outside the previous ones: innermost first.
    app.add_middleware(ApiKeyMiddleware, keys=keys, on_reject=lambda: metrics.reject("unauthorized"))
    origins = cors_origins(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Range", "If-None-Match", "If-Range", "X-Request-ID"],
            expose_headers=[
                "Content-Length",
                "Content-Range",
                "Content-Disposition",
                "Accept-Ranges",
                "ETag",
                "Retry-After",
                "X-Request-ID",
            ],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(AccessLogMiddleware, logger=configure_access_log())

    build = app.openapi

    def openapi() -> dict[str, Any]:
        return document_security(app, build())

    app.openapi = openapi  # type: ignore[method-assign]
    return hardening


def cors_origins(value: str | Sequence[str]) -> list[str]:
    """Origins from a comma-separated string or a list (empty: CORS off)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item.strip()]


class Generation:
    """The admission slot and stream instrumentation of one generating request."""

    def __init__(self, hardening: Hardening | None):
        self._hardening = hardening
        self._slot: Slot | None = None
        self._streams: list[AsyncGenerator[bytes, None]] = []

    async def admit(self, nbytes: int) -> None:
        """Wait for capacity for an answer of ``nbytes`` bytes, or raise :class:`Overloaded`."""
        if self._slot is not None:
            raise RuntimeError("a request takes one generation slot")
        if self._hardening is not None:
            self._slot = await self._hardening.admission.acquire(nbytes)

    def stream(self, chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        """``chunks`` counted in the metrics (bytes, time, disconnects), closed with the request."""
        if self._hardening is None:
            wrapped = _passthrough(chunks)
        else:
            wrapped = self._hardening.metrics.instrument_stream(chunks)
            if self._slot is not None:
                wrapped = _report_sent(wrapped, self._slot)
        self._streams.append(wrapped)
        return wrapped

    async def close(self) -> None:
        """Close the streams (a client that left leaves them suspended) and release the slot."""
        try:
            for stream in self._streams:
                with contextlib.suppress(Exception):
                    await stream.aclose()
        finally:
            if self._slot is not None:
                self._slot.release()


async def generation(request: Request) -> AsyncIterator[Generation]:
    """FastAPI dependency (``Depends(generation)``): a :class:`Generation` held until the answer is sent."""
    held = Generation(getattr(request.app.state, "hardening", None))
    try:
        yield held
    finally:
        await held.close()


async def _passthrough(chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
    async for chunk in chunks:
        yield chunk


async def _report_sent(chunks: AsyncGenerator[bytes, None], slot: Slot) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in chunks:
            yield chunk
            # Resumed: the server has handed the chunk to the transport.
            slot.sent(len(chunk))
    finally:
        await chunks.aclose()


async def _overloaded_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Overloaded)
    return ProblemError("overloaded", exc.detail, headers={"Retry-After": str(exc.retry_after)}).response(request)


def _uses(route: APIRoute, dependency: Callable[..., Any]) -> bool:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if dep.call is dependency:
            return True
        stack.extend(dep.dependencies)
    return False


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def document_security(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Add the bearer scheme, 401 and (for generating routes) 503 to an OpenAPI document of ``app``.

    Idempotent; the app's own ``openapi()`` may call it on the document it builds.
    """
    components = schema.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    if BEARER_SCHEME in schemes:
        return schema
    schemes[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "An API key. Required on every endpoint except /healthz and /readyz when the server is "
            "configured with keys (TENSORINIT_API_KEYS or TENSORINIT_API_KEYS_FILE); ignored otherwise."
        ),
    }
    schemas = components.setdefault("schemas", {})
    if "Problem" not in schemas:
        problem_schema = Problem.model_json_schema(ref_template=REF)
        schemas.update(problem_schema.pop("$defs", {}))
        schemas["Problem"] = problem_schema
    generating = {
        (route.path_format, method.lower())
        for route in app.routes
        if isinstance(route, APIRoute) and _uses(route, generation)
        for method in route.methods or ()
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if path not in PUBLIC_PATHS:
                operation["security"] = [{BEARER_SCHEME: []}]
                responses.setdefault("401", problem("no valid API key (unauthorized); WWW-Authenticate: Bearer"))
            if (path, method) in generating:
                responses.setdefault("503", {**problem("no generation slot came free in time (overloaded)"), "headers": _RETRY_AFTER})
    return schema
