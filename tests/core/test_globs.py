"""Compiled rule matching (service/core/globs.py) against fnmatch's own first match, its executable spec."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core import InvalidParameterError, Limits
from service.core.globs import Globs
from service.core.recipes import plan_recipe


def reference(patterns: list[str], name: str) -> int | None:
    return next((i for i, p in enumerate(patterns) if fnmatchcase(name, p)), None)


CASES = [
    (["*.weight", "*"], "fc.weight", 0),
    (["*.bias", "*"], "fc.weight", 1),
    (["fc.weight", "*.weight"], "fc.weight", 0),  # a literal: compared as a string
    (["fc.weight"], "fc.weights", None),
    (["FC.*"], "fc.weight", None),  # case-sensitive, as fnmatchcase
    (["layer.[0-3].*"], "layer.2.w", 0),
    (["layer.[!0-3].*"], "layer.2.w", None),
    (["layer.?.w", "layer.??.w"], "layer.12.w", 1),
    (["*", "*"], "x", 0),  # a later copy never matches first: dropped, the index is the first's
    (["a*", "b*", "a*"], "b", 1),
    (["*.w\n"], "x.w\n", 0),  # a newline in a name: matched whole, as fnmatch does
    ([], "x", None),
]


@pytest.mark.parametrize(("patterns", "name", "first"), CASES)
def test_first_match_as_fnmatch(patterns: list[str], name: str, first: int | None) -> None:
    assert reference(patterns, name) == first  # the table itself is fnmatch's answer
    assert Globs(patterns).first(name) == first
    assert Globs(patterns).any(name) == (first is not None)


@pytest.mark.parametrize(
    ("rules", "roles", "param"),
    [
        ([["a*", "zeros"], ["b*", "zeros"], ["*", "zeros"]], None, "rules"),
        ({"a*": "zeros", "b*": "zeros", "*": "zeros"}, None, "rules"),
        ([["*", "zeros"]], {"readout": ["a*", "b*"], "residual_out": ["c*"]}, "roles"),
    ],
    ids=["rule-list", "rule-object", "role-patterns"],
)
def test_max_rules_bounds_rules_and_role_patterns(rules: object, roles: dict[str, list[str]] | None, param: str) -> None:
    tensors = {"a.w": {"shape": [2, 2]}}
    with pytest.raises(InvalidParameterError) as caught:
        plan_recipe("torch", tensors, rules=rules, roles=roles, limits=Limits(max_rules=2))
    assert caught.value.param == param
    assert "at most 2" in caught.value.allowed and "max_rules" in caught.value.allowed
    # At the limit it is served.
    assert plan_recipe("torch", tensors, rules=[["*", "zeros"]], roles={"readout": ["a*"]}, limits=Limits(max_rules=2)).specs


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="ab.*?[]!0", min_size=0, max_size=6), max_size=6),
    st.text(alphabet="ab.0", max_size=6),
)
def test_agrees_with_fnmatch_everywhere(patterns: list[str], name: str) -> None:
    assert Globs(patterns).first(name) == reference(patterns, name)
