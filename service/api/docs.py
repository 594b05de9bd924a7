"""OpenAPI fragments shared by the routes: problem responses and the request-body schema."""

from __future__ import annotations

from typing import Any

from service.core import SCHEMES

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
    """The GET query form: the tensor fields, then every scheme parameter (each applies to its schemes)."""

    def param(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}

    params = [
        param("scheme", {"type": "string"}, "scheme name or alias (see /schemes)", True),
        param("shape", {"type": "string", "example": "256,128"}, "comma-separated dimensions; empty for a scalar", True),
        param("seed", {"type": "integer", "default": 0}, "random seed"),
        param("dtype", {"type": "string", "default": "float32"}, "float32, float64, float16 or bfloat16"),
        param("name", {"type": "string", "default": "weight"}, "tensor name (it also picks the random stream)"),
        param("convention", {"type": "string", "default": "torch"}, "torch, keras, jax or haiku"),
        *(
            param(a, {"type": "string"}, "comma-separated axes for the fans (fan-based schemes)")
            for a in ("in_axes", "out_axes", "batch_axes")
        ),
    ]
    seen: dict[str, tuple[str, list[str]]] = {}
    for s in SCHEMES.values():
        for p in s.params:
            seen.setdefault(p.name, (p.type, []))[1].append(s.name)
    for name, (kind, schemes) in sorted(seen.items()):
        params.append(param(name, {"type": kind}, "parameter of " + ", ".join(schemes)))
    if stats:
        params.append(param("bins", {"type": "integer", "default": 64}, "histogram bins"))
    return {"parameters": params}
