"""The typed face of ``POST /propagation``: frozen dataclasses mirroring its JSON.

Parsing is lenient: keys the server adds later are ignored, and the untouched JSON stays
in ``raw``. The formulas behind each number: docs/api.md, "POST /propagation".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._plan import Spec


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Moment:
    """One second moment, as mean-field theory predicts it and as the batch measured it (None when not measured)."""

    theory: float | None
    measured: float | None

    @classmethod
    def from_json(cls, d: Any) -> Moment:
        d = d if isinstance(d, dict) else {}
        return cls(_float(d.get("theory")), _float(d.get("measured")))


@dataclass(frozen=True)
class Layer:
    """One layer: its fans, activation, resolved weight and bias, σ_w² and σ_b², and the forward and backward moments.

    ``forward``: E[h_l²] of the pre-activation; ``backward``: E[(∂L/∂h_l)²] for a
    unit-variance output gradient.
    """

    index: int
    width: int
    fan_in: int | None
    fan_out: int | None
    activation: dict[str, Any]
    scheme: str | None
    recipe: str | None
    weight: Spec | None
    bias: Spec | None
    sigma_w2: float | None
    sigma_b2: float | None
    forward: Moment
    backward: Moment

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Layer:
        weight, bias = d.get("weight"), d.get("bias")
        return cls(
            index=int(d.get("index", 0)),
            width=int(d.get("width", 0)),
            fan_in=None if d.get("fan_in") is None else int(d["fan_in"]),
            fan_out=None if d.get("fan_out") is None else int(d["fan_out"]),
            activation=dict(d.get("activation") or {}),
            scheme=d.get("scheme"),
            recipe=d.get("recipe"),
            weight=Spec.from_json(weight) if isinstance(weight, dict) else None,
            bias=Spec.from_json(bias) if isinstance(bias, dict) else None,
            sigma_w2=_float(d.get("sigma_w2")),
            sigma_b2=_float(d.get("sigma_b2")),
            forward=Moment.from_json(d.get("forward")),
            backward=Moment.from_json(d.get("backward")),
        )


@dataclass(frozen=True)
class Verdict:
    """``stable`` when the gradient's growth from output to input is within [1/2, 2], else ``vanishing`` or ``exploding``.

    ``gain_for_unit_chi``: the multiplier on every weight's std that makes that growth 1;
    ``fixed_point``: ``{"q", "attracting"}`` of the forward map, or None.
    """

    verdict: str
    gradient_growth: float | None
    log_gradient_growth: float | None
    gradient_factor_per_layer: float | None
    forward_factor_per_layer: float | None
    gain_for_unit_chi: float | None
    fixed_point: dict[str, Any] | None

    @classmethod
    def from_json(cls, d: Any) -> Verdict:
        d = d if isinstance(d, dict) else {}
        fixed = d.get("fixed_point")
        return cls(
            verdict=str(d.get("verdict", "")),
            gradient_growth=_float(d.get("gradient_growth")),
            log_gradient_growth=_float(d.get("log_gradient_growth")),
            gradient_factor_per_layer=_float(d.get("gradient_factor_per_layer")),
            forward_factor_per_layer=_float(d.get("forward_factor_per_layer")),
            gain_for_unit_chi=_float(d.get("gain_for_unit_chi")),
            fixed_point=dict(fixed) if isinstance(fixed, dict) else None,
        )


@dataclass(frozen=True)
class Network:
    """One network of the request (``init``, then each ``compare`` entry): its label, layers and verdict."""

    label: str
    layers: tuple[Layer, ...]
    verdict: Verdict

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Network:
        return cls(str(d.get("label", "")), tuple(Layer.from_json(x) for x in d.get("layers") or ()), Verdict.from_json(d.get("verdict")))


@dataclass(frozen=True)
class Propagation:
    """The answer of ``POST /propagation``: the first network's layers and verdict, and every network compared.

    ``verdict`` is the first network's word (``stable``, ``vanishing``, ``exploding``),
    ``summary`` its numbers; ``networks`` holds all of them, the first included.
    """

    label: str
    verdict: str
    summary: Verdict
    layers: tuple[Layer, ...]
    networks: tuple[Network, ...]
    input: dict[str, Any]
    measured: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Propagation:
        return cls(
            label=str(d.get("label", "")),
            verdict=str(d.get("verdict", "")),
            summary=Verdict.from_json(d.get("summary")),
            layers=tuple(Layer.from_json(x) for x in d.get("layers") or ()),
            networks=tuple(Network.from_json(n) for n in d.get("networks") or ()),
            input=dict(d.get("input") or {}),
            measured=bool(d.get("measured", False)),
            raw=d,
        )

    def __getitem__(self, label: str) -> Network:
        """A network by its label (``"he_normal"``, a compared recipe's name...)."""
        for network in self.networks:
            if network.label == label:
                return network
        raise KeyError(label)
