"""Range, If-Range and If-None-Match parsing, table-driven (RFC 9110 §13-14)."""

from __future__ import annotations

import pytest

from service.api.ranges import InvalidHeaderError, RangeError, RangeNotSatisfiableError, if_range_allows, none_match, parse_range

SIZE = 1000
UNSATISFIABLE = "416: selects nothing"
INVALID = "416: not one valid range"

RANGE_TABLE: list[tuple[str | None, tuple[int, int] | str | None]] = [
    (None, None),
    ("bytes=0-99", (0, 100)),
    ("bytes=0-0", (0, 1)),
    ("bytes=990-2000", (990, 1000)),
    ("bytes=500-", (500, 1000)),
    ("bytes=-100", (900, 1000)),
    ("bytes=-5000", (0, 1000)),
    ("BYTES = 1-2", (1, 3)),
    ("bytes= 0-9 ,", (0, 10)),  # empty list elements are allowed (RFC 9110 §5.6.1)
    (f"bytes=0-{2**64 - 1}", (0, 1000)),  # the largest 64-bit position: to the end
    ("bytes=" + "0" * 5000 + "7-8", (7, 9)),  # leading zeros are not an overflow
    ("items=0-1", None),  # another unit: ignored (RFC 9110 §14.2 MUST)
    ("pages=a,b,c", None),
    ("bytes=1000-", UNSATISFIABLE),
    ("bytes=1000-1001", UNSATISFIABLE),
    ("bytes=-0", UNSATISFIABLE),
    ("bytes=5-1", INVALID),  # reversed
    ("bytes=0-1,5-6", INVALID),  # several ranges
    ("bytes=" + ",".join(f"{i}-{i}" for i in range(1000)), INVALID),
    ("bytes=a-b", INVALID),
    ("bytes=", INVALID),
    ("bytes=,", INVALID),
    ("bytes=-", INVALID),
    ("bytes=-5-10", INVALID),
    ("bytes=1.5-2", INVALID),
    ("bytes=\u0663-", INVALID),  # ARABIC-INDIC DIGIT THREE: a digit, but not an HTTP one
    ("bytes 0-9", INVALID),  # no '='
    ("garbage", INVALID),
    (f"bytes={2**64}-", INVALID),  # overflows 64 bits
    (f"bytes=0-{2**64}", INVALID),
    ("bytes=-" + "9" * 8000, INVALID),
    ("bytes=5-" + "0" * 8000, INVALID),  # = bytes=5-0: reversed
]


@pytest.mark.parametrize(("header", "expected"), RANGE_TABLE, ids=[str(h)[:30] for h, _ in RANGE_TABLE])
def test_parse_range(header: str | None, expected: tuple[int, int] | str | None) -> None:
    if expected == UNSATISFIABLE:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(header, SIZE)
    elif expected == INVALID:
        with pytest.raises(RangeError) as info:
            parse_range(header, SIZE)
        assert not isinstance(info.value, RangeNotSatisfiableError)
        assert len(str(info.value)) < 300, "never echo a hostile header in full"
    else:
        assert parse_range(header, SIZE) == expected


ETAG = '"abc123"'


INVALID_TAGS = "400"
IF_NONE_MATCH_TABLE: list[tuple[str | None, bool | str]] = [
    (None, False),
    ("*", True),
    (ETAG, True),
    ('W/"abc123"', True),
    ('"x", "abc123"', True),
    ('"x",W/"abc123"', True),
    (' , "x" ,, "abc123" ,', True),  # empty list elements are allowed
    ('"a,b", "abc123"', True),  # a comma inside a tag is part of it
    ('"abc"', False),
    ('""', False),
    (", ".join(f'"{i}"' for i in range(1000)), False),
    ("abc123", INVALID_TAGS),
    ("garbage", INVALID_TAGS),
    ('"abc', INVALID_TAGS),  # unterminated
    ('"x" "abc123"', INVALID_TAGS),  # no comma between tags
    ('w/"abc123"', INVALID_TAGS),  # W/ is case-sensitive
    ('"a b"', INVALID_TAGS),  # a space is not an etagc
    ('"x", *', INVALID_TAGS),  # * only alone
    ("", INVALID_TAGS),
    (", ,", INVALID_TAGS),
    ("," * 50_000 + "x", INVALID_TAGS),
]


@pytest.mark.parametrize(("header", "matches"), IF_NONE_MATCH_TABLE, ids=[str(h)[:30] for h, _ in IF_NONE_MATCH_TABLE])
def test_if_none_match(header: str | None, matches: bool | str) -> None:
    if matches == INVALID_TAGS:
        with pytest.raises(InvalidHeaderError) as info:
            none_match(header, ETAG)
        assert info.value.name == "If-None-Match" and len(str(info.value)) < 300
    else:
        assert none_match(header, ETAG) is matches


@pytest.mark.parametrize(
    ("header", "allows"),
    [
        (None, True),
        (ETAG, True),
        (f" {ETAG} ", True),
        ('W/"abc123"', False),
        ("Tue, 01 Jan 2030 00:00:00 GMT", False),
        ('"other"', False),
        ("garbage", False),  # not a validator: does not match, so the whole file (RFC 9110 §13.1.5)
        ("\x00" * 100, False),
    ],
)
def test_if_range(header: str | None, allows: bool) -> None:
    assert if_range_allows(header, ETAG) is allows
