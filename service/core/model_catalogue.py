"""The catalogue of model configs: real public ``config.json`` files by name, plus a directory's own.

The built-in entries are the configurations of public Hugging Face repositories, named
like those repositories in lower case (``llama-3.2-1b`` for ``meta-llama/Llama-3.2-1B``),
one ``NAME.json`` in ``service/core/catalogue/``; their numbers (vocabulary, widths, depths, heads,
key/value heads, rope parameters, tying, dtype) are the public configs' own. A
deployment adds its own with a directory of ``NAME.json`` files (the setting
``TENSORINIT_MODELS_DIR``): they join the built-in ones, and replace one of the same
name. Every replica reads the same files, so what a name means needs no shared state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import TensorinitError

BUILTIN_DIR = Path(__file__).parent / "catalogue"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
"""A model name: a Hub repository name's characters (it is one, under ``tensorinit/``)."""


class UnknownModelError(TensorinitError):
    """A model name the catalogue does not hold."""

    def __init__(self, value: Any, known: list[str]):
        super().__init__("model", value, f"one of {', '.join(known)}", f"model: no config named {str(value)[:100]!r}")


def _read(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JSON config ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ValueError(f"{path}: a config.json must be a JSON object with a model_type")
    return config


def load(directory: str | Path | None = None) -> Mapping[str, Mapping[str, Any]]:
    """The built-in configs and those of ``directory`` (``NAME.json``; its own replace built-in ones of the same name).

    Raises ValueError naming the file when one is not a JSON object with a ``model_type``,
    or when ``directory`` is not a directory, so a bad deployment fails at start.
    """
    found: dict[str, dict[str, Any]] = {}
    sources = [BUILTIN_DIR]
    if directory:
        extra = Path(directory)
        if not extra.is_dir():
            raise ValueError(f"models directory {extra} is not a directory")
        sources.append(extra)
    for source in sources:
        for path in sorted(source.glob("*.json")):
            if NAME.fullmatch(path.stem):
                found[path.stem] = _read(path)
    return MappingProxyType(dict(sorted(found.items())))


def lookup(catalogue: Mapping[str, Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    """The config named ``name`` (exact, else case-insensitive, as Hub repository names are)."""
    if name in catalogue:
        return catalogue[name]
    folded = {key.lower(): key for key in catalogue}
    if name.lower() in folded:
        return catalogue[folded[name.lower()]]
    raise UnknownModelError(name, list(catalogue))
