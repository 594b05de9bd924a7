"""The two ASGI layers every request crosses: the edge (outermost) and direct dispatch (innermost).

Why by hand: a small /init answer is ~50 µs of real work, and each generic layer
(Starlette's ``BaseHTTPMiddleware`` is out anyway: it buffers streams) costs a call,
a closure and a wrapped ``send`` per message. Four such layers, request id, access log,
metrics and FastAPI's per-route machinery, cost more than the work itself (measured
in ``docs/benchmarks.md``, issue 3). So:

:class:`EdgeMiddleware`
    request id (``scope["state"]["request_id"]``, echoed as ``X-Request-ID``),
    ``X-Content-Type-Options: nosniff``, the Prometheus answer counters and latency,
    and one JSON access-log line, all from a single wrapped ``send``.

:class:`DirectRoutes`
    for FastAPI routes whose endpoint takes nothing but the ``Request`` (the
    generating routes read their own query or body), FastAPI's dependency solving and
    the router's linear matching have nothing to contribute: such a request is handed
    straight to the endpoint, with the same exception handlers the app registered.
    Everything else, and any method or path that does not match exactly, goes through
    the app as usual. It sits innermost, so access control and CORS still come first.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logging import AccessLog
from .metrics import Metrics, route_template
from .problems import METHODS
from .request_id import new_request_id

_METHODS = frozenset(METHODS)
NOSNIFF = (b"x-content-type-options", b"nosniff")
"""On every answer: no browser may read a body (a problem echoing ``<script>``, a file) as another type than it says."""


class EdgeMiddleware:
    """Request id, metrics and the access log for every HTTP request, with one ``send`` wrapper.

    The access-log line (see :mod:`service.api.logging`) is queued when the answer is
    complete, or has failed.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, access_log: AccessLog):
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # Child series by label values: prometheus_client's labels() takes a lock and
        # builds a key on every call; the label sets here are small and fixed.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = agent = None
        for key, value in scope["headers"]:  # the first of each, as Headers.get
            if key == b"x-request-id" and incoming is None:
                incoming = value.decode("latin-1")
            elif key == b"user-agent" and agent is None:
                agent = value
        state = scope.setdefault("state", {})
        rid = state.setdefault("request_id", new_request_id(incoming))
        id_header = (b"x-request-id", rid.encode("latin-1"))
        status = 0
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header, NOSNIFF]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - start
            status = status or 500  # no answer started: the server's own 500, or a failure
            route = route_template(scope)
            self._observe(scope["method"], route, status, seconds)
            self.access_log.request(rid, scope, route, status, sent, seconds, agent)

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            m = self.metrics
            series = self._series[key] = (m.requests.labels(method, route, str(status)), m.request_seconds.labels(method, route))
        series[0].inc()
        series[1].observe(seconds)


def request_only(route: APIRoute) -> bool:
    """Whether ``route``'s endpoint is a coroutine function of the ``Request`` alone that returns a Response.

    Then FastAPI has nothing to do for it: no parameter or dependency to solve, no
    return value to validate or serialize, no thread to run it in.
    """
    params = list(inspect.signature(route.endpoint).parameters.values())
    return (
        inspect.iscoroutinefunction(route.endpoint)
        and len(params) == 1
        and params[0].annotation in (Request, "Request")
        and route.dependant.request_param_name == params[0].name
        and not route.dependencies
        and not route.dependant.dependencies
        and route.response_model is None
    )


class DirectRoutes:
    """Hands requests for request-only endpoints straight to them (see the module docstring).

    ``routes`` are the APIRoutes of routers the app includes as they are (no prefix, no
    router dependencies); those that satisfy :func:`request_only` and have no path
    parameters are looked up by exact (method, path) in a table made once (none when
    the app has app-wide dependencies). Their errors go through Starlette's own
    ``ExceptionMiddleware`` with the app's handlers, as the router's would: handlers
    by status code and by class, "handled exception after the response started"
    included. An error with no handler propagates to the server-error layer.
    """

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, routes: Iterable[BaseRoute]):
        self.app = app
        self.fastapi = fastapi
        self.table: dict[tuple[str, str], APIRoute] = {}
        if not fastapi.router.dependencies:
            for route in routes:
                if isinstance(route, APIRoute) and "{" not in route.path and request_only(route):
                    for method in route.methods or ():
                        self.table.setdefault((method, route.path), route)  # the first match wins, as in the router
        # What FastAPI's middleware stack gives ExceptionMiddleware: every handler but the
        # server-error one (500 / Exception), which stays with ServerErrorMiddleware.
        handlers = {key: value for key, value in fastapi.exception_handlers.items() if key not in (500, Exception)}
        self._guarded = ExceptionMiddleware(self._endpoint, handlers=handlers, debug=fastapi.debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.table.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.fastapi
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        await self._guarded(scope, receive, send)

    @staticmethod
    async def _endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        response: Response = await scope["endpoint"](Request(scope, receive, send))
        await response(scope, receive, send)
