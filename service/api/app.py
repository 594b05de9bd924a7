"""The application factory: ``uvicorn service.api.app:create_app --factory``."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry import TelemetryConfig

from service import __version__
from service.core import default_executor, model_catalogue
from service.core.algorithms import warm_up
from service.safetensors_stream import Counters

from . import offload, problems
from .docs import component_schemas, state_limits
from .edge import DirectRoutes
from .hardening import install
from .resolution import QueryTemplates
from .routes import architectures, catalogue, files, health, models, page, propagation, recipes, stats, swagger
from .settings import Settings

DESCRIPTION = """Reproducibly initialized neural-network tensors, streamed as safetensors.

Every error is `application/problem+json` (RFC 9457). Limits are in `/version` and `/schemes`."""


# uvicorn's own logger: uvicorn gives it a handler and its --log-level, so the line lands beside
# "Uvicorn running on ..." in the same format (a logger of our own would print nothing under uvicorn).
_log = logging.getLogger("uvicorn.error")


def _warm(loop: asyncio.AbstractEventLoop, app: FastAPI) -> None:
    start = time.perf_counter()
    warm_up()
    offload.settle()  # what start-up made lives as long as the process: out of the collector's way
    # The loop has closed if the app stopped before its kernels were ready: nothing to tell then.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_ready, app, time.perf_counter() - start)


def _ready(app: FastAPI, seconds: float) -> None:
    app.state.ready = True
    _log.info("tensorinit is ready: kernels compiled (or loaded from numba's cache) in %.1f s; /readyz answers 200", seconds)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured application; ``settings`` default to the environment (``TENSORINIT_*``)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        default_executor()  # start the block pool before the first request
        offload.start()  # the event loop waits at most 1 ms for the GIL (issue 17)
        # Kernels compile (or load from numba's cache) in the background: /healthz answers
        # at once, /readyz only once they are ready. A request before then compiles what
        # it needs itself (numba holds a lock), so nothing fails, it is only slower.
        loop = asyncio.get_running_loop()
        warming = threading.Thread(target=_warm, args=(loop, app), name="tensorinit-warm-up", daemon=True)
        warming.start()
        _log.info("tensorinit: compiling the kernels in the background; /healthz answers now, /readyz once they are ready")
        yield
        app.state.ready = False
        app.state.hardening.access_log.flush()  # not closed: a later lifespan of this app logs on

    # FastAPI's OpenTelemetry hook asks the global providers on every request whether
    # anyone listens: off unless TENSORINIT_OTEL asks for it.
    telemetry = None if settings.otel else TelemetryConfig(tracing=False, metrics=False, logs=False)
    # /docs is routes/swagger.py's (served from the package, under a strict CSP); no ReDoc, which needs inline styles and a CDN.
    app = FastAPI(
        title="tensorinit",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=telemetry,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.ready = False
    app.state.counters = Counters()
    app.state.query_templates = QueryTemplates(settings)
    app.state.catalogue = model_catalogue.load(settings.models_dir)
    problems.install(app)
    for module in (files, stats, catalogue, recipes, health, propagation, page, swagger, architectures, models):
        app.include_router(module.router)  # as they are: DirectRoutes relies on it
    # Innermost layer: the generating routes take only the Request, so they skip
    # FastAPI's per-route machinery (edge.py says why; a test holds both paths equal).
    # Not with OpenTelemetry on: FastAPI names its spans after the route it selects.
    if not settings.otel:
        app.add_middleware(DirectRoutes, fastapi=app, routes=[*files.router.routes, *stats.router.routes, *health.direct])

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # A copy: the routes' openapi_extra is shared by every app, and state_limits writes this app's limits in.
            schema = copy.deepcopy(get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes))
            schema.setdefault("components", {}).setdefault("schemas", {}).update(component_schemas())
            state_limits(schema, settings)  # this server's limits, where the document states them
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # -- cross-cutting concerns (issue 5) ---------------------------------------------
    # Access control, admission, metrics, access logs and request ids, as pure ASGI
    # layers outside DirectRoutes (see hardening.py for their order); install() also
    # adds the security scheme, 401 and 503 to the document above. No GZip: the bodies
    # are binary.
    install(app, settings)
    return app
