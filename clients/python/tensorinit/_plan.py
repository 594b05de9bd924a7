"""The typed face of ``POST /plan``: frozen dataclasses mirroring its JSON, as :mod:`tensorinit._stats` does for ``/stats``.

Parsing is lenient: keys the server adds later are ignored, and the untouched JSON stays
in ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Spec:
    """One resolved tensor: every number explicit; the spec alone defines its bytes.

    ``fan_in``, ``fan_out`` and ``gain`` are None where the scheme uses none;
    ``derivation`` says where each number came from (``fan_rule``, ``mode``, and for a
    recipe ``recipe_rule``); ``distribution`` holds its ``kind`` and parameters.
    """

    name: str
    scheme: str
    shape: tuple[int, ...]
    dtype: str
    seed: int
    convention: str
    fan_in: int | None
    fan_out: int | None
    gain: float | None
    distribution: dict[str, Any]
    derivation: dict[str, Any]
    algorithm: int
    slice: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Spec:
        return cls(
            name=str(d.get("name", "")),
            scheme=str(d.get("scheme", "")),
            shape=tuple(int(n) for n in d.get("shape") or ()),
            dtype=str(d.get("dtype", "")),
            seed=int(d.get("seed", 0)),
            convention=str(d.get("convention", "")),
            fan_in=_int(d.get("fan_in")),
            fan_out=_int(d.get("fan_out")),
            gain=_float(d.get("gain")),
            distribution=dict(d.get("distribution") or {}),
            derivation=dict(d.get("derivation") or {}),
            algorithm=int(d.get("algorithm", 0)),
            slice=d.get("slice"),
            raw=d,
        )

    @property
    def std(self) -> float | None:
        """The distribution's std where it states one (normal), else the derivation's target std."""
        return _float(self.distribution.get("std", self.derivation.get("target_std")))

    @property
    def rule(self) -> str | None:
        """The recipe's reason for this tensor (``derivation["recipe_rule"]``), None outside a recipe."""
        value = self.derivation.get("recipe_rule")
        return None if value is None else str(value)


@dataclass(frozen=True)
class Plan:
    """The answer of ``POST /plan``: what ``/init`` would serve for a recipe request, nothing generated.

    ``specs`` in the manifest's order, by name; ``skipped``: the names a null rule left alone.
    """

    recipe: str
    algorithm: int
    etag: str | None
    bytes: int
    elements: int
    specs: dict[str, Spec]
    skipped: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        specs = [Spec.from_json(s) for s in d.get("specs") or ()]
        return cls(
            recipe=str(d.get("recipe", "")),
            algorithm=int(d.get("algorithm", 0)),
            etag=None if d.get("etag") is None else str(d["etag"]),
            bytes=int(d.get("bytes", 0)),
            elements=int(d.get("elements", 0)),
            specs={s.name: s for s in specs},
            skipped=tuple(str(n) for n in d.get("skipped") or ()),
            raw=d,
        )

    def __getitem__(self, name: str) -> Spec:
        return self.specs[name]
