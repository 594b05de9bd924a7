"""A Hugging Face checkpoint directory as a plan: every file, its size and its ETag, before any number is drawn.

A checkpoint is (config, seed, dtype, ``max_shard_size``, algorithm). Its tensors are the
resolved specs of the config's architecture in ``save_pretrained`` order (the recipe
``transformers`` makes them; this module takes them as they are). From them alone:

* the shards, planned as huggingface_hub's ``split_state_dict_into_shards_factory``
  plans them (``serialization/_base.py``): greedy in state-dict order, a new shard when
  the next tensor would tip the current one over ``max_shard_size``, a tensor larger
  than the limit alone in its own file; sizes are the tensors' data bytes;
* the file names ``model-00001-of-0000N.safetensors``, or ``model.safetensors`` when
  there is one file;
* each file's safetensors header (``service.safetensors_stream.Plan``), whose metadata
  holds ``"format": "pt"`` (transformers 4.x refuses a file without it) beside our
  canonical specs, so each file's exact size is known;
* ``model.safetensors.index.json`` as ``save_pretrained`` writes it (``indent=2,
  sort_keys=True`` and a newline; ``metadata.total_size`` the sum of the tensors' data
  bytes, ``metadata.total_parameters`` their element count), for a sharded checkpoint;
* ``config.json``, with ``dtype`` set to the checkpoint's dtype.

Identity. A safetensors file's header holds every spec of its tensors and the algorithm,
so the header defines the file's bytes: its ETag is the first 40 hex digits of the
header's sha256 (not 64: huggingface_hub takes a 64-hex ETag for the file's own sha256
and would check it). The JSON files' ETag is their git blob id (sha1 of ``blob <size>\\0``
and the bytes), as the Hub sends for small files. The checkpoint's commit (the Hub
protocol's ``X-Repo-Commit``) is 24 hex digits of the sha256 of its definition followed
by the seed as 16 hex digits: a hash of the definition that also names its seed, so
that a server with no state can read a commit back (:func:`seed_of_commit`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from service.safetensors_stream import Plan, file_order_key

from .algorithms import check_algorithm
from .architectures import checkpoint_specs, config_dtype
from .errors import InvalidParameterError
from .manifest import located
from .schemes import Limits
from .spec import ALGORITHM_VERSION, ResolvedSpec, canonical_json, check_seed
from .streams import Tensor

DEFAULT_MAX_SHARD_SIZE = "5GB"
"""huggingface_hub's default (transformers 5.x writes 50GB by default; 5GB loads in 4.x and 5.x alike)."""

SIZE_UNITS = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3}
"""huggingface_hub's units: powers of ten."""

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
FORMAT_METADATA = {"format": "pt"}

_SIZE_ALLOWED = 'a positive integer of bytes, or a number with a unit KB, MB, GB or TB (powers of 10), e.g. "500MB" or "5GB"'
_COMMIT = re.compile(r"[0-9a-f]{40}")


def parse_size(value: object) -> int:
    """``max_shard_size`` in bytes, read as huggingface_hub's ``parse_size_to_int`` reads it.

    An int is bytes; a string is a number and a unit of the last two characters, "KB",
    "MB", "GB" or "TB" (case-insensitive, powers of ten), ``int(float(number) * unit)``.
    A digit-only string is taken as bytes too (the command line passes strings).
    """
    if isinstance(value, bool):
        raise InvalidParameterError("max_shard_size", value, _SIZE_ALLOWED)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            if len(text) > 100:  # past any disk, and int() refuses over 4300 digits
                raise InvalidParameterError("max_shard_size", value, _SIZE_ALLOWED)
            size = int(text)
        else:
            multiplier = SIZE_UNITS.get(text[-2:].upper())
            try:
                number = float(text[:-2].strip()) if multiplier is not None else math.nan
            except ValueError:
                number = math.nan
            if multiplier is None or not math.isfinite(number):
                raise InvalidParameterError("max_shard_size", value, _SIZE_ALLOWED)
            size = int(number * multiplier)
    else:
        raise InvalidParameterError("max_shard_size", value, _SIZE_ALLOWED)
    if size <= 0:
        raise InvalidParameterError("max_shard_size", value, _SIZE_ALLOWED)
    return size


def shard(specs: Sequence[ResolvedSpec], max_shard_size: int) -> list[list[ResolvedSpec]]:
    """``specs`` (in state-dict order) split as huggingface_hub splits a state dict.

    Greedy in order: a tensor that would tip the current shard over ``max_shard_size``
    starts a new one, and a tensor larger than the limit goes alone into a shard of its
    own, appended at once (the current shard stays open after it, as huggingface_hub does).
    """
    shards: list[list[ResolvedSpec]] = []
    current: list[ResolvedSpec] = []
    size = 0
    for spec in specs:
        nbytes = spec.nbytes
        if nbytes > max_shard_size:
            shards.append([spec])
            continue
        if size + nbytes > max_shard_size:
            shards.append(current)
            current, size = [], 0
        current.append(spec)
        size += nbytes
    if current:
        shards.append(current)
    return shards


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob of ``data``: what the Hub sends as the ETag (and tree oid) of a small file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def specs_metadata(specs: Sequence[ResolvedSpec]) -> str:
    """The canonical JSON of specs in file order: the same text as an ``/init`` file's ``tensorinit`` metadata."""
    dicts = [s.to_dict() for s in specs]
    return canonical_json({"algorithm": dicts[0]["algorithm"], "specs": dicts})


@dataclass(frozen=True)
class CheckpointFile:
    """One file of the directory: its name, bytes or safetensors plan, size and ETag (unquoted)."""

    name: str
    size: int
    etag: str
    specs: tuple[ResolvedSpec, ...] = ()
    plan: Plan | None = None
    content: bytes | None = None


def _safetensors_file(name: str, specs: Sequence[ResolvedSpec]) -> CheckpointFile:
    ordered = sorted(specs, key=lambda s: file_order_key(s.safetensors_dtype, s.name))
    plan = Plan([Tensor(s) for s in ordered], {**FORMAT_METADATA, "tensorinit": specs_metadata(ordered)})
    etag = hashlib.sha256(plan.header).hexdigest()[:40]
    return CheckpointFile(name, plan.size, etag, tuple(ordered), plan)


def _json_file(name: str, value: Any, *, sort_keys: bool) -> CheckpointFile:
    data = (json.dumps(value, indent=2, sort_keys=sort_keys) + "\n").encode()
    return CheckpointFile(name, len(data), git_blob_id(data), content=data)


@dataclass(frozen=True)
class Checkpoint:
    """The plan of a checkpoint directory; nothing in it draws a number."""

    config: Mapping[str, Any]
    seed: int
    dtype: str
    max_shard_size: int
    algorithm: int
    specs: tuple[ResolvedSpec, ...]
    """Every tensor, in state-dict order."""

    @cached_property
    def shards(self) -> tuple[CheckpointFile, ...]:
        """The safetensors files, in order."""
        groups = shard(self.specs, self.max_shard_size)
        if len(groups) == 1:
            return (_safetensors_file(SINGLE_FILE, groups[0]),)
        n = len(groups)
        return tuple(_safetensors_file(f"model-{i:05d}-of-{n:05d}.safetensors", group) for i, group in enumerate(groups, start=1))

    @property
    def total_size(self) -> int:
        """The tensors' data bytes (huggingface_hub's ``total_size``: headers not counted)."""
        return sum(s.nbytes for s in self.specs)

    @property
    def total_parameters(self) -> int:
        return sum(s.numel for s in self.specs)

    @cached_property
    def index(self) -> dict[str, Any] | None:
        """``model.safetensors.index.json``'s content, or None for a single file."""
        if len(self.shards) == 1:
            return None
        weight_map = {spec.name: f.name for f in self.shards for spec in f.specs}
        return {
            "metadata": {"total_parameters": self.total_parameters, "total_size": self.total_size},
            "weight_map": weight_map,
        }

    @cached_property
    def files(self) -> dict[str, CheckpointFile]:
        """Every file of the directory by name: config.json, the index if sharded, the shards."""
        config = {**self.config, "dtype": self.dtype}
        config.pop("torch_dtype", None)
        found = [_json_file(CONFIG_FILE, config, sort_keys=True)]
        if self.index is not None:
            found.append(_json_file(INDEX_FILE, self.index, sort_keys=True))
        found.extend(self.shards)
        return {f.name: f for f in found}

    @cached_property
    def definition(self) -> str:
        """The canonical JSON of what defines every byte of the directory."""
        return canonical_json(
            {
                "config": dict(self.config),
                "seed": self.seed,
                "dtype": self.dtype,
                "max_shard_size": self.max_shard_size,
                "algorithm": self.algorithm,
                "files": {name: f.etag for name, f in self.files.items()},
            }
        )

    @cached_property
    def commit(self) -> str:
        """40 hex digits: the definition's sha256 (24) and the seed (16). See the module docstring."""
        return hashlib.sha256(self.definition.encode()).hexdigest()[:24] + f"{self.seed:016x}"

    def describe(self) -> dict[str, Any]:
        """The plan as JSON: files with sizes and ETags, the index, and every tensor's spec by file."""
        return {
            "seed": self.seed,
            "dtype": self.dtype,
            "max_shard_size": self.max_shard_size,
            "algorithm": self.algorithm,
            "commit": self.commit,
            "total_size": self.total_size,
            "total_parameters": self.total_parameters,
            "files": [
                {
                    "name": f.name,
                    "size": f.size,
                    "etag": f.etag,
                    **({"tensors": [s.to_dict() for s in f.specs]} if f.plan is not None else {}),
                }
                for f in self.files.values()
            ],
            "index": self.index,
            "config": self.config,
        }


def plan_checkpoint(
    config: Mapping[str, Any],
    specs: Sequence[ResolvedSpec],
    *,
    seed: int,
    dtype: str,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    algorithm: int,
) -> Checkpoint:
    """The checkpoint of ``config`` whose tensors are ``specs`` (state-dict order, already resolved for seed, dtype, algorithm)."""
    check_seed(seed)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidParameterError("config", sorted({n for n in names if names.count(n) > 1}), "distinct tensor names")
    if not specs:
        raise InvalidParameterError("config", "<no tensors>", "a config whose model has at least one tensor")
    return Checkpoint(dict(config), seed, dtype, parse_size(max_shard_size), algorithm, tuple(specs))


MAX_CONFIG_DEPTH = 32
"""Objects and lists a config may nest (the config itself is depth 0): real ones nest 3 or 4 (``text_config.rope_scaling``).
The plan echoes the config, and the JSON encoder refuses past about 250 levels."""


def check_finite(config: Mapping[str, Any]) -> None:
    """Refuse a config holding what JSON cannot write back: NaN, ±Infinity, 1e400 read as inf, a lone surrogate; or nested too deep.

    A config is written back as the checkpoint's config.json and hashed into its commit,
    so every number in it must be one JSON can hold, fields the architecture never reads
    included. The error names the first such field: ``rope_theta``, ``rope_scaling.factor``,
    ``layer_types[3]``. Iterative: a deeply nested hostile body must not exhaust the
    recursion limit.
    """
    stack: list[tuple[str, Any, int]] = [("", config, 0)]
    while stack:
        where, item, depth = stack.pop()
        at = where[:200]  # an echo of a hostile path stays short
        refusal: tuple[str, Any, str] | None = None
        if isinstance(item, float) and not math.isfinite(item):
            refusal = (at, item, "a finite number (JSON has no NaN or Infinity; 1e400 is past float64)")
        elif isinstance(item, str) and not _utf8(item):
            refusal = (at, item, "text UTF-8 can encode (no lone surrogate such as \\ud800)")
        elif isinstance(item, Mapping) and (key := next((k for k in item if not _utf8(str(k))), None)) is not None:
            refusal = (f"{at}.keys" if where else "keys", key, "keys UTF-8 can encode (no lone surrogate such as \\ud800)")
        elif isinstance(item, Mapping | list | tuple) and depth >= MAX_CONFIG_DEPTH:
            refusal = (at, "<nested deeper>", f"objects and lists nested at most {MAX_CONFIG_DEPTH} deep")
        if refusal is not None:
            raise located(InvalidParameterError(*refusal), "config")
        if isinstance(item, Mapping):
            stack.extend((f"{where}.{k}" if where else str(k), v, depth + 1) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", v, depth + 1) for i, v in reversed(list(enumerate(item))))


def _utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: JSON's \\ud800 escape reads as a lone surrogate, which no UTF-8 file can hold."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def seed_of_commit(commit: str) -> int | None:
    """The seed a commit names (its last 16 hex digits), or None when ``commit`` is not 40 hex digits."""
    if not _COMMIT.fullmatch(commit):
        return None
    return int(commit[24:], 16)


def checkpoint(
    config: Mapping[str, Any],
    *,
    seed: int = 0,
    dtype: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    algorithm: int | None = None,
    limits: Limits | None = None,
) -> Checkpoint:
    """The checkpoint of a ``config.json``: its architecture's tensors resolved by the recipe ``transformers``, then planned.

    ``dtype`` None takes the config's (``dtype``, else ``torch_dtype``, else float32).
    ``limits`` are checked as each tensor is resolved. Raises a
    :class:`~service.core.errors.TensorinitError` naming what is wrong: an unknown
    ``model_type``, a missing config field, a bad seed, dtype or ``max_shard_size``.
    """
    check_finite(config)
    version = ALGORITHM_VERSION if algorithm is None else check_algorithm(algorithm)
    chosen = config_dtype(config, dtype)
    size = parse_size(max_shard_size)
    specs = checkpoint_specs(config, seed=check_seed(seed), dtype=chosen, algorithm=version, limits=limits)
    return plan_checkpoint(config, specs, seed=seed, dtype=chosen, max_shard_size=size, algorithm=version)
