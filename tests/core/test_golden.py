"""Golden sha256 vectors: any drift in the bytes fails CI (``make golden`` regenerates)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core import ALGORITHM_VERSION, SCHEMES
from tests.golden.cases import CONVENTIONS, DTYPES
from tests.golden.regenerate import PATH, vectors

PINNED: dict[str, Any] = json.loads(PATH.read_text())


def test_golden_vectors_cover_every_scheme_convention_and_dtype() -> None:
    requests = [v["request"] for v in PINNED["vectors"]]
    assert len(requests) >= 40
    assert {r["scheme"] for r in requests} == set(SCHEMES)
    assert {r["convention"] for r in requests} == set(CONVENTIONS)
    assert {r["dtype"] for r in requests} == set(DTYPES)
    assert PINNED["algorithm"] == ALGORITHM_VERSION


@pytest.fixture(scope="module")
def current() -> list[dict[str, Any]]:
    return vectors()


@pytest.mark.parametrize("index", range(len(PINNED["vectors"])))
def test_golden_digest(index: int, current: list[dict[str, Any]]) -> None:
    pinned = PINNED["vectors"][index]
    now = current[index]
    assert now["request"] == pinned["request"]
    assert now["spec_sha256"] == pinned["spec_sha256"], "the resolved spec changed"
    assert now["sha256"] == pinned["sha256"], "the bytes changed: a new algorithm version, or a bug"
