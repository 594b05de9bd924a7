"""/schemes: every scheme with aliases, parameters, defaults per convention, formula and source.

Also what every catalogue's ``GET /<things>/{name}`` shares (/schemes/{name}, /recipes/{name}):
the path parameter with the names it finds as its enum, a 404 ``not-found`` problem for any
other name, and the entry as its list describes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Request

from service.core import ALGORITHM_VERSION, CONVENTIONS, DTYPES, SCHEMES, Scheme, UnknownSchemeError, lookup
from service.core.errors import UnknownRecipeError

from ..docs import problem
from ..models import model_name
from ..problems import ProblemError

router = APIRouter(tags=["catalogue"])
T = TypeVar("T")


def name_parameter(description: str, names: Sequence[str]) -> Any:
    """The ``{name}`` path parameter of an entry, its enum the names that find one (in the OpenAPI document)."""
    return Path(description=description, json_schema_extra={"enum": list(names)})


def entry_responses(not_found: str) -> dict[int | str, dict[str, Any]]:
    return {404: problem(not_found), 422: problem("invalid path")}


def entry(name: str, find: Callable[[str], T], describe: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """What ``find`` finds for ``name``, described; else the 404 ``not-found`` problem saying what exists.

    ``find`` raises the engine's unknown-name error, whose message lists the names (or, for
    a scheme, suggests the closest ones, which the problem carries as ``suggestions``).
    """
    try:
        found = find(name)
    except (UnknownSchemeError, UnknownRecipeError) as err:
        extra: dict[str, Any] = {"suggestions": err.suggestions} if isinstance(err, UnknownSchemeError) else {}
        raise ProblemError("not-found", err.message, **extra) from None
    return describe(found)


NAMES = sorted({key for s in SCHEMES.values() for key in (s.name, *s.aliases)})
"""What /schemes/{name} finds (any other name is a 404 with suggestions)."""


def _describe(scheme: Scheme) -> dict[str, Any]:
    return {**scheme.describe(), "model": model_name(scheme)}


@router.get("/schemes", operation_id="schemes_list", summary="Every scheme, the conventions, dtypes and limits")
async def schemes_list(request: Request) -> dict[str, Any]:
    return {
        "algorithm": ALGORITHM_VERSION,
        "conventions": list(CONVENTIONS),
        "dtypes": list(DTYPES),
        "limits": request.app.state.settings.public_limits(),
        "schemes": [_describe(scheme) for scheme in SCHEMES.values()],
    }


@router.get(
    "/schemes/{name}",
    operation_id="schemes_get",
    summary="One scheme (aliases resolve)",
    responses=entry_responses("no such scheme (not-found), with suggestions"),
)
async def schemes_get(name: Annotated[str, name_parameter("a scheme name or alias", NAMES)]) -> dict[str, Any]:
    return entry(name, lookup, _describe)
