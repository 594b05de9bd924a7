"""/schemes: every scheme with aliases, parameters, defaults per convention, formula and source."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from service.core import ALGORITHM_VERSION, CONVENTIONS, DTYPES, SCHEMES, UnknownSchemeError, lookup

from ..docs import problem
from ..models import model_name
from ..problems import ProblemError

router = APIRouter(tags=["catalogue"])

NAMES = sorted({key for s in SCHEMES.values() for key in (s.name, *s.aliases)})
"""What /schemes/{name} finds (any other name is a 404 with suggestions)."""


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
async def schemes_get(
    name: Annotated[str, Path(description="a scheme name or alias", json_schema_extra={"enum": NAMES})],
) -> dict[str, Any]:
    try:
        found = lookup(name)
    except UnknownSchemeError as err:
        raise ProblemError("not-found", err.message, suggestions=err.suggestions) from None
    return _describe(found.name)
