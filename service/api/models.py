"""Request models, generated from the engine's scheme registry.

One pydantic model per scheme (its own parameters, nothing else), combined as a
discriminated union on ``scheme``; aliases are mapped to the canonical name before the
union picks a member, so ``"kaiming_normal"`` validates as ``HeNormal``. Models give
the OpenAPI document its shape and reject what is the wrong *type* (a string where a
number belongs, a number where a shape list belongs, an unknown field); whether a value
is *allowed* is the engine's decision, made in :func:`service.core.resolve`, so that
there is one source of truth and one wording of every rule.

Every engine rule that JSON Schema can state is stated here too, read off the engine's
own declarations (a scheme's rank and exclusive fields, a parameter's bounds, a recipe's
required parameters, the characters a name may not hold), so the document promises
exactly what the engine accepts. The limits a server is configured with are marked with
:data:`LIMITS_KEY` and filled in from its settings when the document is built
(:func:`service.api.docs.state_limits`). What JSON Schema cannot state is listed in
docs/api.md ("What the document cannot state").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, TypeAdapter, create_model
from pydantic_core import PydanticCustomError

from service.core import ALGORITHMS, CONVENTIONS, DTYPES, SCHEMES, Param, Scheme, UnknownSchemeError, lookup
from service.core.manifest import ATTRIBUTES, KINDS, MODEL_ROLES
from service.core.recipes import RECIPES, Recipe
from service.core.schemes import name_refused_ranges
from service.core.slices import ITEM_PATTERN


def _integral(value: Any) -> Any:
    """JSON has one number type: 10.0 is the integer 10 (JSON Schema agrees); 10.5 stays a float and is refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(_integral)]
"""An integer field: strict (no strings, no booleans, no fractions), but 10.0 counts as 10."""

_TYPES: dict[str, Any] = {"number": float, "integer": Integer, "string": str, "boolean": bool}

COMMON_ALLOWED: dict[str, str] = {
    "scheme": "a scheme name or alias (see GET /schemes)",
    "shape": "a list of non-negative integers, e.g. [256, 128]",
    "seed": "an integer with 0 ≤ seed < 2^64",
    "dtype": "one of " + ", ".join(DTYPES),
    "name": "a string of 1 to max_name_length (256) characters, without control or format characters (Unicode Cc, Cf, Cs), not __metadata__",
    "convention": "one of " + ", ".join(CONVENTIONS),
    "in_axes": "a list of axis indices (negative counts from the end)",
    "out_axes": "a list of axis indices (negative counts from the end)",
    "batch_axes": "a list of axis indices (negative counts from the end)",
    "tensors": "an object mapping tensor names to tensor requests",
    "bins": "a positive integer (histogram bins, /stats only)",
    "slice": "numpy basic-slice syntax per axis, e.g. '0:2048,:' (or a list of items such as ['0:2048', ':']); step ≥ 1",
    "algorithm": "one of " + ", ".join(str(v) for v in sorted(ALGORITHMS)) + " (default: the newest)",
    "recipe": "one of " + ", ".join(RECIPES) + " (see GET /recipes)",
    "recipe_params": "an object of the recipe's parameters (see GET /recipes/{name})",
    "roles": "an object mapping model roles (" + ", ".join(MODEL_ROLES) + ") to lists of glob patterns",
    "rules": "an object {glob: spec} or a list of [glob, spec] pairs; spec: a scheme name, an object with scheme and its parameters, or null",
    "kind": "one of " + ", ".join(KINDS) + " or null",
    "role": "the parameter's role in its module (weight, bias, in_proj_weight, weight_hh_l0, ...)",
    "attributes": "an object of module attributes: " + ", ".join(ATTRIBUTES),
}
BATCH_FIELDS = ("seed", "dtype", "convention", "algorithm", "tensors")
ALGORITHM_ENUM: dict[str, Any] = {"enum": [*sorted(ALGORITHMS), None]}
# An enum beside a field's anyOf [type, null] holds null too: the models take null as "not given".
SEED_RANGE: dict[str, Any] = {"minimum": 0, "maximum": 2**64 - 1}

LIMITS_KEY = "x-tensorinit-limits"
"""{JSON Schema keyword: setting}: the keyword's value is the server's setting (the smaller, if the schema states one too)."""


def _pattern_char(code: int) -> str:
    # \uXXXX reads the same in ECMA 262 and Python; a character past the BMP is written as
    # itself (\u{...} is ECMA's unicode mode only, \U Python's only).
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


def name_schema() -> dict[str, Any]:
    """What a tensor name may be (:func:`service.core.schemes.check_name`): its characters, its length, not __metadata__."""
    # Surrogates (Cs) are left out of the pattern: they are no characters to a regex engine
    # that reads code points (Rust's refuses the range), and in ECMA's code units they are
    # every character past the BMP. A lone one is still refused by the engine.
    ranges = [(a, b) for a, b in name_refused_ranges() if not 0xD800 <= a <= 0xDFFF]
    refused = "".join(_pattern_char(a) if a == b else f"{_pattern_char(a)}-{_pattern_char(b)}" for a, b in ranges)
    return {
        "minLength": 1,
        "pattern": f"^[^{refused}]*$",
        "not": {"const": "__metadata__"},
        LIMITS_KEY: {"maxLength": "max_name_length"},
    }


SHAPE_SCHEMA: dict[str, Any] = {"items": {"type": "integer", "minimum": 0}, LIMITS_KEY: {"maxItems": "max_dims"}}

SLICE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": f"^({ITEM_PATTERN}(,{ITEM_PATTERN})*|[\\t\\n\\v\\f\\r ]*)$"},
        {"type": "array", "items": {"type": "string", "pattern": f"^{ITEM_PATTERN}$"}},
        {"type": "null"},
    ]
}
"""The slice syntax (:func:`service.core.slices.check_slice`); one item per axis at most, and within the shape, is the engine's."""


def given(field: str) -> dict[str, Any]:
    """JSON Schema: ``field`` is given, and not null (the engine reads null as not given)."""
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


def _scheme_rules(scheme: Scheme) -> dict[str, Any]:
    """The rules of ``scheme`` that tie its fields together, as JSON Schema (null reads as not given)."""
    rules: list[dict[str, Any]] = []
    for first, excluded in scheme.exclusive:
        rules += [{"not": {"allOf": [given(first), given(other)]}} for other in excluded]
    if scheme.uses_fans:
        # in_axes and out_axes together; batch_axes only with them (service.core.fans.compute_fans)
        for axes, needs in (("in_axes", "out_axes"), ("out_axes", "in_axes"), ("batch_axes", "in_axes")):
            rules.append({"anyOf": [{"not": given(axes)}, given(needs)]})
    return {"allOf": rules} if rules else {}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TensorBase(_Strict):
    """Fields every tensor request has; the scheme models add their own parameters."""

    shape: list[Integer] = Field(description="the tensor's shape; [] is a scalar", examples=[[256, 128]], json_schema_extra=SHAPE_SCHEMA)
    seed: Integer | None = Field(None, description="default 0; with the name, picks the random stream", json_schema_extra=SEED_RANGE)
    dtype: str | None = Field(None, description="default float32", json_schema_extra={"enum": [*DTYPES, None]})
    name: str | None = Field(None, description="default 'weight'; in a batch the key is the name", json_schema_extra=name_schema())
    convention: str | None = Field(
        None, description="default torch: sets weight layout (fans) and defaults", json_schema_extra={"enum": [*CONVENTIONS, None]}
    )
    algorithm: Integer | None = Field(
        None, description="generation algorithm version; default the newest", json_schema_extra=ALGORITHM_ENUM
    )
    slice: str | list[str] | None = Field(
        None,
        description="serve only full[slice] (numpy basic-slice syntax per axis, e.g. '0:2048,:'): the same bytes as that slice of the whole tensor",
        examples=["0:2048,:"],
        json_schema_extra=SLICE_SCHEMA,
    )


def _param_field(p: Param) -> tuple[Any, Any]:
    annotation: Any = _TYPES[p.type]
    extra = {k: v for k, v in p.json_schema().items() if k != "type"}  # the annotation gives the type
    if "enum" in extra and not p.required:
        extra["enum"] = [*extra["enum"], None]  # beside anyOf [type, null]: null is "not given"
    doc = f"{p.doc}. Allowed: {p.allowed()}."
    if p.required:
        return annotation, Field(description=doc, json_schema_extra=extra or None)
    defaults = {c: p.default_for(c) for c in CONVENTIONS}
    if len(set(map(repr, defaults.values()))) == 1:
        doc += f" Default: {defaults['torch']!r}." if defaults["torch"] is not None else " Default: derived."
    else:
        doc += " Default per convention: " + ", ".join(f"{c} {v!r}" for c, v in defaults.items()) + "."
    return annotation | None, Field(None, description=doc, json_schema_extra=extra or None)


def model_name(scheme: Scheme) -> str:
    return "".join(part.capitalize() for part in scheme.name.split("_"))


def _scheme_model(scheme: Scheme) -> type[TensorBase]:
    fields: dict[str, Any] = {
        "scheme": (Literal[scheme.name], Field(description=f"{scheme.name} (aliases: {', '.join(scheme.aliases) or 'none'})")),
    }
    low, high = scheme.rank
    if (low, high) != (0, None):
        rank = {"minItems": low} | ({"maxItems": high} if high is not None else {})
        fields["shape"] = (
            list[Integer],
            Field(description=f"the tensor's shape, of rank {low} to {high or 'any'}", json_schema_extra=SHAPE_SCHEMA | rank),
        )
    if scheme.uses_fans:
        for axes in ("in_axes", "out_axes", "batch_axes"):
            fields[axes] = (
                list[Integer] | None,
                Field(
                    None,
                    description="explicit axes for the fans (JAX's model); overrides the convention's layout",
                    json_schema_extra={"minItems": 1} if axes != "batch_axes" else None,
                ),
            )
    for p in scheme.params:
        fields[p.name] = _param_field(p)
    model: type[TensorBase] = create_model(model_name(scheme), __base__=TensorBase, __doc__=f"{scheme.summary} {scheme.formula}", **fields)
    model.model_config["json_schema_extra"] = _scheme_rules(scheme) or None
    model.model_rebuild(force=True)
    return model


SCHEME_MODELS: dict[str, type[TensorBase]] = {name: _scheme_model(s) for name, s in SCHEMES.items()}


def _canonical_scheme(value: Any) -> Any:
    """Map an alias to the canonical scheme name before the union picks its member."""
    if not isinstance(value, dict) or "scheme" not in value:
        return value
    try:
        found = lookup(value["scheme"])
    except UnknownSchemeError as err:
        raise PydanticCustomError("unknown_scheme", "{message}", {"message": err.message, "suggestions": err.suggestions}) from None
    return value if value["scheme"] == found.name else {**value, "scheme": found.name}


if TYPE_CHECKING:
    TensorRequest: TypeAlias = TensorBase
else:
    TensorRequest = Annotated[
        Union[tuple(SCHEME_MODELS.values())],  # noqa: UP007
        Field(discriminator="scheme"),
        BeforeValidator(_canonical_scheme),
    ]
    """A single tensor request: one of the scheme models, picked by ``scheme`` (aliases resolved)."""


class BatchRequest(_Strict):
    """Many tensors in one safetensors file; top-level fields are defaults each tensor may override."""

    seed: Integer | None = Field(None, description="default seed of every tensor (0)", json_schema_extra=SEED_RANGE)
    dtype: str | None = Field(None, description="default dtype of every tensor (float32)", json_schema_extra={"enum": [*DTYPES, None]})
    convention: str | None = Field(
        None, description="default convention of every tensor (torch)", json_schema_extra={"enum": [*CONVENTIONS, None]}
    )
    algorithm: Integer | None = Field(
        None, description="generation algorithm version of every tensor; default the newest", json_schema_extra=ALGORITHM_ENUM
    )
    tensors: dict[str, TensorRequest] = Field(
        description="tensor name → tensor request (without 'name': the key is the name)",
        json_schema_extra={
            "minProperties": 1,
            "propertyNames": name_schema(),
            "allOf": [{"additionalProperties": {"not": given("name")}}],
        },
        examples=[{"fc1.weight": {"scheme": "he_uniform", "shape": [512, 784]}, "fc1.bias": {"scheme": "zeros", "shape": [512]}}],
    )


class ManifestEntry(_Strict):
    """One tensor of a model manifest: what a recipe needs to know about it (service.core.manifest)."""

    shape: list[Integer] = Field(description="the tensor's shape", json_schema_extra={"items": {"type": "integer", "minimum": 0}})
    dtype: str | None = Field(None, description="default: the request's dtype (float32)", json_schema_extra={"enum": [*DTYPES, None]})
    kind: str | None = Field(
        None, description="the module kind; null: a tensor only a rule covers", json_schema_extra={"enum": [*KINDS, None]}
    )
    role: str | None = Field(None, description="the parameter's role in its module; default: the longest name suffix the kind allows")
    attributes: dict[str, Any] | None = Field(None, description="module attributes: " + ", ".join(ATTRIBUTES))
    slice: str | list[str] | None = Field(
        None,
        description="serve only full[slice] (numpy basic-slice syntax per axis, e.g. '0:2048,:'), a rank's shard: "
        "the recipe sees the full shape, and the bytes are that slice of the whole tensor",
    )


class RecipeRequest(_Strict):
    """A whole model by a recipe: the manifest under 'tensors', resolved by the recipe (rules of the request win)."""

    recipe: str = Field(description="the recipe (see GET /recipes)", json_schema_extra={"enum": list(RECIPES)})
    recipe_params: dict[str, Any] | None = Field(None, description="the recipe's parameters, e.g. {'n_layer': 12}")
    seed: Integer | None = Field(None, description="seed of every tensor (0)", json_schema_extra=SEED_RANGE)
    dtype: str | None = Field(None, description="dtype of entries that give none (float32)", json_schema_extra={"enum": [*DTYPES, None]})
    convention: str | None = Field(None, description="weight layout for fans (torch)", json_schema_extra={"enum": [*CONVENTIONS, None]})
    algorithm: Integer | None = Field(None, description="generation algorithm; default the newest", json_schema_extra=ALGORITHM_ENUM)
    roles: dict[str, list[str]] | None = Field(
        None, description="model role → glob patterns, replacing the role's defaults", examples=[{"residual_out": ["*.c_proj.weight"]}]
    )
    rules: dict[str, Any] | list[Any] | None = Field(
        None, description="(glob → spec) rules that win over the recipe, first match first; a null spec leaves the tensor out"
    )
    tensors: dict[str, ManifestEntry] = Field(
        description="tensor name → manifest entry",
        json_schema_extra={"minProperties": 1, "propertyNames": name_schema()},
        examples=[
            {"wte.weight": {"shape": [50257, 768], "kind": "embedding"}, "h.0.attn.c_proj.weight": {"shape": [768, 768], "kind": "linear"}}
        ],
    )


def _recipe_params(found: Recipe) -> dict[str, Any]:
    """``recipe_params`` of one recipe: its parameters, their types and bounds, the required ones (null reads as not given)."""
    properties = {p.name: p.json_schema() if p.required else {"anyOf": [p.json_schema(), {"type": "null"}]} for p in found.params}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [p.name for p in found.params if p.required]
    if required:
        schema["required"] = required
        then: dict[str, Any] = {"properties": {"recipe_params": schema}, "required": ["recipe_params"]}
    else:
        then = {"properties": {"recipe_params": {"anyOf": [schema, {"type": "null"}]}}}
    return {"if": {"required": ["recipe"], "properties": {"recipe": {"const": found.name}}}, "then": then}


RecipeRequest.model_config["json_schema_extra"] = {"allOf": [_recipe_params(r) for r in RECIPES.values()]}
RecipeRequest.model_rebuild(force=True)


def _kind(value: Any) -> str:
    if isinstance(value, dict) and "recipe" in value:
        return "recipe"
    return "batch" if isinstance(value, dict) and "tensors" in value else "single"


InitRequest = Annotated[
    Union[Annotated[TensorRequest, Tag("single")], Annotated[BatchRequest, Tag("batch")], Annotated[RecipeRequest, Tag("recipe")]],  # noqa: UP007
    Discriminator(_kind),
]
"""A POST body: one tensor (with ``scheme`` at the top), a batch (with ``tensors``) or a recipe (with ``recipe``)."""

INIT_ADAPTER: TypeAdapter[Any] = TypeAdapter(InitRequest)


def allowed_for(scheme: str | None, field: str, *, batch_level: bool = False) -> str:
    """What may stand in ``field`` (of a tensor request of ``scheme``, or of a batch)."""
    if batch_level:
        return COMMON_ALLOWED.get(field, "only " + ", ".join(BATCH_FIELDS))
    if field in COMMON_ALLOWED:
        return COMMON_ALLOWED[field]
    if scheme in SCHEMES:
        found = SCHEMES[scheme]
        for p in found.params:
            if p.name == field:
                return p.allowed()
        known = [p.name for p in found.params] + ["shape", "seed", "dtype", "name", "convention", "algorithm", "slice"]
        if found.uses_fans:
            known += ["in_axes", "out_axes", "batch_axes"]
        others = sorted(s.name for s in SCHEMES.values() if any(p.name == field for p in s.params))
        hint = f" ({field} belongs to {', '.join(others)})" if others else ""
        return f"the fields of {found.name}: {', '.join(sorted(known))}{hint}"
    return "see GET /schemes"
