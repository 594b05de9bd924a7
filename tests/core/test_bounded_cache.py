"""The weighted LRU that bounds the plan caches by their tensors, not only by their entries."""

from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.api.routes.models import PLAN_CACHE
from service.core.architectures import SPEC_CACHE
from service.core.architectures.registry import MAX_TENSORS
from service.core.bounded_cache import WeightedCache


@pytest.mark.parametrize(
    ("entries", "budget", "puts", "kept"),
    [
        (4, 10, [("a", 4), ("b", 4), ("c", 4)], ["b", "c"]),  # the weight evicts the oldest
        (2, 100, [("a", 1), ("b", 1), ("c", 1)], ["b", "c"]),  # so does the count
        (4, 10, [("a", 4), ("big", 11)], ["a"]),  # heavier than the budget: made, not cached
        (4, 10, [("a", 4), ("b", 4), ("a", 4), ("c", 4)], ["a", "c"]),  # a hit makes "a" recent: "b" leaves
        (4, 10, [("a", 10)], ["a"]),  # exactly the budget fits
    ],
)
def test_the_cache_holds_at_most_its_weight_and_entries(entries: int, budget: int, puts: list[tuple[str, int]], kept: list[str]) -> None:
    cache = WeightedCache[list[int]](entries, budget, len)
    made: list[str] = []

    def make(key: str, weight: int) -> list[int]:
        made.append(key)
        return [0] * weight

    for key, weight in puts:
        assert len(cache.get(key, functools.partial(make, key, weight))) == weight
    assert cache.weight <= budget and len(cache) <= entries
    for key in kept:  # still there: not made again
        before = len(made)
        cache.get(key, functools.partial(make, key, 1))
        assert len(made) == before, key


def test_an_exception_is_not_cached() -> None:
    cache = WeightedCache[list[int]](4, 10, len)

    def fail() -> list[int]:
        raise ValueError("no plan")

    with pytest.raises(ValueError, match="no plan"):
        cache.get("a", fail)
    assert cache.get("a", lambda: [1]) == [1]


def test_the_plan_caches_hold_one_largest_plan_at_most() -> None:
    # A plan of MAX_TENSORS tensors holds ~150 MiB (its specs ~70 MiB): more than one would break the server's memory budget.
    assert PLAN_CACHE.max_weight == SPEC_CACHE.max_weight == MAX_TENSORS


def test_concurrent_misses_of_one_key_make_its_value_once() -> None:
    cache = WeightedCache[list[int]](4, 10, len)
    made: list[str] = []
    started = threading.Event()

    def make() -> list[int]:
        made.append("a")
        started.set()
        time.sleep(0.2)  # the second caller arrives while this one makes
        return [1]

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.get, "a", make)
        started.wait(5)
        second = pool.submit(cache.get, "a", make)
        assert first.result() == second.result() == [1]
    assert made == ["a"]
