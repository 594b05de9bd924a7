"""Networks from a request: every layer's form checked, its tensors resolved, the limits checked before any work.

A network is a stack of layers ``h_l = W_l·u_l + b_l``, ``x_l = φ(h_l)``, or with a residual
connection ``x_l = x_{l−1} + β·φ(h_l)`` (the package docstring); :func:`build_networks` makes
one per compared init from a ``/propagation`` body, wrong before too large.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from ..costs import construction_flops
from ..errors import InvalidParameterError, LimitExceededError, TensorinitError, UncoveredTensorsError
from ..fans import check_convention
from ..recipes import plan_recipe
from ..schemes import STATS_BOUND, Limits, check_dtype, resolve
from ..spec import MATERIALIZED, DeltaOrthogonal, ResolvedSpec, check_seed
from ..stats import theory as distribution_theory
from .activations import ACTIVATIONS, Activation

NORMALIZATIONS = ("layer",)


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
        return th.std * th.std + th.mean * th.mean

    @cached_property
    def sigma_w2(self) -> float:
        """σ_w² = fan_in·E[W²], the forward factor."""
        return self.fan_in * self.weight_square

    @cached_property
    def back_w2(self) -> float:
        """fan_out·E[W²], the backward factor."""
        return self.fan_out * self.weight_square

    def weight_bytes(self) -> int:
        """A bound on the bytes of the weight as the measurement makes it (:meth:`Network.measure_bytes`).

        The served tensor (its dtype's size an element), and its float32 matrix unless the served
        one is that already (float32 in torch's layout); an orthogonal or sparse matrix is built
        in float64 first (8 more, and 16 for the QR's workspace), a delta-orthogonal one's (in, out) too.
        """
        n = self.fan_in * self.width
        itemsize = self.weight.np_dtype.itemsize
        per = itemsize + (0 if itemsize == 4 and self.weight.convention == "torch" else 4)
        dist = self.weight.distribution
        if isinstance(dist, MATERIALIZED):
            return n * (per + 24)
        if isinstance(dist, DeltaOrthogonal):
            return n * per + self.in_width * self.width * 24
        return n * per

    def weight_flops(self) -> int:
        """The operations that make the weight once (:func:`~service.core.costs.construction_flops`)."""
        return construction_flops(self.weight)

    @cached_property
    def bias_square(self) -> float:
        """σ_b² = E[b²] (0 without a bias)."""
        if self.bias is None:
            return 0.0
        th = distribution_theory(self.bias)
        return th.std * th.std + th.mean * th.mean


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
        """A bound on the measurement's memory, in bytes (issue 17: checked against ``max_propagation_bytes``).

        Per element of the widest signal (width × positions × batch) 160 bytes: the float64
        signal, pre-activation, activation, gradient and their temporaries, and the float32
        copies a matmul makes, with what the allocator keeps of them; a convolution's patches
        add 24 per kernel element (each shifted copy, their stack, its float32 copy). Two
        weights alive at once (the next is made ahead; :meth:`Layer.weight_bytes`), the 4-byte
        derivative kept per cell for the backward pass (a request adds :data:`MEASURE_OVERHEAD`). Checked
        against the process's peak RSS in docs/benchmarks.md (``python -m bench.costliest``).
        """
        widest = max([self.input_width, *(la.width for la in self.layers)])
        kernel = max((math.prod(la.kernel) for la in self.layers if la.kernel), default=0)
        live = widest * self.positions * self.batch * (160 + 24 * kernel)
        weights = 2 * max((la.weight_bytes() for la in self.layers), default=0)
        return self.cells() * 4 + live + weights

    def measure_flops(self) -> int:
        """The measurement's work in operations (issue 17: against ``max_propagation_flops``; units of :mod:`service.core.costs`).

        Per layer and pass (forward; backward too for every layer but a plain first one, whose
        weight is made again): the matmul, 2 × batch × positions × fan_in × width, and making the
        weight (:func:`~service.core.costs.construction_flops`: its elements drawn, an orthogonal
        matrix's QR); and the elementwise work, :data:`CELL_FLOPS` per cell (float64 activations,
        their derivatives, the means; three under a layer norm, its statistics forward and back) and a convolution's patches, :data:`PATCH_FLOPS`
        per element (copies: shifted, stacked, cast, and summed back in the backward pass).
        """
        total = 0
        for i, la in enumerate(self.layers):
            passes = 2 if i > 0 or la.residual else 1
            matmul = 2 * self.batch * self.positions * la.fan_in * la.width
            total += passes * (matmul + la.weight_flops())
            patches = la.fan_in if la.kernel else 0
            total += (CELL_FLOPS * la.width * (3 if la.norm else 1) + PATCH_FLOPS * patches) * self.positions * self.batch
        return total


MEASURE_OVERHEAD = 64 << 20
"""Bytes a request's measurement holds whatever its size: small arrays, the answer, the allocator's arenas."""
CELL_FLOPS = 2048
"""Operations per cell of the measurement's elementwise work: 230–460 ns a cell (tanh; gelu under a
layer norm) on the 2 shared, busy cores of docs/benchmarks.md, as long as ~2000 float32 operations there."""
PATCH_FLOPS = 1024
"""Operations per element of a convolution's patches (copies: shifted, stacked, cast, summed back): half a cell."""


@dataclass(frozen=True)
class PropagationLimits:
    """Limits of a propagation request (checked before any work)."""

    max_depth: int = 1000
    max_width_batch: int = 1 << 20
    max_cells: int = 1 << 26
    max_compare: int = 8
    max_bytes: int = 1 << 30
    max_flops: int = 150 * 10**9


def _positive_int(value: object, where: str, allowed: str = "an integer ≥ 1") -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 20.0 is the integer 20
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterError(where, value, allowed)
    return value


def _finite(value: object, where: str, *, low: float = 0.0, inclusive: bool = True) -> float:
    """A number in (or from) ``low`` to :data:`~service.core.schemes.STATS_BOUND`.

    The bound is the tensors' own (``check_representable``): the theory and the measurement
    square these numbers in float64, and past 1e150 a square overflows (issue 17: a residual
    multiplier of 1e200, an elu alpha of 1e308 answered 500).
    """
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not (value >= low if inclusive else value > low) or not value <= STATS_BOUND:  # type: ignore[operator]
        raise InvalidParameterError(where, value, f"a finite number {'≥' if inclusive else '>'} {low:g} and ≤ {STATS_BOUND:g}")
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
        check_cost(networks, plimits)
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


def check_cost(networks: Sequence[Network], limits: PropagationLimits) -> None:
    """The measurement's memory and work over every compared network, against ``max_propagation_bytes`` and ``_flops``.

    Summed over the networks: the route runs them side by side. The theory alone (``measure``
    false) costs neither: it is bounded by ``max_propagation_depth`` and ``max_propagation_compare``.
    """
    nbytes = sum(n.measure_bytes() for n in networks) + MEASURE_OVERHEAD
    if nbytes > limits.max_bytes:
        value = f"<{nbytes} bytes: the measurement's memory over the networks (false: the theory alone)>"
        raise LimitExceededError("measure", value, "max_propagation_bytes", limits.max_bytes)
    flops = sum(n.measure_flops() for n in networks)
    if flops > limits.max_flops:
        value = f"<{flops} operations: the measurement's matmuls and weights over the networks (false: the theory alone)>"
        raise LimitExceededError("measure", value, "max_propagation_flops", limits.max_flops)


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
