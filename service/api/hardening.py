"""Wiring of access control, admission, metrics and access logs into a FastAPI app.

:func:`install` is the only entry point the app factory needs. The layers, outermost
first, are all pure ASGI middleware (``BaseHTTPMiddleware`` would buffer streams and
hide client disconnects from the routes)::

    EdgeMiddleware      request id and X-Request-ID, metrics by method, route template
                        and status, one JSON access-log line (edge.py)
    CORSMiddleware      only when ``cors_origins`` is set (off by default)
    ApiKeyMiddleware    only when keys are configured: 401 unless the bearer key is valid
                        (the probes and the page's own files are public: the page asks for the key)
    (DirectRoutes       the app factory's own, innermost: see edge.py)
    the app's routes

A streaming route returns ``admitted(request, StreamingResponse(...), nbytes)``: the
slot is taken when the response starts, before any byte (so overload is a 503 problem),
and held until the last byte is sent or the client goes away. Work that is not
streamed (statistics) runs inside ``async with admit(request, nbytes):``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .admission import Admission, Overloaded, Slot
from .docs import REF, problem
from .edge import EdgeMiddleware
from .logging import PROBE_PATHS, AccessLog
from .metrics import Chunk, Metrics, chunk_bytes
from .problems import Problem, ProblemError
from .routes.page import PAGE_PATHS
from .security import PUBLIC_PATHS, ApiKeyMiddleware, ApiKeys

BEARER_SCHEME = "bearerAuth"
T = TypeVar("T")

#: Operations that generate numbers and so wait for admission (503 ``overloaded``); the
#: per-scheme GET forms (``init_get_he_normal``, ``stats_get_he_normal``, ...) are named after them.
GENERATING_OPERATIONS = frozenset(
    {"init_get", "init_post", "stats_get", "stats_post", "propagation_post", "checkpoint_file_get", "checkpoint_file_post"}
)


def generating(operation_id: str) -> bool:
    """Whether the operation ``operation_id`` generates numbers (and so may answer 503 ``overloaded``)."""
    return operation_id in GENERATING_OPERATIONS or operation_id.startswith(("init_get_", "stats_get_"))


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
    def max_client_share(self) -> float: ...
    @property
    def cors_origins(self) -> str | Sequence[str]: ...
    @property
    def access_log(self) -> str: ...
    @property
    def access_log_flush_seconds(self) -> float: ...
    @property
    def access_log_probes(self) -> bool: ...


@dataclass(frozen=True)
class Hardening:
    """What :func:`install` put on ``app.state.hardening``."""

    keys: ApiKeys
    admission: Admission
    metrics: Metrics
    access_log: AccessLog


def install(app: FastAPI, settings: HardeningSettings) -> Hardening:
    """Wire access control, admission, metrics, ``GET /metrics`` and access logs into ``app``."""
    keys = ApiKeys.from_config(settings.api_keys, settings.api_keys_file)
    metrics = Metrics()
    admission = Admission(
        settings.max_concurrent_generations,
        settings.max_bytes_in_flight,
        settings.admission_timeout_seconds,
        on_reject=lambda: metrics.reject("overloaded"),
        client_share=settings.max_client_share,
    )
    metrics.observe_admission(admission)
    counters = getattr(app.state, "counters", None)  # the app factory's stream counters, if any
    if counters is not None:
        metrics.observe_stream_counters(counters)
    access_log = AccessLog.open(settings.access_log, flush_seconds=settings.access_log_flush_seconds)
    access_log.skip_paths = frozenset() if settings.access_log_probes else PROBE_PATHS
    hardening = Hardening(keys, admission, metrics, access_log)
    app.state.hardening = hardening

    app.add_exception_handler(Overloaded, _overloaded_handler)
    app.add_exception_handler(ClientGoneError, _client_gone)
    app.add_exception_handler(ClientDisconnect, _client_gone)  # left while sending its body
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
    if keys.enabled:
        public = PUBLIC_PATHS | PAGE_PATHS  # a browser cannot send a bearer header for a page it opens
        app.add_middleware(ApiKeyMiddleware, keys=keys, public_paths=public, on_reject=lambda: metrics.reject("unauthorized"))
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
    app.add_middleware(EdgeMiddleware, metrics=metrics, access_log=access_log)

    build = app.openapi

    def openapi() -> dict[str, Any]:
        return document_security(build(), keys=keys.enabled)

    app.openapi = openapi  # type: ignore[method-assign]
    return hardening


def cors_origins(value: str | Sequence[str]) -> list[str]:
    """Origins from a comma-separated string or a list (empty: CORS off)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item.strip()]


def admitted(request: Request, response: StreamingResponse, nbytes: int) -> Response:
    """``response``, taking an admission slot for ``nbytes`` before its first byte and holding it to the last.

    The slot is awaited when the response is sent, still before any byte: if none
    comes free in time, :class:`Overloaded` becomes a 503 problem as usual. The body is
    counted in the metrics, its bytes leave "in flight" as they are sent, and the slot
    is released when the stream completes, fails, or the client goes away.
    """
    hardening = _hardening(request)
    return response if hardening is None else _AdmittedStream(response, hardening, nbytes)


@contextlib.asynccontextmanager
async def admit(request: Request, nbytes: int) -> AsyncIterator[None]:
    """``async with admit(request, n):`` holds a slot for work that is not streamed (statistics)."""
    hardening = _hardening(request)
    if hardening is None:
        yield
        return
    async with hardening.admission.slot(nbytes, client_of(request.scope)):
        yield


def client_of(scope: Scope) -> str | None:
    """Whom admission shares are counted for: the peer's address (behind nginx, the one it forwards), not its port."""
    client = scope.get("client")
    return None if client is None else str(client[0])


def _hardening(request: Request) -> Hardening | None:
    """What install() put on the app, if it was installed."""
    hardening = getattr(request.app.state, "hardening", None)
    return hardening if isinstance(hardening, Hardening) else None


class _AdmittedStream(Response):
    def __init__(self, inner: StreamingResponse, hardening: Hardening, nbytes: int):
        self.inner = inner
        self.hardening = hardening
        self.nbytes = nbytes
        self.status_code = inner.status_code
        self.raw_headers = inner.raw_headers
        self.background = inner.background

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slot = await while_connected(receive, self.hardening.admission.acquire(self.nbytes, client_of(scope)))
        body = _report_sent(self.hardening.metrics.instrument_stream(self.inner.body_iterator), slot)
        self.inner.body_iterator = body
        self.inner.background = self.background
        try:
            await self.inner(scope, receive, send)
        finally:
            try:
                # A client that left may leave the stream suspended: close it now, not at GC.
                with contextlib.suppress(Exception):
                    await body.aclose()
            finally:
                slot.release()


class ClientGoneError(Exception):
    """The client went away before its answer was ready (answered 499, which no one reads)."""


async def while_connected(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """``await work``, unless the client goes away first: then ``work`` is cancelled and :class:`ClientGoneError` raised.

    The client's leaving shows as ``http.disconnect`` from ``receive``; a request body
    must have been read already (a GET has none). Without this, a request waiting for
    admission, or a /stats pass, would run to its end for no one. A cancellation of
    the caller cancels ``work`` too, waits for it to unwind and propagates; an error
    from ``receive`` propagates as it is.
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the caller was cancelled
        task.cancel()
        gone.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)
        raise
    if task.done():
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        return task.result()
    task.cancel()  # the client left first (or receive failed): unwind the work, then say which
    await asyncio.gather(task, return_exceptions=True)
    error = gone.exception()
    if error is not None:
        raise error
    raise ClientGoneError


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)


async def _report_sent(chunks: AsyncGenerator[Chunk, None], slot: Slot) -> AsyncGenerator[Chunk, None]:
    try:
        async for chunk in chunks:
            yield chunk
            # Resumed: the server has handed the chunk to the transport.
            slot.sent(chunk_bytes(chunk))
    finally:
        await chunks.aclose()


async def _overloaded_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Overloaded)
    return ProblemError("overloaded", exc.detail, headers={"Retry-After": str(exc.retry_after)}).response(request)


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def document_security(schema: dict[str, Any], *, keys: bool) -> dict[str, Any]:
    """Add 503 to the generating operations of an OpenAPI document of ``app``, 431 (and 408 with a body) to every
    operation, and, when ``keys`` are configured, the bearer scheme and 401.

    The document says what this server does: without keys nothing is checked, so no
    operation declares a security requirement (a client, or a contract test, would
    otherwise rightly expect a 401 that never comes). Idempotent; the app's own
    ``openapi()`` may call it on the document it builds.
    """
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    if "Problem" not in schemas:
        problem_schema = Problem.model_json_schema(ref_template=REF)
        schemas.update(problem_schema.pop("$defs", {}))
        schemas["Problem"] = problem_schema
    if keys:
        components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "An API key (TENSORINIT_API_KEYS or TENSORINIT_API_KEYS_FILE), required on every endpoint "
                "except /healthz and /readyz. A server without keys serves a document without this scheme."
            ),
        }
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if keys and path not in PUBLIC_PATHS:
                operation["security"] = [{BEARER_SCHEME: []}]
                responses.setdefault("401", problem("no valid API key (unauthorized); WWW-Authenticate: Bearer"))
            if generating(operation.get("operationId", "")):
                responses.setdefault("503", {**problem("no generation slot came free in time (overloaded)"), "headers": _RETRY_AFTER})
            # The connection's own bounds (service/api/protocol.py), answered before or without the app.
            responses.setdefault("431", problem("the request head is over max_header_bytes (header-too-large); the connection is closed"))
            if "requestBody" in operation:
                responses.setdefault(
                    "408",
                    problem("the body was not complete body_timeout_seconds after the head (request-timeout); the connection is closed"),
                )
    return schema
