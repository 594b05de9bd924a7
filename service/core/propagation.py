"""Signal propagation through a network: the mean-field theory, and a real pass through the served tensors.

Why an initialization is what it is (Glorot & Bengio 2010; He et al. 2015; Klambauer et
al. 2017; Poole et al. 2016 and Schoenholz et al. 2017 for the mean-field form used here):
the variance of the signal must neither vanish nor explode from layer to layer, forward
for the activations and backward for the gradients.

A network is a stack of layers ``h_l = W_l·u_l + b_l``, ``x_l = φ(h_l)``, or with a
residual connection ``x_l = x_{l−1} + β·φ(h_l)``; ``u_l`` is ``x_{l−1}``, or its layer
normalization (per sample, over the units, no affine part). ``x_0`` is a Gaussian batch of
variance ``input_variance``. A layer is dense (``W`` of shape (out, in) in torch's layout) or
a stride-1 convolution with circular padding (``W`` (out, in, *kernel)), so that every
output sees exactly fan_in = in·∏kernel inputs and every input feeds fan_out = out·∏kernel
outputs.

**Theory** (mean field: infinite width, weights independent of the signal). With
``v_l = E[x_l²]`` and ``q_l = E[h_l²]``::

    q_l = σ_w²·E[u_l²] + σ_b²,  σ_w² = fan_in·E[W²],  σ_b² = E[b²]
    v_l = E_{z~N(0,q_l)}[φ(z)²]            (plain)   v_{l−1} + 2β·μ_{l−1}·E[φ(z)] + β²·E[φ(z)²]  (residual)

with μ_l = E[x_l] (the same recursion on E[φ(z)]), and ``E[u_l²] = v_{l−1}``, or 1 after
layer normalization (Yang & Schoenholz 2017 for residual mean field). Backward, from a unit-variance
gradient ``∂L/∂x_L`` at the output, with ``G_l = E[(∂L/∂x_l)²]`` and ``D_l = E[(∂L/∂h_l)²]``::

    D_l = G_l·β²·E[φ′(z)²]  (β = 1 for a plain layer)
    G_{l−1} = (G_l if residual else 0) + fan_out·E[W²]·D_l·ν_l

with ν_l = 1, or 1/Var(x_{l−1}) through a layer normalization (its Jacobian scales by
1/σ and removes two directions of n, negligible here). The per-layer backward factor of
a plain stack is χ_l = D_{l}/D_{l+1} = fan_out·E[W²]·E[φ′(z)²] (Schoenholz et al.'s χ₁,
with fan_out where fan_in ≠ fan_out). The expectations are closed forms for linear,
relu, leaky_relu, elu and selu (piecewise: quadrature converges slowly across a kink)
the trapezoid rule for tanh, sigmoid, gelu, silu and softplus (smooth; see :func:`_rule`
for why not Gauss–Hermite). E[W²] and E[b²] are the exact second moments of the resolved
distributions (:func:`service.core.stats.theory`).

**Measurement**: a forward pass of the batch, then a backward pass of a unit-variance
Gaussian output gradient, in numpy, through the very tensors ``/init`` serves for the same
scheme, names (``layers.{i}.weight``, ``layers.{i}.bias``), seed, dtype and convention
(:class:`service.core.Tensor`: the same bytes). The reported numbers are the mean
squares of ``h_l`` and ``∂L/∂h_l`` over batch, units and positions. The matmuls use BLAS
in float32 on a signal rescaled to unit RMS (a matmul is linear, so the scale is put back
exactly; it keeps 2^−1000 from underflowing), the activations float64: this is a
measurement, not served bytes, so BLAS's summation order does not matter here. BLAS runs
single-threaded (:func:`_single_threaded_blas`): the engine's pools are its parallelism.

**Verdict** from the theory's gradient: ``G_0 / G_L`` (gradient at the input against the
output) within [1/2, 2] is ``stable``, below is ``vanishing``, above ``exploding``; the
per-layer factor is its geometric mean, and ``gain`` is the multiplier on every weight's
std that makes the per-layer gradient factor 1 (exact 1/√χ for positively homogeneous
activations, found by root finding over the recursion of the first
:data:`GAIN_SEARCH_LAYERS` layers otherwise). The fixed point
q* of a uniform plain stack is the attracting root of q = σ_w²·E[φ(z)²]_q + σ_b²
(SELU under LeCun normal: q* = 1, Klambauer et al. 2017).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import Any, TypeVar

import numpy as np
import scipy.optimize
import scipy.special
import threadpoolctl

from .errors import InvalidParameterError, LimitExceededError, TensorinitError, UncoveredTensorsError
from .fans import check_convention
from .recipes import plan_recipe
from .schemes import Limits, check_dtype, resolve
from .spec import ELEMENTWISE, ResolvedSpec, check_seed
from .stats import theory as distribution_theory
from .streams import Tensor, inner_executor

Array = np.ndarray[Any, Any]
T = TypeVar("T")

ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "sigmoid", "selu", "elu", "gelu", "silu", "softplus")
NORMALIZATIONS = ("layer",)
QUADRATURE_STEPS = 6  # trapezoid steps per standard deviation, while a step is under 0.25
QUADRATURE_MAX_STEPS = 8192
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
STABLE_BAND = 2.0
GAIN_SEARCH_LAYERS = 100  # stable when the gradient's total growth lies within [1/2, 2]
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SPAN = 12.0  # standard deviations each side: the density past them is below 1e-31


def _rule(q: float) -> tuple[Array, Array]:
    """Nodes and weights of E_{z~N(0,q)}[f(z)] for smooth f: the trapezoid rule on ±12√q.

    Why not Gauss–Hermite: tanh and sigmoid have poles at ±iπ/2 and ±iπ, which the
    Hermite nodes, scaled by √(2q), come ever closer to as q grows (96 nodes: 1e−5 off at
    q = 4). The trapezoid rule on an analytic, rapidly decaying integrand converges
    geometrically, as exp(−2π·d/h) for poles at distance d and step h (Trefethen &
    Weideman, SIAM Review 2014): h = min(√q/6, 0.25) is within 1e−9 up to q ≈ 10⁴
    (at most :data:`QUADRATURE_MAX_STEPS` steps; beyond, the activation is saturated anyway).
    """
    s = math.sqrt(q)
    step = min(s / QUADRATURE_STEPS, 0.25)
    steps = min(math.ceil(2 * _SPAN * s / step), QUADRATURE_MAX_STEPS)
    t = np.linspace(-_SPAN, _SPAN, steps + 1)
    weights = np.exp(-0.5 * t * t) * (2 * _SPAN / steps) / _SQRT_2PI
    weights[[0, -1]] *= 0.5
    return s * t, weights


# -- activations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """φ and φ′, with ``slope`` for leaky_relu (default 0.01, torch's) and ``alpha`` for elu (default 1)."""

    name: str
    slope: float = 0.01
    alpha: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.name == "leaky_relu":
            d["slope"] = self.slope
        if self.name == "elu":
            d["alpha"] = self.alpha
        return d

    @property
    def homogeneous(self) -> bool:
        """φ(c·z) = c·φ(z) for c > 0: the gain then scales every variance exactly."""
        return self.name in ("linear", "relu", "leaky_relu")

    def phi(self, z: Array) -> Array:
        n = self.name
        if n == "linear":
            return z
        if n == "relu":
            return np.maximum(z, 0.0)
        if n == "leaky_relu":
            return np.where(z > 0, z, self.slope * z)
        if n == "tanh":
            return np.tanh(z)
        if n == "sigmoid":
            return np.asarray(scipy.special.expit(z))
        if n in ("elu", "selu"):
            scale, alpha = (SELU_SCALE, SELU_ALPHA) if n == "selu" else (1.0, self.alpha)
            return scale * np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))
        if n == "gelu":
            return z * np.asarray(scipy.special.ndtr(z), dtype=np.float64)
        if n == "silu":
            return z * np.asarray(scipy.special.expit(z), dtype=np.float64)
        assert n == "softplus"
        return np.logaddexp(0.0, z)

    def dphi(self, z: Array) -> Array:
        n = self.name
        if n == "linear":
            return np.ones_like(z)
        if n == "relu":
            return (z > 0).astype(z.dtype)
        if n == "leaky_relu":
            return np.where(z > 0, 1.0, self.slope)
        if n == "tanh":
            return 1.0 - np.tanh(z) ** 2
        if n == "sigmoid":
            s = np.asarray(scipy.special.expit(z))
            return s * (1.0 - s)
        if n in ("elu", "selu"):
            scale, alpha = (SELU_SCALE, SELU_ALPHA) if n == "selu" else (1.0, self.alpha)
            return scale * np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))
        if n == "gelu":
            return np.asarray(scipy.special.ndtr(z)) + z * np.exp(-0.5 * z * z) / _SQRT_2PI
        if n == "silu":
            s = np.asarray(scipy.special.expit(z))
            return s * (1.0 + z * (1.0 - s))
        assert n == "softplus"
        return np.asarray(scipy.special.expit(z))

    def moments(self, q: float) -> tuple[float, float, float]:
        """(E[φ(z)], E[φ(z)²], E[φ′(z)²]) for z ~ N(0, q) (call under ``np.errstate``: q may be huge)."""
        if q <= 0:
            z0 = np.zeros(1)
            return float(self.phi(z0)[0]), float(self.phi(z0)[0] ** 2), float(self.dphi(z0)[0] ** 2)
        n, s = self.name, math.sqrt(q)
        if n == "linear":
            return 0.0, q, 1.0
        if n in ("relu", "leaky_relu"):
            a = 0.0 if n == "relu" else self.slope
            return (1.0 - a) * s / _SQRT_2PI, q * (1.0 + a * a) / 2.0, (1.0 + a * a) / 2.0
        if n in ("elu", "selu"):
            scale, alpha = (SELU_SCALE, SELU_ALPHA) if n == "selu" else (1.0, self.alpha)

            # E[e^{tz}·1{z<0}] = e^{t²q/2}·Φ(−t√q) = erfcx(t√q/√2)/2: no overflow at any q.
            def lower(t: float) -> float:
                return float(scipy.special.erfcx(t * s / math.sqrt(2.0))) / 2.0

            mean = scale * (s / _SQRT_2PI + alpha * (lower(1.0) - 0.5))
            square = scale**2 * (q / 2.0 + alpha**2 * (lower(2.0) - 2.0 * lower(1.0) + 0.5))
            slope = scale**2 * (0.5 + alpha**2 * lower(2.0))
            return mean, square, slope
        z, weights = _rule(q)
        f = self.phi(z)
        d = 1.0 - f * f if n == "tanh" else self.dphi(z)
        return float(weights @ f), float(weights @ (f * f)), float(weights @ (d * d))


def check_activation(value: object, where: str = "activation") -> Activation:
    """An activation from a name or ``{"name": ..., "slope": ...}`` (leaky_relu) / ``"alpha"`` (elu)."""
    allowed = "one of " + ", ".join(ACTIVATIONS) + ", or {name, slope} for leaky_relu, {name, alpha} for elu"
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or value.get("name") not in ACTIVATIONS:
        raise InvalidParameterError(where, value, allowed)
    extra = set(value) - {"name", "slope", "alpha"}
    if extra or ("slope" in value and value["name"] != "leaky_relu") or ("alpha" in value and value["name"] != "elu"):
        raise InvalidParameterError(where, value, allowed)
    act = Activation(str(value["name"]))
    if "slope" in value:
        act = replace(act, slope=_finite(value["slope"], f"{where}.slope"))
    if "alpha" in value:
        act = replace(act, alpha=_finite(value["alpha"], f"{where}.alpha"))
    return act


# -- networks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer: its resolved weight (and bias), activation, and residual options."""

    width: int
    activation: Activation
    weight: ResolvedSpec
    bias: ResolvedSpec | None
    kernel: tuple[int, ...] = ()
    residual: bool = False
    multiplier: float = 1.0
    norm: str | None = None

    @property
    def fan_in(self) -> int:
        return self.in_width * math.prod(self.kernel)

    @property
    def fan_out(self) -> int:
        return self.width * math.prod(self.kernel)

    @property
    def in_width(self) -> int:
        shape = self.weight.shape
        return shape[1] if self.weight.convention == "torch" else shape[-2]

    @cached_property
    def weight_square(self) -> float:
        """E[W²] of the resolved distribution (exact)."""
        th = distribution_theory(self.weight)
        return th.std**2 + th.mean**2

    @cached_property
    def sigma_w2(self) -> float:
        """σ_w² = fan_in·E[W²], the forward factor."""
        return self.fan_in * self.weight_square

    @cached_property
    def back_w2(self) -> float:
        """fan_out·E[W²], the backward factor."""
        return self.fan_out * self.weight_square

    @cached_property
    def bias_square(self) -> float:
        """σ_b² = E[b²] (0 without a bias)."""
        if self.bias is None:
            return 0.0
        th = distribution_theory(self.bias)
        return th.std**2 + th.mean**2


@dataclass(frozen=True)
class Network:
    """Layers in order, the input's width, variance and spatial shape, the batch and the seed of the batch."""

    layers: tuple[Layer, ...]
    input_width: int
    input_variance: float = 1.0
    spatial: tuple[int, ...] = ()
    batch: int = 512
    seed: int = 0

    @property
    def positions(self) -> int:
        return math.prod(self.spatial)

    def cells(self) -> int:
        """Numbers the measurement keeps for the backward pass: one per unit, position and sample of every layer."""
        return sum(layer.width * (2 if layer.norm else 1) for layer in self.layers) * self.positions * self.batch

    def measure_bytes(self) -> int:
        """A bound on the measurement's memory: kept derivatives, two live signals, one weight and its im2col."""
        widest = max([self.input_width, *(la.width for la in self.layers)])
        kernel = max((math.prod(la.kernel) for la in self.layers), default=1)
        live = widest * self.positions * self.batch * (8 * 3 + 4 * kernel)
        weights = max((la.fan_in * la.width for la in self.layers), default=0) * 12 * 2  # this one and the next (prefetched)
        return self.cells() * 4 + live + weights


@dataclass(frozen=True)
class PropagationLimits:
    """Limits of a propagation request (checked before any work)."""

    max_depth: int = 1000
    max_width_batch: int = 1 << 20
    max_cells: int = 1 << 26
    max_compare: int = 8


def _positive_int(value: object, where: str, allowed: str = "an integer ≥ 1") -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 20.0 is the integer 20
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterError(where, value, allowed)
    return value


def _finite(value: object, where: str, *, low: float = 0.0, inclusive: bool = True) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not (value >= low if inclusive else value > low):  # type: ignore[operator]
        raise InvalidParameterError(where, value, f"a finite number {'≥' if inclusive else '>'} {low:g}")
    return float(value)  # type: ignore[arg-type]


def _scheme_spec(value: object, where: str) -> tuple[str, dict[str, Any]]:
    """(scheme, params) of ``"he_normal"`` or ``{"scheme": "he_normal", ...params}``."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and isinstance(value.get("scheme"), str):
        params = {k: v for k, v in value.items() if k != "scheme"}
        for key in ("shape", "name", "seed", "dtype", "convention", "slice", "algorithm"):
            if key in params:
                raise InvalidParameterError(
                    f"{where}.{key}", params[key], "set by the network (the layer's shape, name and the request's seed)"
                )
        return str(value["scheme"]), params
    raise InvalidParameterError(where, value, "a scheme name, or an object with 'scheme' and that scheme's parameters")


def _resolve_at(where: str, scheme: str, shape: tuple[int, ...], params: dict[str, Any], **options: Any) -> ResolvedSpec:
    try:
        return resolve(scheme, shape, params=params, **options)
    except TensorinitError as err:
        err.param = f"{where}.{err.param}" if err.param else where
        err.message = f"{where}: {err.message}"
        err.args = (err.message,)
        raise


RECIPE_BIAS: Any = object()  # a layer's bias is its init recipe's choice
RECIPE_FIELDS = frozenset({"recipe", "recipe_params", "roles"})


def _is_recipe(init: object) -> bool:
    return isinstance(init, Mapping) and "recipe" in init


@dataclass(frozen=True)
class _Pending:
    """A layer checked but not yet resolved: a recipe needs every layer's shape first."""

    where: str
    width: int
    activation: Activation
    kernel: tuple[int, ...]
    residual: bool
    multiplier: float
    norm: str | None
    init: Any
    bias: Any
    shape: tuple[int, ...]


class _RecipePlans:
    """A recipe's choice for a layer: what it gives ``layers.{i}.weight`` / ``.bias`` in a manifest of the whole network.

    The manifest holds every layer as a module ``layers.{i}`` of kind ``linear`` (``conv{d}d``
    with a kernel), its weight and, where the layer has one, its bias, so depth- and
    width-aware recipes (gpt2's n_layer, mup's base shapes, fixup's roles) see the network
    as ``POST /plan`` would; the specs are exactly :func:`~service.core.recipes.plan_recipe`'s.
    A recipe that covers no such tensor is an error at the layer's ``init``.
    """

    def __init__(self, pending: Sequence[_Pending], options: Mapping[str, Any]):
        self.options = options
        self.tensors: dict[str, Any] = {}
        for i, row in enumerate(pending):
            kind = f"conv{len(row.kernel)}d" if row.kernel else "linear"
            self.tensors[f"layers.{i}.weight"] = {"shape": list(row.shape), "kind": kind}
            if row.bias is not None:
                self.tensors[f"layers.{i}.bias"] = {"shape": [row.width], "kind": kind}
        self._plans: dict[str, dict[str, ResolvedSpec]] = {}

    def spec(self, init: Mapping[str, Any], where: str, name: str, charge: Callable[[int], None] | None = None) -> ResolvedSpec:
        """The spec of tensor ``name`` in ``init``'s plan of the network (planned once per init; ``charge`` is told its size)."""
        extra = sorted(set(init) - RECIPE_FIELDS)
        if extra:
            raise InvalidParameterError(
                f"{where}.{extra[0]}", init[extra[0]], "recipe, recipe_params and roles (the network gives the tensors)"
            )
        for part in ("recipe_params", "roles"):
            if init.get(part) is not None and not isinstance(init[part], Mapping):
                raise InvalidParameterError(f"{where}.{part}", init[part], "an object (as in POST /plan)")
        key = repr(sorted((k, repr(v)) for k, v in init.items()))
        if key not in self._plans:
            if charge is not None:
                charge(len(self.tensors))
            try:
                plan = plan_recipe(
                    init["recipe"],
                    self.tensors,
                    recipe_params=init.get("recipe_params"),
                    roles=init.get("roles"),
                    seed=self.options["seed"],
                    dtype=self.options["dtype"],
                    convention=self.options["convention"],
                    limits=self.options["limits"],
                )
            except UncoveredTensorsError as err:
                raise InvalidParameterError(
                    where, init, f"a recipe that covers this network's linear or conv layers ({err.message})"
                ) from None
            except TensorinitError as err:
                # plan_recipe locates an error in its own document (recipe_params, tensors/<name>):
                # here every such place is this layer's init.
                place = getattr(err, "where", ())[:1]
                prefix = f"{where}.{place[0]}" if place in (("recipe_params",), ("roles",)) else where
                path = f"{prefix}.{err.param}" if err.param else prefix
                err.where = ()  # type: ignore[attr-defined]
                err.message = f"{path}: {err.message.removeprefix(f'{err.param}: ')}"
                err.param, err.args = path, (err.message,)
                raise
            self._plans[key] = {spec.name: spec for spec in plan.specs}
        return self._plans[key][name]


class _Resolutions:
    """The specs of one request's networks: each (scheme spec, shape) resolved once, limits kept until the form is checked.

    Two layers with the same init and shape differ by their tensor's name only (the name
    picks the random stream, and enters the spec nowhere else), so a stack of a thousand
    layers resolves a few specs, and ``compare`` past its limit costs little to check. A
    :class:`LimitExceededError` met resolving (a weight over ``max_elements``) is kept in
    :attr:`deferred`, not raised: wrong before too large. Once the request is known to be
    over a limit (:meth:`bound`), every layer and spec counts against a budget; spending it
    raises :class:`_OverBudgetError`, and the request is refused for that limit (:attr:`over`).
    """

    def __init__(self, budget_of_one: int):
        self.budget_of_one = budget_of_one
        self._specs: dict[tuple[str, tuple[int, ...], str], ResolvedSpec] = {}
        self.deferred: LimitExceededError | None = None
        self.spent = 0
        self.budget: int | None = None
        self.over: LimitExceededError | None = None

    def bound(self, over: LimitExceededError, budget: int) -> None:
        """The request is ``over`` a limit: from now on, at most ``budget`` more layers, specs or recipe tensors are checked."""
        if self.over is None:
            self.over, self.budget = over, self.spent + budget

    def charge(self, count: int = 1) -> None:
        self.spent += count
        if self.budget is not None and self.spent > self.budget:
            raise _OverBudgetError

    def scheme(self, where: str, raw: object, shape: tuple[int, ...], name: str, options: Mapping[str, Any]) -> ResolvedSpec | None:
        """``raw`` (a scheme spec) resolved for ``shape`` as tensor ``name``; None when a limit refused it (:attr:`deferred`)."""
        self.charge()
        key = (repr(raw), shape, repr(sorted(options.items())))  # JSON values: equal reprs, equal specs
        if key not in self._specs:
            scheme, params = _scheme_spec(raw, where)
            try:
                self._specs[key] = _resolve_at(where, scheme, shape, params, name=name, **options)
            except LimitExceededError as err:
                self.deferred = self.deferred or err
                return None
        spec = self._specs[key]
        return spec if spec.name == name else replace(spec, name=name)

    def recipe(self, plans: _RecipePlans, init: Mapping[str, Any], where: str, name: str) -> ResolvedSpec | None:
        """The recipe's spec for tensor ``name``; None when a limit refused the plan (:attr:`deferred`)."""
        self.charge()
        try:
            return plans.spec(init, where, name, charge=self.charge)
        except LimitExceededError as err:
            self.deferred = self.deferred or err
            return None


class _OverBudgetError(Exception):
    """Checking what lies past a limit would cost more than the largest request the limits allow."""


@dataclass
class _Built:
    """One network as checked: its layers (None where a limit refused a spec) and the size limit it is over, if any."""

    network: Network | None
    too_deep: LimitExceededError | None


def build_networks(
    document: Mapping[str, Any],
    inits: Sequence[object | None] = (None,),
    *,
    measured: bool = False,
    limits: Limits | None = None,
    propagation_limits: PropagationLimits | None = None,
) -> list[Network]:
    """One :class:`Network` per entry of ``inits`` (None: the document's own ``init``; see :func:`build_network`).

    Wrong before too large: the form of every layer of every network (kinds, widths,
    activations, kernels, residuals, init and bias specs) is checked before any size limit,
    so a malformed request that is also too large is refused for its form (naming the field)
    wherever the fault lies, past ``max_depth`` layers or past ``max_compare`` entries too.
    Then the limits, in this order: one a spec met (``max_elements``), the number compared
    (``inits`` past the first, against ``max_compare``), each network's depth and width ×
    batch, and with ``measured`` the cells of the measurement over all networks.

    What lies past a limit is checked as far as the largest request the limits allow would
    be (its specs and recipe tensors counted), no further: a body of a million compared
    schemes costs no more than an allowed one before its 413. A uniform stack deeper than
    ``max_depth`` is checked on its first ``max_depth`` layers, the same as the rest.
    """
    plimits = propagation_limits or PropagationLimits()
    limits = limits or Limits()
    entries = list(inits) or [None]
    allowed = plimits.max_compare + 1
    # What the largest allowed request costs: per layer its row, weight and bias, and a recipe plan's two tensors.
    budget = 5 * plimits.max_depth * allowed
    too_many = LimitExceededError("compare", f"<{len(entries) - 1} schemes>", "max_propagation_compare", plimits.max_compare)
    resolutions = _Resolutions(budget)
    if len(entries) > allowed:
        resolutions.bound(too_many, budget)
    built: list[_Built] = []
    seen: set[str] = set()
    try:
        for k, init in enumerate(entries):
            if k >= allowed and repr(init) in seen:
                continue  # past the limit, an entry checked once is checked
            seen.add(repr(init))
            one = _build(document, init, limits, plimits, resolutions)
            if k < allowed:
                built.append(one)
    except _OverBudgetError:
        assert resolutions.over is not None
        raise resolutions.deferred or resolutions.over from None
    if resolutions.deferred is not None:
        raise resolutions.deferred
    if len(entries) > allowed:
        raise too_many
    networks = []
    for one in built:
        if one.too_deep is not None:
            raise one.too_deep
        assert one.network is not None
        network = one.network
        widest = max([network.input_width, *(la.width for la in network.layers)])
        if widest * network.positions * network.batch > plimits.max_width_batch:
            raise LimitExceededError("batch", network.batch, "max_propagation_width_batch", plimits.max_width_batch)
        networks.append(network)
    if measured:
        check_cells(networks, plimits)
    return networks


def build_network(
    document: Mapping[str, Any],
    *,
    init: object | None = None,
    limits: Limits | None = None,
    propagation_limits: PropagationLimits | None = None,
) -> Network:
    """A :class:`Network` from a request document; ``init`` overrides every layer's weight scheme (``compare``).

    Fields: ``depth`` and ``width`` (a uniform stack) or ``layers`` (a list of objects with
    ``width`` and optionally ``activation``, ``init``, ``bias``, ``kernel``, ``residual``), and at
    the top level the defaults ``activation``, ``init``, ``bias``, ``residual`` (``{"multiplier": β,
    "norm": "layer" | null}``), plus ``input_width`` (default: the first layer's width),
    ``input_variance`` (default 1), ``spatial`` (the input's spatial shape, for convolutions),
    ``batch`` (default 512), ``seed`` (default 0), ``dtype`` and ``convention`` of the tensors.
    An ``init`` is a scheme spec or a recipe's choice, ``{"recipe": ..., "recipe_params": {...},
    "roles": {...}}`` (:class:`_RecipePlans`): then the bias is the recipe's too, unless ``bias``
    is given in the layer or at the top level.
    Raises :class:`TensorinitError` naming the field, every layer's form checked before any
    limit (:func:`build_networks`); limits raise :class:`LimitExceededError`.
    """
    return build_networks(document, [init], limits=limits, propagation_limits=propagation_limits)[0]


def _build(
    document: Mapping[str, Any], init: object | None, limits: Limits, plimits: PropagationLimits, resolutions: _Resolutions
) -> _Built:
    """One network's form checked and its specs resolved, its own size limits left to the caller (:class:`_Built`)."""
    seed = check_seed(int(raw) if isinstance(raw := document.get("seed", 0), float) and raw.is_integer() else raw)
    dtype, convention = check_dtype(document.get("dtype", "float32")), check_convention(document.get("convention", "torch"))
    batch = _positive_int(document.get("batch", 512), "batch")
    input_variance = _finite(document.get("input_variance", 1.0), "input_variance", inclusive=False)
    spatial_raw = document.get("spatial", [])
    if not isinstance(spatial_raw, list) or len(spatial_raw) > 3:
        raise InvalidParameterError("spatial", spatial_raw, "a list of up to 3 positive integers (the input's spatial shape)")
    spatial = tuple(_positive_int(s, f"spatial[{i}]") for i, s in enumerate(spatial_raw))
    default_act = document.get("activation", "relu")
    default_init = init if init is not None else document.get("init")
    default_bias = document.get("bias", {"scheme": "zeros"})
    default_residual = document.get("residual")
    options = {"seed": seed, "dtype": dtype, "convention": convention, "limits": limits}
    too_deep = None
    if "layers" in document:
        if "depth" in document or "width" in document:
            raise InvalidParameterError("layers", "<layers>", "either layers or depth and width, not both")
        rows = document["layers"]
        if not isinstance(rows, list) or not rows:
            raise InvalidParameterError("layers", rows, "a non-empty list of layer objects")
        if len(rows) > plimits.max_depth:
            too_deep = LimitExceededError("layers", f"<{len(rows)} layers>", "max_propagation_depth", plimits.max_depth)
    else:
        depth = _positive_int(document.get("depth"), "depth")
        width = _positive_int(document.get("width"), "width")
        if depth > plimits.max_depth:
            too_deep = LimitExceededError("depth", depth, "max_propagation_depth", plimits.max_depth)
        rows = [{"width": width}] * min(depth, plimits.max_depth)  # past it, every layer is as the last
    if too_deep is not None:
        resolutions.bound(too_deep, resolutions.budget_of_one)
    pending: list[_Pending] = []
    previous = document.get("input_width")
    for i, row in enumerate(rows):
        resolutions.charge()
        where = f"layers[{i}]"
        if not isinstance(row, Mapping):
            raise InvalidParameterError(where, row, "an object with width and optionally activation, init, bias, kernel, residual")
        unknown = set(row) - {"width", "activation", "init", "bias", "kernel", "residual"}
        if unknown:
            raise InvalidParameterError(
                f"{where}.{sorted(unknown)[0]}", row[sorted(unknown)[0]], "width, activation, init, bias, kernel, residual"
            )
        width = _positive_int(row.get("width"), f"{where}.width")
        if previous is None:
            previous = width
        fan = _positive_int(previous, "input_width" if i == 0 else f"layers[{i - 1}].width")
        act = check_activation(row.get("activation", default_act), f"{where}.activation")
        kernel_raw = row.get("kernel", [])
        if not isinstance(kernel_raw, list) or len(kernel_raw) != len(spatial):
            raise InvalidParameterError(
                f"{where}.kernel", kernel_raw, f"a list of {len(spatial)} positive odd integers (one per spatial axis of 'spatial')"
            )
        kernel = tuple(_positive_int(k, f"{where}.kernel[{j}]", "a positive odd integer") for j, k in enumerate(kernel_raw))
        if any(k % 2 == 0 or k > s for k, s in zip(kernel, spatial, strict=True)):
            raise InvalidParameterError(f"{where}.kernel", kernel_raw, "odd sizes no larger than the spatial size (same padding)")
        residual_raw = row.get("residual", default_residual)
        residual, multiplier, norm = False, 1.0, None
        if residual_raw is not None:
            if not isinstance(residual_raw, Mapping) or set(residual_raw) - {"multiplier", "norm"}:
                raise InvalidParameterError(f"{where}.residual", residual_raw, "null or {multiplier: a number, norm: 'layer' or null}")
            residual = True
            multiplier = _finite(residual_raw.get("multiplier", 1.0), f"{where}.residual.multiplier")
            norm = residual_raw.get("norm")
            if norm is not None and norm not in NORMALIZATIONS:
                raise InvalidParameterError(f"{where}.residual.norm", norm, "null or 'layer'")
            if width != fan:
                raise InvalidParameterError(f"{where}.width", width, f"{fan}: a residual layer keeps the width of its input")
        init_raw = row.get("init", default_init)
        if init_raw is None:
            raise InvalidParameterError(f"{where}.init", None, "a scheme (give init at the top level, per layer, or compare)")
        shape = (width, fan, *kernel) if convention == "torch" else (*kernel, fan, width)
        # A recipe gives the bias too, unless the request names one (an explicit null: no bias).
        bias_raw = row["bias"] if "bias" in row else default_bias if "bias" in document or not _is_recipe(init_raw) else RECIPE_BIAS
        pending.append(_Pending(where, width, act, kernel, residual, multiplier, norm, init_raw, bias_raw, shape))
        previous = width
    plans = _RecipePlans(pending, options)
    layers: list[Layer] | None = []
    for i, row_ in enumerate(pending):
        where = row_.where
        if _is_recipe(row_.init):
            weight = resolutions.recipe(plans, row_.init, f"{where}.init", f"layers.{i}.weight")
        else:
            weight = resolutions.scheme(f"{where}.init", row_.init, row_.shape, f"layers.{i}.weight", options)
        bias = None
        if row_.bias is RECIPE_BIAS:
            bias = resolutions.recipe(plans, row_.init, f"{where}.init", f"layers.{i}.bias")
        elif row_.bias is not None:
            bias = resolutions.scheme(f"{where}.bias", row_.bias, (row_.width,), f"layers.{i}.bias", options)
        if weight is None or (bias is None and row_.bias is not None):
            layers = None  # a limit refused a spec: the form of the rest is still checked
        if layers is not None and weight is not None:
            layers.append(Layer(row_.width, row_.activation, weight, bias, row_.kernel, row_.residual, row_.multiplier, row_.norm))
    network = None if layers is None else Network(tuple(layers), layers[0].in_width, input_variance, spatial, batch, seed)
    return _Built(network, too_deep)


def check_cells(networks: Sequence[Network], limits: PropagationLimits) -> None:
    """The measurement's total size over every compared network, against ``max_propagation_cells``."""
    total = sum(n.cells() for n in networks)
    if total > limits.max_cells:
        raise LimitExceededError(
            "depth", f"<{total} cells: depth × width × batch over the networks>", "max_propagation_cells", limits.max_cells
        )


# -- theory ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Theory:
    """Per layer: forward q_l = E[h_l²] and backward D_l = E[(∂L/∂h_l)²], and the stream's E[x_l²].

    The backward side is kept in logs (``log_input_gradient`` is ln G_0): a deep stack's
    gradient can leave the float range long before its verdict is in doubt.
    """

    forward: tuple[float, ...]
    backward: tuple[float, ...]
    output: tuple[float, ...]
    log_input_gradient: float

    @property
    def input_gradient(self) -> float:
        """G_0 = E[(∂L/∂x_0)²] for a unit-variance output gradient."""
        return _exp(self.log_input_gradient)


def _exp(log_value: float) -> float:
    return math.exp(min(log_value, 709.0)) if log_value < 709.0 else math.inf


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


def theory(network: Network, scale: float = 1.0) -> Theory:
    """The mean-field recursion of the module docstring; ``scale`` multiplies every weight's std."""
    s2 = scale * scale
    v, mean = network.input_variance, 0.0
    qs: list[float] = []
    outs: list[float] = []
    factors: list[tuple[float, float]] = []  # per layer: (ln(β²·E[φ′²]), ln of G_{l−1}/G_l)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for layer in network.layers:
            if layer.norm is not None:
                var = v - mean * mean
                u2, nu = 1.0, (1.0 / var if var > 0 else math.inf)
            else:
                u2, nu = v, 1.0
            q = s2 * layer.sigma_w2 * u2 + layer.bias_square
            m1, m2, d2 = layer.activation.moments(q) if math.isfinite(q) else (math.nan, math.inf, math.nan)
            beta2 = layer.multiplier**2 if layer.residual else 1.0
            if layer.residual:
                # The fluctuations of x_{l−1} and φ(h_l) are uncorrelated (mean field), their means are not.
                v, mean = v + 2.0 * layer.multiplier * mean * m1 + beta2 * m2, mean + layer.multiplier * m1
            else:
                v, mean = m2, m1
            qs.append(q)
            outs.append(v)
            back = beta2 * d2 * s2 * layer.back_w2 * nu
            ratio = (1.0 + back) if layer.residual else back
            factors.append((_log(beta2 * d2), _log(ratio) if not math.isnan(ratio) else math.inf))
    ds = [0.0] * len(qs)
    log_g = 0.0
    for i in range(len(qs) - 1, -1, -1):
        ds[i] = _exp(log_g + factors[i][0])
        log_g += factors[i][1]
    return Theory(tuple(qs), tuple(ds), tuple(outs), log_g)


def _log_gradient_growth(network: Network, scale: float) -> float:
    return theory(network, scale).log_input_gradient


def unit_gain(network: Network) -> float | None:
    """The multiplier on every weight's std that makes the gradient's total growth 1 (G_0 = G_L), if one exists.

    None for a residual network: its per-layer factor 1 + β²·χ is above 1 for every gain but 0.
    """
    if any(la.residual for la in network.layers):
        return None
    if all(la.activation.homogeneous and la.bias_square == 0 for la in network.layers):
        growth = _log_gradient_growth(network, 1.0)
        if not math.isfinite(growth):
            return None
        return math.exp(-growth / (2 * len(network.layers)))  # every layer's factor scales as gain²

    # Root finding runs the recursion some 30 times: past GAIN_SEARCH_LAYERS layers the
    # per-layer factor has settled at its fixed point's, so the first ones decide.
    head = replace(network, layers=network.layers[:GAIN_SEARCH_LAYERS])

    def f(log_scale: float) -> float:
        value = _log_gradient_growth(head, math.exp(log_scale))
        # A dead or overflowing signal still says which side of 1 it is on.
        return 1e6 if math.isnan(value) else min(max(value, -1e6), 1e6)

    # Saturating activations lose the gradient again at large gains: the smallest root is the one meant.
    grid = np.linspace(math.log(1e-3), math.log(1e3), 13)
    values = [f(x) for x in grid]
    for lo, hi, a, b in zip(grid[:-1], grid[1:], values[:-1], values[1:], strict=True):
        if a < 0 <= b:
            try:
                return math.exp(scipy.optimize.brentq(f, lo, hi, xtol=1e-6)) if b > 0 else math.exp(hi)
            except (ValueError, OverflowError, FloatingPointError):
                return None
    return None


def fixed_point(network: Network) -> dict[str, Any] | None:
    """The attracting fixed point q* of a uniform plain stack's map q ↦ σ_w²·E[φ(z)²]_q + σ_b², or None.

    None when layers differ, a layer is residual, or every q is fixed (a homogeneous activation at
    χ = 1) or none is (the map grows without bound). q* = 0 when the signal dies out.
    """
    first = network.layers[0]
    sw2, sb2 = first.sigma_w2, first.bias_square
    uniform = all(
        not la.residual and la.activation == first.activation and la.sigma_w2 == sw2 and la.bias_square == sb2 for la in network.layers
    )
    if not uniform:
        return None

    def gap(q: float) -> float:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            return sw2 * first.activation.moments(q)[1] + sb2 - q

    grid = np.logspace(-8, 8, 161)
    values = np.array([gap(q) for q in grid])
    scale = np.maximum(np.abs(grid), 1e-300)
    if np.all(np.abs(values) <= 1e-12 * scale):
        return None
    for lo, hi, a, b in zip(grid[:-1], grid[1:], values[:-1], values[1:], strict=True):
        if a > 0 >= b:  # above the diagonal below q*, under it above: attracting
            root = float(scipy.optimize.brentq(gap, lo, hi, xtol=1e-14, rtol=1e-12)) if b < 0 else float(hi)
            return {"q": root, "attracting": True}
    if np.all(values < 0):
        return {"q": 0.0, "attracting": True}
    return None


# -- measurement -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """Per layer: the measured mean squares of h_l and of ∂L/∂h_l."""

    forward: tuple[float, ...]
    backward: tuple[float, ...]


class PropagationCancelledError(Exception):
    """The pass was stopped by its ``halt`` event (the client went away)."""


def _served(spec: ResolvedSpec) -> Array:
    # The pass itself runs in a block-pool worker: its tensor's chunks go to the inner pool,
    # as /stats does, or several passes at once would wait on chunks no block worker is free to fill.
    return Tensor(spec).array(executor=inner_executor())


class _InThisThread(Executor):
    """An executor that runs each task at once, in the caller's thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            future.set_exception(err)
        return future


def _weights(layers: Sequence[Layer]) -> Iterator[Array]:
    """Each layer's weight matrix in turn, the next one filled on the inner pool while the caller multiplies by this one.

    The pass runs BLAS on one thread: the core beside it generates the next weight (one inner
    task, its chunks in that task's thread, so it queues nothing more). Only elementwise
    weights are made ahead: orthogonal, sparse and delta-orthogonal ones queue their own
    parts on the inner pool, so they are made in the caller's thread when their turn comes.
    Two weights are alive at once (``measure_bytes``);
    a pass stopped by its halt event leaves at most one weight being made.
    """

    def start(layer: Layer) -> Callable[[], Array]:
        if not isinstance(layer.weight.distribution, ELEMENTWISE):
            return partial(_weight_matrix, layer)
        return inner_executor().submit(_weight_matrix, layer, _IN_THIS_THREAD).result

    pending = [start(layer) for layer in layers[:1]]
    for i in range(len(layers)):
        current = pending.pop()
        pending.extend(start(layer) for layer in layers[i + 1 : i + 2])
        yield current()


_IN_THIS_THREAD = _InThisThread()


def _weight_matrix(layer: Layer, executor: Executor | None = None) -> Array:
    """The served weight as an (out, in·∏kernel) matrix, input channel major, kernel offsets in C order."""
    w = Tensor(layer.weight).array(executor=executor or inner_executor())
    if layer.weight.convention != "torch":  # (*kernel, in, out) → (out, in, *kernel)
        k = len(layer.kernel)
        w = np.moveaxis(np.moveaxis(w, -1, 0), -1, 1) if k else w.T
    return np.ascontiguousarray(w.reshape(layer.width, -1), dtype=np.float32)


def _offsets(kernel: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [tuple(o - k // 2 for o, k in zip(offset, kernel, strict=True)) for offset in itertools.product(*(range(k) for k in kernel))]


def _unfold(x: Array, kernel: tuple[int, ...]) -> Array:
    """(batch, *spatial, c) → (batch·positions, c·∏kernel): circular same-padding patches."""
    if not kernel:
        return x
    axes = tuple(range(1, 1 + len(kernel)))
    shifted = [np.roll(x, shift=tuple(-o for o in off), axis=axes) for off in _offsets(kernel)]
    patches = np.stack(shifted, axis=-1)  # (batch, *spatial, c, K)
    return patches.reshape(-1, x.shape[-1] * len(shifted))


def _fold(grad: Array, shape: tuple[int, ...], kernel: tuple[int, ...]) -> Array:
    """The transpose of :func:`_unfold`: patch gradients summed back onto their positions."""
    if not kernel:
        return grad
    offsets = _offsets(kernel)
    patches = grad.reshape(*shape, len(offsets))
    axes = tuple(range(1, 1 + len(kernel)))
    out = np.zeros(shape)
    for j, off in enumerate(offsets):
        out += np.roll(patches[..., j], shift=off, axis=axes)
    return out


_blas_lock = threading.Lock()
_blas_pinned = False


def _single_threaded_blas() -> None:
    """Pin the process's BLAS to one thread, once (threadpoolctl; OpenBLAS's count is process-wide, not per thread).

    Why: OpenBLAS's worker threads spin while they wait for each other. Passes run in the
    block pool, one per core, and the machine is shared: two BLAS threads per pass then
    oversubscribe the cores and the spinning thread burns the slice its partner needs.
    Measured on the 2 shared cores of docs/benchmarks.md: 256×1024 @ 1024×1024 in float32
    at 9 GFLOP/s with OpenBLAS's 2 threads, 39–50 GFLOP/s with one. Nothing served passes
    through BLAS (see REFERENCE §6), so the count changes no bytes; a context manager
    would not do, as concurrent passes would restore each other's count.
    """
    global _blas_pinned
    with _blas_lock:
        if not _blas_pinned:
            threadpoolctl.threadpool_limits(limits=1, user_api="blas")
            _blas_pinned = True


def _matmul(x: Array, w_t: Array) -> Array:
    """x @ w_t in float32 BLAS on x rescaled to unit RMS, the scale restored in float64."""
    rms = math.sqrt(float(np.mean(np.square(x)))) if x.size else 0.0
    if rms == 0.0 or not math.isfinite(rms):
        return (x.astype(np.float32) @ w_t).astype(np.float64)
    return (np.asarray(x / rms, dtype=np.float32) @ w_t).astype(np.float64) * rms


def _layer_norm(x: Array) -> tuple[Array, Array]:
    mu = x.mean(axis=-1, keepdims=True)
    sigma = np.sqrt(x.var(axis=-1, keepdims=True))
    sigma = np.where(sigma > 0, sigma, 1.0)
    return (x - mu) / sigma, sigma


def measure(network: Network, halt: threading.Event | None = None) -> Measurement:
    """The real pass of the module docstring through the served tensors (BLAS matmuls, float32 on a rescaled signal)."""
    _single_threaded_blas()
    rng = np.random.default_rng([network.seed, 0x70726F70])  # "prop": the batch, apart from any served stream
    shape = (network.batch, *network.spatial)
    x = rng.standard_normal((*shape, network.input_width)) * math.sqrt(network.input_variance)
    out_grad = rng.standard_normal((*shape, network.layers[-1].width))
    kept: list[tuple[Array, Array | None, Array | None]] = []
    forward: list[float] = []
    for layer, w in zip(network.layers, _weights(network.layers), strict=True):
        if halt is not None and halt.is_set():
            raise PropagationCancelledError
        u, sigma = _layer_norm(x) if layer.norm else (x, None)
        h = _matmul(_unfold(u, layer.kernel), w.T).reshape(*shape, layer.width)
        if layer.bias is not None:
            h += _served(layer.bias).astype(np.float64)
        forward.append(float(np.mean(np.square(h))))
        y = layer.activation.phi(h)
        x = x + layer.multiplier * y if layer.residual else y
        kept.append((layer.activation.dphi(h).astype(np.float32), u.astype(np.float32) if layer.norm else None, sigma))
    backward = [0.0] * len(network.layers)
    g = out_grad
    # Backward needs every weight but the first layer's (unless residual), last to first.
    needed = [la for i, la in reversed(list(enumerate(network.layers))) if i > 0 or la.residual]
    back_weights = _weights(needed)
    for i in range(len(network.layers) - 1, -1, -1):
        if halt is not None and halt.is_set():
            raise PropagationCancelledError
        layer = network.layers[i]
        dphi, u32, sigma = kept.pop()
        delta = g * dphi * (layer.multiplier if layer.residual else 1.0)
        backward[i] = float(np.mean(np.square(delta)))
        if i == 0 and not layer.residual:
            break
        w = next(back_weights)
        in_shape = (*shape, layer.in_width)
        gu = _fold(_matmul(delta.reshape(-1, layer.width), w), in_shape, layer.kernel).reshape(in_shape)
        if layer.norm is not None:
            assert u32 is not None
            assert sigma is not None
            u = u32.astype(np.float64)
            gu = (gu - gu.mean(axis=-1, keepdims=True) - u * np.mean(gu * u, axis=-1, keepdims=True)) / sigma
        g = g + gu if layer.residual else gu
    return Measurement(tuple(forward), tuple(backward))


# -- the answer --------------------------------------------------------------------------------


@dataclass
class Result:
    """Theory, measurement (optional) and verdict of one network, JSON-ready through :meth:`to_dict`."""

    network: Network
    theory: Theory
    measurement: Measurement | None
    verdict: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        layers = []
        m = self.measurement
        for i, layer in enumerate(self.network.layers):
            layers.append(
                {
                    "index": i,
                    "width": layer.width,
                    "fan_in": layer.fan_in,
                    "fan_out": layer.fan_out,
                    "activation": layer.activation.to_dict(),
                    "scheme": layer.weight.scheme,
                    "recipe": dict(layer.weight.derivation).get("recipe"),
                    "weight": layer.weight.to_dict(),
                    "bias": None if layer.bias is None else layer.bias.to_dict(),
                    "sigma_w2": layer.sigma_w2,
                    "sigma_b2": layer.bias_square,
                    "forward": {"theory": _json(self.theory.forward[i]), "measured": None if m is None else _json(m.forward[i])},
                    "backward": {"theory": _json(self.theory.backward[i]), "measured": None if m is None else _json(m.backward[i])},
                }
            )
        return {"label": self.label, "layers": layers, "verdict": self.verdict}


def _json(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _log_factor(values: Sequence[float], reverse: bool = False) -> float | None:
    """The geometric mean of consecutive ratios (first to last, or last to first)."""
    if len(values) < 2:
        return None
    a, b = (values[-1], values[0]) if reverse else (values[0], values[-1])
    if a <= 0 or b <= 0 or not math.isfinite(a) or not math.isfinite(b):
        return None
    return math.exp((math.log(b) - math.log(a)) / (len(values) - 1))


def verdict(network: Network, th: Theory) -> dict[str, Any]:
    """``stable``, ``vanishing`` or ``exploding`` from the gradient's total growth, with factors, gain and q*."""
    log_growth = th.log_input_gradient  # ln(G_0 / G_L) with G_L = 1
    band = math.log(STABLE_BAND)
    if math.isnan(log_growth) or log_growth > band:
        kind = "exploding"
    elif log_growth < -band:
        kind = "vanishing"
    else:
        kind = "stable"
    per_layer = math.exp(log_growth / len(network.layers)) if math.isfinite(log_growth) else None
    growth = th.input_gradient
    gain = unit_gain(network)
    return {
        "verdict": kind,
        "gradient_growth": _json(growth),
        "log_gradient_growth": _json(log_growth),
        "gradient_factor_per_layer": per_layer,
        "forward_factor_per_layer": _log_factor(th.forward),
        "gain_for_unit_chi": gain,
        "fixed_point": fixed_point(network),
    }


def propagate(network: Network, *, measured: bool = True, label: str = "", halt: threading.Event | None = None) -> Result:
    """Theory, verdict and (unless ``measured`` is False) the real pass of ``network``."""
    th = theory(network)
    m = measure(network, halt) if measured else None
    return Result(network, th, m, verdict(network, th), label)


def label_of(init: object) -> str:
    """A short label for a scheme spec or a recipe: its name, and its parameters if any."""
    if isinstance(init, str):
        return init
    if _is_recipe(init):
        assert isinstance(init, Mapping)
        params = ", ".join(f"{k}={v}" for k, v in (init.get("recipe_params") or {}).items())
        return f"recipe {init['recipe']}" + (f" ({params})" if params else "")
    if isinstance(init, Mapping):
        params = ", ".join(f"{k}={v}" for k, v in init.items() if k != "scheme")
        return f"{init.get('scheme')}" + (f" ({params})" if params else "")
    return str(init)
