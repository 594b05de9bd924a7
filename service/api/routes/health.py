"""Liveness, readiness, versions and the key check."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response

from service import __version__
from service.core import ALGORITHM_VERSION, ALGORITHMS

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz", summary="Liveness: answers at once, whatever is generating")
async def healthz() -> dict[str, str]:
    # async and constant time on purpose: it runs on the event loop, which generation never occupies.
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="Readiness: 200 once started, 503 while starting or shutting down",
    responses={503: {"description": "not ready"}},
)
async def readyz(request: Request) -> JSONResponse:
    ready = bool(getattr(request.app.state, "ready", False))
    return JSONResponse({"status": "ready" if ready else "not ready"}, status_code=200 if ready else 503)


@router.get("/version", operation_id="version", summary="Service, algorithm and numpy versions, and the limits")
async def version(request: Request) -> dict[str, Any]:
    return {
        "service": __version__,
        "algorithm": ALGORITHM_VERSION,
        "algorithms": sorted(ALGORITHMS),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "limits": request.app.state.settings.public_limits(),
    }


@router.get(
    "/auth",
    operation_id="auth",
    status_code=204,
    response_class=Response,
    summary="Whether this request's API key is accepted: 204, else 401 (always 204 without keys)",
    description="Nothing is computed: access control answers 401 before this route when keys are configured "
    "and the request has no valid one. nginx asks it before every answer it could take from its cache "
    "(deploy/nginx.conf, auth_request); a client may ask it to check a key.",
)
async def auth(request: Request) -> Response:
    return Response(status_code=204)


#: Routes that DirectRoutes hands requests to without FastAPI's routing (app.py): the key
#: check, which nginx asks once per cached answer (2x the keyed hits/s, docs/benchmarks.md).
direct = [route for route in router.routes if isinstance(route, APIRoute) and route.path == "/auth"]
