"""POST /propagation: the variance math of a network, computed, measured through the served tensors, and drawn.

The engine (:mod:`service.core.propagation`) validates the body and does the work; this
route negotiates the answer (JSON, a text table, SVG or PNG), checks the limits before any
work starts, and runs everything off the event loop in the engine's pool.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from service.core import CONVENTIONS, SCHEMES, LimitExceededError, TensorinitError, default_executor
from service.core.plots import propagation_figure
from service.core.propagation import (
    ACTIVATIONS,
    NORMALIZATIONS,
    Network,
    Result,
    build_networks,
    label_of,
    propagate,
)
from service.core.recipes import RECIPES
from service.core.schemes import STATS_BOUND

from ..docs import negotiated
from ..hardening import admit, while_connected
from ..negotiation import IMAGE_TYPES, PICTURES, negotiate
from ..problems import ProblemError, from_engine, param_path
from ..resolution import read_json
from ..settings import Settings
from .stats import SPARK

router = APIRouter(tags=["analysis"])
T = TypeVar("T")

TOP_FIELDS = frozenset(
    {
        "depth",
        "width",
        "layers",
        "activation",
        "init",
        "bias",
        "residual",
        "input_width",
        "input_variance",
        "spatial",
        "batch",
        "seed",
        "dtype",
        "convention",
        "compare",
        "measure",
    }
)


def _scheme_schema() -> dict[str, Any]:
    names = sorted({key for s in SCHEMES.values() for key in (s.name, *s.aliases)})
    by_name = {"type": "string", "enum": names}
    return {
        "oneOf": [
            by_name,
            {
                "type": "object",
                "required": ["scheme"],
                "properties": {"scheme": by_name},
                "additionalProperties": True,
                "description": "a scheme and its parameters (as in POST /init, without shape, name, seed, dtype, convention)",
            },
        ]
    }


def _init_schema() -> dict[str, Any]:
    """A weight's init: a scheme spec, or a recipe's choice for the layer (its bias too, unless bias is given)."""
    recipe = {
        "type": "object",
        "required": ["recipe"],
        "additionalProperties": False,
        "properties": {
            "recipe": {"type": "string", "enum": sorted(RECIPES)},
            "recipe_params": {"type": "object", "description": "the recipe's parameters (GET /recipes)"},
            "roles": {"type": "object", "description": 'model roles as in POST /plan, e.g. {"readout": ["layers.19.weight"]}'},
        },
        "description": "what the recipe gives layers.{i}.weight and .bias in a manifest of this network (kind linear, or conv<d>d)",
    }
    scheme = _scheme_schema()
    return {"oneOf": [*scheme["oneOf"], recipe]}


def _activation_schema() -> dict[str, Any]:
    return {
        "oneOf": [
            {"type": "string", "enum": list(ACTIVATIONS)},
            {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "enum": list(ACTIVATIONS)},
                    "slope": {"type": "number", "minimum": 0, "maximum": STATS_BOUND, "description": "leaky_relu only (default 0.01)"},
                    "alpha": {"type": "number", "minimum": 0, "maximum": STATS_BOUND, "description": "elu only (default 1)"},
                },
            },
        ]
    }


def request_schema() -> dict[str, Any]:
    """The body's JSON Schema (types and bounds; the engine checks how fields go together)."""
    residual = {
        "oneOf": [
            {"type": "null"},
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "multiplier": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": STATS_BOUND,
                        "description": "β in x_l = x_{l−1} + β·φ(h_l) (default 1)",
                    },
                    "norm": {"oneOf": [{"type": "null"}, {"type": "string", "enum": list(NORMALIZATIONS)}]},
                },
            },
        ]
    }
    positive = {"type": "integer", "minimum": 1}
    layer = {
        "type": "object",
        "required": ["width"],
        "additionalProperties": False,
        "properties": {
            "width": {**positive, "description": "output features (or channels)"},
            "activation": _activation_schema(),
            "init": _init_schema(),
            "bias": {"oneOf": [{"type": "null"}, _scheme_schema()]},
            "kernel": {"type": "array", "items": positive, "maxItems": 3, "description": "odd sizes, one per spatial axis"},
            "residual": residual,
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "depth and width (a uniform stack) or layers; init (or compare) names the weights' scheme",
        "properties": {
            "depth": positive,
            "width": positive,
            "layers": {"type": "array", "items": layer, "minItems": 1},
            "activation": _activation_schema(),
            "init": _init_schema(),
            "bias": {"oneOf": [{"type": "null"}, _scheme_schema()], "description": "default zeros (or the init recipe's)"},
            "residual": residual,
            "input_width": {**positive, "description": "default: the first layer's width"},
            "input_variance": {"type": "number", "exclusiveMinimum": 0, "maximum": STATS_BOUND, "default": 1},
            "spatial": {"type": "array", "items": positive, "maxItems": 3, "description": "the input's spatial shape (convolutions)"},
            "batch": {**positive, "default": 512},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**64 - 1, "default": 0},
            "dtype": {"type": "string", "enum": ["float32", "float64", "float16", "bfloat16"], "default": "float32"},
            "convention": {"type": "string", "enum": list(CONVENTIONS), "default": "torch"},
            "compare": {"type": "array", "items": _init_schema(), "minItems": 1, "description": "schemes or recipes to draw side by side"},
            "measure": {"type": "boolean", "default": True, "description": "false: theory only"},
        },
        "example": {"depth": 8, "width": 64, "activation": "relu", "init": {"scheme": "he_normal"}, "seed": 0, "batch": 64},
        # The engine's form rules (service.core.propagation): layers, or depth and width,
        # never both; every layer's weights have an init, from the top level, the layer or compare.
        "oneOf": [
            {
                "required": ["depth", "width"],
                "not": {"required": ["layers"]},
                "anyOf": [{"required": ["init"]}, {"required": ["compare"]}],
            },
            {
                "required": ["layers"],
                "not": {"anyOf": [{"required": ["depth"]}, {"required": ["width"]}]},
                "anyOf": [{"required": ["init"]}, {"required": ["compare"]}, {"properties": {"layers": {"items": {"required": ["init"]}}}}],
            },
        ],
    }


RESPONSES = negotiated(
    "per layer the forward and backward variance, theory and measured, and the verdict",
    PICTURES,
    too_large="a limit exceeded: depth, width × batch, cells measured, schemes compared or points per plot",
)


def _from_engine(err: TensorinitError) -> ProblemError:
    """:func:`from_engine` with the engine's dotted parameter (``layers[3].init.gain``) as the problem's whole path."""
    if err.param and "." in err.param:
        *head, last = err.param.split(".")
        err.message = f"{last}: {err.message.removeprefix(f'{err.param}: ')}"
        err.param = last
        return from_engine(err, [part for piece in head for part in param_path(piece)])
    return from_engine(err)


def networks_of(document: Any, settings: Settings, media_type: str) -> tuple[list[Network], list[str], bool]:
    """Every network of the request (``init``, then each of ``compare``), validated and within the limits."""
    if not isinstance(document, dict):
        raise ProblemError(
            "validation-error",
            "the body must be a JSON object",
            errors=[{"path": [], "message": "not an object", "allowed": "an object such as {depth, width, activation, init}"}],
        )
    unknown = sorted(set(document) - TOP_FIELDS)
    if unknown:
        raise ProblemError(
            "unknown-parameter",
            f"{unknown[0]}: not a field of /propagation",
            errors=[{"path": [unknown[0]], "message": "unknown field", "allowed": ", ".join(sorted(TOP_FIELDS))}],
        )
    measure = document.get("measure", True)
    if not isinstance(measure, bool):
        raise ProblemError(
            "validation-error",
            f"measure: got {measure!r}",
            errors=[{"path": ["measure"], "message": "not a boolean", "allowed": "true or false", "value": repr(measure)[:80]}],
        )
    compare = document.get("compare", [])
    if not isinstance(compare, list) or (not compare and "compare" in document):
        raise ProblemError(
            "validation-error",
            "compare: a non-empty list of schemes",
            errors=[{"path": ["compare"], "message": "not a non-empty list", "allowed": "a list of scheme names or objects"}],
        )
    inits: list[Any] = ([document["init"]] if document.get("init") is not None else []) + list(compare)
    try:
        networks = build_networks(
            document, inits, measured=measure, limits=settings.engine_limits, propagation_limits=settings.propagation_limits
        )
    except TensorinitError as err:
        raise _from_engine(err) from None
    if media_type in IMAGE_TYPES:
        points = sum(4 * len(n.layers) for n in networks)
        if points > settings.max_plot_points:
            raise from_engine(LimitExceededError("depth", f"<{points} points>", "max_plot_points", settings.max_plot_points)) from None
    # No init at the top nor compare: one network whose layers each name theirs (a 500 here once).
    labels = _labels([label_of(i) for i in inits] or ["per-layer init"])
    return networks, labels, measure


def _labels(labels: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


async def _in_pool(fn: Callable[[], T]) -> T:
    return await asyncio.wrap_future(default_executor().submit(fn))


@router.post(
    "/propagation",
    operation_id="propagation_post",
    summary="Forward and backward variance through a network: mean-field theory, a real pass through the served tensors, a verdict",
    responses=RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the network: depth × width of one activation, or layers; the init scheme(s), seed and batch",
            "content": {"application/json": {"schema": request_schema()}},
        }
    },
)
async def propagation_post(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    media_type = negotiate(request.headers.get("accept"), PICTURES)
    document = await read_json(request, settings.max_body_bytes)
    # Every check before any work: a thousand layers resolve in a fraction of a second, off the loop.
    networks, labels, measure = await _in_pool(lambda: networks_of(document, settings, media_type))
    halt = threading.Event()

    async def work() -> list[Result]:
        nbytes = sum(n.measure_bytes() for n in networks) if measure else 0
        async with admit(request, nbytes):
            futures = [
                default_executor().submit(propagate, net, measured=measure, label=label, halt=halt)
                for net, label in zip(networks, labels, strict=True)
            ]
            try:
                return list(await asyncio.gather(*map(asyncio.wrap_future, futures)))
            except asyncio.CancelledError:
                halt.set()
                await asyncio.gather(*(asyncio.wrap_future(f) for f in futures if not f.cancel()), return_exceptions=True)
                raise

    try:
        results = await while_connected(request.receive, work())
    finally:
        halt.set()  # a pass still running for a client that left stops before its next layer
    headers = {"Vary": "Accept"}
    if media_type in IMAGE_TYPES:
        image = await _in_pool(lambda: propagation_figure(results, media_type))
        return Response(image, media_type=media_type, headers=headers)
    body = answer(results)
    if media_type == "text/plain":
        return PlainTextResponse(render_table(body), headers=headers)
    return JSONResponse(body, headers=headers)


def answer(results: Sequence[Result]) -> dict[str, Any]:
    """The JSON answer: the first network's layers and verdict at the top level, every network under ``networks``."""
    first = results[0].to_dict()
    net = results[0].network
    return {
        "layers": first["layers"],
        "verdict": first["verdict"]["verdict"],
        "summary": first["verdict"],
        "label": first["label"],
        "input": {
            "width": net.input_width,
            "variance": net.input_variance,
            "spatial": list(net.spatial),
            "batch": net.batch,
            "seed": net.seed,
        },
        "measured": results[0].measurement is not None,
        "networks": [r.to_dict() for r in results],
    }


def sparkline(values: Sequence[float | None], width: int = 60) -> str:
    """log10 of ``values`` against depth in eight levels (blank where a value is 0 or missing)."""
    logs = [math.log10(v) if v is not None and v > 0 and math.isfinite(v) else None for v in values]
    step = max(1, math.ceil(len(logs) / width))
    merged = [logs[i] for i in range(0, len(logs), step)]
    known = [v for v in merged if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    if span < 1e-9:
        return SPARK[3] * len(merged)
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))] for v in merged)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_table(body: dict[str, Any]) -> str:
    """For curl: per network its verdict, sparklines of log variance against depth, and one row per layer."""
    lines = []
    for net in body["networks"]:
        v = net["verdict"]
        fixed = v["fixed_point"]
        extras = [
            f"gradient ×{_num(v['gradient_factor_per_layer'])}/layer",
            f"forward ×{_num(v['forward_factor_per_layer'])}/layer",
            f"gain for χ=1 ×{_num(v['gain_for_unit_chi'])}",
        ]
        if fixed is not None:
            extras.append(f"q* = {_num(fixed['q'])}")
        layers = net["layers"]
        forward = [la["forward"]["theory"] for la in layers]
        backward = [la["backward"]["theory"] for la in layers]
        lines.append(f"tensorinit propagation · {net['label']} · {len(layers)} layers · {v['verdict'].upper()}")
        lines.append("  " + " · ".join(extras))
        lines.append(f"  forward  log E[h²]       {sparkline(forward)}  {_span(forward)}")
        lines.append(f"  backward log E[(∂L/∂h)²] {sparkline(backward)}  {_span(backward)}")
        rows = [("layer", "width", "activation", "σ_w²", "fwd theory", "fwd measured", "bwd theory", "bwd measured")]
        for la in layers:
            rows.append(
                (
                    str(la["index"]),
                    str(la["width"]),
                    la["activation"]["name"],
                    _num(la["sigma_w2"]),
                    _num(la["forward"]["theory"]),
                    _num(la["forward"]["measured"]),
                    _num(la["backward"]["theory"]),
                    _num(la["backward"]["measured"]),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += [
            "  " + "  ".join(c.rjust(w) if i != 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows
        ]
        lines.append("")
    return "\n".join(lines)


def _span(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"[{_num(min(known))} … {_num(max(known))}]" if known else ""
