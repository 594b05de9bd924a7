"""OpenAPI fragments shared by the routes: problem responses and the request-body schema."""

from __future__ import annotations

from typing import Any

from service.core import CONVENTIONS, DTYPES, SCHEMES, Param

from .models import INIT_ADAPTER
from .problems import MEDIA_TYPE, Problem

REF = "#/components/schemas/{model}"
BINARY = {"schema": {"type": "string", "format": "binary"}}


def problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {MEDIA_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}}}


def request_body(description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="InitRequest")}}},
        }
    }


def component_schemas() -> dict[str, Any]:
    """Schemas that routes reference but FastAPI does not generate (bodies are parsed by hand)."""
    body = INIT_ADAPTER.json_schema(ref_template=REF, mode="validation")
    schemas: dict[str, Any] = dict(body.pop("$defs", {}))
    schemas["InitRequest"] = {"title": "InitRequest", "description": "one tensor (scheme at the top level) or a batch (tensors)", **body}
    problem_schema = Problem.model_json_schema(ref_template=REF)
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    return schemas


def query_parameters(*, stats: bool = False) -> dict[str, Any]:
    """The GET query form: the tensor fields, then every scheme parameter (each applies to its schemes).

    As exact as a flat query form can be: names, enums, bounds and list syntax are what
    the service accepts; which scheme takes which parameter is said in each description
    (another scheme's parameter is a 422 ``unknown-parameter``).
    """

    def param(name: str, schema: dict[str, Any], description: str, required: bool = False, **extra: Any) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required, "schema": schema, "description": description, **extra}

    def axes(name: str) -> dict[str, Any]:
        listed = {"type": "array", "items": {"type": "integer"}}
        return param(name, listed, "comma-separated axes for the fans (fan-based schemes)", style="form", explode=False)

    names = sorted({key for s in SCHEMES.values() for key in (s.name, *s.aliases)})
    dims = {"type": "array", "items": {"type": "integer", "minimum": 0}, "example": [256, 128]}
    params = [
        param("scheme", {"type": "string", "enum": names}, "scheme name or alias (see /schemes)", True),
        param("shape", dims, "comma-separated dimensions; empty for a scalar", True, style="form", explode=False),
        param("seed", {"type": "integer", "minimum": 0, "maximum": 2**64 - 1, "default": 0}, "random seed"),
        param("dtype", {"type": "string", "enum": list(DTYPES), "default": "float32"}, "element type"),
        param("name", {"type": "string", "default": "weight"}, "tensor name (it also picks the random stream)"),
        param("convention", {"type": "string", "enum": list(CONVENTIONS), "default": "torch"}, "weight layout and defaults"),
        *(axes(a) for a in ("in_axes", "out_axes", "batch_axes")),
    ]
    seen: dict[str, tuple[Param, list[str]]] = {}
    for s in SCHEMES.values():
        for p in s.params:
            seen.setdefault(p.name, (p, []))[1].append(s.name)
    for name, (p, schemes) in sorted(seen.items()):
        params.append(param(name, p.json_schema(), "parameter of " + ", ".join(schemes)))
    if stats:
        params.append(param("bins", {"type": "integer", "minimum": 1, "default": 64}, "histogram bins"))
    return {"parameters": params}
