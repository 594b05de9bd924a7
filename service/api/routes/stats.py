"""/stats: empirical and theoretical statistics per tensor, as JSON or a table for terminals."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from service.core import ALGORITHM_VERSION, SCHEMES, LimitExceededError, ResolvedSpec, Scheme, default_executor, inner_executor
from service.core.costs import stats_flops
from service.core.plots import histogram_figure
from service.core.stats import compute_stats

from ..docs import FLAT_FORM, negotiated, query_parameters, request_body
from ..hardening import admit, while_connected
from ..negotiation import IMAGE_TYPES, PICTURES, negotiate
from ..problems import ProblemError, from_engine
from ..resolution import DEFAULT_BINS, Prepared, prepare, query_document, query_items, read_json
from ..settings import Settings

router = APIRouter(tags=["tensors"])

RESPONSES = negotiated(
    "statistics per tensor (JSON), a compact table with Accept: text/plain, or the histograms "
    "under their theoretical densities with Accept: image/svg+xml or image/png",
    PICTURES,
    malformed="malformed JSON or an invalid request",
    too_large="a limit exceeded, e.g. bins over max_histogram_bins, bins × tensors over max_plot_points for a picture, "
    "or the work over max_stats_flops",
)
STATS_CACHE = "public, max-age=86400"
"""GET /stats may be stored (deploy/nginx.conf does) for a day, not forever as GET /init: its
numbers are sums in floating point and a KS p-value computed by scipy, which a later
release of the service may compute to other last digits; the tensor's bytes are frozen."""
SPARK = "▁▂▃▄▅▆▇█"


def _bins(value: Any, settings: Settings, *, limit: bool = True) -> int:
    if value is None:
        return DEFAULT_BINS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProblemError(
            "validation-error",
            f"bins: got {value!r}; allowed: a positive integer",
            errors=[{"path": ["bins"], "message": "not a positive integer", "allowed": "a positive integer", "value": repr(value)[:80]}],
        )
    if limit and value > settings.max_histogram_bins:
        raise from_engine(LimitExceededError("bins", value, "max_histogram_bins", settings.max_histogram_bins)) from None
    return value


def _entry(spec: ResolvedSpec, raw: dict[str, Any]) -> dict[str, Any]:
    theory = raw.pop("theory")
    sha = raw.pop("sha256")
    return {"spec": spec.to_dict(), "empirical": raw, "theory": theory, "sha256": sha}


async def _answer(request: Request, prepared: Prepared, bins: int, media_type: str) -> Response:
    # Off the event loop, one tensor per block-pool worker, its blocks summarized on the
    # inner pool (both cores even for one tensor; health checks stay instant meanwhile).
    # A client that goes away, while waiting for admission or during the pass, ends the
    # wait or sets ``halt``, which stops every pass before its next block.
    halt = threading.Event()
    stats = partial(compute_stats, bins=bins, executor=inner_executor(), halt=halt)

    async def work() -> list[dict[str, Any]]:
        async with admit(request, prepared.size):
            passes = [default_executor().submit(stats, s) for s in prepared.specs]
            try:
                return await asyncio.gather(*map(asyncio.wrap_future, passes))
            except asyncio.CancelledError:
                # The slot stays held until the passes have stopped: a matrix they are
                # building cannot be interrupted, and its CPU and memory are still in use.
                halt.set()
                await asyncio.gather(*(asyncio.wrap_future(p) for p in passes if not p.cancel()), return_exceptions=True)
                raise

    try:
        results = await while_connected(request.receive, work())
    finally:
        halt.set()
    body = {
        "algorithm": prepared.specs[0].algorithm if prepared.specs else ALGORITHM_VERSION,
        "etag": prepared.etag,
        "tensors": {s.name: _entry(s, r) for s, r in zip(prepared.specs, results, strict=True)},
    }
    headers = {"Vary": "Accept"}
    if media_type in IMAGE_TYPES:
        entries = list(zip(prepared.specs, results, strict=True))  # _entry left each result its empirical part
        image = await asyncio.wrap_future(default_executor().submit(histogram_figure, entries, media_type))
        return Response(image, media_type=media_type, headers=headers)
    if media_type == "text/plain":
        return PlainTextResponse(render_table(body), headers=headers)
    return JSONResponse(body, headers=headers)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def _spark(counts: list[int], width: int = 48) -> str:
    if not counts:
        return ""
    step = math.ceil(len(counts) / width)
    merged = [sum(counts[i : i + step]) for i in range(0, len(counts), step)]
    top = max(merged) or 1
    return "".join(" " if c == 0 else SPARK[min(len(SPARK) - 1, c * len(SPARK) // (top + 1))] for c in merged)


def _fan_lines(spec: dict[str, Any]) -> list[str]:
    """Where the tensor's scale came from: its fans and the rule that read them off the shape, the fan used, the gain."""
    how = spec.get("derivation") or {}
    gain = spec.get("gain")
    if spec.get("fan_in") is None:
        lines = [f"    fans       none: {spec['scheme']} does not read fans off the shape"]
        if gain is not None:
            lines.append(f"    gain       {_num(gain)} (multiplies the {spec['scheme']} tensor)")
        return lines
    rule = str(how.get("fan_rule", spec.get("convention", "")))
    convention, _, formula = rule.partition(": ")
    lines = [f"    fans       fan_in {spec['fan_in']}, fan_out {spec['fan_out']} ({convention} layout: {formula or rule})"]
    parts = []
    if how.get("mode") is not None and how.get("fan") is not None:
        parts.append(f"mode {how['mode']} uses fan {_num(how['fan'])}")
    if gain is not None:
        why = how.get("nonlinearity")
        slope = f", negative slope {_num(how['negative_slope'])}" if why == "leaky_relu" and how.get("negative_slope") is not None else ""
        parts.append(f"gain {_num(gain)}" + (f" ({why}{slope})" if why else ""))
    if how.get("scale") is not None and how.get("fan") is not None and how.get("variance") is not None:
        parts.append(f"variance = scale / fan = {_num(how['scale'])} / {_num(how['fan'])} = {_num(how['variance'])}")
    if parts:
        lines.append("    scale      " + " · ".join(parts))
    return lines


def _outside(hist: dict[str, Any], edges: list[float]) -> str:
    below, above = hist["below"], hist["above"]
    if not below and not above:
        return "every value inside"
    return f"{below} values below {_num(edges[0])}, {above} above {_num(edges[-1])} (outside the bins)"


def render_table(body: dict[str, Any]) -> str:
    """A compact, aligned, human-readable summary: one block of lines per tensor."""
    lines = [f"tensorinit stats · algorithm {body['algorithm']} · etag {body['etag']}"]
    rows = [("tensor", "scheme", "dtype", "shape", "", "mean", "std", "min", "max")]
    extra: list[list[str]] = []
    for name, t in body["tensors"].items():
        spec, emp, th = t["spec"], t["empirical"], t["theory"]
        shape = "×".join(map(str, spec["shape"])) or "scalar"
        rows.append((name, spec["scheme"], spec["dtype"], shape, "empirical", *(_num(emp[k]) for k in ("mean", "std", "min", "max"))))
        low, high = th["support"]
        rows.append(
            (
                "",
                "",
                "",
                "",
                "theory",
                _num(th["mean"]),
                _num(th["std"]),
                _num(low) if low is not None else "-inf",
                _num(high) if high is not None else "inf",
            )
        )
        notes = [f"  {name}: count {emp['count']}"]
        if emp["ks"]:
            ks = emp["ks"]
            notes.append(f"KS D={ks['statistic']:.4g} p={ks['pvalue']:.3g} (n={ks['sample_size']}, stride {ks['stride']})")
        if emp["orthogonality_error"] is not None:
            notes.append(f"orthogonality error {emp['orthogonality_error']:.3g}")
        notes.append(f"sha256 {t['sha256']}")
        hist = emp["histogram"]
        edges = hist["edges"]
        spark = _spark(hist["counts"])
        extra.append(
            [
                " · ".join(notes),
                *_fan_lines(spec),
                f"    histogram  [{_num(edges[0])}, {_num(edges[-1])}] {spark} {_outside(hist, edges)}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = [
        "  ".join(cell.rjust(w) if i >= 5 else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip()
        for r in rows
    ]
    lines += table
    for block in extra:
        lines += block
    return "\n".join(lines) + "\n"


@router.get(
    "/stats",
    operation_id="stats_get",
    summary="Statistics of one tensor, from the query string",
    description="The statistics of what GET /init serves for the same query, plus an optional bins." + FLAT_FORM,
    responses=RESPONSES,
    openapi_extra=query_parameters(stats=True),
)
async def stats_get(request: Request) -> Response:
    return await _get(request, query_items(request.scope["query_string"]))


async def _get(request: Request, items: list[tuple[str, str]]) -> Response:
    settings: Settings = request.app.state.settings
    media_type = negotiate(request.headers.get("accept"), PICTURES)
    document = query_document(items)
    response = await _valid_then_answer(request, document, document.pop("bins", None), settings, media_type)
    response.headers["Cache-Control"] = STATS_CACHE
    return response


def _per_scheme(scheme: Scheme) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await _get(request, query_items(request.scope["query_string"], scheme.name))

    endpoint.__name__ = f"stats_get_{scheme.name}"
    return endpoint


for _scheme in SCHEMES.values():  # as /init/<scheme> (files.py)
    router.add_api_route(
        f"/stats/{_scheme.name}",
        _per_scheme(_scheme),
        methods=["GET"],
        operation_id=f"stats_get_{_scheme.name}",
        summary=f"Statistics of one {_scheme.name} tensor, from the query string",
        description=f"The statistics of what GET /init/{_scheme.name} serves for the same query, plus an optional bins.",
        responses=RESPONSES,
        openapi_extra=query_parameters(_scheme, stats=True),
    )


@router.post(
    "/stats",
    operation_id="stats_post",
    summary="Statistics of one tensor or a batch (same bodies as POST /init, plus an optional top-level bins)",
    responses=RESPONSES,
    openapi_extra=request_body("same as POST /init, plus an optional top-level 'bins' (histogram bins, default 64)"),
)
async def stats_post(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    media_type = negotiate(request.headers.get("accept"), PICTURES)
    document = await read_json(request, settings.max_body_bytes)
    bins = document.pop("bins", None) if isinstance(document, dict) else None
    return await _valid_then_answer(request, document, bins, settings, media_type)


async def _valid_then_answer(request: Request, document: Any, bins: Any, settings: Settings, media_type: str) -> Response:
    # Wrong before too large: every field is checked before any limit (413).
    count = _bins(bins, settings, limit=False)
    prepared = await prepare(document, settings)
    count = _bins(count, settings)
    # The work, before any (issue 17): every tensor drawn and summarized, every orthogonal QR.
    flops = sum(stats_flops(s) for s in prepared.specs)
    if flops > settings.max_stats_flops:
        value = f"<{flops} operations: {len(prepared.specs)} tensors drawn and summarized>"
        raise from_engine(LimitExceededError("shape", value, "max_stats_flops", settings.max_stats_flops)) from None
    if media_type in IMAGE_TYPES and count * len(prepared.specs) > settings.max_plot_points:
        points = f"<{count} bins × {len(prepared.specs)} tensors>"
        raise from_engine(LimitExceededError("bins", points, "max_plot_points", settings.max_plot_points)) from None
    return await _answer(request, prepared, count, media_type)
