"""Typed errors of the engine.

Every error names the parameter, the value received and what is allowed, so that the
web layer can map it to a problem+json answer in one place without re-wording it::

    TensorinitError                 base of everything the engine raises on bad input
    ├── InvalidParameterError       a known parameter has a value outside what is allowed
    │   ├── InvalidShapeError       a shape or an axis list is malformed
    │   └── MissingParameterError   a required parameter was not given
    ├── UnknownSchemeError          the scheme name (or alias) does not exist
    ├── UnknownRecipeError          the recipe name does not exist
    ├── UnknownParameterError       a parameter that the scheme does not take
    ├── UncoveredTensorsError       manifest tensors that neither the recipe nor a rule covers
    └── LimitExceededError          the request is valid but larger than a configured limit
"""

from __future__ import annotations

from typing import Any


class TensorinitError(ValueError):
    """Base class: a request the engine cannot honour, with the reason spelled out."""

    code = "invalid-request"

    def __init__(self, param: str | None, value: Any, allowed: str, message: str | None = None):
        self.param = param
        self.value = value
        self.allowed = allowed
        if message is None:
            where = f"{param}: " if param else ""
            message = f"{where}got {_show(value)}; allowed: {allowed}"
        self.message = message
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (the value is shortened, never echoed in full)."""
        return {"param": self.param, "value": _show(self.value), "allowed": self.allowed, "message": self.message}


class InvalidParameterError(TensorinitError):
    code = "invalid-parameter"


class InvalidShapeError(InvalidParameterError):
    code = "invalid-shape"


class MissingParameterError(InvalidParameterError):
    code = "missing-parameter"

    def __init__(self, param: str, allowed: str):
        super().__init__(param, None, allowed, f"{param}: required but not given; allowed: {allowed}")


class UnknownSchemeError(TensorinitError):
    code = "unknown-scheme"

    def __init__(self, value: Any, suggestions: list[str], known: list[str]):
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(
            "scheme",
            value,
            "one of " + ", ".join(known),
            f"scheme: unknown scheme {_show(value)}{hint} (see GET /schemes)",
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "suggestions": self.suggestions}


class UnknownParameterError(TensorinitError):
    code = "unknown-parameter"


class UnknownRecipeError(TensorinitError):
    code = "unknown-recipe"

    def __init__(self, value: Any, known: list[str]):
        super().__init__(
            "recipe",
            value,
            "one of " + ", ".join(known),
            f"recipe: unknown recipe {_show(value)}; allowed: {', '.join(known)} (see GET /recipes)",
        )


class UncoveredTensorsError(TensorinitError):
    code = "uncovered-tensors"

    def __init__(self, recipe: str, names: list[str]):
        self.names = names
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        super().__init__(
            "tensors",
            names,
            f'a kind recipe {recipe} covers, or a rule of the request for each (e.g. "rules": {{"{names[0]}": "zeros"}})',
            f"tensors: recipe {recipe} covers neither {shown}, and no rule of the request matches them",
        )


class LimitExceededError(TensorinitError):
    code = "limit-exceeded"

    def __init__(self, param: str, value: Any, limit_name: str, limit: int):
        self.limit_name = limit_name
        self.limit = limit
        super().__init__(
            param,
            value,
            f"at most {limit} ({limit_name})",
            f"{param}: {_show(value)} exceeds the limit {limit_name} = {limit}",
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "limit_name": self.limit_name, "limit": self.limit}


def _show(value: Any, width: int = 80) -> str:
    """repr() cut to a width: errors must never echo a hostile 10 MB value back."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
