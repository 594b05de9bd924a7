"""OpenAPI fragments shared by the routes: problem responses and the request-body schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.core import ALGORITHMS, CONVENTIONS, DTYPES, SCHEMES, Scheme, TensorinitError, resolve

from .models import INIT_ADAPTER, LIMITS_KEY, SHAPE_SCHEMA, name_schema
from .negotiation import JSON, TEXT
from .problems import MEDIA_TYPE, Problem

REF = "#/components/schemas/{model}"
BINARY = {"schema": {"type": "string", "format": "binary"}}


def problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {MEDIA_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}}}


MEDIA = {
    JSON: ("JSON", {"type": "object"}),
    TEXT: ("text/plain", {"type": "string"}),
    "image/svg+xml": ("SVG", {"type": "string"}),
    "image/png": ("PNG", BINARY["schema"]),
}
"""What each offered media type is called in a 406's description, and its schema in a 200."""


def negotiated(
    ok: str,
    offers: Sequence[str],
    *,
    too_large: str,
    invalid: str = "invalid parameters, with paths and allowed values",
    malformed: str = "malformed JSON",
) -> dict[int | str, dict[str, Any]]:
    """The responses of a POST (or GET) answered in one of ``offers`` (:func:`.negotiation.negotiate`): 200 and its problems."""
    names = [MEDIA[m][0] for m in offers]
    listed = f"neither {names[0]} nor {names[1]}" if len(names) == 2 else f"none of {', '.join(names[:-1])} or {names[-1]}"
    return {
        200: {"description": ok, "content": {m: {"schema": MEDIA[m][1]} for m in offers}},
        400: problem(malformed),
        406: problem(f"{listed} is acceptable (not-acceptable)"),
        413: problem(too_large),
        415: problem("the body is not JSON"),
        422: problem(invalid),
    }


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
    from .routes.models import CheckpointRequest  # noqa: PLC0415 -- routes.models imports this module

    schemas["CheckpointRequest"] = CheckpointRequest.model_json_schema(ref_template=REF, mode="validation")
    return schemas


def state_limits(node: Any, settings: Any) -> None:
    """Fill in, everywhere in ``node``, the keywords :data:`.models.LIMITS_KEY` ties to a setting, with ``settings``' value.

    The smaller of the two when the schema states a bound of its own (a scheme's rank under ``max_dims``).
    """
    if isinstance(node, dict):
        for keyword, setting in node.get(LIMITS_KEY, {}).items():
            value = getattr(settings, setting)
            node[keyword] = min(node[keyword], value) if keyword in node else value
        for value in node.values():
            state_limits(value, settings)
    elif isinstance(node, list):
        for value in node:
            state_limits(value, settings)


def flat_schemes() -> list[str]:
    """Names and aliases of the schemes the flat GET form documents: those that need no parameter."""
    return sorted({key for s in SCHEMES.values() if not any(p.required for p in s.params) for key in (s.name, *s.aliases)})


FLAT_FORM = (
    " The flat form documents what every scheme takes: the tensor fields, and as `scheme` the schemes that need no"
    " parameter. It also accepts every scheme with its own parameters and axes, exactly as the per-scheme form"
    " (`/init/he_normal`, `/stats/he_normal`, ...), which documents them; another scheme's parameter is a 422"
    " `unknown-parameter` in both."
)


EXAMPLE_SHAPES = ([64, 32], [16, 8, 3, 3])
"""Small: an example is sent as it is, by people and by contract tests, to servers with small limits too."""


def example_shape(scheme: Scheme | None) -> list[int]:
    """The first of :data:`EXAMPLE_SHAPES` the engine takes for ``scheme`` (dirac and delta_orthogonal need rank 3 to 5)."""
    for shape in EXAMPLE_SHAPES:
        try:
            if scheme is not None:
                resolve(scheme.name, shape)
        except TensorinitError as err:
            if err.param == "shape":
                continue  # a missing required parameter is not the shape's fault
        return shape
    raise ValueError(f"no example shape fits {scheme}")


def query_parameters(scheme: Scheme | None = None, *, stats: bool = False) -> dict[str, Any]:
    """A GET query form, exact: every documented combination of parameters is one the models accept.

    With ``scheme``, the per-scheme form (``/init/<name>``): that scheme's own parameters
    (required where it requires them) and, for fan-based schemes, the axes. Without, the
    flat form (``/init?scheme=``): only what every scheme takes, with ``scheme`` limited
    to those that need no parameter (:data:`FLAT_FORM` says what else it accepts). A
    query that no single scheme accepts cannot be written from either. What JSON Schema
    cannot say (``low < high``, axes within the rank, the size limits) is the engine's, and
    so is every rule that ties two parameters together: each query parameter has a schema
    of its own (``gain`` with ``nonlinearity``, ``in_axes`` with ``out_axes``, the rank a
    scheme needs under the torch convention).
    """

    def param(name: str, schema: dict[str, Any], description: str, required: bool = False, **extra: Any) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required, "schema": schema, "description": description, **extra}

    def axes(name: str) -> dict[str, Any]:
        listed = {"type": "array", "items": {"type": "integer"}} | ({"minItems": 1} if name != "batch_axes" else {})
        return param(name, listed, "comma-separated axes for the fans (JAX's model)", style="form", explode=False)

    dims = {"type": "array", **SHAPE_SCHEMA, "example": example_shape(scheme)}
    if scheme is not None and scheme.rank != (0, None):
        low, high = scheme.rank
        dims |= {"minItems": low} | ({"maxItems": high} if high is not None else {})
    params = []
    if scheme is None:
        params.append(param("scheme", {"type": "string", "enum": flat_schemes()}, "scheme name or alias (see /schemes)", True))
    params += [
        param("shape", dims, "comma-separated dimensions; empty for a scalar", True, style="form", explode=False),
        param("seed", {"type": "integer", "minimum": 0, "maximum": 2**64 - 1, "default": 0}, "random seed"),
        param("dtype", {"type": "string", "enum": list(DTYPES), "default": "float32"}, "element type"),
        param("name", {"type": "string", "default": "weight", **name_schema()}, "tensor name (it also picks the random stream)"),
        param("convention", {"type": "string", "enum": list(CONVENTIONS), "default": "torch"}, "weight layout and defaults"),
        param("algorithm", {"type": "integer", "enum": sorted(ALGORITHMS)}, "generation algorithm version; default the newest"),
    ]
    if scheme is not None:
        if scheme.uses_fans:
            params += [axes(a) for a in ("in_axes", "out_axes", "batch_axes")]
        params += [param(p.name, p.json_schema(), f"{p.doc}. Allowed: {p.allowed()}.", p.required) for p in scheme.params]
    if stats:
        params.append(param("bins", {"type": "integer", "minimum": 1, "default": 64}, "histogram bins"))
    return {"parameters": params}
