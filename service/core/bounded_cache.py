"""A least-recently-used cache bounded by its entries and by the total weight of its values.

``functools.lru_cache`` bounds entries only: 32 checkpoint plans of 65,536 tensors each hold
GBs. Here a plan weighs its tensors (a materialized tensor its bytes), and the total is held
under a budget. Concurrent misses of one key make its value once. Hand-written: the standard
library has no weighted LRU, and a few lines do not justify a dependency.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class WeightedCache(Generic[V]):
    """At most ``max_entries`` values, of at most ``max_weight`` in all; the least recently used leave first."""

    def __init__(self, max_entries: int, max_weight: int, weight: Callable[[V], int]):
        self.max_entries = max_entries
        self.max_weight = max_weight
        self._weight = weight
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()
        self._making: dict[Hashable, threading.Lock] = {}  # a lock per key being made

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value cached under ``key``, else ``make()``'s (cached when it fits; an exception is not cached).

        A second caller of a key being made waits for it rather than making it again.
        """
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
            making = self._making.setdefault(key, threading.Lock())
        with making:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key][0]
            try:
                value = make()
            finally:
                with self._lock:
                    self._making.pop(key, None)
            weight = self._weight(value)
            with self._lock:
                if key not in self._items and weight <= self.max_weight:
                    self._items[key] = (value, weight)
                    self._total += weight
                    while len(self._items) > self.max_entries or self._total > self.max_weight:
                        self._total -= self._items.popitem(last=False)[1][1]
            return value

    @property
    def weight(self) -> int:
        """The total weight cached now."""
        return self._total

    def __len__(self) -> int:
        return len(self._items)
