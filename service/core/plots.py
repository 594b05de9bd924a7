"""Pictures of the engine's numbers: variance against depth, and a tensor's histogram under its density.

matplotlib's object API (``Figure`` with the Agg or SVG canvas, never ``pyplot``, whose
global state is not for servers), one figure at a time under a lock: matplotlib does
not promise thread safety, and the callers run in the engine's thread pool, never on the
event loop. SVGs are reproducible (fixed ``svg.hashsalt``, no date in the metadata).
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import scipy.stats
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .propagation import Result
from .spec import Normal, ResolvedSpec, TruncatedNormal, Uniform

FORMATS = {"image/svg+xml": "svg", "image/png": "png"}
DASHES = ("-", "--", ":", "-.")  # identical curves (Glorot and LeCun on square layers) stay visible
PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#57606a", "#e16f24")
_lock = threading.Lock()
_RC: dict[Any, Any] = {"svg.hashsalt": "tensorinit", "font.size": 9.0, "axes.spines.top": False, "axes.spines.right": False}


def _save(fig: Figure, media_type: str) -> bytes:
    buffer = io.BytesIO()
    kind = FORMATS[media_type]
    metadata = {"Date": None} if kind == "svg" else {"Software": "tensorinit"}
    fig.savefig(buffer, format=kind, dpi=110, metadata=metadata)
    return buffer.getvalue()


def _figure(width: float, height: float) -> Figure:
    # Fixed margins: constrained layout measures every tick label several times (a second per PNG).
    return Figure(figsize=(width, height))


def _positive(values: Sequence[float | None]) -> list[float]:
    """Values for a log axis: a non-positive or missing value is a gap (NaN)."""
    return [v if v is not None and v > 0 and math.isfinite(v) else math.nan for v in values]


def _finite(values: Sequence[float | None]) -> list[float]:
    """Values for a linear axis: a missing or infinite value is a gap (NaN)."""
    return [v if v is not None and math.isfinite(v) else math.nan for v in values]


def propagation_figure(results: Sequence[Result], media_type: str) -> bytes:
    """Forward and backward panels, log variance against depth: theory as lines, measurement as points."""
    with _lock, matplotlib.rc_context(_RC):
        fig = _figure(10.0, 3.7)
        fig.subplots_adjust(left=0.075, right=0.99, top=0.92, bottom=0.13, wspace=0.16)
        forward, backward = fig.subplots(1, 2, sharex=True)
        series = {
            forward: [(r.theory.forward, None if r.measurement is None else r.measurement.forward) for r in results],
            backward: [(r.theory.backward, None if r.measurement is None else r.measurement.backward) for r in results],
        }
        # Variances on a log axis, unless an axis has no positive value (zero weights: every variance
        # 0): then on a linear one, where a constant is a flat line (a log axis of no data is an error).
        logarithmic = {
            ax: any(not math.isnan(v) for th, meas in rows for v in _positive([*th, *(meas or ())])) for ax, rows in series.items()
        }
        for i, result in enumerate(results):
            colour = PALETTE[i % len(PALETTE)]
            depth = np.arange(1, len(result.network.layers) + 1)
            label = f"{result.label} · {result.verdict['verdict']}"
            for ax, rows in series.items():
                th, meas = rows[i]
                shown = _positive if logarithmic[ax] else _finite
                ax.plot(depth, shown(th), DASHES[i % len(DASHES)], color=colour, linewidth=1.6, label=label)
                if meas is not None:
                    ax.plot(depth, shown(meas), "o", color=colour, markersize=3.2, alpha=0.75)
        titles = ("forward: E[h²] per layer", "backward: E[(∂L/∂h)²] per layer")
        for ax, title in zip((forward, backward), titles, strict=True):
            # A fixed y: left to itself, matplotlib lays out every tick label to place the title.
            ax.set_title(title, loc="left", y=1.0)
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10], integer=True))  # round layer numbers
            ax.grid(True, which="major", alpha=0.3)
            shown_values = [v for th, meas in series[ax] for v in (_positive if logarithmic[ax] else _finite)([*th, *(meas or ())])]
            known = [v for v in shown_values if not math.isnan(v)]
            if known and min(known) == max(known):  # one value (one layer, or a constant): a span around it
                v = known[0]
                ax.set_ylim(*((v / 10, v * 10) if logarithmic[ax] else (v - 1, v + 1)))
            if not logarithmic[ax]:
                continue
            ax.set_yscale("log")
            # Labels on 10^k, or on 1, 2, 5 × 10^k over a short range: left alone, matplotlib labels
            # every minor tick within one decade (and measures each label, which is most of a PNG's time).
            low, high = ax.get_ylim()
            decades = math.log10(high / low) if low > 0 and high > low else 1.0
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if decades > 2.5 else (1.0, 2.0, 5.0), numticks=8))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        forward.set_ylabel("variance (lines: theory, dots: measured)")
        backward.legend(loc="best", frameon=False)
        return _save(fig, media_type)


def density(spec: ResolvedSpec, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
    """The resolved distribution's density at ``x``, for the continuous elementwise schemes; else None."""
    dist = spec.distribution
    if isinstance(dist, Normal):
        return np.asarray(scipy.stats.norm.pdf(x, dist.mean, dist.std))
    if isinstance(dist, TruncatedNormal):
        a, b = (dist.low - dist.mean) / dist.std, (dist.high - dist.mean) / dist.std
        return np.asarray(scipy.stats.truncnorm.pdf(x, a, b, loc=dist.mean, scale=dist.std))
    if isinstance(dist, Uniform):
        return np.asarray(scipy.stats.uniform.pdf(x, dist.low, dist.high - dist.low))
    return None


def histogram_figure(entries: Sequence[tuple[ResolvedSpec, Mapping[str, Any]]], media_type: str) -> bytes:
    """One panel per tensor: its /stats histogram as a density, the theoretical density drawn over it."""
    with _lock, matplotlib.rc_context(_RC):
        fig = _figure(6.4, 2.9 * len(entries))
        fig.subplots_adjust(left=0.11, right=0.98, top=1 - 0.3 / (2.9 * len(entries)), bottom=0.35 / (2.9 * len(entries)), hspace=0.35)
        axes = fig.subplots(len(entries), 1, squeeze=False)[:, 0]
        for ax, (spec, stats) in zip(axes, entries, strict=True):
            hist = stats["histogram"]
            edges = np.asarray(hist["edges"], dtype=np.float64)
            counts = np.asarray(hist["counts"], dtype=np.float64)
            widths = np.diff(edges)
            total = max(float(stats["count"]), 1.0)
            heights = np.divide(counts, total * widths, out=np.zeros_like(counts), where=widths > 0)
            ax.bar(edges[:-1], heights, width=widths, align="edge", color="#9ec5fe", edgecolor="#5a8fd6", linewidth=0.4, label="served")
            x = np.linspace(edges[0], edges[-1], 400)
            pdf = density(spec, x)
            if pdf is not None:
                ax.plot(x, pdf, color="#d1242f", linewidth=1.5, label="theory")
            shape = "×".join(map(str, spec.shape)) or "scalar"
            std = "-" if stats["std"] is None else f"{stats['std']:.4g}"  # an empty tensor has none
            ax.set_title(f"{spec.name}: {spec.scheme} {shape} · std {std}", loc="left")
            ax.set_ylabel("density")
            ax.legend(loc="upper right", frameon=False)
            ax.grid(True, alpha=0.3)
        return _save(fig, media_type)
