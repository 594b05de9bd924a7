"""/recipes and /plan: the recipe catalogue, and what a recipe does to a model before anything is generated."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from service.core.manifest import ATTRIBUTES, KINDS, MODEL_ROLES
from service.core.recipes import RECIPES, Recipe, lookup_recipe

from ..docs import negotiated
from ..models import RecipeRequest
from ..negotiation import TABLES, TEXT, negotiate
from ..offload import off_loop
from ..problems import ProblemError
from ..resolution import plan_for, read_json, resolve_recipe, validate
from ..settings import Settings
from .catalogue import entry, entry_responses, name_parameter

router = APIRouter(tags=["recipes"])


@router.get("/recipes", operation_id="recipes_list", summary="Every recipe, the module kinds, model roles and attributes of a manifest")
async def recipes_list() -> dict[str, Any]:
    return {
        "recipes": [r.describe() for r in RECIPES.values()],
        "kinds": {
            kind: list(roles) or ["weight_ih_l<k>", "weight_hh_l<k>", "bias_ih_l<k>", "bias_hh_l<k>", "weight_hr_l<k>"]
            for kind, roles in KINDS.items()
        },
        "roles": {role: list(patterns) for role, patterns in MODEL_ROLES.items()},
        "attributes": ATTRIBUTES,
    }


@router.get("/recipes/{name}", operation_id="recipes_get", summary="One recipe", responses=entry_responses("no such recipe (not-found)"))
async def recipes_get(name: Annotated[str, name_parameter("a recipe name", sorted(RECIPES))]) -> dict[str, Any]:
    return entry(name, lookup_recipe, Recipe.describe)


PLAN_RESPONSES = negotiated(
    "the resolved spec of every tensor (JSON), or a table with Accept: text/plain",
    TABLES,
    too_large="too many tensors (max_batch_tensors), the body or the file too large",
    invalid="an unknown recipe, kind, role or parameter, a missing recipe parameter, or tensors nothing covers (each listed)",
)


def _describe(dist: dict[str, Any]) -> str:
    kind = dist["kind"]
    if kind == "constant":
        return f"{dist['value']:g}"
    if kind == "uniform":
        return f"U({dist['low']:.6g}, {dist['high']:.6g})"
    if kind == "normal":
        return f"N({dist['mean']:g}, {dist['std']:.6g}²)"
    if kind == "truncated_normal":
        return f"TN({dist['mean']:g}, {dist['std']:.6g}²; {dist['low']:.4g}..{dist['high']:.4g})"
    if kind == "orthogonal":
        return f"orthogonal × {dist['gain']:g}"
    return str(kind)


def render_plan(body: dict[str, Any]) -> str:
    """One aligned line per tensor: name, shape, dtype, scheme, distribution, and the recipe's reason."""
    lines = [f"tensorinit plan · recipe {body['recipe']} · {len(body['specs'])} tensors · {body['bytes']} bytes · etag {body['etag']}"]
    rows = [("tensor", "shape", "dtype", "scheme", "distribution", "why")]
    for spec in body["specs"]:
        derivation = spec["derivation"]
        dist = _describe(spec["distribution"])
        if spec.get("fill_rows"):
            dist += " " + ", ".join(f"rows {a}:{b}={v:g}" for a, b, v in spec["fill_rows"])
        why = derivation.get("recipe_rule") or derivation.get("recipe", "")
        rows.append((spec["name"], "×".join(map(str, spec["shape"])) or "scalar", spec["dtype"], spec["scheme"], dist, why))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if body["skipped"]:
        lines.append("left out by a null rule: " + ", ".join(body["skipped"]))
    return "\n".join(lines) + "\n"


@router.post(
    "/plan",
    operation_id="plan_post",
    summary="What a recipe does to a model: every tensor's resolved spec, nothing generated",
    responses=PLAN_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the body of a recipe POST /init",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecipeRequest"}}},
        }
    },
)
async def plan_post(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    media_type = negotiate(request.headers.get("accept"), TABLES)
    document = await read_json(request, settings.max_body_bytes)
    # Resolving grows with the manifest and the rules (seconds of CPU at the limits): on a
    # thread, so that the event loop keeps serving everyone else (issue 17).
    return await off_loop(_plan, document, media_type, settings)


def _plan(document: Any, media_type: str, settings: Settings) -> Response:
    if not isinstance(document, dict) or "recipe" not in document:
        raise ProblemError(
            "validation-error",
            "recipe: required but not given",
            errors=[{"path": ["recipe"], "message": "required", "allowed": "one of " + ", ".join(RECIPES)}],
        )
    parsed = validate(document)
    assert isinstance(parsed, RecipeRequest)
    plan = resolve_recipe(parsed, settings)
    prepared = plan_for(plan.specs, settings)  # the same limits and ETag as POST /init
    body = {
        "recipe": lookup_recipe(parsed.recipe).name,
        "algorithm": plan.specs[0].algorithm,
        "etag": prepared.etag,
        "bytes": prepared.size,
        "elements": sum(math.prod(s.shape) for s in plan.specs),
        "specs": [s.to_dict() for s in plan.specs],
        "skipped": plan.skipped,
    }
    headers = {"Vary": "Accept"}
    if media_type == TEXT:
        return PlainTextResponse(render_plan(body), headers=headers)
    return JSONResponse(body, headers=headers)
