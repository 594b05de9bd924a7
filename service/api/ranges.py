"""Conditional and partial requests (RFC 9110 §13, §14): Range, If-Range, If-None-Match.

Choices, all allowed by the RFC (§14.2 lets a server ignore *or reject* a Range it will
not honour; this service rejects, so that a client never mistakes a whole file for the
part it asked for):

* a ``Range`` in another unit than ``bytes`` is ignored (200, the whole file): RFC 9110
  §14.2 says a server MUST ignore range units it does not understand;
* a ``bytes`` Range must be one range, ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n``,
  with numbers that fit in 64 bits; anything else (malformed, reversed ``a > b``,
  several ranges, a number beyond 2^64 - 1), and a header that is not ``unit=...`` at
  all, is a :class:`RangeError`, answered 416;
* a well-formed one that selects nothing (first byte beyond the end, or ``bytes=-0``)
  is also 416 (:class:`RangeNotSatisfiableError`);
* ``If-Range`` must be our strong ETag, exactly; anything else (a weak tag, a date: we
  send no Last-Modified; garbage) is a validator that does not match, so the whole
  file is sent (200), as §13.1.5 prescribes for a failed If-Range;
* ``If-None-Match`` is ``*`` or a list of entity-tags (weak comparison, ``W/``
  ignored); anything else is an :class:`InvalidHeaderError`, answered 400.

A malformed Range is refused whatever If-Range says (its syntax does not depend on the
representation); whether a well-formed range is satisfiable is only judged when
If-Range lets the range apply.
"""

from __future__ import annotations

import re

_UNIT = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=(.*)", re.DOTALL)
_SPEC = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)")  # ASCII digits: \d would also take other scripts
_OPAQUE = r'"[\x21\x23-\x7e\x80-\xff]*"'
_TAG = re.compile(rf"(?:W/)?({_OPAQUE})")
_GAP = re.compile(r"[ \t,]*")
_MAX_POSITION = (1 << 64) - 1
ALLOWED = "one range: bytes=first-last, bytes=first- or bytes=-suffix_length (decimal byte positions, first <= last)"


class RangeError(Exception):
    """A ``bytes`` Range this service does not serve: malformed, reversed, several ranges, overflowing."""

    def __init__(self, header: str, reason: str):
        super().__init__(f"Range {header[:100]!r}: {reason}")
        self.header = header
        self.reason = reason


class RangeNotSatisfiableError(RangeError):
    """A syntactically valid range that selects no byte of a representation of ``size`` bytes."""

    def __init__(self, header: str, size: int):
        super().__init__(header, f"selects no byte of the {size} bytes")
        self.size = size


class InvalidHeaderError(Exception):
    """A conditional header that is not valid HTTP syntax."""

    def __init__(self, name: str, header: str, allowed: str):
        super().__init__(f"{name} {header[:100]!r} is not valid; allowed: {allowed}")
        self.name = name
        self.header = header
        self.allowed = allowed


def check_range(header: str | None) -> tuple[int | None, int | None] | None:
    """The (first, last) or (None, suffix_length) a ``bytes`` Range asks for; None when absent or another unit.

    Raises :class:`RangeError` for a ``bytes`` Range that is not exactly one valid range.
    """
    if header is None:
        return None
    unit = _UNIT.fullmatch(header)
    if unit is None:
        raise RangeError(header, "not of the form unit=ranges")
    if unit.group(1).lower() != "bytes":
        return None  # RFC 9110 §14.2: an unknown range unit MUST be ignored
    # Empty list elements are allowed (RFC 9110 §5.6.1), so "bytes=0-9," is one range.
    specs = [s.strip() for s in unit.group(2).split(",") if s.strip()]
    if not specs:
        raise RangeError(header, "no range given")
    if len(specs) > 1:
        raise RangeError(header, f"{len(specs)} ranges given; this service serves a single range")
    m = _SPEC.fullmatch(specs[0])
    if m is None:
        raise RangeError(header, f"{specs[0][:40]!r} is not a byte range")
    first, last, suffix = m.groups()
    if suffix is not None:
        return None, _position(header, suffix)
    start = _position(header, first)
    end = _position(header, last) if last else None
    if end is not None and end < start:
        raise RangeError(header, f"reversed: the last byte {end} is before the first {start}")
    return start, end


def _position(header: str, digits: str) -> int:
    """A run of digits as a number; beyond 64 bits (20+ significant digits) the range overflows.

    (The length is checked first: int() refuses strings of over 4300 digits.)
    """
    significant = digits.lstrip("0") or "0"
    value = int(significant) if len(significant) <= 20 else _MAX_POSITION + 1
    if value > _MAX_POSITION:
        raise RangeError(header, f"the byte position {significant[:24]}{'...' if len(significant) > 24 else ''} overflows 64 bits")
    return value


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range [start, stop) that ``header`` asks of ``size`` bytes, or None for the whole.

    Raises :class:`RangeError` (invalid) or :class:`RangeNotSatisfiableError` (selects nothing).
    """
    wanted = check_range(header)
    if wanted is None:
        return None
    assert header is not None
    first, last = wanted
    if first is None:
        assert last is not None
        if last == 0 or size == 0:
            raise RangeNotSatisfiableError(header, size)
        return max(0, size - last), size
    if first >= size:
        raise RangeNotSatisfiableError(header, size)
    return first, size if last is None else min(last + 1, size)


def if_range_allows(header: str | None, etag: str) -> bool:
    """Whether a Range may be honoured: no If-Range, or If-Range equal to our strong ETag."""
    return header is None or header.strip() == etag


IF_NONE_MATCH_ALLOWED = '* or a comma-separated list of quoted entity-tags, each optionally prefixed W/ (e.g. "abc", W/"def")'


def none_match(header: str | None, etag: str) -> bool:
    """Whether If-None-Match matches ``etag`` (weak comparison; ``*`` matches anything).

    Raises :class:`InvalidHeaderError` when the header is neither ``*`` nor a list of entity-tags.
    """
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag in _entity_tags(header)


def _entity_tags(header: str) -> list[str]:
    """The opaque tags (quotes kept, ``W/`` dropped) of a comma-separated list; linear in the header's length."""
    tags: list[str] = []
    pos = 0
    while True:
        gap = _GAP.match(header, pos)
        assert gap is not None  # [ \t,]* always matches
        pos = gap.end()
        if pos == len(header):
            break
        tag = _TAG.match(header, pos)
        if tag is None or (tags and "," not in gap.group()):
            raise InvalidHeaderError("If-None-Match", header, IF_NONE_MATCH_ALLOWED)
        tags.append(tag.group(1))
        pos = tag.end()
    if not tags:
        raise InvalidHeaderError("If-None-Match", header, IF_NONE_MATCH_ALLOWED)
    return tags
