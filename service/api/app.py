"""The application factory: ``uvicorn service.api.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service import __version__
from service.core import default_executor
from service.safetensors_stream import Counters

from . import problems
from .docs import component_schemas
from .hardening import document_security, install
from .request_id import RequestIdMiddleware
from .routes import catalogue, files, health, stats
from .settings import Settings

DESCRIPTION = """Reproducibly initialized neural-network tensors, streamed as safetensors.

Every error is `application/problem+json` (RFC 9457). Limits are in `/version` and `/schemes`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured application; ``settings`` default to the environment (``TENSORINIT_*``)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        default_executor()  # start the block pool before the first request
        app.state.ready = True
        yield
        app.state.ready = False

    app = FastAPI(title="tensorinit", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.ready = False
    app.state.counters = Counters()
    problems.install(app)
    for module in (files, stats, catalogue, health):
        app.include_router(module.router)

    # -- cross-cutting concerns ------------------------------------------------------
    # Issue 5 plugs in here (security.py, metrics.py, admission.py, logging.py): route
    # dependencies through `app.router.dependencies` or middleware through
    # `app.add_middleware`, between these lines. Middleware added later wraps what was
    # added before; RequestIdMiddleware is added last so that it is outermost and every
    # answer, errors included, carries X-Request-ID. No GZip: the bodies are binary.
    install(app, settings)  # access control, admission, metrics, access logs (issue 5)
    app.add_middleware(RequestIdMiddleware)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(component_schemas())
            document_security(app, schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
