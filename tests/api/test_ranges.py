"""Range, If-Range and If-None-Match parsing, table-driven (RFC 9110 §13-14)."""

from __future__ import annotations

import pytest

from service.api.ranges import RangeNotSatisfiableError, if_range_allows, none_match, parse_range

SIZE = 1000
UNSATISFIABLE = "416"

RANGE_TABLE: list[tuple[str | None, tuple[int, int] | str | None]] = [
    (None, None),
    ("bytes=0-99", (0, 100)),
    ("bytes=0-0", (0, 1)),
    ("bytes=990-2000", (990, 1000)),
    ("bytes=500-", (500, 1000)),
    ("bytes=-100", (900, 1000)),
    ("bytes=-5000", (0, 1000)),
    ("BYTES = 1-2", (1, 3)),
    ("bytes=5-1", None),  # invalid spec: ignored
    ("bytes=0-1,5-6", None),  # several ranges: whole file
    ("bytes=a-b", None),
    ("items=0-1", None),
    ("bytes=", None),
    ("bytes=1000-", UNSATISFIABLE),
    ("bytes=1000-1001", UNSATISFIABLE),
    ("bytes=-0", UNSATISFIABLE),
    ("bytes= 0-9 ,", (0, 10)),
]


@pytest.mark.parametrize(("header", "expected"), RANGE_TABLE)
def test_parse_range(header: str | None, expected: tuple[int, int] | str | None) -> None:
    if expected == UNSATISFIABLE:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(header, SIZE)
    else:
        assert parse_range(header, SIZE) == expected


ETAG = '"abc123"'


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("*", True),
        (ETAG, True),
        ('W/"abc123"', True),
        ('"x", "abc123"', True),
        ('"x",W/"abc123"', True),
        ('"abc"', False),
        ("abc123", False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert none_match(header, ETAG) is matches


@pytest.mark.parametrize(
    ("header", "allows"),
    [(None, True), (ETAG, True), (f" {ETAG} ", True), ('W/"abc123"', False), ("Tue, 01 Jan 2030 00:00:00 GMT", False), ('"other"', False)],
)
def test_if_range(header: str | None, allows: bool) -> None:
    assert if_range_allows(header, ETAG) is allows
