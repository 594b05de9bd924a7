"""/schemes: every scheme with aliases, parameters, defaults per convention, formula and source."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.core import ALGORITHM_VERSION, CONVENTIONS, DTYPES, SCHEMES, UnknownSchemeError, lookup

from ..docs import problem
from ..models import model_name
from ..problems import ProblemError

router = APIRouter(tags=["catalogue"])


def _describe(name: str) -> dict[str, Any]:
    return {**SCHEMES[name].describe(), "model": model_name(SCHEMES[name])}


@router.get("/schemes", operation_id="schemes_list", summary="Every scheme, the conventions, dtypes and limits")
async def schemes_list(request: Request) -> dict[str, Any]:
    return {
        "algorithm": ALGORITHM_VERSION,
        "conventions": list(CONVENTIONS),
        "dtypes": list(DTYPES),
        "limits": request.app.state.settings.public_limits(),
        "schemes": [_describe(name) for name in SCHEMES],
    }


@router.get(
    "/schemes/{name}",
    operation_id="schemes_get",
    summary="One scheme (aliases resolve)",
    responses={404: problem("no such scheme (not-found), with suggestions"), 422: problem("invalid path")},
)
async def schemes_get(name: str) -> dict[str, Any]:
    try:
        found = lookup(name)
    except UnknownSchemeError as err:
        raise ProblemError("not-found", err.message, suggestions=err.suggestions) from None
    return _describe(found.name)
