"""The typed face of ``/stats``: frozen dataclasses mirroring its JSON.

Parsing is lenient on purpose: keys the server adds later are ignored, so an older
client keeps working against a newer server; the untouched JSON stays in ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Histogram:
    """Counts between fixed ``edges`` (fixed by the spec, never by the data), plus what fell outside."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    below: int
    above: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Histogram:
        return cls(
            tuple(map(float, d.get("edges", ()))), tuple(map(int, d.get("counts", ()))), int(d.get("below", 0)), int(d.get("above", 0))
        )


@dataclass(frozen=True)
class KSTest:
    """Kolmogorov–Smirnov statistic against the exact CDF, on every ``stride``-th element."""

    statistic: float
    pvalue: float
    sample_size: int
    stride: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KSTest:
        return cls(float(d["statistic"]), float(d["pvalue"]), int(d["sample_size"]), int(d.get("stride", 1)))


@dataclass(frozen=True)
class Empirical:
    """What the served numbers show; moments are None for an empty tensor."""

    count: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    histogram: Histogram | None
    ks: KSTest | None
    orthogonality_error: float | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Empirical:
        hist, ks = d.get("histogram"), d.get("ks")
        return cls(
            count=int(d.get("count", 0)),
            mean=_float(d.get("mean")),
            std=_float(d.get("std")),
            min=_float(d.get("min")),
            max=_float(d.get("max")),
            histogram=Histogram.from_json(hist) if isinstance(hist, dict) else None,
            ks=KSTest.from_json(ks) if isinstance(ks, dict) else None,
            orthogonality_error=_float(d.get("orthogonality_error")),
        )


@dataclass(frozen=True)
class Theory:
    """What the resolved distribution implies; an unbounded side of the support is None."""

    mean: float | None
    std: float | None
    support: tuple[float | None, float | None]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Theory:
        low, high = [*(d.get("support") or []), None, None][:2]
        return cls(_float(d.get("mean")), _float(d.get("std")), (_float(low), _float(high)))


@dataclass(frozen=True)
class TensorStats:
    """One tensor: its resolved spec (every number explicit), the data's sha256, practice and theory."""

    name: str
    spec: dict[str, Any]
    sha256: str
    empirical: Empirical
    theory: Theory

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> TensorStats:
        empirical = d.get("empirical") or {}
        sha = d.get("sha256") or empirical.get("sha256") or ""
        theory = d.get("theory") or empirical.get("theory") or {}
        return cls(name, dict(d.get("spec") or {}), str(sha), Empirical.from_json(empirical), Theory.from_json(theory))


@dataclass(frozen=True)
class Stats:
    """The answer of ``/stats``: the ETag ``/init`` would give, and each tensor's statistics."""

    algorithm: int
    etag: str | None
    tensors: dict[str, TensorStats]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stats:
        tensors = d.get("tensors") or {}
        return cls(
            algorithm=int(d.get("algorithm", 0)),
            etag=None if d.get("etag") is None else str(d["etag"]),
            tensors={name: TensorStats.from_json(name, t) for name, t in tensors.items()},
            raw=d,
        )

    def __getitem__(self, name: str) -> TensorStats:
        return self.tensors[name]

    @property
    def sha256(self) -> dict[str, str]:
        """Each tensor's sha256, the reference ``verify=True`` checks the body against."""
        return {name: t.sha256 for name, t in self.tensors.items()}
