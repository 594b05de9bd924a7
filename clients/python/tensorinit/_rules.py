"""(glob pattern → spec) rules that turn a model's parameter names into one batch request.

Rules are ordered and the first match wins, like a ``.gitignore`` read top-down, so a
specific pattern goes before a general one (``"head.weight"`` before ``"*.weight"``).
Patterns are case-sensitive ``fnmatch`` globs on the full dotted name, and ``*`` crosses
dots (``"*.bias"`` matches ``"encoder.layers.0.bias"``). A spec is a scheme name, a
mapping of request fields without ``shape`` (``{"scheme": "normal", "std": 0.02}``), or
None to leave matching names alone. A name that no rule matches is an error that names it:
silently skipping a parameter is how models train from garbage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from ._errors import NoMatchingRuleError

Spec = str | Mapping[str, Any] | None
Rules = Mapping[str, Spec] | Iterable[tuple[str, Spec]]


def normalize(rules: Rules) -> list[tuple[str, dict[str, Any] | None]]:
    """Rules as an ordered list of (pattern, request fields or None)."""
    items = rules.items() if isinstance(rules, Mapping) else rules
    out: list[tuple[str, dict[str, Any] | None]] = []
    for pattern, spec in items:
        if spec is None:
            out.append((pattern, None))
            continue
        fields = {"scheme": spec} if isinstance(spec, str) else dict(spec)
        if "scheme" not in fields:
            raise ValueError(f"rule {pattern!r}: a spec needs a 'scheme'; got {fields!r}")
        if "shape" in fields:
            raise ValueError(f"rule {pattern!r}: a spec takes no 'shape' (it comes from the parameter); got {fields!r}")
        if "name" in fields:
            raise ValueError(f"rule {pattern!r}: a spec takes no 'name' (it is the parameter's name); got {fields!r}")
        out.append((pattern, fields))
    return out


def match(name: str, rules: list[tuple[str, dict[str, Any] | None]]) -> dict[str, Any] | None:
    """The first matching rule's fields (None: skip the name); raises if nothing matches."""
    for pattern, fields in rules:
        if fnmatchcase(name, pattern):
            return fields
    raise NoMatchingRuleError(name, [p for p, _ in rules])


def batch(
    shapes: Mapping[str, Sequence[int]],
    rules: Rules,
    dtypes: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The ``tensors`` of a batch request: one entry per name that a rule does not skip.

    ``dtypes`` gives a per-name dtype used unless the rule itself names one.
    """
    normalized = normalize(rules)
    tensors: dict[str, dict[str, Any]] = {}
    for name, shape in shapes.items():
        fields = match(name, normalized)
        if fields is None:
            continue
        entry = {**fields, "shape": [int(d) for d in shape]}
        if dtypes and name in dtypes and "dtype" not in fields:
            entry["dtype"] = dtypes[name]
        tensors[name] = entry
    return tensors
