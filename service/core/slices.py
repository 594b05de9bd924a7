"""Slices of a tensor: numpy basic-slice syntax per axis, and where a slice's elements lie in the full tensor.

Under algorithm 2 every element is a function of its flat index in the *full* tensor,
so a tensor-parallel or FSDP rank can ask for its shard alone: the answer's bytes equal
``full[slice]``. A slice is normalized to one ``(start, stop, step)`` per axis, with
``start``/``stop`` clamped as Python's ``slice.indices`` does and ``step ≥ 1``; a slice
that selects every element is no slice (None), so it never changes a whole tensor's ETag.

:class:`Geometry` cuts the sliced tensor's C-order elements into *runs*, stretches that
are contiguous in the full tensor (trailing axes taken whole merge into one run), so
that an elementwise kernel is called once per run and the cost follows the slice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .errors import InvalidParameterError

Slice = tuple[tuple[int, int, int], ...]
SPACE = "\t\n\v\f\r "
"""What may stand around a bound: ASCII white space only (Python's ``\\s`` and ``str.strip`` take other scripts' spaces too)."""
_WS = "[\\t\\n\\v\\f\\r ]*"
_INT = "[+-]?[0-9]+"
ITEM_PATTERN = f"{_WS}({_INT})?{_WS}:{_WS}({_INT})?{_WS}(:{_WS}(\\+?0*[1-9][0-9]*)?{_WS})?"
"""One item of the syntax as a regular expression (ECMA 262 and Python read it alike): step ≥ 1, for the OpenAPI document."""
_PART = re.compile(f"{_WS}({_INT})?{_WS}")
ALLOWED = (
    "numpy basic-slice syntax per axis: 'start:stop[:step]' items separated by commas (e.g. '0:2048,:'), or a list of such items; step ≥ 1"
)


def _bound(text: str, where: str, value: object) -> int | None:
    match = _PART.fullmatch(text)
    if match is None:
        raise InvalidParameterError("slice", value, f"{ALLOWED} ({where}: {text.strip()!r} is not an integer)")
    return int(match.group(1)) if match.group(1) is not None else None


def check_slice(value: object, shape: tuple[int, ...]) -> Slice | None:
    """``value`` ("0:2048,:" or ["0:2048", ":"]) as one normalized (start, stop, step) per axis, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list[Any] = value.split(",") if value.strip(SPACE) else []
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InvalidParameterError("slice", value, ALLOWED)
    if len(items) > len(shape):
        raise InvalidParameterError("slice", value, f"{ALLOWED}; at most one item per axis ({len(shape)} for shape {list(shape)})")
    out: list[tuple[int, int, int]] = []
    for axis, dim in enumerate(shape):
        item = items[axis] if axis < len(items) else ":"
        if not isinstance(item, str):
            raise InvalidParameterError("slice", value, f"{ALLOWED} (item {axis} is not a string)")
        parts = item.split(":")
        if len(parts) not in (2, 3):
            hint = "; for one index i write 'i:i+1'" if len(parts) == 1 else ""
            raise InvalidParameterError("slice", value, f"{ALLOWED} (item {axis}: {item.strip()!r}{hint})")
        start, stop = _bound(parts[0], f"item {axis}", value), _bound(parts[1], f"item {axis}", value)
        step = _bound(parts[2], f"item {axis}", value) if len(parts) == 3 else None
        if step is not None and step < 1:
            raise InvalidParameterError("slice", value, f"{ALLOWED} (item {axis} has step {step})")
        out.append(slice(start, stop, step).indices(dim))
    normalized = tuple(out)
    if all(sl == (0, dim, 1) for sl, dim in zip(normalized, shape, strict=True)):
        return None
    return normalized


def span(start: int, stop: int, step: int) -> int:
    """``len(range(start, stop, step))`` for a normalized item (step ≥ 1), also past 2^63, where len() overflows."""
    return max(0, (stop - start + step - 1) // step)


def sliced_shape(shape: tuple[int, ...], sl: Slice | None) -> tuple[int, ...]:
    """The shape of ``full[sl]``."""
    if sl is None:
        return shape
    return tuple(span(*s) for s in sl)


@dataclass(frozen=True)
class Geometry:
    """Where the elements of ``full[sl]`` lie in the full tensor's flat C order."""

    shape: tuple[int, ...]
    sl: Slice

    @cached_property
    def out_shape(self) -> tuple[int, ...]:
        return sliced_shape(self.shape, self.sl)

    @cached_property
    def _strides(self) -> list[int]:
        return [math.prod(self.shape[k + 1 :]) for k in range(len(self.shape))]

    @cached_property
    def _layout(self) -> tuple[int, tuple[int, ...], int]:
        """(run length, the axes that enumerate runs, full offset added to every run)."""
        shape, sl, out = self.shape, self.sl, self.out_shape
        m = len(shape) - 1
        trailing = 1
        while m >= 0 and sl[m] == (0, shape[m], 1):
            trailing *= shape[m]
            m -= 1
        start, _, step = sl[m]
        if step == 1:
            return out[m] * trailing, tuple(range(m)), start * self._strides[m]
        return trailing, tuple(range(m + 1)), 0

    def run_starts(self, first: int, last: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Full flat offsets of runs [first, last)."""
        _, axes, base = self._layout
        dims = [self.out_shape[a] for a in axes]
        runs = np.arange(first, last, dtype=np.int64)
        offsets = np.full(runs.size, base, dtype=np.int64)
        if axes:
            coords = np.unravel_index(runs, dims)
            for a, c in zip(axes, coords, strict=True):
                start, _, step = self.sl[a]
                offsets += (start + c.astype(np.int64) * step) * self._strides[a]
        return offsets

    def pieces(self, lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
        """(full start, offset into [lo, hi), length) of the contiguous pieces of sliced elements [lo, hi)."""
        if hi <= lo:
            return
        length, _, _ = self._layout
        first, last = lo // length, (hi - 1) // length + 1
        for r, full in zip(range(first, last), self.run_starts(first, last).tolist(), strict=True):
            a, b = max(lo, r * length), min(hi, (r + 1) * length)
            yield full + (a - r * length), a - lo, b - a

    def full_indices(self, lo: int, hi: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Full flat indices of sliced elements [lo, hi)."""
        if hi <= lo:
            return np.empty(0, np.int64)
        length, _, _ = self._layout
        if length > hi - lo:  # few long runs
            idx = np.empty(hi - lo, np.int64)
            for full, at, n in self.pieces(lo, hi):
                idx[at : at + n] = np.arange(full, full + n, dtype=np.int64)
            return idx
        first, last = lo // length, (hi - 1) // length + 1
        grid = self.run_starts(first, last)[:, None] + np.arange(length, dtype=np.int64)[None, :]
        return grid.reshape(-1)[lo - first * length : hi - first * length]
