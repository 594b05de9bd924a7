"""The scheme registry: every initializer, its parameters, formula and source.

A scheme is a resolver function registered with :func:`scheme`; its docstring holds a
summary line, a ``Formula:`` line and a ``Source:`` line that the catalogue serves.
:func:`resolve` turns a request (scheme name, shape, dtype, seed, name, convention,
parameters) into a :class:`~service.core.spec.ResolvedSpec` with every number explicit.
"""

from __future__ import annotations

import difflib
import functools
import math
import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

from .algorithms import check_algorithm
from .errors import (
    InvalidParameterError,
    InvalidShapeError,
    LimitExceededError,
    MissingParameterError,
    UnknownParameterError,
    UnknownSchemeError,
)
from .fans import CONVENTIONS, NONLINEARITIES, Fans, calculate_gain, check_convention, compute_fans
from .sampling import normal_mass
from .slices import check_slice
from .spec import (
    ALGORITHM_VERSION,
    DTYPE_ALIASES,
    DTYPES,
    Constant,
    DeltaOrthogonal,
    Dirac,
    Distribution,
    Identity,
    Normal,
    Orthogonal,
    ResolvedSpec,
    Sparse,
    TruncatedNormal,
    Uniform,
    check_seed,
)

TRUNCATION_STD = 0.87962566103423978
"""std of N(0, 1) truncated to [-2, 2]: Keras, JAX and Haiku divide by it so that the realised std is the target."""

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()

MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
VS_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "normal", "uniform")


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one request's cost finite (the service fills them from settings)."""

    max_elements: int = 1 << 31
    max_dims: int = 8
    max_orthogonal_elements: int = 1 << 24
    max_name_length: int = 256
    max_rules: int = 1024  # rules of a recipe request, and glob patterns of its model roles (issue 17)


@dataclass(frozen=True)
class Param:
    """One scheme parameter: JSON type, default (a value, a per-convention dict, REQUIRED or None = derived)."""

    name: str
    type: str  # "number", "integer", "string", "boolean", "object"
    doc: str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: float | None = None

    def default_for(self, convention: str) -> Any:
        if isinstance(self.default, Mapping):
            return self.default[convention]
        return self.default

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = [
            {
                "number": "a finite number",
                "integer": "an integer",
                "string": "a string",
                "boolean": "true or false",
                "object": "a JSON object",
            }[self.type]
        ]
        for word, bound in (("≥", self.minimum), (">", self.exclusive_minimum), ("≤", self.maximum), ("<", self.exclusive_maximum)):
            if bound is not None:
                parts.append(f"{word} {bound:g}")
        return " ".join(parts)

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this parameter's value: type, enum and bounds."""
        schema: dict[str, Any] = {"type": self.type}
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        for bound, key in (
            ("minimum", "minimum"),
            ("exclusive_minimum", "exclusiveMinimum"),
            ("maximum", "maximum"),
            ("exclusive_maximum", "exclusiveMaximum"),
        ):
            if getattr(self, bound) is not None:
                schema[key] = getattr(self, bound)
        return schema

    def check(self, value: Any) -> Any:
        """The value if it fits this parameter, else an InvalidParameterError naming it."""
        ok = True
        if self.type == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if ok:
                value = float(value)
        elif self.type == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type == "string":
            ok = isinstance(value, str)
        elif self.type == "boolean":
            ok = isinstance(value, bool)
        elif self.type == "object":  # a recipe's structured parameter (recipe transformers' config)
            ok = isinstance(value, Mapping)
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and self.type in ("number", "integer"):
            ok = (
                (self.minimum is None or value >= self.minimum)
                and (self.exclusive_minimum is None or value > self.exclusive_minimum)
                and (self.maximum is None or value <= self.maximum)
                and (self.exclusive_maximum is None or value < self.exclusive_maximum)
            )
        if not ok:
            raise InvalidParameterError(self.name, value, self.allowed())
        return value


@dataclass
class Context:
    """What a resolver sees: the validated request."""

    shape: tuple[int, ...]
    convention: str
    params: dict[str, Any]
    axes: dict[str, Sequence[int] | None]
    derivation: dict[str, Any] = field(default_factory=dict)
    _fans: Fans | None = None

    @property
    def fans(self) -> Fans:
        if self._fans is None:
            self._fans = compute_fans(self.shape, self.convention, **self.axes)
        return self._fans

    def rank_between(self, scheme: str, low: int, high: int | None = None) -> None:
        rank = len(self.shape)
        if rank < low or (high is not None and rank > high):
            want = f"rank {low} to {high}" if high is not None else f"rank {low} or more"
            raise InvalidShapeError("shape", list(self.shape), f"a shape of {want} for {scheme} (got rank {rank})")


@dataclass(frozen=True)
class Resolution:
    distribution: Distribution
    gain: float | None = None


Resolver = Callable[[Context], Resolution]


@dataclass(frozen=True)
class Scheme:
    name: str
    aliases: tuple[str, ...]
    params: tuple[Param, ...]
    uses_fans: bool
    resolver: Resolver
    summary: str
    formula: str
    source: str
    rank: tuple[int, int | None] = (0, None)
    """The ranks the scheme takes under every convention (low, high; None: no upper bound)."""
    exclusive: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(field, others): the field and any of the others may not both be given (null counts as not given)."""

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for the catalogue."""
        params = []
        for p in self.params:
            item: dict[str, Any] = {"name": p.name, "type": p.type, "doc": p.doc, "required": p.required, "allowed": p.allowed()}
            if not p.required:
                item["default"] = {c: p.default_for(c) for c in CONVENTIONS}
            if p.choices is not None:
                item["choices"] = list(p.choices)
            for bound in ("minimum", "exclusive_minimum", "maximum", "exclusive_maximum"):
                if getattr(p, bound) is not None:
                    item[bound] = getattr(p, bound)
            params.append(item)
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "formula": self.formula,
            "source": self.source,
            "uses_fans": self.uses_fans,
            "parameters": params,
        }


SCHEMES: dict[str, Scheme] = {}
ALIASES: dict[str, str] = {}


def scheme(
    name: str,
    *params: Param,
    aliases: tuple[str, ...] = (),
    uses_fans: bool = False,
    rank: tuple[int, int | None] = (0, None),
    exclusive: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> Callable[[Resolver], Resolver]:
    """Register a resolver; its docstring gives summary, ``Formula:`` and ``Source:``.

    ``rank`` and ``exclusive`` are rules :func:`resolve` checks before the resolver runs,
    declared here so that the request models can state them too.
    """

    def register(fn: Resolver) -> Resolver:
        doc = [line.strip() for line in (fn.__doc__ or "").strip().splitlines()]
        pick = {key: " ".join(line[len(key) + 1 :].strip() for line in doc if line.startswith(key + ":")) for key in ("Formula", "Source")}
        SCHEMES[name] = Scheme(name, aliases, params, uses_fans, fn, doc[0], pick["Formula"], pick["Source"], rank, exclusive)
        for key in (name, *aliases):
            ALIASES[key] = name
        return fn

    return register


def lookup(name: object) -> Scheme:
    """The scheme for a canonical name or alias (case and '-' vs '_' do not matter)."""
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else None
    if key in ALIASES:
        return SCHEMES[ALIASES[key]]
    known = sorted(ALIASES)
    close = difflib.get_close_matches(key or "", known, n=8, cutoff=0.5) if key else []
    canonical = list(dict.fromkeys(ALIASES[c] for c in close))[:3]
    raise UnknownSchemeError(name, canonical, sorted(SCHEMES))


# -- shared parameter definitions ---------------------------------------------------


def _gain(doc: str = "std multiplier (torch's gain; Keras/JAX/Haiku scale = gain²)", positive: bool = False) -> Param:
    return Param("gain", "number", doc, default=None, exclusive_minimum=0.0 if positive else None)


MODE = Param("mode", "string", "which fan divides the scale", choices=MODES)
TRUNCATED = Param(
    "truncated",
    "boolean",
    "draw from N truncated to ±2σ, rescaled by 1/0.87962566 so the realised std is the target",
    default={"torch": False, "keras": True, "jax": True, "haiku": True},
)


def _fan(ctx: Context, mode: str) -> float:
    fans = ctx.fans
    fan = {
        "fan_in": fans.fan_in,
        "fan_out": fans.fan_out,
        "fan_avg": (fans.fan_in + fans.fan_out) / 2,
        "fan_geo_avg": math.sqrt(fans.fan_in * fans.fan_out),
    }[mode]
    ctx.derivation.update(fan_in=fans.fan_in, fan_out=fans.fan_out, fan_rule=fans.rule, mode=mode, fan=fan)
    if ctx.convention in ("keras", "haiku"):
        fan = max(1.0, fan)  # Keras and Haiku divide by max(1, fan)
    elif fan == 0:
        raise InvalidShapeError(
            "shape",
            list(ctx.shape),
            f"a shape whose {mode} is not zero in {ctx.convention} convention (keras and haiku conventions use max(1, fan) instead)",
        )
    return float(fan)


def _variance_scaling(ctx: Context, scale: float, mode: str, distribution: str, gain: float | None = None) -> Distribution:
    """Shared by variance_scaling and its presets: variance s = scale / fan.

    With a gain in torch convention the std is computed as torch does, gain / √fan and
    bound √3·std, so the numbers agree with torch to the last bit; otherwise as Keras
    does, √(scale / fan) and √(3·scale / fan).
    """
    fan = _fan(ctx, mode)
    variance = scale / fan
    if gain is not None and ctx.convention == "torch":
        target = gain / math.sqrt(fan)
        limit = math.sqrt(3.0) * target
    else:
        target = math.sqrt(variance)
        limit = math.sqrt(3.0 * variance)
    ctx.derivation.update(scale=scale, variance=variance, target_std=target, distribution=distribution)
    if distribution == "uniform":
        return Uniform(-limit, limit)
    if distribution == "untruncated_normal":
        return Normal(0.0, target)
    std = target / TRUNCATION_STD
    ctx.derivation["truncation_correction"] = 1.0 / TRUNCATION_STD
    return TruncatedNormal(0.0, std, -2.0 * std, 2.0 * std)


def _preset(ctx: Context, default_gain: float, normal: bool) -> Resolution:
    gain = ctx.params["gain"]
    if gain is None:
        gain = default_gain
    mode = ctx.params["mode"]
    distribution = ("truncated_normal" if ctx.params["truncated"] else "untruncated_normal") if normal else "uniform"
    return Resolution(_variance_scaling(ctx, gain * gain, mode, distribution, gain), gain)


def _he_gain(ctx: Context) -> float:
    nonlinearity = ctx.params["nonlinearity"]
    slope = ctx.params["negative_slope"]
    if ctx.params["gain"] is not None:  # then neither of the others (HE_EXCLUSIVE, checked by resolve)
        return float(ctx.params["gain"])
    nonlinearity = nonlinearity or "leaky_relu"
    if nonlinearity == "leaky_relu" and slope is None:
        slope = 0.0  # torch kaiming_*: a = 0
    ctx.derivation.update(nonlinearity=nonlinearity, negative_slope=slope)
    return calculate_gain(nonlinearity, slope)


NONLINEARITY = Param(
    "nonlinearity",
    "string",
    "torch calculate_gain nonlinearity that sets gain (default leaky_relu with slope 0, gain √2)",
    choices=NONLINEARITIES,
)
NEGATIVE_SLOPE = Param("negative_slope", "number", "leaky_relu slope (torch's a); 0 by default for he_*")
HE_EXCLUSIVE = (("gain", ("nonlinearity", "negative_slope")),)


# -- the schemes -------------------------------------------------------------------


@scheme("zeros", aliases=("zero", "zeros_"))
def _zeros(ctx: Context) -> Resolution:
    """All zeros.

    Formula: w = 0
    Source: torch.nn.init.zeros_; keras.initializers.Zeros; jax.nn.initializers.zeros; haiku Constant(0)
    """
    return Resolution(Constant(0.0))


@scheme("ones", aliases=("one", "ones_"))
def _ones(ctx: Context) -> Resolution:
    """All ones.

    Formula: w = 1
    Source: torch.nn.init.ones_; keras.initializers.Ones; jax.nn.initializers.ones; haiku Constant(1)
    """
    return Resolution(Constant(1.0))


@scheme("constant", Param("value", "number", "the value of every element", default=REQUIRED), aliases=("constant_", "full"))
def _constant(ctx: Context) -> Resolution:
    """Every element equals value.

    Formula: w = value
    Source: torch.nn.init.constant_(val); keras.initializers.Constant(value); jax.nn.initializers.constant(value); haiku Constant(constant)
    """
    return Resolution(Constant(ctx.params["value"]))


@scheme(
    "uniform",
    Param("low", "number", "lower bound", default={"torch": 0.0, "keras": -0.05, "jax": 0.0, "haiku": 0.0}),
    Param("high", "number", "upper bound", default={"torch": 1.0, "keras": 0.05, "jax": 0.01, "haiku": 1.0}),
    aliases=("uniform_", "random_uniform"),
)
def _uniform(ctx: Context) -> Resolution:
    """Uniform on [low, high), with each framework's defaults.

    Formula: w ~ U(low, high); defaults torch U(0, 1), keras U(-0.05, 0.05), jax U(0, 0.01), haiku U(0, 1)
    Source: torch.nn.init.uniform_(a=0, b=1); keras RandomUniform(minval=-0.05, maxval=0.05); jax.nn.initializers.uniform(scale=1e-2); haiku RandomUniform(0, 1)
    """
    low, high = ctx.params["low"], ctx.params["high"]
    if not low < high:
        raise InvalidParameterError("low", low, f"a number below high ({high:g})")
    return Resolution(Uniform(low, high))


@scheme(
    "normal",
    Param("mean", "number", "mean", default=0.0),
    Param("std", "number", "standard deviation", default={"torch": 1.0, "keras": 0.05, "jax": 0.01, "haiku": 1.0}, exclusive_minimum=0.0),
    aliases=("normal_", "random_normal", "gaussian"),
)
def _normal(ctx: Context) -> Resolution:
    """Untruncated normal, with each framework's defaults.

    Formula: w ~ N(mean, std²); defaults torch N(0, 1), keras N(0, 0.05²), jax N(0, 0.01²), haiku N(0, 1)
    Source: torch.nn.init.normal_; keras RandomNormal(stddev=0.05); jax.nn.initializers.normal(stddev=1e-2); haiku RandomNormal(stddev=1, mean=0)
    """
    return Resolution(Normal(ctx.params["mean"], ctx.params["std"]))


@scheme(
    "truncated_normal",
    Param("mean", "number", "mean of the normal before truncation", default=0.0),
    Param(
        "std",
        "number",
        "std of the normal before truncation (no correction)",
        default={"torch": 1.0, "keras": 0.05, "jax": 0.01, "haiku": 1.0},
        exclusive_minimum=0.0,
    ),
    Param("lower", "number", "lower truncation bound (absolute or in std units, see bounds)", default=-2.0),
    Param("upper", "number", "upper truncation bound (absolute or in std units, see bounds)", default=2.0),
    Param(
        "bounds",
        "string",
        "how lower/upper are read: absolute values (torch a, b) or multiples of std around the mean",
        default={"torch": "absolute", "keras": "std", "jax": "std", "haiku": "std"},
        choices=("absolute", "std"),
    ),
    aliases=("trunc_normal", "trunc_normal_", "truncnorm"),
)
def _truncated_normal(ctx: Context) -> Resolution:
    """Normal conditioned on [lower, upper]; std is the std before truncation.

    Formula: w ~ N(mean, std²) | lower ≤ w ≤ upper; torch: bounds absolute (default ±2, so std=0.02 truncates nothing); keras/jax/haiku: bounds mean ± 2·std
    Source: torch.nn.init.trunc_normal_(mean=0, std=1, a=-2, b=2); keras TruncatedNormal(stddev=0.05); jax.nn.initializers.truncated_normal(stddev=1e-2, lower=-2, upper=2); haiku TruncatedNormal(stddev=1, mean=0, lower=-2, upper=2)
    """
    mean, std, lower, upper = (ctx.params[k] for k in ("mean", "std", "lower", "upper"))
    if not lower < upper:
        raise InvalidParameterError("lower", lower, f"a number below upper ({upper:g})")
    low, high = (lower, upper) if ctx.params["bounds"] == "absolute" else (mean + lower * std, mean + upper * std)
    # 1e-280, not the float minimum: the sampler's probabilities p0 + u·dp stay above
    # 2^-53·1e-280, normal numbers, so no subnormal ever enters its logarithm.
    if not low < high or normal_mass((low - mean) / std, (high - mean) / std) < 1e-280:
        raise InvalidParameterError(
            "lower",
            lower,
            f"truncation bounds that leave probability mass: [{low:g}, {high:g}] is too far from mean {mean:g} for std {std:g}",
        )
    return Resolution(TruncatedNormal(mean, std, low, high))


@scheme(
    "variance_scaling",
    Param("scale", "number", "variance numerator (= gain²)", default=1.0, exclusive_minimum=0.0),
    Param("mode", "string", "which fan divides the scale", default="fan_in", choices=MODES),
    Param(
        "distribution",
        "string",
        "uniform, untruncated_normal, truncated_normal (corrected std); 'normal' is truncated in keras, untruncated in torch/jax/haiku",
        default="truncated_normal",
        choices=VS_DISTRIBUTIONS,
    ),
    aliases=("variancescaling",),
    uses_fans=True,
)
def _variance_scaling_scheme(ctx: Context) -> Resolution:
    """The generic fan-based initializer that the glorot, he and lecun presets specialise.

    Formula: s = scale / fan (fan per mode; keras/haiku use max(1, fan)); uniform U(±√(3s)); untruncated N(0, s); truncated N(0, (√s/0.87962566)²) cut at ±2 of that std
    Source: keras.initializers.VarianceScaling; jax.nn.initializers.variance_scaling; haiku VarianceScaling
    """
    distribution = ctx.params["distribution"]
    if distribution == "normal":
        distribution = "truncated_normal" if ctx.convention == "keras" else "untruncated_normal"
    scale = ctx.params["scale"]
    return Resolution(_variance_scaling(ctx, scale, ctx.params["mode"], distribution), math.sqrt(scale))


def _register_presets() -> None:
    families = {
        "glorot": (
            ("xavier",),
            "fan_avg",
            "Glorot & Bengio 2010",
            "torch.nn.init.xavier_{d}_(gain=1); keras GlorotUniform/GlorotNormal; jax.nn.initializers.glorot_{d}",
            "gain²·2/(fan_in+fan_out)",
        ),
        "he": (
            ("kaiming",),
            "fan_in",
            "He et al. 2015",
            "torch.nn.init.kaiming_{d}_(a=0, mode='fan_in', nonlinearity='leaky_relu'); keras HeUniform/HeNormal; jax.nn.initializers.he_{d}",
            "gain²/fan, gain = calculate_gain(nonlinearity, negative_slope) = √2 by default",
        ),
        "lecun": (
            (),
            "fan_in",
            "LeCun et al. 1998",
            "keras LecunUniform/LecunNormal; jax.nn.initializers.lecun_{d}; torch: kaiming with gain 1",
            "gain²/fan_in, gain 1",
        ),
    }
    for family, (aliases, mode, paper, source, variance) in families.items():
        for dist in ("uniform", "normal"):
            params: list[Param] = [_gain(positive=True), Param("mode", "string", MODE.doc, default=mode, choices=MODES)]
            if family == "he":
                params += [NONLINEARITY, NEGATIVE_SLOPE]
            if dist == "normal":
                params.append(TRUNCATED)
            formula = (
                f"s = {variance}; U(±√(3s))"
                if dist == "uniform"
                else f"s = {variance}; torch: N(0, s) untruncated; keras/jax/haiku: N(0, (√s/0.87962566)²) truncated at ±2 of that std (realised std √s)"
            )

            def resolver(ctx: Context, family: str = family, normal: bool = dist == "normal") -> Resolution:
                default_gain = _he_gain(ctx) if family == "he" else 1.0
                return _preset(ctx, default_gain, normal)

            resolver.__doc__ = f"{family.capitalize()} {dist} ({paper}).\n\nFormula: {formula}\nSource: {source.format(d=dist)}"
            names = tuple(f"{a}_{dist}" for a in aliases) + tuple(f"{a}_{dist}_" for a in (family, *aliases))
            exclusive = HE_EXCLUSIVE if family == "he" else ()
            scheme(f"{family}_{dist}", *params, aliases=names, uses_fans=True, exclusive=exclusive)(resolver)


_register_presets()


@scheme(
    "orthogonal",
    _gain("multiplier of the orthogonal matrix (torch gain, keras gain, jax/haiku scale)"),
    Param(
        "column_axis",
        "integer",
        "axis that becomes the matrix's columns; null: torch flattening (rows = shape[0])",
        default={"torch": None, "keras": -1, "jax": -1, "haiku": -1},
    ),
    aliases=("orthogonal_", "orthonormal"),
    rank=(2, None),
)
def _orthogonal(ctx: Context) -> Resolution:
    """A (semi-)orthogonal matrix distributed as the QR of a Gaussian, computed in float64.

    Formula: W = gain · Q·sign(diag R) for A = QR, A ~ N(0,1) of shape (max(r,c), min(r,c)) (transposed when r < c), sampled with Householder vectors drawn directly (Stewart 1980); torch: r = shape[0], c = numel/r; keras/jax/haiku: c = shape[column_axis], r = numel/c
    Source: torch.nn.init.orthogonal_(gain=1) (Saxe et al. 2013); keras Orthogonal(gain=1); jax.nn.initializers.orthogonal(scale=1, column_axis=-1); haiku Orthogonal(scale=1, axis=-1)
    """
    gain = 1.0 if ctx.params["gain"] is None else ctx.params["gain"]
    axis = ctx.params["column_axis"]
    rank = len(ctx.shape)
    if axis is None:
        rows = ctx.shape[0]
        cols = math.prod(ctx.shape[1:])
    else:
        if not -rank <= axis < rank:
            raise InvalidParameterError("column_axis", axis, f"an axis in [-{rank}, {rank - 1}] or null")
        axis %= rank
        cols = ctx.shape[axis]
        rows = math.prod(ctx.shape) // cols if cols else math.prod(ctx.shape[:axis] + ctx.shape[axis + 1 :])
    ctx.derivation.update(rows=rows, cols=cols)
    return Resolution(Orthogonal(gain, rows, cols, axis), gain)


@scheme("identity", _gain("value on the diagonal"), aliases=("eye", "eye_"), rank=(2, None))
def _identity(ctx: Context) -> Resolution:
    """The identity matrix times gain; for rank > 2, one per leading (batch) index, as Haiku does.

    Formula: w[..., i, j] = gain if i == j else 0 (rectangular allowed)
    Source: torch.nn.init.eye_ (rank 2); keras Identity(gain=1); haiku Identity(gain=1) (batched)
    """
    gain = 1.0 if ctx.params["gain"] is None else ctx.params["gain"]
    return Resolution(Identity(gain), gain)


def _kernel_centre(ctx: Context) -> tuple[tuple[int, ...], str]:
    if ctx.convention == "torch":
        kernel, layout = ctx.shape[2:], "out_in_kernel"
        centre = tuple(k // 2 for k in kernel)
    else:
        kernel, layout = ctx.shape[:-2], "kernel_in_out"
        centre = tuple((k - 1) // 2 for k in kernel)
    ctx.derivation.update(layout="(out, in, *kernel)" if layout == "out_in_kernel" else "(*kernel, in, out)", centre=list(centre))
    return centre, layout


@scheme("dirac", Param("groups", "integer", "number of convolution groups", default=1, minimum=1), aliases=("dirac_",), rank=(3, 5))
def _dirac(ctx: Context) -> Resolution:
    """Identity-preserving convolution kernel: a one at the kernel centre for each kept channel.

    Formula: w[g·(out/groups)+d, d, centre] = 1 for d < min(out/groups, in); torch layout (out, in, *k), centre k//2; other conventions (*k, in, out), centre (k-1)//2
    Source: torch.nn.init.dirac_(groups=1)
    """
    groups = ctx.params["groups"]
    out_channels = ctx.shape[0] if ctx.convention == "torch" else ctx.shape[-1]
    if out_channels % groups:
        raise InvalidParameterError("groups", groups, f"a divisor of the output channels ({out_channels})")
    centre, layout = _kernel_centre(ctx)
    if 0 in ctx.shape:
        centre = tuple(0 for _ in centre)
    return Resolution(Dirac(groups, centre, layout))  # type: ignore[arg-type]


@scheme(
    "delta_orthogonal",
    _gain("multiplier of the orthogonal (in, out) matrix (jax scale)"),
    aliases=("delta_orthogonal_", "convolution_delta"),
    rank=(3, 5),
)
def _delta_orthogonal(ctx: Context) -> Resolution:
    """An orthogonal (in, out) matrix at the kernel centre, zeros elsewhere (Xiao et al. 2018).

    Formula: M = orthogonal(in, out)·gain (needs out ≥ in); w[centre, :, :] = M; jax layout (*k, in, out), centre (k-1)//2; torch layout (out, in, *k), centre k//2
    Source: jax.nn.initializers.delta_orthogonal(scale=1.0, column_axis=-1)
    """
    n_in, n_out = (ctx.shape[1], ctx.shape[0]) if ctx.convention == "torch" else (ctx.shape[-2], ctx.shape[-1])
    if n_in > n_out:
        raise InvalidShapeError("shape", list(ctx.shape), f"in channels ≤ out channels for delta_orthogonal (got in {n_in} > out {n_out})")
    gain = 1.0 if ctx.params["gain"] is None else ctx.params["gain"]
    centre, layout = _kernel_centre(ctx)
    if 0 in ctx.shape:
        centre = tuple(0 for _ in centre)
    return Resolution(DeltaOrthogonal(gain, centre, layout), gain)  # type: ignore[arg-type]


@scheme(
    "sparse",
    Param("sparsity", "number", "fraction of each column set to zero", default=REQUIRED, minimum=0.0, exclusive_maximum=1.0),
    Param("std", "number", "std of the non-zero normal entries", default=0.01, exclusive_minimum=0.0),
    aliases=("sparse_",),
    rank=(2, 2),
)
def _sparse(ctx: Context) -> Resolution:
    """A sparse 2-D matrix: normal entries with a fixed count of zeros in every column (Martens 2010).

    Formula: w ~ N(0, std²), then ⌈sparsity·rows⌉ entries of each column, chosen uniformly, set to 0
    Source: torch.nn.init.sparse_(sparsity, std=0.01) (here the zero positions are seeded, unlike torch's)
    """
    rows = ctx.shape[0]
    sparsity = ctx.params["sparsity"]
    return Resolution(Sparse(ctx.params["std"], sparsity, math.ceil(sparsity * rows)))


@scheme(
    "uniform_scaling",
    Param("scale", "number", "multiplier of the bound", default=1.0, exclusive_minimum=0.0),
    uses_fans=True,
    aliases=("uniformscaling",),
)
def _uniform_scaling(ctx: Context) -> Resolution:
    """Haiku's UniformScaling: uniform with a bound set by the input size.

    Formula: U(±scale·√(3/input_size)); haiku convention: input_size = prod(shape[:-1]); other conventions: fan_in
    Source: haiku.initializers.UniformScaling(scale=1.0) (Sussillo & Abbott 2014)
    """
    if ctx.convention == "haiku":
        size = math.prod(ctx.shape[:-1])
        ctx.derivation.update(input_size=size, input_rule="haiku: prod(shape[:-1])")
    else:
        size = ctx.fans.fan_in
        ctx.derivation.update(input_size=size, input_rule=ctx.fans.rule)
    if size == 0:
        raise InvalidShapeError("shape", list(ctx.shape), "a shape whose input size is not zero for uniform_scaling")
    limit = ctx.params["scale"] * math.sqrt(3.0 / size)
    return Resolution(Uniform(-limit, limit))


# -- resolution --------------------------------------------------------------------


EMPTY_DIMS_MAX = ((1 << 63) - 1) // 8
FULL_ELEMENTS_MAX = 1 << 62
"""A sliced request's full tensor: element indices (and the Philox counters made from them) stay in 64 bits."""


def check_shape(shape: object) -> tuple[int, ...]:
    """A shape as a tuple of non-negative ints.

    The size limits are checked after resolution (:func:`check_size`), so that a
    request that is both wrong and too large is told what is wrong first.
    """
    if not isinstance(shape, list | tuple):
        raise InvalidShapeError("shape", shape, "a list of non-negative integers, e.g. [256, 128]")
    for i, dim in enumerate(shape):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InvalidShapeError(f"shape[{i}]", dim, "a non-negative integer")
    # An empty tensor passes every size limit, so its other dimensions are checked here:
    # numpy refuses a shape once its non-zero dimensions times the item size pass
    # 2^63 - 1 (torch, JAX and safetensors keep dimensions in 64 bits too), and the
    # widest item, float64 and the matrices built in it, is 8 bytes. (A non-empty
    # tensor that large is over the element limit, reported after resolution.)
    if 0 in shape and math.prod(dim for dim in shape if dim) > EMPTY_DIMS_MAX:
        raise InvalidShapeError("shape", list(shape), f"an empty tensor whose other dimensions multiply to at most {EMPTY_DIMS_MAX}")
    return tuple(shape)


def check_size(spec: ResolvedSpec, limits: Limits) -> None:
    """Size limits: dimensions, the whole tensor, and the float64 matrix a whole-tensor scheme builds."""
    if len(spec.shape) > limits.max_dims:
        # A 422, not a 413: the OpenAPI document states it (maxItems), and a request the
        # document refuses is refused as invalid, as every other rule it states.
        raise InvalidShapeError("shape", list(spec.shape), f"at most {limits.max_dims} dimensions (max_dims)")
    if spec.numel > limits.max_elements:
        raise LimitExceededError("shape" if spec.slice is None else "slice", list(spec.out_shape), "max_elements", limits.max_elements)
    if spec.full_numel > FULL_ELEMENTS_MAX:  # a slice of a tensor whose flat indices would not fit 64 bits
        raise LimitExceededError("shape", list(spec.shape), "max_full_elements", FULL_ELEMENTS_MAX)
    dist = spec.distribution
    if isinstance(dist, Orthogonal):
        matrix = dist.rows * dist.cols
    elif isinstance(dist, Sparse):
        matrix = spec.full_numel
    elif isinstance(dist, DeltaOrthogonal):
        matrix = spec.shape[0] * spec.shape[1] if dist.layout == "out_in_kernel" else spec.shape[-2] * spec.shape[-1]
    else:
        return
    if matrix > limits.max_orthogonal_elements:
        raise LimitExceededError("shape", list(spec.shape), "max_orthogonal_elements", limits.max_orthogonal_elements)


SIGMAS = 10.0
"""Normal draws are taken to stay within this many standard deviations (algorithm 2 reaches at most 8.57)."""
STATS_BOUND = 1e150
"""Statistics square values in float64: magnitudes beyond this could overflow."""


def check_representable(found: Scheme, spec: ResolvedSpec) -> None:
    """The resolved numbers must have a spread and fit the dtype, or the output would hold infinities.

    A std or width below the compute dtype's smallest normal number (or 1e-150), or values (mean ± 10 std, bounds,
    constants; sparse as its normal) beyond the output dtype's range (or 1e150, so /stats can square them in
    float64), are refused before anything is generated. The error names the parameter
    that scales the distribution.
    """
    dist = spec.distribution
    names = [p.name for p in found.params]
    scale_param = next((n for n in ("std", "gain", "scale", "high", "value") if n in names), "shape")
    cdt_info = np.finfo(spec.compute_dtype)
    values: list[float] = []
    spread: float | None = None
    if isinstance(dist, Constant):
        values = [dist.value]
    elif isinstance(dist, Uniform):
        values, spread = [dist.low, dist.high], dist.high - dist.low
    elif isinstance(dist, Normal):
        values, spread = [dist.mean - SIGMAS * dist.std, dist.mean + SIGMAS * dist.std], dist.std
    elif isinstance(dist, TruncatedNormal):
        values = [max(dist.low, dist.mean - SIGMAS * dist.std), min(dist.high, dist.mean + SIGMAS * dist.std), dist.low, dist.high]
        spread = dist.std
    elif isinstance(dist, Sparse):  # N(0, std²) with zeros: as Normal
        values, spread = [SIGMAS * dist.std], dist.std
    elif isinstance(dist, Orthogonal | Identity | DeltaOrthogonal):
        values = [dist.gain]
    # The smallest normal number of the compute dtype, and squares must not underflow in /stats.
    least = max(float(cdt_info.smallest_normal), 1.0 / STATS_BOUND)
    if spread is not None and not (math.isfinite(spread) and spread >= least):
        raise InvalidParameterError(
            scale_param,
            spec.to_dict()["distribution"],
            f"parameters whose resolved spread ({spread:g}) is at least {least:g} for {spec.dtype}",
        )
    bound = min(float(ml_dtypes.finfo(spec.np_dtype).max), STATS_BOUND)  # type: ignore[no-untyped-call]
    largest = max((abs(v) for v in values), default=0.0)
    if not largest <= bound:
        raise InvalidParameterError(
            scale_param,
            spec.to_dict()["distribution"],
            f"parameters whose values stay within ±{bound:g} for {spec.dtype} (these reach {largest:g})",
        )


NAME_REFUSED_CATEGORIES = ("Cc", "Cf", "Cs")
"""Unicode categories no tensor name may hold: controls, format characters and surrogates.

Format characters (Cf) are invisible and some reorder what is shown around them: the
bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C, the
"Trojan Source" characters), zero-width spaces and joiners, tags. A name is shown in
``Content-Disposition``, in logs and in the file's header, where such a character makes
one name look like another; refusing them is simpler and safer than cleaning them out of
one of those places. The price: a name cannot spell a word that needs a zero-width
joiner (some Persian or Indic spellings, emoji sequences).
"""


@functools.cache
def name_refused_ranges() -> tuple[tuple[int, int], ...]:
    """The code points of :data:`NAME_REFUSED_CATEGORIES` as inclusive ranges (for the document's ``pattern``)."""
    ranges: list[tuple[int, int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) in NAME_REFUSED_CATEGORIES:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return tuple(ranges)


def check_name(name: object, limits: Limits) -> str:
    """A tensor name, NFC-normalized: 1 to ``max_name_length`` characters as given, none of :data:`NAME_REFUSED_CATEGORIES`, not __metadata__.

    The length is counted before normalization, as JSON Schema's ``maxLength`` counts
    what is sent: NFC lengthens a few characters (U+0344 becomes two).
    """
    if not isinstance(name, str):
        raise InvalidParameterError("name", name, "a string")
    if not name or len(name) > limits.max_name_length:
        raise InvalidParameterError("name", name, f"a string of 1 to {limits.max_name_length} characters")
    refused = next((ch for ch in name if unicodedata.category(ch) in NAME_REFUSED_CATEGORIES), None)
    if refused is not None:
        category = unicodedata.category(refused)
        raise InvalidParameterError(
            "name", name, f"a string without control or format characters (it holds U+{ord(refused):04X}, category {category})"
        )
    name = unicodedata.normalize("NFC", name)
    if name == "__metadata__":
        raise InvalidParameterError("name", name, "any name but __metadata__ (reserved by safetensors)")
    return name


def check_dtype(dtype: object) -> str:
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    if isinstance(dtype, str) and dtype in DTYPE_ALIASES:
        return DTYPE_ALIASES[dtype]
    raise InvalidParameterError("dtype", dtype, "one of " + ", ".join(DTYPES))


def resolve(
    scheme: str,
    shape: Sequence[int],
    *,
    dtype: str = "float32",
    seed: int = 0,
    name: str = "weight",
    convention: str = "torch",
    params: Mapping[str, Any] | None = None,
    in_axes: Sequence[int] | None = None,
    out_axes: Sequence[int] | None = None,
    batch_axes: Sequence[int] | None = None,
    limits: Limits | None = None,
    algorithm: int | None = None,
    slice: object = None,
) -> ResolvedSpec:
    """Validate a request and make every number explicit.

    Raises a :class:`~service.core.errors.TensorinitError` subclass naming the offending
    parameter, the value received and what is allowed.
    """
    limits = limits or Limits()
    found = lookup(scheme)
    convention = check_convention(convention)
    checked_shape = check_shape(shape)
    if len(checked_shape) > limits.max_dims:  # first, as the document states it: before fans can overflow into a 413
        raise InvalidShapeError("shape", list(checked_shape), f"at most {limits.max_dims} dimensions (max_dims)")
    name, dtype, seed = check_name(name, limits), check_dtype(dtype), check_seed(seed)
    version = ALGORITHM_VERSION if algorithm is None else check_algorithm(algorithm)
    part = check_slice(slice, checked_shape)
    params = dict(params or {})
    axes = {"in_axes": in_axes, "out_axes": out_axes, "batch_axes": batch_axes}
    if not found.uses_fans:
        for key, value in axes.items():
            if value is not None:
                raise UnknownParameterError(key, value, f"axes only for fan-based schemes; {found.name} does not use fans")
    known = {p.name for p in found.params}
    for key in params:
        if key not in known:
            others = sorted(s.name for s in SCHEMES.values() if any(p.name == key for p in s.params))
            hint = f" ({key} belongs to {', '.join(others)})" if others else ""
            allowed = ", ".join(sorted(known)) or "no parameters"
            raise UnknownParameterError(key, params[key], f"{allowed} for scheme {found.name}{hint}")
    values: dict[str, Any] = {}
    for p in found.params:
        if params.get(p.name) is not None:
            values[p.name] = p.check(params[p.name])
        elif p.required:
            raise MissingParameterError(p.name, p.allowed())
        else:
            values[p.name] = p.default_for(convention)
    for first, excluded in found.exclusive:
        if params.get(first) is not None and any(params.get(other) is not None for other in excluded):
            raise InvalidParameterError(first, params[first], f"either {first} or {'/'.join(excluded)}, not both")
    ctx = Context(checked_shape, convention, values, axes)
    if found.rank != (0, None):
        ctx.rank_between(found.name, *found.rank)
    try:
        if found.uses_fans and any(value is not None for value in axes.values()):
            ctx.fans  # noqa: B018  the axes' own rules, also where the resolver reads no fans (uniform_scaling under haiku)
        resolution = found.resolver(ctx)
    except OverflowError:
        # Fans past the float range (dimensions near 2^1024): only a non-empty tensor far
        # over the element limit gets here (check_shape refused such empty ones).
        raise LimitExceededError("shape", list(checked_shape), "max_elements", limits.max_elements) from None
    fans = ctx._fans
    spec = ResolvedSpec(
        name=name,
        scheme=found.name,
        convention=convention,
        shape=checked_shape,
        dtype=dtype,
        seed=seed,
        distribution=resolution.distribution,
        fan_in=fans.fan_in if fans else None,
        fan_out=fans.fan_out if fans else None,
        gain=resolution.gain,
        derivation=tuple(sorted(ctx.derivation.items())),
        algorithm=version,
        slice=part,
    )
    check_representable(found, spec)
    check_size(spec, limits)
    return spec
