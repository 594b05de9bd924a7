"""Conditional and partial requests (RFC 9110 §13, §14): Range, If-Range, If-None-Match.

Choices, all allowed by the RFC:

* one range only: a ``Range`` with several ranges is ignored and the whole file is
  served (200), because multipart/byteranges buys clients nothing here;
* a malformed ``Range`` (or another unit) is ignored (200); a well-formed one that
  selects nothing (first byte beyond the end, or ``bytes=-0``) is 416;
* ``If-Range`` must be our strong ETag, exactly; anything else (a weak tag, a date:
  we send no Last-Modified) means "send the whole file";
* ``If-None-Match`` uses the weak comparison (``W/`` ignored), ``*`` matches.
"""

from __future__ import annotations

import re

_UNIT = re.compile(r"\s*bytes\s*=(.*)", re.IGNORECASE | re.DOTALL)
_SPEC = re.compile(r"(\d+)-(\d*)|-(\d+)")
_TAG = re.compile(r'(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")')


class RangeNotSatisfiableError(Exception):
    """A syntactically valid range that selects no byte of a representation of ``size`` bytes."""

    def __init__(self, header: str, size: int):
        super().__init__(f"Range {header!r} selects no byte of the {size} bytes")
        self.header = header
        self.size = size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range [start, stop) that ``header`` asks of ``size`` bytes, or None for the whole."""
    if header is None:
        return None
    unit = _UNIT.fullmatch(header)
    if unit is None:
        return None
    specs = [s.strip() for s in unit.group(1).split(",") if s.strip()]
    if len(specs) != 1:
        return None
    m = _SPEC.fullmatch(specs[0])
    if m is None:
        return None
    first, last, suffix = m.groups()
    if suffix is not None:
        n = _int(suffix)
        if n == 0 or size == 0:
            raise RangeNotSatisfiableError(header, size)
        return max(0, size - n), size
    start = _int(first)
    if last and _int(last) < start:
        return None  # invalid byte-range-spec: the header is ignored
    if start >= size:
        raise RangeNotSatisfiableError(header, size)
    return start, size if not last else min(_int(last) + 1, size)


def _int(digits: str) -> int:
    """A run of digits as a number; past 19 significant digits (beyond any size) 10^20 stands for it.

    (int() refuses strings of over 4300 digits, and a header may hold that many.)
    """
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 19 else 10**20


def if_range_allows(header: str | None, etag: str) -> bool:
    """Whether a Range may be honoured: no If-Range, or If-Range equal to our strong ETag."""
    return header is None or header.strip() == etag


def none_match(header: str | None, etag: str) -> bool:
    """Whether If-None-Match matches ``etag`` (weak comparison; ``*`` matches anything)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(m.group(1) == etag for m in _TAG.finditer(header))
