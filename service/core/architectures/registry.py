"""What every architecture module shares: the registry, the config's fields, the tensor list.

An architecture is a function from a config's fields to the tensors ``save_pretrained``
writes, in its order, each with the rule transformers 5.x initializes it by. A module
registers one per ``model_type`` with :func:`architecture`, giving the fields it reads
and their defaults as transformers' configuration class has them, and the classes
(``config["architectures"][0]``) it knows::

    @architecture("llama", classes=("LlamaForCausalLM", "LlamaModel"), fields={"vocab_size": 32000, ...})
    def _llama(cfg: Config, cls: str) -> list[TensorEntry]: ...

The first class is the model type's usual head, taken when the config names none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidParameterError, LimitExceededError, MissingParameterError, TensorinitError
from ..manifest import located
from ..recipes import Rule


class UnknownArchitectureError(TensorinitError):
    """A ``model_type`` (or an ``architectures`` class) that no architecture module covers."""

    code = "unknown-architecture"


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as ``save_pretrained`` writes it: on-disk name, shape, manifest kind and role, and its init.

    ``kind`` and ``role`` are those of :mod:`service.core.manifest` (``linear``/``weight``,
    ``embedding``/``weight``, ``rms_norm``/``weight``...); ``None`` for a free
    ``nn.Parameter`` (BERT's ``cls.predictions.bias``). ``init`` is the rule of recipe
    ``transformers`` for it: a scheme, its parameters, why, and the padding row it zeroes.

    ``memory`` says where a transformers 5.x model holds the tensor when that is not a
    parameter of the same name (Mixtral's fused experts): ``(parameter name, index)``,
    the on-disk tensor being ``parameter[index]``, where an int picks along an axis (and
    drops it) and a ``(start, stop)`` pair slices it. ``None``: the parameter ``name``.
    """

    name: str
    shape: tuple[int, ...]
    kind: str | None
    role: str | None
    init: Rule = field(compare=False)
    memory: tuple[str, tuple[int | tuple[int, int], ...]] | None = field(default=None, compare=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def manifest(self) -> dict[str, Any]:
        """This tensor as a manifest entry of a recipe request (service.core.manifest)."""
        entry: dict[str, Any] = {"shape": list(self.shape)}
        if self.kind is not None:
            entry["kind"] = self.kind
            entry["role"] = self.role
        return entry


MAX_INTEGER = (1 << 63) - 1
"""The largest integer field a config may hold (torch's int64 sizes)."""


class Config:
    """A config's fields with the architecture's defaults; each read is checked and names the field on error."""

    def __init__(self, raw: Mapping[str, Any], model_type: str, defaults: Mapping[str, Any], aliases: Mapping[str, str]):
        self.raw = raw
        self.model_type = model_type
        self.defaults = defaults
        self.aliases = aliases

    def get(self, name: str) -> Any:
        """The config's value (or that of an alias transformers' attribute_map gives it), else the default."""
        if name in self.raw:
            return self.raw[name]
        for alias, target in self.aliases.items():
            if target == name and alias in self.raw:
                return self.raw[alias]
        if name in self.defaults:
            return self.defaults[name]
        raise located(MissingParameterError(name, f"a field of a {self.model_type} config"), "config")

    def _bad(self, name: str, value: Any, allowed: str) -> TensorinitError:
        return located(InvalidParameterError(name, value, f"{allowed} (a {self.model_type} config field)"), "config")

    def integer(self, name: str, minimum: int = 1) -> int:
        """An integer ≥ ``minimum`` and < 2^63: torch's sizes are int64, and a std computed from one stays a float."""
        value = self.get(name)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INTEGER:
            raise self._bad(name, value, f"an integer ≥ {minimum} and < 2^63")
        return value

    def optional_integer(self, name: str, minimum: int = 0) -> int | None:
        return None if self.get(name) is None else self.integer(name, minimum)

    def flag(self, name: str) -> bool:
        value = self.get(name)
        if not isinstance(value, bool):
            raise self._bad(name, value, "true or false")
        return value

    def number(self, name: str, minimum: float = 0.0) -> float:
        value = self.get(name)
        try:  # an integer past float64 (10^400) is no float: OverflowError
            number = float(value) if not isinstance(value, bool) and isinstance(value, int | float) else math.nan
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or number < minimum:
            raise self._bad(name, value, f"a finite number ≥ {minimum:g}")
        return number

    def string(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            raise self._bad(name, value, "a string")
        return value

    def padding_idx(self, name: str, rows: int) -> int | None:
        """torch ``nn.Embedding(padding_idx=config.pad_token_id)``: None, or an index in [-rows, rows), made non-negative."""
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not -rows <= value < rows:
            raise self._bad(name, value, f"null or an index in [-{rows}, {rows - 1}] (vocab_size {rows}: it is nn.Embedding's padding_idx)")
        return value % rows

    def num_labels(self) -> int:
        """A classifier's labels as PreTrainedConfig counts them: len(id2label), else num_labels, else 2."""
        labels = self.raw.get("id2label")
        if labels is not None:
            if not isinstance(labels, Mapping) or not labels:
                raise self._bad("id2label", labels, "an object {index: label} with at least one label")
            return len(labels)
        return 2 if self.raw.get("num_labels") is None else self.integer("num_labels")

    def divides(self, total_name: str, part_name: str) -> None:
        total, part = self.integer(total_name), self.integer(part_name)
        if total % part:
            raise self._bad(total_name, total, f"a multiple of {part_name} = {part}")

    def std(self) -> float:
        """PreTrainedModel._init_weights' std: ``initializer_range or 0.02``, else ``init_std``, else ``initializer_factor``."""
        if "initializer_range" in self.raw or "initializer_range" in self.defaults:
            return 0.02 if self.get("initializer_range") is None else (self.number("initializer_range") or 0.02)
        if "init_std" in self.raw or "init_std" in self.defaults:
            return self.number("init_std")
        return self.number("initializer_factor")


# -- the rules ------------------------------------------------------------------------


def normal(std: float, why: str, padding: int | None = None) -> Rule:
    """N(0, std²) (zeros when std is 0), with the padding row, if any, set to 0 afterwards."""
    rows = () if padding is None else ((padding, padding + 1, 0.0),)
    pad = "" if padding is None else f"; row {padding} (pad_token_id) 0"
    if std == 0:
        return Rule("zeros", why=f"{why}: std 0, zeros", fill_rows=rows)
    return Rule("normal", {"mean": 0.0, "std": std}, f"{why}: N(0, {std:.6g}²){pad}", rows)


def constant(value: float, why: str) -> Rule:
    if value == 0:
        return Rule("zeros", why=f"{why}: 0")
    if value == 1:
        return Rule("ones", why=f"{why}: 1")
    return Rule("constant", {"value": value}, f"{why}: {value:g}")


MAX_TENSORS = 1 << 16
"""Tensors one config may describe: checked as they are appended, so that a config asking for
10^7 layers is refused after 65536 entries (milliseconds) instead of building them all
(minutes and GBs) before any request limit is read. The largest public models have a few
thousand (Mixtral-8x7B: 995; a 128-expert, 94-layer MoE about 36,000)."""


class Tensors:
    """The tensors of a model, appended in ``state_dict`` order (a module's own parameters, then its children)."""

    def __init__(self) -> None:
        self.entries: list[TensorEntry] = []

    def add(
        self,
        name: str,
        shape: Iterable[int],
        kind: str | None,
        role: str | None,
        init: Rule,
        memory: tuple[str, tuple[int | tuple[int, int], ...]] | None = None,
    ) -> None:
        if len(self.entries) >= MAX_TENSORS:
            raise LimitExceededError("config", f"<more than {MAX_TENSORS} tensors>", "max_checkpoint_tensors", MAX_TENSORS)
        self.entries.append(TensorEntry(name, tuple(shape), kind, role, init, memory))

    def linear(self, name: str, out_features: int, in_features: int, std: float, *, bias: bool, why: str = "Linear") -> None:
        """nn.Linear: weight (out, in) N(0, std²), bias 0."""
        self.add(f"{name}.weight", (out_features, in_features), "linear", "weight", normal(std, f"{why} weight"))
        if bias:
            self.add(f"{name}.bias", (out_features,), "linear", "bias", constant(0.0, f"{why} bias"))

    def conv1d(self, name: str, in_features: int, out_features: int, std: float, why: str = "Conv1D") -> None:
        """transformers' Conv1D (GPT-2): weight stored (in, out), N(0, std²); bias 0."""
        self.add(f"{name}.weight", (in_features, out_features), "linear", "weight", normal(std, f"{why} weight (in, out)"))
        self.add(f"{name}.bias", (out_features,), "linear", "bias", constant(0.0, f"{why} bias"))

    def embedding(self, name: str, rows: int, dim: int, std: float, padding: int | None = None, why: str = "Embedding") -> None:
        self.add(f"{name}.weight", (rows, dim), "embedding", "weight", normal(std, why, padding))

    def norm(self, name: str, dim: int, *, kind: str, weight: float = 1.0, bias: bool = False, why: str = "norm") -> None:
        """A LayerNorm/RMSNorm: weight ``weight`` (1, Gemma's 0, T5's initializer_factor), bias 0."""
        self.add(f"{name}.weight", (dim,), kind, "weight", constant(weight, f"{why} weight"))
        if bias:
            self.add(f"{name}.bias", (dim,), kind, "bias", constant(0.0, f"{why} bias"))


def natural_key(name: str) -> list[tuple[int, int] | tuple[int, str] | tuple[int, str, int]]:
    """transformers' ``dot_natural_key``: the order ``revert_weight_conversion`` sorts a state dict in.

    Split on ``.``; a numeric part sorts as a number before any text; a text part with
    trailing digits sorts by the text, then the number. Hand-written: the engine cannot
    import transformers (core_model_loading.py, ``dot_natural_key``).
    """
    parts: list[tuple[int, int] | tuple[int, str] | tuple[int, str, int]] = []
    for part in name.split("."):
        if part.isdigit():
            parts.append((0, int(part)))
        else:
            text = part.rstrip("0123456789")
            digits = part[len(text) :]
            parts.append((1, text, int(digits)) if digits else (1, text))
    return parts


def saved_order(entries: list[TensorEntry]) -> list[TensorEntry]:
    """The order ``revert_weight_conversion`` gives a model with a conversion mapping: by the in-memory names' natural key.

    Tensors cut from one fused parameter keep the order they were appended in (the sort is stable).
    """
    return sorted(entries, key=lambda e: natural_key(e.memory[0] if e.memory else e.name))


# -- the registry ---------------------------------------------------------------------

Build = Callable[[Config, str], list[TensorEntry]]


@dataclass(frozen=True)
class Architecture:
    model_type: str
    classes: tuple[str, ...]
    fields: Mapping[str, Any]
    aliases: Mapping[str, str]
    build: Build
    source: str

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for GET /models."""
        return {
            "model_type": self.model_type,
            "classes": list(self.classes),
            "default_class": self.classes[0],
            "fields": dict(self.fields),
            "aliases": dict(self.aliases),
            "source": self.source,
        }


ARCHITECTURES: dict[str, Architecture] = {}


def architecture(
    model_type: str, *, classes: tuple[str, ...], fields: Mapping[str, Any], aliases: Mapping[str, str] | None = None, source: str
) -> Callable[[Build], Build]:
    """Register ``model_type``: its classes (the first is the default head), its fields with their defaults."""

    def register(fn: Build) -> Build:
        ARCHITECTURES[model_type] = Architecture(model_type, classes, dict(fields), dict(aliases or {}), fn, source)
        return fn

    return register
